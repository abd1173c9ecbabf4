"""Pictures: a file's spectrogram with its constellation and anchor→target pairs; database histograms.

matplotlib is driven through its object API with the Agg canvas (no pyplot, no display, no global
backend switch), so plotting works on a headless server and inside other programs.

Conventions
-----------
- Image sizes are in pixels; a figure is ``width_px / DPI`` by ``height_px / DPI`` inches at :data:`DPI`.
- Spectrogram axes: time in seconds (frames × hop / rate), frequency in STFT bins.
- A hash is decoded as ``f_anchor = h >> 22``, ``f_target = (h >> 12) & 1023``, ``dt = h & 4095``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fpstore.db.contract import Catalogue
from fpstore.errors import ParameterError
from fpstore.signal.analysis import analyze
from fpstore.signal.audio import load_audio
from fpstore.signal.hashing import ZoneHashes
from fpstore.signal.params import BITS_DT, BITS_F, MAX_DT, MAX_F, FingerprintParams

#: Dots per inch of every figure.
DPI = 100


def _figure(width_px: int, height_px: int):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if not 100 <= value <= 10_000:
            raise ParameterError(f"{name}={value} must be between 100 and 10000 pixels")
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def anchor_pairs(postings: ZoneHashes, n_anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor and target points of the pairs of ``n_anchors`` anchors spread evenly over time.

    Parameters
    ----------
    postings : ZoneHashes
        One zone's hashes and anchor times.
    n_anchors : int
        How many anchors to pick (fewer if the zone has fewer).

    Returns
    -------
    anchors : np.ndarray [shape=(n_pairs, 2), dtype=int64]
        ``(t_frame, f_bin)`` of each pair's anchor.
    targets : np.ndarray [shape=(n_pairs, 2), dtype=int64]
        ``(t_frame, f_bin)`` of each pair's target.

    Examples
    --------
    >>> h = np.array([(5 << 22) | (7 << 12) | 3], dtype=np.uint32)
    >>> anchor_pairs(ZoneHashes(h, np.array([10], np.int32)), 1)[1].tolist()
    [[13, 7]]
    """
    hashes = postings.hashes.astype(np.int64)
    f_anchor = (hashes >> (BITS_F + BITS_DT)) & MAX_F
    f_target = (hashes >> BITS_DT) & MAX_F
    dt = hashes & MAX_DT
    t_anchor = postings.t_anchor_frames.astype(np.int64)
    keys = np.unique(np.stack([t_anchor, f_anchor], axis=1), axis=0)
    if keys.size == 0 or n_anchors < 1:
        return np.empty((0, 2), np.int64), np.empty((0, 2), np.int64)
    chosen = keys[np.unique(np.linspace(0, len(keys) - 1, min(n_anchors, len(keys))).round().astype(int))]
    mask = np.zeros(len(hashes), dtype=bool)
    for t, f in chosen:  # a handful of anchors
        mask |= (t_anchor == t) & (f_anchor == f)
    return (np.stack([t_anchor[mask], f_anchor[mask]], axis=1),
            np.stack([t_anchor[mask] + dt[mask], f_target[mask]], axis=1))


