"""The answer for one query: ranked :class:`Candidate` tracks and the :class:`MatchResult` that names one or none.

Pure values: nothing here reads the database.

Conventions
-----------
- ``offset_frames`` are STFT frames; ``offset_s = offset_frames * hop_length / sample_rate``.
- Ranking: votes descending, then track id ascending. The runner-up is the best *other* track.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One ranked track.

    Attributes
    ----------
    track_id : int
    file_name : str
    votes : int
        Aligned hashes in the track's fullest offset bin.
    offset_frames : int
        Where the query starts in the track, in frames.
    offset_s : float
        The same, in seconds.
    score : float
        ``-log10 p`` >= 0: ``p`` bounds the probability that chance fills some tested
        ``(track, offset)`` bin with ``votes`` pairs (:func:`fpstore.matching.significance.chance_scores`),
        rounded to 4 decimals (the Python and the SQL vote then give the same number).
    """

    track_id: int
    file_name: str
    votes: int
    offset_frames: int
    offset_s: float
    score: float


@dataclass(frozen=True)
class MatchResult:
    """The answer for one query.

    Attributes
    ----------
    query : str
        File name or label of the query (``"<stdin>"`` for standard input).
    zone : str
        Zone that voted (or ``"all"``).
    candidates : list of Candidate
        Best first, at most ``top_k``.
    n_query_hashes : int
        Hashes the query sent.
    match : Candidate or None
        ``candidates[0]`` if the decision rule accepts it, else None ("no match").
    confidence : float
        ``1 - runner_up_votes / best_votes`` in [0, 1]; 0 when nothing matched. The runner-up counts
        even when ``top_k=1`` leaves it out of ``candidates``.
    method : str
        ``"python"`` or ``"sql"``.
    error : str or None
        Why the query could not be matched (one line naming the file, the reasons ingest gives); the
        result then has no candidates. None for every answered query.
    speed : float
        Speed factor the answer was found at (1.0 unless :class:`Evidence` tried others and one of
        them scored best): the query played that many times faster than the stored recording.
    """

    query: str
    zone: str
    candidates: list[Candidate]
    n_query_hashes: int
    match: Candidate | None
    confidence: float
    method: str = field(default="python")
    error: str | None = None
    speed: float = 1.0

    @property
    def best(self) -> Candidate | None:
        """Top candidate whether or not it was accepted."""
        return self.candidates[0] if self.candidates else None

    @property
    def score(self) -> float:
        """The top candidate's chance score ``-log10 p`` (0 without candidates)."""
        return self.candidates[0].score if self.candidates else 0.0

    @property
    def runner_up(self) -> Candidate | None:
        """Second-ranked track, if any was listed (``top_k >= 2``)."""
        return self.candidates[1] if len(self.candidates) > 1 else None

    @classmethod
    def failed(cls, query: str, zone: str, reason: str, method: str = "python") -> MatchResult:
        """The result of a query that could not be matched: no candidates, ``error=reason``."""
        return cls(query, zone, [], 0, None, 0.0, method, reason)

    def as_json(self) -> dict[str, Any]:
        """The answer as plain JSON values: what ``fpstore match --json`` prints and ``POST /v1/match`` returns.

        A failed query gives ``query``, ``zone`` and ``error`` only; an answered one ``query, zone,
        n_query_hashes, match`` (a :class:`Candidate` as a dict, or None for "no match"), ``score``,
        ``confidence`` (4 decimals), ``speed`` and ``candidates``.
        """
        if self.error is not None:
            return {"query": self.query, "zone": self.zone, "error": self.error}
        return {
            "query": self.query, "zone": self.zone, "n_query_hashes": self.n_query_hashes,
            "match": None if self.match is None else dataclasses.asdict(self.match),
            "score": self.score, "confidence": round(self.confidence, 4), "speed": self.speed,
            "candidates": [dataclasses.asdict(c) for c in self.candidates],
        }
