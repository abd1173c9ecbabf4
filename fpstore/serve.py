"""``fpstore serve``: the catalogue over HTTP (an ASGI app on FastAPI, run by uvicorn) and a web page at ``/``.

Routes (OpenAPI description at ``/openapi.json``, browsable at ``/docs``):

- ``POST /v1/match``: an audio file (raw body, or a multipart form's file field) → the JSON of
  ``fpstore match --json`` for it, decoded as ``fpstore match -`` decodes standard input; the
  matcher's options are query parameters. ``?histogram=true`` adds the best track's offset histogram.
- ``POST /v1/match/fingerprint``: ``{"params_id", "hashes": [[zone, hash, t_anchor], ...]}`` computed
  by the client with the database's parameters (``GET /v1/params``), or the same postings as a compact
  binary body (:data:`HASHES_BINARY`) → the same JSON, no decoding.
- ``GET /v1/tracks``, ``/v1/tracks/{id}``, ``/v1/report`` (and its pictures under ``/v1/report/plots/``),
  ``/v1/params``, ``/v1/health``.

Every error is ``{"error": "<one line>"}`` (a query that cannot be decoded: the ``--json`` line of a
failed query, ``query``, ``zone`` and ``error``) with its status: 400 empty body, 401 missing or wrong
token, 404 unknown track, 409 hashes made with other parameters, 413 body over the limit, 422 not
audio or a bad parameter, 503 database unreachable.

With a token (:class:`TokenGuard`) every route but ``/v1/health`` asks for it: API clients send it
as a bearer token, a person signs in once on the form the page shows and the browser keeps a session
cookie.

Conventions
-----------
- Offsets in answers are in frames and seconds, as in :class:`fpstore.matching.results.Candidate`.
- Sizes are bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import hmac
import html
import io
import json
import os
import secrets
import string
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import anyio
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp, Receive, Scope, Send

import fpstore
from fpstore.db.catalogue import open_store
from fpstore.db.contract import Catalogue
from fpstore.db.store import head_revision
from fpstore.errors import (
    AudioError,
    DatabaseError,
    FpstoreError,
    NotFound,
    ParameterError,
    ProfileMismatch,
)
from fpstore.matching import matcher
from fpstore.matching.evidence import (
    ALL_ZONES,
    DEFAULT_MIN_RATIO,
    DEFAULT_ZONE,
    MAX_TOLERANCE_FRAMES,
    PLAIN,
    ROBUST,
    DecisionRule,
    Evidence,
    evidence_with,
)
from fpstore.matching.histogram import offset_histogram
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import PreparedQuery, prepare_stream
from fpstore.matching.results import MatchResult
from fpstore.report import build_report
from fpstore.signal.analysis import Fingerprint
from fpstore.signal.hashing import ZoneHashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.variants import MAX_SHIFTS, SpeedVariant, speed_variant

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Largest request body accepted (an audio upload or a fingerprint), bytes: a few minutes of WAV.
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: Environment variable holding the bearer token (``--token`` overrides it).
TOKEN_ENV = "FPSTORE_SERVE_TOKEN"
#: How ``--workers`` > 1 hands the configuration to uvicorn's worker processes.
CONFIG_ENV = "FPSTORE_SERVE_CONFIG"
#: Seconds a worker may take to answer uvicorn's health check before it is killed and restarted. A worker
#: decoding and fingerprinting queries holds the GIL for seconds at a time on a busy machine; at uvicorn's
#: default (5 s) it was killed mid-request under load, and its clients got errors.
WORKER_HEALTHCHECK_S = 120
#: Label of an upload that names no file.
BODY_LABEL = "<upload>"
#: Label of a fingerprint upload that names no file.
FINGERPRINT_LABEL = "<fingerprint>"
#: Content type of a compact fingerprint upload: the postings as little-endian uint32 triples (the zone's
#: index in ``GET /v1/params``' zones, the hash, t_anchor in frames), 12 bytes each; ``params_id`` and
#: ``name`` as query parameters. Read with one ``np.frombuffer``, where a JSON body of 2,000 triples
#: takes ~0.6 ms to parse and check.
HASHES_BINARY = "application/octet-stream"
#: Queries one worker process matches at once, each in a thread holding one database connection: more
#: only take turns at the interpreter, and past the connection pool's five each request opened (and
#: closed) a connection of its own, a new PostgreSQL backend.
MATCHES_AT_ONCE = 4


@dataclass(frozen=True)
class ServeConfig:
    """What ``fpstore serve`` was asked for.

    Attributes
    ----------
    database_url : str or None
        As for every command (None: $FPSTORE_DATABASE_URL, then fpstore's embedded server).
    token : str or None
        Bearer token every route but ``/v1/health`` asks for; None: no token.
    max_upload_bytes : int
        Largest request body; a larger one gets 413.
    """

    database_url: str | None = None
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES


class ApiError(Exception):
    """An answer other than 200: its status and its JSON body (which holds ``error``)."""

    def __init__(self, status_code: int, message: str, **more: Any) -> None:
        super().__init__(message)
        self.status_code, self.body = status_code, {**more, "error": message}


#: Status of each fpstore error, most specific first.
_ERROR_STATUS: tuple[tuple[type[FpstoreError], int], ...] = (
    (DatabaseError, 503), (NotFound, 404), (ProfileMismatch, 409), (AudioError, 422), (ParameterError, 422),
)


def _status_of(exc: FpstoreError) -> int:
    return next((status for kind, status in _ERROR_STATUS if isinstance(exc, kind)), 500)


@dataclass(frozen=True)
class MatchOptions:
    """The matcher's options of one request (``fpstore match``'s, as query parameters)."""

    zone: str
    top_k: int
    rule: DecisionRule
    evidence: Evidence
    method: Literal["python", "sql"]
    histogram: bool


def _evidence(plain: bool, count: Literal["pairs", "anchors"] | None, shifts: int | None, speeds: str | None,
              tolerance: int | None) -> Evidence:
    """ROBUST (or PLAIN) with the parts a request names changed, as ``fpstore match``'s options do."""
    try:
        return evidence_with(PLAIN if plain else ROBUST, speeds=speeds, count=count, shifts=shifts, tolerance=tolerance)
    except ValueError:
        raise ApiError(422, f"speeds={speeds!r} is not a comma-separated list of numbers") from None


