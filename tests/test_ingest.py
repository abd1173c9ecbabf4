"""Ingest into a real PostgreSQL: parity of stored postings, idempotence, atomicity, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import oracle_pairs, sorted_pairs, write_tunes
from sqlalchemy import text

from fpstore.errors import ProfileMismatch
from fpstore.ingest import ingest
from fpstore.runtime.files import discover_audio_files, scan_folder
from fpstore.signal.params import NOTEBOOK_PARAMS, FingerprintParams

pytestmark = pytest.mark.postgres


def stored_pairs(store, file_name: str) -> dict[str, list[tuple[int, int]]]:
    with store.engine.connect() as conn:
        track_id = conn.execute(text("SELECT id FROM tracks WHERE file_name = :f"), {"f": file_name}).scalar_one()
    return {zone: sorted_pairs(*arrays) for zone, arrays in store.tracks.postings(track_id).items()}


def test_stored_postings_equal_seed_port(store, tmp_path) -> None:
    paths = write_tunes(tmp_path, [1, 2, 3])
    summary = ingest(store, tmp_path, NOTEBOOK_PARAMS, jobs=2)
    assert (summary.tracks_added, summary.tracks_skipped, summary.tracks_failed) == (3, 0, 0)
    for path in paths:
        assert stored_pairs(store, path.name) == oracle_pairs(path)
    with store.engine.connect() as conn:
        per_zone = {name: count for name, count in conn.execute(text(
            "SELECT z.name, count(*) FROM hashes h JOIN zones z ON z.id = h.zone GROUP BY z.name"))}
        run = conn.execute(text("SELECT status, tracks_added, postings_added, n_fft, duration_s FROM runs")).one()
    assert per_zone == summary.postings_by_zone
    assert tuple(run) == ("completed", 3, summary.postings, 2048, 30.0)


def test_sql_equality_finds_a_python_hash(store, tmp_path) -> None:
    (path,) = write_tunes(tmp_path, [5])
    ingest(store, tmp_path, jobs=1)
    pairs = oracle_pairs(path)["Flarge_Tlong"]
    big = max(h for h, _ in pairs)  # high f_anchor bins give hashes >= 2**31 when f_anchor >= 512
    with store.engine.connect() as conn:
        found = conn.execute(text(
            "SELECT fpstore_hash_value(hash), t_anchor FROM hashes JOIN zones ON zones.id = hashes.zone"
            " WHERE zones.name = 'Flarge_Tlong' AND hash = fpstore_hash_key(:h)"), {"h": big}).all()
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT * FROM hashes WHERE zone = 4 AND hash = fpstore_hash_key(:h)"), {"h": big}))
    assert sorted(found) == sorted(p for p in pairs if p[0] == big)
    assert "hashes_zone_hash" in plan


def test_rerun_adds_nothing_and_force_replaces(store, tmp_path) -> None:
    write_tunes(tmp_path, [1, 2])
    first = ingest(store, tmp_path, jobs=1)
    second = ingest(store, tmp_path, jobs=1)
    assert (second.tracks_added, second.tracks_skipped) == (0, 2)
    forced = ingest(store, tmp_path, jobs=1, force=True)
    assert forced.tracks_added == 2
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tracks")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM hashes")).scalar() == first.postings


def test_duplicate_content_in_one_folder_is_stored_once(store, tmp_path) -> None:
    (path,) = write_tunes(tmp_path, [1])
    (tmp_path / "copy.WAV").write_bytes(path.read_bytes())
    summary = ingest(store, tmp_path, jobs=1)
    assert (summary.tracks_added, summary.tracks_skipped) == (1, 1)


def test_bad_files_fail_with_a_reason_and_the_rest_goes_on(store, tmp_path) -> None:
    write_tunes(tmp_path, [1, 2])
    (tmp_path / "text.mp3").write_text("this is not audio")
    (tmp_path / "empty.flac").write_bytes(b"")
    summary = ingest(store, tmp_path, jobs=2)
    assert summary.tracks_added == 2 and summary.tracks_failed == 2
    reasons = {Path(event.path).name: event.detail for event in summary.failures}
    assert set(reasons) == {"text.mp3", "empty.flac"}
    assert all(name in reason and "\n" not in reason for name, reason in reasons.items())
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM failures")).scalar() == 2


def test_discovery_is_recursive_case_insensitive_and_sorted(tmp_path) -> None:
    for relative in ["b/x.MP3", "a/y.wav", "a/z.Flac", "c.ogg", "d.M4A", "notes.txt", "a/cover.jpg"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_audio_files(tmp_path)]
    assert found == ["a/y.wav", "a/z.Flac", "b/x.MP3", "c.ogg", "d.M4A"]


def test_scan_takes_every_decodable_extension_and_lists_the_other_visible_files(tmp_path) -> None:
    names = ["a.aiff", "b.OPUS", "c.caf", "d.au", "e.w64", "f.wv", "g.aac", "h.wma", "notes.txt", "README",
             "cover.JPG", ".DS_Store", ".git/config", "sub/.hidden.txt", "sub/film.mp4"]
    for relative in names:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    scan = scan_folder(tmp_path)
    assert [p.name for p in scan.audio] == ["a.aiff", "b.OPUS", "c.caf", "d.au", "e.w64", "f.wv", "g.aac", "h.wma"]
    assert [p.relative_to(tmp_path).as_posix() for p in scan.others] == ["README", "cover.JPG", "notes.txt",
                                                                         "sub/film.mp4"]
    assert scan.other_extensions() == {"": 1, ".jpg": 1, ".mp4": 1, ".txt": 1}
    assert scan_folder(tmp_path / "sub" / "film.mp4").audio == [tmp_path / "sub" / "film.mp4"]


def test_other_parameters_are_refused(store, tmp_path) -> None:
    write_tunes(tmp_path, [1])
    ingest(store, tmp_path, jobs=1)
    with pytest.raises(ProfileMismatch, match=r"n_fft: database 2048, asked 4096"):
        ingest(store, tmp_path, FingerprintParams(n_fft=4096), jobs=1)
    # the clip length is not part of the profile: 30 s clips may join a database of whole tracks
    ingest(store, tmp_path, NOTEBOOK_PARAMS, jobs=1)


def test_ingest_upgrades_an_empty_database(empty_db_url, tmp_path) -> None:
    from fpstore.db.catalogue import open_store
    from fpstore.db.store import head_revision

    write_tunes(tmp_path, [1])
    with open_store(empty_db_url) as store:
        assert store.schema_revision() is None
        assert ingest(store, tmp_path, jobs=1).tracks_added == 1
        assert store.schema_revision() == head_revision()


def test_sigkill_midway_leaves_complete_tracks_and_rerun_completes(db_url, tmp_path) -> None:
    write_tunes(tmp_path, list(range(1, 13)), duration_s=6.0)
    command = [sys.executable, "-m", "fpstore", "--db", db_url, "-q", "ingest", str(tmp_path),
               "--jobs", "1", "--batch-postings", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(text("SELECT count(*) FROM tracks")).scalar() >= 3:
                break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    def incomplete_tracks() -> int:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM tracks t WHERE n_postings <>"
                " (SELECT count(*) FROM hashes h WHERE h.track_id = t.id)")).scalar()

    with engine.connect() as conn:
        stored_before = conn.execute(text("SELECT count(*) FROM tracks")).scalar()
    assert 3 <= stored_before < 12 and incomplete_tracks() == 0
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT sha256) FROM tracks")).one() == (12, 12)
        statuses = [r[0] for r in conn.execute(text("SELECT status FROM runs ORDER BY id"))]
    assert incomplete_tracks() == 0
    assert statuses == ["interrupted", "completed"]
    engine.dispose()


@pytest.mark.corpus
def test_real_music_stored_postings_equal_seed_port(store, corpus_clips, tmp_path) -> None:
    for clip in corpus_clips[:3]:
        (tmp_path / clip.name).symlink_to(clip)
    summary = ingest(store, tmp_path, NOTEBOOK_PARAMS, jobs=2)
    assert summary.tracks_added == 3
    for clip in corpus_clips[:3]:
        assert stored_pairs(store, clip.name) == oracle_pairs(clip)
