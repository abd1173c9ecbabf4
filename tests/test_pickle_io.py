"""The notebook's hash_db.pkl: import into PostgreSQL, export back, and the notebook's own cells on it."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re

import numpy as np
import pytest
import seed_port
from click.testing import CliRunner
from helpers import write_tunes

from fpstore.cli import cli
from fpstore.db.tracks import TrackRecord
from fpstore.errors import ParameterError, ProfileMismatch
from fpstore.ingest import ingest
from fpstore.pickle_io import export_seed_pickle, import_seed_pickle, index_arrays, zone_index
from fpstore.report import build_report
from fpstore.signal.fingerprint import Fingerprint
from fpstore.signal.hashing import ZoneHashes
from fpstore.signal.params import FingerprintParams

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def seed_pickle(tmp_path_factory):
    """A pickle written by the notebook's build_hash_database (the seed port) on three synthetic tunes."""
    folder = tmp_path_factory.mktemp("seed")
    paths = write_tunes(folder / "music", [11, 12, 13], duration_s=6.0)
    db = seed_port.build_seed_pickle([str(p) for p in paths], str(folder / "hash_db.pkl"))
    return folder / "hash_db.pkl", db, paths


def notebook_cells(path: str) -> str:
    """The notebook's "Found existing DB ... Loading it" cell and its Statistics cell, run on ``path``.

    Copied from the seed notebook; adapted only to take the path, and to keep ``rows`` as a list
    (pandas is not a dependency; the rows are the DataFrame's rows).
    """
    OUTPUT_DB_FILE = path
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print(f"Found existing DB at: {OUTPUT_DB_FILE}")
        print("Loading it...")
        with open(OUTPUT_DB_FILE, "rb") as f:
            db = pickle.load(f)

        rows = []
        for z in db["meta"]["zones"]:
            zname = z["name"]
            idx = db["index"][zname]
            total_hashes = sum(len(v) for v in idx.values())
            rows.append({
                "zone": zname,
                "df_bins": z["df"],
                "dt_min_frames": z["dt_min"],
                "dt_max_frames": z["dt_max"],
                "total_hashes": int(total_hashes),
                "num_tracks": len(db["tracks"]),
                "top_k_targets": db["meta"].get("top_k_targets"),
            })
        for row in rows:
            print("ROW", row)

        print("Tracks:", len(db["tracks"]))

        for z in db["meta"]["zones"]:
            zname = z["name"]
            idx = db["index"][zname]
            unique_hashes = len(idx)
            total_postings = sum(len(v) for v in idx.values())
            avg_postings_per_hash = total_postings / unique_hashes if unique_hashes else 0

            print(f"Zone: {zname}")
            print("  unique hashes:", unique_hashes)
            print("  total postings:", total_postings)
            print("  avg postings/hash:", avg_postings_per_hash)

            if unique_hashes:
                sample_keys = list(idx.keys())[:5]
                print("  sample posting list lengths:", [len(idx[k]) for k in sample_keys])
    return out.getvalue()


def parse_statistics(text: str) -> dict[str, dict[str, float]]:
    """Per zone: the numbers the Statistics cell printed, and the loading cell's rows."""
    stats: dict[str, dict[str, float]] = {}
    n_tracks = int(re.search(r"^Tracks: (\d+)$", text, re.M).group(1))
    for block in re.finditer(r"Zone: (\S+)\n  unique hashes: (\d+)\n  total postings: (\d+)\n"
                             r"  avg postings/hash: ([0-9.e+-]+)", text):
        stats[block.group(1)] = {"num_tracks": n_tracks, "unique_hashes": int(block.group(2)),
                                 "total_postings": int(block.group(3)), "avg": float(block.group(4))}
    for row in re.finditer(r"^ROW (.*)$", text, re.M):
        values = eval(row.group(1))  # our own print of a dict of literals
        stats[values["zone"]]["total_hashes"] = values["total_hashes"]
        stats[values["zone"]]["row_num_tracks"] = values["num_tracks"]
    return stats


