"""More evidence per query: distinct anchors, sub-hop shifts and speed factors, on arrays and on a real database."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fpstore.db.migrations.siblings import revision_module
from helpers import write_tunes
from hypothesis import given, settings
from hypothesis import strategies as st

from fpstore.cli import cli
from fpstore.cli.options import evidence_from_options
from fpstore.errors import ParameterError
from fpstore.ingest import ingest
from fpstore.matching.evidence import ALL_ZONES, PLAIN, ROBUST, DecisionRule, Evidence
from fpstore.matching.matcher import match_prepared, match_signal
from fpstore.matching.query import prepare_query
from fpstore.matching.ranking import fetch_postings, match_fingerprint
from fpstore.matching.significance import TRACKS_NULL_DEPTH, TRACKS_NULL_SKIP
from fpstore.matching.vote import (
    anchor_bins,
    counted_bins,
    distinct_anchor_votes,
    pair_indices,
    pairs_by_hash,
    query_keys,
    vote,
)
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.hashing import ZoneHashes
from fpstore.signal.query_peaks import DEREVERBERATED_LOOK, WHITENED, WHITENED_LOOK, QueryPicking
from fpstore.signal.synth import synth_tune
from fpstore.signal.variants import change_speed, check_variants, picked_variant, shift_samples

SR = 22050
HOP = 1024
SEEDS = [31, 32, 33]


# -- on arrays ------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40), st.lists(st.integers(0, 5), min_size=1, max_size=40))
def test_pair_indices_pairs_every_posting_with_every_hash_of_its_key(posting_keys, hash_keys) -> None:
    key_of_hash = np.array(hash_keys)
    key_of_posting = np.array([k for k in posting_keys if k <= key_of_hash.max()], dtype=np.int64)
    posting, query_hash = pair_indices(key_of_posting, key_of_hash)
    expected = sorted((p, h) for p, pk in enumerate(key_of_posting) for h, hk in enumerate(key_of_hash) if pk == hk)
    assert sorted(zip(posting.tolist(), query_hash.tolist())) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40), st.lists(st.integers(0, 5), min_size=1, max_size=40))
def test_pairs_by_hash_are_the_pairs_of_pair_indices_in_query_hash_order(posting_keys, hash_keys) -> None:
    key_of_hash = np.array(hash_keys)
    key_of_posting = np.array(sorted(k for k in posting_keys if k <= key_of_hash.max()), dtype=np.int64)
    posting, query_hash = pairs_by_hash(key_of_posting, key_of_hash, 6)
    reference = pair_indices(key_of_posting, key_of_hash)
    assert sorted(zip(posting.tolist(), query_hash.tolist())) == sorted(zip(*(r.tolist() for r in reference)))
    assert (np.diff(query_hash) >= 0).all()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(-3, 8)), max_size=60),
       st.sampled_from([0, 2**40, 2**62]))
def test_distinct_anchor_votes_keep_one_vote_per_anchor_and_bin(pairs, track_base) -> None:
    # With track ids from 2**62 the packed key is too wide for an int64: the three-column sort answers.
    tracks = np.array([track_base + t for t, _, _ in pairs], dtype=np.int64)
    t_anchor = np.array([a for _, a, _ in pairs], dtype=np.int64)
    offsets = np.array([o for _, _, o in pairs], dtype=np.int64)
    vote_tracks, vote_offsets = distinct_anchor_votes(tracks, t_anchor, offsets)
    # Definition: one vote per distinct (track, t_anchor, offset), that is per (anchor, t_query).
    expected = sorted((track_base + t, o) for t, a, o in set(pairs))
    assert list(zip(vote_tracks.tolist(), vote_offsets.tolist())) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(-3, 8)), max_size=60),
       st.sampled_from([(0, 1), (2**30, 1), (2**30, 2**40), (2**40, 1), (2**62, 1)]), st.integers(0, 3))
def test_distinct_anchor_votes_with_a_tolerance_vote_as_the_hashes_sent_again_would(pairs, bases,
                                                                                    tolerance) -> None:
    # Reference: every pair repeated at offset + d (tolerant_times's pairs), then one vote per distinct triple.
    # Track ids from 2**30 with anchors 2**40 apart, or from 2**40, are too wide to pack: the column sort answers.
    track_base, anchor_scale = bases
    tracks = np.array([track_base + t for t, _, _ in pairs], dtype=np.int64)
    t_anchor = np.array([a * anchor_scale for _, a, _ in pairs], dtype=np.int64)
    offsets = np.array([o for _, _, o in pairs], dtype=np.int64)
    moves = range(-tolerance, tolerance + 1)
    expected = distinct_anchor_votes(np.tile(tracks, len(moves)), np.tile(t_anchor, len(moves)),
                                     np.concatenate([offsets + d for d in moves]))
    got = distinct_anchor_votes(tracks, t_anchor, offsets, tolerance=tolerance)
    assert [g.tolist() for g in got] == [e.tolist() for e in expected]
    if track_base < 2**31:  # the vote's track ids (stored as int4)
        # Counted per bin without listing the votes: the bins of the votes listed.
        bins = anchor_bins(tracks, t_anchor, offsets, tolerance=tolerance)
        assert [b.tolist() for b in bins] == [b.tolist() for b in counted_bins(*expected)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(-5, 9)), min_size=1, max_size=60), st.randoms())
def test_the_vote_of_votes_in_any_order_is_the_vote_of_them_sorted(votes, rng) -> None:
    # vote() skips its sort when the votes come sorted (distinct anchors): both paths must agree.
    ordered = sorted(votes)
    shuffled = list(votes)
    rng.shuffle(shuffled)
    answers = [vote(np.array([t for t, _ in vs]), np.array([o for _, o in vs]), top_k=3) for vs in (ordered, shuffled)]
    assert [a.tolist() for a in answers[0]] == [a.tolist() for a in answers[1]]


def test_variants_are_checked_once() -> None:
    assert check_variants(1, []) == (1.0,)
    assert ROBUST.speeds[0] == 1.0 and len(ROBUST.speeds) == 7
    assert shift_samples(3, 1024) == (0, 341, 683)
    for bad in ({"count": "votes"}, {"shifts": 0}, {"shifts": 17}, {"speeds": (2.0,)}, {"speeds": (True,)},
                {"tolerance": -1}, {"tolerance": 4}, {"tolerance": True}):
        with pytest.raises(ParameterError):
            Evidence(**bad)
    assert not PLAIN.needs_audio and Evidence(shifts=2).needs_audio and Evidence(speeds=(0.99,)).needs_audio
    # The query as it is, then pooled (shifts or a tolerance), then each other factor, then each own look.
    assert (PLAIN.tests, Evidence(tolerance=1).tests, Evidence(speeds=(0.99,)).tests, ROBUST.tests) == (1, 2, 2, 9)
    assert Evidence(own_picks=(WHITENED,)).needs_audio and not Evidence(own_picks=(WHITENED,)).pools
    assert not Evidence(tolerance=1).needs_audio
    # Pooled, the other factors are one look and one test; extra peak selections pool into the second look.
    assert dataclasses.replace(ROBUST, pool_speeds=True, own_picks=()).tests == 3
    assert dataclasses.replace(PLAIN, pool_speeds=True).tests == 1
    picked = Evidence(picks=(QueryPicking(6, 3, 10),))
    assert picked.needs_audio and picked.pools and picked.tests == 2
    with pytest.raises(ParameterError, match="tuple of QueryPicking"):
        Evidence(picks=[QueryPicking()])  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="own_picks=.* must be a tuple of QueryPicking"):
        Evidence(own_picks=(True,))  # type: ignore[arg-type]


def test_change_speed_stretches_by_the_factor() -> None:
    y = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    assert change_speed(y, 1.0, SR) is y
    assert change_speed(y, 1.02, SR).size == pytest.approx(1.02 * SR, abs=2)


# -- on a real database ----------------------------------------------------------------------------------
@pytest.fixture
def tuned(store, tmp_path):
    write_tunes(tmp_path / "music", SEEDS)
    ingest(store, tmp_path / "music", jobs=1)
    return store


def _excerpt(seed: int, start_samples: int, seconds: float) -> np.ndarray:
    return synth_tune(seed, duration_s=8.0)[start_samples:start_samples + int(seconds * SR)].astype(np.float32)


@pytest.mark.postgres
def test_anchors_count_fewer_votes_than_pairs_and_find_the_same_tune(tuned) -> None:
    y = _excerpt(32, 30 * HOP, 4.0)
    pairs = match_signal(tuned, y, zone="all", evidence=PLAIN)
    anchors = match_signal(tuned, y, zone="all", evidence=Evidence(count="anchors"))
    assert pairs.best is not None and anchors.best is not None
    assert anchors.best.track_id == pairs.best.track_id and anchors.best.offset_frames == 30
    # Four zones (and up to five targets each) see the same anchor: one vote per anchor instead.
    assert anchors.best.votes < pairs.best.votes / 2


@pytest.mark.postgres
def test_a_bound_on_a_keys_postings_leaves_out_exactly_the_longer_lists(tuned) -> None:
    fingerprint = fingerprint_signal(_excerpt(33, 10 * HOP, 6.0), tuned.params(duration_s=None))
    zones = tuned.zone_ids()
    zone_of_hash = np.concatenate([np.full(zh.hashes.size, zones[name]) for name, zh in fingerprint.zones.items()])
    key_zones, key_hashes, _ = query_keys(zone_of_hash, np.concatenate([zh.hashes for zh in fingerprint.zones.values()]))
    every_key, _, _ = fetch_postings(tuned, key_zones, key_hashes)
    lengths = np.bincount(every_key, minlength=key_zones.size)
    assert lengths.max() >= 2  # the tunes repeat some of their hashes
    for bound in (1, 2):
        bounded_key, _, _ = fetch_postings(tuned, key_zones, key_hashes, bound)
        assert np.array_equal(np.bincount(bounded_key, minlength=key_zones.size), np.where(lengths <= bound, lengths, 0))
    y = _excerpt(31, 20 * HOP, 4.0)
    unbounded = match_signal(tuned, y, evidence=ROBUST)
    assert match_signal(tuned, y, evidence=dataclasses.replace(ROBUST, max_postings_per_key=int(lengths.max()) + 50)) \
        == unbounded
    with pytest.raises(ParameterError, match="for the Python vote"):
        match_signal(tuned, y, evidence=dataclasses.replace(ROBUST, max_postings_per_key=5), method="sql")
    with pytest.raises(ParameterError, match="max_postings_per_key=0 must be an integer >= 1"):
        Evidence(max_postings_per_key=0)


@pytest.mark.postgres
def test_sub_hop_shifts_recover_a_half_hop_misaligned_excerpt(tuned) -> None:
    y = _excerpt(31, 20 * HOP + HOP // 2, 4.0)
    # A rule that names nothing, so that the shifted look (taken when the first names nothing) is taken.
    never = DecisionRule(min_votes=10**6)
    plain = match_signal(tuned, y, evidence=Evidence(count="anchors"), rule=never)
    shifted = match_signal(tuned, y, evidence=Evidence(count="anchors", shifts=4), rule=never)
    assert shifted.best is not None and shifted.best.file_name == "tune_031.wav"
    assert abs(shifted.best.offset_frames - 21) <= 1
    assert shifted.best.votes > (plain.best.votes if plain.best is not None and plain.best.track_id
                                 == shifted.best.track_id else 0)
    assert shifted.best.score > plain.score


@pytest.mark.postgres
def test_an_offset_tolerance_gathers_the_votes_of_hashes_whose_times_moved(tuned) -> None:
    params = tuned.params(duration_s=None)
    fingerprint = fingerprint_signal(_excerpt(32, 12 * HOP, 4.0), params)
    rng = np.random.default_rng(5)
    # Every anchor frame one frame early, on time or one frame late, as reverberation can move a peak.
    moves = rng.integers(-1, 2, 1 + max(int(zh.t_anchor_frames.max()) for zh in fingerprint.zones.values()))
    moved = dataclasses.replace(fingerprint, zones={
        name: ZoneHashes(zh.hashes, zh.t_anchor_frames + moves[zh.t_anchor_frames])
        for name, zh in fingerprint.zones.items()})
    exact, tolerant = (match_fingerprint(tuned, moved, params, count="anchors", tolerance=t) for t in (0, 1))
    assert exact.best is not None and tolerant.best is not None
    assert tolerant.best.file_name == "tune_032.wav" and abs(tolerant.best.offset_frames - 12) <= 1
    assert tolerant.best.votes > 1.5 * exact.best.votes


@pytest.mark.postgres
def test_a_speed_changed_excerpt_is_found_at_its_factor_and_an_easy_one_pays_nothing(tuned, tmp_path) -> None:
    params = tuned.params(duration_s=None)
    # Played 2 % faster: 2 % shorter and 2 % higher (the inverse of what the matcher undoes).
    fast = change_speed(_excerpt(33, 10 * HOP, 5.0), 1 / 1.02, SR)
    plain = match_signal(tuned, fast, evidence=Evidence(count="anchors", shifts=4), rule=DecisionRule(alpha=1e-3))
    robust = match_signal(tuned, fast, evidence=ROBUST, rule=DecisionRule(alpha=1e-3))
    assert plain.match is None
    assert robust.match is not None and robust.match.file_name == "tune_033.wav", robust
    assert robust.speed == 1.02 and abs(robust.match.offset_frames - 10) <= 1
    # An unchanged excerpt is named at speed 1.0 and the other speeds are never fingerprinted.
    easy = tmp_path / "easy.wav"
    soundfile.write(easy, _excerpt(31, 5 * HOP, 5.0), SR, subtype="PCM_16")
    prepared = prepare_query(easy, params, ROBUST)
    assert not isinstance(prepared, str)
    result = match_prepared(tuned, prepared, params, evidence=ROBUST, rule=DecisionRule(alpha=1e-3))
    assert result.match is not None and result.speed == 1.0 and prepared._screen is None


@pytest.mark.postgres
def test_a_query_that_names_nothing_screens_the_other_speeds_unshifted(tuned, tmp_path) -> None:
    params = tuned.params(duration_s=None)
    noise = tmp_path / "noise.wav"
    soundfile.write(noise, np.random.default_rng(9).standard_normal(5 * SR).astype(np.float32) * 0.1, SR,
                    subtype="PCM_16")
    prepared = prepare_query(noise, params, ROBUST)
    assert not isinstance(prepared, str)
    result = match_prepared(tuned, prepared, params, evidence=ROBUST)
    assert result.match is None
    # Each other speed was fingerprinted once (the screen), not at the four shifts.
    assert prepared._screen is not None and [v.speed for v in prepared._screen] == list(ROBUST.speeds[1:])
    assert all(len(v.fingerprints) == 1 for v in prepared._screen)
    # A speed that stands out is looked at with every shift, its unshifted fingerprint reused.
    full = prepared.at_speed(params, ROBUST, 1.02)
    assert len(full.fingerprints) == ROBUST.shifts and full.fingerprints[0] is prepared._screen[3].fingerprints[0]


@pytest.mark.postgres
def test_own_picks_are_a_last_look_that_an_easy_query_never_pays(tuned, tmp_path) -> None:
    params = tuned.params(duration_s=None)
    assert ROBUST.own_picks == (WHITENED_LOOK,)
    # Each own pick is a step of its own and a test: the whitened look, then the dereverberated one.
    both_looks = dataclasses.replace(ROBUST, own_picks=(WHITENED_LOOK, DEREVERBERATED_LOOK))
    assert both_looks.tests == dataclasses.replace(ROBUST, own_picks=()).tests + 2 == ROBUST.tests + 1
    easy, noise = tmp_path / "easy.wav", tmp_path / "noise.wav"
    soundfile.write(easy, _excerpt(31, 5 * HOP, 5.0), SR, subtype="PCM_16")
    soundfile.write(noise, np.random.default_rng(9).standard_normal(5 * SR).astype(np.float32) * 0.1, SR,
                    subtype="PCM_16")
    answers = {}
    for path in (easy, noise):
        prepared = prepare_query(path, params, both_looks)
        assert not isinstance(prepared, str)
        answers[path] = match_prepared(tuned, prepared, params, evidence=both_looks), prepared
    # The easy query is named by its first look; the whitened one is never fingerprinted.
    named, prepared = answers[easy]
    assert named.match is not None and named.match.file_name == "tune_031.wav" and not prepared._picked
    # A query that names nothing pays the last looks, each its own picking only: whitened peaks, one
    # fingerprint per shift; dereverberated peaks, one per shift of its own two.
    nothing, prepared = answers[noise]
    assert nothing.match is None and list(prepared._picked) == [WHITENED_LOOK, DEREVERBERATED_LOOK]
    assert len(prepared._picked[WHITENED_LOOK].fingerprints) == both_looks.shifts
    assert len(prepared._picked[DEREVERBERATED_LOOK].fingerprints) == DEREVERBERATED_LOOK.shifts == 2
    assert all(variant.speed == 1.0 for variant in prepared._picked.values())


@pytest.mark.postgres
def test_the_own_picks_look_gives_the_same_answers_in_python_and_sql(tuned) -> None:
    params = tuned.params(duration_s=None)
    for y in (synth_tune(77, duration_s=3.0), _excerpt(32, 8 * HOP + HOP // 3, 3.0)):
        look = [picked_variant(y, params, 4, [WHITENED_LOOK])]
        by_python, by_sql = (match_fingerprint(tuned, look, params, top_k=3, method=method, tests=9)
                             for method in ("python", "sql"))
        assert by_python.candidates and by_python.candidates == by_sql.candidates
        assert by_python.match == by_sql.match


@pytest.mark.postgres
def test_match_command_finds_a_fast_excerpt_by_default_and_reports_the_speed(tuned, db_url, tmp_path) -> None:
    query = tmp_path / "fast.wav"
    soundfile.write(query, change_speed(_excerpt(32, 8 * HOP, 5.0), 1 / 1.02, SR), SR, subtype="PCM_16")
    result = CliRunner().invoke(cli, ["--db", db_url, "match", "--json", str(query)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["match"]["file_name"] == "tune_032.wav"
    # Without the offset tolerance the shifted look misses it, and speed 1.02 finds it.
    exact = ["--db", db_url, "match", "--offset-tolerance", "0", str(query)]
    answer = json.loads(CliRunner().invoke(cli, [*exact, "--json"], catch_exceptions=False).output)
    assert answer["match"]["file_name"] == "tune_032.wav" and answer["speed"] == 1.02
    assert " speed 1.02" in CliRunner().invoke(cli, exact).output
    # The notebook's vote tries no other speed.
    plain = CliRunner().invoke(cli, ["--db", db_url, "match", "--plain", "--json", str(query)], catch_exceptions=False)
    assert json.loads(plain.output)["speed"] == 1.0


def test_evidence_options_change_one_part_of_the_default_or_of_plain() -> None:
    assert evidence_from_options(False, None, None, None, None) == ROBUST
    assert evidence_from_options(True, None, None, None, None) == PLAIN
    assert evidence_from_options(False, None, None, "1", 0) == dataclasses.replace(ROBUST, speeds=(1.0,), tolerance=0)
    assert evidence_from_options(True, "anchors", 2, None, None) == Evidence("anchors", shifts=2)
    assert evidence_from_options(False, None, None, None, None, whitened_look=False).own_picks == ()
    # --no-whitened-look leaves the whitened look out of a base with other own looks, and those in.
    both = dataclasses.replace(ROBUST, own_picks=(WHITENED_LOOK, DEREVERBERATED_LOOK))
    without_whitened = evidence_from_options(False, None, None, None, None, both, whitened_look=False)
    assert without_whitened.own_picks == (DEREVERBERATED_LOOK,)
    assert evidence_from_options(False, None, None, None, None, dereverberated_look=True) == both
    assert evidence_from_options(False, None, None, None, None, both, dereverberated_look=False) == ROBUST
    assert evidence_from_options(True, None, None, None, None, whitened_look=True) == Evidence(own_picks=(WHITENED_LOOK,))
    assert (evidence_from_options(False, None, None, None, None, pool_speeds=True)
            == dataclasses.replace(ROBUST, pool_speeds=True))


@pytest.mark.postgres
@pytest.mark.parametrize(("options", "message"), [
    (["--speeds", "fast"], "not a comma-separated list of numbers"),
    (["--speeds", "3"], "must be a number in [0.8, 1.25]"),
])
def test_match_command_refuses_bad_evidence_options(tuned, db_url, tmp_path, options, message) -> None:
    query = tmp_path / "q.wav"
    soundfile.write(query, _excerpt(31, 0, 3.0), SR, subtype="PCM_16")
    result = CliRunner().invoke(cli, ["--db", db_url, "match", *options, str(query)])
    assert result.exit_code != 0 and message in result.output, result.output


@pytest.mark.postgres
def test_the_sql_vote_gives_the_same_answers_with_anchors_shifts_and_speeds(tuned) -> None:
    queries = [_excerpt(31, 20 * HOP + HOP // 2, 3.0), change_speed(_excerpt(33, 10 * HOP, 4.0), 1 / 1.02, SR),
               synth_tune(77, duration_s=3.0)]
    compared = 0
    for y in queries:
        for zone in ("Fsmall_Tlong", "Flarge_Tshort", ALL_ZONES):
            for evidence in (Evidence(count="anchors"), ROBUST, dataclasses.replace(ROBUST, tolerance=1)):
                by_python, by_sql = (match_signal(tuned, y, zone=zone, top_k=3, evidence=evidence, method=method,
                                                  rule=DecisionRule(alpha=1e-3)) for method in ("python", "sql"))
                assert by_python.candidates == by_sql.candidates, (zone, evidence)
                assert (by_python.match, by_python.speed) == (by_sql.match, by_sql.speed)
                compared += len(by_python.candidates)
    assert compared > 20


@pytest.mark.postgres
def test_pooled_speeds_and_peak_selections_give_the_same_answers_in_python_and_sql(tuned) -> None:
    fast = change_speed(_excerpt(33, 10 * HOP, 4.0), 1 / 1.02, SR)
    pooled = dataclasses.replace(ROBUST, pool_speeds=True)
    picked = dataclasses.replace(ROBUST, picks=(QueryPicking(6, 3, 10, whiten=True),))
    answers = {}
    for y, evidence in ((fast, pooled), (_excerpt(31, 20 * HOP + HOP // 2, 3.0), picked)):
        by_python, by_sql = (match_signal(tuned, y, top_k=3, evidence=evidence, method=method)
                             for method in ("python", "sql"))
        assert by_python.candidates == by_sql.candidates
        assert (by_python.match, by_python.speed) == (by_sql.match, by_sql.speed)
        answers[evidence] = by_python
    # The pooled look names the fast excerpt and reports the factor whose own look scores best.
    found = answers[pooled]
    assert found.match is not None and found.match.file_name == "tune_033.wav" and found.speed == 1.02
    assert answers[picked].match is not None and answers[picked].match.file_name == "tune_031.wav"


@pytest.mark.postgres
def test_the_sql_vote_gives_the_python_answers_and_scores_under_the_tracks_null(tuned) -> None:
    queries = [_excerpt(31, 20 * HOP + HOP // 2, 3.0), change_speed(_excerpt(33, 10 * HOP, 4.0), 1 / 1.02, SR),
               synth_tune(77, duration_s=3.0)]
    rule = DecisionRule(alpha=1e-3, null="tracks")
    named = compared = 0
    for y in queries:
        for zone in ("Fsmall_Tlong", ALL_ZONES):
            for evidence in (PLAIN, ROBUST):
                by_python, by_sql = (match_signal(tuned, y, zone=zone, top_k=3, evidence=evidence, method=method,
                                                  rule=rule) for method in ("python", "sql"))
                assert by_python.candidates == by_sql.candidates, (zone, evidence)
                assert (by_python.match, by_python.speed) == (by_sql.match, by_sql.speed)
                named += by_python.match is not None
                compared += len(by_python.candidates)
    assert compared >= 12 and named >= 4, (compared, named)


@pytest.mark.postgres
def test_match_command_names_a_fast_excerpt_under_the_tracks_null_by_python_and_by_sql(tuned, db_url, tmp_path) -> None:
    query = tmp_path / "fast.wav"
    soundfile.write(query, change_speed(_excerpt(32, 8 * HOP, 5.0), 1 / 1.02, SR), SR, subtype="PCM_16")
    miss = tmp_path / "miss.wav"
    soundfile.write(miss, synth_tune(78, duration_s=5.0), SR, subtype="PCM_16")
    answers = []
    for sql in ([], ["--sql"]):
        result = CliRunner().invoke(cli, ["--db", db_url, "match", "--offset-tolerance", "0", "--null", "tracks",
                                          "--alpha", "1e-3", "--json", *sql, str(query), str(miss)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        answers.append([json.loads(line) for line in result.output.splitlines()])
    found, missed = answers[0]
    assert found["match"]["file_name"] == "tune_032.wav" and found["speed"] == 1.02 and found["score"] > 3
    assert missed["match"] is None and missed["score"] <= 3
    assert [a["candidates"] for a in answers[0]] == [a["candidates"] for a in answers[1]]
    tolerant = CliRunner().invoke(cli, ["--db", db_url, "match", str(query), str(miss)], catch_exceptions=False)
    named, unnamed = tolerant.output.splitlines()
    assert named.startswith("fast.wav: tune_032.wav") and unnamed.startswith("miss.wav: no match")


@pytest.mark.postgres
def test_the_tracks_null_needs_only_each_shards_31_largest_evidences(store) -> None:
    # What a cluster's router relies on (migrations 0010, r0002): scoring against the shards' 31 smallest
    # ln p, concatenated, is scoring against every voted track's.
    rng = np.random.default_rng(11)
    for n_tracks in (12, 40, 200):
        log_p = -rng.exponential(3.0, n_tracks) * rng.integers(1, 4, n_tracks)
        shard_of = rng.integers(0, 4, n_tracks)
        kept = np.concatenate([np.sort(log_p[shard_of == k])[:TRACKS_NULL_DEPTH + 1] for k in range(4)])
        candidates = np.sort(log_p)[:3].tolist() + [-400.0]
        with store.raw() as conn:
            scores = [conn.execute("SELECT fpstore_tracks_null_score(%s, %s::float8[]), "
                                   "fpstore_tracks_null_score(%s, %s::float8[])",
                                   (c, log_p.tolist(), c, kept.tolist())).fetchone() for c in candidates]
        assert all(whole == pytest.approx(parts, abs=1e-12) for whole, parts in scores), scores
        assert any(whole > 0 for whole, _ in scores)


def test_the_sql_tracks_null_was_written_with_the_python_constants() -> None:
    sql = revision_module("0009_tracks_null.py")
    assert (sql.TRACKS_NULL_DEPTH, sql.TRACKS_NULL_SKIP) == (TRACKS_NULL_DEPTH, TRACKS_NULL_SKIP)


@pytest.mark.postgres
def test_match_command_sql_robust_answers_as_python_does(tuned, db_url, tmp_path) -> None:
    query = tmp_path / "fast.wav"
    soundfile.write(query, change_speed(_excerpt(31, 12 * HOP, 4.0), 1 / 0.98, SR), SR, subtype="PCM_16")
    outputs = [CliRunner().invoke(cli, ["--db", db_url, "match", "--null", "poisson", "--json", *sql,
                                        str(query)], catch_exceptions=False).output for sql in ([], ["--sql"])]
    assert json.loads(outputs[0])["speed"] == 0.98
    assert json.loads(outputs[0])["candidates"] == json.loads(outputs[1])["candidates"]
