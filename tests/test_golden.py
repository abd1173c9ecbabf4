"""Golden regression fixtures (tests/data/<case>/): fpstore against the oracle's stored outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import sorted_pairs

from fpstore.signal.audio import load_audio
from fpstore.signal.fingerprint import fingerprint_file
from fpstore.signal.params import NOTEBOOK_PARAMS
from fpstore.signal.peaks import find_peaks
from fpstore.signal.spectrogram import magnitude_spectrogram

DATA = Path(__file__).parent / "data"
CASES = sorted(path.parent for path in DATA.glob("*/expected.json"))
#: Magnitudes are stored as JSON decimals of float32 values; 1e-6 relative is far below any real change.
MAGNITUDE_RTOL = 1e-6


def test_fixture_layout_is_complete() -> None:
    assert len(CASES) > 0
    inputs = sorted(path.parent for path in DATA.glob("*/input.wav"))
    assert inputs == CASES


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_golden_case(case: Path) -> None:
    expected = json.loads((case / "expected.json").read_text())
    params = NOTEBOOK_PARAMS  # the goldens are the seed's output, its 30 s cut included
    fp = fingerprint_file(case / "input.wav", params)
    assert (fp.n_frames, fp.n_peaks) == (expected["n_frames"], expected["n_peaks"])
    for zone, pairs in expected["zones"].items():
        assert sorted_pairs(*fp.zones[zone]) == [tuple(pair) for pair in pairs], zone
    peaks = find_peaks(magnitude_spectrogram(load_audio(case / "input.wav")))
    first = np.array(expected["first_peaks"])
    n = len(first)
    assert peaks.t_frames[:n].tolist() == first[:, 0].astype(int).tolist()
    assert peaks.f_bins[:n].tolist() == first[:, 1].astype(int).tolist()
    assert np.allclose(peaks.magnitudes[:n], first[:, 2], rtol=MAGNITUDE_RTOL, atol=0)
