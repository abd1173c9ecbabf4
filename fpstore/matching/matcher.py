"""The matcher: query files, streams and signals → a :class:`MatchResult` each, with the looks its evidence allows.

A query is looked up as it is first; only when that names nothing are the pooled shifts and peak
selections, then the other speed factors, looked at (:func:`match_prepared`), so an easy query costs
one lookup. The ranking of each look is :mod:`fpstore.matching.ranking`; the query preparation
:mod:`fpstore.matching.query`; the evidence and the rule :mod:`fpstore.matching.evidence`.

Conventions
-----------
- Times and offsets are STFT frames unless a name ends in ``_s``.
- Query files (:func:`match_queries`) are found and checked as ingest finds and checks its files; one
  that cannot be matched gives a result whose ``error`` is its one-line reason, and the rest go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, Literal

import numpy as np

from fpstore.db.contract import Catalogue
from fpstore.errors import AudioError, NotFound, ParameterError
from fpstore.matching.evidence import ALL_ZONES, DEFAULT_ZONE, ROBUST, DecisionRule, Evidence
from fpstore.matching.query import (
    STDIN_ARGUMENT,
    STDIN_LABEL,
    PreparedQuery,
    pooled_speeds,
    prepare_query,
    prepare_stream,
)
from fpstore.matching.ranking import Method, match_fingerprint
from fpstore.matching.results import MatchResult
from fpstore.runtime.files import discover_audio_files, one_line
from fpstore.signal.audio import display_path
from fpstore.signal.params import FingerprintParams
from fpstore.signal.query_peaks import QueryPicking
from fpstore.signal.variants import SpeedVariant, speed_variant

#: The speeds step looks at a speed with every shift only when, unshifted, its best track scored at least
#: this (``-log10 p`` after the union bound over the evidence's tests; the rule names a track above 3).
SCREEN_SCORE = 0.5
#: Lookups a query's looks remember (:meth:`fpstore.db.lookup.Lookup.remembering`): a later look fetches only
#: the keys none of the last this many looks of the query asked for. 0: every look fetches all its keys.
LOOKS_REMEMBERED = 4
#: The variants of a look that may come next (:func:`fpstore.matching.ranking.match_fingerprint`'s ``next_look``).
NextLook = Callable[[], Sequence[SpeedVariant]] | None


def match_signal(store: Catalogue, y: np.ndarray, *, evidence: Evidence = ROBUST, **options: object) -> MatchResult:
    """Fingerprint mono audio at the database's sample rate and match it (options of :func:`match_fingerprint`).

    Parameters
    ----------
    store : Catalogue
    y : np.ndarray [shape=(n,)], float32, mono, at the database's ``sample_rate`` Hz
    evidence : Evidence
        Shifts and speeds to fingerprint ``y`` at, and what a vote counts.
    """
    params = store.params(duration_s=None)
    prepared = PreparedQuery(speed_variant(y, params, 1.0, 1), y if evidence.needs_audio else None)
    return match_prepared(store, prepared, params, evidence=evidence, **options)  # type: ignore[arg-type]



def match_prepared(store: Catalogue, prepared: PreparedQuery, params: FingerprintParams, *, evidence: Evidence = ROBUST,
                   zone: str = DEFAULT_ZONE, top_k: int = 5, rule: DecisionRule = DecisionRule(),
                   method: Method = "python", query: str = "") -> MatchResult:
    """Match a prepared query as it is; if that names nothing, at every shift; then at the other speeds; then each own pick.

    Each step is one statement and is taken only when the steps before it named nothing, so an easy
    query costs what a plain one does. The shifts and speeds steps use the offset tolerance too. Every
    step counts as a test (the union bound over the query as it is, then each speed factor at every
    shift, then each look at one of :attr:`Evidence.own_picks`). The speeds step screens the factors unshifted
    first, and looks at every shift only at the factor whose best track scored at least
    :data:`SCREEN_SCORE` (a second statement).

    Parameters
    ----------
    store : Catalogue
    prepared : PreparedQuery
        From :func:`prepare_query` with the same ``evidence``.
    params : FingerprintParams
    evidence : Evidence
    zone, top_k, rule, method, query
        As in :func:`match_fingerprint`.

    Returns
    -------
    result : MatchResult
        The first step's answer the rule accepts; else the best-scoring one.
    """
    # The later looks' fingerprints need the hashes of the zone that votes only.
    looks = params if zone == ALL_ZONES else dataclasses.replace(params, zones=(params.zone(zone),))

    def answer(variants: Sequence[SpeedVariant], tolerance: int, next_look: NextLook = None) -> MatchResult:
        return match_fingerprint(store, variants, params, zone=zone, top_k=top_k, rule=rule, method=method,
                                 query=query, count=evidence.count, tests=evidence.tests, tolerance=tolerance,
                                 max_postings_per_key=evidence.max_postings_per_key, next_look=next_look)

    def other_speeds(next_look: NextLook) -> MatchResult:
        # The screen: every other speed unshifted, one statement. Only the speed whose best track stood
        # out (SCREEN_SCORE) is then looked at with every shift, and that look is the step's answer: a query
        # that names nothing seldom pays the other speeds' shifts (a quarter of the keys looked up).
        screened = answer(prepared.screen(looks, evidence), evidence.tolerance, next_look)
        if evidence.shifts == 1 or (screened.match is None and screened.score < SCREEN_SCORE):
            return screened  # unshifted is every shift, or no speed stood out
        return answer([prepared.at_speed(looks, evidence, screened.speed)], evidence.tolerance, next_look)

    def pooled_other_speeds(next_look: NextLook) -> MatchResult:
        # One look and one test for every other speed at every shift; the factor reported is the one
        # whose own look scores best, looked up only when the pooled look names a track.
        others = [prepared.at_speed(looks, evidence, speed) for speed in evidence.speeds[1:]]
        pooled = answer([pooled_speeds(others)], evidence.tolerance, next_look)
        if pooled.match is None:
            return pooled
        return dataclasses.replace(pooled, speed=answer(others, evidence.tolerance).speed)

    def shifted() -> Sequence[SpeedVariant]:
        return [prepared.shifted(looks, evidence)]

    def own_look(picking: QueryPicking) -> tuple[Callable[[NextLook], MatchResult], NextLook]:
        def variants() -> Sequence[SpeedVariant]:
            return [prepared.picked(looks, evidence, picking)]
        return (lambda next_look: answer(variants(), 0, next_look)), variants

    # Each step, and the variants of its first look (None: not known ahead, its speeds made for it alone).
    steps: list[tuple[Callable[[NextLook], MatchResult], NextLook]] = [(step, first) for wanted, step, first in (
        (evidence.pools, lambda next_look: answer(shifted(), evidence.tolerance, next_look), shifted),
        (len(evidence.speeds) > 1, pooled_other_speeds if evidence.pool_speeds else other_speeds,
         None if evidence.pool_speeds else lambda: prepared.screen(looks, evidence)),
    ) if wanted] + [own_look(picking) for picking in evidence.own_picks]

    # The looks ask again for many keys of the looks before them (a negative's, at 10,000 recordings, for
    # about a quarter of its postings): within one query, those are not fetched again. Not when the thread
    # already remembers (fpstore serve, fpstore monitor), nor with the look ahead, which fetches whole looks.
    remember = LOOKS_REMEMBERED > 0 and not store.lookup.fetch_ahead and not store.lookup.remembers()
    with store.lookup.remembering(LOOKS_REMEMBERED) if remember else contextlib.nullcontext():
        try:
            return _steps_taken(answer([prepared.first], 0), steps)
        finally:
            store.lookup.forget_ahead()  # a look fetched ahead and not taken is not this thread's next query's


def _steps_taken(result: MatchResult, steps: Sequence[tuple[Callable[[NextLook], MatchResult], NextLook]]) -> MatchResult:
    """Each step taken while nothing is named, told the next step's first look; the first named, else the best."""
    for k, (step, _) in enumerate(steps):
        if result.match is not None:
            break
        # While a later step votes, the next step's first look is made and fetched (both cores at work); not
        # while the first look votes, which names most positives.
        tried = step(steps[k + 1][1] if k + 1 < len(steps) else None)
        result = tried if tried.score > result.score else result
    return result



