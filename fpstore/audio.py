"""Audio decoding: file → mono float32 samples at the fingerprint sample rate.

Conventions
-----------
- Output samples are float32 in [-1, 1], mono (channels averaged), resampled to ``sample_rate`` Hz.
- ``duration_s`` counts seconds from the start of the file; None reads the whole file.
"""

from __future__ import annotations

import os
import warnings

import librosa
import numpy as np

from fpstore.errors import AudioError

#: File name endings fpstore ingests, compared without regard to letter case.
AUDIO_EXTENSIONS = (".mp3", ".wav", ".m4a", ".flac", ".ogg")


def load_audio(path: str | os.PathLike[str], *, sample_rate: int = 22050, duration_s: float | None = 30.0) -> np.ndarray:
    """Decode an audio file exactly as the seed notebook does (``librosa.load``).

    Parameters
    ----------
    path : str or path-like
        Audio file (any format librosa reads: WAV, FLAC, OGG, MP3, M4A via ffmpeg).
    sample_rate : int
        Target rate in Hz.
    duration_s : float or None
        Seconds to read from the start; None reads everything.

    Returns
    -------
    y : np.ndarray [shape=(n,)], float32, mono, at ``sample_rate`` Hz

    Raises
    ------
    AudioError
        If the file cannot be opened or decoded; the message names the file and the reason.
    """
    try:
        with warnings.catch_warnings():
            # librosa warns when it falls back from soundfile to audioread; the fallback is what we want.
            warnings.simplefilter("ignore")
            y, _ = librosa.load(path, sr=sample_rate, mono=True, duration=duration_s)
    except Exception as exc:  # decoders raise many unrelated types; all mean "cannot decode"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"{os.fsdecode(path)}: cannot decode audio ({reason})") from exc
    return y