async def match_options(
    zone: Annotated[str, Query(description="Zone whose hashes vote, or 'all' to pool every zone.")] = DEFAULT_ZONE,
    alpha: Annotated[float | None, Query(gt=0, lt=1, description="False-alarm rate of the calibrated rule.")] = None,
    min_votes: Annotated[int | None, Query(ge=1, description="A vote count instead of alpha.")] = None,
    min_ratio: Annotated[float, Query(ge=1, description="Best track's votes over the runner-up's.")] = DEFAULT_MIN_RATIO,
    null: Annotated[Literal["tracks", "poisson"], Query(description="Chance model behind the score.")] = "tracks",
    top: Annotated[int, Query(ge=1, le=100, description="Tracks listed.")] = 2,
    plain: Annotated[bool, Query(description="The notebook's vote (--plain).")] = False,
    count: Annotated[Literal["pairs", "anchors"] | None, Query(description="What a bin counts.")] = None,
    shifts: Annotated[int | None, Query(ge=1, le=MAX_SHIFTS, description="Sub-hop shifts pooled.")] = None,
    speeds: Annotated[str | None, Query(description="Speed factors, comma-separated (1.02: 2 % faster).")] = None,
    offset_tolerance: Annotated[int | None, Query(ge=0, le=MAX_TOLERANCE_FRAMES, description="Frames.")] = None,
    sql: Annotated[bool, Query(description="Vote with the SQL functions (--sql).")] = False,
    histogram: Annotated[bool, Query(description="Add the best track's offset histogram.")] = False,
) -> MatchOptions:
    """The query parameters of both match routes, checked as ``fpstore match`` checks its options."""
    try:
        return MatchOptions(zone, top, DecisionRule(min_votes, min_ratio, alpha, null),
                            _evidence(plain, count, shifts, speeds, offset_tolerance), "sql" if sql else "python",
                            histogram)
    except ParameterError as exc:
        raise ApiError(422, str(exc)) from None


