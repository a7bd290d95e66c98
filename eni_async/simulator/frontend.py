"""What every API front end (``v2``, ``v3``) offers the app: read, authenticate, dispatch, render an error.

The app runs one pipeline for both dialects (read, count, authenticate, faults, rate limit, dispatch); a
front end only knows its own wire format and its own code table. Front ends raise ``Reject``; they never
build HTTP responses themselves, so the app alone decides status codes, headers and injected faults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from eni_async.simulator.rejects import Reason, Reject
from eni_async.simulator.resources import TaskFate

if TYPE_CHECKING:
    from eni_async.simulator.keys import KeyRing
    from eni_async.simulator.limits import ReplayGuard
    from eni_async.simulator.state import World


@dataclass
class Call:
    """One parsed request: the action name and its parameters (flat for API 2.0, nested JSON for 3.0)."""

    action: str
    params: dict[str, Any]
    body: bytes = b""


class Frontend(Protocol):
    """One dialect's wire format over the shared world."""

    dialect: str

    @property
    def actions(self) -> frozenset[str]:
        """The actions served."""
        ...

    async def read(self, request: web.Request) -> Call:
        """Parse the request; raise ``Reject`` when it cannot be parsed."""
        ...

    def authenticate(self, request: web.Request, call: Call) -> str:
        """Verify the request's signature and freshness; return the SecretId."""
        ...

    def dispatch(self, call: Call, fate: TaskFate) -> dict[str, Any]:
        """Run the action; return the success body."""
        ...

    def error(self, reject: Reject) -> dict[str, Any]:
        """The error body for a refused call."""
        ...


# The actions a per-resource denial refuses; reading an ENI stays allowed, as with a read-only CAM policy.
MUTATING = frozenset({"UnassignPrivateIpAddresses", "AssignPrivateIpAddresses"})


class ActionTable:
    """What both front ends share: the world, the key ring, the replay guard, and one table of the actions.

    A front end subclasses it and writes the four action methods in its own wire format.
    """

    def __init__(self, world: World, keys: KeyRing, replay: ReplayGuard) -> None:
        self._world = world
        self._keys = keys
        self._replay = replay
        self._actions: dict[str, Callable[[Any, TaskFate], dict[str, Any]]] = {
            "UnassignPrivateIpAddresses": self._unassign,
            "AssignPrivateIpAddresses": self._assign,
            "DescribeNetworkInterfaces": self._describe,
            "DescribeVpcTaskResult": self._task_result,
        }

    @property
    def actions(self) -> frozenset[str]:
        """The actions this front end serves."""
        return frozenset(self._actions)

    # ENIs whose mutating calls are refused per resource; the app shares one set with both front ends.
    denied: set[str] | frozenset[str] = frozenset()
    # How a describe naming an ENI that does not exist answers (``SimulatorConfig.describe_missing``).
    describe_missing: str = "omit"

    def _check_named(self, eni_ids: list[str], *, name: str) -> None:
        """Fail a describe by ids that names an ENI that does not exist, unless such ids are left out."""
        if self.describe_missing == "omit":
            return
        missing = [eni for eni in eni_ids if eni not in self._world.enis]
        if not missing:
            return
        if self.describe_missing == "ResourceNotFound":
            raise Reject(Reason.ENI_NOT_FOUND, f"the network interface {', '.join(missing)} does not exist")
        raise Reject(Reason.ENI_ID_UNKNOWN, f"parameter {name}: {', '.join(missing)} not found")

    def _run(self, call: Call, fate: TaskFate) -> dict[str, Any]:
        """Run ``call.action``'s method; an action not in the table is ``InvalidAction``."""
        handler = self._actions.get(call.action)
        if handler is None:
            raise Reject(Reason.INVALID_ACTION, f"unknown action {call.action!r}")
        if self.denied and call.action in MUTATING:
            # Both dialects name the ENI in one parameter: networkInterfaceId (2.0), NetworkInterfaceId (3.0).
            eni_id = next((v for k, v in call.params.items() if k.lower() == "networkinterfaceid"), None)
            if isinstance(eni_id, str) and eni_id in self.denied:
                raise Reject(
                    Reason.UNAUTHORIZED,
                    f"you are not authorized to perform operation (vpc:{call.action}) on resource "
                    f"(eni/{eni_id}): 子账号未被主账号授权访问特定资源",
                )
        return handler(call.params, fate)

    def _unassign(self, params: Any, fate: TaskFate) -> dict[str, Any]:
        raise NotImplementedError

    def _assign(self, params: Any, fate: TaskFate) -> dict[str, Any]:
        raise NotImplementedError

    def _describe(self, params: Any, fate: TaskFate) -> dict[str, Any]:
        raise NotImplementedError

    def _task_result(self, params: Any, fate: TaskFate) -> dict[str, Any]:
        raise NotImplementedError
