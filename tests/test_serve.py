"""``fpstore serve`` as its users meet it: a real server on a free port, a real database, an HTTP client, a browser.

The API is checked against ``fpstore match --json`` on the same clips (a positive, a negative, a
speed-changed excerpt); every bad request gets its status and one JSON message while the server
goes on; the database stopped under a running ``fpstore serve`` gives 503; the web page, driven by
Debian's chromium, names the uploaded clip's track and leaves a screenshot.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import uvicorn
from click.testing import CliRunner
from conftest import _scratch_database
from helpers import alive, wait_until, write_tunes

from fpstore.cli import cli
from fpstore.serve import ServeConfig, create_app
from fpstore.signal.fingerprint import fingerprint_file
from fpstore.signal.params import FingerprintParams, Zone
from fpstore.signal.synth import synth_tune
from fpstore.signal.variants import change_speed

pytestmark = pytest.mark.postgres

SR = 22050
TUNES = [41, 42, 43]
#: The module's server refuses bodies above this (a 6 s clip is ~265 kB).
LIMIT = 1024 * 1024
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: Seconds an HTTP request may take: generous, the suite must pass on a busy machine.
TIMEOUT = 600
get = functools.partial(httpx.get, timeout=TIMEOUT)
post_to = functools.partial(httpx.post, timeout=TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(config: ServeConfig) -> Iterator[str]:
    """uvicorn serving the app in a thread on a free port of 127.0.0.1; its base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started or not thread.is_alive(), TIMEOUT) and server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)


def write_clip(path: Path, y: np.ndarray) -> Path:
    soundfile.write(path, y, SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A positive, a negative (a tune never ingested) and a 2 %-fast excerpt, as WAV files."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        "positive": write_clip(folder / "positive.wav", synth_tune(42, duration_s=12.0)[3 * SR:9 * SR]),
        "negative": write_clip(folder / "negative.wav", synth_tune(99, duration_s=6.0)),
        "fast": write_clip(folder / "fast.wav", change_speed(synth_tune(43, duration_s=12.0)[2 * SR:8 * SR], 1 / 1.02, SR)),
    }


