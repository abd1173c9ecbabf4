"""Query preparation: a query file or stream checked, decoded and fingerprinted for the :class:`Evidence` it will get.

A query file is found and checked as ingest finds and checks its files (:mod:`fpstore.runtime.files`,
:func:`fpstore.runtime.workers.fingerprint_job`), so one that cannot be matched gets the one-line reason
an ingest would give it. Nothing here reads the database.

Conventions
-----------
- Sample rates in Hz; the query is fingerprinted with the database's parameters (``duration_s=None``:
  whole).
- The shifted and resampled fingerprints (:mod:`fpstore.signal.variants`) are computed on first use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fpstore.matching.evidence import ROBUST, Evidence
from fpstore.runtime.files import one_line, unreadable_reason
from fpstore.runtime.workers import fingerprint_job, no_hashes_reason, signal_job
from fpstore.signal.audio import display_path
from fpstore.signal.params import FingerprintParams
from fpstore.signal.query_peaks import QueryPicking
from fpstore.signal.variants import SpeedVariant, picked_variant, speed_variant

#: The query argument that means "the audio on standard input" (when a ``stdin`` stream is given).
STDIN_ARGUMENT = "-"
#: How standard input is named in results and failure reasons.
STDIN_LABEL = "<stdin>"


def _quiet_variant(audio: np.ndarray, params: FingerprintParams, speed: float, shifts: int,
                   first: SpeedVariant | None = None, picks: Sequence[QueryPicking] = (),
                   spectrograms: dict[int, np.ndarray] | None = None) -> SpeedVariant:
    """:func:`fpstore.signal.variants.speed_variant` without its warnings.

    A query without peaks gets its one-line reason instead (:func:`prepare_query`), and a variant
    without them simply votes for nothing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return speed_variant(audio, params, speed, shifts, first, picks, spectrograms=spectrograms)


def _holds(variant: SpeedVariant | None, params: FingerprintParams) -> bool:
    """True if every fingerprint of ``variant`` has the hashes of every zone of ``params``."""
    return variant is not None and all(zone.name in fingerprint.zones for fingerprint in variant.fingerprints
                                       for zone in params.zones)


@dataclass
class PreparedQuery:
    """A query ready to be matched: as it is, and its audio while shifts or other speeds may be tried.

    The looks' fingerprints are computed with the zones of the ``params`` they are asked with (the
    matcher asks for the zone that votes only) and computed again if asked for more zones later.

    Attributes
    ----------
    first : SpeedVariant
        The query as it is (speed 1.0, unshifted).
    audio : np.ndarray or None
        Its samples, kept when :class:`Evidence` has shifts or speeds besides 1.0.
    spectrograms : dict
        Magnitude spectrograms of the query at speed 1.0, by the samples its shift dropped, kept for
        the look at :attr:`Evidence.own_picks` (which picks its peaks on the same spectrograms).
    """

    first: SpeedVariant
    audio: np.ndarray | None = None
    spectrograms: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _shifted: SpeedVariant | None = field(default=None, repr=False)
    _screen: tuple[SpeedVariant, ...] | None = field(default=None, repr=False)
    _picked: dict[QueryPicking, SpeedVariant] = field(default_factory=dict, repr=False)
    #: Held while a variant is made: the matcher may make the next look's in another thread
    #: (:meth:`fpstore.db.lookup.Lookup.prefetch`), and it is made once; and the warnings filters that
    #: making one swaps (:func:`_quiet_variant`) are the process's, so two threads must not swap them at once.
    _making: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def _samples(self) -> np.ndarray:
        assert self.audio is not None, "a query prepared with shifts or speeds keeps its audio"
        return self.audio

    def shifted(self, params: FingerprintParams, evidence: Evidence) -> SpeedVariant:
        """Speed 1.0 at every shift and peak selection, fingerprinted on first use (the first look's reused)."""
        if evidence.shifts == 1 and not evidence.picks:
            return self.first
        with self._making:
            if not _holds(self._shifted, params):
                self._shifted = _quiet_variant(self._samples(), params, 1.0, evidence.shifts, self.first,
                                               evidence.picks, self.spectrograms if evidence.own_picks else None)
            assert self._shifted is not None
            return self._shifted

    def screen(self, params: FingerprintParams, evidence: Evidence) -> tuple[SpeedVariant, ...]:
        """The other speeds unshifted (the speeds step's screen), fingerprinted on first use."""
        with self._making:
            if self._screen is None or not all(_holds(variant, params) for variant in self._screen):
                self._screen = tuple(_quiet_variant(self._samples(), params, speed, 1) for speed in evidence.speeds[1:])
            return self._screen

    def picked(self, params: FingerprintParams, evidence: Evidence, picking: QueryPicking) -> SpeedVariant:
        """Speed 1.0 at every shift (or the picking's own) under one own pick of the evidence, fingerprinted on first use."""
        with self._making:
            if not _holds(self._picked.get(picking), params):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._picked[picking] = picked_variant(self._samples(), params, picking.shifts or evidence.shifts,
                                                           (picking,), spectrograms=self.spectrograms)
            return self._picked[picking]

    def at_speed(self, params: FingerprintParams, evidence: Evidence, speed: float) -> SpeedVariant:
        """One of the other speeds at every shift (its unshifted fingerprint taken from the screen)."""
        unshifted = next(variant for variant in self.screen(params, evidence) if variant.speed == speed)
        if evidence.shifts == 1:
            return unshifted
        with self._making:  # (warnings.catch_warnings is not thread-safe: one variant made at a time)
            return _quiet_variant(self._samples(), params, speed, evidence.shifts, unshifted)


