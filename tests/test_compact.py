"""fpstore db compact: partitions merged into one heap sorted by (zone, hash), nothing lost, ingest goes on."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import oracle_pairs, sorted_pairs, write_tunes
from sqlalchemy import text

from fpstore.cli import cli
from fpstore.db.compact import compact
from fpstore.db.maintenance import set_lookup_index
from fpstore.db.tracks import TrackRecord
from fpstore.ingest import ingest
from fpstore.matching.matcher import match_signal
from fpstore.signal.params import FingerprintParams
from fpstore.signal.synth import synth_tune

pytestmark = pytest.mark.postgres


def partitions(store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'hashes'::regclass")).scalars())


def all_postings(store) -> list[tuple[int, int, int, int]]:
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(text("SELECT zone, hash, track_id, t_anchor FROM hashes")))


def heap_order(store) -> np.ndarray:
    """(zone, hash) of hashes_main's rows in physical order."""
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT zone, hash FROM ONLY hashes_main ORDER BY ctid")).all()
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def is_sorted(keys: np.ndarray) -> bool:
    combined = (keys[:, 0] << 32) + keys[:, 1]
    return bool(np.all(combined[1:] >= combined[:-1]))


@pytest.fixture
def multi_partition_store(store, tmp_path):
    """Tracks in hashes_main (ordinary path) and in three bulk partitions (two runs)."""
    write_tunes(tmp_path / "a", [1, 2], duration_s=6.0)
    write_tunes(tmp_path / "b", [3, 4, 5], duration_s=6.0)
    write_tunes(tmp_path / "c", [6], duration_s=6.0)
    ingest(store, tmp_path / "a", bulk=True, jobs=1, batch_postings=1, partition_postings=1)
    ingest(store, tmp_path / "b", bulk=True, jobs=1)
    ingest(store, tmp_path / "c", bulk=False, jobs=1)
    return store


def test_compact_merges_partitions_into_one_sorted_heap(multi_partition_store, tmp_path) -> None:
    store = multi_partition_store
    assert len(partitions(store)) == 4  # hashes_main + 2 partitions of run a + 1 of run b
    before = all_postings(store)
    query = synth_tune(4, duration_s=6.0)[22050:22050 * 5]
    answer = match_signal(store, query, zone="all")

    summary = compact(store)

    assert (summary.partitions_merged, summary.partitions_left, summary.postings) == (4, 0, len(before))
    assert partitions(store) == ["hashes_main"]
    assert all_postings(store) == before
    order = heap_order(store)
    assert len(order) == len(before) and is_sorted(order)
    again = match_signal(store, query, zone="all")
    assert again.candidates == answer.candidates and again.match is not None
    with store.engine.connect() as conn:
        plan = "\n".join(conn.execute(text("EXPLAIN SELECT track_id FROM hashes WHERE zone = 1 AND hash = 5")).scalars())
    assert "hashes_zone_hash_main" in plan and "Seq Scan" not in plan

    # Both write paths go on afterwards: new ordinary ids land in hashes_main, a bulk load in its own block.
    write_tunes(tmp_path / "d", [7], duration_s=6.0)
    write_tunes(tmp_path / "e", [8, 9], duration_s=6.0)
    assert ingest(store, tmp_path / "d", bulk=False, jobs=1).tracks_added == 1
    assert ingest(store, tmp_path / "e", bulk=True, jobs=1).tracks_added == 2
    assert len(partitions(store)) == 2
    with store.engine.connect() as conn:
        for name in ("tune_007.wav", "tune_009.wav"):
            track_id = conn.execute(text("SELECT id FROM tracks WHERE file_name = :f"), {"f": name}).scalar_one()
            want = oracle_pairs(tmp_path / ("d" if name == "tune_007.wav" else "e") / name)
            assert {z: sorted_pairs(*a) for z, a in store.tracks.postings(track_id).items()} == want


def test_compact_leaves_the_id_block_of_a_running_bulk_load(multi_partition_store, tmp_path) -> None:
    store = multi_partition_store
    params = FingerprintParams()
    from fpstore.signal.fingerprint import fingerprint_file

    path = write_tunes(tmp_path / "late", [21], duration_s=6.0)[0]
    with store.run("ingest", str(tmp_path), params) as run:
        bulk = store.bulk.begin(run.id)
        store.bulk.stage(bulk, [TrackRecord(str(path), b"\x21" * 32, fingerprint_file(path, params))], run.zone_ids)
        # Another run attaches a block above the running load's block.
        write_tunes(tmp_path / "f", [22, 23], duration_s=6.0)
        ingest(store, tmp_path / "f", bulk=True, jobs=1, max_partitions=0)

        summary = compact(store)

        assert summary.partitions_merged == 4 and summary.partitions_left == 1
        assert [added for _, added in store.bulk.commit(bulk)] == [True]  # its block is still free to attach
    assert len(partitions(store)) == 3


def test_compact_drops_the_staging_table_of_a_dead_run(multi_partition_store, tmp_path) -> None:
    store = multi_partition_store
    params = FingerprintParams()
    with pytest.raises(KeyboardInterrupt), store.run("ingest", "x", params) as run:
        bulk = store.bulk.begin(run.id)
        write_tunes(tmp_path / "g", [31], duration_s=6.0)
        ingest(store, tmp_path / "g", bulk=True, jobs=1, max_partitions=0)
        # (that ingest attached the block above the still running run's block)
        raise KeyboardInterrupt  # the run ends 'interrupted': its staging table is a dead run's leftover
    summary = compact(store)
    assert (summary.partitions_merged, summary.partitions_left) == (5, 0)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass(:t)"), {"t": bulk.table}).scalar() is None


def test_compact_keeps_the_covering_index(multi_partition_store) -> None:
    store = multi_partition_store
    set_lookup_index(store, "covering")
    compact(store)
    with store.engine.connect() as conn:
        names = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'hashes_main'")).scalars())
    assert names == {"hashes_zone_hash_cover_main"}


def test_db_compact_command(multi_partition_store, db_url) -> None:
    result = CliRunner().invoke(cli, ["--db", db_url, "db", "compact"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output.startswith("compacted 4 partitions into hashes_main: ")
    assert "sorted by (zone, hash)" in result.output
