"""Benchmarks of eni_async against its peers; never part of the test run.

Run ``python bench/run.py`` (or ``--quick`` for a smoke run) from the repository root with the ``bench``
dependencies installed (matplotlib). Three benchmarks, each against ``eni-async simulate`` in its own
subprocess on 127.0.0.1, each client in a subprocess of its own so that client and server never share an
event loop or a CPU account:

- ``makespan``: 2,000 ENIs of one IP at the (tenfold) quota, eni_async vs the official async SDK vs raw
  aiohttp; makespan over the floor, queries per task, throttled answers, correctness.
- ``cost``: client CPU seconds per released ENI with limits off and tasks ending at once.
- ``scale``: peak RSS of ``eni-async batch`` for 10,000 and 100,000 ENIs read from a JSON Lines file.

Modules: ``procs`` (subprocesses with deadlines, the simulator), ``clients`` (the three clients, run as
``python -m bench.clients``), ``makespan``, ``cost``, ``scale``, ``report`` (table, JSON, plot), ``run``.
"""
