"""``eni-async serve``: the release engine with an HTTP face, callers' authentication and a registry.

Layers, each with one job: ``schema`` checks what callers send (pure), ``registry`` keeps releases and
idempotency keys beside the journal (SQLite, no HTTP), ``engine`` runs releases through the client's batch
machinery (no HTTP), ``http`` is the aiohttp.web face (no Tencent), ``command`` composes them for the CLI,
and ``client`` is ``ServiceClient`` for Python callers.
"""

from eni_async.service.service_client import ServiceClient, ServiceError, release_error

__all__ = ["ServiceClient", "ServiceError", "release_error"]
