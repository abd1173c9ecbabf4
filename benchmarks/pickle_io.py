"""Time `import_seed_pickle` and `export_seed_pickle` on the notebook pickle of the 14 corpus clips and on a
synthetic pickle of about 1 M postings; prints a table.

Run:  python benchmarks/pickle_io.py --db "postgresql://fpstore@/DBNAME?host=/tmp/devpg"
(each case drops and re-creates the fpstore tables in that database: give it a scratch database).
The corpus pickle is built once with tests/seed_port.build_seed_pickle and cached in --work.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import seed_port  # noqa: E402

from fpstore.db.catalogue import open_store  # noqa: E402
from fpstore.pickle_io import export_seed_pickle, import_seed_pickle  # noqa: E402


def synthetic_pickle(path: Path, n_postings: int, n_tracks: int = 200, seed: int = 6) -> None:
    """A notebook-shaped database with random hashes: ~n_postings postings over the four seed zones."""
    rng = np.random.default_rng(seed)
    index = {}
    per_zone = n_postings // len(seed_port.SEED_ZONES)
    for zone in seed_port.SEED_ZONES:
        hashes = rng.integers(0, 2**32, per_zone, dtype=np.uint64)
        hashes[: per_zone // 5] = hashes[per_zone // 5: 2 * (per_zone // 5)]  # some shared hashes
        postings = (rng.integers(0, n_tracks, per_zone) << 16) | rng.integers(0, 650, per_zone)
        lists: dict[int, list[int]] = defaultdict(list)
        for h, p in zip(hashes.tolist(), postings.tolist()):
            lists[h].append(p)
        index[zone["name"]] = {h: sorted(v) for h, v in lists.items()}
    db = {"meta": {"Fs": 22050, "N": 2048, "H": 1024, "duration": 30.0, "bin_max": 1024,
                   "peak_params": {"dist_freq": 12, "dist_time": 6, "thresh": 0.01},
                   "zones": seed_port.SEED_ZONES, "top_k_targets": 5},
          "tracks": {i: f"synthetic_{i:04d}.wav" for i in range(n_tracks)}, "index": index}
    with open(path, "wb") as handle:
        pickle.dump(db, handle, protocol=pickle.HIGHEST_PROTOCOL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--work", default="/tmp/fpstore-bench-pickle")
    parser.add_argument("--clips", default="/work/corpus/dev/clips30")
    parser.add_argument("--postings", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    corpus = work / "corpus14.pkl"
    clips = sorted(Path(args.clips).glob("*.mp3"))
    if clips and not corpus.exists():
        seed_port.build_seed_pickle([str(p) for p in clips], str(corpus))
    if corpus.exists():
        cases.append(("corpus clips30", corpus))
    synthetic = work / f"synthetic_{args.postings}.pkl"
    if not synthetic.exists():
        synthetic_pickle(synthetic, args.postings)
    cases.append(("synthetic", synthetic))

    print(f"{'case':<16} {'tracks':>6} {'postings':>10} {'MB':>6} {'step':<8} "
          f"{'read s':>7} {'arrays s':>8} {'write s':>7} {'total s':>7} {'postings/s':>11}")
    for name, path in cases:
        with open_store(args.db) as store:
            store.downgrade("base")
            store.upgrade()
            started = time.perf_counter()
            imported = import_seed_pickle(store, path)
            import_s = time.perf_counter() - started
            started = time.perf_counter()
            exported = export_seed_pickle(store, work / "exported.pkl", overwrite=True)
            export_s = time.perf_counter() - started
        size_mb = os.path.getsize(path) / 1e6
        for step, summary, total in (("import", imported, import_s), ("export", exported, export_s)):
            s = summary.seconds
            print(f"{name:<16} {summary.n_tracks:>6} {summary.postings:>10,} {size_mb:>6.1f} {step:<8} "
                  f"{s['read']:>7.2f} {s['arrays']:>8.2f} {s['write']:>7.2f} {total:>7.2f} "
                  f"{summary.postings / total:>11,.0f}")


if __name__ == "__main__":
    main()
