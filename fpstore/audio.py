"""Audio decoding: file → mono float32 samples at the fingerprint sample rate.

Conventions
-----------
- Output samples are float32 in [-1, 1], mono (channels averaged), resampled to ``sample_rate`` Hz.
- ``duration_s`` counts seconds from the start of the file; None reads the whole file.
- Paths are shown to people (error messages, the database) as :func:`display_path` text: bytes of a
  file name that are not UTF-8 appear as ``\\xNN`` escapes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator

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
        If the file cannot be opened or decoded, or is empty; the message is one line naming the file
        and the reason (:func:`decode_failure_reason`).
    """
    shown = display_path(path)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise AudioError(f"{shown}: cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise AudioError(f"{shown}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), _utf8_alias(path) as source:
            # librosa warns when it falls back from soundfile to audioread; the fallback is what we want.
            warnings.simplefilter("ignore")
            y, _ = librosa.load(source, sr=sample_rate, mono=True, duration=duration_s)
    except Exception as exc:  # decoders raise many unrelated types; all mean "cannot decode"
        raise AudioError(f"{shown}: cannot decode audio ({decode_failure_reason(exc)})") from exc
    return y


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as valid UTF-8 text: bytes that are not UTF-8 are shown as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def decode_failure_reason(exc: BaseException) -> str:
    """One line saying why the decoders gave up, from the exception ``librosa.load`` raised.

    librosa tries soundfile (WAV, FLAC, OGG, MP3) first and falls back to audioread (ffmpeg); when both
    fail, audioread's ``NoBackendError`` says nothing, so soundfile's complaint (the exception's context)
    is the informative part.

    Parameters
    ----------
    exc : BaseException
        What ``librosa.load`` raised.

    Returns
    -------
    reason : str
        One line, e.g. ``"not a readable audio file: format not recognised; ffmpeg could not decode it either"``.
    """
    soundfile_error = exc.__context__
    if type(exc).__name__ == "NoBackendError":
        said = str(getattr(soundfile_error, "error_string", "")).strip().rstrip(".").lower()
        if not said or "not a regular file" in said:  # libsndfile's catch-all wording misleads here
            said = "format not recognised"
        return f"not a readable audio file: {said}; ffmpeg could not decode it either"
    if isinstance(exc, EOFError):
        return "no audio frames could be decoded: truncated, or not audio at all"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _utf8_alias(path: str | os.PathLike[str]) -> Iterator[str | os.PathLike[str]]:
    """``path`` itself, or a UTF-8-named symbolic link to it when its name is not valid UTF-8.

    soundfile encodes a path strictly, so a name with undecodable bytes would fail before any decoding;
    the link (same extension, so the same decoder is chosen) lets the decoders read the same bytes.
    """
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        with tempfile.TemporaryDirectory(prefix="fpstore-alias-") as folder:
            alias = os.path.join(folder, "audio" + os.path.splitext(display_path(path))[1])
            os.symlink(os.path.abspath(os.fsdecode(path)), alias)
            yield alias
        return
    yield path