def test_round_trip_gives_back_the_same_postings(store, seed_pickle, tmp_path) -> None:
    path, original, _ = seed_pickle
    summary = import_seed_pickle(store, path)
    assert summary.n_tracks == 3 and summary.run_id is not None
    assert summary.postings_by_zone == {z: sum(map(len, idx.values())) for z, idx in original["index"].items()}
    export_seed_pickle(store, tmp_path / "out.pkl")
    with open(tmp_path / "out.pkl", "rb") as handle:
        exported = pickle.load(handle)
    assert exported["tracks"] == original["tracks"]
    assert exported["index"] == original["index"]
    for key in ("Fs", "N", "H", "duration", "bin_max", "peak_params", "zones", "top_k_targets"):
        assert exported["meta"][key] == original["meta"][key], key
    zone = exported["index"]["Flarge_Tlong"]
    assert all(type(h) is int and h >= 0 and type(v) is list and all(type(p) is int for p in v)
               for h, v in zone.items())


def test_notebook_cells_on_export_print_what_report_says(store, seed_pickle, tmp_path) -> None:
    import_seed_pickle(store, seed_pickle[0])
    export_seed_pickle(store, tmp_path / "exported.pkl")
    printed = parse_statistics(notebook_cells(str(tmp_path / "exported.pkl")))
    report = {row["zone"]: row for row in build_report(store).zones}
    assert set(printed) == set(report) and len(report) == 4
    for zone, row in report.items():
        assert printed[zone]["total_hashes"] == printed[zone]["total_postings"] == row["total_hashes"]
        assert printed[zone]["num_tracks"] == printed[zone]["row_num_tracks"] == row["num_tracks"] == 3
        assert printed[zone]["unique_hashes"] == row["unique_hashes"]
        assert printed[zone]["avg"] == pytest.approx(row["postings_per_hash"], rel=1e-12)


def test_export_of_ingested_tunes_equals_the_notebook_pickle(store, seed_pickle, tmp_path) -> None:
    """fpstore ingest of the same files, exported, is the notebook's own database (hash for hash)."""
    _, original, paths = seed_pickle
    ingest(store, paths[0].parent, jobs=1)
    export_seed_pickle(store, tmp_path / "ingested.pkl")
    with open(tmp_path / "ingested.pkl", "rb") as handle:
        exported = pickle.load(handle)
    assert exported["tracks"] == original["tracks"]
    assert exported["index"] == original["index"]


def test_importing_the_same_file_twice_skips_its_tracks(store, seed_pickle) -> None:
    import_seed_pickle(store, seed_pickle[0])
    again = import_seed_pickle(store, seed_pickle[0])
    assert (again.n_tracks, again.n_skipped, again.postings) == (0, 3, 0)
    assert [note for _, note in again.duplicates] == [f"already in the database as track {i}" for i in (1, 2, 3)]
    assert store.tracks.count() == 3


def test_clashing_parameters_are_refused_with_the_difference(store, seed_pickle, tmp_path) -> None:
    _, original, _ = seed_pickle
    clash = dict(original, meta=dict(original["meta"], top_k_targets=3))
    with open(tmp_path / "k3.pkl", "wb") as handle:
        pickle.dump(clash, handle)
    import_seed_pickle(store, seed_pickle[0])
    with pytest.raises(ProfileMismatch, match=r"k3.pkl cannot go into this database: .*top_k_targets: database 5, asked 3"):
        import_seed_pickle(store, tmp_path / "k3.pkl")


def test_out_of_range_meta_names_the_key(store, seed_pickle, tmp_path) -> None:
    _, original, _ = seed_pickle
    zones = [dict(original["meta"]["zones"][0], dt_max=5000)]
    bad = dict(original, meta=dict(original["meta"], zones=zones))
    with open(tmp_path / "bad.pkl", "wb") as handle:
        pickle.dump(bad, handle)
    with pytest.raises(ParameterError, match=r"bad.pkl: meta: zone 'Fsmall_Tshort': dt_max_frames=5000"):
        import_seed_pickle(store, tmp_path / "bad.pkl")


