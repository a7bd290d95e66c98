"""Frozen values that cross module boundaries: credentials, HTTP exchanges, task states and results.

Nothing here performs I/O. ``Credentials`` never shows its secret key or token in a repr.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

_C = TypeVar("_C", bound=type[Any])


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()  # the default of a field made by its ``default_factory``


# A field's ``default_factory`` written as a literal (no call of the type).
_LITERALS = {list: "[]", dict: "{}"}


def quick_init(cls: _C) -> _C:
    """Give a slotted dataclass a quicker ``__init__``, for values made for every call and ENI: a frozen one
    writes each field through its slot's descriptor, not ``object.__setattr__`` as the generated one does
    (frozen classes refuse plain assignment; a third of the instructions a field), and a ``list`` or
    ``dict`` factory is a literal. The same parameters, defaults and factories, in the same order
    (``test_quick_init_is_the_generated_init`` pins it); frozen as before."""
    frozen = cls.__dataclass_params__.frozen
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    params, lines = [], []
    for f in dataclasses.fields(cls):
        if not f.init or f.kw_only:  # not needed so far: refused rather than half handled
            raise TypeError(f"quick_init: {cls.__name__}.{f.name} is not a plain positional field")
        value = f.name
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            made = _LITERALS.get(f.default_factory, f"_factory_{f.name}()")  # type: ignore[call-overload]
            value = f"{made} if {f.name} is _FACTORY else {f.name}"
        else:
            params.append(f.name)
        if frozen:
            names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
            lines.append(f"    _set_{f.name}(self, {value})\n")
        else:
            lines.append(f"    self.{f.name} = {value}\n")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"quick_init: {cls.__name__} has a __post_init__")
    exec(f"def __init__(self, {', '.join(params)}):\n{''.join(lines)}", names)
    init = names["__init__"]
    init.__annotations__ = cls.__init__.__annotations__
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init
    return cls


class TaskStatus(StrEnum):
    """The states of a VPC task."""

    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"

    @property
    def done(self) -> bool:
        """Whether the task has ended."""
        return self is not TaskStatus.RUNNING


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class Credentials:
    """A Tencent Cloud key pair, optional session token and, for temporary ones, when they expire.

    ``expires_at`` is epoch seconds (``None``: never). The repr hides the key and token.
    """

    secret_id: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expires_at: float | None = None

    def __repr__(self) -> str:
        token = ", token=***" if self.token else ""
        expiry = f", expires_at={self.expires_at:.0f}" if self.expires_at is not None else ""
        return f"Credentials(secret_id={self.secret_id!r}, secret_key=***{token}{expiry})"


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class HttpRequest:
    """A request as a dialect builds it: no I/O, ready for a transport to send."""

    action: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None

    def __repr__(self) -> str:
        # The URL and body may carry a v2 Signature; show the shape only.
        return f"HttpRequest(action={self.action!r}, method={self.method!r})"


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class HttpResponse:
    """An answer as a transport received it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class Submitted:
    """The answer to a mutating call: the task it started."""

    task_id: str
    request_id: str | None


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class TaskState:
    """One reading of a task."""

    task_id: str
    status: TaskStatus
    request_id: str | None = None
    output: str | None = None
    observed_at: float | None = None  # Clock.monotonic() when the query was sent, once a client stamps it


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class EniInfo:
    """What DescribeNetworkInterfaces says about one ENI."""

    vpc_id: str
    eni_id: str
    primary_ip: str | None
    secondary_ips: tuple[str, ...]
    eips: Mapping[str, str] = field(default_factory=dict)
    # Each listed IP's ``State`` where the dialect lists one (API 3.0: ``AVAILABLE``, ``DELETING`` while an
    # unassign task runs on it, ``PENDING`` while an assign does); empty where it does not (API 2.0).
    ip_states: Mapping[str, str] = field(default_factory=dict)

    def listed(self, ip: str) -> bool:
        """Whether ``ip`` is on this ENI, primary or secondary."""
        return ip == self.primary_ip or ip in self.secondary_ips


RELEASED, NOT_RELEASED, UNKNOWN = "released", "not_released", "unknown"
BY_ENI, BY_TASK = "eni", "task"


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class ChunkFate:
    """What became of the IPs of one submitted task, IP by IP, and how each fate was established.

    ``confirmed_by`` maps every IP that is released or not released to ``"eni"`` (seen on, or gone from, the
    ENI as described after the task was submitted) or ``"task"`` (the task read as SUCCESS). ``state`` is the
    task's last reading when one was made (its ``output`` is a FAILED task's reason); ``reason`` says why IPs
    are ``unknown`` when some are; ``error`` is the error that left them unknown, when one did.
    """

    vpc_id: str
    eni_id: str
    task_id: str
    ips: tuple[str, ...]
    released: tuple[str, ...] = ()
    not_released: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    confirmed_by: Mapping[str, str] = field(default_factory=dict)
    state: TaskState | None = None
    reason: str | None = None
    error: BaseException | None = None

    @property
    def settled(self) -> bool:
        """Whether every IP's fate was observed (none unknown)."""
        return not self.unknown

    @property
    def closed(self) -> bool:
        """Whether its task need not be watched again: every IP's fate observed, or the task seen ending."""
        return not self.unknown or (self.state is not None and self.state.status.done)

    @property
    def final_status(self) -> str:
        """The task's end as observed, one word: ``SUCCESS`` or ``FAILED`` as read, else as its IPs say
        (``SUCCESS``: every one gone after the call was accepted; ``FAILED``: some still listed after it
        ended); ``TIMEOUT`` when the deadline passed first, ``UNKNOWN`` when something else kept it unseen."""
        if self.state is not None and self.state.status.done:
            return self.state.status.value
        if self.unknown:
            return "TIMEOUT" if isinstance(self.error, TimeoutError) else "UNKNOWN"
        return TaskStatus.FAILED.value if self.not_released else TaskStatus.SUCCESS.value


@quick_init
@dataclass(frozen=True, slots=True, weakref_slot=True)
class UnassignResult:
    """The result of releasing IPs from one ENI: every task, request and released IP, in order, and the IPs
    that were not on the ENI when we looked (``absent``: nothing to release, which is not a failure)."""

    vpc_id: str
    eni_id: str
    released: tuple[str, ...]
    task_ids: tuple[str, ...]
    request_ids: tuple[str | None, ...]
    absent: tuple[str, ...] = ()
