"""The service's HTTP face (aiohttp.web): routes, callers' authentication, limits, and errors as JSON.

Every answer is JSON, errors included: ``{"error": {"code", "message"[, "field"]}}``; a caller's mistake is
a 4xx naming the problem, and no answer or log line ever carries a traceback, a token, a credential or the
bytes of a request (the one exception: a caller's own ``X-Request-Id``, visible ASCII, echoed for tracing).
``/v1`` routes need ``Authorization: Bearer TOKEN`` when tokens are configured (compared in constant time;
a 401 never says which part was wrong), but ``/v1/openapi.json``; ``/healthz`` and ``/readyz`` never do,
``/metrics`` only with ``metrics_tokens``. A body must arrive within ``body_timeout`` seconds (408). Every
release answered carries every field of the document (``openapi.complete_release``). Once the engine stops
accepting, ``/v1`` answers 503 with ``Retry-After``. Repeated errors are logged through a ``LogLimiter``.
This module checks and translates; the engine does the work and is the only way to it (nothing here talks
to Tencent). Connections and requests aiohttp cannot parse are ``listener``'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from eni_async.journal import JournalError
from eni_async.service import schema
from eni_async.service.engine import BackpressureError, Engine, NotAcceptingError
from eni_async.service.lograte import LogLimiter
from eni_async.service.openapi import complete_release, document
from eni_async.service.registry import CANCELLED, STATUSES, IdempotencyConflictError, ReleaseFilter

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("eni_async.service.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ENGINE = web.AppKey("engine", Engine)
LOGS = web.AppKey("logs", LogLimiter)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
DOCUMENT = web.AppKey("document", bytes)
REQUEST_ID = web.RequestKey("request_id", str)
CALLER = web.RequestKey("caller", str)
LOCAL_CALLER = "local"  # no tokens configured: loopback only, one caller
RETRY_AFTER_STOPPING = "5"
JSON_TYPE = "application/json"
# HTTP statuses aiohttp raises on its own, as error codes in our JSON.
STATUS_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    409: "IdempotencyConflict",
    413: "TooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyUnfinished",
    503: "Unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    task_ids: Sequence[str] | None = None,
) -> web.Response:
    """A JSON error answer (``task_ids``: the tasks a refused cancel found in flight)."""
    error: dict[str, object] = {"code": code}
    if field is not None:
        error["field"] = field
    error["message"] = message
    if task_ids is not None:
        error["task_ids"] = list(task_ids)
    return json_response({"error": error}, status=status, headers=headers)


def json_response(data: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer with ``Content-Type: application/json`` exactly."""
    body = json.dumps(data, ensure_ascii=False).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": JSON_TYPE, **(headers or {})})


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def make_app(
    engine: Engine,
    *,
    tokens: Sequence[str] = (),
    max_body: int = 1_048_576,
    body_timeout: float = 30.0,
    metrics_registry: CollectorRegistry | None = None,
    requests_counter: Counter | None = None,
    metrics_tokens: Sequence[str] = (),
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> web.Application:
    """The application: ``engine`` does the work; ``tokens`` empty means no caller authentication (the
    command allows that on loopback only); ``metrics_registry`` is served at ``/metrics`` when given, to
    holders of ``metrics_tokens`` when there are any, after ``before_scrape`` (which reads what collectors
    cannot await, such as the journal's counts)."""
    secrets = [token.encode() for token in tokens]
    metrics_secrets = [token.encode() for token in metrics_tokens]
    logs = LogLimiter(log)

    clock = engine.client.clock

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tag the request with an id, count and log its answer (never a header value but the id)."""
        given = request.headers.get("X-Request-Id", "")
        request_id = given if _visible(given, 128) else uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        started = clock.monotonic()
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        route = _route(request)
        if requests_counter is not None:
            requests_counter.labels(route, str(response.status)).inc()
        log.info(
            "%s %s %d %.1fms request_id=%s", request.method, route, response.status,
            (clock.monotonic() - started) * 1000, request_id,
            extra={"request_id": request_id, "route": route, "status": response.status},
        )  # fmt: skip
        return response

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except schema.BadRequest as exc:
            return error_response(400, "InvalidInput", exc.message, field=exc.field)
        except Refused as exc:
            response = error_response(exc.status, exc.code, exc.message, field=exc.field)
            response.force_close()
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            message = exc.reason if exc.status != 413 else f"request body over {max_body} bytes"
            return error_response(exc.status, STATUS_CODES.get(exc.status, "Error"), message, headers=headers)
        except JournalError as exc:  # the journal does not answer (a replica's database is away): try again
            logs.log(logging.WARNING, f"503:journal:{_route(request)}", "journal unavailable: %s", exc)
            return error_response(
                503, "JournalUnavailable", "the journal does not answer now", headers={"Retry-After": "5"}
            )
        except Exception as exc:  # a bug: logged here (its kind and route only), a plain 500 to the caller
            route = _route(request)
            logs.log(
                logging.ERROR, f"500:{route}:{type(exc).__name__}",
                "unexpected error answering %s %s: %s", request.method, route, type(exc).__name__,
            )  # fmt: skip
            return error_response(500, "InternalError", "internal error; see the service log")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/metrics" and metrics_secrets:
            if _caller(request.headers.get("Authorization", ""), metrics_secrets) is None:
                return _unauthorized()
            return await handler(request)
        if (not request.path.startswith("/v1/") and request.path != "/v1") or request.path in OPEN:
            return await handler(request)
        caller = _caller(request.headers.get("Authorization", ""), secrets) if secrets else LOCAL_CALLER
        if caller is None:
            return _unauthorized()
        request[CALLER] = caller
        if not engine.accepting:
            return error_response(
                503,
                "Unavailable",
                "the service is shutting down; retry against another replica or after restart",
                headers={"Retry-After": RETRY_AFTER_STOPPING},
            )
        return await handler(request)

    app = web.Application(middlewares=[count, errors, guard], client_max_size=max_body)
    app[ENGINE] = engine
    app[LOGS] = logs
    app[BODY_TIMEOUT] = body_timeout
    app[DOCUMENT] = json.dumps(document(metrics_token=bool(metrics_secrets))).encode()
    app.router.add_post("/v1/releases", post_releases)
    app.router.add_get("/v1/releases", list_releases)
    # An id never holds ":", so that a path ending in ":cancel" is the cancel's resource alone (its Allow
    # header names POST only, as the document says).
    app.router.add_get("/v1/releases/{id:[^/:]+}", get_release)
    app.router.add_post("/v1/releases/{id:[^/:]+}:cancel", cancel_release)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def metrics(request: web.Request) -> web.Response:
        schema.only_params(request.query, ())
        if metrics_registry is None:
            return error_response(
                501,
                "MetricsUnavailable",
                "install the 'metrics' extra: pip install '.[metrics]' from a clone",
            )
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if before_scrape is not None:
            await before_scrape()

        return web.Response(
            body=generate_latest(metrics_registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/metrics", metrics)
    return app


def _unauthorized() -> web.Response:
    return error_response(
        401,
        "Unauthorized",
        "missing or invalid bearer token",
        headers={"WWW-Authenticate": 'Bearer realm="eni-async"'},
    )


# /v1 paths anyone may read: the contract is public, so that a caller can learn it before holding a token.
OPEN = frozenset({"/v1/openapi.json"})


def _caller(header: str, secrets: Sequence[bytes]) -> str | None:
    """Who is calling: a short hash of the matching token (never the token), or ``None`` for no match."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    candidate = given.strip().encode("utf-8", "surrogateescape")
    found: bytes | None = None
    for secret in secrets:  # every token compared, in constant time each
        if hmac.compare_digest(candidate, secret):
            found = secret
    return hashlib.sha256(found).hexdigest()[:16] if found is not None else None


def _visible(value: str, longest: int) -> bool:
    return 0 < len(value) <= longest and all(33 <= ord(c) <= 126 for c in value)


async def post_releases(request: web.Request) -> web.Response:
    """``POST /v1/releases``: accept one release or the batch form; 202."""
    engine = request.app[ENGINE]
    schema.only_params(request.query, ())
    key = schema.idempotency_key(request.headers.get("Idempotency-Key"))
    body = schema.release_body(await _read_body(request))
    try:
        scoped = None if key is None else f"{request[CALLER]}/{key}"  # one caller cannot replay another's key
        releases, created = await engine.submit(
            body.requests, idempotency_key=scoped, body_hash=body.body_hash
        )
    except IdempotencyConflictError:
        return error_response(
            409,
            "IdempotencyConflict",
            "this Idempotency-Key was used with another body",
            field="Idempotency-Key",
        )
    except BackpressureError as exc:
        return error_response(
            429, "TooManyUnfinished", str(exc), headers={"Retry-After": str(exc.retry_after)}
        )
    except NotAcceptingError as exc:
        return error_response(503, "Unavailable", str(exc), headers={"Retry-After": RETRY_AFTER_STOPPING})
    except JournalError as exc:  # the journal refused the write (disk full): nothing created
        request.app[LOGS].log(logging.ERROR, "journal", "journal refused a release: %s", exc)
        return error_response(
            503,
            "JournalUnavailable",
            f"the journal cannot take writes now: {exc.reason}; nothing was created",
            headers={"Retry-After": "5"},
        )
    if not releases:  # a replay whose releases were pruned (replicas with other retention settings)
        return error_response(
            409,
            "IdempotencyConflict",
            "the releases this Idempotency-Key made were pruned (service_retention); use a new key",
            field="Idempotency-Key",
        )
    headers = {} if created else {"Idempotent-Replayed": "true"}
    views = [complete_release(await engine.view(release)) for release in releases]
    if body.batch:
        return json_response({"releases": views}, status=202, headers=headers)
    headers["Location"] = f"/v1/releases/{views[0]['id']}"
    return json_response(views[0], status=202, headers=headers)


async def get_release(request: web.Request) -> web.Response:
    """``GET /v1/releases/{id}[?wait=SECONDS]``: the release; 404 for an unknown id."""
    schema.only_params(request.query, ("wait",))
    wait = schema.wait_seconds(request.query.get("wait"))
    found = await request.app[ENGINE].wait(request.match_info["id"], wait)
    if found is None:
        return error_response(404, "NotFound", "no release with this id", field="id")
    return json_response(complete_release(found))


async def cancel_release(request: web.Request) -> web.Response:
    """``POST /v1/releases/{id}:cancel``: 200 with the release ``cancelled`` (also when it already was);
    409 once a call of it was sent (with the tasks in flight) or it finished otherwise; 404 for an unknown
    id."""
    schema.only_params(request.query, ())
    found = await request.app[ENGINE].cancel(request.match_info["id"])
    if found is None:
        return error_response(404, "NotFound", "no release with this id", field="id")
    release = found.release
    if found.cancelled or release.status == CANCELLED:
        return json_response(complete_release(await request.app[ENGINE].view(release)))
    if release.finished:
        message = f"the release has finished ({release.status}); only one not yet submitted can be cancelled"
        return error_response(409, "AlreadyFinished", message, field="id")
    if found.task_ids:
        message = "a call of this release was sent; it runs to its end (task_ids: the tasks in flight)"
    elif found.in_doubt:
        message = "a call of this release is being sent; it runs to its end (its task id is not known yet)"
    else:
        # Its tasks so far were seen ending, and no try is out: it is between chunks (or waits out an outage
        # before its next try), never cancellable once anything was sent.
        message = "a call of this release was sent (no task of it is in flight now); it runs to its end"
    return error_response(409, "AlreadySubmitted", message, field="id", task_ids=found.task_ids)


FILTERS = ("status", "eni_id", "vpc_id", "created_after", "created_before")


async def list_releases(request: web.Request) -> web.Response:
    """``GET /v1/releases?status=&eni_id=&vpc_id=&created_after=&created_before=&limit=&cursor=``: newest
    first, paged, every filter given applied."""
    query = request.query
    schema.only_params(query, (*FILTERS, "limit", "cursor"))
    filters = ReleaseFilter(
        status=schema.status_filter(query.get("status"), STATUSES),
        eni_id=schema.id_filter("eni_id", query.get("eni_id")),
        vpc_id=schema.id_filter("vpc_id", query.get("vpc_id")),
        created_after=schema.date_time("created_after", query.get("created_after")),
        created_before=schema.date_time("created_before", query.get("created_before")),
    )
    limit = schema.page_limit(query.get("limit"))
    before = schema.cursor(query.get("cursor"))
    views, following = await request.app[ENGINE].page(limit=limit, before=before, filters=filters)
    page = [complete_release(view) for view in views]
    return json_response({"releases": page, "next_cursor": schema.make_cursor(following)})


async def _read_body(request: web.Request) -> bytes:
    """The request body, within the app's body timeout (408) and size cap (413, raised by aiohttp)."""
    seconds = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise Refused(408, "RequestTimeout", f"the body did not arrive within {seconds:g}s") from None
    except (web.RequestPayloadError, ConnectionError) as exc:  # broken framing, or the caller left
        raise Refused(400, "InvalidInput", f"not read to its end ({type(exc).__name__})", "body") from None


class Refused(Exception):
    """An error answer decided while reading a request; the connection is closed after it, since what is
    left of the request is not worth reading."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(f"{status} {code}: {message}")


async def openapi(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: the contract (no token needed)."""
    schema.only_params(request.query, ())
    return web.Response(body=request.app[DOCUMENT], headers={"Content-Type": JSON_TYPE})


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when the engine can take work, 503 with the reason otherwise."""
    engine = request.app[ENGINE]
    ready, reason = await engine.ready()
    data: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "reason": reason,
        "api": engine.api_state,
        "unfinished": engine.unfinished,
    }
    return json_response(data, status=200 if ready else 503)


__all__ = ["ENGINE", "error_response", "json_response", "make_app"]
