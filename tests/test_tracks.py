"""Track management against a real database: list, show, remove."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_tunes
from sqlalchemy import create_engine, text

from fpstore.cli import cli
from fpstore.db.store import Store
from fpstore.errors import NotFound
from fpstore.ingest import ingest

pytestmark = pytest.mark.postgres


@pytest.fixture
def three_tracks(store, tmp_path):
    write_tunes(tmp_path / "music", [21, 22, 23], duration_s=5.0)
    ingest(store, tmp_path / "music", jobs=1)
    return store


def postings_of(store, track_id: int) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM hashes WHERE track_id = :id"), {"id": track_id}).scalar_one()


def test_list_filters_and_counts(three_tracks) -> None:
    everything = three_tracks.tracks.search()
    assert [t["file_name"] for t in everything.tracks] == ["tune_021.wav", "tune_022.wav", "tune_023.wav"]
    assert everything.n_total == everything.n_matching == 3
    assert everything.postings_matching == sum(postings_of(three_tracks, t["id"]) for t in everything.tracks)
    named = three_tracks.tracks.search(name="TUNE_02?.wav", limit=1)
    assert len(named.tracks) == 1 and named.n_matching == 3
    assert three_tracks.tracks.search(name="*22*").n_matching == 1
    smallest = min(t["n_postings"] for t in everything.tracks)
    assert three_tracks.tracks.search(max_postings=smallest).n_matching == 1
    assert three_tracks.tracks.search(run_id=99).n_matching == 0


def test_show_counts_postings_per_zone(three_tracks) -> None:
    info = three_tracks.tracks.show("tune_022.wav")
    assert info["id"] == 2 and info["run_command"] == "ingest"
    assert sum(z["postings"] for z in info["zones"]) == info["n_postings"] == postings_of(three_tracks, 2)
    assert all(z["shared_hashes"] <= z["unique_hashes"] <= z["postings"] for z in info["zones"])
    with pytest.raises(NotFound, match="no track answer"):
        three_tracks.tracks.show("nothing.wav")


def test_remove_deletes_postings_in_one_go_and_advises_vacuum(three_tracks) -> None:
    before = postings_of(three_tracks, 1) + postings_of(three_tracks, 3)
    removal = three_tracks.tracks.remove([1, 3])
    assert removal.track_ids == [1, 3] and removal.postings_removed == before
    assert removal.vacuum_advised and removal.share_removed > 0.5
    assert postings_of(three_tracks, 1) == postings_of(three_tracks, 3) == 0
    assert [t["id"] for t in three_tracks.tracks.search().tracks] == [2]


def test_remove_with_an_unknown_id_removes_nothing(three_tracks) -> None:
    with pytest.raises(NotFound, match="no track with id 7: nothing removed"):
        three_tracks.tracks.remove([2, 7])
    assert three_tracks.tracks.search().n_total == 3 and postings_of(three_tracks, 2) > 0


def test_cli_tracks(three_tracks, db_url) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["--db", db_url, "tracks", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output)["n_matching"] == 3
    text_list = runner.invoke(cli, ["--db", db_url, "tracks", "list", "--name", "*21*"])
    assert text_list.exit_code == 0 and text_list.output.endswith("1 of 3 tracks match, "
                                                                   f"{postings_of(three_tracks, 1):,} postings\n")
    shown = runner.invoke(cli, ["--db", db_url, "tracks", "show", "1", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["file_name"] == "tune_021.wav"
    missing = runner.invoke(cli, ["--db", db_url, "tracks", "show", "42"])
    assert missing.exit_code == 1 and missing.output.startswith("Error: no track answer")
    declined = runner.invoke(cli, ["--db", db_url, "tracks", "remove", "1", "3"], input="n\n")
    assert declined.exit_code == 1 and three_tracks.tracks.search().n_total == 3
    assert declined.output == ("Remove 2 tracks (1 tune_021.wav, 3 tune_023.wav) and all their postings? [y/N]: n\n"
                               "Error: removal declined: nothing removed\n")
    one = runner.invoke(cli, ["--db", db_url, "tracks", "remove", "3"], input="y\n")
    assert one.output.startswith("Remove 1 track (3 tune_023.wav) and all their postings? [y/N]: y\n"
                                 "removed 1 track and ")
    removed = runner.invoke(cli, ["--db", db_url, "tracks", "remove", "1", "2", "--yes", "--vacuum"])
    assert removed.exit_code == 0, removed.output
    assert removed.output.startswith("removed 2 tracks and ") and "then vacuumed" in removed.output
    unknown = runner.invoke(cli, ["--db", db_url, "tracks", "remove", "9", "--yes"])
    assert unknown.exit_code == 1 and "no track with id 9" in unknown.output


def test_names_are_read_once_per_track_and_tracks_added_elsewhere_are_found(three_tracks, db_url, tmp_path,
                                                                            monkeypatch) -> None:
    statements = []
    raw = three_tracks.raw
    monkeypatch.setattr(three_tracks, "raw", lambda: statements.append(1) or raw())
    assert three_tracks.tracks.names([3, 1, 99]) == {3: "tune_023.wav", 1: "tune_021.wav"}
    assert three_tracks.tracks.names([1, 3]) == {1: "tune_021.wav", 3: "tune_023.wav"}
    assert len(statements) == 1  # the second answer came from the names already read
    # Another process (another worker of fpstore serve) ingests a track and deletes one: the names asked
    # for afterwards are the database's.
    other = Store(create_engine(db_url))
    write_tunes(tmp_path / "more", [24], duration_s=5.0)
    ingest(other, tmp_path / "more", jobs=1)
    other.tracks.remove([2])
    other.engine.dispose()
    assert three_tracks.tracks.names([1, 4, 2]) == {1: "tune_021.wav", 4: "tune_024.wav"}
    assert len(statements) == 2
    # Tables dropped and made again by this process: the ids start again, and so do the names read.
    monkeypatch.undo()
    assert three_tracks.lookup.track_frames(np.array([4]))[0] > 0
    three_tracks.downgrade("base")
    three_tracks.upgrade()
    ingest(three_tracks, tmp_path / "more", jobs=1)
    assert three_tracks.tracks.names([1]) == {1: "tune_024.wav"}
    assert three_tracks.lookup.track_frames(np.array([4]))[0] == 0  # no track 4 any more
