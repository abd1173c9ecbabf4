"""The matcher: the offset-histogram vote, the "no match" rule, and the Python and SQL paths on a real database."""

from __future__ import annotations

import io
import json
import threading
import warnings

import numpy as np
import psycopg
import pytest
import soundfile
from click.testing import CliRunner
from helpers import write_tunes
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from fpstore.cli import cli
from fpstore.db.lookup import SPLIT_MIN_KEYS, LookupStatement, PostingMemory
from fpstore.errors import AudioError, ParameterError
from fpstore.ingest import ingest
from fpstore.matching.evidence import ALL_ZONES, DEFAULT_ALPHA, PLAIN, ROBUST, DecisionRule
from fpstore.matching.matcher import match_files, match_queries, match_signal
from fpstore.matching.ranking import match_fingerprint
from fpstore.matching.significance import chance_scores
from fpstore.matching.vote import vote
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.params import FingerprintParams
from fpstore.signal.synth import synth_tune

SR = 22050
HOP = 1024
TUNE_SEEDS = [11, 12, 13]
ZONES = [z.name for z in FingerprintParams().zones] + [ALL_ZONES]


# -- the vote, on arrays ------------------------------------------------------------------------------
def test_vote_counts_bins_and_ranks_tracks() -> None:
    tracks = np.array([7, 7, 7, 3, 3, 9, 7])
    offsets = np.array([5, 5, 9, -2, -2, 4, 9])
    ranked_tracks, votes, ranked_offsets = vote(tracks, offsets, top_k=5)
    # track 7 has bins {5: 2, 9: 2}: its offset is the smaller of its fullest bins; 3 and 7 tie on 2 votes.
    assert ranked_tracks.tolist() == [3, 7, 9]
    assert votes.tolist() == [2, 2, 1]
    assert ranked_offsets.tolist() == [-2, 5, 4]


def test_vote_top_k_and_empty() -> None:
    assert vote(np.array([1, 2, 2]), np.array([0, 0, 0]), top_k=1)[0].tolist() == [2]
    assert all(a.size == 0 for a in vote(np.array([], int), np.array([], int), top_k=3))


def _vote_by_dict(tracks: list[int], offsets: list[int], top_k: int) -> list[tuple[int, int, int]]:
    """The vote's definition, spelled out: (track, votes, offset) ranked by votes, then track."""
    bins: dict[tuple[int, int], int] = {}
    for track, offset in zip(tracks, offsets):
        bins[track, offset] = bins.get((track, offset), 0) + 1
    best: dict[int, tuple[int, int]] = {}
    for (track, offset), count in bins.items():
        votes, smallest = best.get(track, (0, offset))
        if count > votes or (count == votes and offset < smallest):
            best[track] = (count, offset)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:top_k]
    return [(track, votes, offset) for track, (votes, offset) in ranked]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(-6, 6)), min_size=1, max_size=200),
       st.sampled_from([0, 1_000_000_000]), st.integers(1, 8))
def test_vote_equals_its_definition(pairs, track_base, top_k) -> None:
    tracks = [track_base + t for t, _ in pairs]
    offsets = [o * 97 for _, o in pairs]
    got = vote(np.array(tracks), np.array(offsets), top_k=top_k)
    assert list(zip(*(a.tolist() for a in got))) == _vote_by_dict(tracks, offsets, top_k)


@pytest.mark.parametrize("top_k", [0, -1, True, 1.5])
def test_vote_refuses_bad_top_k(top_k) -> None:
    with pytest.raises(ParameterError, match="top_k="):
        vote(np.array([1]), np.array([1]), top_k=top_k)


def test_vote_refuses_mismatched_arrays() -> None:
    with pytest.raises(ParameterError, match="same shape"):
        vote(np.array([1, 2]), np.array([1]), top_k=2)


