"""Pictures: PNGs of the requested size that are not blank."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_tunes
from matplotlib.image import imread

from fpstore.cli import cli
from fpstore.errors import ParameterError
from fpstore.ingest import ingest
from fpstore.plots import anchor_pairs, plot_fingerprint, plot_report
from fpstore.signal.hashing import ZoneHashes
from fpstore.signal.params import FingerprintParams


def assert_png(path, width_px: int, height_px: int) -> None:
    image = imread(path)
    assert image.shape[:2] == (height_px, width_px)
    assert float(np.var(image[..., :3])) > 0


def test_plot_fingerprint_png(tmp_path) -> None:
    [tune] = write_tunes(tmp_path, [31], duration_s=4.0)
    counts = plot_fingerprint(tune, tmp_path / "f.png", FingerprintParams(), zone="Flarge_Tlong", n_anchors=3,
                              width_px=800, height_px=450)
    assert counts["n_peaks"] > 0 and 0 < counts["n_pairs_drawn"] <= 3 * 5
    assert_png(tmp_path / "f.png", 800, 450)
    with pytest.raises(ParameterError, match="zone='nope'"):
        plot_fingerprint(tune, tmp_path / "g.png", FingerprintParams(), zone="nope")


def test_anchor_pairs_decode_the_hash() -> None:
    hashes = np.array([(100 << 22) | (130 << 12) | 4, (100 << 22) | (90 << 12) | 9, (7 << 22) | (8 << 12) | 1],
                      dtype=np.uint32)
    anchors, targets = anchor_pairs(ZoneHashes(hashes, np.array([50, 50, 10], np.int32)), 1)
    assert anchors.tolist() == [[10, 7]] and targets.tolist() == [[11, 8]]
    anchors, targets = anchor_pairs(ZoneHashes(hashes, np.array([50, 50, 10], np.int32)), 2)
    assert sorted(targets.tolist()) == [[11, 8], [54, 130], [59, 90]]


@pytest.mark.postgres
def test_report_plots(store, tmp_path) -> None:
    write_tunes(tmp_path / "music", [32, 33], duration_s=4.0)
    ingest(store, tmp_path / "music", jobs=1)
    paths = plot_report(store, tmp_path / "plots", width_px=900, height_px=600)
    assert [p.name for p in paths] == ["hashes_per_track.png", "posting_list_lengths.png"]
    for path in paths:
        assert_png(path, 900, 600)


@pytest.mark.postgres
def test_cli_plot_and_report_plots(db_url, tmp_path) -> None:
    [tune] = write_tunes(tmp_path, [34], duration_s=3.0)
    runner = CliRunner()
    result = runner.invoke(cli, ["plot", str(tune), "-o", str(tmp_path / "p.png"), "--width", "640", "--height",
                                 "480", "--pairs-zone", "Fsmall_Tshort"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {tmp_path / 'p.png'} (640x480): ")
    assert_png(tmp_path / "p.png", 640, 480)
    bad = runner.invoke(cli, ["plot", str(tune), "--pairs-zone", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: zone='nope'")
    assert runner.invoke(cli, ["--db", db_url, "ingest", str(tmp_path), "--jobs", "1"]).exit_code == 0
    report = runner.invoke(cli, ["--db", db_url, "report", "--plots", str(tmp_path / "plots")])
    assert report.exit_code == 0 and (tmp_path / "plots" / "posting_list_lengths.png").stat().st_size > 0
