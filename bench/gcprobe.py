"""Run ``python -m eni_async ARGS`` with the garbage collector's pauses timed: ``python -m bench.gcprobe OUT ARGS``.

``gc.callbacks`` sees each collection start and stop; every pause is timed with ``time.perf_counter`` (the
event loop stalls for exactly that long: collection holds the interpreter) and, at exit, ``OUT`` gets one
JSON document: collections per generation, the total and the longest pause in seconds, how many paused
the loop for more than 50 ms, and how many objects the collector freed (cyclic garbage; everything else was
freed by refcounting).
"""

from __future__ import annotations

import atexit
import gc
import json
import runpy
import sys
import time

STALL = 0.050


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    started: list[float] = []
    pauses: list[tuple[int, float]] = []
    collected = [0]  # objects the collector freed (cyclic garbage): the rest was freed by refcounting

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append((info["generation"], time.perf_counter() - started.pop()))
            collected[0] += info["collected"]

    def report() -> None:
        longest = max((p for _, p in pauses), default=0.0)
        summary = {
            "collections": {str(g): sum(1 for gen, _ in pauses if gen == g) for g in (0, 1, 2)},
            "total_s": sum(p for _, p in pauses),
            "longest_s": longest,
            "stalls_over_50ms": sum(1 for _, p in pauses if p > STALL),
            "collected_objects": collected[0],
        }
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(summary, handle)

    gc.callbacks.append(timed)
    atexit.register(report)
    sys.argv = ["eni_async", *args]
    runpy.run_module("eni_async", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
