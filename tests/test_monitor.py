"""Monitoring: the window buffer, the segmenter on arrays, and a mix of stored and unknown audio on a real database."""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from fpstore.cli import cli
from fpstore.errors import ParameterError
from fpstore.ingest import ingest
from fpstore.monitor import StreamMonitor, crossover, evidence_end, evidence_start, monitor
from fpstore.signal.params import FingerprintParams
from fpstore.signal.synth import synth_tune
from fpstore.signal.variants import change_speed
from fpstore.signal.windows import SlidingWindows

SR = 22050
#: Seconds a boundary found from the evidence may be off (the hashes' density: a few per second).
BOUNDARY_S = 1.0


# -- the window buffer -------------------------------------------------------------------------------
def _blocks(rng: np.random.Generator, n_samples: int, max_block: int) -> Iterator[np.ndarray]:
    """The signal ``arange(n_samples) % 65536`` in blocks of random sizes (some empty, some longer than a window)."""
    done = 0
    while done < n_samples:
        size = min(int(rng.integers(0, max_block)), n_samples - done)
        yield (np.arange(done, done + size) % 65536).astype(np.float32)
        done += size


@pytest.mark.parametrize(("window", "hop", "n_samples"), [(8, 3, 50), (8, 8, 64), (8, 1, 20), (10, 4, 5)])
def test_windows_are_the_slices_of_the_stream(rng_factory, window, hop, n_samples) -> None:
    windows = SlidingWindows(window, hop)
    got = [(s, w) for block in _blocks(rng_factory(3), n_samples, 3 * window) for s, w in windows.push(block)]
    got += list(windows.finish())
    signal = np.arange(n_samples, dtype=np.float32)
    starts = [s for s, _ in got]
    assert starts == list(range(0, starts[-1] + 1, hop))
    for start, samples in got:
        assert samples.tolist() == signal[start:start + window].tolist()
    # every sample is in some window, and the last window reaches the end of the stream
    assert starts[-1] + got[-1][1].size == n_samples


def test_buffer_stays_one_window_on_a_long_stream(rng_factory) -> None:
    """Twenty minutes of 22.05 kHz samples, in blocks up to 3 windows long: the buffer never exceeds a window."""
    window, hop = 10 * SR, 5 * SR
    windows = SlidingWindows(window, hop)
    n_windows = 0
    largest = 0
    for block in _blocks(rng_factory(4), 20 * 60 * SR, 3 * window):
        for start, samples in windows.push(block):
            assert samples.size == window and samples[0] == start % 65536
            assert samples[-1] == (start + window - 1) % 65536
            n_windows += 1
        largest = max(largest, windows.buffered)
        assert windows._buffer.size == window
    assert windows.seen == 20 * 60 * SR
    assert n_windows == (20 * 60 * SR - window) // hop + 1
    assert largest <= window


def test_finish_after_a_complete_window_adds_nothing() -> None:
    windows = SlidingWindows(4, 2)
    assert [s for s, _ in windows.push(np.zeros(6, np.float32))] == [0, 2]
    assert list(windows.finish()) == []


@pytest.mark.parametrize(("window", "hop"), [(0, 1), (4, 5), (4, 0), (4.0, 2), (True, 1)])
def test_window_sizes_are_checked(window, hop) -> None:
    with pytest.raises(ParameterError):
        SlidingWindows(window, hop)


# -- decoding a stream ------------------------------------------------------------------------------------
def test_a_piped_stream_decodes_to_the_samples_of_the_file(tmp_path) -> None:
    """Stereo 44.1 kHz WAV through a real pipe (read by file descriptor) and as a file object: load_audio's samples."""
    import os
    import threading

    from fpstore.signal.audio import load_audio, stream_audio_from

    path = tmp_path / "stereo.wav"
    stereo = np.stack([synth_tune(seed, duration_s=7.3, sample_rate=44100) for seed in (3, 4)], axis=1)
    soundfile.write(path, stereo, 44100, subtype="PCM_16")
    expected = load_audio(path, duration_s=None)
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, path.read_bytes()), os.close(write_end)))
    writer.start()
    try:
        piped = np.concatenate(list(stream_audio_from(read_end, "pipe", block_s=0.5)))
    finally:
        writer.join()
        os.close(read_end)
    assert np.array_equal(piped, expected)
    with open(path, "rb") as handle:
        assert np.array_equal(np.concatenate(list(stream_audio_from(handle, "file"))), expected)


