"""The seed's own method as a recognition baseline: the notebook's pickle index + the offset-histogram vote.

The seed notebook builds the index only (``hash -> [packed (track_id, t_anchor)]`` per zone, pickled).
This script builds that pickle with the seed port (``tests/seed_port.py``, the notebook's loops) from the
clips given, fingerprints each query with the same port (whole file), looks every query hash up in the
pickle's dicts, counts ``(track, t_anchor - t_query)`` bins with a ``collections.Counter`` and takes the
argmax track (the notebook has no "no match" rule, so every query names a track). Per zone, and ``all``
(the four zones' votes pooled). It shares no matching code with fpstore, only the summary formatting.

Usage::

    python benchmarks/seed_baseline.py /tmp/indb /work/corpus/dev/queries/queries.csv \\
        --label degradation --label length_s --pickle /tmp/seed_hash_db.pkl
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import seed_port  # noqa: E402

from fpstore.evaluate import format_summary, read_queries, summarise  # noqa: E402


def seed_vote(index: dict[int, list[int]], pairs: list[tuple[int, int]]) -> Counter[tuple[int, int]]:
    """Votes per (track_id, offset) bin for the query's (hash, t_query) pairs, over one zone's index."""
    bins: Counter[tuple[int, int]] = Counter()
    for h, t_query in pairs:
        for packed in index.get(h, ()):
            track_id, t_anchor = seed_port.unpack_posting(packed)
            bins[(track_id, t_anchor - t_query)] += 1
    return bins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", type=Path, help="folder of the database clips (the in_db=1 ones)")
    parser.add_argument("queries_csv", type=Path)
    parser.add_argument("--label", action="append", dest="labels")
    parser.add_argument("--pickle", type=Path, default=Path("seed_hash_db.pkl"))
    args = parser.parse_args()
    paths = sorted(str(p) for p in args.clips.iterdir() if p.suffix.lower() in (".mp3", ".wav"))
    db = seed_port.build_seed_pickle(paths, str(args.pickle))
    names = {track_id: os.path.splitext(name)[0] for track_id, name in db["tracks"].items()}
    queries, labels = read_queries(args.queries_csv, args.labels)
    zones = [z["name"] for z in seed_port.SEED_ZONES]
    rows = []
    for query in queries:
        pairs_by_zone = seed_port.seed_pairs_of_file(str(query.path), duration=None)
        votes_by_zone = {zone: seed_vote(db["index"][zone], pairs_by_zone[zone]) for zone in zones}
        votes_by_zone["all"] = sum(votes_by_zone.values(), Counter())
        for zone, bins in votes_by_zone.items():
            best = max(bins.items(), key=lambda item: (item[1], -item[0][0]), default=None)
            named = names[best[0][0]] if best else ""
            truth = os.path.splitext(query.true_track)[0]
            if not truth:
                outcome = "false_positive" if named else "true_negative"
            else:
                outcome = "correct" if named == truth else "wrong"
            rows.append({"zone": zone, "true_track": query.true_track, **query.labels, "outcome": outcome,
                         "best_is_true": int(bool(truth) and named == truth)})
    print(format_summary(summarise(rows, labels), labels))


if __name__ == "__main__":
    main()
