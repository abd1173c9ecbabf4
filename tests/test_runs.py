"""``with store.run(...)`` owns a run's lifecycle for ingest and import alike."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from fpstore.signal.params import FingerprintParams

pytestmark = pytest.mark.postgres


def runs(store) -> list[tuple[str, str, bool]]:
    with store.engine.connect() as conn:
        return [(r.command, r.status, r.finished_at is not None)
                for r in conn.execute(text("SELECT command, status, finished_at FROM runs ORDER BY id"))]


def test_a_run_completes_fails_or_is_interrupted_with_its_block(store) -> None:
    params = FingerprintParams()
    with store.run("ingest", "/music", params) as run:
        assert run.zone_ids == store.zone_ids() and len(run.zone_ids) == 4
        assert runs(store) == [("ingest", "running", False)]
    with pytest.raises(RuntimeError, match="disk full"), store.run("ingest", "/music", params):
        raise RuntimeError("disk full")
    with pytest.raises(KeyboardInterrupt), store.run("import-pickle", "/x.pkl", params):
        raise KeyboardInterrupt
    assert runs(store) == [("ingest", "completed", True), ("ingest", "failed", True),
                           ("import-pickle", "interrupted", True)]


def test_a_failing_finish_does_not_hide_the_first_error(store) -> None:
    with pytest.raises(RuntimeError, match="the first error") as raised, \
            store.run("ingest", "/music", FingerprintParams()) as run:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE runs CASCADE"))  # now the run cannot be marked
        raise RuntimeError("the first error")
    assert f"run {run.id} could not be marked failed" in "".join(raised.value.__notes__)


def test_a_run_whose_process_died_is_marked_interrupted_by_the_next(store, db_url) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO runs (command, source, fpstore_version, host, pid, backend_pid, sample_rate, n_fft,"
            " hop_length, peak_dist_freq, peak_dist_time, peak_thresh, zone_ids)"
            " VALUES ('ingest', '/gone', '0', 'h', 1, 2147483647, 22050, 2048, 1024, 12, 6, 0.01, '[]')"))
    with store.run("ingest", "/music", FingerprintParams()):
        pass
    assert runs(store) == [("ingest", "interrupted", True), ("ingest", "completed", True)]
