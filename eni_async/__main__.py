"""``python -m eni_async`` behaves as the ``eni-async`` command."""

from eni_async.cli import main

raise SystemExit(main())
