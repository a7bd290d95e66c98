"""``quick_init`` gives the values made for every call and ENI the very ``__init__`` dataclasses would."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from eni_async.dialects.base import DescribePage, SignContext
from eni_async.models import (
    ChunkFate,
    Credentials,
    EniInfo,
    HttpRequest,
    HttpResponse,
    Submitted,
    TaskState,
    UnassignResult,
    quick_init,
)
from eni_async.outcomes import Item, Outcome

CLASSES: list[type[Any]] = [
    ChunkFate,
    Credentials,
    DescribePage,
    EniInfo,
    HttpRequest,
    HttpResponse,
    Item,
    Outcome,
    SignContext,
    Submitted,
    TaskState,
    UnassignResult,
]


def _generated(cls: type[Any]) -> type[Any]:
    """The same fields as ``cls``, with the ``__init__`` dataclasses generates (frozen as ``cls``, slotted)."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    frozen = cls.__dataclass_params__.frozen
    return dataclasses.make_dataclass(f"Generated{cls.__name__}", fields, frozen=frozen, slots=True)


def _values(cls: type[Any]) -> dict[str, Any]:
    return {f.name: f"<{f.name}>" for f in dataclasses.fields(cls)}


def _state(value: object) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_quick_init_is_the_generated_init(cls: type[Any]) -> None:
    """Positionally, by keyword, with the required fields alone (defaults, fresh factories each time) and
    with a wrong call, each class builds what the generated ``__init__`` builds, and stays frozen."""
    plain = _generated(cls)
    assert "_FACTORY" in cls.__init__.__globals__  # quick_init's, not the generated one
    values = _values(cls)
    required = {f.name: values[f.name] for f in dataclasses.fields(cls) if _required(f)}
    assert _state(cls(*values.values())) == _state(plain(*values.values())) == values
    assert _state(cls(**values)) == _state(plain(**values)) == values
    one, other = cls(**required), cls(**required)
    assert _state(one) == _state(plain(**required))
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(one, f.name) is not getattr(other, f.name)
    for wrong in ((), (*values.values(), "extra")):
        with pytest.raises(TypeError):
            cls(*wrong)
        with pytest.raises(TypeError):
            plain(*wrong)
    if cls.__dataclass_params__.frozen:
        with pytest.raises(dataclasses.FrozenInstanceError):
            one.__setattr__(dataclasses.fields(cls)[0].name, "changed")
    assert [(p.name, p.kind, p.annotation) for p in inspect.signature(cls).parameters.values()] == [
        (p.name, p.kind, p.annotation) for p in inspect.signature(plain).parameters.values()
    ]


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def test_quick_init_refuses_what_it_does_not_handle() -> None:
    """A field out of ``__init__``, a keyword-only one or a ``__post_init__`` is refused, never half done."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class NotInit:
        a: int = dataclasses.field(default=0, init=False)

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (NotInit, KeywordOnly, PostInit):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)
