"""Audio decoding: file → mono float32 samples at the fingerprint sample rate, bit-identical to ``librosa.load``.

``librosa.load(path, sr=sr, mono=True, duration=d)`` (librosa 0.11, the seed's decoder) does, for a file
libsndfile can read: read ``int(d * native_rate)`` frames as float32 with soundfile, ``np.mean`` over the
channel axis, ``soxr.resample(..., quality="soxr_hq")``, then cut or zero-pad to
``ceil(n * sr / native_rate)`` samples. :func:`load_audio` does the same steps without librosa's
overhead (its ``to_mono`` reduces over a short strided axis, ~23 ms for a 30 s stereo clip):

- mono: taken as read; stereo: ``(left + right) / 2`` in float32, which is exactly what ``np.mean``
  computes for two float32 values (one float32 addition, one exact halving); other channel counts use
  ``np.mean`` itself on the same (channels, frames) layout;
- the same soxr call and the same length fix.

Files soundfile cannot open (M4A/AAC: libsndfile has no decoder) go to ``librosa.load`` unchanged,
which falls back to audioread/ffmpeg as the seed did. ``tests/test_speed_paths.py`` checks sample
equality with ``librosa.load`` on WAV/FLAC/OGG/MP3, mono and stereo, 22.05/44.1/48 kHz, shorter and
longer than ``duration_s``.

Conventions
-----------
- Output samples are float32 in [-1, 1], mono (channels averaged), resampled to ``sample_rate`` Hz.
- ``duration_s`` counts seconds from the start of the file; None reads the whole file.
- Paths are shown to people (error messages, the database) as :func:`display_path` text: bytes of a
  file name that are not UTF-8 appear as ``\\xNN`` escapes; such files are decoded through a
  UTF-8-named link, since soundfile encodes paths strictly.
- The decoders' own chatter on stderr (libmpg123's ``Note: Illegal Audio-MPEG-Header ... Trying to
  resync...`` for a file that is not MP3 at all) is silenced while they run
  (:func:`decoder_stderr_silenced`); what went wrong is told once, by the :class:`AudioError`.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

from fpstore.errors import AudioError

#: File name endings a folder walk takes, compared without regard to letter case: the audio formats
#: libsndfile reads (WAV, FLAC, OGG Vorbis and Opus, MP3, AIFF, CAF, AU, W64, RF64) and the audio-only ones
#: ffmpeg reads (M4A/AAC, WavPack, APE, WMA, MKA, AC-3, MP2, Speex). Video containers (.mp4, .webm) are
#: left out of walks; named on its own, any file is tried.
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".aifc",
                    ".caf", ".au", ".snd", ".w64", ".rf64", ".wv", ".ape", ".wma", ".mka", ".ac3", ".mp2", ".spx")

#: The resampler librosa.load uses by default (``res_type``), and therefore the seed.
RESAMPLE_QUALITY = "soxr_hq"


_stderr_lock = threading.Lock()
_stderr_silencers = 0
_saved_stderr_fd = -1


@contextlib.contextmanager
def decoder_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block, then restore it.

    libsndfile's MP3 decoder (libmpg123) writes notes straight to file descriptor 2, below Python, so
    only the descriptor itself can silence them. Nested and concurrent blocks (threads decoding at once)
    share one redirection, counted under a lock: the first block in redirects, the last one out
    restores. Anything else written to stderr while a decoder runs is lost too, so blocks hold only
    decoder calls, never a ``yield`` to the caller's code. Python's own buffered stderr is flushed
    first, so nothing written before the block is lost.
    """
    global _stderr_silencers, _saved_stderr_fd
    with _stderr_lock:
        if _stderr_silencers == 0:
            with contextlib.suppress(Exception):  # sys.stderr may be None or closed: nothing to flush
                sys.stderr.flush()
            _saved_stderr_fd = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            os.dup2(devnull, 2)
            os.close(devnull)
        _stderr_silencers += 1
    try:
        yield
    finally:
        with _stderr_lock:
            _stderr_silencers -= 1
            if _stderr_silencers == 0:
                os.dup2(_saved_stderr_fd, 2)
                os.close(_saved_stderr_fd)