class FingerprintQuery(BaseModel):
    """A query fingerprinted by the client with the database's parameters (``GET /v1/params``).

    The JSON body's schema, for the OpenAPI description: the body is read by :func:`read_hashes`.
    """

    params_id: str = Field(description="The parameters' id the hashes were made with (GET /v1/params).")
    hashes: list[tuple[str, int, int]] = Field(
        description="[zone name, hash (unsigned 32-bit), t_anchor (frames)] for every posting of the query.")
    name: str = Field(FINGERPRINT_LABEL, description="How the query is named in the answer.")


def database_params(store: Catalogue) -> FingerprintParams:
    """The database's parameters for whole queries, once its schema is checked.

    Raises
    ------
    SchemaNotAtHead
        If the database has no fpstore schema, or another revision.
    NotFound
        If nothing has been ingested yet.
    """
    store.check_schema()
    return store.params(duration_s=None)


def _checked_zone(params: FingerprintParams, zone: str) -> None:
    if zone != ALL_ZONES:
        params.zone(zone)


def match_upload(store: Catalogue, params: FingerprintParams, data: bytes, label: str,
                 options: MatchOptions) -> dict[str, Any]:
    """Decode ``data`` (any format ``fpstore match -`` reads) and match it: the ``--json`` answer.

    ``params`` are the database's (:func:`database_params`).

    Raises
    ------
    ApiError
        422 with the failed query's JSON when the bytes are not audio or give no hashes.
    """
    _checked_zone(params, options.zone)
    outcome = prepare_stream(io.BytesIO(data), params, options.evidence, label=label)
    if isinstance(outcome, str):
        failed = MatchResult.failed(label, options.zone, outcome, options.method).as_json()
        raise ApiError(422, failed.pop("error"), **failed)
    return _answer(store, outcome, params, options, label)


@dataclass(frozen=True)
class HashesUpload:
    """A fingerprint upload as it came: its ``params_id``, its name, and its postings not yet checked.

    Attributes
    ----------
    params_id : str
    name : str
    postings : list or np.ndarray
        A JSON body's ``[zone name, hash, t_anchor]`` lists as parsed, or a compact body's triples
        (:data:`HASHES_BINARY`) as an array [shape=(n, 3), dtype=uint32] whose first column is the
        zone's index in the parameters' zones.
    """

    params_id: str
    name: str
    postings: list[Any] | np.ndarray


def _media_type(content_type: str) -> str:
    """The media type a ``Content-Type`` header names, lower case and without its parameters (``; charset=...``).

    Media types are case-insensitive (RFC 9110 8.3.1): ``Application/Octet-Stream`` names the compact form too.
    """
    return content_type.partition(";")[0].strip().lower()