def prepare_query(path: str | os.PathLike[str], params: FingerprintParams,
                  evidence: Evidence = ROBUST) -> PreparedQuery | str:
    """The query file fingerprinted for ``evidence``, or why it cannot be: one line naming the file.

    The file is checked before it is opened (:func:`fpstore.runtime.files.unreadable_reason`: a named pipe
    would block), then decoded and fingerprinted as a worker of ingest does
    (:func:`fpstore.runtime.workers.fingerprint_job`), so a file fails a match for the same reason it fails
    an ingest (``empty file (0 bytes)``, ``cannot decode audio (...)``, ``no hashes: ...``). With
    shifts or speeds, the samples are decoded whole and each shift fingerprinted from them.

    Parameters
    ----------
    path : str or path-like
    params : FingerprintParams
        The database's (:meth:`Store.params` with ``duration_s=None``).
    evidence : Evidence

    Returns
    -------
    prepared : PreparedQuery or str
    """
    path = Path(path)
    reason = unreadable_reason(path)
    if reason is not None:
        return one_line(reason)
    if not evidence.needs_audio:
        fingerprint = fingerprint_job(path, params)
        return one_line(fingerprint) if isinstance(fingerprint, str) else PreparedQuery(SpeedVariant(1.0, (fingerprint,)))
    audio = signal_job(path, params)
    if isinstance(audio, str):
        return one_line(audio)
    spectrograms: dict[int, np.ndarray] = {}
    first = _quiet_variant(audio, params, 1.0, 1, spectrograms=spectrograms if evidence.own_picks else None)
    if first.fingerprints[0].n_postings == 0:
        return one_line(no_hashes_reason(path, first.fingerprints[0], params))
    return PreparedQuery(first, audio, spectrograms)



#: ``SpeedVariant.speed`` of the other speed factors pooled into one look (no factor of its own).
POOLED_SPEEDS = 0.0


def pooled_speeds(variants: Sequence[SpeedVariant]) -> SpeedVariant:
    """One look of every variant's fingerprints, voting into the same bins (:attr:`Evidence.pool_speeds`).

    A query played at factor ``f`` and resampled by it starts at the same stored frame whatever ``f``
    was tried, so the right factor's votes fall in the bin the others' would: the factors can share bins
    as the shifts do.

    Parameters
    ----------
    variants : sequence of SpeedVariant

    Returns
    -------
    variant : SpeedVariant
        With ``speed`` :data:`POOLED_SPEEDS`.
    """
    return SpeedVariant(POOLED_SPEEDS, tuple(fp for variant in variants for fp in variant.fingerprints))



def prepare_stream(stream: BinaryIO, params: FingerprintParams, evidence: Evidence = ROBUST, *,
                   label: str = STDIN_LABEL) -> PreparedQuery | str:
    """:func:`prepare_query` of the stream's bytes (any format a file may have), spooled to a temporary file.

    Parameters
    ----------
    stream : binary stream
        Read to its end (standard input, an HTTP request's body).
    params : FingerprintParams
        The database's (:meth:`Store.params` with ``duration_s=None``).
    evidence : Evidence
    label : str
        How the stream is named in a failure reason (``"<stdin>"``, an uploaded file's name).

    Returns
    -------
    prepared : PreparedQuery or str
        The prepared query, or why it cannot be matched (one line naming ``label``).
    """
    with tempfile.TemporaryDirectory(prefix="fpstore-stdin-") as folder:
        spooled = Path(folder) / "stdin"
        with open(spooled, "wb") as handle:
            shutil.copyfileobj(stream, handle)
        outcome = prepare_query(spooled, params, evidence)
    return outcome.replace(display_path(spooled), label) if isinstance(outcome, str) else outcome
