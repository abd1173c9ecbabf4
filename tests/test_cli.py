"""The command line, through click's CliRunner, against a real database."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_tunes

from fpstore.cli import cli
from fpstore.db.store import head_revision
from fpstore.report import ZONE_COLUMNS

pytestmark = pytest.mark.postgres


def test_ingest_then_report(run, tmp_path) -> None:
    write_tunes(tmp_path / "music", [1, 2])
    result = run("-q", "ingest", str(tmp_path / "music"), "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("run 1: 2 files: 2 added, 0 skipped, 0 failed in ")
    assert "postings added per zone:" in result.output and "Flarge_Tlong" in result.output

    again = run("ingest", str(tmp_path / "music"), "--jobs", "1")
    assert again.exit_code == 0
    assert "run 2: 2 files: 0 added, 2 skipped, 0 failed" in again.output
    assert "already in the database as track 1" in again.output

    report = run("report", "--csv", str(tmp_path / "report.csv"))
    assert report.exit_code == 0
    assert report.output.split("\n")[0].split() == list(ZONE_COLUMNS)
    assert "bytes per posting" in report.output
    with open(tmp_path / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["zone"] for row in rows] == ["Fsmall_Tshort", "Fsmall_Tlong", "Flarge_Tshort", "Flarge_Tlong"]
    assert all(row["num_tracks"] == "2" and row["top_k_targets"] == "5" for row in rows)


def test_failed_file_gives_exit_3_unless_allowed(run, tmp_path) -> None:
    write_tunes(tmp_path, [1])
    (tmp_path / "broken.mp3").write_bytes(b"ID3 not really")
    result = run("ingest", str(tmp_path), "--jobs", "1")
    assert result.exit_code == 3
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "broken.mp3" in failed[0]
    assert run("ingest", str(tmp_path), "--jobs", "1", "--allow-failures").exit_code == 0


def test_folder_of_aiff_and_opus_is_ingested_and_other_files_are_counted(run, tmp_path) -> None:
    import soundfile

    from fpstore.signal.synth import synth_tune

    soundfile.write(tmp_path / "one.aiff", synth_tune(1, duration_s=4.0), 22050, subtype="PCM_16")
    soundfile.write(tmp_path / "two.opus", synth_tune(2, duration_s=4.0), 48000, format="OGG", subtype="OPUS")
    (tmp_path / "notes.txt").write_text("liner notes")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    result = run("ingest", str(tmp_path), "--jobs", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("run 1: 2 files: 2 added, 0 skipped, 0 failed in ")
    assert lines[1] == "skipped 1 file with other extensions (.txt)"
    (tmp_path / "notes.txt").unlink()
    again = run("ingest", str(tmp_path), "--jobs", "1")
    assert "other extensions" not in again.output


def test_counts_agree_with_their_noun(run, tmp_path) -> None:
    (path,) = write_tunes(tmp_path, [1], duration_s=4.0)
    result = run("ingest", str(path), "--jobs", "1")
    assert result.output.startswith("run 1: 1 file: 1 added, 0 skipped, 0 failed in "), result.output
    removed = run("tracks", "remove", "1", "--yes")
    assert removed.output.startswith("removed 1 track and "), removed.output


def test_parameter_options_and_mismatch_error(run, tmp_path) -> None:
    write_tunes(tmp_path, [1])
    assert run("ingest", str(tmp_path), "--jobs", "1", "--top-k", "none", "--duration", "full").exit_code == 0
    clash = run("ingest", str(tmp_path), "--jobs", "1", "--hop-length", "512")
    assert clash.exit_code == 1
    assert clash.output.startswith("Error: the database was built with other fingerprint parameters")


def test_bad_parameter_value_names_it(run, tmp_path) -> None:
    result = run("ingest", str(tmp_path), "--zone", "wide:150:1:5000")
    assert result.exit_code == 1
    assert result.output.startswith("Error: zone 'wide': dt_max_frames=5000 must be an integer in [0, 4095]")


def test_unreachable_database_is_one_line_without_password(tmp_path) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    result = CliRunner().invoke(cli, ["--db", url, "report"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot connect to postgresql+psycopg://someone:***@127.0.0.1:1/nowhere")
    assert "s3cret" not in result.output


def test_not_postgres_url_is_refused() -> None:
    result = CliRunner().invoke(cli, ["--db", "sqlite:///x.db", "report"])
    assert result.exit_code == 1 and "is not PostgreSQL" in result.output


def test_db_commands(run) -> None:
    current = run("db", "current")
    assert current.exit_code == 0 and f"revision {head_revision()}" in current.output
    assert "schema at revision base" in run("db", "downgrade", "base", "--yes").output
    assert f"schema at revision {head_revision()}" in run("db", "upgrade").output


@pytest.mark.parametrize("command", [["report"], ["match", "q.wav"], ["tracks", "list"]])
def test_fresh_database_says_ingest_first_at_once(empty_db_url, tmp_path, command) -> None:
    write_tunes(tmp_path, [1], duration_s=2.0)
    (tmp_path / "tune_001.wav").rename(tmp_path / "q.wav")
    with contextlib.chdir(tmp_path):
        result = CliRunner().invoke(cli, ["--db", empty_db_url, *command])
    assert result.exit_code == 1
    assert result.output.startswith("Error: database ") and result.output.count("\n") == 1
    assert "holds no fingerprints yet (no fpstore schema): ingest first, e.g. `fpstore ingest FOLDER`" in result.output


def test_db_lookup_index_prints_the_size_of_the_index_in_use(run, db_url, tmp_path) -> None:
    from sqlalchemy import create_engine, text

    write_tunes(tmp_path, [1, 2])
    assert run("-q", "ingest", str(tmp_path), "--jobs", "1").exit_code == 0
    for variant, index in [("covering", "hashes_zone_hash_cover"), ("plain", "hashes_zone_hash")]:
        result = run("db", "lookup-index", variant)
        engine = create_engine(db_url)
        with engine.connect() as conn:
            size = conn.execute(text("SELECT sum(pg_relation_size(indexrelid)) FROM pg_index WHERE indrelid IN "
                                     "(SELECT relid FROM pg_partition_tree('hashes'))")).scalar()
            names = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'hashes'")).scalars())
        engine.dispose()
        assert names == {index} and size > 100_000
        assert result.output == f"postings indexed by the {variant} index ({size:,} bytes)\n"


def test_example_audio(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["example-audio", str(tmp_path), "--tracks", "2", "--seconds", "1"])
    assert result.exit_code == 0 and result.output == f"wrote 2 files to {tmp_path}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example_01.wav", "example_02.wav"]


def test_example_audio_writes_a_clip_to_match_outside_the_folder(tmp_path) -> None:
    import soundfile

    clip = tmp_path / "clip.wav"
    result = CliRunner().invoke(cli, ["example-audio", str(tmp_path / "ex"), "--tracks", "2", "--clip", str(clip)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == f"wrote {clip}: an excerpt of example_02.wav with noise, to match"
    assert soundfile.info(clip).duration == 8.0 and sorted(p.name for p in (tmp_path / "ex").iterdir()) == [
        "example_01.wav", "example_02.wav"]


def test_every_command_and_group_has_help_with_an_example() -> None:
    """The manual's side (each command in the generated reference and in a written page) is tests/test_docs.py."""
    from test_docs import commands

    for path, _ in commands():
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, path