# -- boundaries from the evidence, on arrays --------------------------------------------------------------
def test_evidence_starts_and_ends_at_dense_aligned_hashes() -> None:
    times = np.array([0.5, 4.0, 10.0, 10.4, 11.0, 11.2, 30.0, 30.5, 31.0, 38.0])
    assert evidence_start(times) == 10.0  # 0.5 and 4.0 are lone hashes, not a beginning
    assert evidence_end(times) == 31.0
    assert evidence_start(np.array([1.0, 5.0, 9.0])) is None and evidence_end(np.zeros(0)) is None
    assert evidence_start(times, hashes=1) == 0.5
    # a hash chance aligned 0.9 s before a dense start (seen on synthetic tunes) is not the start
    dense = np.concatenate([[19.09], np.arange(20.02, 25.0, 0.1)])
    assert evidence_start(dense) == pytest.approx(20.02) and evidence_end(dense) == pytest.approx(24.92)


def test_crossover_is_where_the_new_tracks_evidence_overtakes() -> None:
    # a hard cut: the old track's last hash at 19.5 s, the new one's first at 20.1 s: the middle of the gap
    assert crossover(np.arange(10.0, 20.0, 0.5), np.arange(20.1, 30.0, 0.5), 19.5, 20.1) == pytest.approx(19.8)
    # a 4 s crossfade centred on 40 s: the old track thins out as the new one fills in
    rng = np.random.default_rng(1)
    fading = np.sort(np.concatenate([np.arange(30.0, 38.0, 0.25), rng.uniform(38, 40, 5), rng.uniform(40, 42, 2)]))
    rising = np.sort(np.concatenate([rng.uniform(38, 40, 2), rng.uniform(40, 42, 5), np.arange(42.0, 50.0, 0.25)]))
    assert abs(crossover(fading, rising, 38.0, 42.0) - 40.0) <= 1.0


# -- a mix on a real database ---------------------------------------------------------------------------
#: (what, seconds from, seconds to): the stored tunes are "A" (60 s) and "B" (45 s); "U" is a tune not stored.
MIX = [("U", 0, 20), ("A", 0, 40), ("B", 10, 40), ("noise", 0, 15), ("A", 25, 50)]
TUNES = {"A": (11, 60.0), "B": (12, 45.0), "U": (90, 20.0)}


def _mix_and_truth(folder: Path, rng: np.random.Generator, mix: list[tuple[str, float, float]],
                   tunes: dict[str, tuple[int, float]]) -> tuple[np.ndarray, list[tuple[str, float, float, float]]]:
    """Write the stored tunes (names without "U") to ``folder``; return the mix and its identified parts.

    Parts are ``(file name, stream start, stream end, track start)``, in seconds.
    """
    folder.mkdir()
    signals = {}
    for name, (seed, seconds) in tunes.items():
        signals[name] = synth_tune(seed, duration_s=seconds)
        if not name.startswith("U"):
            soundfile.write(folder / f"tune_{name}.wav", signals[name], SR, subtype="PCM_16")
    pieces, truth, now = [], [], 0.0
    for name, begin, end in mix:
        if name == "noise":
            pieces.append((0.05 * rng.standard_normal(round((end - begin) * SR))).astype(np.float32))
        else:
            pieces.append(signals[name][round(begin * SR):round(end * SR)])
        if name in tunes and not name.startswith("U"):
            truth.append((f"tune_{name}.wav", now, now + end - begin, float(begin)))
        now += end - begin
    return np.concatenate(pieces), truth


