"""Spending a negative's lookups otherwise: each speed's own look and other last looks, replayed (issue 27).

``record`` matches, with ``tests=1`` (raw scores), the queries of ``look_scores.py record``'s JSON lines
that reach the speeds step under the default (the query as it is and its pooled shifts named nothing)
with:

- ``screen@S``: the query at speed ``S`` unshifted, ±1 frame (the screen's look at one factor; the
  default's screen takes the best of its six); ``at@S``: at speed ``S`` at the four shifts, ±1 frame
  (recorded when ``screen@S`` scored at least 1 raw, the only case a screen can pick it);
- ``dr{a}w{n}t0``: the seed's picking on the dereverberated spectrogram (``QueryPicking(decay=a)``: each
  bin less the largest of its earlier magnitudes decayed by ``a`` per frame), at ``n`` shifts;
  with ``--dereverberated-variants``, ``dr0.5x{r}w2t0`` (only the peaks whose rise is more than ``r``
  of their magnitude) and ``dr0.5k{k}w2t0`` (``k`` targets per anchor; ``k4`` is the default's look);
- ``r5q25w{n}t0``: the default's whitened look at ``n`` shifts; ``s50c2w2t0``: the subtracted floor of
  ``look_merges.py`` at two shifts.

With ``--cheaper``: the screen with 3 or 4 targets per anchor (``screen{k}@S``, and the at-looks it may
pick that were not recorded), the whitened look with 4 (``r5q25k4w4t0``) and the dereverberated look at
one shift (``dr0.5k{k}w1t0``).

``simulate`` replays the decision for schemes of looks (``look_merges.py``'s replay, with the speeds
step built from the factors a scheme keeps; ``default (9)`` gives ``fpstore eval``'s figures), prints
every cell, then one line per scheme: the hard set, the pink-noise and room cells, the cells lower
than the default, and the keys (the hashes a negative sends, summed over the looks it takes; median
and mean over the negatives that reach the speeds step).

    FPSTORE_HOME=/tmp/h python benchmarks/look_budget.py record '/tmp/looks/*.jsonl' \\
        ../corpus/devlarge/hard /tmp/budget/rec_0.jsonl --part 0 --parts 2
    FPSTORE_HOME=/tmp/h python benchmarks/look_budget.py record '/tmp/looks/*.jsonl' \\
        ../corpus/devlarge/hard /tmp/budget/var_0.jsonl --part 0 --parts 2 --dereverberated-variants
    python benchmarks/look_budget.py simulate '/tmp/looks/*.jsonl' '/tmp/budget/*.jsonl'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from look_merges import load, raw_look, subtracted_fingerprint  # benchmarks/, next to this script
from look_scores import print_table, tally

from fpstore.db.catalogue import open_store
from fpstore.signal.analysis import Fingerprint, fingerprint_from_peaks
from fpstore.signal.audio import load_audio
from fpstore.signal.hashing import zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import constellation_map, extract_peaks
from fpstore.signal.query_peaks import WHITENED_LOOK, QueryPicking, query_fingerprint, rising_spectrogram
from fpstore.signal.spectrogram import magnitude_spectrogram
from fpstore.signal.variants import SpeedVariant, change_speed, shift_samples

SCORE_NEEDED = 3.0
SCREEN_SCORE = 0.5
#: The speeds step's factors of the default these looks were recorded against (ROBUST until 2026-12-08).
SPEEDS = (0.99, 1.01, 0.98, 1.02, 0.97, 1.03)
DECAYS = (0.5, 0.7)
RISES = (0.25, 0.5, 0.75)


def dereverberated_fingerprint(y: np.ndarray, params: FingerprintParams, decay: float, rise: float = 0.0,
                               targets: int | None = None) -> Fingerprint:
    """The dereverberated picking (``QueryPicking(decay=...)``) with ``targets`` per anchor; with ``rise``, only the
    peaks whose rise is more than that share of their magnitude (a sharper onset)."""
    picking = QueryPicking(top_k_targets=targets or params.top_k_targets, decay=decay)
    if not rise:
        return query_fingerprint(y, params, picking)
    magnitudes = magnitude_spectrogram(y, n_fft=params.n_fft, hop_length=params.hop_length, bin_max=params.bin_max)
    rising = rising_spectrogram(magnitudes, decay)
    cmap = constellation_map(rising, dist_freq=params.peak_dist_freq, dist_time=params.peak_dist_time, thresh=0.0)
    peaks = extract_peaks(rising, cmap & (magnitudes > params.peak_thresh) & (rising > rise * magnitudes))
    return fingerprint_from_peaks(peaks, zone_hashes(peaks, params.zones, top_k=picking.top_k_targets), params,
                                  n_samples=y.size, n_frames=int(magnitudes.shape[1]))


def reaches_speeds(rec: dict[str, Any]) -> bool:
    """True if the default (9 tests) takes the speeds step: neither the query as it is nor its shifts named."""
    return all(max(rec[look][1] - math.log10(9), 0.0) <= SCORE_NEEDED for look in ("first", "shift"))


def cheaper_looks(audio: np.ndarray, params: FingerprintParams, look: Callable[[float, tuple[Any, ...], int], list[Any]],
                  done: dict[str, Any]) -> dict[str, Any]:
    """The screen with 3 or 4 targets per anchor (``screen{k}@S``), the at-looks it may pick that were not recorded,
    the whitened look with 4 targets (``r5q25k4w4t0``) and the dereverberated look at one shift (``dr0.5k{k}w1t0``)."""
    new: dict[str, Any] = {}
    for speed in SPEEDS:
        y = change_speed(audio, speed, params.sample_rate)
        for targets in (3, 4):
            unshifted = query_fingerprint(y, params, QueryPicking(top_k_targets=targets))
            new[f"screen{targets}@{speed}"] = look(speed, (unshifted,), 1)
        if f"at@{speed}" not in done and max(new[f"screen{k}@{speed}"][1] for k in (3, 4)) >= 1.0:
            new[f"at@{speed}"] = look(speed, tuple(query_fingerprint(y[o:], params, QueryPicking())
                                                   for o in shift_samples(4, params.hop_length)), 1)
    new["r5q25k4w4t0"] = look(1.0, tuple(query_fingerprint(audio[o:], params, dataclasses.replace(WHITENED_LOOK, top_k_targets=4))
                                         for o in shift_samples(4, params.hop_length)), 0)
    for targets in (3, 4):
        new[f"dr0.5k{targets}w1t0"] = look(1.0, (dereverberated_fingerprint(audio, params, 0.5, 0.0, targets),), 0)
    return new


def record(patterns: list[str], folder: Path, out_path: Path, part: int, parts: int, variants: bool = False,
           cheaper: bool = False) -> None:
    """Write this script's looks (or, with ``variants``, the dereverberated look's variants only) for every
    ``parts``-th query (from ``part``) that reaches the speeds step."""
    done = load(patterns)
    recs = [rec for rec in done.values() if reaches_speeds(rec)][part::parts]
    started = time.time()
    with open_store(None) as store, open(out_path, "w") as out:
        params = store.params(duration_s=None)
        names = {v: k for k, v in store.tracks.ids_by_file_name().items()}

        def look(speed: float, fingerprints: tuple[Any, ...], tolerance: int) -> list[Any]:
            return raw_look(store, params, names, SpeedVariant(speed, fingerprints), tolerance)

        for i, rec in enumerate(recs):
            audio = load_audio(folder / rec["file"], sample_rate=params.sample_rate, duration_s=None)
            new: dict[str, Any] = {"file": rec["file"]}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if variants:
                    offsets = shift_samples(2, params.hop_length)
                    for rise in RISES:
                        new[f"dr0.5x{rise}w2t0"] = look(1.0, tuple(dereverberated_fingerprint(audio[o:], params, 0.5, rise)
                                                                   for o in offsets), 0)
                    for targets in (3, 4):
                        new[f"dr0.5k{targets}w2t0"] = look(1.0, tuple(dereverberated_fingerprint(
                            audio[o:], params, 0.5, 0.0, targets) for o in offsets), 0)
                    out.write(json.dumps(new) + "\n")
                    continue
                if cheaper:
                    new.update(cheaper_looks(audio, params, look, done.get(rec["file"], {})))
                    out.write(json.dumps(new) + "\n")
                    continue
                for speed in SPEEDS:
                    y = change_speed(audio, speed, params.sample_rate)
                    shifted = tuple(query_fingerprint(y[o:], params, WHITENED_LOOK.stored(params))
                                    for o in shift_samples(4, params.hop_length))
                    new[f"screen@{speed}"] = look(speed, shifted[:1], 1)
                    if new[f"screen@{speed}"][1] >= 1.0:
                        new[f"at@{speed}"] = look(speed, shifted, 1)
                for n in (1, 2, 4):
                    offsets = shift_samples(4, params.hop_length)[::4 // n]
                    for decay in DECAYS:
                        new[f"dr{decay}w{n}t0"] = look(1.0, tuple(dereverberated_fingerprint(audio[o:], params, decay)
                                                                  for o in offsets), 0)
                    if n == 2:
                        new["r5q25w2t0"] = look(1.0, tuple(query_fingerprint(audio[o:], params, WHITENED_LOOK)
                                                           for o in offsets), 0)
                        new["s50c2w2t0"] = look(1.0, tuple(subtracted_fingerprint(audio[o:], params, 0.5, 2.0)
                                                           for o in offsets), 0)
            out.write(json.dumps(new) + "\n")
            out.flush()
            if i % 20 == 0:
                print(i, len(recs), round(time.time() - started), flush=True)


def main() -> None:
    """Parse the command line and run ``record`` or ``simulate``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="this script's looks for the queries that reach the speeds step")
    rec.add_argument("records", help="glob of look_scores.py record's JSON lines")
    rec.add_argument("folder", type=Path)
    rec.add_argument("out", type=Path)
    rec.add_argument("--part", type=int, default=0)
    rec.add_argument("--parts", type=int, default=1)
    rec.add_argument("--dereverberated-variants", action="store_true",
                     help="record only the dereverberated look's variants (decay 0.5, two shifts): the peaks whose "
                     "rise is more than 25, 50, 75 %% of their magnitude; 3 and 4 targets per anchor")
    rec.add_argument("--cheaper", action="store_true",
                     help="record only cheaper forms of the looks: the screen with 3 or 4 targets per anchor (and "
                     "the at-looks it may pick), the whitened look with 4, the dereverberated look at one shift")
    sim = commands.add_parser("simulate", help="the decision and keys of every scheme, from records")
    sim.add_argument("records", nargs="+")
    args = parser.parse_args()
    if args.command == "record":
        record(args.records.split(","), args.folder, args.out, args.part, args.parts, args.dereverberated_variants,
               args.cheaper)
    else:
        simulate(args.records)


