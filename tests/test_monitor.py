"""Monitoring: the window buffer, the segmenter on arrays, and a mix of stored and unknown audio on a real database."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from fpstore.cli import cli
from fpstore.errors import ParameterError
from fpstore.ingest import ingest
from fpstore.match import ALL_ZONES, PLAIN_MIN_VOTES_ALL_ZONES, PLAIN_MIN_VOTES_ONE_ZONE
from fpstore.monitor import Segment, Segmenter, WindowAnswer, monitor, segments_of, window_rule
from fpstore.signal.params import FingerprintParams
from fpstore.signal.synth import synth_tune
from fpstore.signal.windows import SlidingWindows

SR = 22050
HOP_S = 5.0


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


# -- the segmenter, on arrays ------------------------------------------------------------------------
def _answers(rows: list[tuple[int | None, float, int]], window_s: float = 10.0, hop_s: float = 5.0) -> list[WindowAnswer]:
    """Window answers from ``(track, offset_s, votes)`` rows, windows ``hop_s`` apart."""
    return [WindowAnswer(i * hop_s, i * hop_s + window_s, track, f"t{track}.wav" if track else "", offset, votes)
            for i, (track, offset, votes) in enumerate(rows)]


def _table(segments: list[Segment]) -> list[tuple[int, float, float, float, float, int, int]]:
    return [(s.track_id, round(s.start_s, 3), round(s.end_s, 3), round(s.track_start_s, 3), round(s.track_end_s, 3),
             s.votes, s.windows) for s in segments]


def test_consistent_windows_merge_and_a_new_offset_splits() -> None:
    # track 1 from its 30 s for three windows, then track 1 again from its 100 s, then track 2
    rows = [(1, 30.0, 40), (1, 35.0, 40), (1, 40.0, 40), (1, 115.0, 40), (1, 120.0, 40), (2, 0.0, 40), (2, 5.0, 40)]
    assert _table(list(segments_of(_answers(rows), tolerance_s=0.1))) == [
        (1, 0.0, 20.0, 30.0, 50.0, 40, 3),
        (1, 15.0, 30.0, 115.0, 130.0, 40, 2),
        (2, 25.0, 40.0, 0.0, 15.0, 40, 2),
    ]


def test_alignment_within_tolerance_is_one_segment() -> None:
    rows = [(1, 30.0, 40), (1, 35.05, 40), (1, 40.0, 40)]
    assert len(list(segments_of(_answers(rows), tolerance_s=0.1))) == 1
    assert len(list(segments_of(_answers(rows), tolerance_s=0.01, max_gap=0, min_windows=1))) == 3
    # with a gap allowed, the middle window is a gap: one segment of the two others
    assert [s.windows for s in segments_of(_answers(rows), tolerance_s=0.01, min_windows=1)] == [2]


def test_boundaries_inside_windows_follow_the_votes() -> None:
    # unknown, then a window a quarter filled by track 1 (10 of 40 votes), full windows, a window 60% filled
    rows = [(None, 0.0, 3), (1, 7.5, 10), (1, 12.5, 40), (1, 17.5, 40), (1, 22.5, 24), (None, 0.0, 2)]
    assert _table(list(segments_of(_answers(rows), tolerance_s=0.1, max_gap=0))) == [
        (1, 12.5, 26.0, 15.0, 28.5, 40, 4),
    ]


def test_negative_offset_places_the_start_exactly() -> None:
    # the track's start lies 3.2 s into the window: the window's query begins 3.2 s before the track
    rows = [(None, 0.0, 1), (1, -3.2, 30), (1, 1.8, 40)]
    (segment,) = segments_of(_answers(rows), tolerance_s=0.1)
    assert segment.start_s == pytest.approx(8.2) and segment.track_start_s == pytest.approx(0.0)


def test_unknown_windows_up_to_max_gap_are_bridged() -> None:
    rows = [(1, 0.0, 40), (None, 0.0, 0), (1, 10.0, 40)]
    assert [s.windows for s in segments_of(_answers(rows), tolerance_s=0.1, max_gap=1)] == [2]
    assert [s.windows for s in segments_of(_answers(rows), tolerance_s=0.1, max_gap=0, min_windows=1)] == [1, 1]


def test_a_repeated_section_matched_at_its_other_place_does_not_split_the_segment() -> None:
    rows = [(1, 30.0, 40), (1, 35.0, 40), (1, 5.0, 30), (1, 45.0, 40), (1, 50.0, 40)]
    assert _table(list(segments_of(_answers(rows), tolerance_s=0.1))) == [(1, 0.0, 30.0, 30.0, 60.0, 40, 4)]


def test_a_lone_window_is_not_told_unless_asked() -> None:
    rows = [(None, 0.0, 3), (2, 10.0, 19), (None, 0.0, 2), (None, 0.0, 2)]
    assert list(segments_of(_answers(rows), tolerance_s=0.1)) == []
    assert [s.track_id for s in segments_of(_answers(rows), tolerance_s=0.1, min_windows=1)] == [2]


def test_finish_tells_a_segment_that_began_in_the_waiting_windows() -> None:
    rows = [(1, 0.0, 40), (1, 5.0, 40), (2, 0.0, 40)]  # the stream ends one window into track 2
    assert [s.track_id for s in segments_of(_answers(rows), tolerance_s=0.1, min_windows=1)] == [1, 2]
    assert [s.track_id for s in segments_of(_answers(rows), tolerance_s=0.1)] == [1]


def test_a_segment_is_given_out_when_it_ends_not_before() -> None:
    segmenter = Segmenter(tolerance_s=0.1, max_gap=1)
    first, second, *unknown = _answers([(1, 0.0, 40), (1, 5.0, 40), (None, 0, 0), (None, 0, 0)])
    assert segmenter.push(first) == [] and segmenter.push(second) == []
    assert segmenter.push(unknown[0]) == []  # may still be a gap
    (ended,) = segmenter.push(unknown[1])
    assert ended.windows == 2 and segmenter.finish() == []


def test_nothing_identified_gives_no_segment() -> None:
    assert list(segments_of(_answers([(None, 0.0, 3)] * 4), tolerance_s=0.1)) == []


@pytest.mark.parametrize(("tolerance_s", "max_gap", "min_windows"),
                         [(-1.0, 1, 1), (float("nan"), 1, 1), (0.1, -1, 1), (0.1, 1.5, 1), (0.1, 1, 0), (0.1, 1, True)])
def test_segmenter_parameters_are_checked(tolerance_s, max_gap, min_windows) -> None:
    with pytest.raises(ParameterError):
        Segmenter(tolerance_s, max_gap, min_windows)


# -- a mix on a real database ---------------------------------------------------------------------------
#: (what, seconds from, seconds to): the stored tunes are "A" (60 s) and "B" (45 s); "U" is a tune not stored.
MIX = [("U", 0, 20), ("A", 0, 40), ("B", 10, 40), ("noise", 0, 15), ("A", 25, 50)]
TUNES = {"A": (11, 60.0), "B": (12, 45.0), "U": (90, 20.0)}


def _mix_and_truth(folder: Path, rng: np.random.Generator, mix: list[tuple[str, int, int]],
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
            pieces.append((0.05 * rng.standard_normal((end - begin) * SR)).astype(np.float32))
        else:
            pieces.append(signals[name][begin * SR:end * SR])
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
        assert abs(float(segment["start_s"]) - start) <= HOP_S, (segment, start)  # type: ignore[arg-type]
        assert abs(float(segment["end_s"]) - end) <= HOP_S, (segment, end)  # type: ignore[arg-type]
        assert abs(float(segment["track_start_s"]) - track_start) <= HOP_S, segment  # type: ignore[arg-type]
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
def test_cli_monitor_file_stdin_and_pipe(mix, db_url) -> None:
    _, path, truth = mix
    runner = CliRunner()
    by_file = runner.invoke(cli, ["--db", db_url, "monitor", str(path), "--json"], catch_exceptions=False)
    assert by_file.exit_code == 0, by_file.output
    _check_against_truth([json.loads(line) for line in by_file.output.splitlines()], truth)

    by_stdin = runner.invoke(cli, ["--db", db_url, "monitor", "-", "--json"], input=path.read_bytes(),
                             catch_exceptions=False)
    assert by_stdin.output == by_file.output

    text = runner.invoke(cli, ["--db", db_url, "monitor", str(path)], catch_exceptions=False)
    lines = text.output.splitlines()
    assert len(lines) == len(truth) and all(name in line for line, (name, *_) in zip(lines, truth))
    assert lines[0].startswith("0:00:") and " -> tune_A.wav (id " in lines[0] and "votes" in lines[0]

    # a real pipe, as `ffmpeg -i URL -f wav - | fpstore monitor -` gives: WAV of unknown length, read as it comes
    ffmpeg_like = path.read_bytes()
    with subprocess.Popen([sys.executable, "-m", "fpstore", "--db", db_url, "monitor", "-", "--json"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        out, err = process.communicate(ffmpeg_like, timeout=600)
    assert process.returncode == 0, err.decode()
    assert out.decode() == by_file.output


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
    assert len(lines[0].splitlines() + rest.splitlines()) == len(truth)


def test_a_window_is_named_by_the_notebooks_vote_count_unless_told_otherwise() -> None:
    # Not the calibrated rule of fpstore match: on real music it split a track and named an unknown one (README).
    one_zone, pooled = window_rule("Fsmall_Tlong"), window_rule(ALL_ZONES)
    assert not one_zone.calibrated and one_zone.min_votes == PLAIN_MIN_VOTES_ONE_ZONE
    assert pooled.min_votes == PLAIN_MIN_VOTES_ALL_ZONES