def test_decision_rule() -> None:
    default = DecisionRule()
    assert default.calibrated and default.null == "tracks"
    assert default.score_needed() == pytest.approx(-np.log10(DEFAULT_ALPHA))
    rule = DecisionRule(min_votes=10, min_ratio=2.0)
    # A vote count: the score does not matter.
    assert rule.accepts(10, 5) and not rule.accepts(9, 0, score=50.0) and not rule.accepts(10, 6)
    with pytest.raises(ParameterError, match="min_votes=0"):
        DecisionRule(min_votes=0)
    with pytest.raises(ParameterError, match="min_ratio=0.5"):
        DecisionRule(min_ratio=0.5)


def test_calibrated_decision_rule_takes_a_false_alarm_rate() -> None:
    rule = DecisionRule(alpha=1e-3)
    assert rule.calibrated and rule.score_needed() == pytest.approx(3.0)
    # The votes do not matter, the score does: 4 votes at p = 1e-4 pass, 400 at p = 0.01 do not.
    assert rule.accepts(4, 1, score=4.0) and not rule.accepts(400, 1, score=2.0)
    assert not DecisionRule(alpha=1e-3, min_ratio=2.0).accepts(10, 6, score=9.0)
    assert not DecisionRule(min_votes=5).calibrated
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ParameterError, match="alpha="):
            DecisionRule(alpha=bad)
    with pytest.raises(ParameterError, match="not both"):
        DecisionRule(min_votes=10, alpha=1e-3)


# -- on a real database ----------------------------------------------------------------------------------
def _excerpt(seed: int, start_frames: int, seconds: float, rng: np.random.Generator, snr_db: float | None):
    y = synth_tune(seed, duration_s=8.0)
    start = start_frames * HOP
    piece = y[start:start + int(seconds * SR)].astype(np.float32)
    if snr_db is not None:
        noise = rng.standard_normal(piece.size).astype(np.float32)
        noise *= np.sqrt(np.mean(piece ** 2) / 10 ** (snr_db / 10) / np.mean(noise ** 2))
        piece = np.clip(piece + noise, -1, 1).astype(np.float32)
    return piece


@pytest.fixture
def tuned_store(store, tmp_path):
    write_tunes(tmp_path / "music", TUNE_SEEDS)
    ingest(store, tmp_path / "music", jobs=1)
    return store


@pytest.mark.postgres
def test_track_frames_reads_each_stored_track_once(tuned_store, monkeypatch) -> None:
    with tuned_store.raw() as conn:
        stored = dict(conn.execute("SELECT id, n_frames FROM tracks").fetchall())
    first, second = sorted(stored)[:2]
    lookup = tuned_store.lookup
    asked: list[list[int]] = []
    read = lookup._read_frames
    monkeypatch.setattr(lookup, "_read_frames", lambda ids: asked.append(ids.tolist()) or read(ids))
    absent = max(stored) + 1
    frames = lookup.track_frames(np.array([second, absent, first, second]))
    assert frames.tolist() == [stored[second], 0, stored[first], stored[second]]
    # Known tracks are not read again; an id not stored is (it may be stored by the next call).
    assert lookup.track_frames(np.array([first, absent])).tolist() == [stored[first], 0]
    assert asked == [sorted([first, second, absent]), [absent]]