def match_queries(
    store: Catalogue,
    queries: Sequence[str | os.PathLike[str]],
    *,
    zone: str = DEFAULT_ZONE,
    top_k: int = 5,
    rule: DecisionRule = DecisionRule(),
    method: Method = "python",
    stdin: BinaryIO | None = None,
    evidence: Evidence = ROBUST,
) -> Iterator[MatchResult]:
    """Match every query file as it comes, one result each; a query that cannot be read does not stop the rest.

    A folder is walked as ingest walks it (:func:`fpstore.runtime.files.discover_audio_files`: audio files by
    extension, recursively, in sorted path order); a file is taken whatever its extension. Each file is
    fingerprinted whole with the database's parameters (:func:`prepare_query`).

    Parameters
    ----------
    store : Catalogue
    queries : sequence of path-like
        Files and folders; ``"-"`` reads one query from ``stdin`` when it is given.
    zone, top_k, rule, method
        As in :func:`match_fingerprint`.
    stdin : binary stream or None
        Read to its end, spooled to a temporary file and decoded like a file (any format libsndfile or
        ffmpeg reads), for each ``"-"``; its result and reason say ``<stdin>``.
    evidence : Evidence
        Shifts, speeds and what a vote counts (:data:`ROBUST` by default).

    Yields
    ------
    result : MatchResult
        In the order of ``queries`` (a folder's files in sorted order); ``error`` holds the one-line
        reason of a query that could not be matched (a missing path, a folder without audio files,
        an unreadable or undecodable file, a file without hashes).

    Raises
    ------
    NotFound
        If the database holds no fingerprints yet.
    ParameterError
        If ``zone``, ``top_k`` or ``method`` is invalid.
    """
    store.check_schema()
    params = store.params(duration_s=None)
    if zone != ALL_ZONES:
        params.zone(zone)

    def answer(label: str, outcome: PreparedQuery | str) -> MatchResult:
        if isinstance(outcome, str):
            return MatchResult.failed(label, zone, outcome, method)
        return match_prepared(store, outcome, params, evidence=evidence, zone=zone, top_k=top_k, rule=rule,
                              method=method, query=label)

    for query in queries:
        if stdin is not None and os.fspath(query) == STDIN_ARGUMENT:
            yield answer(STDIN_LABEL, prepare_stream(stdin, params, evidence))
            continue
        try:
            files = discover_audio_files(query)
        except NotFound as exc:
            label = one_line(display_path(os.path.basename(os.path.normpath(query))))
            yield MatchResult.failed(label, zone, one_line(str(exc)), method)
            continue
        if not files:
            label = one_line(display_path(query))
            yield MatchResult.failed(label, zone, f"{label}: no audio files in this folder", method)
        for path in files:
            yield answer(one_line(display_path(path.name)), prepare_query(path, params, evidence))



