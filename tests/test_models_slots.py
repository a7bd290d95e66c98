"""The values the library hands out (slotted dataclasses) still take weak references, pickle and compare."""

from __future__ import annotations

import pickle
import weakref

import pytest

from eni_async import ChunkFate, Credentials, EniInfo, Item, Outcome, UnassignResult

VALUES = [
    Outcome("vpc-1pjso2kr", "eni-l06yqdpv", ("10.0.0.3",)),
    Item("vpc-1pjso2kr", "eni-l06yqdpv", ("10.0.0.3",)),
    Credentials("AKIDexample", "secret"),
    EniInfo("vpc-1pjso2kr", "eni-l06yqdpv", "10.0.0.2", ("10.0.0.3",)),
    UnassignResult("vpc-1pjso2kr", "eni-l06yqdpv", ("10.0.0.3",), ("t1",), ("r1",)),
    ChunkFate("vpc-1pjso2kr", "eni-l06yqdpv", "t1", ("10.0.0.3",), released=("10.0.0.3",)),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_value_takes_a_weak_reference_and_pickles(value: object) -> None:
    assert weakref.ref(value)() is value
    assert pickle.loads(pickle.dumps(value)) == value
