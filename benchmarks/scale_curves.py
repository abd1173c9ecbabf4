"""The catalogue's growth curves and what they predict at 100,000 and 1,000,000 recordings (issue 25).

Reads the tables of the result files of ``catalogue_scale.py`` (``benchmarks/results/*-scale-catalogue-N.md``:
ingest, size, match), draws each cost against the number of stored recordings into one figure
(``--plot``, a PNG for docs/scale.md) and prints a prediction table: a straight line through the origin
for what grows with the catalogue (postings, database size: per recording), and a power law fitted to
the per-file duplicate check and a negative's latency at the largest size measured, scaled by the
catalogue's size on one database (a key's list grows with it), and the shards of a cluster that keep
each at the largest size measured. The latencies were taken on a machine shared with other jobs.

Usage::

    python benchmarks/scale_curves.py --plot docs/scale-growth.png
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
PREDICT_AT = (100_000, 1_000_000)


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of ``text``: its header cells and its rows' cells."""
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    found, lines = [], text.splitlines()
    for i in range(len(lines) - 1):
        starts = lines[i].startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
        if starts and re.match(r"^\|[-:| ]+\|$", lines[i + 1].strip()):
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            found.append((cells(lines[i]), [cells(line) for line in lines[i + 2:end]]))
    return found


def number(cell: str) -> float:
    return float(re.sub(r"[^0-9.]", "", cell.split()[0]))


def measurements(folder: Path) -> dict[str, dict[int, dict[str, float]]]:
    """Per quantity, per stored size: the figures of every scale-catalogue-N result file."""
    out: dict[str, dict[int, dict[str, float]]] = {"ingest": {}, "size": {}, "match": {}, "load": {}}
    for path in sorted(folder.glob("*-scale-catalogue-*.md")):
        if not re.search(r"-scale-catalogue-\d+\.md$", path.name):
            continue
        text = path.read_text()
        load = re.search(r"load average (?:was |near |of )?~?([\d.]+)", text)
        size = int(re.search(r"-scale-catalogue-(\d+)\.md$", path.name).group(1))  # type: ignore[union-attr]
        out["load"][size] = {"load": float(load.group(1)) if load else math.nan}
        for header, rows in tables(text):
            joined = " ".join(header)
            for row in rows:
                if not row or not re.match(r"^[\d,]+$", row[0]):
                    continue
                n = int(number(row[0]))
                if "probe files" in joined:
                    out["ingest"][n] = {"with": number(row[2]), "empty": number(row[3])}
                elif "bytes/posting" in joined:
                    out["size"][n] = {"postings": number(row[1]), "bytes_per_posting": number(row[2]),
                                      "gb": number(row[3])}
                elif "median" in joined and len(row) >= 6:
                    kind = row[1]
                    out["match"].setdefault(n, {})[f"{kind} p50"] = number(row[-2])
                    out["match"][n][f"{kind} p95"] = number(row[-1])
                    out["match"][n][f"{kind} outcome"] = number(row[3]) if row[3][0].isdigit() else math.nan
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, help="write the growth curves to this PNG")
    args = parser.parse_args()
    m = measurements(args.results)
    sizes = sorted(m["size"])
    n = np.array(sizes, dtype=float)
    gb = np.array([m["size"][k]["gb"] for k in sizes])
    postings = np.array([m["size"][k]["postings"] for k in sizes])
    per_recording_gb = float(np.sum(gb * n) / np.sum(n * n))
    per_recording_postings = float(np.sum(postings * n) / np.sum(n * n))
    ingest_n = np.array(sorted(m["ingest"]), dtype=float)
    with_rate = np.array([m["ingest"][int(k)]["with"] for k in ingest_n])
    empty_rate = np.array([m["ingest"][int(k)]["empty"] for k in ingest_n])
    # Seconds the check adds per file: 1/with - 1/empty.
    check_s = np.maximum(1 / with_rate - 1 / empty_rate, 1e-3)
    match_n = np.array(sorted(k for k in m["match"] if "negative p50" in m["match"][k]), dtype=float)
    negative_p50 = np.array([m["match"][int(k)]["negative p50"] for k in match_n])
    print("| stored | postings | database (GB) | bytes/posting | ingest with / without the check (files/s) | negative p50 / p95 (ms) |")
    print("|---:|---:|---:|---:|---:|---:|")
    def shown(figures: dict[str, float], *names_and_formats: tuple[str, str]) -> str:
        if not all(name in figures for name, _ in names_and_formats):
            return ""
        return " / ".join(format(figures[name], spec) for name, spec in names_and_formats)

    for k in sorted(set(sizes) | set(m["ingest"]) | set(m["match"])):
        s, i, q = m["size"].get(k, {}), m["ingest"].get(k, {}), m["match"].get(k, {})
        print(f"| {k:,} | {shown(s, ('postings', ',.0f'))} | {shown(s, ('gb', '.2f'))} | "
              f"{shown(s, ('bytes_per_posting', '.1f'))} | {shown(i, ('with', '.2f'), ('empty', '.2f'))} | "
              f"{shown(q, ('negative p50', '.0f'), ('negative p95', '.0f'))} |")
    # What grows with the catalogue on one database: postings and bytes in proportion; a lookup's work
    # with the length of each key's list, which is the catalogue's size over the number of distinct keys
    # (the measured postings per query grow in proportion, docs/scale.md). The latencies above were
    # taken under different loads, so the prediction scales the largest measured size's, not a fit.
    top_ingest, top_match = int(ingest_n[-1]), int(match_n[-1])
    check_at_top = float(check_s[-1])
    negative_at_top = float(negative_p50[-1])
    print(f"\nper recording: {per_recording_postings:,.0f} postings, {1000 * per_recording_gb:.2f} MB. "
          f"At {top_ingest:,}: the duplicate check adds {check_at_top:.2f} s a file; at {top_match:,} a negative "
          f"takes {negative_at_top:.0f} ms (machine shared with other jobs)")
    print("\n| stored | postings | one database: size (GB) | one database: check per file (s), negative (ms) "
          f"| cluster of {top_match:,}-recording shards: shards, size per shard (GB) |")
    print("|---:|---:|---:|---:|---:|")
    for target in PREDICT_AT:
        shards = math.ceil(target / top_match)
        print(f"| {target:,} | {per_recording_postings * target / 1e9:.2f} G | {per_recording_gb * target:,.0f} | "
              f"{check_at_top * target / top_ingest:.1f} s, {negative_at_top * target / top_match:,.0f} ms | "
              f"{shards}, {per_recording_gb * target / shards:.0f} |")
    if args.plot:
        plot(args.plot, m, per_recording_gb)


