"""The service's OpenAPI 3 document, served at ``/v1/openapi.json``, and the release's fields: plain data.

The document states every rule the service enforces (patterns, lengths, enums, which errors each operation
answers, the ``Idempotency-Key`` rules) and every field it sends: a contract fuzzer drives the service from
it in the suite (``tests/test_service_contract.py``), so where the two disagree one of them is wrong. The
values come from ``schema``'s constants, never restated. ``RELEASE_FIELDS`` is the one table of a release's
fields, their schemas and the value each has before the work says otherwise: ``complete_release`` gives
every answer (the first ``202``, a replay, a ``GET``, a page) all of them. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

from eni_async.service.registry import STATUSES as RELEASE_STATUSES
from eni_async.service.schema import (
    CURSOR_PATTERN,
    DEFAULT_PAGE,
    ENI_PATTERN,
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    IPV4_PATTERN,
    MAX_IPS_PER_RELEASE,
    MAX_PAGE,
    MAX_RELEASES_PER_REQUEST,
    MAX_WAIT_S,
    VPC_PATTERN,
)

JSON = "application/json"
RELEASE_ID_PATTERN = "^rel-[0-9a-f]{32}$"  # the registry's ids: rel- and a UUID4 in hex
_IP = {"type": "string", "pattern": IPV4_PATTERN, "format": "ipv4"}
_IPS = {"type": "array", "items": _IP}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STAMP = {"type": "string", "format": "date-time"}
_NULLABLE_STAMP = {**_STAMP, "nullable": True}
_VPC = {"type": "string", "pattern": VPC_PATTERN, "minLength": 12, "maxLength": 12}
_ENI = {"type": "string", "pattern": ENI_PATTERN, "minLength": 12, "maxLength": 12}
_RFC3339 = "an RFC 3339 date-time (e.g. `2026-12-03T14:00:00Z`, `2026-12-03T22:00:00.5+08:00`), years 0001 on"

_REQUIRED = object()  # no default: always set by the registry
# name -> (schema, value before the work says otherwise)
RELEASE_FIELDS: dict[str, tuple[dict[str, Any], Any]] = {
    "id": ({"type": "string", "pattern": RELEASE_ID_PATTERN}, _REQUIRED),
    "status": ({"type": "string", "enum": list(RELEASE_STATUSES)}, _REQUIRED),
    "vpc_id": (_VPC, _REQUIRED),
    "eni_id": (_ENI, _REQUIRED),
    "ips": (_IPS, _REQUIRED),
    "released": ({**_IPS, "description": "gone from the ENI, by a task of this release"}, []),
    "not_released": ({**_IPS, "description": "still on the ENI, or never sent"}, []),
    "unknown": ({**_IPS, "description": "sent, and its fate not observed"}, []),
    "absent": ({**_IPS, "description": "not on the ENI when looked at: nothing to release"}, []),
    "confirmed_by": (
        {
            "type": "object",
            "description": "how each released or not released IP's fate was seen",
            "additionalProperties": {"type": "string", "enum": ["eni", "task"]},
        },
        {},
    ),
    "task_ids": (_STRINGS, []),
    "request_ids": (_STRINGS, []),
    "error": (
        {
            "type": "object",
            "nullable": True,
            "additionalProperties": False,
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
            },
        },
        None,
    ),
    "decisions": ({**_STRINGS, "description": "reconciliation decisions taken on the way"}, []),
    "attempts": ({"type": "integer", "minimum": 0}, 0),
    "elapsed_s": ({"type": "number", "minimum": 0}, 0.0),
    "outcome_status": (
        {"type": "string", "nullable": True, "description": "the batch outcome's status when it says more"},
        None,
    ),
    "created_at": (_STAMP, _REQUIRED),
    "started_at": (_NULLABLE_STAMP, None),
    "finished_at": (_NULLABLE_STAMP, None),
}


def complete_release(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a release as the engine shows it) with every field of ``RELEASE_FIELDS``, in its order;
    a field it lacks gets its value before the work says otherwise. Keys beyond the table are kept, so
    that the contract test sees them."""
    out = {name: data.get(name, default) for name, (_, default) in RELEASE_FIELDS.items()}
    out.update((key, value) for key, value in data.items() if key not in RELEASE_FIELDS)
    return out


def _json(description: str, ref: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}, **(headers or {})},
    }
    return answer


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(description, "Error", headers)