def plot_fingerprint(audio_path: str | os.PathLike[str], out_png: str | os.PathLike[str],
                     params: FingerprintParams, *, zone: str | None = None, n_anchors: int = 5,
                     width_px: int = 1400, height_px: int = 700) -> dict[str, int]:
    """Write a PNG of a file's spectrogram (dB), its constellation peaks and some anchor→target pairs.

    Parameters
    ----------
    audio_path : path
    out_png : path
    params : FingerprintParams
        How to decode, transform and hash (as ingest would).
    zone : str or None
        Zone whose pairs are drawn; None takes the first zone.
    n_anchors : int
        Anchors whose pairs are drawn, spread evenly over the file.
    width_px, height_px : int
        Image size in pixels.

    Returns
    -------
    counts : dict[str, int]
        ``n_frames``, ``n_peaks``, ``n_pairs_drawn``, ``n_zone_hashes``.

    Raises
    ------
    AudioError
        If the file cannot be decoded.
    ParameterError
        If ``zone`` is not one of the parameters' zones, or the size is out of range.
    """
    chosen_zone = params.zone(zone) if zone else params.zones[0]
    figure = _figure(width_px, height_px)
    y = load_audio(audio_path, sample_rate=params.sample_rate, duration_s=params.duration_s)
    magnitudes, peaks, hashes_by_zone = analyze(y, params)
    postings = hashes_by_zone[chosen_zone.name]
    anchors, targets = anchor_pairs(postings, n_anchors)

    seconds = params.seconds_per_frame
    axes = figure.add_subplot()
    decibels = 20 * np.log10(np.maximum(magnitudes, 1e-6))
    axes.imshow(decibels, origin="lower", aspect="auto", cmap="magma",
                extent=(-0.5 * seconds, (magnitudes.shape[1] - 0.5) * seconds, -0.5, magnitudes.shape[0] - 0.5),
                vmin=decibels.max() - 80 if decibels.size else None)
    axes.scatter(peaks.t_frames * seconds, peaks.f_bins, s=6, c="cyan", marker="o", linewidths=0,
                 label=f"{peaks.t_frames.size} peaks")
    for (t1, f1), (t2, f2) in zip(anchors, targets):
        axes.plot([t1 * seconds, t2 * seconds], [f1, f2], color="lime", linewidth=0.8)
    axes.scatter(anchors[:, 0] * seconds, anchors[:, 1], s=30, facecolors="none", edgecolors="white",
                 label=f"{len(np.unique(anchors, axis=0))} anchors, {len(anchors)} pairs ({chosen_zone.name})")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frequency bin")
    axes.set_title(f"{Path(os.fsdecode(audio_path)).name}: zone {chosen_zone.name} "
                   f"(df ≤ {chosen_zone.df_bins} bins, dt {chosen_zone.dt_min_frames}–{chosen_zone.dt_max_frames} frames)")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(out_png, dpi=DPI, format="png")
    return {"n_frames": int(magnitudes.shape[1]), "n_peaks": int(peaks.t_frames.size),
            "n_pairs_drawn": int(len(anchors)), "n_zone_hashes": int(postings.hashes.size)}


def plot_report(store: Catalogue, out_dir: str | os.PathLike[str], *, width_px: int = 1200,
                height_px: int = 800) -> list[Path]:
    """Write ``hashes_per_track.png`` and ``posting_list_lengths.png`` (one panel per zone) into ``out_dir``.

    Parameters
    ----------
    store : Catalogue
    out_dir : path
        Created if missing.
    width_px, height_px : int
        Size of each image in pixels.

    Returns
    -------
    paths : list of Path
        The two files written.
    """
    store.check_schema()
    zone_names = [name for name, _ in sorted(store.zone_ids().items(), key=lambda item: item[1])]
    per_track = store.stats.postings_per_track()
    lengths = store.stats.posting_list_lengths()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, rows, title, xlabel, log_y in (
        ("hashes_per_track.png", [(z, n, 1) for z, _track, n in per_track], "hashes per track", "hashes", False),
        ("posting_list_lengths.png", lengths, "posting-list lengths", "postings per hash", True),
    ):
        figure = _figure(width_px, height_px)
        _zone_panels(figure, zone_names, rows, title=title, xlabel=xlabel, log_y=log_y)
        figure.savefig(folder / file_name, dpi=DPI, format="png")
        written.append(folder / file_name)
    return written


def _zone_panels(figure, zone_names: list[str], rows, *, title: str, xlabel: str, log_y: bool) -> None:  # type: ignore[no-untyped-def]
    """One histogram panel per zone from ``(zone, value, weight)`` rows."""
    n_cols = min(2, max(len(zone_names), 1))
    n_rows = -(-max(len(zone_names), 1) // n_cols)
    data = np.array([(zone_names.index(z), v, w) for z, v, w in rows], dtype=np.int64).reshape(-1, 3)
    for i, name in enumerate(zone_names):
        axes = figure.add_subplot(n_rows, n_cols, i + 1)
        mine = data[data[:, 0] == i]
        if mine.size:
            high = int(mine[:, 1].max())
            bins = np.arange(0.5, high + 1.5) if high <= 60 else 40
            axes.hist(mine[:, 1], bins=bins, weights=mine[:, 2], color="tab:blue", log=log_y)
        axes.set_title(f"{name}: {int(mine[:, 2].sum())} {'hashes' if log_y else 'tracks'}", fontsize="small")
        axes.set_xlabel(xlabel)
        axes.set_ylabel("count")
    figure.suptitle(title)
    figure.tight_layout()
