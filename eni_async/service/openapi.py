"""The service's OpenAPI 3 document, served at ``/v1/openapi.json``: plain data, built once, no I/O."""

from __future__ import annotations

from typing import Any

from eni_async.service.schema import (
    MAX_IPS_PER_RELEASE,
    MAX_RELEASES_PER_REQUEST,
    MAX_WAIT_S,
)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_LIST = {"type": "array", "items": {"type": "string"}}

_RELEASE_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["vpc_id", "eni_id", "ips"],
    "properties": {
        "vpc_id": {"type": "string", "pattern": "^vpc-[0-9a-z]{8}$"},
        "eni_id": {"type": "string", "pattern": "^eni-[0-9a-z]{8}$"},
        "ips": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_IPS_PER_RELEASE,
            "uniqueItems": True,
            "items": {"type": "string", "format": "ipv4"},
        },
    },
}

_RELEASE = {
    "type": "object",
    "required": ["id", "status", "vpc_id", "eni_id", "ips", "released", "not_released", "unknown"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "running", "succeeded", "failed"]},
        "vpc_id": {"type": "string"},
        "eni_id": {"type": "string"},
        "ips": _LIST,
        "released": {**_LIST, "description": "gone from the ENI"},
        "not_released": {**_LIST, "description": "still on the ENI"},
        "unknown": {**_LIST, "description": "fate not observed"},
        "absent": {**_LIST, "description": "not on the ENI when looked at: nothing to release"},
        "task_ids": _LIST,
        "request_ids": _LIST,
        "error": {
            "type": "object",
            "nullable": True,
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "decisions": _LIST,
        "attempts": {"type": "integer"},
        "elapsed_s": {"type": "number"},
        "outcome_status": {"type": "string", "description": "the batch status when it is not the same"},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": "string", "format": "date-time", "nullable": True},
        "finished_at": {"type": "string", "format": "date-time", "nullable": True},
    },
}

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "eni-async serve",
        "version": "1",
        "description": "Release secondary private IPs from Tencent Cloud ENIs and track every task to its end.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "ReleaseRequest": _RELEASE_REQUEST,
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
            "Release": _RELEASE,
            "Releases": {
                "type": "object",
                "properties": {
                    "releases": {"type": "array", "items": {"$ref": "#/components/schemas/Release"}},
                    "next_cursor": {"type": "string", "nullable": True},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    }
                },
            },
        },
    },
    "paths": {
        "/v1/releases": {
            "post": {
                "summary": "Accept one release, or many in order",
                "security": _SECURED,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "the same key and body return the same release(s); another body is 409",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
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
                        "description": "accepted: the release, or {releases: [...]} for the batch form",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Release"},
                                        {"$ref": "#/components/schemas/Releases"},
                                    ]
                                }
                            }
                        },
                    },
                    "400": _error("invalid input; nothing created"),
                    "401": _error("missing or wrong bearer token"),
                    "409": _error("idempotency key used with another body"),
                    "413": _error("body over the size limit"),
                    "429": _error("too many unfinished releases; see Retry-After"),
                    "503": _error("shutting down; see Retry-After"),
                },
            },
            "get": {
                "summary": "List releases, newest first",
                "security": _SECURED,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["pending", "running", "succeeded", "failed"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _ok("a page of releases", "Releases"),
                    "400": _error("bad query"),
                    "401": _error("missing or wrong bearer token"),
                },
            },
        },
        "/v1/releases/{id}": {
            "get": {
                "summary": "One release; ?wait= holds the answer until it ends",
                "security": _SECURED,
                "parameters": [
                    _ID,
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                    },
                ],
                "responses": {
                    "200": _ok("the release", "Release"),
                    "400": _error("bad query"),
                    "401": _error("missing or wrong bearer token"),
                    "404": _error("no such release"),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": _SECURED,
                "responses": {"200": {"description": "OpenAPI 3 document"}},
            }
        },
        "/healthz": {"get": {"summary": "The process is up", "responses": {"200": {"description": "up"}}}},
        "/readyz": {
            "get": {
                "summary": "Journal writable and the API reachable (or not yet tried)",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text format",
                "responses": {
                    "200": {"description": "metrics"},
                    "501": _error("metrics extra not installed"),
                },
            }
        },
    },
}

__all__ = ["DOCUMENT"]