@pytest.fixture(scope="module")
def served_db(pg_server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database holding three synthetic tunes (12 s each), for the whole module."""
    with _scratch_database(pg_server_url, "fpstore_serve", template_db) as url:
        folder = write_tunes(tmp_path_factory.mktemp("tunes"), TUNES, duration_s=12.0)[0].parent
        result = CliRunner().invoke(cli, ["--db", url, "ingest", str(folder)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        yield url


@pytest.fixture(scope="module")
def base(served_db: str) -> Iterator[str]:
    with running(ServeConfig(served_db, max_upload_bytes=LIMIT)) as url:
        yield url


def cli_json(db_url: str, clip: Path, *options: str) -> dict:
    result = CliRunner().invoke(cli, ["--db", db_url, "match", "--json", *options, str(clip)], catch_exceptions=False)
    return json.loads(result.output)


@pytest.mark.parametrize(("kind", "expected"), [("positive", "tune_042.wav"), ("negative", None), ("fast", "tune_043.wav")])
def test_an_uploaded_clip_gets_what_fpstore_match_json_prints(base, served_db, clips, kind, expected) -> None:
    clip = clips[kind]
    multipart = post_to(f"{base}/v1/match", files={"file": (clip.name, clip.read_bytes(), "audio/wav")})
    raw = post_to(f"{base}/v1/match", params={"name": clip.name, "top": 3}, content=clip.read_bytes())
    assert multipart.status_code == raw.status_code == 200, multipart.text
    assert multipart.json() == cli_json(served_db, clip)
    assert raw.json() == cli_json(served_db, clip, "--top", "3")
    answer = multipart.json()
    assert (answer["match"] or {}).get("file_name") == expected
    if kind == "fast":
        assert answer["speed"] == 1.02
    if kind == "positive":
        assert abs(answer["match"]["offset_s"] - 3.0) < 0.1


def test_the_options_are_query_parameters_and_the_histogram_shows_the_peak(base, served_db, clips) -> None:
    clip = clips["positive"]
    options = {"zone": "all", "plain": "true", "min_votes": "15", "top": "1", "histogram": "true"}
    answer = post_to(f"{base}/v1/match", params=options, content=clip.read_bytes()).json()
    histogram = answer.pop("histogram")
    answer["query"] = clip.name
    assert answer == cli_json(served_db, clip, "--zone", "all", "--plain", "--min-votes", "15", "--top", "1")
    best = answer["match"]
    assert histogram["track_id"] == best["track_id"]
    # The fullest offset is the answer's, and it holds the answer's votes (plain: pairs, the first look).
    peak = int(np.argmax(histogram["votes"]))
    assert histogram["offsets_frames"][peak] == best["offset_frames"] and histogram["votes"][peak] == best["votes"]
    assert sum(histogram["votes"]) > best["votes"]


def test_hashes_computed_by_the_client_name_the_same_track(base, clips) -> None:
    described = get(f"{base}/v1/params").json()
    profile = dict(described["params"])
    profile["zones"] = tuple(Zone(**zone) for zone in profile["zones"])
    params = FingerprintParams(duration_s=None, **profile)
    assert described["params_id"] == params.profile_id()
    fingerprint = fingerprint_file(clips["positive"], params)
    triples = [[name, int(h), int(t)] for name, zh in fingerprint.zones.items()
               for h, t in zip(zh.hashes.tolist(), zh.t_anchor_frames.tolist())]
    body = {"params_id": params.profile_id(), "hashes": triples, "name": "positive.wav"}
    answer = post_to(f"{base}/v1/match/fingerprint", json=body).json()
    audio = post_to(f"{base}/v1/match", params={"name": "positive.wav"}, content=clips["positive"].read_bytes()).json()
    assert answer["match"]["file_name"] == audio["match"]["file_name"] == "tune_042.wav"
    assert (answer["match"]["offset_frames"], answer["n_query_hashes"]) == (audio["match"]["offset_frames"],
                                                                             audio["n_query_hashes"])
    # The compact body (uint32 triples, the zone as its index in GET /v1/params' zones) gets the same answer.
    compact = post_to(f"{base}/v1/match/fingerprint", params={"params_id": params.profile_id(), "name": "positive.wav"},
                      content=compact_body(triples, params), headers={"content-type": "application/octet-stream"})
    assert compact.status_code == 200 and compact.json() == answer, compact.text
    # A query that names nothing at first sight takes the looks that need no audio, and names nothing.
    unknown = fingerprint_file(clips["negative"], params)
    body_unknown = {"params_id": params.profile_id(), "hashes": [
        [name, int(h), int(t)] for name, zh in unknown.zones.items()
        for h, t in zip(zh.hashes.tolist(), zh.t_anchor_frames.tolist())]}
    nothing = post_to(f"{base}/v1/match/fingerprint", json=body_unknown)
    assert nothing.status_code == 200 and nothing.json()["match"] is None, nothing.text
    # Hashes made with other parameters are refused, not matched.
    other = post_to(f"{base}/v1/match/fingerprint", json={**body, "params_id": FingerprintParams(hop_length=512)
                                                                 .profile_id()})
    assert other.status_code == 409 and "GET /v1/params" in other.json()["error"]


def compact_body(triples: list[list], params: FingerprintParams) -> bytes:
    """``[zone, hash, t_anchor]`` triples as the compact body: little-endian uint32 (zone index, hash, t_anchor)."""
    index = {zone.name: i for i, zone in enumerate(params.zones)}
    return np.array([[index[zone], h, t] for zone, h, t in triples], dtype="<u4").tobytes()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and "\n" not in body["error"]
    return body["error"]


def test_every_bad_request_gets_its_status_and_one_json_message_and_the_server_goes_on(base, clips, tmp_path) -> None:
    good = clips["positive"].read_bytes()
    post = lambda path="/v1/match", **kw: post_to(f"{base}{path}", **kw)  # noqa: E731
    not_audio = post(files={"file": ("notes.txt", b"these are words, not sound\n" * 40, "text/plain")})
    assert "notes.txt" in error_of(not_audio, 422) and "cannot decode audio" in not_audio.json()["error"]
    assert not_audio.json()["query"] == "notes.txt"
    assert "empty body" in error_of(post(content=b""), 400)
    assert "no file" in error_of(post(files={"field": (None, "value")}), 400)  # a form without a file
    assert "limit" in error_of(post(content=b"\0" * (LIMIT + 1)), 413)
    assert "limit" in error_of(post("/v1/match/fingerprint", content=b"[" * (LIMIT + 1)), 413)

    def chunked():  # no Content-Length: counted as it comes
        for _ in range(LIMIT // 65536 + 2):
            yield b"\0" * 65536
    assert "limit" in error_of(post(content=chunked()), 413)
    assert "alpha" in error_of(post(params={"alpha": "2"}, content=good), 422)
    assert "not both" in error_of(post(params={"alpha": "0.01", "min_votes": "5"}, content=good), 422)
    assert "speeds" in error_of(post(params={"speeds": "fast"}, content=good), 422)
    assert "Nowhere" in error_of(post(params={"zone": "Nowhere"}, content=good), 422)
    assert "top" in error_of(post(params={"top": "0"}, content=good), 422)
    assert "hashes" in error_of(post("/v1/match/fingerprint", json={"params_id": "x"}), 422)
    assert error_of(post("/v1/match/fingerprint", content=b"{not json", headers={"content-type": "application/json"}), 422)
    params_id = get(f"{base}/v1/params").json()["params_id"]
    assert "empty" in error_of(post("/v1/match/fingerprint", json={"params_id": params_id, "hashes": []}), 400)
    assert "Elsewhere" in error_of(post("/v1/match/fingerprint", json={"params_id": params_id,
                                                                      "hashes": [["Elsewhere", 1, 2]]}), 422)
    assert "unsigned" in error_of(post("/v1/match/fingerprint", json={"params_id": params_id,
                                                                      "hashes": [["Fsmall_Tlong", -1, 2]]}), 422)
    for bad in ([["Fsmall_Tlong", 1]], [["Fsmall_Tlong", 1.5, 2]], [[3, 1, 2]], ["Fsmall_Tlong, 1, 2"]):
        assert "hashes" in error_of(post("/v1/match/fingerprint", json={"params_id": params_id, "hashes": bad}), 422)
    compact = functools.partial(post, "/v1/match/fingerprint", headers={"content-type": "application/octet-stream"})
    assert "12-byte" in error_of(compact(params={"params_id": params_id}, content=b"\0" * 13), 422)
    assert "12-byte" in error_of(post("/v1/match/fingerprint", params={"params_id": params_id}, content=b"\0" * 13,
                                      headers={"content-type": "Application/Octet-Stream"}), 422)  # not read as JSON
    assert "params_id" in error_of(compact(content=b"\0" * 12), 422)
    assert "zone index 9" in error_of(compact(params={"params_id": params_id},
                                              content=np.array([9, 1, 2], dtype="<u4").tobytes()), 422)
    assert "empty" in error_of(compact(params={"params_id": params_id}, content=b""), 400)
    assert "999" in error_of(get(f"{base}/v1/tracks/999"), 404)
    assert error_of(get(f"{base}/v1/tracks/abc"), 422)
    # Still serving, and still right.
    assert get(f"{base}/v1/health").json()["status"] == "ok"
    assert post(content=good).json()["match"]["file_name"] == "tune_042.wav"


def test_the_catalogue_routes_and_the_api_description(base) -> None:
    listing = get(f"{base}/v1/tracks").json()
    assert listing["n_total"] == 3 and [t["file_name"] for t in listing["tracks"]] == [f"tune_{s:03d}.wav" for s in TUNES]
    assert get(f"{base}/v1/tracks", params={"name": "*42*"}).json()["n_matching"] == 1
    one = get(f"{base}/v1/tracks/{listing['tracks'][0]['id']}").json()
    assert one["file_name"] == "tune_041.wav" and sum(z["postings"] for z in one["zones"]) == one["n_postings"]
    report = get(f"{base}/v1/report").json()
    assert [z["num_tracks"] for z in report["zones"]] == [3, 3, 3, 3]
    assert sum(z["total_hashes"] for z in report["zones"]) == listing["postings_matching"]
    plot = get(f"{base}/v1/report/plots/posting_list_lengths.png")
    assert plot.headers["content-type"] == "image/png" and plot.content.startswith(b"\x89PNG")
    assert error_of(get(f"{base}/v1/report/plots/elsewhere.png"), 422)
    health = get(f"{base}/v1/health").json()
    assert health["status"] == "ok" and health["schema_revision"] == health["schema_head"]
    paths = get(f"{base}/openapi.json").json()["paths"]
    assert {"/v1/match", "/v1/match/fingerprint", "/v1/tracks", "/v1/tracks/{track_id}", "/v1/report",
            "/v1/health", "/v1/params"} <= set(paths)
    assert "<title>fpstore</title>" in get(f"{base}/").text


def test_a_token_guards_every_route_but_health(served_db) -> None:
    with running(ServeConfig(served_db, token="s3cret")) as url:
        bearer = {"Authorization": "Bearer s3cret"}
        for path in ("/", "/docs", "/redoc", "/openapi.json", "/v1/tracks", "/v1/tracks/1", "/v1/report", "/v1/params",
                     "/v1/report/plots/hashes_per_track.png", "/elsewhere"):
            assert "bearer token" in error_of(get(f"{url}{path}"), 401), path
            assert error_of(get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}), 401)
            assert get(f"{url}{path}", headers=bearer).status_code == (404 if path == "/elsewhere" else 200), path
        for path in ("/v1/match", "/v1/match/fingerprint"):
            assert error_of(post_to(f"{url}{path}", content=b"x"), 401)
            assert post_to(f"{url}{path}", content=b"x", headers=bearer).status_code in (400, 422)
        health = get(f"{url}/v1/health")
        assert health.status_code == 200 and health.json()["token_required"] is True


def test_a_person_signs_in_once_and_the_browser_keeps_a_session(served_db) -> None:
    with running(ServeConfig(served_db, token="s3cret")) as url:
        asked = get(f"{url}/docs?x=1", headers={"Accept": "text/html"})
        assert asked.status_code == 401 and 'action="/login"' in asked.text and 'value="/docs?x=1"' in asked.text
        wrong = post_to(f"{url}/login", data={"token": "wrong", "next": "/docs"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text and "fpstore_session" not in wrong.headers.get(
            "set-cookie", "")
        with httpx.Client(base_url=url, timeout=TIMEOUT) as browser:
            signed = browser.post("/login", data={"token": "s3cret", "next": "/docs"})
            assert signed.status_code == 303 and signed.headers["location"] == "/docs"
            assert "httponly" in signed.headers["set-cookie"].lower() and "s3cret" not in signed.headers["set-cookie"]
            assert "<title>fpstore</title>" in browser.get("/").text
            assert browser.get("/openapi.json").status_code == 200 and browser.get("/v1/tracks").json()["n_total"] == 3
            assert browser.post("/logout").status_code == 303
            assert error_of(browser.get("/v1/tracks"), 401)
        with httpx.Client(base_url=url, timeout=TIMEOUT) as browser:  # a link that signs in: the token leaves the address
            linked = browser.get("/docs?token=s3cret&x=1")
            assert linked.status_code == 303 and linked.headers["location"] == "/docs?x=1"
            assert browser.get("/v1/report").status_code == 200
            assert browser.get("/?token=wrong").status_code == 401
        away = post_to(f"{url}/login", data={"token": "s3cret", "next": "//elsewhere.example/"})
        assert away.headers["location"] == "/"


def embedded_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "FPSTORE_DATABASE_URL"}
    return {**env, "FPSTORE_HOME": str(home), "FPSTORE_CONFIG": ""}


def test_fpstore_serve_on_the_embedded_default_answers_curl_and_says_503_when_the_database_stops(
        data_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    env = embedded_env(data_dir)
    fpstore = [sys.executable, "-m", "fpstore"]
    tunes = write_tunes(tmp_path / "tunes", TUNES, duration_s=12.0)[0].parent
    subprocess.run([*fpstore, "ingest", str(tunes)], env=env, check=True, capture_output=True, timeout=TIMEOUT)
    port = free_port()
    server = subprocess.Popen([*fpstore, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return get(f"{base}/v1/health").status_code == 200
        return False

    try:
        assert wait_until(lambda: answers() or server.poll() is not None, TIMEOUT) and server.poll() is None, \
            server.communicate(timeout=10)
        kinds = ["positive", "negative", "fast"]
        uploaded = []
        for kind in kinds:
            if shutil.which("curl"):
                uploaded.append(json.loads(subprocess.run(
                    ["curl", "-sS", "-F", f"file=@{clips[kind]}", f"{base}/v1/match"],
                    capture_output=True, text=True, check=True, timeout=TIMEOUT).stdout))
            else:  # curl is not a dependency: httpx sends the same form
                form = {"file": (clips[kind].name, clips[kind].read_bytes())}
                uploaded.append(post_to(f"{base}/v1/match", files=form).json())
        printed = subprocess.run([*fpstore, "match", "--json", *(str(clips[kind]) for kind in kinds)], env=env,
                                 capture_output=True, text=True, check=True, timeout=TIMEOUT).stdout
        assert uploaded == [json.loads(line) for line in printed.splitlines()]
        assert [(answer["match"] or {}).get("file_name") for answer in uploaded] == ["tune_042.wav", None, "tune_043.wav"]
        clip = clips["positive"]
        # The database stops under the running service: every database route says 503, the service goes on.
        postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGINT)  # fast shutdown
        assert wait_until(lambda: not alive(postmaster), TIMEOUT)
        down = post_to(f"{base}/v1/match", content=clip.read_bytes())
        assert "database" in error_of(down, 503)
        assert error_of(get(f"{base}/v1/tracks"), 503)
        health = get(f"{base}/v1/health")
        assert error_of(health, 503) and health.json()["status"] == "unavailable"
        assert get(f"{base}/").status_code == 200 and server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                    reason="Debian's chromium and chromium-driver are not installed (/usr/bin/chromium, "
                           "/usr/bin/chromedriver): apt-get install chromium chromium-driver, as the README's test "
                           "command does")
def test_the_web_page_signs_in_names_an_uploaded_clip_and_shows_the_catalogue(served_db, clips, tmp_path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        with running(ServeConfig(served_db, token="s3cret", max_upload_bytes=LIMIT)) as base:
            use_the_page(driver, base, clips, tmp_path)
    finally:
        driver.quit()


def use_the_page(driver, base: str, clips: dict[str, Path], tmp_path: Path) -> None:
    """Sign in with the token, identify a clip, look at the catalogue, sign out: as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/")
    driver.find_element(By.ID, "token").send_keys("s3cret")
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, TIMEOUT).until(expected_conditions.presence_of_element_located((By.ID, "file")))
    driver.find_element(By.ID, "file").send_keys(str(clips["positive"]))
    WebDriverWait(driver, TIMEOUT).until(expected_conditions.text_to_be_present_in_element((By.ID, "verdict"), "tune_"))
    assert driver.find_element(By.ID, "verdict").text.startswith("tune_042.wav")
    facts = driver.find_element(By.ID, "facts").text
    assert "3.0" in facts and "needed" in facts, facts
    assert driver.find_element(By.ID, "histogram").is_displayed()
    shot = tmp_path / "serve-identify.png"
    driver.save_screenshot(str(shot))
    print(f"screenshot of the answer: {shot}")
    driver.get(f"{base}/#catalogue")
    WebDriverWait(driver, TIMEOUT).until(expected_conditions.text_to_be_present_in_element((By.ID, "counts"), "tracks"))
    assert driver.find_element(By.ID, "counts").text.startswith("3 tracks")
    assert "tune_043.wav" in driver.find_element(By.ID, "tracks").text
    WebDriverWait(driver, TIMEOUT).until(lambda d: d.execute_script(
        "return document.getElementById('plot-posting_list_lengths').naturalWidth") > 0)
    driver.save_screenshot(str(tmp_path / "serve-catalogue.png"))
    print(f"screenshot of the catalogue: {tmp_path / 'serve-catalogue.png'}")
    assert shot.stat().st_size > 10_000
    WebDriverWait(driver, TIMEOUT).until(expected_conditions.visibility_of_element_located((By.ID, "sign-out")))
    driver.find_element(By.CSS_SELECTOR, "#sign-out button").click()
    WebDriverWait(driver, TIMEOUT).until(expected_conditions.presence_of_element_located((By.ID, "sign-in")))
