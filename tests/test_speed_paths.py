"""The fast paths give exactly what the seed's librosa path gives: decoding, streaming, bulk storage."""

from __future__ import annotations

import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
from helpers import oracle_pairs, sorted_pairs, write_tunes
from sqlalchemy import create_engine, text

from fpstore.db.store import Store
from fpstore.ingest import ingest
from fpstore.signal.audio import load_audio, stream_audio
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.hashing import zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import find_peaks
from fpstore.signal.spectrogram import frame_magnitudes, hann_window, magnitude_spectrogram
from fpstore.signal.stream import fingerprint_blocks, fingerprint_file_streaming, ranged_zone_hashes
from fpstore.signal.synth import synth_tune

FORMATS = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}


def librosa_samples(path: Path, duration_s: float | None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return librosa.load(path, sr=22050, mono=True, duration=duration_s)[0]


def write_signal(path: Path, rate: int, channels: int, seconds: float, seed: int) -> Path:
    """A synthetic tune at ``rate`` Hz; the second channel is a quieter, delayed copy."""
    mono = synth_tune(seed, duration_s=seconds, sample_rate=rate)
    frames = mono[:, None] if channels == 1 else np.stack([mono, 0.6 * np.roll(mono, 37)], axis=1)
    soundfile.write(path, frames, rate, subtype=FORMATS[path.suffix[1:]])
    return path


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("rate", [22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_decode_equals_librosa_load(tmp_path, fmt, rate, channels) -> None:
    path = write_signal(tmp_path / f"x.{fmt}", rate, channels, 3.3, seed=rate + channels)
    # 30 s is longer than the file, 2.5 s cuts it (librosa reads int(2.5 * rate) native frames).
    for duration_s in (30.0, 2.5, None):
        want = librosa_samples(path, duration_s)
        got = load_audio(path, duration_s=duration_s)
        assert got.dtype == want.dtype == np.float32
        assert got.shape == want.shape and np.array_equal(got, want), (fmt, rate, channels, duration_s)


@pytest.mark.corpus
def test_decode_equals_librosa_load_on_real_music(corpus_clips) -> None:
    for path in corpus_clips:
        assert np.array_equal(load_audio(path), librosa_samples(path, 30.0)), path.name


def test_undecodable_file_still_raises_audio_error(tmp_path) -> None:
    from fpstore.errors import AudioError

    path = tmp_path / "noise.mp3"
    path.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="noise.mp3"):
        load_audio(path)


@pytest.mark.parametrize("rate", [22050, 44100])
def test_streamed_decode_equals_one_shot(tmp_path, rate) -> None:
    path = write_signal(tmp_path / "x.flac", rate, 2, 21.0, seed=5)
    for duration_s in (None, 12.3):
        whole = load_audio(path, duration_s=duration_s)
        blocks = list(stream_audio(path, duration_s=duration_s, block_s=2.9))
        assert len(blocks) > 3
        assert np.array_equal(np.concatenate(blocks), whole)


def librosa_magnitudes(y: np.ndarray, n_fft: int, hop_length: int, bin_max: int | None, center: bool) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_fft is too large" for the shortest signals
        stft = librosa.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window="hann", center=center)
    return np.abs(stft[:bin_max])


@pytest.mark.parametrize("n_fft", [2048, 1024, 512, 17])
def test_hann_window_equals_scipy(n_fft) -> None:
    import scipy.signal

    assert np.array_equal(hann_window(n_fft), scipy.signal.get_window("hann", n_fft, fftbins=True))


@pytest.mark.parametrize("n_samples", [1, 100, 1023, 1024, 2048, 2049, 22050 * 3 + 17])
@pytest.mark.parametrize(("n_fft", "hop_length", "bin_max"), [(2048, 1024, 1024), (1024, 256, None), (512, 100, 200)])
def test_spectrogram_equals_librosa_stft(rng_factory, n_samples, n_fft, hop_length, bin_max) -> None:
    y = rng_factory(n_samples).standard_normal(n_samples).astype(np.float32)
    got = magnitude_spectrogram(y, n_fft=n_fft, hop_length=hop_length, bin_max=bin_max)
    assert got.dtype == np.float32
    assert np.array_equal(got, librosa_magnitudes(y, n_fft, hop_length, bin_max, center=True))
    if n_samples >= n_fft:
        assert np.array_equal(frame_magnitudes(y, n_fft=n_fft, hop_length=hop_length, bin_max=bin_max),
                              librosa_magnitudes(y, n_fft, hop_length, bin_max, center=False))


def test_spectrogram_of_float64_audio_keeps_librosa_precision(rng_factory) -> None:
    y = rng_factory(3).standard_normal(9000)
    got = magnitude_spectrogram(y)
    assert got.dtype == np.float64 and np.array_equal(got, librosa_magnitudes(y, 2048, 1024, 1024, center=True))


def test_spectrogram_equals_librosa_stft_on_real_music(corpus_clips) -> None:
    for path in corpus_clips:
        y = load_audio(path)
        assert np.array_equal(magnitude_spectrogram(y), librosa_magnitudes(y, 2048, 1024, 1024, center=True)), path


def test_frames_of_padded_segments_equal_one_shot_frames(rng_factory) -> None:
    y = (0.3 * rng_factory(1).standard_normal(22050 * 4 + 333)).astype(np.float32)
    one_shot = magnitude_spectrogram(y)
    padded = np.pad(y, (1024, 1024))
    first, count = 17, 23
    segment = padded[first * 1024: (first + count - 1) * 1024 + 2048]
    assert np.array_equal(frame_magnitudes(segment), one_shot[:, first:first + count])


def test_ranged_hashing_equals_one_call(rng_factory) -> None:
    params = FingerprintParams()
    y = synth_tune(9, duration_s=40.0)
    peaks = find_peaks(magnitude_spectrogram(y))
    whole = zone_hashes(peaks, params.zones, top_k=params.top_k_targets)
    ranged = ranged_zone_hashes(peaks, params, range_frames=97)
    for name, found in whole.items():
        assert np.array_equal(ranged[name].hashes, found.hashes)
        assert np.array_equal(ranged[name].t_anchor_frames, found.t_anchor_frames)


def assert_same_fingerprint(a, b) -> None:
    assert (a.n_frames, a.n_peaks, a.duration_s) == (b.n_frames, b.n_peaks, b.duration_s)
    for name in a.zones:
        assert np.array_equal(a.zones[name].hashes, b.zones[name].hashes), name
        assert np.array_equal(a.zones[name].t_anchor_frames, b.zones[name].t_anchor_frames), name


@pytest.mark.parametrize("n_samples", [0, 700, 5000, 22050 * 9 + 517])
def test_block_fingerprint_equals_one_shot(rng_factory, n_samples) -> None:
    params = FingerprintParams(duration_s=None)
    rng = rng_factory(n_samples)
    y = np.concatenate([synth_tune(3, duration_s=n_samples / 22050 + 1)[:n_samples // 2],
                        (0.2 * rng.standard_normal(n_samples - n_samples // 2)).astype(np.float32)])
    cuts = np.sort(rng.integers(0, n_samples + 1, size=7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = fingerprint_signal(y, params)
        got = fingerprint_blocks(np.split(y, cuts), params)
    assert_same_fingerprint(got, want)


@pytest.mark.slow
def test_streamed_file_fingerprint_equals_one_shot(tmp_path) -> None:
    """A few minutes of 44.1 kHz stereo MP3, many blocks: the same postings as decoding it whole."""
    params = FingerprintParams(duration_s=None)
    path = write_signal(tmp_path / "long.mp3", 44100, 2, 150.0, seed=11)
    want = fingerprint_signal(load_audio(path, duration_s=None), params)
    assert_same_fingerprint(fingerprint_file_streaming(path, params, block_s=11.7), want)
    assert want.n_postings > 1000



def stored(store: Store) -> dict[str, dict[str, list[tuple[int, int]]]]:
    with store.engine.connect() as conn:
        tracks = conn.execute(text("SELECT id, file_name FROM tracks")).all()
    return {name: {z: sorted_pairs(*a) for z, a in store.tracks.postings(tid).items()} for tid, name in tracks}


@pytest.mark.postgres
def test_bulk_ingest_stores_seed_postings_in_indexed_partitions(store, tmp_path) -> None:
    paths = write_tunes(tmp_path, [1, 2, 3, 4], duration_s=6.0)
    summary = ingest(store, tmp_path, bulk=True, jobs=1, batch_postings=1, partition_postings=1500,
                     max_partitions=0)  # the partitions of the bulk path as it made them
    assert summary.tracks_added == 4
    assert stored(store) == {p.name: oracle_pairs(p) for p in paths}
    with store.engine.connect() as conn:
        partitions = conn.execute(text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'hashes'::regclass")).scalar()
        conn.execute(text("ANALYZE hashes"))
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT track_id FROM hashes WHERE zone = 1 AND hash = 12345")))
    assert partitions >= 3  # hashes_main and at least two bulk partitions
    # Every bulk partition is searched through its own (zone, hash) index (the empty hashes_main
    # partition may be seq-scanned: it has no rows).
    assert "Seq Scan on hashes_bulk" not in plan and plan.count("hashes_zone_hash_bulk") >= 2
    again = ingest(store, tmp_path, bulk=True, jobs=1, force=True)
    assert again.tracks_added == 4 and stored(store) == {p.name: oracle_pairs(p) for p in paths}


@pytest.mark.postgres
def test_staged_tracks_are_invisible_until_commit(store, db_url, tmp_path) -> None:
    from fpstore.db.tracks import TrackRecord
    from fpstore.signal.fingerprint import fingerprint_file

    params = FingerprintParams()
    paths = write_tunes(tmp_path, [7, 8, 9], duration_s=5.0)
    records = [TrackRecord(str(p), bytes([i]) * 32, fingerprint_file(p, params)) for i, p in enumerate(paths)]
    reader = create_engine(db_url)
    with store.run("ingest", str(tmp_path), params) as run:
        bulk = store.bulk.begin(run.id)
        store.bulk.stage(bulk, records[:1], run.zone_ids)
        # An ordinary write meanwhile (another id space, another partition) does not disturb the bulk load.
        store.tracks.write(run.id, records[1:2], run.zone_ids)
        store.bulk.stage(bulk, records[2:], run.zone_ids)
        with reader.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM tracks")).scalar() == 1
            assert conn.execute(text("SELECT count(DISTINCT track_id) FROM hashes")).scalar() == 1
        outcome = store.bulk.commit(bulk)
    assert [added for _, added in outcome] == [True, True]
    with reader.connect() as conn:
        assert conn.execute(text("SELECT count(DISTINCT track_id) FROM hashes")).scalar() == 3
    reader.dispose()
    want = {p.name: oracle_pairs(p) for p in paths}
    assert stored(store) == want
    with store.engine.connect() as conn:
        bulk_ids = conn.execute(text("SELECT id FROM tracks WHERE id >= 1000000000 ORDER BY id")).scalars().all()
    assert bulk_ids == [bulk.first_id, bulk.first_id + 1]


@pytest.mark.postgres
def test_stale_staging_tables_are_dropped(store) -> None:
    params = FingerprintParams()
    with pytest.raises(RuntimeError, match="the run fails"), store.run("ingest", "x", params) as run:
        bulk = store.bulk.begin(run.id)
        assert store.bulk.drop_stale() == 0  # its run is still running
        raise RuntimeError("the run fails")
    assert store.bulk.drop_stale() == 1
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass(:t)"), {"t": bulk.table}).scalar() is None
