"""Configuration: the TOML file, its validation, and `fpstore config show`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fpstore.cli import cli
from fpstore.errors import ParameterError
from fpstore.runtime.config import settings_in_force

GOOD = """
[database]
url = "postgresql://team:secret@dbhost/fingerprints"

[fingerprint]
top_k_targets = "none"
hop_length = 512

[[fingerprint.zones]]
name = "wide"
df_bins = 150
dt_min_frames = 1
dt_max_frames = 60
"""


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    monkeypatch.delenv("FPSTORE_CONFIG", raising=False)
    monkeypatch.delenv("FPSTORE_DATABASE_URL", raising=False)


def by_key(rows):
    return {row["key"]: row for row in rows}


def test_sources_default_file_option(tmp_path) -> None:
    config = tmp_path / "fp.toml"
    config.write_text(GOOD)
    rows = by_key(settings_in_force(str(config), options={"hop_length": 256}))
    assert rows["config_file"] == {"key": "config_file", "value": str(config), "source": "option"}
    assert rows["hop_length"] == {"key": "hop_length", "value": 256, "source": "option"}
    assert rows["top_k_targets"] == {"key": "top_k_targets", "value": None, "source": str(config)}
    assert rows["n_fft"]["source"] == "default" and rows["n_fft"]["value"] == 2048
    assert rows["zones"]["value"] == [{"name": "wide", "df_bins": 150, "dt_min_frames": 1, "dt_max_frames": 60}]
    assert rows["database_url"]["value"] == "postgresql+psycopg://team:***@dbhost/fingerprints"


def test_environment_sources(tmp_path, monkeypatch) -> None:
    config = tmp_path / "fp.toml"
    config.write_text(GOOD)
    monkeypatch.setenv("FPSTORE_CONFIG", str(config))
    monkeypatch.setenv("FPSTORE_DATABASE_URL", "postgresql://me@elsewhere/db")
    rows = by_key(settings_in_force())
    assert rows["config_file"]["source"] == "environment"
    assert rows["database_url"] == {"key": "database_url", "value": "postgresql+psycopg://me@elsewhere/db",
                                    "source": "environment"}


@pytest.mark.parametrize(("body", "message"), [
    ("[fingerprint]\nhop_lenght = 512\n", r"unknown key\(s\) \['hop_lenght'\] in \[fingerprint\]"),
    ("[fingerprint.zones]\n", r"\[fingerprint\] zones must hold at least one target zone"),
    ("[[fingerprint.zones]]\nname='z'\ndf_bins=50\ndt_min_frames=1\ndt_max_frames=4096\n",
     r"dt_max_frames=4096 must be an integer in \[0, 4095\]"),
    ("[[fingerprint.zones]]\nname='z'\ndf_bins=1024\ndt_min_frames=1\ndt_max_frames=20\n",
     r"df_bins=1024 must be an integer in \[0, 1023\]"),
    ("[[fingerprint.zones]]\nname='z'\ndf_bins=50\ndt_min_frames=30\ndt_max_frames=20\n",
     r"dt_min_frames=30 must not exceed dt_max_frames=20"),
    ("[[fingerprint.zones]]\nname='z'\ndf_bins=50\ndt_min_frames=1\ndt_max_frames=20\ncolour='red'\n",
     r"unknown key\(s\) \['colour'\]"),
    ("[database]\nurl='postgresql://x/y'\nuser='me'\n", r"unknown key\(s\) \['user'\] in \[database\]"),
    ("[fingerprints]\n", r"unknown section\(s\) \['fingerprints'\]"),
])
def test_bad_config_is_refused_with_the_key_named(tmp_path, body, message) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(body)
    with pytest.raises(ParameterError, match=message):
        settings_in_force(str(config))


def test_cli_config_show(tmp_path) -> None:
    config = tmp_path / "fp.toml"
    config.write_text(GOOD)
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "show", "--config", str(config), "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    rows = by_key(json.loads(result.output))
    assert rows["top_k_targets"] == {"key": "top_k_targets", "value": 3, "source": "option"}
    assert rows["hop_length"]["source"] == str(config)
    assert "secret" not in result.output
    table = runner.invoke(cli, ["--db", "postgresql://a@b/c", "config", "show"])
    assert table.exit_code == 0
    assert table.output.splitlines()[1].split() == ["database_url", "postgresql+psycopg://a@b/c", "option"]
    assert table.output.splitlines()[-1].split()[-1] == "default"


def test_cli_config_show_refuses_bad_file(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[fingerprint]\nbin_max = 5000\n")
    result = CliRunner().invoke(cli, ["config", "show", "--config", str(config)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {config}: [fingerprint] bin_max=5000 must be an integer in [1, 1025]")