def test_the_command_table_says_where_each_command_is_and_what_its_help_says() -> None:
    """``fpstore --help`` lists the commands from fpstore.cli.COMMANDS without importing them: it must not drift."""
    import click

    from fpstore.cli import COMMANDS

    context = click.Context(cli)
    assert cli.list_commands(context) == sorted(COMMANDS)
    for name, where in COMMANDS.items():
        command = cli.get_command(context, name)
        assert command is not None and command.name == name, name
        assert command.help is not None and command.help.split("\n\n")[0].replace("\n", " ") == where.summary, name


def test_report_counts_the_partitions_of_hashes(run, db_url, tmp_path) -> None:
    import json

    from sqlalchemy import create_engine, text

    write_tunes(tmp_path, [1, 2])
    assert run("-q", "ingest", str(tmp_path), "--jobs", "1").exit_code == 0
    report = json.loads(run("report", "--format", "json").output)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        on_disk = conn.execute(text(
            "SELECT sum(pg_relation_size(relid)) + (SELECT sum(pg_relation_size(indexrelid)) FROM pg_index"
            " WHERE indrelid IN (SELECT relid FROM pg_partition_tree('hashes'))) FROM pg_partition_tree('hashes')"
        )).scalar()
        postings = conn.execute(text("SELECT count(*) FROM hashes")).scalar()
    engine.dispose()
    assert "hashes_main" in {r["name"] for r in report["relations"] if r["table_name"] == "hashes"}
    assert report["bytes_per_posting"] == pytest.approx(float(on_disk) / postings)
    assert 0 < report["bytes_per_posting"] < 200


def test_readme_and_corpus_skip_message_name_folders_beside_the_clone() -> None:
    import conftest

    root = Path(__file__).resolve().parents[1]
    assert "/work/" not in (root / "README.md").read_text()  # this machine's folders mean nothing to a user
    message = conftest.corpus_missing_message()
    beside = root.parent
    assert str(beside / "corpus" / "dev") in message
    if (beside / "shared" / "corpus" / "make_corpus_dev.sh").is_file():
        assert f"`bash {beside / 'shared' / 'corpus' / 'make_corpus_dev.sh'}`" in message