def match_files(
    store: Catalogue,
    paths: Sequence[str | os.PathLike[str]],
    *,
    zone: str = DEFAULT_ZONE,
    top_k: int = 5,
    rule: DecisionRule = DecisionRule(),
    method: Method = "python",
    errors: Literal["raise", "report"] = "raise",
    evidence: Evidence = ROBUST,
) -> list[MatchResult]:
    """Match each file (folders walked as ingest walks them), fingerprinted whole with the database's parameters.

    Parameters
    ----------
    store : Catalogue
    paths : sequence of path-like
        Files and folders.
    zone, top_k, rule, method
        As in :func:`match_fingerprint`.
    errors : {"raise", "report"}
        ``"raise"``: the first query that cannot be matched raises AudioError with its reason (the
        queries after it are not matched). ``"report"``: it gets a result whose ``error`` holds the
        reason, and the rest go on (see :func:`match_queries`, which also yields as it goes).
    evidence : Evidence
        Shifts, speeds and what a vote counts (:data:`ROBUST` by default).

    Returns
    -------
    results : list of MatchResult, in the order of ``paths``

    Raises
    ------
    NotFound
        If the database holds no fingerprints yet.
    AudioError
        With ``errors="raise"``, if a query cannot be read, decoded or gives no hashes.
    """
    if errors not in ("raise", "report"):
        raise ParameterError(f"errors={errors!r} must be 'raise' or 'report'")
    results = []
    for result in match_queries(store, paths, zone=zone, top_k=top_k, rule=rule, method=method, evidence=evidence):
        if result.error is not None and errors == "raise":
            raise AudioError(result.error)
        results.append(result)
    return results
