"""The oracle: a plain port of the seed notebook's loops (../shared/seed), kept slow and obvious.

Only what the notebook computes is here, line for line in behaviour: decoding with librosa.load, the
STFT magnitude, the max-filter constellation map, the stable time sort of peaks, the per-anchor target
loop with its stable top-k, make_hash and the inverted index with packed postings. Tests compare
fpstore's vectorised path against it; nothing in fpstore imports it.
"""

from __future__ import annotations

import os
import pickle
from collections import defaultdict

import librosa
import numpy as np
from scipy import ndimage

SEED_ZONES = [
    {"name": "Fsmall_Tshort", "df": 50, "dt_min": 1, "dt_max": 20},
    {"name": "Fsmall_Tlong", "df": 50, "dt_min": 1, "dt_max": 60},
    {"name": "Flarge_Tshort", "df": 150, "dt_min": 1, "dt_max": 20},
    {"name": "Flarge_Tlong", "df": 150, "dt_min": 1, "dt_max": 60},
]

BITS_F = 10
BITS_DT = 12
MAX_F = (1 << BITS_F) - 1
MAX_DT = (1 << BITS_DT) - 1


def compute_spectrogram(fn_wav, Fs=22050, N=2048, H=1024, duration=30.0, bin_max=None, frame_max=None):
    x, Fs = librosa.load(fn_wav, sr=Fs, duration=duration)
    return spectrogram_of_signal(x, N=N, H=H, bin_max=bin_max, frame_max=frame_max)


def spectrogram_of_signal(x, N=2048, H=1024, bin_max=None, frame_max=None):
    X = librosa.stft(x, n_fft=N, hop_length=H, win_length=N, window="hann")
    if bin_max is None:
        bin_max = X.shape[0]
    if frame_max is None:
        frame_max = X.shape[1]
    return np.abs(X[:bin_max, :frame_max])


def compute_constellation_map(Y, dist_freq=7, dist_time=7, thresh=0.01):
    result = ndimage.maximum_filter(Y, size=[2 * dist_freq + 1, 2 * dist_time + 1], mode="constant")
    return np.logical_and(Y == result, result > thresh)


def extract_peaks(Y, Cmap):
    f_idx, t_idx = np.where(Cmap)
    mags = Y[f_idx, t_idx]
    peaks = list(zip(t_idx.tolist(), f_idx.tolist(), mags.tolist()))
    peaks.sort(key=lambda x: x[0])
    return peaks


def make_hash(f1, f2, dt):
    if f1 > MAX_F:
        f1 = MAX_F
    if f2 > MAX_F:
        f2 = MAX_F
    if dt < 0 or dt > MAX_DT:
        return None
    return (int(f1) << (BITS_F + BITS_DT)) | (int(f2) << BITS_DT) | int(dt)


def pack_posting(track_id, t_anchor):
    return (int(track_id) << 16) | (int(t_anchor) & 0xFFFF)


def unpack_posting(p):
    return int(p) >> 16, int(p) & 0xFFFF


def generate_hashes_from_peaks(peaks, zone, top_k=None):
    df = zone["df"]
    dt_min = zone["dt_min"]
    dt_max = zone["dt_max"]
    out = []
    n = len(peaks)
    for i in range(n):
        t1, f1, m1 = peaks[i]
        candidates = []
        for j in range(i + 1, n):
            t2, f2, m2 = peaks[j]
            dt = t2 - t1
            if dt < dt_min:
                continue
            if dt > dt_max:
                break
            if abs(f2 - f1) <= df:
                candidates.append((f2, dt, m2))
        if top_k is not None and len(candidates) > top_k:
            candidates.sort(key=lambda x: x[2], reverse=True)
            candidates = candidates[:top_k]
        for f2, dt, m2 in candidates:
            h = make_hash(f1, f2, dt)
            if h is not None:
                out.append((h, t1))
    return out


def seed_pairs_of_signal(x, zones=SEED_ZONES, bin_max=1024, dist_freq=12, dist_time=6, thresh=0.01, top_k=5):
    """Seed pipeline on an already-decoded signal: ``{zone name: [(hash, t_anchor), ...]}``."""
    Y = spectrogram_of_signal(x, bin_max=bin_max)
    peaks = extract_peaks(Y, compute_constellation_map(Y, dist_freq, dist_time, thresh))
    return {z["name"]: generate_hashes_from_peaks(peaks, z, top_k=top_k) for z in zones}


def seed_pairs_of_file(path, duration=30.0, **kwargs):
    """Seed pipeline on a file, decoding with librosa.load as the notebook does."""
    x, _ = librosa.load(path, sr=22050, duration=duration)
    return seed_pairs_of_signal(x, **kwargs)


def build_seed_pickle(paths, output_db_file, zones=SEED_ZONES, duration=30.0, top_k=5, bin_max=1024):
    """The notebook's build_hash_database on an explicit file list: writes its pickle, returns the db."""
    index_by_zone = {z["name"]: defaultdict(list) for z in zones}
    tracks = {}
    for track_id, fpath in enumerate(paths):
        tracks[track_id] = os.path.basename(fpath)
        pairs_by_zone = seed_pairs_of_file(fpath, duration=duration, zones=zones, top_k=top_k, bin_max=bin_max)
        for z in zones:
            for h, t_anchor in pairs_by_zone[z["name"]]:
                index_by_zone[z["name"]][h].append(pack_posting(track_id, t_anchor))
    db = {
        "meta": {
            "Fs": 22050, "N": 2048, "H": 1024, "duration": duration, "bin_max": bin_max,
            "peak_params": {"dist_freq": 12, "dist_time": 6, "thresh": 0.01},
            "zones": zones, "top_k_targets": top_k,
        },
        "tracks": tracks,
        "index": {zname: dict(index_by_zone[zname]) for zname in index_by_zone},
    }
    with open(output_db_file, "wb") as f:
        pickle.dump(db, f, protocol=pickle.HIGHEST_PROTOCOL)
    return db