def read_hashes(body: bytes, content_type: str, params_id: str | None, name: str | None) -> HashesUpload:
    """The upload of ``POST /v1/match/fingerprint``: a JSON body, or a compact one (:data:`HASHES_BINARY`).

    ``params_id`` and ``name`` are the query parameters (a JSON body's own fields come first).

    Raises
    ------
    ApiError
        400 for an empty body; 422 for a body of neither form, or without its ``params_id`` or hashes.
    """
    if not body:
        raise ApiError(400, "empty body: send the query's hashes as JSON or in the compact form (docs: fpstore serve)")
    if _media_type(content_type) == HASHES_BINARY:
        return _compact_hashes(body, params_id, name)
    try:
        document = json.loads(body)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise ApiError(422, f"body: not JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(document, dict):
        raise ApiError(422, "body: a JSON object {\"params_id\": ..., \"hashes\": [[zone, hash, t_anchor], ...]}")
    fields = {"params_id": document.get("params_id", params_id), "name": document.get("name", name)}
    for field, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise ApiError(422, f"{field}: must be a string")
    if fields["params_id"] is None:
        raise ApiError(422, "params_id: required (GET /v1/params)")
    postings = document.get("hashes")
    if not isinstance(postings, list):
        raise ApiError(422, "hashes: required, a list of [zone, hash, t_anchor]")
    return HashesUpload(fields["params_id"], fields["name"] or FINGERPRINT_LABEL, postings)


def _compact_hashes(body: bytes, params_id: str | None, name: str | None) -> HashesUpload:
    """A compact body (:data:`HASHES_BINARY`) and its query parameters."""
    if len(body) % 12:
        raise ApiError(422, f"a compact body is 12-byte triples (zone index, hash, t_anchor): {len(body)} bytes")
    if params_id is None:
        raise ApiError(422, "params_id: a compact body needs the query parameter params_id (GET /v1/params)")
    return HashesUpload(params_id, name or FINGERPRINT_LABEL, np.frombuffer(body, dtype="<u4").reshape(-1, 3))


def match_hashes(store: Catalogue, params: FingerprintParams, upload: HashesUpload,
                 options: MatchOptions) -> dict[str, Any]:
    """Match hashes the client computed: the looks that need no audio (as it is, then the offset tolerance).

    ``params`` are the database's (:func:`database_params`).

    Raises
    ------
    ApiError
        409 if ``params_id`` is not the database's; 422 for an unknown zone or a value out of range; 400
        for no hashes.
    """
    _checked_zone(params, options.zone)
    if upload.params_id != params.profile_id():
        raise ApiError(409, f"params_id={upload.params_id!r} is not the database's {params.profile_id()!r}: "
                            "fingerprint with the parameters of GET /v1/params")
    fingerprint = _fingerprint_of(upload.postings, params)
    # Without the audio: no shifts, no other speeds, no other peak selections (every look that decodes).
    evidence = dataclasses.replace(options.evidence, shifts=1, speeds=(1.0,), picks=(), own_picks=())
    return _answer(store, PreparedQuery(SpeedVariant(1.0, (fingerprint,))), params,
                   dataclasses.replace(options, evidence=evidence), upload.name)


def _columns_of_triples(triples: list[Any], zone_names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The zone's index, the hash and t_anchor of JSON ``[zone name, hash, t_anchor]`` triples, int64 each.

    Checked column by column (the shapes in one pass, each column converted by numpy at once), not
    triple by triple: this is most of what a fingerprint upload costs the service beyond its lookup.
    """
    if not triples:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if set(map(type, triples)) != {list} or set(map(len, triples)) != {3}:
        raise ApiError(422, "hashes: every item must be a list [zone, hash, t_anchor]")
    names, hashes, t_anchor = zip(*triples, strict=True)
    if set(map(type, names)) != {str}:
        raise ApiError(422, "hashes: every zone must be a zone's name (GET /v1/params)")
    index_of = {name: index for index, name in enumerate(zone_names)}
    unknown = sorted(map(str, set(names) - index_of.keys()))
    if unknown:
        raise ApiError(422, f"zone {unknown[0]!r} is not one of {zone_names}")
    columns = [np.fromiter(map(index_of.__getitem__, names), dtype=np.int64, count=len(names))]
    for field, values in (("hash", hashes), ("t_anchor", t_anchor)):
        try:
            column = np.array(values)
        except (OverflowError, ValueError):
            column = np.zeros(0, dtype=object)
        if column.dtype.kind not in "iu" or column.ndim != 1:
            raise ApiError(422, f"hashes: every {field} must be an integer")
        columns.append(column.astype(np.int64) if column.dtype.kind == "i" else column)
    return columns[0], columns[1], columns[2]


def _fingerprint_of(postings: list[Any] | np.ndarray, params: FingerprintParams) -> Fingerprint:
    """A :class:`Fingerprint` of an upload's postings (:class:`HashesUpload`; an empty zone for each zone not named)."""
    zone_names = [z.name for z in params.zones]
    if isinstance(postings, np.ndarray):
        zone_index, hashes, t_anchor = (postings[:, column].astype(np.int64) for column in range(3))
        if zone_index.size and zone_index.max() >= len(zone_names):
            raise ApiError(422, f"zone index {int(zone_index.max())} is not one of 0 .. {len(zone_names) - 1}, "
                                f"the zones of GET /v1/params in order ({', '.join(zone_names)})")
    else:
        zone_index, hashes, t_anchor = _columns_of_triples(postings, zone_names)
    if hashes.size and (hashes.min() < 0 or hashes.max() > 0xFFFFFFFF):
        raise ApiError(422, "every hash must be an unsigned 32-bit value (0 .. 4294967295)")
    if t_anchor.size and (t_anchor.min() < 0 or t_anchor.max() > np.iinfo(np.int32).max):
        raise ApiError(422, "every t_anchor must be a frame number >= 0")
    if not hashes.size:
        raise ApiError(400, "hashes is empty: send the query's [zone, hash, t_anchor] triples")
    zones = {name: ZoneHashes(hashes[zone_index == index].astype(np.uint32),
                              t_anchor[zone_index == index].astype(np.int32))
             for index, name in enumerate(zone_names)}
    n_frames = int(t_anchor.max()) + 1
    return Fingerprint(zones, n_frames * params.seconds_per_frame, n_frames, 0)


def _answer(store: Catalogue, prepared: PreparedQuery, params: FingerprintParams, options: MatchOptions,
            label: str) -> dict[str, Any]:
    # One connection for the query's statements (its lookups, the tracks' lengths and names): checked
    # out, and so pinged, once. Its looks ask again for many keys of the looks before (a fingerprint
    # upload's second look, with the offset tolerance, for every key of its first): remembered, as
    # match_prepared remembers them.
    with store.holding_connection(), store.lookup.remembering(matcher.LOOKS_REMEMBERED):
        return _answer_looks(store, prepared, params, options, label)


def _answer_looks(store: Catalogue, prepared: PreparedQuery, params: FingerprintParams, options: MatchOptions,
                  label: str) -> dict[str, Any]:
    result = match_prepared(store, prepared, params, evidence=options.evidence, zone=options.zone,
                            top_k=options.top_k, rule=options.rule, method=options.method, query=label)
    answer = result.as_json()
    if options.histogram and result.best is not None:
        fingerprint = (prepared.first.fingerprints[0] if result.speed == 1.0 or prepared.audio is None
                       else speed_variant(prepared.audio, params, result.speed, 1).fingerprints[0])
        answer["histogram"] = offset_histogram(store, fingerprint, params, zone=options.zone,
                                               track_id=result.best.track_id, count=options.evidence.count).as_json()
    return answer


def _too_large(limit: int) -> str:
    return f"request body over the {limit:,}-byte limit (fpstore serve --max-upload-mb)"


class DeclaredSizeLimit:
    """ASGI middleware: 413 for a request whose ``Content-Length`` passes ``limit``, before its body is read.

    A body sent without a length (chunked) is counted as it is read instead (:func:`_read_body`).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 at once for a declared length over the limit; pass every other request on."""
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.limit:
                await JSONResponse({"error": _too_large(self.limit)}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: Cookie the sign-in sets (:class:`TokenGuard`): a digest of the token, never the token itself.
SESSION_COOKIE = "fpstore_session"
#: Paths open without the token: health (for monitors and load balancers), signing in and out.
OPEN_PATHS = frozenset({"/v1/health", "/login", "/logout"})
_TOKEN_REFUSED = "missing or wrong bearer token: send 'Authorization: Bearer <token>'"


def session_value(token: str) -> str:
    """The session cookie of ``token``: HMAC-SHA256 of a fixed label keyed by the token, in hex."""
    return hmac.new(token.encode(), b"fpstore serve session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    """``given == expected`` in a time that does not tell how much of it was right."""
    return secrets.compare_digest(given.encode(), expected.encode())


def _local_path(candidate: str) -> str:
    """``candidate`` if it is a path on this server, else ``/``: a sign-in never sends a person elsewhere."""
    return candidate if candidate.startswith("/") and not candidate.startswith("//") and "\\" not in candidate else "/"


def sign_in_page(message: str, next_path: str) -> HTMLResponse:
    """The sign-in form (status 401), which comes back to ``next_path`` once the token is given."""
    page = string.Template(resources.files("fpstore").joinpath("web/signin.html").read_text(encoding="utf-8"))
    return HTMLResponse(page.substitute(message=html.escape(message), next=html.escape(_local_path(next_path))),
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _signed_in(response: Response, token: str, request: Request) -> Response:
    """``response`` with the session cookie set (HttpOnly, SameSite=Lax; Secure over HTTPS).

    Lax, not Strict: a link to the page followed from another site (``?token=`` in a message) must
    arrive signed in; a cross-site form cannot post with the cookie either way.
    """
    response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    return response


class TokenGuard:
    """ASGI middleware: with a token, every request but those of :data:`OPEN_PATHS` must carry it, or 401.

    The token comes as ``Authorization: Bearer <token>`` (API clients), or as the session cookie the
    sign-in sets (a person with a browser: the page, ``/docs`` and their requests). A page request
    (``GET`` accepting HTML) without it gets the sign-in form with status 401, every other request
    ``{"error": ...}``. ``GET <path>?token=<token>`` signs in as the form does and sends the browser
    to the same address without the token (a link to hand to a person).
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authorised request on; answer any other with a sign-in, a redirect or 401."""
        if scope["type"] != "http" or self.token is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(Request(scope), self.token)
        await (self.app if refusal is None else refusal)(scope, receive, send)

    @staticmethod
    def _refusal(request: Request, token: str) -> Response | None:
        """None for a request that carries the token; else what it gets instead."""
        given = request.query_params.get("token")
        if given is not None and request.method == "GET":
            if not _same(given, token):
                return sign_in_page("wrong token", request.url.path)
            kept = [(key, value) for key, value in request.query_params.multi_items() if key != "token"]
            target = request.url.path + ("?" + urlencode(kept) if kept else "")
            return _signed_in(RedirectResponse(target, status_code=303), token, request)
        if (_same(request.headers.get("authorization", ""), f"Bearer {token}")
                or _same(request.cookies.get(SESSION_COOKIE, ""), session_value(token))):
            return None
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return sign_in_page("", request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return JSONResponse({"error": _TOKEN_REFUSED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 once more than ``limit`` bytes have come."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, _too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


async def _upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded audio and its label: a multipart form's first file, or the raw body."""
    body = await _read_body(request, limit)
    label = os.path.basename(request.query_params.get("name", "")) or BODY_LABEL
    if _media_type(request.headers.get("content-type", "")) == "multipart/form-data":
        async def replay() -> AsyncGenerator[bytes, None]:
            yield body

        form = await MultiPartParser(request.headers, replay()).parse()
        files = [value for _, value in form.multi_items() if not isinstance(value, str)]
        if not files:
            raise ApiError(400, "the multipart form holds no file: send the audio as a file field (curl -F file=@clip.wav)")
        body, label = await files[0].read(), os.path.basename(files[0].filename or "") or label
    if not body:
        raise ApiError(400, "empty body: send the audio as the request body (curl --data-binary @clip.wav) "
                            "or as a multipart file field (curl -F file=@clip.wav)")
    return body, " ".join(label.split())


# The dependencies are coroutines: FastAPI runs a plain function dependency in its thread pool, and
# each such hop (a hand-over to a thread and back) cost more than the work of these three.
async def _store(request: Request) -> Catalogue:
    """The app's database, opened when the app started."""
    store: Catalogue = request.app.state.store
    return store


async def _params(request: Request) -> FingerprintParams:
    """The database's parameters, read once: a profile never changes once written (restart after a new schema)."""
    cached: FingerprintParams | None = getattr(request.app.state, "params", None)
    if cached is None:
        cached = request.app.state.params = await run_in_threadpool(database_params, await _store(request))
    return cached


def _config(request: Request) -> ServeConfig:
    config: ServeConfig = request.app.state.config
    return config


Db = Annotated[Catalogue, Depends(_store)]
Params = Annotated[FingerprintParams, Depends(_params)]
Options = Annotated[MatchOptions, Depends(match_options)]
#: The API's routes (every one behind the token when there is one, health excepted: :class:`TokenGuard`).
api = APIRouter(prefix="/v1")
#: The page and the sign-in form.
pages = APIRouter()


@api.post("/match", openapi_extra={"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
}}})
async def match(request: Request, db: Db, params: Params, options: Options,
                name: Annotated[str | None, Query(description="Name of a raw-body upload.")] = None) -> Any:
    """Identify an audio file (raw body or multipart file field): the same JSON as `fpstore match --json`."""
    data, label = await _upload(request, _config(request).max_upload_bytes)
    return JSONResponse(await _matched(request, match_upload, db, params, data, label, options))


def _read_and_match_hashes(store: Catalogue, params: FingerprintParams, body: bytes, content_type: str,
                           params_id: str | None, name: str | None, options: MatchOptions) -> dict[str, Any]:
    return match_hashes(store, params, read_hashes(body, content_type, params_id, name), options)


@api.post("/match/fingerprint", openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": FingerprintQuery.model_json_schema()},
    HASHES_BINARY: {"schema": {"type": "string", "format": "binary", "description": (
        "The compact form: every posting as three little-endian uint32 (the zone's index in the zones of "
        "GET /v1/params, the hash, t_anchor in frames), 12 bytes each; params_id and name as query parameters.")}},
}}})
async def match_fingerprint(
        request: Request, db: Db, params: Params, options: Options,
        params_id: Annotated[str | None, Query(description="The parameters' id (GET /v1/params) of a compact body.")]
        = None,
        name: Annotated[str | None, Query(description="How a compact body's query is named in the answer.")] = None,
) -> Any:
    """Identify a query from its hashes, computed by the client with the parameters of GET /v1/params."""
    body = await _read_body(request, _config(request).max_upload_bytes)
    return JSONResponse(await _matched(request, _read_and_match_hashes, db, params, body,
                                       request.headers.get("content-type", ""), params_id, name, options))