def plot(path: Path, m: dict[str, dict[int, dict[str, float]]], per_recording_gb: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    sizes = sorted(m["size"])
    ax = axes[0][0]
    ax.plot(sizes, [m["size"][k]["gb"] for k in sizes], "o-", label="measured")
    ax.plot([0, max(sizes)], [0, per_recording_gb * max(sizes)], ":", label=f"{1000 * per_recording_gb:.2f} MB a recording")
    ax2 = ax.twinx()
    ax2.plot(sizes, [m["size"][k]["bytes_per_posting"] for k in sizes], "s--", color="tab:green")
    ax2.set_ylabel("bytes per posting", color="tab:green")
    ax2.set_ylim(50, 65)
    ax.set(title="Database size", xlabel="stored recordings", ylabel="GB")
    ax.legend(loc="upper left")
    ax = axes[0][1]
    ingest = sorted(m["ingest"])
    ax.plot(ingest, [m["ingest"][k]["with"] for k in ingest], "o-", label="with the duplicate check")
    ax.plot(ingest, [m["ingest"][k]["empty"] for k in ingest], "s--", label="same files, empty database")
    ax.set(title="Ingest (100 files of 30 s, 2 workers)", xlabel="stored recordings", ylabel="files/s")
    ax.legend()
    ax = axes[1][0]
    match = sorted(m["match"])
    for kind, style in (("negative", "o-"), ("clean 10 s", "s-"), ("degraded 10 s", "^-")):
        xs = [k for k in match if f"{kind} p50" in m["match"][k]]
        ax.plot(xs, [m["match"][k][f"{kind} p50"] for k in xs], style, label=f"{kind} median")
        ax.plot(xs, [m["match"][k][f"{kind} p95"] for k in xs], style.replace("-", ":"), alpha=0.5, label=f"{kind} p95")
    for k in match:
        if not math.isnan(m["load"].get(k, {}).get("load", math.nan)):
            ax.annotate(f"load {m['load'][k]['load']:g}", (k, m["match"][k]["negative p50"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.set(title="Query latency with fingerprinting (machine shared with other jobs)", xlabel="stored recordings",
           ylabel="ms")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    for kind, style in (("degraded 10 s", "o-"), ("degraded 5 s", "s-"), ("clean 10 s", "^-"), ("clean 5 s", "v-")):
        xs = [k for k in match if f"{kind} outcome" in m["match"][k]]
        ax.plot(xs, [m["match"][k][f"{kind} outcome"] for k in xs], style, label=kind)
    ax.set(title="Excerpts named (top-1, default rule)", xlabel="stored recordings", ylabel="%")
    ax.legend()
    for row in axes:
        for a in row:
            a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
