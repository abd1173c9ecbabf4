"""Fuzzing the audio-loading boundary: random bytes under every extension give a clean error, never a
crash or a hang.

Random bytes alone mostly stop at the first format check, so half the inputs start with a real file
header (RIFF/WAVE, fLaC, OggS, ID3 and an MPEG frame sync, an MP4 ``ftyp`` box) to reach the decoders'
inner parsers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from fpstore.errors import AudioError
from fpstore.signal.audio import AUDIO_EXTENSIONS, load_audio

#: Longest a single decode of a few kilobytes may take before we call it a hang (normal: < 1 s).
DECODE_TIMEOUT_S = 30
PROCESS_TIMEOUT_S = 300

#: Real headers with random bodies, for some extensions; the other extensions get random bytes only.
HEADERS = {
    ".wav": b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x22\x56\x00\x00"
            b"\x44\xac\x00\x00\x02\x00\x10\x00data",
    ".flac": b"fLaC\x00\x00\x00\x22",
    ".ogg": b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00",
    ".mp3": b"ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64",
    ".m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom\x00\x00\x00\x00",
}


class DecodeHang(Exception):
    """A decoder did not return within DECODE_TIMEOUT_S."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise DecodeHang(f"decoding took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    extension=st.sampled_from(AUDIO_EXTENSIONS),
    with_header=st.booleans(),
    body=st.binary(min_size=0, max_size=4096),
)
def test_random_bytes_give_audio_error_or_audio(tmp_path_factory, extension: str, with_header: bool, body: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"random{extension}"
    path.write_bytes((HEADERS.get(extension, b"") if with_header else b"") + body)
    try:
        with time_limit(DECODE_TIMEOUT_S):
            y = load_audio(path, sample_rate=22050, duration_s=30.0)
    except AudioError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message
        return
    # a decoder that resyncs on noise may return samples: they must still be valid audio
    assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()


@pytest.mark.postgres
def test_ingest_of_random_files_accounts_for_every_file(db_url, tmp_path, rng_factory) -> None:
    rng = rng_factory(77)
    folder = tmp_path / "noise"
    folder.mkdir()
    names = []
    for index in range(30):
        extension = AUDIO_EXTENSIONS[index % len(AUDIO_EXTENSIONS)]
        body = rng.integers(0, 256, int(rng.integers(0, 20000)), dtype=np.uint8).tobytes()
        header = HEADERS.get(extension, b"") if index % 2 else b""
        names.append(f"noise_{index:02d}{extension}")
        (folder / names[-1]).write_bytes(header + body)
    command = [sys.executable, "-m", "fpstore", "--db", db_url, "-q", "ingest", str(folder), "--jobs", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode in (0, 3), done.stderr
    assert "Traceback" not in done.stderr
    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT file_name FROM tracks")).scalars())
        failed = {Path(p).name for p in conn.execute(text("SELECT path FROM failures")).scalars()}
        status = conn.execute(text("SELECT status FROM runs")).scalar_one()
    engine.dispose()
    assert stored | failed == set(names) and not stored & failed
    assert status == "completed"
