"""Everyday use (issue 22): whole files by default, questions before dropping data, one line per failure."""

from __future__ import annotations

import contextlib

import pytest
from helpers import write_tunes
from sqlalchemy import text

from fpstore.cli.options import hoist_global_options
from fpstore.ingest import ingest

pytestmark = pytest.mark.postgres


def one_error_line(result) -> str:
    """The single ``Error: ...`` line of a failed command (no traceback, nothing else)."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[0]


# -- 1. whole files by default --------------------------------------------------------------------------


def test_whole_files_by_default_and_the_cut_is_named(store, run, tmp_path) -> None:
    (path,) = write_tunes(tmp_path / "music", [4], duration_s=32.0)
    assert ingest(store, tmp_path / "music", jobs=1).tracks_added == 1
    (track,) = store.tracks.search().tracks
    assert track["duration_s"] > 31.9
    last_anchor = max(int(t.max()) for _, t in store.tracks.postings(track["id"]).values())
    assert last_anchor * 1024 / 22050 > 30.5  # anchors past the notebook's 30 s cut are stored

    again = run("ingest", str(path), "--duration", "30", "--jobs", "1")
    assert again.exit_code == 0, again.output
    assert (f"skipped: {path} (already in the database as track {track['id']}, stored with --duration full; "
            "--force replaces it with --duration 30)") in again.output
    forced = run("ingest", str(path), "--duration", "30", "--jobs", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert ("stored the first 30 s of each file (--duration 30): 1 of 1 track added were cut there; "
            "--duration full stores whole files") in forced.output
    assert store.tracks.search().tracks[0]["duration_s"] == pytest.approx(30.0, abs=0.05)


# -- 3. destructive commands ask -------------------------------------------------------------------------


def test_downgrade_to_base_asks_and_refuses_without_a_terminal(store, run, tmp_path, monkeypatch) -> None:
    write_tunes(tmp_path, [1], duration_s=3.0)
    ingest(store, tmp_path, jobs=1)
    refused = run("db", "downgrade", "base")
    assert refused.exit_code == 2
    assert "drops every fpstore table, with its 1 track and all their postings: refused without a terminal" in (
        one_error_line(refused))
    assert store.tracks.count() == 1

    monkeypatch.setattr("fpstore.cli.options.stdin_is_terminal", lambda: True)
    declined = run("db", "downgrade", "base", input="n\n")
    assert declined.exit_code == 1 and "Error: downgrade declined: nothing dropped" in declined.output
    assert store.tracks.count() == 1
    assert run("db", "downgrade", "0009").exit_code == 0  # drops no data: no question
    done = run("db", "downgrade", "base", "--yes")
    assert done.exit_code == 0, done.output
    assert store.schema_revision() is None


def test_revision_errors_are_one_line(run, empty_db_url) -> None:
    unknown = run("db", "downgrade", "9999")
    assert unknown.exit_code == 1
    assert "revision '9999'" in one_error_line(unknown)
    from click.testing import CliRunner

    from fpstore.cli import cli

    on_empty = CliRunner().invoke(cli, ["--db", empty_db_url, "db", "downgrade", "0002"])
    assert on_empty.exit_code == 1
    assert "revision '0002'" in one_error_line(on_empty)


# -- 4. one line for every expected failure ---------------------------------------------------------------

#: Every command, as the read-only role: True when it only reads (it must succeed).
READER_COMMANDS = [
    (["ingest", "{music}", "--jobs", "1", "--force"], False),
    (["tracks", "remove", "1", "--yes"], False),
    (["db", "compact"], False),
    (["db", "lookup-index", "covering"], False),
    (["db", "downgrade", "0009"], False),
    (["import-pickle", "{pickle}"], False),
    (["db", "grant-reader", "{role}"], False),
    (["report"], True),
    (["tracks", "list"], True),
    (["tracks", "show", "1"], True),
    (["tracks", "duplicates"], True),
    (["match", "{query}"], True),
    (["db", "current"], True),
    (["db", "upgrade"], True),
    (["export-pickle", "{out}"], True),
    (["config", "show"], True),
]


def test_every_command_as_the_read_only_role_is_one_line_or_works(store, run, reader_role, tmp_path) -> None:
    from click.testing import CliRunner

    from fpstore.cli import cli

    role, reader_url = reader_role
    (tune,) = write_tunes(tmp_path / "music", [1], duration_s=4.0)
    ingest(store, tmp_path / "music", jobs=1)
    assert run("export-pickle", str(tmp_path / "mine.pkl")).exit_code == 0
    assert run("db", "grant-reader", role).exit_code == 0
    names = {"music": str(tmp_path / "music"), "pickle": str(tmp_path / "mine.pkl"), "role": role,
             "query": str(tune), "out": str(tmp_path / "reader.pkl")}
    for args, reads in READER_COMMANDS:
        result = CliRunner().invoke(cli, ["--db", reader_url, *(arg.format(**names) for arg in args)])
        if reads:
            assert result.exit_code == 0, (args, result.output)
            continue
        assert result.exit_code == 1, (args, result.output)
        line = one_error_line(result)
        if "{role}" not in args:
            assert line.startswith(f"Error: the role {role} may not write to this database (permission denied"
                                   ) or "(must be owner of" in line, line
            assert "`fpstore db grant-reader` gave it read access only" in line
        else:
            assert f"the role {role} cannot grant" in line and "tables belong to" in line
    assert store.tracks.count() == 1


def test_output_paths_that_cannot_be_written_are_one_line(store, run, tmp_path) -> None:
    (tune,) = write_tunes(tmp_path / "music", [1], duration_s=3.0)
    ingest(store, tmp_path / "music", jobs=1)
    missing = tmp_path / "missing"
    (tmp_path / "a_file").write_text("")
    cases = [
        (["report", "--csv", str(missing / "r.csv")], f"Error: {missing}/r.csv: No such file or directory"),
        (["export-pickle", str(missing / "x.pkl")], f"Error: {missing}/x.pkl: No such file or directory"),
        (["plot", str(tune), "-o", str(missing / "x.png")], f"Error: {missing}/x.png: No such file or directory"),
        (["example-audio", str(tmp_path / "a_file" / "sub")], f"Error: {tmp_path}/a_file/sub: Not a directory"),
    ]
    for args, said in cases:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert one_error_line(result) == said
    assert not list(tmp_path.rglob(".fpstore-export-*"))


# -- 5. progress per file, several paths, global options anywhere -----------------------------------------


def test_progress_counts_each_file_when_fingerprinted_not_when_written(store, tmp_path) -> None:
    write_tunes(tmp_path, [1, 2, 3], duration_s=3.0)
    seen: list[str] = []
    summary = ingest(store, tmp_path, jobs=1, batch_postings=10**9, on_progress=lambda: seen.append("done"),
                     on_file=lambda event: seen.append(event.status))
    assert summary.tracks_added == 3
    assert seen == ["done"] * 3 + ["added"] * 3  # one batch, written after all three were fingerprinted


def test_ingest_takes_several_paths_and_global_options_after_the_subcommand(db_url, run, tmp_path) -> None:
    paths = write_tunes(tmp_path, [1, 2], duration_s=3.0)
    result = run("ingest", *map(str, paths), "--jobs", "1", "-q", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("run 1: 2 files: 2 added")
    assert hoist_global_options(["-v", "db", "shell", "--", "-q"]) == ["-v", "db", "shell", "--", "-q"]
    assert hoist_global_options(["ingest", "x", "-vv", "--config=c.toml"]) == ["-vv", "--config=c.toml", "ingest", "x"]


# -- 6. nothing silent ----------------------------------------------------------------------------------------


def test_a_folder_without_audio_is_one_line_and_records_no_run(store, run, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "liner.txt").write_text("words")
    refused = run("ingest", str(tmp_path / "empty"), str(tmp_path / "notes"))
    assert refused.exit_code == 1
    assert one_error_line(refused) == (f"Error: {tmp_path}/empty, {tmp_path}/notes: no audio files "
                                       "(1 file with other extensions); nothing ingested")
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('runs') IS NULL OR NOT EXISTS (SELECT 1 FROM runs)")).scalar()
    write_tunes(tmp_path / "music", [1], duration_s=3.0)
    ingest(store, tmp_path / "music", jobs=1)
    matched = run("match", str(tmp_path / "empty"))
    assert matched.exit_code == 3
    assert f"failed: {tmp_path}/empty: no audio files in this folder" in matched.output
    (tmp_path / "q.csv").write_text("file,true_track\n")
    evaluated = run("eval", str(tmp_path / "q.csv"), "--out", str(tmp_path / "out"))
    assert evaluated.exit_code == 1
    assert "no queries" in one_error_line(evaluated)


# -- 2. duplicates mean the same recording; an excerpt is stored and listed as one ------------------------------


def test_an_excerpt_is_stored_and_listed_not_skipped_as_a_duplicate(store, run, tmp_path) -> None:
    import soundfile
    from helpers import write_resampled_copy

    from fpstore.signal.synth import synth_tune

    whole = synth_tune(40, duration_s=40.0)
    (tmp_path / "clips").mkdir()
    start = 215 * 1024  # 9.98 s, on a frame boundary as a --duration cut is (a clip cut between frames aligns less)
    soundfile.write(tmp_path / "clips" / "clip.wav", whole[start:start + 10 * 22050], 22050, subtype="PCM_16")
    (tmp_path / "full").mkdir()
    soundfile.write(tmp_path / "full" / "whole.wav", whole, 22050, subtype="PCM_16")
    (tmp_path / "copy").mkdir()
    write_resampled_copy(tmp_path / "full" / "whole.wav", tmp_path / "copy" / "whole_44k.wav")

    clip = run("ingest", str(tmp_path / "clips"), "--jobs", "1")
    assert clip.exit_code == 0 and "1 added" in clip.output, clip.output
    skipped = run("ingest", str(tmp_path / "full"), "--jobs", "1", "--on-excerpt", "skip")
    assert "0 added, 1 skipped" in skipped.output
    assert "whole.wav (track 1 is an excerpt of it at 0:10)" in skipped.output
    full = run("ingest", str(tmp_path / "full"), "--jobs", "1")
    assert "1 added, 0 skipped" in full.output, full.output
    assert "(track 2, " in full.output and "track 1 is an excerpt of it at 0:10)" in full.output
    copy = run("ingest", str(tmp_path / "copy"), "--jobs", "1")
    assert "0 added, 1 skipped" in copy.output and "(duplicate of track 2 (" in copy.output, copy.output

    listed = run("tracks", "duplicates")
    assert listed.exit_code == 0, listed.output
    assert "track 1 (clip.wav) is an excerpt of track 2 (whole.wav) at 0:10" in listed.output
    assert listed.output.strip().endswith("0 pairs in 0 groups with at least 10% of hashes aligned (zone all); 1 excerpt")


# -- 9. the smaller items ---------------------------------------------------------------------------------------


def test_small_items(store, run, tmp_path) -> None:
    from click.testing import CliRunner

    from fpstore.cli import cli

    helped = CliRunner().invoke(cli, ["monitor", "--plain", "--help"])  # the help names --plain: monitor takes it
    assert helped.exit_code == 0 and "--plain" in helped.output
    write_tunes(tmp_path / "music", [1], duration_s=3.0)
    ingest(store, tmp_path / "music", jobs=1)
    garbage = run("monitor", "-", input=b"not audio at all, " * 100)
    assert "Error: <stdin>: cannot decode audio (not audio libsndfile reads from a stream: " in garbage.output
    assert "Error opening" not in garbage.output
    (tmp_path / "music" / "broken.mp3").write_bytes(b"ID3 nothing")
    with contextlib.chdir(tmp_path):
        ingest(store, "music", jobs=1)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT path FROM failures")).scalars().all() == [str(tmp_path / "music" / "broken.mp3")]