def load_audio(path: str | os.PathLike[str], *, sample_rate: int = 22050, duration_s: float | None = 30.0) -> np.ndarray:
    """Decode an audio file to exactly the samples ``librosa.load`` returns (the seed's decoder).

    Parameters
    ----------
    path : str or path-like
        Audio file (WAV, FLAC, OGG, MP3 through libsndfile; anything else, e.g. M4A, through librosa).
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
    _check_readable(path)
    try:
        with _utf8_alias(path) as source, decoder_stderr_silenced():
            try:
                native_rate, frames = _read_frames(source, duration_s)
            except soundfile.SoundFileRuntimeError:
                return _librosa_load(source, sample_rate, duration_s)
        return resample_like_librosa(downmix(frames), native_rate, sample_rate)
    except AudioError:
        raise
    except Exception as exc:  # decoders raise many unrelated types; all mean "cannot decode"
        raise _decode_error(path, exc) from exc


def _check_readable(path: str | os.PathLike[str]) -> None:
    """Raise AudioError for a file that cannot be stat'ed or is empty, before any decoder sees it."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise AudioError(f"{display_path(path)}: cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise AudioError(f"{display_path(path)}: empty file (0 bytes)")


def _decode_error(path: str | os.PathLike[str], exc: BaseException) -> AudioError:
    return AudioError(f"{display_path(path)}: cannot decode audio ({decode_failure_reason(exc)})")


def _librosa_load(path: str | os.PathLike[str], sample_rate: int, duration_s: float | None) -> np.ndarray:
    import librosa  # imported lazily: only files libsndfile cannot read need it

    with warnings.catch_warnings():
        # librosa warns when it falls back from soundfile to audioread; the fallback is what we want.
        warnings.simplefilter("ignore")
        y, _ = librosa.load(path, sr=sample_rate, mono=True, duration=duration_s, res_type=RESAMPLE_QUALITY)
    return y


def _read_frames(path: str | os.PathLike[str], duration_s: float | None) -> tuple[int, np.ndarray]:
    """``(native_rate, frames [n, channels] float32)``: the frames librosa reads (``int(d * rate)`` of them)."""
    with soundfile.SoundFile(path) as sound:
        native_rate = sound.samplerate
        n_frames = -1 if duration_s is None else int(duration_s * native_rate)
        frames = sound.read(frames=n_frames, dtype="float32", always_2d=True)
    return native_rate, frames


def downmix(frames: np.ndarray) -> np.ndarray:
    """Average the channels as ``librosa.to_mono`` does, bit for bit.

    Parameters
    ----------
    frames : np.ndarray [shape=(n, channels)], float32

    Returns
    -------
    y : np.ndarray [shape=(n,)], float32

    Raises
    ------
    AudioError
        If a sample is NaN or inf (librosa refuses such buffers too).

    Examples
    --------
    >>> downmix(np.array([[1.0, 0.5]], dtype=np.float32)).tolist()
    [0.75]
    """
    if not np.isfinite(frames).all():
        raise AudioError("audio holds non-finite samples (NaN or inf)")
    if frames.shape[1] == 1:
        return np.ascontiguousarray(frames[:, 0])
    if frames.shape[1] == 2:
        # np.mean of two float32 values is (a + b) in float32, divided by 2 (exact): the same bits.
        return np.asarray((frames[:, 0] + frames[:, 1]) / np.float32(2))
    return np.asarray(np.mean(frames.T, axis=0))


def resampled_length(n_samples: int, native_rate: int, sample_rate: int) -> int:
    """Samples librosa keeps after resampling ``n_samples``: ``ceil(n * sample_rate / native_rate)``.

    Examples
    --------
    >>> resampled_length(44100, 44100, 22050)
    22050
    """
    return int(math.ceil(n_samples * (float(sample_rate) / native_rate)))


def resample_like_librosa(y: np.ndarray, native_rate: int, sample_rate: int) -> np.ndarray:
    """``librosa.resample(y, orig_sr=native_rate, target_sr=sample_rate, res_type="soxr_hq")``, bit for bit.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32
    native_rate, sample_rate : int, in Hz

    Returns
    -------
    y_out : np.ndarray [shape=(resampled_length(n, native_rate, sample_rate),)], float32
    """
    if native_rate == sample_rate:
        return y
    out = soxr.resample(y, native_rate, sample_rate, quality=RESAMPLE_QUALITY)
    return _fix_length(out, resampled_length(y.shape[0], native_rate, sample_rate)).astype(y.dtype, copy=False)


def _fix_length(y: np.ndarray, size: int) -> np.ndarray:
    """Cut or zero-pad to ``size`` samples (``librosa.util.fix_length``)."""
    if y.shape[0] >= size:
        return y[:size]
    return np.pad(y, (0, size - y.shape[0]))