def speeds_answer(rec: dict[str, Any], speeds: tuple[float, ...], penalty: float,
                  screen: str = "screen") -> tuple[str, float, int]:
    """The speeds step over ``speeds``: the best screen (``screen``: the looks named so), then that factor at every
    shift when it stood out; keys sent."""
    screens = [(rec[f"{screen}@{s}"][1], s) for s in speeds]
    keys = sum(rec[f"{screen}@{s}"][4] for s in speeds)
    raw, speed = max(screens)  # ties: the later factor, as any order would do for a replay
    track, score = rec[f"{screen}@{speed}"][0], max(raw - penalty, 0.0)
    if score >= SCREEN_SCORE:
        at = rec[f"at@{speed}"]
        track, score, keys = at[0], max(at[1] - penalty, 0.0), keys + at[4]
    return str(track), score, keys


def answer(rec: dict[str, Any], scheme: Scheme) -> tuple[str, int]:
    """The track a scheme names ("" for none) and the keys the query sent on the way."""
    looks, tests = scheme
    penalty = math.log10(tests)
    keys = 0
    for look in looks:
        if isinstance(look, tuple):
            if "screen@0.99" not in rec:  # named before the speeds step by the default: never reached here
                return "", keys
            screen, speeds = look if isinstance(look[0], str) else ("screen", look)
            track, score, sent = speeds_answer(rec, speeds, penalty, screen)
        else:
            if look not in rec:  # a last look recorded only for the queries the default left unnamed
                MISSING[look] = MISSING.get(look, 0) + 1
                return "", keys
            track, score, sent = rec[look][0], max(rec[look][1] - penalty, 0.0), rec[look][4]
        keys += sent
        if score > SCORE_NEEDED:
            return str(track), keys
    return "", keys


