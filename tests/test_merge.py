"""Partitions of hashes merged at the end of ingest, size-tiered: bounded count, nothing lost, answers unchanged."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from helpers import write_tunes
from psycopg import sql
from test_compact import all_postings, heap_order, is_sorted, partitions

from fpstore.cli import cli
from fpstore.cli.ingest import format_ingest_summary
from fpstore.db.catalogue import open_store
from fpstore.db.compact import MAX_SHARE_IN_MERGE, merge_partitions, plan_merges
from fpstore.ingest import ingest
from fpstore.matching.matcher import match_signal
from fpstore.signal.synth import synth_tune


def test_plan_merges_nothing_within_the_bound() -> None:
    assert plan_merges([5, 5, 5], 3, 3) == []
    assert plan_merges([5, 5, 5, 5], 4, 4) == []


def test_plan_merges_takes_no_partition_that_dominates_the_run() -> None:
    # The big one holds more than two thirds of any run it is in: the small ones merge among themselves.
    assert plan_merges([1000, 10, 10, 10], 4, 2) == [range(1, 4)]
    # No run qualifies: the sizes fall geometrically, nothing is rewritten for little gain.
    assert plan_merges([1000, 100, 10, 1], 4, 2) == []


def test_plan_merges_counts_no_empty_partition() -> None:
    assert plan_merges([0, 1000], 2, 1) == []  # an empty hashes_main before a bulk-loaded catalogue
    assert plan_merges([0, 10, 10], 3, 1) == [range(0, 3)]  # merged along at no cost


def test_plan_merges_leaves_what_is_not_mergeable() -> None:
    assert plan_merges([10, 10, 10, 10, 10], 3, 2) == [range(0, 3)]
    assert plan_merges([10, 10, 10, 10, 10], 1, 2) == []


def test_plan_merges_rewrites_each_posting_a_logarithmic_number_of_times() -> None:
    """A thousand loads of varied sizes, each followed by its merges: the count stays small, rewrites logarithmic."""
    loads = [1, 1, 2, 5, 30, 100] * 167
    sizes: list[int] = []
    rewrites: list[int] = []  # per partition: the most times one of its postings was rewritten
    rewritten = 0
    for load in loads:
        sizes.append(load)
        rewrites.append(0)
        for run in reversed(plan_merges(sizes, len(sizes), 4)):
            rewritten += sum(sizes[run.start:run.stop])
            sizes[run.start:run.stop] = [sum(sizes[run.start:run.stop])]
            rewrites[run.start:run.stop] = [max(rewrites[run.start:run.stop]) + 1]
        assert len(sizes) <= 12
    total = sum(loads)
    assert max(rewrites) <= math.log(total / min(loads), 1 / MAX_SHARE_IN_MERGE) + 1
    assert rewritten / total < math.log2(total)


@pytest.fixture
def loaded(store, tmp_path):
    """Six bulk loads (one partition each, no merge) and one ordinary one: seven partitions."""
    for seed in range(1, 7):
        write_tunes(tmp_path / f"bulk{seed}", [seed], duration_s=5.0)
        ingest(store, tmp_path / f"bulk{seed}", bulk=True, jobs=1, max_partitions=0)
    write_tunes(tmp_path / "ordinary", [7], duration_s=5.0)
    ingest(store, tmp_path / "ordinary", bulk=False, jobs=1, max_partitions=0)
    assert len(partitions(store)) == 7
    return store


@pytest.mark.postgres
def test_ingest_merges_partitions_past_the_bound(loaded, tmp_path) -> None:
    store = loaded
    before = all_postings(store)
    write_tunes(tmp_path / "more", [8], duration_s=5.0)

    summary = ingest(store, tmp_path / "more", bulk=True, jobs=1, max_partitions=3)

    assert summary.tracks_added == 1 and len(summary.merges) == 1
    merged = summary.merges[0]
    now = partitions(store)
    assert len(now) == merged.partitions_now <= 3
    assert merged.partitions_merged == 8 - len(now) + merged.partitions_made
    after = all_postings(store)
    assert set(before) <= set(after) and len(after) - len(before) == summary.postings
    # Under the bound: the next small ingest merges nothing.
    write_tunes(tmp_path / "last", [9], duration_s=5.0)
    assert ingest(store, tmp_path / "last", bulk=False, jobs=1, max_partitions=3).merges == []


@pytest.mark.postgres
def test_merged_partitions_are_sorted_and_take_later_loads(loaded, tmp_path) -> None:
    store = loaded
    before = all_postings(store)
    query = synth_tune(4, duration_s=5.0)[22050:22050 * 4]
    answer = match_signal(store, query, zone="all")
    summary = merge_partitions(store, 1)
    assert summary is not None and summary.partitions_now == len(partitions(store)) == 1
    assert all_postings(store) == before and is_sorted(heap_order(store))
    again = match_signal(store, query, zone="all")
    assert again.candidates == answer.candidates and again.match is not None
    assert merge_partitions(store, 1) is None
    # Both write paths go on: an ordinary track lands in hashes_main, a bulk load in a block of its own.
    write_tunes(tmp_path / "later", [11, 12], duration_s=5.0)
    assert ingest(store, tmp_path / "later", bulk=True, jobs=1, max_partitions=1).tracks_added == 2
    assert len(partitions(store)) == 2  # the new load is a fraction of hashes_main: not worth rewriting it


@pytest.mark.postgres
def test_ingest_command_says_it_merged(loaded, db_url, tmp_path) -> None:
    write_tunes(tmp_path / "cli", [13], duration_s=5.0)
    result = CliRunner().invoke(cli, ["--db", db_url, "ingest", str(tmp_path / "cli"), "--max-partitions", "2", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("merged ") and line.endswith(" now") and "sorted" in line
    off = CliRunner().invoke(cli, ["--db", db_url, "ingest", str(tmp_path / "cli"), "--max-partitions", "0", "--force",
                                   "-q"], catch_exceptions=False)
    assert off.exit_code == 0 and "merged" not in off.output


@pytest.mark.postgres
def test_a_merge_that_fails_leaves_the_partitions_and_the_tracks_and_is_one_line(loaded, db_url, tmp_path) -> None:
    """A reader holds ``hashes`` past the lock timeout: the swap cannot take it, the merge rolls back whole."""
    store = loaded
    before, names = all_postings(store), partitions(store)
    with store.raw() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET lock_timeout = '300ms'").format(
            sql.Identifier(conn.info.dbname)))
    write_tunes(tmp_path / "blocked", [14], duration_s=5.0)
    with store.raw() as reader, reader.transaction(), open_store(db_url) as timed:
        reader.execute("LOCK TABLE hashes IN ACCESS SHARE MODE")  # as a long lookup does
        summary = ingest(timed, tmp_path / "blocked", bulk=False, jobs=1, max_partitions=3)

    assert summary.tracks_added == 1 and summary.merges == []
    assert summary.merge_failures == ["canceling statement due to lock timeout"]
    said = format_ingest_summary(summary).splitlines()[-1]
    assert said == "partitions not merged (left as they were): canceling statement due to lock timeout"
    after = all_postings(store)
    assert partitions(store) == names and set(before) <= set(after) and len(after) - len(before) == summary.postings