_RETRY = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
_UNAUTHORIZED = _error(
    "no valid bearer token (the same answer whatever was wrong)",
    {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
)
_UNAVAILABLE = _error(
    "the service is stopping, its journal does not answer or takes no writes, or the API refused its "
    "credentials",
    _RETRY,
)
_BAD_QUERY = _error("a query parameter breaks its rule, is unknown or is given twice; names it in `field`")
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
_FINISHED_OR_NOT = (
    "`pending` and `running` are unfinished; `succeeded`, `failed` and `cancelled` (cancelled before any "
    "of its calls was sent: every IP `not_released`) are final and never change. A finished release is "
    "kept `service_retention` seconds (7 days by default), then pruned"
)
_IDEMPOTENCY = (
    "Optional. 1 to 255 visible ASCII characters (0x21 to 0x7E). Keys belong to the caller's token. "
    "The same key with the same body (compared after parsing: whitespace and key order do not count) "
    "returns the release(s) it created, with `Idempotent-Replayed: true`, and never submits again, even "
    "for requests that arrive at once; the same key with another body answers 409. A key is kept "
    "`service_idempotency_ttl` seconds (24 hours by default, never longer than `service_retention`); after "
    "that the same key makes a new release."
)

_COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "headers": {
        "RequestId": {
            "description": "the caller's X-Request-Id (1 to 128 visible ASCII characters), else a fresh id",
            "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            "required": True,
        },
        "RetryAfter": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 1},
            "required": True,
        },
    },
    "schemas": {
        "ReleaseRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["vpc_id", "eni_id", "ips"],
            "properties": {
                "vpc_id": _VPC,
                "eni_id": _ENI,
                "ips": {
                    **_IPS,
                    "minItems": 1,
                    "maxItems": MAX_IPS_PER_RELEASE,
                    "uniqueItems": True,
                    "description": "dotted-quad IPv4 addresses, no leading zeros, no repeats",
                },
            },
        },
        "BatchRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["releases"],
            "properties": {
                "releases": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_RELEASES_PER_REQUEST,
                    "items": {"$ref": "#/components/schemas/ReleaseRequest"},
                }
            },
        },
        "Release": {
            "type": "object",
            "description": f"one ENI's release; {_FINISHED_OR_NOT}",
            "additionalProperties": False,
            "required": list(RELEASE_FIELDS),
            "properties": {name: schema for name, (schema, _) in RELEASE_FIELDS.items()},
        },
        "Accepted": {
            "type": "object",
            "description": "the batch form's answer: one release per entry, in the order given",
            "additionalProperties": False,
            "required": ["releases"],
            "properties": {"releases": {"type": "array", "items": {"$ref": "#/components/schemas/Release"}}},
        },
        "Page": {
            "type": "object",
            "additionalProperties": False,
            "required": ["releases", "next_cursor"],
            "properties": {
                "releases": {"type": "array", "items": {"$ref": "#/components/schemas/Release"}},
                "next_cursor": {
                    "type": "string",
                    "nullable": True,
                    "pattern": CURSOR_PATTERN,
                    "description": "the cursor of the next page; null on the last",
                },
            },
        },
        "Health": {
            "type": "object",
            "additionalProperties": False,
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "Readiness": {
            "type": "object",
            "additionalProperties": False,
            "required": ["status", "reason", "api", "unfinished"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not_ready"]},
                "reason": {"type": "string"},
                "api": {
                    "type": "string",
                    "description": "the API as this replica sees it: ok, checking credentials, unreachable (Code), "
                    "throttled (Code), or credentials refused: Code (checked at start with one cheap call)",
                },
                "unfinished": {"type": "integer", "minimum": 0},
            },
        },
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "field": {"type": "string", "description": "the field, parameter or header at fault"},
                        "message": {"type": "string", "description": "the rule broken; never the value sent"},
                        "task_ids": {
                            **_STRINGS,
                            "description": "a refused cancel's tasks in flight (`AlreadySubmitted` only)",
                        },
                    },
                }
            },
        },
    },
}

