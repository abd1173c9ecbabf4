"""Duplicates by content: the stored listing, and the check at ingest and import-pickle (real database and decoding)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import seed_port
import soundfile
from helpers import write_resampled_copy, write_tunes

from fpstore import duplicates
from fpstore.db.duplicates import sampled_hashes
from fpstore.db.tracks import TrackRecord
from fpstore.duplicates import DuplicateCheck, find_duplicates, linked_groups
from fpstore.errors import ParameterError
from fpstore.ingest import ingest
from fpstore.matching.matcher import match_files
from fpstore.matching.vote import query_keys
from fpstore.pickle_io import export_seed_pickle, import_seed_pickle
from fpstore.report import build_report
from fpstore.signal.fingerprint import fingerprint_file
from fpstore.signal.params import FingerprintParams

pytestmark = pytest.mark.postgres


@pytest.fixture
def tunes(tmp_path) -> tuple[list[Path], Path]:
    """Two different tunes in ``music/``, and a FLAC copy of the first at 44.1 kHz in ``copy/``."""
    paths = write_tunes(tmp_path / "music", [1, 2])
    (tmp_path / "copy").mkdir()
    return paths, write_resampled_copy(paths[0], tmp_path / "copy" / "tune_001_44k.flac")


def test_listing_finds_a_reencoded_copy_and_not_a_different_tune(store, tunes, tmp_path) -> None:
    paths, copy = tunes
    shutil.copy(copy, tmp_path / "music")
    assert ingest(store, tmp_path / "music", jobs=1, on_duplicate="keep").tracks_added == 3
    names = {t["file_name"]: t["id"] for t in store.tracks.search().tracks}

    listing = find_duplicates(store)
    assert [(p.file_a, p.file_b) for p in listing.pairs] == [("tune_001.wav", "tune_001_44k.flac")]
    assert listing.pairs[0].ratio >= 0.5 and abs(listing.pairs[0].offset_frames) <= 1
    assert listing.groups == [[names["tune_001.wav"], names["tune_001_44k.flac"]]]
    # One zone gives the same answer; the different tunes stay apart even at a tiny threshold.
    assert [(p.file_a, p.file_b) for p in find_duplicates(store, zone="Fsmall_Tlong").pairs] == \
        [("tune_001.wav", "tune_001_44k.flac")]
    assert all("tune_002.wav" not in (p.file_a, p.file_b) for p in find_duplicates(store, min_ratio=0.02).pairs)


def test_listing_counts_the_same_sampled_postings_as_the_check(store, tmp_path) -> None:
    """An exact copy (a pickle exported and imported back, kept) aligns every sampled posting, in SQL as in numpy."""
    ingest(store, write_tunes(tmp_path / "music", [3])[0].parent, jobs=1)
    export_seed_pickle(store, tmp_path / "db.pkl")
    import_seed_pickle(store, tmp_path / "db.pkl", on_duplicate="keep")
    (pair,) = find_duplicates(store).pairs
    postings = store.tracks.postings(pair.track_a)
    n_sampled = sum(int(sampled_hashes(hashes).sum()) for hashes, _ in postings.values())
    assert 0 < n_sampled < sum(hashes.size for hashes, _ in postings.values())
    assert (pair.n_aligned, pair.ratio, pair.offset_frames) == (n_sampled, 1.0, 0)


def test_a_bounded_lookup_reads_each_key_up_to_its_cap(store, tunes, tmp_path) -> None:
    """The check's lookup: each key's postings up to its cap, so that a long list still says it is long."""
    paths, copy = tunes
    shutil.copy(copy, tmp_path / "music")
    ingest(store, tmp_path / "music", jobs=1, on_duplicate="keep")  # tune 1 twice: its keys have 2+ postings
    hashes, _ = store.tracks.postings(1)["Fsmall_Tlong"]
    zone_id = store.zone_ids()["Fsmall_Tlong"]
    key_zones, key_hashes, _ = query_keys(np.full(hashes.size, zone_id), hashes)
    def postings_per_key(found_hashes: np.ndarray) -> np.ndarray:  # keys are sorted as unsigned values
        where = np.searchsorted(key_hashes.view(np.uint32), found_hashes.astype(np.int32).view(np.uint32))
        return np.bincount(where, minlength=key_hashes.size)

    every = postings_per_key(store.lookup.postings(key_zones, key_hashes)[1])
    caps = np.where(np.arange(key_hashes.size) % 2 == 0, 1, 3)
    bounded = postings_per_key(store.lookup.postings(key_zones, key_hashes, caps)[1])
    assert every.max() >= 3 and np.array_equal(bounded, np.minimum(every, caps))


def test_cli_lists_duplicates_as_text_and_json(run, tunes, tmp_path) -> None:
    paths, copy = tunes
    shutil.copy(copy, tmp_path / "music")
    assert run("ingest", str(tmp_path / "music"), "--jobs", "1", "--on-duplicate", "keep").exit_code == 0
    text = run("tracks", "duplicates")
    assert text.exit_code == 0, text.output
    assert "tune_001.wav" in text.output and "tune_001_44k.flac" in text.output and "tune_002" not in text.output
    assert "1 pairs in 1 groups with at least" in text.output
    as_json = run("tracks", "duplicates", "--json", "--zone", "Flarge_Tlong")
    assert '"file_b": "tune_001_44k.flac"' in as_json.output and '"zone": "Flarge_Tlong"' in as_json.output
    unknown = run("tracks", "duplicates", "--zone", "nowhere")
    assert unknown.exit_code == 1 and "nowhere" in unknown.output


def test_ingest_of_a_copy_is_skipped_by_default_with_one_line(run, store, tunes, tmp_path) -> None:
    assert run("ingest", str(tmp_path / "music"), "--jobs", "1").exit_code == 0
    result = run("ingest", str(tmp_path / "copy"), "--jobs", "1")
    assert result.exit_code == 0 and "0 added, 1 skipped" in result.output
    (line,) = [line for line in result.output.splitlines() if "tune_001_44k.flac" in line]
    assert line.startswith("skipped: ") and "(duplicate of track 1 (" in line and "% of hashes aligned)" in line
    assert store.tracks.count() == 2


def test_bulk_ingest_checks_against_what_is_stored(store, tunes, tmp_path) -> None:
    ingest(store, tmp_path / "music", jobs=1)
    events = []
    summary = ingest(store, tmp_path / "copy", jobs=1, bulk=True, on_file=events.append)
    assert summary.tracks_skipped == 1 and events[0].detail.startswith("duplicate of track 1 (")
    assert store.tracks.count() == 2
    # Unchecked (a catalogue known to hold no copies), the copy is stored without a word.
    summary = ingest(store, tmp_path / "copy", jobs=1, bulk=True, check_duplicates=False, on_file=events.append)
    assert summary.tracks_added == 1 and events[-1].status == "added" and "duplicate" not in events[-1].detail
    assert store.tracks.count() == 3


def test_checks_running_at_once_keep_the_files_order_and_answers(store, tunes, tmp_path) -> None:
    # Checks overlap (ingest.CHECKS_IN_FLIGHT): each file still gets its own answer, and the files not
    # written are reported in the files' order (the added ones when their batch is written).
    paths, copy = tunes
    ingest(store, tmp_path / "music", jobs=1)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(copy, mixed / "a_copy_of_1.flac")
    (mixed / "b_not_audio.mp3").write_text("this is not audio")
    write_tunes(mixed, [3])[0].rename(mixed / "c_new.wav")
    write_resampled_copy(paths[1], mixed / "d_copy_of_2.wav")
    write_tunes(mixed, [4])[0].rename(mixed / "e_new.wav")
    events = []
    ingest(store, mixed, jobs=2, on_file=events.append)
    assert [(Path(e.path).name, e.status) for e in events if e.status != "added"] == [
        ("a_copy_of_1.flac", "skipped"), ("b_not_audio.mp3", "failed"), ("d_copy_of_2.wav", "skipped")]
    assert sorted(Path(e.path).name for e in events if e.status == "added") == ["c_new.wav", "e_new.wav"]
    assert events[0].detail.startswith("duplicate of track 1 (") and events[2].detail.startswith("duplicate of track 2 (")
    assert store.tracks.count() == 4


def test_a_run_does_not_look_up_again_the_keys_it_found_common(store, tunes, tmp_path, monkeypatch) -> None:
    paths, copy = tunes
    ingest(store, tmp_path / "music", jobs=1)
    (tmp_path / "more").mkdir()
    for rate in (44100, 32000):  # tune 2 stored three times, unchecked: its keys hold 3 postings each
        write_resampled_copy(paths[1], tmp_path / "more" / f"tune_002_{rate}.wav", rate)
    ingest(store, tmp_path / "more", jobs=1, check_duplicates=False)
    monkeypatch.setattr(duplicates, "MAX_POSTINGS_PER_HASH", 3)  # so they are common to a file holding tune 2
    both = tmp_path / "both.wav"  # tune 1 then tune 2: it holds tune 1 as an excerpt
    soundfile.write(both, np.concatenate([soundfile.read(p, dtype="float32")[0] for p in paths]), 22050)
    record = TrackRecord(str(both), b"", fingerprint_file(both, FingerprintParams()))
    keys_looked_up = []
    real_postings = store.lookup.postings
    monkeypatch.setattr(store.lookup, "postings", lambda zones, hashes, caps=None: keys_looked_up.append(zones.size)
                        or real_postings(zones, hashes, caps))
    check = DuplicateCheck(store)
    first, second = check.apply(record, store.zone_ids()), check.apply(record, store.zone_ids())
    alone = DuplicateCheck(store).apply(record, store.zone_ids())
    assert first == second == alone == (record, "track 1 is an excerpt of it at 0:00")
    assert keys_looked_up[1] < keys_looked_up[0] == keys_looked_up[2]
    # A track that replaces stored copies deletes postings when written: the memory is forgotten.
    replacing = DuplicateCheck(store, on_duplicate="replace")
    copy_record = TrackRecord(str(copy), b"", fingerprint_file(copy, FingerprintParams()))
    assert replacing.apply(copy_record, store.zone_ids())[0].replaces == (1,)
    replacing.apply(record, store.zone_ids())
    replacing.apply(record, store.zone_ids())
    assert keys_looked_up[-1] == keys_looked_up[-2] == keys_looked_up[0]


def test_ingest_keeps_a_copy_when_asked(run, store, tunes, tmp_path) -> None:
    run("ingest", str(tmp_path / "music"), "--jobs", "1")
    result = run("ingest", str(tmp_path / "copy"), "--jobs", "1", "--on-duplicate", "keep")
    assert result.exit_code == 0 and "1 added" in result.output
    assert "duplicate of track 1 (" in result.output and ", kept" in result.output
    assert store.tracks.count() == 3


@pytest.mark.parametrize("bulk", [False, True])
def test_ingest_replaces_the_stored_copy_when_asked(store, tunes, tmp_path, bulk) -> None:
    paths, copy = tunes
    ingest(store, tmp_path / "music", jobs=1)
    events = []
    summary = ingest(store, tmp_path / "copy", jobs=1, bulk=bulk, on_duplicate="replace", on_file=events.append)
    assert summary.tracks_added == 1 and "replaces track 1" in events[0].detail
    assert sorted(t["file_name"] for t in store.tracks.search().tracks) == ["tune_001_44k.flac", "tune_002.wav"]
    listing = store.tracks.search()
    assert sum(row["total_hashes"] for row in build_report(store).zones) == listing.postings_matching
    # The old track's postings went with it: the original audio now matches the copy, and only it.
    (result,) = match_files(store, [paths[0]])
    assert result.match is not None and result.match.file_name == "tune_001_44k.flac"
    assert not find_duplicates(store).pairs


def test_reingest_with_force_is_not_its_own_duplicate(store, tunes, tmp_path) -> None:
    ingest(store, tmp_path / "music", jobs=1)
    summary = ingest(store, tmp_path / "music", jobs=1, force=True)
    assert summary.tracks_added == 2 and store.tracks.count() == 2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_an_mp3_of_a_stored_wav_is_a_duplicate(store, tunes, tmp_path) -> None:
    paths, _ = tunes
    (tmp_path / "mp3").mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(paths[0]), "-b:a", "128k",
                    str(tmp_path / "mp3" / "tune_001.mp3")], check=True)
    ingest(store, tmp_path / "music", jobs=1)
    events = []
    assert ingest(store, tmp_path / "mp3", jobs=1, on_file=events.append).tracks_skipped == 1
    assert events[0].detail.startswith("duplicate of track 1 (")


@pytest.fixture
def seed_pickle(tmp_path) -> tuple[Path, Path]:
    """A notebook pickle of three tunes, and the folder of their audio."""
    paths = write_tunes(tmp_path / "seed", [11, 12, 13], duration_s=6.0)
    seed_port.build_seed_pickle([str(p) for p in paths], str(tmp_path / "hash_db.pkl"))
    return tmp_path / "hash_db.pkl", tmp_path / "seed"


def test_importing_the_same_pickle_twice_leaves_one_track_per_recording(run, store, seed_pickle) -> None:
    pickle_path, _ = seed_pickle
    assert run("import-pickle", str(pickle_path)).exit_code == 0
    again = run("import-pickle", str(pickle_path))
    assert again.exit_code == 0, again.output
    assert "imported 0 tracks and 0 postings" in again.output and "skipped 3 already stored" in again.output
    assert "tune_011.wav: already in the database as track 1" in again.output
    assert store.tracks.count() == 3


def test_importing_an_export_back_leaves_one_track_per_recording(run, store, seed_pickle, tmp_path) -> None:
    pickle_path, _ = seed_pickle
    run("import-pickle", str(pickle_path))
    assert run("export-pickle", str(tmp_path / "exported.pkl")).exit_code == 0
    back = run("import-pickle", str(tmp_path / "exported.pkl"))
    assert back.exit_code == 0 and "skipped 3 already stored" in back.output
    assert "tune_012.wav: duplicate of track 2 (100% of hashes aligned)" in back.output
    assert store.tracks.count() == 3


def test_pickle_then_ingest_of_the_same_audio_leaves_one_track(run, store, seed_pickle) -> None:
    pickle_path, folder = seed_pickle
    run("import-pickle", str(pickle_path))
    result = run("ingest", str(folder), "--jobs", "1")
    assert result.exit_code == 0 and "0 added, 3 skipped" in result.output
    assert result.output.count("(duplicate of track ") == 3
    assert store.tracks.count() == 3


def test_pickle_replacing_ingested_tracks(store, seed_pickle) -> None:
    pickle_path, folder = seed_pickle
    ingest(store, folder, jobs=1)
    summary = import_seed_pickle(store, pickle_path, on_duplicate="replace")
    assert summary.n_tracks == 3 and all("replaces track" in note for _, note in summary.duplicates)
    assert store.tracks.count() == 3 and all("#" in t["path"] for t in store.tracks.search().tracks)


def test_groups_join_copies_of_copies() -> None:
    assert linked_groups([(5, 9), (1, 5), (2, 3)]) == [[1, 5, 9], [2, 3]]
    assert linked_groups([]) == []



def test_bad_duplicate_options_are_refused_before_any_run(store, tunes, tmp_path) -> None:
    with pytest.raises(ParameterError, match="on_duplicate='drop' must be one of skip, keep, replace"):
        ingest(store, tmp_path / "music", jobs=1, on_duplicate="drop")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"min_ratio=0 must be a fraction of hashes in \(0, 1\]"):
        ingest(store, tmp_path / "music", jobs=1, duplicate_min_ratio=0)
    with pytest.raises(ParameterError, match="dask workers always check"):
        ingest(store, tmp_path / "music", scheduler="tcp://127.0.0.1:1", check_duplicates=False)
    assert ingest(store, tmp_path / "music", jobs=1).run_id == 1  # no run was recorded before
