"""The nouns of the simulated VPC: subnets, EIPs, ENIs, tasks and task fates, as plain mutable records.

They hold data only; ``state.World`` owns the indexes and every rule that changes them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from eni_async.models import TaskStatus


@dataclass(slots=True, eq=False)
class Subnet:
    """A subnet: its CIDR and where the next allocation by count starts looking."""

    subnet_id: str
    vpc_id: str
    network: ipaddress.IPv4Network
    zone: str
    next_host: int = 2  # host offset; .0 is the network and .1 the gateway


@dataclass(slots=True, frozen=True)
class Eip:
    """An elastic IP bound to a secondary private IP."""

    eip_id: str
    public_ip: str


@dataclass(slots=True, eq=False)
class Eni:
    """An elastic network interface. ``secondary`` maps each secondary IP to its EIP (or None), in order."""

    eni_id: str
    vpc_id: str
    subnet: Subnet
    primary_ip: str
    secondary: dict[str, Eip | None]
    mac: str
    task: Task | None = None  # the RUNNING task holding this ENI's mutex (D10)


@dataclass(frozen=True)
class TaskFate:
    """How a task will end: ``normal`` (SUCCESS), ``task_failed``, ``task_partial`` or ``task_slow``."""

    kind: str = "normal"
    slow_factor: float = 1.0


NORMAL = TaskFate()


@dataclass(slots=True, eq=False)
class Task:
    """A VPC task. ``status`` is RUNNING until ``settle`` passes ``ends_at``, then ``outcome``."""

    task_id: str
    kind: str  # "unassign" or "assign"
    eni: Eni
    ips: tuple[str, ...]
    ends_at: float
    outcome: TaskStatus
    released_on_failure: tuple[str, ...] = ()
    status: TaskStatus = TaskStatus.RUNNING
    output: str = ""
    started_at: float = 0.0  # the simulator clock's monotonic time when the task was accepted
