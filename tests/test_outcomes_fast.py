"""The outcome's quick ways (``for_item``, ``settle``'s common case, ``Summary.add``'s) agree with the long ones."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eni_async.outcomes import Item, Outcome
from eni_async.progress import Summary, unreadable

POOL = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def _state(outcome: Outcome) -> dict[str, Any]:
    return {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)}


def test_for_item_is_the_outcome_of_its_fields() -> None:
    """``for_item`` builds what the constructor builds from the item's fields, line and key included."""
    item = Item("vpc-1pjso2kr", "eni-l06yqdpv", ("10.0.0.3",), line=7, key=42)
    assert _state(Outcome.for_item(item)) == _state(
        Outcome(item.vpc_id, item.eni_id, item.ips, line=7, key=42)
    )


@st.composite
def outcomes(draw: st.DrawFn) -> Outcome:
    ips = tuple(draw(st.lists(st.sampled_from(POOL), unique=True, max_size=3)))
    pick = st.lists(st.sampled_from(POOL), max_size=3)
    outcome = Outcome("vpc-1pjso2kr", "eni-l06yqdpv", ips)
    outcome.released = draw(st.one_of(st.just(list(ips)), st.permutations(list(ips)), pick))
    outcome.not_released, outcome.unknown, outcome.absent = draw(pick), draw(pick), draw(pick)
    outcome.sent = set(draw(pick))
    outcome.task_ids = draw(st.lists(st.just("task-1"), max_size=1))
    if draw(st.booleans()):
        outcome.error = {"code": draw(st.sampled_from(["InvalidInput", "Timeout"])), "message": "m"}
    outcome.status = draw(st.sampled_from(["not_attempted", "failed", "succeeded", "submitted"]))
    return outcome


@settings(max_examples=400)
@given(outcome=outcomes(), watched=st.booleans())
def test_settle_is_derive(outcome: Outcome, watched: bool) -> None:
    """``settle`` (with its quick case: every IP released in order, no error) leaves every field as the full
    derivation does."""
    quick, full = copy.deepcopy(outcome), copy.deepcopy(outcome)
    quick.settle(watched=watched)
    full._derive(watched)
    assert _state(quick) == _state(full)


def _reference_add(summary: Summary, outcome: Outcome) -> None:
    """``Summary.add`` as it was written before its common case was made quick."""
    summary.statuses[outcome.status] += 1
    asked = set(outcome.ips)
    summary.asked += len(asked)
    summary.tasks += len(outcome.task_ids)
    if outcome.error is not None:
        summary.errors[outcome.error["code"]] += 1
    if unreadable(outcome):
        summary.unreadable += 1
        summary.unreadable_ips += len(asked)
        return
    released, unknown, absent = (
        asked & set(ips) for ips in (outcome.released, outcome.unknown, outcome.absent)
    )
    summary.released += len(released)
    summary.unknown += len(unknown - released)
    summary.absent += len(absent - released - unknown)
    summary.not_released += len(asked - released - unknown - absent)


@settings(max_examples=300)
@given(batch=st.lists(outcomes(), max_size=6))
def test_summary_add_counts_as_the_reference(batch: list[Outcome]) -> None:
    """Every count of the summary is the reference's, whatever the outcomes (duplicates, errors, unreadable)."""
    quick, reference = Summary(), Summary()
    for outcome in batch:
        quick.add(outcome)
        _reference_add(reference, outcome)
    for name in (
        "asked",
        "released",
        "not_released",
        "unknown",
        "absent",
        "unreadable",
        "unreadable_ips",
        "tasks",
    ):
        assert getattr(quick, name) == getattr(reference, name), name
    assert Counter(quick.statuses) == Counter(reference.statuses)
    assert quick.errors == reference.errors
