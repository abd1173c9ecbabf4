"""STFT magnitude spectrogram, as the seed notebook computes it.

Conventions
-----------
- Input audio is mono float32 sampled at ``sample_rate`` Hz.
- Output is a (frequency bins x time frames) matrix of linear magnitudes; frame ``t`` is centred on
  sample ``t * hop_length`` (librosa's ``center=True``), bin ``k`` is ``k * sample_rate / n_fft`` Hz.
- librosa.stft is kept (not a hand-written float32 rfft): it multiplies float32 frames by a float64 Hann
  window, takes a float64 rfft and rounds to complex64; a float32 rfft rounds differently (1-ulp changes
  in magnitudes), and peak picking and top-k ties compare magnitudes exactly. A numpy replica of
  librosa's exact arithmetic was slower than librosa.stft, so nothing was gained.
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
    return np.asarray(np.abs(stft[:bin_max, :]))


def frame_magnitudes(
    padded: np.ndarray, *, n_fft: int = 2048, hop_length: int = 1024, bin_max: int | None = 1024
) -> np.ndarray:
    """Magnitudes of the frames that fit entirely in ``padded`` (no centring, no padding).

    Frame ``j`` covers ``padded[j * hop_length : j * hop_length + n_fft]``. Each frame is computed with
    the same arithmetic as in :func:`magnitude_spectrogram` (librosa.stft, ``center=False``), so slicing
    a zero-padded signal into overlapping segments gives the one-shot frames bit for bit
    (``tests/test_speed_paths.py`` checks it).

    Parameters
    ----------
    padded : np.ndarray [shape=(n,)], float32, ``n >= n_fft``
        Samples, already zero-padded by ``n_fft // 2`` at the true start and end of the signal.
    n_fft, hop_length : int
    bin_max : int or None

    Returns
    -------
    magnitudes : np.ndarray [shape=(n_bins, 1 + (n - n_fft) // hop_length)], float32
    """
    valid_audio(padded)
    stft = librosa.stft(padded, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window="hann", center=False)
    return np.asarray(np.abs(stft[:bin_max, :]))
