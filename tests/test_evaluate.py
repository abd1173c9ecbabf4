"""fpstore eval: reading the queries table, scoring, the summary and its files, on a real database."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from helpers import write_tunes

from fpstore.cli import cli
from fpstore.errors import ParameterError
from fpstore.evaluate import read_queries, run_eval, summarise
from fpstore.ingest import ingest
from fpstore.signal.synth import synth_tune

SR = 22050


def _write_queries(folder, rng) -> str:
    """Two excerpts of stored tunes (clean, noisy) and one tune not stored; return the CSV path."""
    folder.mkdir(parents=True, exist_ok=True)
    clean = synth_tune(21, duration_s=8.0)[SR:5 * SR]
    noisy = synth_tune(22, duration_s=8.0)[2 * SR:6 * SR]
    noisy = np.clip(noisy + rng.standard_normal(noisy.size).astype(np.float32) * 0.05 * np.std(noisy), -1, 1)
    for name, y in [("a.wav", clean), ("b.wav", noisy), ("c.wav", synth_tune(66, duration_s=4.0))]:
        soundfile.write(folder / name, y.astype(np.float32), SR, subtype="PCM_16")
    path = folder / "queries.csv"
    path.write_text("file,true_track,start_s,degradation,length_s\n"
                    "a.wav,tune_021,1.0,clean,4\n"
                    "b.wav,tune_022.wav,2.0,noise,4\n"
                    "c.wav,,,clean,4\n")
    return str(path)


def test_read_queries_resolves_paths_and_detects_labels(tmp_path, rng_factory) -> None:
    queries, labels = read_queries(_write_queries(tmp_path / "q", rng_factory(1)))
    assert labels == ["degradation"]  # length_s has a single value: not a grouping
    assert [q.path for q in queries] == [tmp_path / "q" / n for n in ("a.wav", "b.wav", "c.wav")]
    assert [q.true_track for q in queries] == ["tune_021", "tune_022.wav", ""]
    assert queries[0].start_s == 1.0 and queries[2].start_s is None


def test_read_queries_errors_name_the_problem(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.wav,1\n")
    with pytest.raises(ParameterError, match="column 'true_track' is missing"):
        read_queries(bad)
    bad.write_text("file,true_track,start_s\nx.wav,,soon\n")
    with pytest.raises(ParameterError, match=r"bad.csv:2: start_s='soon' is not a number"):
        read_queries(bad)


def test_summarise_counts() -> None:
    rows = [
        {"zone": "z", "true_track": "t1", "deg": "a", "outcome": "correct", "best_is_true": 1},
        {"zone": "z", "true_track": "t1", "deg": "a", "outcome": "missed", "best_is_true": 1},
        {"zone": "z", "true_track": "t2", "deg": "b", "outcome": "wrong", "best_is_true": 0},
        {"zone": "z", "true_track": "", "deg": "b", "outcome": "false_positive", "best_is_true": 0},
        {"zone": "z", "true_track": "", "deg": "b", "outcome": "true_negative", "best_is_true": 0},
    ]
    by_group = {row["deg"]: row for row in summarise(rows, ["deg"])}
    assert by_group["a"]["top1_accuracy"] == 0.5 and by_group["a"]["top1_no_rule"] == 1.0
    assert by_group["a"]["false_positive_rate"] is None
    assert by_group["b"]["n_wrong"] == 1 and by_group["b"]["false_positive_rate"] == 0.5
    assert by_group["*"]["n_positive"] == 3 and by_group["*"]["n_negative"] == 2


@pytest.mark.postgres
def test_run_eval_end_to_end(store, tmp_path, rng_factory) -> None:
    write_tunes(tmp_path / "music", [21, 22, 23])
    ingest(store, tmp_path / "music", jobs=1)
    seen = []
    outcome = run_eval(store, _write_queries(tmp_path / "q", rng_factory(2)), tmp_path / "out",
                       zones=["all", "Flarge_Tlong"], on_query=seen.append)
    assert len(seen) == 3 and len(outcome.rows) == 6
    assert {(r["file"], r["zone"]): r["outcome"] for r in outcome.rows} == {
        ("a.wav", "all"): "correct", ("b.wav", "all"): "correct", ("c.wav", "all"): "true_negative",
        ("a.wav", "Flarge_Tlong"): "correct", ("b.wav", "Flarge_Tlong"): "correct",
        ("c.wav", "Flarge_Tlong"): "true_negative",
    }
    offsets = [float(r["offset_error_s"]) for r in outcome.rows if r["offset_error_s"] != ""]
    assert len(offsets) == 4 and max(map(abs, offsets)) < 0.05
    with open(outcome.per_query_csv, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 6
    # The chance score of each answer: far above 3 for a stored excerpt, below it for the negative.
    scores = {(r["file"], r["zone"]): float(r["score"]) for r in written}
    assert min(scores[("a.wav", "all")], scores[("b.wav", "all")]) > 3 > scores[("c.wav", "all")]
    with open(outcome.summary_csv, newline="") as handle:
        overall = [r for r in csv.DictReader(handle) if r["degradation"] == "*"]
    assert [(r["zone"], r["top1_accuracy"], r["false_positive_rate"]) for r in overall] == [
        ("Flarge_Tlong", "1.0", "0.0"), ("all", "1.0", "0.0")]
    assert outcome.plot_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outcome.scores_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.postgres
def test_eval_command(store, db_url, tmp_path, rng_factory) -> None:
    write_tunes(tmp_path / "music", [21, 22])
    ingest(store, tmp_path / "music", jobs=1)
    queries = _write_queries(tmp_path / "q", rng_factory(3))
    result = CliRunner().invoke(cli, ["--db", db_url, "eval", queries, "--alpha", "1e-3", "--out", str(tmp_path / "out")])
    # tune_023 is not stored here, but no row names it: a.wav and b.wav are positives, c.wav negative
    assert result.exit_code == 0, result.output
    assert "| zone | degradation | n_positive | top1_accuracy |" in result.output
    assert "| Fsmall_Tlong | * | 2 | 100.0% | 100.0% | 0 | 1 | 0.0% |" in result.output
    assert (tmp_path / "out" / "accuracy_vs_length.png").is_file()


@pytest.mark.postgres
def test_eval_command_unknown_true_track(store, db_url, tmp_path, rng_factory) -> None:
    write_tunes(tmp_path / "music", [21])
    ingest(store, tmp_path / "music", jobs=1)
    queries = _write_queries(tmp_path / "q", rng_factory(4))
    result = CliRunner().invoke(cli, ["--db", db_url, "eval", queries, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: b.wav: true_track 'tune_022.wav' is not a stored track")


def _add_bad_queries(queries_csv: str) -> None:
    """Append an empty file, a text file named .mp3 and a missing file, each a stored tune's query."""
    folder = Path(queries_csv).parent
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.mp3").write_text("not audio\n")
    with open(queries_csv, "a") as handle:
        handle.write("empty.wav,tune_021,,clean,4\ntext.mp3,tune_021,,noise,4\nmissing.wav,,,clean,4\n")