def stream_audio(
    path: str | os.PathLike[str], *, sample_rate: int = 22050, duration_s: float | None = None,
    block_s: float = 60.0,
) -> Iterator[np.ndarray]:
    """Decode a file block by block; the concatenated blocks equal ``load_audio(path, duration_s=...)``.

    Memory holds one block of native frames and soxr's state, whatever the file's length. soxr's
    streaming resampler gives the same samples as its one-shot call (soxr buffers input internally,
    so the output does not depend on how input is cut); the last block is cut or padded so the total
    length is librosa's ``ceil(n * sample_rate / native_rate)``. ``tests/test_speed_paths.py`` checks
    the equality.

    Parameters
    ----------
    path : str or path-like
        A file soundfile can read (see :func:`can_stream`).
    sample_rate : int
        Target rate in Hz.
    duration_s : float or None
        Seconds to read from the start (``int(duration_s * native_rate)`` frames, as librosa); None: all.
    block_s : float
        Seconds of native audio decoded per block.

    Yields
    ------
    block : np.ndarray [shape=(m,)], float32, mono, at ``sample_rate`` Hz (``m`` may be 0)

    Raises
    ------
    AudioError
        If the file cannot be read.
    """
    _check_readable(path)
    try:
        with _utf8_alias(path) as source, _open_quietly(source) as sound:
            yield from _resampled_blocks(sound, sample_rate, duration_s, block_s)
    except AudioError:
        raise
    except Exception as exc:
        raise _decode_error(path, exc) from exc


def stream_audio_from(source: int | BinaryIO, label: str, *, sample_rate: int = 22050,
                      block_s: float = 1.0) -> Iterator[np.ndarray]:
    """Decode an open stream (a pipe, standard input) block by block, as :func:`stream_audio` decodes a file.

    The same reads, downmix and streaming resampler as for a file, so a recording piped in gives the
    samples ``load_audio(file, duration_s=None)`` gives for it. A file descriptor is opened by libsndfile
    itself, which reads WAV (even with the unknown length ffmpeg writes to a pipe) and MP3 from a pipe
    without seeking; a Python file object must be seekable.

    Parameters
    ----------
    source : int or binary file object
        A file descriptor (``sys.stdin.fileno()``) or a readable binary file object.
    label : str
        How the stream is named in error messages (e.g. ``"<stdin>"``).
    sample_rate : int
        Target rate in Hz.
    block_s : float
        Seconds of native audio read per block (small: a live stream yields as it arrives).

    Yields
    ------
    block : np.ndarray [shape=(m,)], float32, mono, at ``sample_rate`` Hz (``m`` may be 0)

    Raises
    ------
    AudioError
        If the stream is not audio libsndfile reads, or breaks off in a way it reports.
    """
    try:
        with soundfile.SoundFile(source, closefd=False) as sound:
            yield from _resampled_blocks(sound, sample_rate, None, block_s)
    except AudioError:
        raise
    except Exception as exc:
        # libsndfile's message names the file descriptor ("Error opening 0: ..."); its error string does not.
        said = str(getattr(exc, "error_string", "")).strip().rstrip(".").lower()
        reason = f"not audio libsndfile reads from a stream: {said}" if said else decode_failure_reason(exc)
        raise AudioError(f"{label}: cannot decode audio ({reason})") from exc


def _resampled_blocks(sound: soundfile.SoundFile, sample_rate: int, duration_s: float | None,
                      block_s: float) -> Iterator[np.ndarray]:
    """The blocks of :func:`stream_audio`, read from an open SoundFile to its end (or ``duration_s``)."""
    native_rate = sound.samplerate
    block_frames = max(1, int(block_s * native_rate))
    resampler = (
        None if native_rate == sample_rate
        else soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    )
    left = -1 if duration_s is None else int(duration_s * native_rate)
    n_in = n_out = 0
    while True:
        wanted = block_frames if left < 0 else min(block_frames, left - n_in)
        with decoder_stderr_silenced():  # not around the yield: the caller's output stays
            frames = sound.read(frames=wanted, dtype="float32", always_2d=True)
        last = frames.shape[0] < block_frames or (left >= 0 and n_in + frames.shape[0] >= left)
        mono = downmix(frames)
        n_in += mono.shape[0]
        out = mono if resampler is None else resampler.resample_chunk(mono, last=last)
        if last:
            out = _fix_length(out, max(0, resampled_length(n_in, native_rate, sample_rate) - n_out))
        n_out += out.shape[0]
        yield out
        if last:
            return


def can_stream(path: str | os.PathLike[str]) -> bool:
    """Whether soundfile opens ``path`` (so :func:`stream_audio` can decode it block by block)."""
    try:
        with _utf8_alias(path) as source, _open_quietly(source):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def _open_quietly(path: str | os.PathLike[str]) -> Iterator[soundfile.SoundFile]:
    """``soundfile.SoundFile(path)``, opened (the decoder probes the file) with stderr silenced."""
    with decoder_stderr_silenced():
        sound = soundfile.SoundFile(path)
    with sound:
        yield sound


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
            alias = os.path.join(folder, "audio" + pathlib.PurePath(display_path(path)).suffix)
            os.symlink(os.path.abspath(os.fsdecode(path)), alias)
            yield alias
        return
    yield path
