"""Fingerprint parameters: the seed notebook's configuration as one validated, immutable profile.

Conventions
-----------
- Sample rates are in Hz, durations in seconds, STFT sizes in samples.
- ``df_bins`` is a distance in STFT frequency bins; ``dt_min_frames``/``dt_max_frames`` are distances in
  STFT frames (one frame is ``hop_length / sample_rate`` seconds).
- Every default below is the seed notebook's value but ``duration_s``: fpstore loads whole files, the
  notebook the first 30 s (its data set was 30 s clips). With :data:`NOTEBOOK_PARAMS` (the defaults and
  the 30 s cut), fpstore's hashes equal the seed's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from fpstore.errors import ParameterError

#: Bits of the 32-bit hash given to each anchor/target frequency bin and to the time difference.
BITS_F = 10
BITS_DT = 12
MAX_F = (1 << BITS_F) - 1
MAX_DT = (1 << BITS_DT) - 1


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParameterError(f"{name}={value!r} must be an integer in [{low}, {high}]")


@dataclass(frozen=True)
class Zone:
    """A target zone: which peaks after an anchor are paired with it.

    Attributes
    ----------
    name : str
        Unique label, e.g. ``"Fsmall_Tshort"``.
    df_bins : int
        Largest allowed ``|f_target - f_anchor|``, in frequency bins.
    dt_min_frames, dt_max_frames : int
        Allowed range of ``t_target - t_anchor``, in frames, both ends included.
    """

    name: str
    df_bins: int
    dt_min_frames: int
    dt_max_frames: int

    def __post_init__(self) -> None:
        where = f"zone {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ParameterError(f"zone name={self.name!r} must be a non-empty string")
        _check_int(f"{where}: df_bins", self.df_bins, 0, MAX_F)
        _check_int(f"{where}: dt_min_frames", self.dt_min_frames, 0, MAX_DT)
        _check_int(f"{where}: dt_max_frames", self.dt_max_frames, 0, MAX_DT)
        if self.dt_min_frames > self.dt_max_frames:
            raise ParameterError(
                f"{where}: dt_min_frames={self.dt_min_frames} must not exceed "
                f"dt_max_frames={self.dt_max_frames}"
            )


SEED_ZONES: tuple[Zone, ...] = (
    Zone("Fsmall_Tshort", 50, 1, 20),
    Zone("Fsmall_Tlong", 50, 1, 60),
    Zone("Flarge_Tshort", 150, 1, 20),
    Zone("Flarge_Tlong", 150, 1, 60),
)


@dataclass(frozen=True)
class FingerprintParams:
    """Every parameter of the fingerprint pipeline, validated once on construction.

    Attributes
    ----------
    sample_rate : int
        Rate in Hz the audio is resampled to before the STFT (seed ``Fs``).
    n_fft : int
        STFT window and FFT size in samples (seed ``N``); the window is Hann.
    hop_length : int
        STFT hop in samples (seed ``H``).
    bin_max : int or None
        Frequency bins kept are ``0 .. bin_max - 1``; None keeps all ``n_fft // 2 + 1``.
    peak_dist_freq, peak_dist_time : int
        Half-size of the max-filter neighbourhood, in bins and frames.
    peak_thresh : float
        A peak's magnitude must exceed this (linear STFT magnitude).
    top_k_targets : int or None
        Keep only the K strongest targets per anchor and zone; None keeps all.
    duration_s : float or None
        Seconds of audio loaded from the start of each file; None (the default) loads the whole track,
        :data:`NOTEBOOK_DURATION_S` is the notebook's cut.
    zones : tuple of Zone
        Target zones; hashes are generated and stored per zone.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 1024
    bin_max: int | None = 1024
    peak_dist_freq: int = 12
    peak_dist_time: int = 6
    peak_thresh: float = 0.01
    top_k_targets: int | None = 5
    duration_s: float | None = None
    zones: tuple[Zone, ...] = field(default=SEED_ZONES)

    def __post_init__(self) -> None:
        _check_int("sample_rate", self.sample_rate, 1, 10**6)
        _check_int("n_fft", self.n_fft, 2, 1 << 20)
        _check_int("hop_length", self.hop_length, 1, 1 << 20)
        if self.bin_max is not None:
            _check_int("bin_max", self.bin_max, 1, self.n_fft // 2 + 1)
        _check_int("peak_dist_freq", self.peak_dist_freq, 0, 10**4)
        _check_int("peak_dist_time", self.peak_dist_time, 0, 10**4)
        if isinstance(self.peak_thresh, bool) or not isinstance(self.peak_thresh, (int, float)) or not (
            math.isfinite(self.peak_thresh) and self.peak_thresh >= 0
        ):
            raise ParameterError(f"peak_thresh={self.peak_thresh!r} must be a finite number >= 0")
        if self.top_k_targets is not None:
            _check_int("top_k_targets", self.top_k_targets, 1, 10**6)
        if self.duration_s is not None and (
            isinstance(self.duration_s, bool)
            or not isinstance(self.duration_s, (int, float))
            or not (math.isfinite(self.duration_s) and self.duration_s > 0)
        ):
            raise ParameterError(
                f"duration_s={self.duration_s!r} must be a positive number of seconds, or None for the full track"
            )
        if not self.zones:
            raise ParameterError("zones must hold at least one target zone")
        names = [zone.name for zone in self.zones]
        if len(set(names)) != len(names):
            raise ParameterError(f"zone names must be unique, got {names}")

    @property
    def n_bins(self) -> int:
        """Number of frequency bins kept from the STFT."""
        return self.n_fft // 2 + 1 if self.bin_max is None else self.bin_max

    @property
    def seconds_per_frame(self) -> float:
        """Duration of one STFT hop, in seconds."""
        return self.hop_length / self.sample_rate

    def zone(self, name: str) -> Zone:
        """Return the zone called ``name``; raise ParameterError listing the known names otherwise."""
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise ParameterError(f"zone={name!r} is not one of {[z.name for z in self.zones]}")

    def profile(self) -> dict[str, Any]:
        """Parameters that decide what a hash means (all but ``duration_s``), as plain JSON values.

        Two stores can be matched against each other only if their profiles are equal.
        """
        values = dataclasses.asdict(self)
        del values["duration_s"]
        values["zones"] = [dataclasses.asdict(zone) for zone in self.zones]
        return values

    def profile_id(self) -> str:
        """A short digest of :meth:`profile` (16 hex digits): equal ids, equal meaning of every hash.

        A client that fingerprints its queries itself sends it with the hashes (``POST
        /v1/match/fingerprint``) so that hashes made with other parameters are refused, not matched.

        Examples
        --------
        >>> FingerprintParams().profile_id() == FingerprintParams(duration_s=None).profile_id()
        True
        >>> FingerprintParams().profile_id() == FingerprintParams(hop_length=512).profile_id()
        False
        """
        canonical = json.dumps(self.profile(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> FingerprintParams:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


#: Seconds the seed notebook loads from each file (its data set was 30 s clips).
NOTEBOOK_DURATION_S = 30.0
#: The seed notebook's parameters, its 30 s cut included: with them fpstore's hashes equal the seed's.
NOTEBOOK_PARAMS = FingerprintParams(duration_s=NOTEBOOK_DURATION_S)