#: Looks a replay needed and no record held (the query then counts as named by nothing), by look.
MISSING: dict[str, int] = {}
#: A scheme: its looks in order (a look's name, or a tuple of speed factors: the speeds step over them) and
#: its number of tests.
Scheme = tuple[list[Any], int]
NO_3 = (0.99, 1.01, 0.98, 1.02)


def schemes() -> dict[str, Scheme]:
    """The default and the alternatives replayed."""
    out: dict[str, Scheme] = {"default (9)": (["first", "shift", SPEEDS, "r5q25w4t0"], 9)}
    for decay in DECAYS:
        out[f"last dr{decay}w4 (9)"] = (["first", "shift", SPEEDS, f"dr{decay}w4t0"], 9)
        out[f"+dr{decay}w2 (10)"] = (["first", "shift", SPEEDS, "r5q25w4t0", f"dr{decay}w2t0"], 10)
        out[f"+dr{decay}w4 (10)"] = (["first", "shift", SPEEDS, "r5q25w4t0", f"dr{decay}w4t0"], 10)
        out[f"w2 +dr{decay}w2 (10)"] = (["first", "shift", SPEEDS, "r5q25w2t0", f"dr{decay}w2t0"], 10)
        out[f"no ±3 % +dr{decay}w2 (8)"] = (["first", "shift", NO_3, "r5q25w4t0", f"dr{decay}w2t0"], 8)
        out[f"no ±3 % +dr{decay}w4 (8)"] = (["first", "shift", NO_3, "r5q25w4t0", f"dr{decay}w4t0"], 8)
    out["no ±3 % +dr0.5w1 (8)"] = (["first", "shift", NO_3, "r5q25w4t0", "dr0.5w1t0"], 8)
    out["no ±3 % dr0.5w2 before whitened (8)"] = (["first", "shift", NO_3, "dr0.5w2t0", "r5q25w4t0"], 8)
    for rise in (0.25, 0.5, 0.75):
        out[f"no ±3 % +dr0.5x{rise}w2 (8)"] = (["first", "shift", NO_3, "r5q25w4t0", f"dr0.5x{rise}w2t0"], 8)
    for targets in (3, 4):
        out[f"no ±3 % +dr0.5k{targets}w2 (8)"] = (["first", "shift", NO_3, "r5q25w4t0", f"dr0.5k{targets}w2t0"], 8)
    for targets in (3, 4):
        cheap = (f"screen{targets}", SPEEDS)
        out[f"screen k{targets} (9)"] = (["first", "shift", cheap, "r5q25w4t0"], 9)
        for last in ("dr0.5k3w1t0", "dr0.5k4w1t0", "dr0.5k3w2t0", "dr0.5k4w2t0"):
            out[f"screen k{targets} +{last[:-2]} (10)"] = (["first", "shift", cheap, "r5q25w4t0", last], 10)
            out[f"screen k{targets}, whitened k4 +{last[:-2]} (10)"] = (["first", "shift", cheap, "r5q25k4w4t0", last], 10)
    out["no ±3 % (7)"] = (["first", "shift", NO_3, "r5q25w4t0"], 7)
    out["no ±3 % +s50c2w2 (8)"] = (["first", "shift", NO_3, "r5q25w4t0", "s50c2w2t0"], 8)
    out["w2 +s50c2w2 (10)"] = (["first", "shift", SPEEDS, "r5q25w2t0", "s50c2w2t0"], 10)
    return out


