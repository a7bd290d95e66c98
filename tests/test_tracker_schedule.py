"""The tracker's agenda: earliest first, ties first come first served, an item at most once (its latest entry)."""

from __future__ import annotations

import random

from eni_async.tracker.schedule import Agenda


def test_agenda_pops_earliest_first_and_ties_in_arrival_order() -> None:
    agenda: Agenda[str] = Agenda()
    agenda.at("b", 2.0)
    agenda.at("a", 1.0)
    agenda.at("c", 2.0)
    assert agenda.first() == 1.0
    assert agenda.pop(0.5) is None  # nothing due yet
    assert [agenda.pop(2.0), agenda.pop(2.0), agenda.pop(2.0), agenda.pop(2.0)] == ["a", "b", "c", None]
    assert len(agenda) == 0
    assert agenda.first() is None


def test_agenda_keeps_only_the_latest_entry_of_an_item() -> None:
    agenda: Agenda[str] = Agenda()
    agenda.at("a", 1.0)
    agenda.at("a", 3.0)  # replaces the first entry
    agenda.at("b", 2.0)
    agenda.cancel("b")
    agenda.cancel("b")  # cancelling what is not there changes nothing
    assert "a" in agenda
    assert "b" not in agenda
    assert agenda.due("a") == 3.0
    assert agenda.due("b") is None
    assert agenda.pop(2.5) is None
    assert agenda.pop(3.0) == "a"
    assert agenda.pop(10.0) is None


def test_agenda_matches_a_plain_model_and_drops_what_it_left_behind() -> None:
    rng = random.Random(7)
    agenda: Agenda[int] = Agenda()
    model: dict[int, tuple[float, int]] = {}  # item -> (due, arrival)
    arrival = peak = 0
    for _ in range(5000):
        item, roll = rng.randrange(40), rng.random()
        if roll < 0.5:
            due = float(rng.randrange(20))
            agenda.at(item, due)
            model[item] = (due, arrival)
            arrival += 1
        elif roll < 0.75:
            agenda.cancel(item)
            model.pop(item, None)
        elif roll < 0.95:
            until = float(rng.randrange(20))
            due_first = sorted((d, a, i) for i, (d, a) in model.items())
            expected = due_first[0][2] if due_first and due_first[0][0] <= until else None
            assert agenda.pop(until) == expected
            if expected is not None:
                del model[expected]
        else:  # every item due, in one call: what ``pop`` until ``None`` would take, in that order
            until = float(rng.randrange(20))
            due_all = [i for d, a, i in sorted((d, a, i) for i, (d, a) in model.items()) if d <= until]
            assert agenda.pop_due(until) == due_all
            for i in due_all:
                del model[i]
        assert len(agenda) == len(model)
        assert all(agenda.due(i) == d for i, (d, _) in model.items())
        peak = max(peak, len(model))
        # What was left behind is dropped now and then: the heap holds no more than twice the most items
        # ever held at once, plus a constant.
        assert len(agenda._heap) <= 2 * peak + 64 + 1