def test_foreign_objects_in_a_pickle_are_not_loaded(store, tmp_path) -> None:
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump({"meta": {}, "tracks": {}, "index": np.zeros(2)}, handle)
    with pytest.raises(ParameterError, match=r"refers to numpy"):
        import_seed_pickle(store, tmp_path / "evil.pkl")


def test_export_refuses_anchor_beyond_16_bits(store, tmp_path) -> None:
    params = FingerprintParams()
    late = ZoneHashes(np.array([12345], np.uint32), np.array([70_000], np.int32))
    empty = ZoneHashes(np.empty(0, np.uint32), np.empty(0, np.int32))
    zones = {zone.name: (late if zone.name == "Flarge_Tlong" else empty) for zone in params.zones}
    with store.run("test", "synthetic", params) as run:
        store.tracks.write(run.id, [TrackRecord("/x/long.wav", bytes(32), Fingerprint(zones, 3300.0, 70_001, 1))],
                           run.zone_ids)
    with pytest.raises(ParameterError, match=r"long.wav\) has an anchor at frame 70000; .* 16 bits of t_anchor"):
        export_seed_pickle(store, tmp_path / "x.pkl")
    assert not (tmp_path / "x.pkl").exists()


def test_index_arrays_and_zone_index_are_inverse(rng_factory) -> None:
    rng = rng_factory(6)
    hashes = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32) % np.uint32(700)
    postings = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    index = zone_index(hashes, postings)
    again_h, again_p = index_arrays(index)
    assert sorted(zip(again_h.tolist(), again_p.tolist())) == sorted(zip(hashes.tolist(), postings.tolist()))
    with pytest.raises(ParameterError, match="outside"):
        index_arrays({2**32: [1]})


def test_cli_import_and_export(db_url, seed_pickle, tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db_url, "import-pickle", str(seed_pickle[0])])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("run 1: imported 3 tracks and ")
    out = tmp_path / "out.pkl"
    exported = runner.invoke(cli, ["--db", db_url, "-q", "export-pickle", str(out)])
    assert exported.exit_code == 0 and exported.output.startswith("wrote 3 tracks and ")
    again = runner.invoke(cli, ["--db", db_url, "export-pickle", str(out)])
    assert again.exit_code == 1 and again.output.startswith("Error: ") and "--force" in again.output
    twice = runner.invoke(cli, ["--db", db_url, "import-pickle", str(seed_pickle[0])])
    assert twice.exit_code == 0 and "imported 0 tracks and 0 postings" in twice.output
    assert "skipped 3 already stored" in twice.output and "already in the database as track 1" in twice.output
    assert os.path.getsize(out) > 0


def test_posting_of_an_unknown_track_is_refused(store, seed_pickle, tmp_path) -> None:
    _, original, _ = seed_pickle
    index = dict(original["index"], Fsmall_Tshort={123: [(9 << 16) | 4]})
    with open(tmp_path / "orphan.pkl", "wb") as handle:
        pickle.dump(dict(original, index=index), handle)
    with pytest.raises(ParameterError, match="zone 'Fsmall_Tshort' has postings of track ids missing from tracks"):
        import_seed_pickle(store, tmp_path / "orphan.pkl")
    assert store.tracks.count() == 0


@pytest.mark.corpus
@pytest.mark.slow
def test_round_trip_and_notebook_cells_on_real_music(store, corpus_clips, tmp_path) -> None:
    original = seed_port.build_seed_pickle([str(p) for p in corpus_clips[:2]], str(tmp_path / "real.pkl"))
    import_seed_pickle(store, tmp_path / "real.pkl")
    export_seed_pickle(store, tmp_path / "back.pkl")
    with open(tmp_path / "back.pkl", "rb") as handle:
        exported = pickle.load(handle)
    assert exported["tracks"] == original["tracks"] and exported["index"] == original["index"]
    printed = parse_statistics(notebook_cells(str(tmp_path / "back.pkl")))
    for row in build_report(store).zones:
        assert printed[row["zone"]]["unique_hashes"] == row["unique_hashes"]
        assert printed[row["zone"]]["total_postings"] == row["total_hashes"]