async def _matched(request: Request, work: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``work(*args)`` in a thread, at most :data:`MATCHES_AT_ONCE` at once in this process."""
    limiter: anyio.CapacityLimiter = request.app.state.matchers
    answer: dict[str, Any] = await anyio.to_thread.run_sync(work, *args, limiter=limiter)
    return answer


@api.get("/params")
def describe_params(params: Params) -> Any:
    """The database's fingerprint parameters and their id (what /v1/match/fingerprint checks)."""
    return {"params_id": params.profile_id(), "params": params.profile()}


@api.get("/tracks")
def tracks(db: Db, name: str | None = None, run: int | None = None, min_postings: int | None = None,
           max_postings: int | None = None, limit: Annotated[int | None, Query(ge=1)] = None) -> Any:
    """Tracks in id order, filtered (as `fpstore tracks list --json`)."""
    db.check_schema()
    return dataclasses.asdict(db.tracks.search(name=name, run_id=run, min_postings=min_postings,
                                               max_postings=max_postings, limit=limit))


@api.get("/tracks/{track_id}")
def track(track_id: int, db: Db) -> Any:
    """One track's statistics (as `fpstore tracks show --json`)."""
    db.check_schema()
    return json.loads(json.dumps(db.tracks.show(str(track_id)), default=str))


@api.get("/report")
def report(db: Db) -> Any:
    """The report's aggregates (as `fpstore report --format json`)."""
    built = build_report(db)
    return {"zones": built.zones, "relations": built.relations, "bytes_per_posting": built.bytes_per_posting}


@api.get("/report/plots/{name}", responses={200: {"content": {"image/png": {}}}})
def report_plot(name: Literal["hashes_per_track.png", "posting_list_lengths.png"], db: Db) -> Response:
    """One picture of `fpstore report --plots`: hashes per track, or posting-list lengths, per zone (PNG)."""
    from fpstore.plots import plot_report

    with tempfile.TemporaryDirectory(prefix="fpstore-serve-plots-") as folder:
        written = {path.name: path for path in plot_report(db, folder, width_px=1000, height_px=600)}
        return Response(written[name].read_bytes(), media_type="image/png")


@api.get("/health")
def health(request: Request, db: Db) -> Any:
    """Database reachable, its schema revision, and whether the other routes ask for a token (never asks for it)."""
    try:
        revision = db.schema_revision()
    except FpstoreError as exc:
        raise ApiError(503, " ".join(str(exc).split()), status="unavailable") from None
    return {"status": "ok", "database": db.url, "schema_revision": revision, "schema_head": head_revision(),
            "version": fpstore.__version__, "token_required": _config(request).token is not None}


@pages.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """The sign-in form's target: the session cookie and back to the page asked for, or the form again (401)."""
    form = await request.form()
    token, next_path = _config(request).token, _local_path(str(form.get("next") or "/"))
    if token is None:
        return RedirectResponse(next_path, status_code=303)
    if not _same(str(form.get("token") or ""), token):
        return sign_in_page("wrong token", next_path)
    return _signed_in(RedirectResponse(next_path, status_code=303), token, request)


@pages.post("/logout", include_in_schema=False)
def logout() -> Response:
    """Forget the session cookie, back to the page (which then asks for the token again)."""
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@pages.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    """The web page: identify a recording, browse the catalogue."""
    return resources.files("fpstore").joinpath("web/index.html").read_text(encoding="utf-8")


def create_app(config: ServeConfig = ServeConfig()) -> FastAPI:
    """The ASGI app: opens the database when it starts (as every command does), closes it when it stops.

    Parameters
    ----------
    config : ServeConfig

    Returns
    -------
    app : fastapi.FastAPI
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with open_store(config.database_url) as store:
            app.state.store = store
            app.state.matchers = anyio.CapacityLimiter(MATCHES_AT_ONCE)
            _settle_heap()
            yield

    app = FastAPI(title="fpstore", version=fpstore.__version__, lifespan=lifespan,
                  description="Audio fingerprint catalogue: identify a recording, list the catalogue.")
    app.state.config = config
    app.add_middleware(DeclaredSizeLimit, limit=config.max_upload_bytes)
    app.add_middleware(TokenGuard, token=config.token)  # outermost: nothing is read before the token is checked
    _add_error_handlers(app)
    app.include_router(api)
    app.include_router(pages)
    return app


def _settle_heap() -> None:
    """Take every object alive once the service has started out of the garbage collector's sight.

    The service's modules (FastAPI, pydantic, SQLAlchemy, numpy, scipy) leave some 100,000 objects
    that each collection of the oldest generation walks again, and a request allocates thousands of
    containers that set collections off (a fingerprint upload's ~2,000 triples): parsing one such body
    took 5.2 ms with that heap, 1.0 ms with it frozen (``gc.freeze``).
    """
    gc.collect()
    gc.freeze()


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": one line}`` with its status."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status_code)

    @app.exception_handler(FpstoreError)
    async def fpstore_error(request: Request, exc: FpstoreError) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(exc).split())}, status_code=_status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def app_from_environment() -> FastAPI:
    """The app of ``$FPSTORE_SERVE_CONFIG`` (JSON of :class:`ServeConfig`): uvicorn's factory for ``--workers``."""
    return create_app(ServeConfig(**json.loads(os.environ.get(CONFIG_ENV, "{}"))))


def run_server(config: ServeConfig, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1,
               announce: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM), with ``workers`` processes.

    Parameters
    ----------
    config : ServeConfig
    host : str
        Address to bind (127.0.0.1 by default: this machine only).
    port : int
    workers : int
        Processes (each opens the database); more than one spreads decoding over the cores.
    announce : callable or None
        Called with one line (the address and the database) once the database is open.
    """
    import uvicorn

    # Opened here first, so that an unreachable database fails in one line (DatabaseError) before uvicorn
    # starts, and the embedded server stays up for every worker until the service stops.
    with open_store(config.database_url) as store:
        if announce is not None:
            announce(f"fpstore serve: http://{host}:{port}/ on {store.url} (Ctrl-C stops)")
        if workers == 1:
            uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)
            return
        with _environment(CONFIG_ENV, json.dumps(dataclasses.asdict(config))):
            uvicorn.run("fpstore.serve:app_from_environment", factory=True, host=host, port=port, workers=workers,
                        log_level="warning", access_log=False, timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
