"""An experiment for issue 11: "no match" rules measured on held-out negatives as the catalogue grows.

The Poisson bound behind ``score`` (:mod:`fpstore.matching.significance`) assumes chance votes spread evenly
over the offset bins; real music's do not (repeated bars align by chance), so at ``alpha = 1e-3`` it
names a track for many negatives. This script measures it against two nulls computed per query from
the votes of the tracks that did *not* match:

- the *gap* rule (not in fpstore): when the query is in no stored track, the best votes of the tracks
  are all chance maxima, and for maxima of that kind (the Gumbel domain) the normalised spacings
  ``k * (M_k - M_(k+1))`` of the ordered votes ``M_1 >= M_2 >= ...`` are independent exponentials of
  one scale ``beta``. The gap ``M_1 - M_2`` is then one more such exponential, and with ``beta``
  estimated from the ``m = K - 2`` spacings below it, ``(M_1 - M_2) / beta_hat`` follows ``F(2, 2m)``:

      p = (1 + (M_1 - M_2) / (m * beta_hat)) ** -m,    beta_hat = max(mean(spacings), 0.5)

  one test per query (times the tests the evidence makes: its speed factors, and its shifts);
- the *tracks* null, fpstore's ``--null tracks`` (:func:`fpstore.matching.significance.tracks_null_log10_p`),
  when ``--null tracks`` is given: the score column is then that null's.

The script ingests the ``in_db=1`` clips of a corpus into an embedded database (kept in ``--workdir``),
matches every query of the given sets, never accepting (so every shift and speed factor is tried and
the best score kept), with ``top_k = K``, and prints, per query set and per degradation and length,
the share of positives named correctly and of negatives named at all, under the score's null and the
gap rule at each alpha. For a negative that is exactly ``fpstore match``'s decision; for a positive
``fpstore match`` names the first step that passes, which can differ from the best-scoring one.

    python benchmarks/spacing_rule.py --corpus ../corpus/devlarge --set queries --set hard --zone all
    python benchmarks/spacing_rule.py --corpus ../corpus/devlarge --set queries --set hard --evidence robust \
        --null tracks --tracks 10240 --negatives-only --workdir /tmp/spacing_10k

``--tracks N`` first adds transposed replicas of the clips (as ``benchmarks/cluster.py`` does) until
the catalogue holds about N tracks: the held-out negatives then meet N tracks' chance votes. Each
replica gets its source's ``tracks`` row under a name of its own (``replica r of <source>``), so the
chance models see its length and naming it is a wrong answer. ``--negatives-only`` skips the positives.

Nothing here but the tracks null is used by ``fpstore match``: it is the measurement a rule has to pass first.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
from cluster import fill_with_replicas

from fpstore.db.catalogue import open_store
from fpstore.db.embedded import EmbeddedServer
from fpstore.db.store import Store
from fpstore.ingest import ingest
from fpstore.matching.evidence import PLAIN, ROBUST, DecisionRule
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import prepare_query

ALPHAS = (1e-2, 1e-3, 1e-4)


def spacing_p(votes_desc: np.ndarray, n_tests: int = 1) -> float:
    """The gap rule's p of the best of ``votes_desc`` (the tracks' best votes, best first)."""
    if votes_desc.size < 4:
        return 1.0
    spacings = np.arange(2, votes_desc.size) * (votes_desc[1:-1] - votes_desc[2:])
    m = spacings.size
    beta_hat = max(float(spacings.mean()), 0.5)
    return min(1.0, n_tests * (1 + (votes_desc[0] - votes_desc[1]) / (m * beta_hat)) ** -m)


def catalogue_clips(corpus: Path, workdir: Path) -> Path:
    """A folder of links to the corpus's ``in_db=1`` clips (their queries are positives, the others' negatives)."""
    clips = workdir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    with open(corpus / "tracks.csv") as table:
        for row in csv.DictReader(table):
            link = clips / Path(row["clip_file"]).name
            if row["in_db"] == "1" and not link.exists():
                link.symlink_to((corpus / row["clip_file"]).resolve())
    return clips


def catalogue_size(store: Store) -> int:
    """Distinct track ids in ``hashes`` (replicas included)."""
    with store.raw() as conn:
        row = conn.execute("SELECT count(DISTINCT track_id) FROM hashes").fetchone()
    return int(row[0]) if row else 0


def share(flags: list[bool]) -> str:
    return f"{100 * np.mean(flags):.1f}" if flags else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a corpus folder (tracks.csv, clips30/, query sets)")
    parser.add_argument("--set", dest="sets", action="append", required=True, help="query set folder(s) in the corpus")
    parser.add_argument("--zone", default="Fsmall_Tlong", help="zone that votes, or 'all'")
    parser.add_argument("--evidence", choices=("plain", "robust"), default="plain")
    parser.add_argument("--k", type=int, default=30, help="tracks' best votes read per query (K)")
    parser.add_argument("--tracks", type=int, help="replicate the clips to about this many tracks first")
    parser.add_argument("--null", choices=("poisson", "tracks"), default="poisson", help="chance model of the score")
    parser.add_argument("--negatives-only", action="store_true", help="match the negatives only")
    parser.add_argument("--offset-tolerance", type=int, default=0, help="Evidence.tolerance (frames)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fpstore-spacing-rule"))
    args = parser.parse_args()
    evidence = dataclasses.replace({"plain": PLAIN, "robust": ROBUST}[args.evidence], tolerance=args.offset_tolerance)
    n_tests = evidence.tests
    never = DecisionRule(min_votes=2**31 - 1, null=args.null)  # every shift and speed is tried, nothing cut short
    with EmbeddedServer(args.workdir / "server") as server, open_store(server.url) as store:
        if store.schema_revision() is None or store.tracks.count() == 0:
            ingest(store, catalogue_clips(args.corpus, args.workdir), jobs=2)
            if args.tracks:
                fill_with_replicas(store, args.tracks)
        params = store.params(duration_s=None)
        print(f"{catalogue_size(store)} tracks; zone {args.zone}; evidence {args.evidence} ({n_tests} test(s) per "
              f"query); K = {args.k}\n")
        print("| set | degradation | length (s) | positives | argmax | " +
              " | ".join(f"{null} {alpha:g}" for null in (args.null, "gap") for alpha in ALPHAS) +
              " | negatives | " + " | ".join(f"FP {null} {alpha:g}" for null in (args.null, "gap") for alpha in ALPHAS)
              + " |\n|---|---|---|---:|---:|" + "---:|" * (len(ALPHAS) * 2) + "---:|" + "---:|" * (len(ALPHAS) * 2))
        for query_set in args.sets:
            groups: dict[tuple[str, str], list[tuple[bool, bool, float, float]]] = defaultdict(list)
            with open(args.corpus / query_set / "queries.csv") as table:
                for row in csv.DictReader(table):
                    if args.negatives_only and row["true_track"]:
                        continue
                    prepared = prepare_query(args.corpus / query_set / row["file"], params, evidence)
                    if isinstance(prepared, str):
                        print(f"  failed: {prepared}")
                        continue
                    result = match_prepared(store, prepared, params, evidence=evidence, zone=args.zone, top_k=args.k,
                                            rule=never)
                    best = result.best
                    right = best is not None and bool(best.file_name) and Path(best.file_name).stem == row["true_track"]
                    votes = np.array([c.votes for c in result.candidates], dtype=np.int64)
                    by_score = 10 ** -best.score if best is not None else 1.0
                    entry = (bool(row["true_track"]), right, by_score, spacing_p(votes, n_tests))
                    for key in ((row["degradation"], row["length_s"]), ("*", "*")):
                        groups[key].append(entry)
            for (degradation, length), entries in sorted(groups.items()):
                positives = [e for e in entries if e[0]]
                negatives = [e for e in entries if not e[0]]
                named = [share([right and p[i] < alpha for _, right, *p in positives]) for i in (0, 1) for alpha in ALPHAS]
                false = [str(sum(p[i] < alpha for _, _, *p in negatives)) for i in (0, 1) for alpha in ALPHAS]
                print(f"| {query_set} | {degradation} | {length} | {len(positives)} | "
                      f"{share([right for _, right, _, _ in positives])} | " + " | ".join(named) +
                      f" | {len(negatives)} | " + " | ".join(false) + " |", flush=True)


if __name__ == "__main__":
    main()