@pytest.fixture
def mix(store, tmp_path, rng_factory):
    y, truth = _mix_and_truth(tmp_path / "music", rng_factory(5), MIX, TUNES)
    ingest(store, tmp_path / "music", FingerprintParams(duration_s=None), jobs=1)
    soundfile.write(tmp_path / "mix.wav", y, SR, subtype="PCM_16")
    return store, tmp_path / "mix.wav", truth


def _check_against_truth(found: list[dict[str, object]], truth: list[tuple[str, float, float, float]]) -> None:
    assert [f["file_name"] for f in found] == [name for name, *_ in truth], found
    for segment, (_, start, end, track_start) in zip(found, truth):
        assert abs(float(segment["start_s"]) - start) <= BOUNDARY_S, (segment, start)  # type: ignore[arg-type]
        assert abs(float(segment["end_s"]) - end) <= BOUNDARY_S, (segment, end)  # type: ignore[arg-type]
        assert abs(float(segment["track_start_s"]) - track_start) <= BOUNDARY_S, segment  # type: ignore[arg-type]
        # the alignment (track time minus stream time) is exact to a frame or two
        alignment = float(segment["track_start_s"]) - float(segment["start_s"])  # type: ignore[arg-type]
        assert alignment == pytest.approx(track_start - start, abs=0.1)


@pytest.mark.postgres
def test_mix_segments_match_the_truth(mix) -> None:
    store, path, truth = mix
    y, _ = soundfile.read(path, dtype="float32")
    consumed = []
    first_segment_after = []

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, y.size, SR):
            consumed.append(start)
            yield y[start:start + SR]

    found = []
    for segment in monitor(store, blocks()):
        first_segment_after.append(len(consumed))
        found.append(segment.__dict__)
    _check_against_truth(found, truth)
    # segments are given out while the stream goes on, not at its end
    assert first_segment_after[0] < y.size // SR - 30


@pytest.mark.postgres
def test_reading_ahead_gives_the_same_segments_and_looks_up_the_next_window_in_its_thread(mix, monkeypatch) -> None:
    """With read-ahead the next window's postings are fetched in the analysis thread.

    The open segment's track's for its targeted test, else all of them for the window matched afresh
    (into the stream's memory). The segments are the same as without, and that thread's own connection
    goes back to the pool.
    """
    store, path, truth = mix
    y, _ = soundfile.read(path, dtype="float32")
    statements: list[tuple[bool, bool]] = []  # (in the main thread, for one track) of each lookup statement
    run = store.lookup.run

    def counted(lookup):  # the real statement, counted by thread
        statements.append((threading.current_thread() is threading.main_thread(), "track_id =" in lookup.statement))
        return run(lookup)

    monkeypatch.setattr(store.lookup, "run", counted)

    def segments(read_ahead: bool) -> list[dict[str, object]]:
        session = StreamMonitor(store, read_ahead=read_ahead)
        return [segment.__dict__ for segment in session.run(y[i:i + SR] for i in range(0, y.size, SR))]

    plain = segments(False)
    assert all(main for main, _ in statements)
    whole_in_main = sum(1 for _, track in statements if not track)
    statements.clear()
    ahead = segments(True)
    assert ahead == plain
    _check_against_truth(ahead, truth)
    # most targeted tests were looked up ahead, in the other thread: the main thread asked for few
    ahead_track = sum(1 for main, track in statements if track and not main)
    assert ahead_track > 2 * sum(1 for main, track in statements if track and main)
    # so were the keys of windows in the unknown stretches: the main thread fetched fewer itself
    assert sum(1 for main, track in statements if not track and main) < whole_in_main
    assert store.engine.pool.checkedout() == 0