@pytest.mark.postgres
def test_a_large_lookup_runs_as_statements_at_once_with_the_same_postings(tuned_store, monkeypatch) -> None:
    with tuned_store.raw() as conn:
        stored = np.array(conn.execute("SELECT DISTINCT zone, hash FROM hashes ORDER BY 1, 2").fetchall())
    # Keys with no posting too, so that the lookup is long enough to be split whatever the tunes hold.
    absent = np.arange(2 * SPLIT_MIN_KEYS, dtype=np.int32) * 7919 + 1
    keys = np.unique(np.concatenate([stored[:, 0].astype(np.int64) << 32 | (stored[:, 1] & 0xFFFFFFFF),
                                     (int(stored[0, 0]) << 32) | absent.astype(np.int64)]))
    key_zones, key_hashes = keys >> 32, (keys & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    lookup = tuned_store.lookup
    threads: list[str] = []
    run = lookup.run
    monkeypatch.setattr(lookup, "run", lambda statement: threads.append(threading.current_thread().name) or run(statement))

    def postings(at_once: int) -> list[tuple[int, ...]]:
        threads.clear()
        lookup.statements_at_once = at_once
        return sorted(zip(*(column.tolist() for column in lookup.postings(key_zones, key_hashes))))

    one = postings(1)
    assert len(threads) == 1
    assert postings(2) == one and len(one) >= stored.shape[0]  # every stored key has a posting
    assert len(threads) == 2 and any(name.startswith("fpstore-lookup") for name in threads)
    with tuned_store.holding_connection():  # a thread that holds its connection keeps to it
        assert postings(2) == one and len(threads) == 1


@pytest.mark.postgres
def test_a_negative_remembers_its_looks_or_fetches_ahead_with_the_same_answer(tuned_store, monkeypatch) -> None:
    lookup = tuned_store.lookup
    fetched: list[str] = []
    keys_fetched: list[int] = []
    fetch = lookup._fetch

    def counted(zones: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, ...]:
        fetched.append(threading.current_thread().name)
        keys_fetched.append(hashes.size)
        return fetch(zones, hashes)

    monkeypatch.setattr(lookup, "_fetch", counted)

    def answer(at_once: int, ahead: bool) -> tuple[object, ...]:
        fetched.clear()
        keys_fetched.clear()
        lookup.statements_at_once, lookup.fetch_ahead = at_once, ahead
        result = match_signal(tuned_store, synth_tune(77, duration_s=5.0), evidence=ROBUST)
        return result.match, result.candidates, result.speed

    alone = answer(1, True)  # one statement at a time: nothing fetched ahead, and (ahead asked) no memory
    assert alone[0] is None and fetched and not any(name.startswith("fpstore-ahead") for name in fetched)
    looks, every_key = len(fetched), sum(keys_fetched)
    # by default a query's looks remember its lookups: the keys an earlier look fetched are not fetched again
    assert answer(2, False) == alone and 0 < sum(keys_fetched) < every_key
    assert not any(name.startswith("fpstore-ahead") for name in fetched)
    assert answer(2, True) == alone
    assert getattr(lookup._thread, "ahead", None) is None  # nothing left for the thread's next query
    # the looks after the second were made and fetched while the one before them voted
    ahead = [name for name in fetched if name.startswith("fpstore-ahead")]
    assert looks >= 4 and len(ahead) >= 1 and len(fetched) - len(ahead) < looks


@pytest.mark.postgres
@pytest.mark.parametrize("snr_db", [None, 10.0])
def test_excerpts_find_their_tune_and_offset(tuned_store, rng_factory, snr_db) -> None:
    rng = rng_factory(1)
    for seed, start_frames in [(11, 20), (12, 50), (13, 5)]:
        y = _excerpt(seed, start_frames, 4.0, rng, snr_db)
        result = match_signal(tuned_store, y, zone=ALL_ZONES)
        assert result.match is not None, result
        assert result.match.file_name == f"tune_{seed:03d}.wav"
        assert result.match.offset_frames == start_frames
        assert result.match.offset_s == pytest.approx(start_frames * HOP / SR)
        assert result.runner_up is not None and result.runner_up.track_id != result.match.track_id
        assert 0 < result.confidence <= 1


@pytest.mark.postgres
def test_python_and_sql_paths_rank_the_same(tuned_store, rng_factory) -> None:
    params = tuned_store.params(duration_s=None)
    rng = rng_factory(2)
    queries = [_excerpt(12, 30, 3.0, rng, 5.0), _excerpt(13, 0, 2.0, rng, 0.0), synth_tune(99, duration_s=3.0)]
    compared = 0
    for y in queries:
        fp = fingerprint_signal(y, params)
        for zone in ZONES:
            by_python = match_fingerprint(tuned_store, fp, params, zone=zone, top_k=3, method="python")
            by_sql = match_fingerprint(tuned_store, fp, params, zone=zone, top_k=3, method="sql")
            assert by_python.candidates == by_sql.candidates, zone
            assert by_python.match == by_sql.match
            compared += len(by_python.candidates)
    assert compared > 10


@pytest.mark.postgres
def test_python_and_sql_give_the_same_scores_and_a_true_excerpt_scores_high(tuned_store, rng_factory) -> None:
    params = tuned_store.params(duration_s=None)
    fp = fingerprint_signal(_excerpt(12, 30, 3.0, rng_factory(4), 5.0), params)
    for zone in ("Fsmall_Tlong", ALL_ZONES):
        by_python = match_fingerprint(tuned_store, fp, params, zone=zone, top_k=3, rule=DecisionRule(alpha=1e-3))
        by_sql = match_fingerprint(tuned_store, fp, params, zone=zone, top_k=3, rule=DecisionRule(alpha=1e-3),
                                   method="sql")
        assert [c.score for c in by_python.candidates] == [c.score for c in by_sql.candidates]
        assert by_python.match is not None and by_python.match.file_name == "tune_012.wav"
        assert by_python.score > 3 and all(c.score <= 3 for c in by_python.candidates[1:])


@pytest.mark.postgres
def test_sql_chance_score_is_the_python_one(tuned_store, rng_factory) -> None:
    rng = rng_factory(5)
    pairs = rng.integers(1, 400, 50)
    bins = rng.integers(300, 20000, 50)
    counts = np.array([1, 2, 3, 5, 8, 13, 40, 400])
    with tuned_store.raw() as conn:
        by_sql = [conn.execute("SELECT fpstore_chance_score(%s, %s, %s)", (int(m), pairs.tolist(), bins.tolist()))
                  .fetchone()[0] for m in counts]
    by_python = chance_scores(counts, pairs, bins)
    assert by_python.max() > 50 and by_python.min() == 0.0
    np.testing.assert_allclose(by_sql, by_python, rtol=1e-9, atol=1e-12)


@pytest.mark.postgres
def test_sql_function_takes_the_notebooks_unsigned_hashes(tuned_store) -> None:
    params = tuned_store.params(duration_s=None)
    fp = fingerprint_signal(_excerpt(11, 10, 3.0, None, None), params)
    zone = fp.zones["Flarge_Tlong"]
    with tuned_store.engine.raw_connection() as raw:
        cur = raw.driver_connection.cursor()
        cur.execute("SELECT track_id, offset_frames, votes FROM fpstore_match(%s, %s, %s, 2)",
                    ("Flarge_Tlong", zone.hashes.astype(np.int64).tolist(), zone.t_anchor_frames.tolist()))
        rows = cur.fetchall()
    python = match_fingerprint(tuned_store, fp, params, zone="Flarge_Tlong", top_k=2, count="pairs")
    assert rows == [(c.track_id, c.offset_frames, c.votes) for c in python.candidates]
    assert rows[0][1] == 10


@pytest.mark.postgres
def test_lookup_uses_the_zone_hash_index(tuned_store) -> None:
    with tuned_store.engine.raw_connection() as raw:
        cur = raw.driver_connection.cursor()
        cur.execute("SET enable_seqscan = off")  # a 3-tune table is small enough for a seq scan to win
        cur.execute("EXPLAIN SELECT * FROM fpstore_postings(1::smallint, ARRAY[1, 2])")
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "hashes_zone_hash" in plan


def _query_arrays(fp) -> tuple[list[str], list[int], list[int]]:
    """The SQL functions' three parallel arrays (zone name, unsigned hash, anchor frame) for a fingerprint."""
    zone_names = [name for name, zone in fp.zones.items() for _ in range(zone.hashes.size)]
    hashes = np.concatenate([zone.hashes for zone in fp.zones.values()]).astype(np.int64).tolist()
    t_query = np.concatenate([zone.t_anchor_frames for zone in fp.zones.values()]).tolist()
    return zone_names, hashes, t_query


@pytest.mark.postgres
def test_python_matching_never_prepares_its_statements(tuned_store) -> None:
    # psycopg prepares a statement at its fifth execution on a connection; PostgreSQL may then plan
    # `hash = ANY($1)` generically (issue 13: 2.2 s instead of 85 ms). fpstore's own connections never prepare.
    params = tuned_store.params(duration_s=None)
    fp = fingerprint_signal(_excerpt(12, 30, 3.0, None, None), params)
    answers = {str(match_fingerprint(tuned_store, fp, params, zone=ALL_ZONES, method=method).candidates)
               for method in ("python", "sql") for _ in range(8)}
    with tuned_store.raw() as conn:
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert len(answers) == 1 and prepared == (0,)


@pytest.mark.postgres
def test_the_sql_vote_is_planned_per_call_whatever_the_caller_prepares(tuned_store) -> None:
    params = tuned_store.params(duration_s=None)
    fp = fingerprint_signal(_excerpt(13, 25, 3.0, None, None), params)
    python = match_fingerprint(tuned_store, fp, params, zone=ALL_ZONES, top_k=3, count="pairs")
    arrays = _query_arrays(fp)
    statement = "SELECT track_id, offset_frames, votes FROM fpstore_match_zones(%s::text[], %s::bigint[], %s::int[], 3)"
    libpq_url = make_url(tuned_store.engine.url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq_url, prepare_threshold=0) as conn:  # a client that prepares at once
        conn.execute("SET plan_cache_mode = force_generic_plan")
        answers = {tuple(conn.execute(statement, arrays).fetchall()) for _ in range(8)}
        caller_plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement, arrays).fetchall())
    assert answers == {tuple((c.track_id, c.offset_frames, c.votes) for c in python.candidates)}
    # The caller's (generic) plan holds no scan of hashes: the PL/pgSQL vote (fpstore_vote since 0006, which the
    # SQL-language fpstore_match_zones inlines into) plans its lookup with the call's keys.
    assert "Function Scan on fpstore_vote" in caller_plan and "hashes" not in caller_plan