@pytest.mark.postgres
def test_run_eval_goes_on_past_bad_query_files(store, tmp_path, rng_factory) -> None:
    write_tunes(tmp_path / "music", [21, 22])
    ingest(store, tmp_path / "music", jobs=1)
    queries = _write_queries(tmp_path / "q", rng_factory(5))
    _add_bad_queries(queries)
    outcome = run_eval(store, queries, tmp_path / "out", zones=["all", "Flarge_Tlong"])
    folder = tmp_path / "q"
    assert outcome.failures == [
        f"{folder / 'empty.wav'}: empty file (0 bytes)",
        f"{folder / 'text.mp3'}: cannot decode audio (not a readable audio file: format not recognised; "
        "ffmpeg could not decode it either)",
        f"{folder / 'missing.wav'}: cannot read (No such file or directory)",
    ]
    by_query = {(r["file"], r["zone"]): (r["outcome"], r["error"]) for r in outcome.rows}
    assert by_query["a.wav", "all"] == ("correct", "") and by_query["c.wav", "Flarge_Tlong"] == ("true_negative", "")
    assert by_query["empty.wav", "all"] == ("failed", outcome.failures[0])
    assert by_query["missing.wav", "Flarge_Tlong"] == ("failed", outcome.failures[2])
    # failed queries count in no rate: the stored ones are still 2 of 2 correct
    overall = {r["zone"]: r for r in outcome.summary if r["degradation"] == "*"}
    assert overall["all"]["n_positive"] == 2 and overall["all"]["top1_accuracy"] == 1.0
    assert overall["all"]["n_negative"] == 1
    with open(outcome.per_query_csv, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 12 and [r["outcome"] for r in written].count("failed") == 6
    assert outcome.plot_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outcome.scores_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.postgres
def test_eval_command_names_bad_query_files_and_exits_3(store, db_url, tmp_path, rng_factory) -> None:
    write_tunes(tmp_path / "music", [21, 22])
    ingest(store, tmp_path / "music", jobs=1)
    queries = _write_queries(tmp_path / "q", rng_factory(6))
    _add_bad_queries(queries)
    result = CliRunner().invoke(cli, ["--db", db_url, "eval", queries, "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    failed = result.stderr.splitlines()
    assert [line.split(": ")[1].rsplit("/", 1)[-1] for line in failed] == ["empty.wav", "text.mp3", "missing.wav"]
    assert all(line.startswith("failed: ") for line in failed)
    assert "| Fsmall_Tlong | * | 2 | 100.0% | 100.0% | 0 | 1 | 0.0% |" in result.stdout
