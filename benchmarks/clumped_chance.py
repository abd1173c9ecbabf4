"""False alarms of the two chance models on synthetic chance votes that come in clumps (issue 11).

Each track of a synthetic catalogue receives chance events uniformly over its offset bins (Poisson,
``rate`` events per bin), and each event adds 1 to ``largest_clump`` votes to its bin at once, as a
repeated bar or chord of real music can. No track matches: every alarm is false. For each setting
the script prints the share of trials in which the best-voted track is named at ``--alpha`` by the
Poisson bound (:func:`fpstore.matching.significance.chance_log10_p`) and by the tracks null
(:func:`fpstore.matching.significance.tracks_null_log10_p`).

    python benchmarks/clumped_chance.py --trials 200 --alpha 0.05

``tests/test_significance.py`` asserts two of these settings; this grid shows where the tracks null
keeps its rate and where it does not.
"""

from __future__ import annotations

import argparse

import numpy as np

from fpstore.matching.significance import chance_log10_p, offset_bins, track_log_p, tracks_null_log10_p
from fpstore.matching.vote import vote


def clumped_votes(rng: np.random.Generator, n_tracks: int, rate: float,
                  largest_clump: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chance votes as ``(tracks, offsets)``, each track's counted votes and its offset bins."""
    track_frames = rng.integers(500, 6000, n_tracks)
    bins = offset_bins(track_frames, np.array([0, 300]))
    events = rng.poisson(rate * bins)
    event_track = np.repeat(np.arange(n_tracks), events)
    event_bin = (rng.random(event_track.size) * bins[event_track]).astype(np.int64)
    clump = rng.integers(1, largest_clump + 1, event_track.size)
    tracks, offsets = np.repeat(event_track, clump), np.repeat(event_bin, clump)
    return tracks, offsets, np.bincount(tracks, minlength=n_tracks), bins


def alarm_rates(rng: np.random.Generator, trials: int, alpha: float, n_tracks: int, rate: float,
                largest_clump: int) -> tuple[float, float]:
    """Share of ``trials`` in which the tracks null and the Poisson bound name the best-voted track."""
    tracks_alarms = poisson_alarms = 0
    for _ in range(trials):
        tracks, offsets, counted, bins = clumped_votes(rng, n_tracks, rate, largest_clump)
        voted, votes, _ = vote(tracks, offsets, top_k=max(tracks.size, 1))
        if voted.size == 0:
            continue
        log_p = track_log_p(votes, counted[voted], bins[voted])
        tracks_alarms += int(tracks_null_log10_p(log_p[:1], log_p)[0] < np.log10(alpha))
        poisson_alarms += int(chance_log10_p(votes[:1], counted[voted], bins[voted])[0] < np.log10(alpha))
    return tracks_alarms / trials, poisson_alarms / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"| tracks | events per bin | votes per event | tracks null alarms at {args.alpha:g} | Poisson alarms |\n"
          "|---:|---:|---|---:|---:|")
    for n_tracks in (60, 600, 3000):
        for rate in (0.002, 0.01, 0.03):
            for largest_clump in (1, 3, 5):
                tracks_rate, poisson_rate = alarm_rates(rng, args.trials, args.alpha, n_tracks, rate, largest_clump)
                print(f"| {n_tracks} | {rate:g} | 1-{largest_clump} | {tracks_rate:.3f} | {poisson_rate:.3f} |",
                      flush=True)


if __name__ == "__main__":
    main()