@pytest.mark.postgres
def test_the_lookup_is_planned_without_its_keys(tuned_store) -> None:
    # Seeing the keys, the planner estimated each of them (~2 ms for 10,000) and chose a bitmap heap scan
    # on a large catalogue, slower through four shards on two cores (migration 0008): the Python lookup
    # and fpstore_postings read their keys at run time, so one plan serves every set of keys.
    with tuned_store.raw() as conn:
        zone_id, stored = conn.execute(
            "SELECT zone, array_agg(DISTINCT hash) FROM hashes GROUP BY zone ORDER BY count(*) DESC LIMIT 1").fetchone()

        def plans(keys: np.ndarray) -> dict[str, str]:
            lookup = LookupStatement.of(np.full(keys.size, zone_id), keys)
            explained = {
                "python": conn.execute("EXPLAIN (COSTS OFF) " + lookup.statement, lookup.params).fetchall(),
                "sql": conn.execute("EXPLAIN (COSTS OFF) SELECT * FROM fpstore_postings(%s::smallint, %s::int[])",
                                    (zone_id, keys.tolist())).fetchall(),
            }
            return {path: "\n".join(row[0] for row in rows) for path, rows in explained.items()}

        many = np.array(stored[:3000], dtype=np.int32)
        few_plans, many_plans = plans(many[:3]), plans(many)
    assert many.size > 1000 and few_plans == many_plans
    for path, plan in many_plans.items():
        assert "hash = ANY ((InitPlan 1).col1)" in plan or "hash = ANY ($0)" in plan, (path, plan)
        assert str(int(many[-1])) not in plan, path


