"""Write paths in isolation: binary COPY of real postings into a plain (zone, hash)-indexed table, unsorted
or sorted by (zone, hash), vs COPY into an unindexed staging table with the index built after the load;
into an empty table and into one already holding ~10 M postings (replicated server-side).

Usage: python benchmarks/write_paths.py  (throwaway embedded PostgreSQL; real-music clips of
/work/corpus/dev/clips30, replicated: identical postings deduplicate in the B-tree, so the bytes figures
here are lower than for distinct music; see benchmarks/ingest.py --full-folder for those).
"""

import atexit
import glob
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import psycopg

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
warnings.simplefilter("ignore")
from fpstore.db.embedded import EmbeddedServer
from fpstore.db.pgcopy import COPY_HEADER, COPY_TRAILER, encode_postings
from fpstore.signal.fingerprint import fingerprint_file
from fpstore.signal.hashing import hash_keys
from fpstore.signal.params import FingerprintParams

params = FingerprintParams()
fps = []


def arrays(fp, tid):
    z = []
    h = []
    t = []
    for i, (name, zh) in enumerate(fp.zones.items(), 1):
        z.append(np.full(len(zh.hashes), i, np.int16))
        h.append(hash_keys(zh.hashes))
        t.append(zh.t_anchor_frames)
    z = np.concatenate(z)
    h = np.concatenate(h)
    t = np.concatenate(t)
    return z, h, np.full(len(h), tid, np.int32), t


def payload(first_tid, n_tracks, sort):
    parts = [arrays(fps[i % len(fps)], first_tid + i) for i in range(n_tracks)]
    z, h, tr, t = (np.concatenate(c) for c in zip(*parts))
    if sort:
        o = np.lexsort((h, z))
        z, h, tr, t = z[o], h[o], tr[o], t[o]
    return encode_postings(z, h, tr, t), len(h)


def copy(cur, table, data):
    with cur.copy(f"COPY {table} (zone,hash,track_id,t_anchor) FROM STDIN (FORMAT BINARY)") as c:
        c.write(COPY_HEADER)
        c.write(data)
        c.write(COPY_TRAILER)


def main():
    fps.extend(fingerprint_file(p, params) for p in sorted(glob.glob("/work/corpus/dev/clips30/*.mp3")))
    folder = tempfile.mkdtemp(prefix="fpstore-write-pg-")
    os.chmod(folder, 0o755)  # the server's own user must reach it
    atexit.register(shutil.rmtree, folder, True)
    with EmbeddedServer(pathlib.Path(folder)) as server:
        url = server.url.replace("postgresql+psycopg", "postgresql")
        conn = psycopg.connect(url, autocommit=True)
        cur = conn.cursor()

        def fresh():
            cur.execute("DROP TABLE IF EXISTS hashes CASCADE")
            cur.execute("DROP TABLE IF EXISTS stage CASCADE")
            cur.execute(
                "CREATE TABLE hashes (zone smallint not null, hash int not null, track_id int not null, t_anchor int not null)"
            )
            cur.execute("CREATE INDEX hashes_zone_hash ON hashes (zone, hash)")

        def fill(n_rows):
            base = payload(10**6, len(fps), False)[0]
            copy(cur, "hashes", base)
            n = len(base) // 32
            k = 1
            while n * (k + 1) <= n_rows:
                cur.execute(
                    "INSERT INTO hashes SELECT zone, hash, track_id + %s, t_anchor FROM hashes WHERE track_id < %s",
                    (k * 100, 10**6 + 100),
                )
                k += 1
            cur.execute("VACUUM ANALYZE hashes")
            cur.execute("SELECT count(*) FROM hashes")
            return cur.fetchone()[0]

        def size():
            cur.execute("SELECT pg_table_size('hashes'), pg_indexes_size('hashes'), (SELECT count(*) FROM hashes)")
            return cur.fetchone()

        batches = 8
        per = 40  # 8 batches of 40 tracks ~ 1M postings each
        for prefill in (0, 10_000_000):
            for mode in ("incremental", "incremental_sorted", "staged"):
                fresh()
                have = fill(prefill) if prefill else 0
                s0 = size()
                data = [payload(2 * 10**6 + b * per, per, mode != "incremental") for b in range(batches)]
                rows = sum(n for _, n in data)
                t = time.perf_counter()
                if mode == "staged":
                    cur.execute("CREATE TABLE stage (LIKE hashes)")
                    for d, _ in data:
                        copy(cur, "stage", d)
                    cur.execute("CREATE INDEX ON stage (zone, hash)")
                else:
                    for d, _ in data:
                        with conn.transaction():
                            copy(cur, "hashes", d)
                dt = time.perf_counter() - t
                s1 = size()
                if mode == "staged":
                    cur.execute("SELECT pg_table_size('stage'), pg_indexes_size('stage')")
                    a, b = cur.fetchone()
                    bpp = (a + b) / rows
                else:
                    bpp = (s1[0] + s1[1] - s0[0] - s0[1]) / rows
                print(
                    f"prefill={have:>9} {mode:20s} rows={rows} {rows / dt / 1e3:8.0f} k rows/s  bytes/posting(new)={bpp:.1f} total bpp={(s1[0] + s1[1]) / s1[2] if s1[2] else float('nan'):.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