def simulate(patterns: list[str]) -> None:
    """Print top-1 % / false positives per cell for every scheme, then one line per scheme against the default."""
    recs = list(load(patterns).values())
    chosen = schemes()
    tables = tally(recs, chosen, lambda rec, scheme: answer(rec, scheme)[0])
    names = list(chosen)
    for start in range(1, len(names), 8):
        print_table(tables, names[:1] + names[start:start + 8])
        print()
    if MISSING:
        print(f"looks not recorded, counted as naming nothing (queries x schemes): {MISSING}\n")
    negatives = [rec for rec in recs if not rec["true"] and "screen@0.99" in rec]
    base_keys = np.mean([answer(rec, chosen[names[0]])[1] for rec in negatives])
    base = tables[names[0]]

    def top1(cell: list[int]) -> float:
        return 100 * cell[1] / cell[0]

    print(f"Keys: the hashes a negative sends over the looks it takes ({len(negatives)} negatives that reach the "
          "speeds step); cells lower: top-1 below the default's, or more false positives.\n")
    print("| scheme (tests) | hard set top-1 / FP | pink noise 3 / 5 / 10 s | room mic 3 s | cells lower than the "
          "default | a negative's keys, median / mean (mean against the default) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        cells = tables[name]
        lower = [f"{deg} {length} s {top1(base[(deg, length)]):.0f} → {top1(cell):.0f} %"
                 for (deg, length), cell in cells.items() if deg != "*" and top1(cell) < top1(base[(deg, length)])]
        lower += [f"{deg} {length} s {cell[3]} FP" for (deg, length), cell in cells.items()
                  if deg != "*" and cell[3] > base[(deg, length)][3]]
        pink = " / ".join(f"{top1(cells[('pinknoise_snr-5', length)]):.1f}" for length in ("3", "5", "10"))
        keys = [answer(rec, chosen[name])[1] for rec in negatives]
        print(f"| {name} | {top1(cells[('*', '*')]):.1f} % / {cells[('*', '*')][3]} | {pink} | "
              f"{top1(cells[('room_mic', '3')]):.1f} | {', '.join(lower) or 'none'} | {np.median(keys):,.0f} / "
              f"{np.mean(keys):,.0f} ({100 * (np.mean(keys) / base_keys - 1):+.1f} %) |")


if __name__ == "__main__":
    main()