@pytest.mark.postgres
def test_cli_monitor_file_stdin_and_pipe(mix, db_url) -> None:
    _, path, truth = mix
    runner = CliRunner()
    by_file = runner.invoke(cli, ["--db", db_url, "monitor", str(path), "--json"], catch_exceptions=False)
    assert by_file.exit_code == 0, by_file.output
    found = [json.loads(line) for line in by_file.stdout.splitlines()]
    _check_against_truth(found, truth)
    assert [f["cut_short"] for f in found] == [False, False, True]  # the stream ends inside A
    assert by_file.stderr.startswith("monitored 0:02:10.0: 3 segments, ")

    by_stdin = runner.invoke(cli, ["--db", db_url, "monitor", "-", "--json"], input=path.read_bytes(),
                             catch_exceptions=False)
    assert by_stdin.stdout == by_file.stdout

    text = runner.invoke(cli, ["--db", db_url, "monitor", str(path)], catch_exceptions=False)
    *lines, summary = text.stdout.splitlines()
    assert len(lines) == len(truth) and all(name in line for line, (name, *_) in zip(lines, truth))
    assert lines[0].startswith("0:00:") and " -> tune_A.wav (id " in lines[0] and "votes" in lines[0]
    assert lines[-1].endswith(", cut short") and summary.startswith("monitored 0:02:10.0: 3 segments, ")

    logged = runner.invoke(cli, ["--db", db_url, "monitor", str(path), "--csv"], catch_exceptions=False)
    rows = list(csv.DictReader(io.StringIO(logged.stdout)))
    assert [row["file_name"] for row in rows] == [name for name, *_ in truth]
    assert [row["cut_short"] for row in rows] == ["False", "False", "True"] and rows[0]["speed"] == "1.0"
    assert runner.invoke(cli, ["--db", db_url, "monitor", str(path), "--csv", "--json"]).exit_code == 2

    # a real pipe, as `ffmpeg -i URL -f wav - | fpstore monitor -` gives: WAV of unknown length, read as it comes
    ffmpeg_like = path.read_bytes()
    with subprocess.Popen([sys.executable, "-m", "fpstore", "--db", db_url, "monitor", "-", "--json"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        out, err = process.communicate(ffmpeg_like, timeout=600)
    assert process.returncode == 0, err.decode()
    assert out.decode() == by_file.stdout


@pytest.mark.postgres
def test_cli_monitor_verbose_tells_every_window(mix, db_url) -> None:
    _, path, _ = mix
    result = CliRunner().invoke(cli, ["--db", db_url, "-v", "monitor", str(path), "--window", "10", "--hop", "10"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    window_lines = [line for line in result.output.splitlines() if line.startswith("window ")]
    # 10 s is 215 whole frames (9.98 s): 13 windows back to back, and one over the last 0.2 s
    assert len(window_lines) == 14
    assert window_lines[0].startswith("window 0:00:00.0-0:00:10.0: ")
    assert window_lines[-1].startswith("window 0:02:09.8-0:02:10.0: ")
    assert sum("unknown" in line for line in window_lines) >= 3  # the 20 s unknown tune, the noise


@pytest.mark.postgres
def test_cli_monitor_bad_input_is_one_line(store, tmp_path, db_url) -> None:
    (tmp_path / "music").mkdir()
    soundfile.write(tmp_path / "music" / "t.wav", synth_tune(1, duration_s=5.0), SR)
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db_url, "monitor", str(tmp_path / "music" / "t.wav")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "ingest first" in result.output
    ingest(store, tmp_path / "music", jobs=1)
    result = runner.invoke(cli, ["--db", db_url, "monitor", "-"], input=b"not audio at all")
    assert result.exit_code == 1 and result.output.startswith("Error: <stdin>: cannot decode audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    result = runner.invoke(cli, ["--db", db_url, "monitor", str(tmp_path / "empty.wav")])
    assert result.exit_code == 1 and result.output == f"Error: {tmp_path / 'empty.wav'}: empty file (0 bytes)\n"
    result = runner.invoke(cli, ["--db", db_url, "monitor", str(tmp_path / "music" / "t.wav"), "--hop", "20"])
    assert result.exit_code == 2 and "--hop" in result.output


#: Ten minutes: five stored 120 s tunes, two unknown ones and noise, as in the README's run.
LONG_MIX = [("U1", 0, 30), ("A", 0, 90), ("B", 20, 100), ("noise", 0, 20), ("C", 0, 120), ("U2", 10, 60),
            ("A", 60, 120), ("D", 30, 90), ("E", 0, 60), ("B", 0, 30)]
LONG_TUNES = {name: (seed, 120.0) for name, seed in zip(["A", "B", "C", "D", "E", "U1", "U2"], range(21, 28))}


@pytest.mark.postgres
@pytest.mark.slow
def test_ten_minute_mix(store, tmp_path, rng_factory) -> None:
    y, truth = _mix_and_truth(tmp_path / "music", rng_factory(6), LONG_MIX, LONG_TUNES)
    assert y.size == 600 * SR
    ingest(store, tmp_path / "music", FingerprintParams(duration_s=None), jobs=1)
    found = [segment.__dict__ for segment in monitor(store, (y[i:i + SR // 2] for i in range(0, y.size, SR // 2)))]
    _check_against_truth(found, truth)


@pytest.mark.postgres
def test_cli_prints_a_segment_while_the_stream_is_still_open(mix, db_url) -> None:
    """The first segment's line comes out (flushed) while standard input is still open, as on a live stream."""
    import threading

    _, path, truth = mix
    data = path.read_bytes()
    header_and_80_s = data[:len(data) - (130 - 80) * SR * 2]  # 16-bit mono: 2 bytes a sample
    lines: list[bytes] = []
    with subprocess.Popen([sys.executable, "-m", "fpstore", "--db", db_url, "monitor", "-"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(header_and_80_s)
        process.stdin.flush()
        reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=600)  # a watchdog, not a measurement: the line is expected within seconds
        assert lines and lines[0].decode().split(" -> ")[1].startswith(truth[0][0]), lines
        assert process.poll() is None  # still running, waiting for the rest of the stream
        process.stdin.write(data[len(header_and_80_s):])
        process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(timeout=600) == 0
    assert len(lines[0].splitlines() + rest.splitlines()) == len(truth) + 1  # and the summary line


# -- exact boundaries, speed, repeats, unknown stretches (issue 26) -------------------------------------------
@pytest.fixture
def stored_tunes(store, tmp_path):
    """Tunes A (60 s), B (45 s) and R (48 s, its first 12 s played again at 24 s) stored whole; U1, U2 not stored."""
    folder = tmp_path / "stored"
    folder.mkdir()
    part = {seed: synth_tune(seed, duration_s=12.0) for seed in (31, 32, 33)}
    tunes = {"A": synth_tune(11, duration_s=60.0), "B": synth_tune(12, duration_s=45.0),
             "R": np.concatenate([part[31], part[32], part[31], part[33]])}
    for name, y in tunes.items():
        soundfile.write(folder / f"tune_{name}.wav", y, SR, subtype="PCM_16")
    ingest(store, folder, FingerprintParams(duration_s=None), jobs=1)
    tunes.update(U1=synth_tune(90, duration_s=40.0), U2=synth_tune(91, duration_s=40.0))
    return store, tunes


def _segments(store, stream: np.ndarray) -> list:
    return list(monitor(store, (stream[i:i + SR] for i in range(0, stream.size, SR))))


@pytest.mark.postgres
def test_a_track_joined_mid_way_starts_exactly_and_an_unknown_stretch_stays_unnamed(stored_tunes) -> None:
    store, tune = stored_tunes
    # 20 s unknown, A from its 23.7 s for 30 s, 25 s unknown, B from its 5 s to its end
    stream = np.concatenate([tune["U1"][:20 * SR], tune["A"][round(23.7 * SR):round(53.7 * SR)], tune["U2"][:25 * SR],
                             tune["B"][5 * SR:]])
    segments = _segments(store, stream)
    assert [s.file_name for s in segments] == ["tune_A.wav", "tune_B.wav"], segments
    first, second = segments
    assert first.start_s == pytest.approx(20.0, abs=0.5) and first.track_start_s == pytest.approx(23.7, abs=0.5)
    assert first.end_s == pytest.approx(50.0, abs=0.5) and not first.cut_short
    assert second.start_s == pytest.approx(75.0, abs=0.5) and second.track_start_s == pytest.approx(5.0, abs=0.5)
    assert second.end_s == pytest.approx(115.0, abs=0.5) and second.cut_short  # B plays to the end of the stream
    assert first.speed == second.speed == 1.0 and 0 < first.chance_p < 1e-3


@pytest.mark.postgres
def test_a_stream_played_2_percent_fast_is_named_at_speed_1_02(stored_tunes) -> None:
    store, tune = stored_tunes
    fast = change_speed(tune["A"][10 * SR:50 * SR], 1 / 1.02, SR)  # 40 s of A played in 39.2 s
    stream = np.concatenate([tune["U1"][:15 * SR], fast, tune["U2"][:15 * SR]])
    (segment,) = _segments(store, stream)
    assert segment.file_name == "tune_A.wav" and segment.speed == 1.02
    assert segment.start_s == pytest.approx(15.0, abs=BOUNDARY_S)
    assert segment.end_s == pytest.approx(15.0 + 40 / 1.02, abs=BOUNDARY_S)
    assert segment.track_start_s == pytest.approx(10.0, abs=BOUNDARY_S)
    assert segment.track_end_s == pytest.approx(50.0, abs=BOUNDARY_S)


@pytest.mark.postgres
def test_a_track_at_another_speed_after_an_unknown_stretch_is_named_from_its_start(stored_tunes) -> None:
    store, tune = stored_tunes
    # A at 1.0 for 25 s names the stream's speed; 20.5 s unknown; then B played 2 % fast from 45.5 s
    fast = change_speed(tune["B"][5 * SR:40 * SR], 1 / 1.02, SR)
    stream = np.concatenate([tune["A"][:25 * SR], tune["U1"][:round(20.5 * SR)], fast])
    answers: list = []
    segments = list(StreamMonitor(store, on_window=answers.append).run(
        stream[i:i + SR] for i in range(0, stream.size, SR)))
    assert [(s.file_name, s.speed) for s in segments] == [("tune_A.wav", 1.0), ("tune_B.wav", 1.02)], segments
    assert segments[1].start_s == pytest.approx(45.5, abs=BOUNDARY_S)
    assert segments[1].track_start_s == pytest.approx(5.0, abs=BOUNDARY_S)
    # in the unknown stretch (windows from 25 s) every other window looks at 1.0 only: the one at 40 s, which
    # holds 4.6 s of B, names nothing; the next names B at 1.02, and its start is found in the one at 40 s
    at = {round(a.start_s): a for a in answers}
    assert at[40].track_id is None and at[45].file_name == "tune_B.wav" and not at[45].continued


@pytest.mark.postgres
def test_a_repeated_section_does_not_split_the_segment(stored_tunes) -> None:
    store, tune = stored_tunes
    stream = np.concatenate([tune["U1"][:10 * SR], tune["R"], tune["U2"][:15 * SR]])
    answers: list = []
    segments = list(StreamMonitor(store, on_window=answers.append).run(
        stream[i:i + SR] for i in range(0, stream.size, SR)))
    assert [(s.file_name, round(s.start_s), round(s.end_s), round(s.track_start_s)) for s in segments] == [
        ("tune_R.wav", 10, 58, 0)]
    # the windows inside the repeat (stream 34-46 s) were continued, not named afresh at the first occurrence
    assert all(a.continued for a in answers if 34 <= a.start_s and a.end_s <= 46)


# -- ending cleanly (issue 22, point 8) -----------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.parametrize(("how", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_print_the_open_segment_cut_short(mix, db_url, how, status) -> None:
    """Half of the stream is piped and the pipe left open; once a segment runs, the signal stops the monitor."""
    import signal
    import threading

    _, path, truth = mix
    data = path.read_bytes()
    header_and_35_s = data[:44 + 35 * SR * 2]  # 16-bit mono: 2 bytes a sample; U for 20 s, then A
    errors: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "fpstore", "--db", db_url, "-v", "monitor", "-", "--json"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        running = threading.Event()

        def watch(stream) -> None:  # type: ignore[no-untyped-def]
            for line in stream:
                errors.append(line.decode())
                if " continues tune_A.wav" in errors[-1]:
                    running.set()

        watcher = threading.Thread(target=watch, args=(process.stderr,))
        watcher.start()
        process.stdin.write(header_and_35_s)
        process.stdin.flush()
        assert running.wait(timeout=600), errors  # a watchdog: the segment is followed within seconds
        process.send_signal(getattr(signal, how))
        # A live stream goes on arriving: the next bytes end the read libsndfile retries after the
        # signal, and the signal's exception is raised then (a stalled pipe holds it until data or EOF).
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(data[len(header_and_35_s):len(header_and_35_s) + 2 * SR * 2])
            process.stdin.flush()
        out = process.stdout.read()
        assert process.wait(timeout=600) == status, errors
        watcher.join()
        process.stdin.close()
    (segment,) = [json.loads(line) for line in out.decode().splitlines()]
    assert segment["file_name"] == "tune_A.wav" and segment["cut_short"] is True
    assert segment["start_s"] == pytest.approx(truth[0][1], abs=BOUNDARY_S)
    assert any(line.startswith("monitored ") for line in errors)


@pytest.mark.postgres
def test_a_remembering_lookup_gives_the_postings_a_fresh_one_gives(mix) -> None:
    """Overlapping windows' keys, asked in turn: the same postings whether remembered or fetched."""
    from fpstore.matching.vote import query_keys
    from fpstore.signal.fingerprint import fingerprint_signal

    store = mix[0]
    params, zone_id = store.params(duration_s=None), store.zone_ids()["Fsmall_Tlong"]
    tune = synth_tune(TUNES["A"][0], duration_s=TUNES["A"][1])
    keys = []
    for start_s in (0, 5, 5, 10, 0):
        hashes = fingerprint_signal(tune[start_s * SR:(start_s + 10) * SR], params).zones["Fsmall_Tlong"].hashes
        zones, stored, _ = query_keys(np.full(hashes.size, zone_id), hashes)
        keys.append((zones, stored))

    def rows(postings: tuple[np.ndarray, ...]) -> list[tuple[int, ...]]:
        return sorted(zip(*(column.tolist() for column in postings)))

    fresh = [rows(store.lookup.postings(*k)) for k in keys]
    assert all(fresh) and fresh[1] == fresh[2]
    memory = lambda: getattr(store.lookup._thread, "memory", None)  # noqa: E731
    track = Counter(row[2] for row in fresh[0]).most_common(1)[0][0]
    of_track = [[row for row in rows_ if row[2] == track] for rows_ in fresh]
    assert [rows(store.lookup.track_postings(*k, track)) for k in keys] == of_track
    with store.lookup.remembering(2):
        assert [rows(store.lookup.postings(*k)) for k in keys] == fresh
        assert memory() is not None and len(memory()._answered) == 2
        with concurrent.futures.ThreadPoolExecutor(1) as other:  # another thread (the HTTP service's) has its own
            assert other.submit(memory).result() is None
        # one track's postings: from what a whole lookup remembers, else fetched for that track alone
        assert [rows(store.lookup.track_postings(*k, track)) for k in (*keys, keys[0])] == [*of_track, of_track[0]]
    assert memory() is None


@pytest.mark.parametrize("speed", [1.0, 1.02])
def test_windows_along_a_grid_have_the_streams_hashes(rng_factory, speed) -> None:
    """A window following the one before is cut from the whole stream's analysis, bar its last frames."""
    from fpstore.signal.analysis import analyze
    from fpstore.signal.window_peaks import WindowPeaks

    params = FingerprintParams()
    hop = params.hop_length
    stream = synth_tune(TUNES["A"][0], duration_s=24.0) + 0.05 * rng_factory(8).standard_normal(24 * SR).astype(
        np.float32)
    whole = analyze(change_speed(stream, speed, SR), params).zones["Fsmall_Tlong"]
    grid = WindowPeaks(params, speed, ["Fsmall_Tlong"])
    window, step = 215 * hop, 108 * hop
    margin = grid.context + max(zone.dt_max_frames for zone in params.zones)
    for start in range(0, stream.size - window + 1, step):
        found = grid.fingerprint(start, stream[start:start + window])
        assert list(found.zones) == ["Fsmall_Tlong"]
        origin = round(start * speed / hop)
        end = (start + window) * speed / hop
        # anchors whose targets all lie in frames the window decided from the stream's samples
        inside = (whole.t_anchor_frames >= np.ceil(start * speed / hop)) & (whole.t_anchor_frames < end - margin)
        mine = found.zones["Fsmall_Tlong"]
        kept = mine.t_anchor_frames + origin < end - margin
        if start:  # the first window has no samples before it, as the stream has none
            assert grid.reused_frames > 0
        got = set(zip(mine.hashes[kept].tolist(), (mine.t_anchor_frames[kept] + origin).tolist()))
        expected = set(zip(whole.hashes[inside].tolist(), whole.t_anchor_frames[inside].tolist()))
        if speed == 1.0:
            assert got == expected
        else:  # resampled from within half a sample of the grid: a near tie of two peaks may go the other way
            assert len(got ^ expected) <= 0.02 * len(expected)
    # a window asked for out of order (a look back) is analysed alone and leaves the grid as it was
    before = grid.reused_frames
    grid.fingerprint(0, stream[:window])
    assert grid.reused_frames == before


@pytest.mark.postgres
def test_a_held_connection_serves_the_lookups_of_a_stream(store) -> None:
    with store.raw() as first, store.raw() as second:
        assert first is not second
    with store.holding_connection():
        with store.raw() as held:
            pid = held.info.backend_pid
            with store.raw() as nested:  # a block inside another gets a connection of its own
                assert nested.info.backend_pid != pid
        with store.raw() as again:
            assert again.info.backend_pid == pid
        # another thread holds its own (fpstore serve matches several queries at once, each holding one)
        in_thread: list[int] = []

        def held_in_thread() -> None:
            with store.holding_connection():
                for _ in range(2):
                    with store.raw() as conn:
                        in_thread.append(conn.info.backend_pid)

        worker = threading.Thread(target=held_in_thread)
        worker.start()
        worker.join()
        assert in_thread[0] == in_thread[1] != pid
    assert store.engine.pool.checkedout() == 0  # every held connection went back to the pool


@pytest.mark.postgres
def test_cli_monitors_several_streams_at_once(mix, db_url, tmp_path) -> None:
    """Two streams in two processes and a file that fails: each line names its stream, each stream is summed up."""
    _, path, truth = mix
    other = tmp_path / "second mix.wav"
    other.write_bytes(path.read_bytes())
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db_url, "monitor", str(path), str(tmp_path / "bad.wav"), str(other),
                                 "--jobs", "2", "--json"], catch_exceptions=False)
    assert result.exit_code == 3, result.output  # a stream failed, the others were monitored
    found = [json.loads(line) for line in result.stdout.splitlines()]
    for stream in (path, other):
        _check_against_truth([f for f in found if f["stream"] == str(stream)], truth)
    errors = result.stderr.splitlines()
    assert sorted(line.split(": monitored ")[0] for line in errors if ": monitored " in line) == sorted(
        [str(path), str(other)])
    (failure,) = [line for line in errors if line.startswith("failed: ")]
    assert failure.startswith(f"failed: {tmp_path / 'bad.wav'}: cannot decode audio")

    logged = runner.invoke(cli, ["--db", db_url, "monitor", str(path), str(other), "--csv"], catch_exceptions=False)
    rows = list(csv.DictReader(io.StringIO(logged.stdout)))
    assert logged.exit_code == 0 and list(rows[0])[0] == "stream"
    assert [row["file_name"] for row in rows if row["stream"] == str(other)] == [name for name, *_ in truth]
    assert runner.invoke(cli, ["--db", db_url, "monitor", str(path), "-"]).exit_code == 2
