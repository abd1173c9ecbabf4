"""STFT magnitude spectrogram, as the seed notebook computes it (``librosa.stft``), bit for bit.

Conventions
-----------
- Input audio is mono float32 sampled at ``sample_rate`` Hz.
- Output is a (frequency bins x time frames) matrix of linear magnitudes; frame ``t`` is centred on
  sample ``t * hop_length`` (librosa's ``center=True``, zero padding), bin ``k`` is
  ``k * sample_rate / n_fft`` Hz.
- The arithmetic is librosa 0.11's: float32 frames times a float64 periodic Hann window, a float64 numpy
  rfft per frame, rounded to complex64, then the float32 magnitude. A float32 rfft would round
  differently (1-ulp changes in magnitudes), and peak picking and top-k ties compare magnitudes exactly.
  Done here without librosa: its first call imports scipy.signal and numba caches (~1.5 s for every
  process that fingerprints), and transforming 64 frames per call beats its 32 (docs/speed.md);
  ``tests/test_speed_paths.py`` checks equality with ``librosa.stft``.
"""

from __future__ import annotations

import functools

import numpy as np

from fpstore.errors import ParameterError
from fpstore.signal.validate import valid_audio, valid_int

#: Frames transformed per rfft call: a block of 64 float64 frames of 2048 samples stays in cache.
_FRAMES_PER_BLOCK = 64


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window, computed as ``scipy.signal.get_window("hann", n_fft, fftbins=True)`` does.

    Parameters
    ----------
    n_fft : int >= 1

    Returns
    -------
    window : np.ndarray [shape=(n_fft,), dtype=float64], read-only

    Examples
    --------
    >>> hann_window(4).tolist()
    [0.0, 0.5, 1.0, 0.5]
    """
    # scipy's general_cosine over n_fft + 1 points, last one dropped, with its order of operations.
    angles = np.linspace(-np.pi, np.pi, n_fft + 1)
    window = np.zeros(n_fft + 1)
    for k, coefficient in enumerate((0.5, 0.5)):
        window += coefficient * np.cos(k * angles)
    window = window[:-1]
    window.flags.writeable = False
    return window


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
    valid_int("n_fft", n_fft, minimum=1)
    return _frame_magnitudes(np.pad(y, n_fft // 2), n_fft, valid_int("hop_length", hop_length, minimum=1), bin_max)


def frame_magnitudes(
    padded: np.ndarray, *, n_fft: int = 2048, hop_length: int = 1024, bin_max: int | None = 1024
) -> np.ndarray:
    """Magnitudes of the frames that fit entirely in ``padded`` (no centring, no padding).

    Frame ``j`` covers ``padded[j * hop_length : j * hop_length + n_fft]``. Each frame is computed with
    the same arithmetic as in :func:`magnitude_spectrogram` (``librosa.stft(center=False)``), so slicing
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

    Raises
    ------
    ParameterError
        If ``padded`` is not mono floating-point audio or is shorter than ``n_fft``.
    """
    valid_audio(padded)
    if padded.size < valid_int("n_fft", n_fft, minimum=1):
        raise ParameterError(f"n_fft={n_fft} is longer than the {padded.size} samples given")
    return _frame_magnitudes(padded, n_fft, valid_int("hop_length", hop_length, minimum=1), bin_max)


def _frame_magnitudes(padded: np.ndarray, n_fft: int, hop_length: int, bin_max: int | None) -> np.ndarray:
    n_frames = 1 + (padded.size - n_fft) // hop_length
    n_bins = n_fft // 2 + 1 if bin_max is None else min(valid_int("bin_max", bin_max, minimum=1), n_fft // 2 + 1)
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, n_fft), strides=(hop_length * padded.itemsize, padded.itemsize), writeable=False)
    window = hann_window(n_fft)
    spectrum_dtype = np.result_type(padded.dtype, np.complex64)  # librosa's: complex64 for float32 audio
    magnitudes = np.empty((n_frames, n_bins), dtype=np.finfo(spectrum_dtype).dtype)
    # One windowed block and one rounded spectrum reused for every block (fewer fresh pages to fault in).
    windowed = np.empty((min(_FRAMES_PER_BLOCK, n_frames), n_fft), dtype=np.result_type(padded.dtype, window.dtype))
    rounded = np.empty((windowed.shape[0], n_bins), dtype=spectrum_dtype)
    for start in range(0, n_frames, _FRAMES_PER_BLOCK):
        stop = min(start + _FRAMES_PER_BLOCK, n_frames)
        block = windowed[:stop - start]
        np.multiply(frames[start:stop], window, out=block)
        rounded[:stop - start] = np.fft.rfft(block, axis=-1)[:, :n_bins]  # astype(spectrum_dtype)'s rounding
        np.abs(rounded[:stop - start], out=magnitudes[start:stop])
    return magnitudes.T
