"""The decoders' own chatter stays off stderr; fpstore's one-line reason stays on it.

libmpg123 (inside libsndfile) writes ``Note: Illegal Audio-MPEG-Header ... Trying to resync...`` to file
descriptor 2 itself, so only real processes show what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_tunes

CHATTER = ("Illegal Audio-MPEG-Header", "resync", "Note:")


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          check=False, env=env)


@pytest.mark.postgres
def test_ingest_of_a_text_file_named_mp3_says_one_line(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "x.mp3").write_bytes(b"hello")
    write_tunes(tmp_path, [1], duration_s=4.0)
    env = {k: v for k, v in os.environ.items() if k != "FPSTORE_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "fpstore", "--db", db_url, "ingest", str(tmp_path), "--jobs", "1"],
                            capture_output=True, text=True, timeout=300, check=False, env=env)
    assert result.returncode == 3, result.stderr
    assert not [line for line in result.stderr.splitlines() if any(word in line for word in CHATTER)], result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert failed == [f"failed: {tmp_path / 'x.mp3'}: cannot decode audio (no audio frames could be decoded: "
                      "truncated, or not audio at all)"]
    assert "1 added" in result.stdout


#: Threads decode a bad MP3 (streamed and whole) while the main thread writes to stderr in between.
THREADS = """
import sys, threading
from fpstore.errors import AudioError
from fpstore.signal.audio import can_stream, load_audio, stream_audio

def decode(path):
    for _ in range(20):
        try:
            load_audio(path)
        except AudioError:
            pass
        can_stream(path)
        try:
            list(stream_audio(path))
        except AudioError:
            pass

threads = [threading.Thread(target=decode, args=(sys.argv[1],)) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("stderr still works", file=sys.stderr, flush=True)
"""


def test_concurrent_decoders_restore_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "x.mp3"
    bad.write_bytes(b"hello")
    result = run_python(THREADS, str(bad))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "stderr still works\n"


def test_stream_blocks_leave_the_callers_stderr_alone(tmp_path: Path) -> None:
    """Between two blocks of a stream, the caller's own writes to stderr are not swallowed."""
    (path,) = write_tunes(tmp_path, [1], duration_s=3.0)
    code = ("import os, sys\nfrom fpstore.signal.audio import stream_audio\n"
            "for block in stream_audio(sys.argv[1], block_s=1.0):\n    os.write(2, b'block\\n')\n")
    result = run_python(code, str(path))
    assert result.returncode == 0 and result.stderr.count("block\n") >= 3, result.stderr
