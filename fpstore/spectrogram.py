"""STFT magnitude spectrogram, as the seed notebook computes it.

Conventions
-----------
- Input audio is mono float32 sampled at ``sample_rate`` Hz.
- Output is a (frequency bins x time frames) matrix of linear magnitudes; frame ``t`` is centred on
  sample ``t * hop_length`` (librosa's ``center=True``), bin ``k`` is ``k * sample_rate / n_fft`` Hz.
"""

from __future__ import annotations

import librosa
import numpy as np

from fpstore.validate import valid_audio


def magnitude_spectrogram(
    y: np.ndarray, *, n_fft: int = 2048, hop_length: int = 1024, bin_max: int | None = 1024
) -> np.ndarray:
    """Magnitude of the Hann-windowed STFT, keeping the bins below ``bin_max``.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32
        Mono audio.
    n_fft : int
        Window and FFT length, in samples.
    hop_length : int
        Hop between frames, in samples.
    bin_max : int or None
        Number of frequency bins kept (bins ``0 .. bin_max - 1``); None keeps ``n_fft // 2 + 1``.

    Returns
    -------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float32
        ``n_frames = 1 + len(y) // hop_length``.

    Raises
    ------
    ParameterError
        If ``y`` is not mono floating-point audio with finite samples.

    Examples
    --------
    >>> magnitude_spectrogram(np.zeros(22050, dtype=np.float32)).shape
    (1024, 22)
    """
    valid_audio(y)
    stft = librosa.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window="hann")
    return np.abs(stft[:bin_max, :])
