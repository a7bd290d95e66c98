"""The test suite. Imported before any test module or fixture, so it sets up one thing first: bytecode.

With ``PYTHONDONTWRITEBYTECODE`` set (containers often set it), every process of the suite would compile
eni_async and the tests from source, again and again: 0.2 s of each of the suite's many ``eni-async``
processes, and seconds of each worker's collection. Then the suite and the processes it starts keep their
bytecode in a cache of their own under the temporary directory instead (``PYTHONPYCACHEPREFIX``), never
beside the sources. Without the variable nothing changes: Python writes ``__pycache__`` as usual.
"""

from __future__ import annotations

import os
import sys
import tempfile

if os.environ.get("PYTHONDONTWRITEBYTECODE"):
    _CACHE = os.environ.get("PYTHONPYCACHEPREFIX") or os.path.join(
        tempfile.gettempdir(), f"eni-async-tests-pycache-{os.getuid()}"
    )
    os.environ.pop("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONPYCACHEPREFIX"] = _CACHE
    sys.pycache_prefix = _CACHE
    sys.dont_write_bytecode = False