@pytest.mark.postgres
def test_a_tune_not_in_the_database_is_no_match(tuned_store) -> None:
    for zone in ZONES:
        result = match_signal(tuned_store, synth_tune(77, duration_s=5.0), zone=zone)
        assert result.match is None, (zone, result.best)


@pytest.mark.postgres
def test_unknown_zone_is_refused(tuned_store) -> None:
    with pytest.raises(ParameterError, match="zone='nope'"):
        match_signal(tuned_store, synth_tune(11, duration_s=2.0), zone="nope")


# -- the command ------------------------------------------------------------------------------------------
@pytest.fixture
def query_files(tmp_path, rng_factory):
    rng = rng_factory(3)
    hit = tmp_path / "hit.wav"
    soundfile.write(hit, _excerpt(12, 40, 4.0, rng, 10.0), SR, subtype="PCM_16")
    miss = tmp_path / "miss.wav"
    soundfile.write(miss, synth_tune(88, duration_s=4.0), SR, subtype="PCM_16")
    return hit, miss


@pytest.mark.postgres
def test_match_command(tuned_store, db_url, query_files) -> None:
    hit, miss = query_files
    result = CliRunner().invoke(cli, ["--db", db_url, "match", str(hit), str(miss)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first.startswith("hit.wav: tune_012.wav (id 2) votes ")
    assert f"offset {40 * HOP / SR:.2f} s; runner-up tune_0" in first
    assert second.startswith("miss.wav: no match (best tune_0")
    assert " score " in first and " score " in second


@pytest.mark.postgres
def test_match_command_alpha_rule(tuned_store, db_url, query_files) -> None:
    hit, miss = query_files
    result = CliRunner().invoke(cli, ["--db", db_url, "match", "--json", "--alpha", "1e-3", str(hit), str(miss)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found, missed = map(json.loads, result.output.splitlines())
    assert found["match"]["file_name"] == "tune_012.wav" and found["score"] == found["match"]["score"] > 3
    assert missed["match"] is None and missed["score"] <= 3
    both = CliRunner().invoke(cli, ["--db", db_url, "match", "--alpha", "1e-3", "--min-votes", "5", str(hit)])
    assert both.exit_code != 0 and "not both" in both.output


@pytest.mark.postgres
def test_match_command_json_and_sql(tuned_store, db_url, query_files) -> None:
    hit, _ = query_files
    outputs = []
    for extra in ([], ["--sql"]):
        result = CliRunner().invoke(cli, ["--db", db_url, "match", "--json", "--top", "3", "--zone", "Fsmall_Tlong",
                                          *extra, str(hit)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.output))
    assert outputs[0]["candidates"] == outputs[1]["candidates"]
    assert outputs[0]["match"]["file_name"] == "tune_012.wav" and outputs[0]["match"]["offset_frames"] == 40
    assert 2 <= len(outputs[0]["candidates"]) <= 3


@pytest.mark.postgres
def test_match_command_on_empty_database_says_ingest_first(db_url, query_files) -> None:
    result = CliRunner().invoke(cli, ["--db", db_url, "match", str(query_files[0])])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "ingest first" in result.output


@pytest.mark.postgres
def test_match_command_unknown_zone(tuned_store, db_url, query_files) -> None:
    result = CliRunner().invoke(cli, ["--db", db_url, "match", "--zone", "nope", str(query_files[0])])
    assert result.exit_code == 1 and result.output.startswith("Error: zone='nope' is not one of")


@pytest.mark.postgres
def test_lookup_index_command_switches_and_answers_stay_the_same(tuned_store, db_url, query_files) -> None:
    hit, _ = query_files
    runner = CliRunner()
    before = runner.invoke(cli, ["--db", db_url, "match", "--json", str(hit)], catch_exceptions=False).output
    result = runner.invoke(cli, ["--db", db_url, "db", "lookup-index", "covering"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.startswith("postings indexed by the covering index (")
    with tuned_store.engine.connect() as conn:
        from sqlalchemy import text

        names = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'hashes'")).scalars())
    assert names == {"hashes_zone_hash_cover"}
    assert runner.invoke(cli, ["--db", db_url, "match", "--json", str(hit)], catch_exceptions=False).output == before
    back = runner.invoke(cli, ["--db", db_url, "db", "lookup-index", "plain"], catch_exceptions=False)
    assert back.exit_code == 0 and "plain index" in back.output


def test_lookup_index_command_refuses_unknown_variant() -> None:
    result = CliRunner().invoke(cli, ["db", "lookup-index", "hash"])
    assert result.exit_code == 2 and "'hash' is not one of 'plain', 'covering'" in result.output


# -- matching goes on past bad queries, walks folders, reads standard input (issue 12) -------------------
def _wav_bytes(y: np.ndarray, audio_format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, y, SR, format=audio_format)
    return buffer.getvalue()


@pytest.fixture
def mixed_queries(tmp_path, rng_factory):
    """A good excerpt, an empty file, a folder (a good excerpt in a subfolder, a text file named .mp3, a
    file ingest's walk skips), and a path that does not exist."""
    rng = rng_factory(5)
    good = tmp_path / "good.wav"
    soundfile.write(good, _excerpt(11, 20, 4.0, rng, None), SR, subtype="PCM_16")
    empty = tmp_path / "bad" / "empty.wav"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "sub" / "deep.wav", _excerpt(13, 5, 4.0, rng, None), SR, subtype="PCM_16")
    (folder / "broken.mp3").write_text("not audio at all\n")
    (folder / "notes.txt").write_text("not a query: not an audio extension\n")
    return good, empty, folder, tmp_path / "missing.wav"


@pytest.mark.postgres
def test_match_command_answers_every_readable_query_and_names_every_bad_one(tuned_store, db_url, mixed_queries,
                                                                           rng_factory) -> None:
    good, empty, folder, missing = mixed_queries
    piped = _wav_bytes(_excerpt(12, 30, 4.0, rng_factory(6), None))
    result = CliRunner().invoke(cli, ["--db", db_url, "match", str(empty), str(good), str(folder), str(missing), "-"],
                                input=piped, catch_exceptions=False)
    assert result.exit_code == 3, result.output
    answers = result.stdout.splitlines()
    assert [line.split(":")[0] for line in answers] == ["good.wav", "deep.wav", "<stdin>"]
    assert answers[0].startswith("good.wav: tune_011.wav (id 1) votes ")
    assert answers[1].startswith("deep.wav: tune_013.wav (id 3) votes ")
    assert answers[2].startswith("<stdin>: tune_012.wav (id 2) votes ")
    assert f"offset {30 * HOP / SR:.2f} s" in answers[2]
    failed = result.stderr.splitlines()
    assert failed == [
        f"failed: {empty}: empty file (0 bytes)",
        f"failed: {folder / 'broken.mp3'}: cannot decode audio (not a readable audio file: format not recognised; "
        "ffmpeg could not decode it either)",
        f"failed: {missing}: no such file or folder",
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("audio_format", ["WAV", "FLAC", "MP3"])
def test_match_command_reads_audio_of_any_format_from_stdin(tuned_store, db_url, rng_factory, audio_format) -> None:
    piped = _wav_bytes(_excerpt(12, 40, 4.0, rng_factory(7), None), audio_format)
    result = CliRunner().invoke(cli, ["--db", db_url, "match", "--json", "-"], input=piped, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["query"] == "<stdin>" and answer["match"]["file_name"] == "tune_012.wav"
    # an MP3 encoder may shift the audio by its delay: within one frame
    assert abs(answer["match"]["offset_frames"] - 40) <= (1 if audio_format == "MP3" else 0)


@pytest.mark.postgres
def test_match_command_json_gives_an_error_object_per_failed_query(tuned_store, db_url, mixed_queries) -> None:
    good, empty, _, _ = mixed_queries
    result = CliRunner().invoke(cli, ["--db", db_url, "match", "--json", str(good), str(empty), "-"],
                                input=b"RIFF\x00\x00", catch_exceptions=False)
    assert result.exit_code == 3, result.output
    answered, bad_file, bad_stdin = (json.loads(line) for line in result.stdout.splitlines())
    assert answered["match"]["file_name"] == "tune_011.wav" and "error" not in answered
    assert bad_file == {"query": "empty.wav", "zone": "Fsmall_Tlong", "error": f"{empty}: empty file (0 bytes)"}
    assert bad_stdin["query"] == "<stdin>" and bad_stdin["error"].startswith("<stdin>: cannot decode audio (")
    assert "fpstore-stdin-" not in bad_stdin["error"]  # the spooled file's name stays private
    assert result.stderr == ""


@pytest.mark.postgres
def test_match_command_top_1_lists_one_track_and_keeps_the_confidence(tuned_store, db_url, query_files) -> None:
    hit, _ = query_files
    answers = {}
    for top in ("1", "2"):
        result = CliRunner().invoke(cli, ["--db", db_url, "match", "--json", "--top", top, str(hit)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        answers[top] = json.loads(result.stdout)
    assert len(answers["1"]["candidates"]) == 1 and len(answers["2"]["candidates"]) == 2
    assert answers["1"]["candidates"][0] == answers["2"]["candidates"][0] == answers["1"]["match"]
    assert answers["1"]["confidence"] == answers["2"]["confidence"] < 1.0  # the unlisted runner-up still counts
    text_line = CliRunner().invoke(cli, ["--db", db_url, "match", "--top", "1", str(hit)]).stdout
    assert text_line.startswith("hit.wav: tune_012.wav (id 2) votes ") and "runner-up" not in text_line


@pytest.mark.postgres
def test_match_fingerprint_top_k_1_keeps_the_decision_rule(tuned_store, rng_factory) -> None:
    params = tuned_store.params(duration_s=None)
    fp = fingerprint_signal(_excerpt(12, 30, 3.0, rng_factory(8), 0.0), params)
    # a ratio rule the runner-up decides: the same answer whether or not the runner-up is listed
    for rule in (DecisionRule(min_votes=1, min_ratio=1.0), DecisionRule(min_votes=1, min_ratio=1e6)):
        one, two = (match_fingerprint(tuned_store, fp, params, top_k=k, rule=rule) for k in (1, 2))
        assert one.candidates == two.candidates[:1] and one.runner_up is None
        assert (one.match, one.confidence) == (two.match, two.confidence)
    assert one.match is None and two.match is None  # the second rule refuses: the runner-up counted


@pytest.mark.postgres
def test_match_files_raises_or_reports_and_walks_folders(tuned_store, mixed_queries) -> None:
    good, empty, folder, missing = mixed_queries
    with pytest.raises(AudioError, match=r"empty\.wav: empty file \(0 bytes\)"):
        match_files(tuned_store, [good, empty])
    results = match_files(tuned_store, [good, empty, folder, missing], errors="report")
    assert [r.query for r in results] == ["good.wav", "empty.wav", "broken.mp3", "deep.wav", "missing.wav"]
    assert [r.error is None for r in results] == [True, False, False, True, False]
    assert [r.match.file_name for r in results if r.match] == ["tune_011.wav", "tune_013.wav"]
    assert all(r.candidates == [] and r.match is None for r in results if r.error)
    assert results[4].error == f"{missing}: no such file or folder"
    gone = match_files(tuned_store, [f"{missing.parent / 'gone'}/"], errors="report")
    assert [(r.query, r.error) for r in gone] == [("gone", f"{missing.parent / 'gone'}: no such file or folder")]
    # "-" is a file name unless a stream is given
    assert next(match_queries(tuned_store, ["-"])).error == "-: no such file or folder"


@pytest.mark.postgres
def test_a_query_without_hashes_fails_with_ingests_reason(tuned_store, tmp_path) -> None:
    silent = tmp_path / "silence.wav"
    soundfile.write(silent, np.zeros(SR, dtype=np.float32), SR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reason is the one line said, no warning besides it
        for evidence in (PLAIN, ROBUST):
            [result] = match_files(tuned_store, [silent], errors="report", evidence=evidence)
            assert result.error == f"{silent}: no hashes: no spectral peak above peak_thresh=0.01 (silence?)"


@pytest.mark.parametrize("calls", [0, 1, 2])
def test_a_posting_memory_keeps_the_answers_of_its_last_calls_and_no_more(calls: int) -> None:
    fetched: list[list[int]] = []

    def fetch(zones: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, ...]:
        fetched.append(hashes.tolist())
        return zones, hashes, np.ones(hashes.size, np.int32), np.zeros(hashes.size, np.int32)

    memory = PostingMemory(calls)
    zone = np.ones(1, np.int16)
    for hash_value in (7, 7, 8, 7):
        memory.postings(zone, np.array([hash_value], np.int32), fetch)
    assert fetched == {0: [[7], [7], [8], [7]], 1: [[7], [8], [7]], 2: [[7], [8]]}[calls]

