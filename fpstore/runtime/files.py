"""Files: finding audio files under a folder, telling why one cannot be read, digesting its content.

Conventions
-----------
- Files are listed in sorted order of their path (as bytes); extensions are matched without regard to
  case (:data:`fpstore.signal.audio.AUDIO_EXTENSIONS`).
- Paths are shown as :func:`fpstore.signal.audio.display_path` text and reasons are one line
  (:func:`one_line`), whatever bytes a file name holds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fpstore.errors import NotFound
from fpstore.signal.audio import AUDIO_EXTENSIONS, display_path


def one_line(text: str) -> str:
    """``text`` as one line of valid UTF-8: line breaks and other control characters become escapes.

    File names may hold newlines (and non-UTF-8 bytes, already escaped by :func:`display_path`); a failure
    reason naming such a file must still be one line, in the terminal and in ``failures.reason``.

    Parameters
    ----------
    text : str
        May hold surrogate escapes (undecodable bytes) and control characters.

    Returns
    -------
    line : str
        ``"new\\nline.mp3"`` for ``"new\nline.mp3"``; printable text is unchanged.
    """
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (one line, naming it), or None if it can.

    Checked before anything opens the file, so that a named pipe (which would block ``open`` forever),
    a device, a broken symbolic link or a link loop gets a precise reason instead of a hang.

    Parameters
    ----------
    path : pathlib.Path
        A file found by :func:`discover_audio_files` (possibly a symbolic link).

    Returns
    -------
    reason : str or None
        ``"<path>: <reason>"``, e.g. ``"a.mp3: symbolic link loop"``; None for a readable regular file.
    """
    shown = display_path(path)
    try:
        status = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{shown}: symbolic link loop"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"{shown}: broken symbolic link (to {display_path(os.readlink(path))}, which does not exist)"
        return f"{shown}: cannot read ({exc.strerror or exc})"
    if not stat.S_ISREG(status.st_mode):
        return f"{shown}: not a regular file (a named pipe, socket or device)"
    if not os.access(path, os.R_OK):
        return f"{shown}: cannot read (permission denied)"
    return None


@dataclass(frozen=True)
class FolderScan:
    """What a walk of a folder found.

    Attributes
    ----------
    audio : list of pathlib.Path
        Files with an audio extension, in sorted path order.
    others : list of pathlib.Path
        The other files that a user would expect to hear about: neither hidden (a name starting with
        ``.``) nor under a hidden folder, in sorted path order.
    """

    audio: list[Path]
    others: list[Path] = field(default_factory=list)

    def other_extensions(self) -> dict[str, int]:
        """Number of :attr:`others` per extension (lower case; ``""`` for none), sorted by extension."""
        counts = Counter(path.suffix.lower() for path in self.others)
        return dict(sorted(counts.items()))


def scan_folder(root: str | os.PathLike[str]) -> FolderScan:
    """Audio files under ``root`` (recursively), or ``root`` itself if it is a file, and the files skipped.

    A file named on its own is taken whatever its extension (the decoders say whether they read it).
    Symbolic links to files are listed (their target is read later); links to folders are not followed,
    so a link loop cannot trap the walk.

    Raises
    ------
    NotFound
        If ``root`` does not exist.
    """
    root_path = Path(root)
    if root_path.is_file():
        return FolderScan([root_path])
    if not root_path.is_dir():
        raise NotFound(f"{display_path(root_path)}: no such file or folder")
    audio: list[Path] = []
    others: list[Path] = []
    for folder, _subfolders, names in os.walk(root_path):
        hidden_folder = any(part.startswith(".") for part in Path(folder).relative_to(root_path).parts)
        for name in names:
            if name.lower().endswith(AUDIO_EXTENSIONS):
                audio.append(Path(folder) / name)
            elif not (hidden_folder or name.startswith(".")):
                others.append(Path(folder) / name)
    return FolderScan(sorted(audio, key=os.fsencode), sorted(others, key=os.fsencode))


def discover_audio_files(root: str | os.PathLike[str]) -> list[Path]:
    """Audio files under ``root`` (recursively), or ``[root]`` if it is a file: ``scan_folder(root).audio``.

    Raises
    ------
    NotFound
        If ``root`` does not exist.
    """
    return scan_folder(root).audio


def file_sha256(path: Path) -> bytes:
    """SHA-256 digest of the file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()
