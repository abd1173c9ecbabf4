"""The client's vote on synthetic postings: the CPU a query's four looks spend pairing, counting and scoring.

The query's fingerprints are real (an audio file, fingerprinted as ``fpstore match`` does for its four
looks: as it is, four shifts, the six other speeds unshifted, the whitened look); the postings are drawn
at random, Poisson(``--per-key``) per key, with track ids in ``1 .. --tracks`` and anchors in
``0 .. --frames`` (about 30 per key and 10,000 tracks is what a negative fetched from the 10,000-recording
catalogue: 660,000 postings for 22,000 keys). No database: the lookups are answered in memory, so the
figure is the vote's arithmetic alone (:func:`fpstore.matching.ranking.match_fingerprint` after the lookup:
keys, pairs, distinct anchors, the vote, the tracks null). Prints the CPU per query (``time.process_time``,
the least of ``--repeat`` rounds) and a digest of every look's ranking, which must not change between two
versions that claim the same answers.

Usage::

    python benchmarks/vote_cost.py /work/corpus/devlarge/hard/d01020.wav --per-key 30
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import time
import warnings
from pathlib import Path

import numpy as np

from fpstore.matching.ranking import match_fingerprint
from fpstore.signal.audio import load_audio
from fpstore.signal.params import FingerprintParams
from fpstore.signal.query_peaks import WHITENED_LOOK
from fpstore.signal.variants import SpeedVariant, picked_variant, speed_variant


class MemoryLookup:
    """Posting lists drawn at random per query (seeded by its key count), and every track's length."""

    def __init__(self, per_key: float, tracks: int, frames: int) -> None:
        self.per_key, self.tracks, self.frames = per_key, tracks, frames

    def postings(self, key_zones: np.ndarray, key_hashes: np.ndarray,
                 caps: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(int(key_hashes.size))
        key = np.repeat(np.arange(key_hashes.size), rng.poisson(self.per_key, key_hashes.size))
        return (key_zones[key].astype(np.int64), key_hashes[key].astype(np.int64),
                rng.integers(1, self.tracks + 1, key.size), rng.integers(0, self.frames, key.size))

    def track_frames(self, track_ids: np.ndarray) -> np.ndarray:
        return np.full(len(track_ids), self.frames, np.int64)


class MemoryCatalogue:
    """What the vote reads of a catalogue: zone ids, posting lists, track lengths and names."""

    def __init__(self, lookup: MemoryLookup, params: FingerprintParams) -> None:
        self.lookup = lookup
        self._zone_ids = {zone.name: i + 1 for i, zone in enumerate(params.zones)}
        self.tracks = self

    def zone_ids(self) -> dict[str, int]:
        return self._zone_ids

    def names(self, track_ids: list[int]) -> dict[int, str]:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", type=Path, help="an audio file, fingerprinted as a query")
    parser.add_argument("--per-key", type=float, default=30.0, help="mean postings per key")
    parser.add_argument("--tracks", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=2600, help="frames per track (60 s)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    params = FingerprintParams()
    y = load_audio(args.query, sample_rate=params.sample_rate, duration_s=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = speed_variant(y, params, 1.0, 1)
        looks: list[tuple[list[SpeedVariant], int]] = [
            ([first], 0), ([speed_variant(y, params, 1.0, 4, first)], 1),
            ([speed_variant(y, params, speed, 1) for speed in (0.99, 1.01, 0.98, 1.02, 0.97, 1.03)], 1),
            ([picked_variant(y, params, 4, (WHITENED_LOOK,))], 0)]
    store = MemoryCatalogue(MemoryLookup(args.per_key, args.tracks, args.frames), params)

    def run() -> list[object]:
        return [match_fingerprint(store, variants, params, tolerance=tolerance, tests=9)
                for variants, tolerance in looks]

    answers = run()
    rounds = []
    for _ in range(args.repeat):
        started = time.process_time()
        run()
        rounds.append(time.process_time() - started)
    digest = hashlib.sha1(pickle.dumps([(a.candidates, a.speed, a.n_query_hashes) for a in answers])).hexdigest()[:12]
    print(f"vote CPU per query (4 looks): {1000 * min(rounds):.0f} ms (least of {args.repeat}); answers {digest}")


if __name__ == "__main__":
    main()