_PATHS: dict[str, Any] = {
    "/v1/releases": {
        "post": {
            "summary": "Accept one release, or many in order",
            "description": (
                "The body is one UTF-8 JSON object, at most `service_max_body` bytes, with exactly the "
                "documented keys, each once (a repeated key is 400). No query parameters. Each release is "
                "recorded in the journal before the answer."
            ),
            "security": _SECURED,
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": _IDEMPOTENCY,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": IDEMPOTENCY_KEY_MAX,
                        "pattern": IDEMPOTENCY_KEY_PATTERN,
                    },
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/ReleaseRequest"},
                                {"$ref": "#/components/schemas/BatchRequest"},
                            ]
                        }
                    }
                },
            },
            "responses": {
                "202": {
                    "description": "accepted: the release, or `{releases: [...]}` for the batch form",
                    "content": {
                        JSON: {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Release"},
                                    {"$ref": "#/components/schemas/Accepted"},
                                ]
                            }
                        }
                    },
                    "headers": {
                        "X-Request-Id": {"$ref": "#/components/headers/RequestId"},
                        "Location": {
                            "description": "the release's URL (the single form only)",
                            "schema": {"type": "string"},
                        },
                        "Idempotent-Replayed": {
                            "description": "`true` when the answer is an earlier request's",
                            "schema": {"type": "string", "enum": ["true"]},
                        },
                    },
                    "links": {
                        "GetRelease": {
                            "operationId": "getRelease",
                            "parameters": {"id": "$response.body#/id"},
                            "description": "the release just accepted (single form)",
                        },
                        "CancelRelease": {
                            "operationId": "cancelRelease",
                            "parameters": {"id": "$response.body#/id"},
                            "description": "cancel the release just accepted (single form)",
                        },
                    },
                },
                "400": _error("the body or a header breaks a rule; names it in `field`; nothing created"),
                "401": _UNAUTHORIZED,
                "408": _error("the body did not arrive within `service_body_timeout` seconds"),
                "409": _error(
                    "this Idempotency-Key was used with another body (or, with replicas whose retention "
                    "settings differ, its releases were pruned)"
                ),
                "413": _error("the body is over `service_max_body` bytes"),
                "429": _error("too many releases unfinished (`service_max_unfinished`)", _RETRY),
                "503": _UNAVAILABLE,
            },
            "operationId": "createReleases",
        },
        "get": {
            "summary": "List releases, newest first, a page at a time, every filter given applied",
            "operationId": "listReleases",
            "security": _SECURED,
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(RELEASE_STATUSES)},
                },
                {"name": "eni_id", "in": "query", "description": "releases of this ENI only", "schema": _ENI},
                {"name": "vpc_id", "in": "query", "description": "releases in this VPC only", "schema": _VPC},
                {
                    "name": "created_after",
                    "in": "query",
                    "description": f"releases created at or after this moment only; {_RFC3339}",
                    "schema": _STAMP,
                },
                {
                    "name": "created_before",
                    "in": "query",
                    "description": f"releases created before this moment only; {_RFC3339}",
                    "schema": _STAMP,
                },
                {
                    "name": "limit",
                    "in": "query",
                    "description": f"releases per page (default {DEFAULT_PAGE})",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "the `next_cursor` of the previous page; empty or absent: the first",
                    "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                },
            ],
            "responses": {
                "200": _json("a page of releases", "Page"),
                "400": _BAD_QUERY,
                "401": _UNAUTHORIZED,
                "503": _UNAVAILABLE,
            },
        },
    },
    "/v1/releases/{id}": {
        "get": {
            "summary": "One release; `?wait=` holds the answer until it ends",
            "operationId": "getRelease",
            "security": _SECURED,
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "wait",
                    "in": "query",
                    "description": "seconds to hold the answer until the release ends (default 0)",
                    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                },
            ],
            "responses": {
                "200": _json(f"the release ({_FINISHED_OR_NOT})", "Release"),
                "400": _BAD_QUERY,
                "401": _UNAUTHORIZED,
                "404": _error("no release with this id (never given, or pruned after `service_retention`)"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/releases/{id}:cancel": {
        "post": {
            "summary": "Cancel a release none of whose calls was sent",
            "description": (
                "A release none of whose calls was sent becomes `cancelled` (final; every IP `not_released`) "
                "and is never submitted afterwards; the journal decides between a cancel and a submit, "
                "whichever replicas run them. Cancelling a `cancelled` release answers it again (200). No "
                "body, no query parameters. (`POST ...:cancel`, as Google's long-running operations do: "
                "the release stays readable, as a DELETE would not let it.)"
            ),
            "operationId": "cancelRelease",
            "security": _SECURED,
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    **_json("the release, `cancelled`", "Release"),
                    "links": {
                        "GetRelease": {
                            "operationId": "getRelease",
                            "parameters": {"id": "$response.body#/id"},
                            "description": "the cancelled release",
                        }
                    },
                },
                "400": _BAD_QUERY,
                "401": _UNAUTHORIZED,
                "404": _error("no release with this id (never given, or pruned after `service_retention`)"),
                "409": _error(
                    "not cancelled: `AlreadySubmitted` (a call was sent; it runs to its end, `task_ids` "
                    "names its tasks in flight, none while a submit is in doubt) or `AlreadyFinished` "
                    "(`succeeded` or `failed`)"
                ),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document (no token needed)",
            "operationId": "getOpenApi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3 document",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "The process answers (liveness; no token)",
            "operationId": "getHealth",
            "responses": {"200": _json("up", "Health")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "The journal takes writes and the API was reachable (or not yet tried) (readiness)",
            "operationId": "getReadiness",
            "responses": {
                "200": _json("ready", "Readiness"),
                "503": _json("not ready: `reason` says why", "Readiness"),
            },
        }
    },
}


def document(*, metrics_token: bool = False) -> dict[str, Any]:
    """The document; ``metrics_token`` says whether ``/metrics`` needs a bearer token (a setting)."""
    metrics: dict[str, Any] = {
        "summary": "Prometheus text format",
        "operationId": "getMetrics",
        "responses": {
            "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "501": _error("the `metrics` extra (prometheus-client) is not installed"),
        },
    }
    if metrics_token:
        metrics["security"] = _SECURED
        metrics["responses"]["401"] = _UNAUTHORIZED
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "eni-async serve",
            "version": "1",
            "description": (
                "Release secondary private IPs from Tencent Cloud ENIs and track every task to its end. Every "
                "answer is JSON (but /metrics) and carries X-Request-Id; every error is "
                "`{error: {code, message[, field]}}` and never repeats what was sent."
            ),
        },
        "components": _COMPONENTS,
        "paths": {**_PATHS, "/metrics": {"get": metrics}},
    }


DOCUMENT = document()

__all__ = ["DOCUMENT", "RELEASE_FIELDS", "complete_release", "document"]
