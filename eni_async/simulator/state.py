"""The simulated VPC: subnets, ENIs, IPs, EIPs and tasks, and the operations on them.

Operations take already-parsed arguments and raise ``Reject`` with a dialect-neutral ``Reason``; they never
see HTTP. Task status is computed lazily from the injected clock: every operation first calls ``settle``,
which pops the tasks whose end time has passed from a heap and applies their effect (docs/protocol.md D12), so
there are no background timers and a ``FakeClock`` drives everything. A test may instead ``hold`` new tasks
RUNNING whatever their latency and ``finish`` them when it chooses (``/_sim/hold`` and ``/_sim/finish``). Lookups are by index (ENI by id, ENIs
by VPC, IP owner by ``(vpc, ip)``), so each call costs O(IPs in the call), not O(ENIs).
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eni_async.clock import Clock
from eni_async.models import TaskStatus
from eni_async.simulator.rejects import Reason, Reject
from eni_async.simulator.resources import NORMAL, Eni, Subnet, Task, TaskFate

FAILED_OUTPUT = "release of private IP addresses failed: internal error in the network module"


@dataclass
class World:
    """All simulated resources plus the clock and the seeded random stream that tasks draw from."""

    clock: Clock
    region: str
    task_latency: tuple[float, float]
    task_rng: random.Random
    id_rng: random.Random
    max_secondary: int = 50
    subnets: dict[str, Subnet] = field(default_factory=dict)
    vpcs: dict[str, list[Eni]] = field(default_factory=dict)
    enis: dict[str, Eni] = field(default_factory=dict)
    all_enis: list[Eni] = field(default_factory=list)
    owners: dict[tuple[str, str], Eni] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    task_counts: Counter[str] = field(default_factory=Counter)
    fault_counts: Counter[str] = field(default_factory=Counter)
    next_v2_task: int = 16284
    eip_count: int = 0
    held: bool = False  # new tasks stay RUNNING until ``finish`` ends them (a test's control, not Tencent's)
    _due: list[tuple[float, int, Task]] = field(default_factory=list)
    _seq: int = 0

    # --- building -----------------------------------------------------------------------------------

    def add_eni(self, eni: Eni) -> None:
        """Register a new ENI and its IPs in every index."""
        self.enis[eni.eni_id] = eni
        self.all_enis.append(eni)
        self.vpcs.setdefault(eni.vpc_id, []).append(eni)
        self.owners[(eni.vpc_id, eni.primary_ip)] = eni
        for ip in eni.secondary:
            self.owners[(eni.vpc_id, ip)] = eni

    def new_v2_task_id(self) -> str:
        """The next API 2.0 task id: an integer, sent as a number and stored as its string (D1)."""
        self.next_v2_task += 1
        return str(self.next_v2_task)

    def new_uuid(self) -> str:
        """A reproducible UUID4 for request ids and API 3.0 task ids."""
        return str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))

    # --- tasks --------------------------------------------------------------------------------------

    def settle(self) -> None:
        """End every task whose time has come and apply its effect; O(log n) per ended task."""
        now = self.clock.monotonic()
        due = self._due
        while due and due[0][0] <= now:
            _, _, task = heapq.heappop(due)
            if task.status is TaskStatus.RUNNING:  # not already ended by ``finish``
                self._finish(task)

    def hold(self, on: bool = True) -> None:
        """From now on, new tasks stay RUNNING until ``finish`` ends them (``on=False``: new tasks end after
        their latency again; the ones held so far still wait for ``finish``)."""
        self.held = on

    def finish(self, task_ids: Sequence[str] | None = None, *, count: int | None = None) -> list[str]:
        """End RUNNING tasks now, whatever their latency or hold, as they were to end (their fate decides
        success or failure): the ones named, else the ``count`` oldest, else all. Their ids, oldest first.
        A named task that does not exist is refused (``TASK_NOT_FOUND``); one that already ended is left."""
        self.settle()
        if task_ids is not None:
            chosen = [self.task(task_id) for task_id in task_ids]
        else:
            chosen = [task for task in self.tasks.values() if task.status is TaskStatus.RUNNING]
            if count is not None:
                chosen = chosen[:count]
        now = self.clock.monotonic()
        ended: list[str] = []
        for task in chosen:
            if task.status is TaskStatus.RUNNING:
                task.ends_at = now
                self._finish(task)
                ended.append(task.task_id)
        return ended

    def _finish(self, task: Task) -> None:
        eni = task.eni
        if task.kind == "unassign":
            released = task.ips if task.outcome is TaskStatus.SUCCESS else task.released_on_failure
            for ip in released:
                # Popping the entry disassociates the EIP with it (D12).
                eni.secondary.pop(ip, None)
                self.owners.pop((eni.vpc_id, ip), None)
        task.status = task.outcome
        if eni.task is task:
            eni.task = None
        self.task_counts[TaskStatus.RUNNING] -= 1
        self.task_counts[task.outcome] += 1

    def _latency(self) -> float:
        median, sigma = self.task_latency
        if median <= 0:
            return 0.0
        return median * math.exp(sigma * self.task_rng.gauss(0.0, 1.0))

    def start_task(self, task_id: str, kind: str, eni: Eni, ips: Sequence[str], fate: TaskFate) -> Task:
        """Create a RUNNING task on ``eni`` that ends after a seeded latency, shaped by ``fate``."""
        latency = self._latency()
        outcome = TaskStatus.SUCCESS
        released: tuple[str, ...] = ()
        output = "SUCCESS"
        if fate.kind == "task_slow":
            latency = max(latency, 1.0) * fate.slow_factor
        elif fate.kind in ("task_failed", "task_partial"):
            outcome, output = TaskStatus.FAILED, FAILED_OUTPUT
            if fate.kind == "task_partial":
                # Part-way: at least one IP goes (so a failed task visibly released something), never all
                # unless there is only one (D12: a client must look, not assume).
                count = self.task_rng.randint(1, max(1, len(ips) - 1))
                released = tuple(self.task_rng.sample(list(ips), count))
        if fate.kind != "normal":
            self.fault_counts[fate.kind] += 1
        now = self.clock.monotonic()
        ends_at = math.inf if self.held else now + latency
        task = Task(task_id, kind, eni, tuple(ips), ends_at, outcome, released)
        task.output = output
        task.started_at = now
        self.tasks[task_id] = task
        eni.task = task
        self.task_counts[TaskStatus.RUNNING] += 1
        if not self.held:
            self._seq += 1
            heapq.heappush(self._due, (task.ends_at, self._seq, task))
        return task

    def record_ended(self, task_id: str, eni: Eni, ips: Sequence[str], status: TaskStatus) -> Task:
        """Record a task that already ended (from a state file) without touching the ENI."""
        output = "SUCCESS" if status is TaskStatus.SUCCESS else FAILED_OUTPUT
        now = self.clock.monotonic()
        task = Task(task_id, "unassign", eni, tuple(ips), now, status, status=status, output=output)
        self.tasks[task_id] = task
        self.task_counts[status] += 1
        return task

    def task(self, task_id: str) -> Task:
        """The task called ``task_id``; refused as TASK_NOT_FOUND if there is none."""
        found = self.tasks.get(task_id)
        if found is None:
            raise Reject(Reason.TASK_NOT_FOUND, f"task {task_id} does not exist")
        return found

    # --- ENIs and IPs -------------------------------------------------------------------------------

    def find_eni(self, eni_id: str, vpc_id: str | None = None) -> Eni:
        """The ENI ``eni_id`` (checked to be in ``vpc_id`` when one is given); VPC checked first."""
        if vpc_id is not None and vpc_id not in self.vpcs:
            raise Reject(Reason.VPC_NOT_FOUND, f"vpc {vpc_id} does not exist")
        eni = self.enis.get(eni_id)
        if eni is None or (vpc_id is not None and eni.vpc_id != vpc_id):
            where = f" in {vpc_id}" if vpc_id else ""
            raise Reject(Reason.ENI_NOT_FOUND, f"network interface {eni_id} does not exist{where}")
        return eni

    @staticmethod
    def _check_mutex(eni: Eni) -> None:
        if eni.task is not None:
            raise Reject(
                Reason.MUTEX, f"network interface {eni.eni_id} is locked by running task {eni.task.task_id}"
            )

    def unassign(
        self, eni: Eni, ips: Sequence[str], new_id: Callable[[], str], fate: TaskFate = NORMAL
    ) -> Task:
        """Start releasing secondary ``ips`` from ``eni``: resources checked first, then the mutex (D11).

        ``new_id`` is called only once the call is accepted, so refused calls use up no task ids.
        """
        for ip in ips:
            if ip == eni.primary_ip:
                raise Reject(
                    Reason.IP_IS_PRIMARY, f"{ip} is the primary IP of {eni.eni_id}; it cannot be released"
                )
            if ip not in eni.secondary:
                raise Reject(Reason.IP_NOT_ON_ENI, f"{ip} is not assigned to {eni.eni_id}")
        self._check_mutex(eni)
        return self.start_task(new_id(), "unassign", eni, ips, fate)

    def assign(
        self, eni: Eni, ips: Sequence[str], count: int, new_id: Callable[[], str]
    ) -> tuple[Task, list[str]]:
        """Add ``ips`` (or ``count`` free ones) to ``eni`` at once, under a task that holds the mutex."""
        subnet = eni.subnet
        for ip in ips:
            address = ipaddress.IPv4Address(ip)
            offset = int(address) - int(subnet.network.network_address)
            if address not in subnet.network or offset < 2 or offset >= subnet.network.num_addresses - 1:
                raise Reject(Reason.IP_OUT_OF_SUBNET, f"{ip} is not a usable address of {subnet.subnet_id}")
            if (eni.vpc_id, ip) in self.owners:
                raise Reject(Reason.IP_IN_USE, f"{ip} is already in use")
        wanted = len(ips) + count
        if len(eni.secondary) + wanted > self.max_secondary:
            raise Reject(
                Reason.IP_QUOTA, f"{eni.eni_id} may hold at most {self.max_secondary} secondary IP addresses"
            )
        self._check_mutex(eni)
        chosen = list(ips) + self._free_ips(eni, count)
        for ip in chosen:
            eni.secondary[ip] = None
            self.owners[(eni.vpc_id, ip)] = eni
        return self.start_task(new_id(), "assign", eni, chosen, NORMAL), chosen

    def _free_ips(self, eni: Eni, count: int) -> list[str]:
        subnet = eni.subnet
        base = int(subnet.network.network_address)
        size = subnet.network.num_addresses
        found: list[str] = []
        offset = subnet.next_host
        for _ in range(size):
            if len(found) == count:
                break
            if offset >= size - 1:
                offset = 2
            ip = str(ipaddress.IPv4Address(base + offset))
            offset += 1
            if (eni.vpc_id, ip) not in self.owners:
                found.append(ip)
        if len(found) < count:
            raise Reject(Reason.IP_QUOTA, f"subnet {subnet.subnet_id} has no free addresses left")
        subnet.next_host = offset
        return found

    def describe(
        self,
        *,
        eni_ids: Sequence[str] | None = None,
        vpc_ids: Sequence[str] | None = None,
        subnet_ids: Sequence[str] | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[list[Eni], int]:
        """One page of the ENIs matching every given filter, and the total.

        None means "no such filter"; values within one filter are ORed. The common cases (no filter, one VPC)
        slice an existing list, so a page costs O(limit) even with 100,000 ENIs.
        """
        items: list[Eni]
        if eni_ids is not None:
            items = [self.enis[i] for i in dict.fromkeys(eni_ids) if i in self.enis]
            if vpc_ids is not None:
                vpcs = set(vpc_ids)
                items = [eni for eni in items if eni.vpc_id in vpcs]
        elif vpc_ids is not None and len(vpc_ids) == 1:
            items = self.vpcs.get(vpc_ids[0], [])
        elif vpc_ids is not None:
            items = [eni for vpc in dict.fromkeys(vpc_ids) for eni in self.vpcs.get(vpc, [])]
        else:
            items = self.all_enis
        if subnet_ids is not None:
            subnets = set(subnet_ids)
            items = [eni for eni in items if eni.subnet.subnet_id in subnets]
        return items[offset : offset + limit], len(items)

    def ground_truth(self) -> dict[str, Any]:
        """Every ENI's IPs and EIPs and every task, in the ``/_sim/state`` shape."""
        self.settle()
        enis = [
            {
                "vpc_id": eni.vpc_id,
                "eni_id": eni.eni_id,
                "primary_ip": eni.primary_ip,
                "secondary_ips": list(eni.secondary),
                "eips": {ip: eip.eip_id for ip, eip in eni.secondary.items() if eip is not None},
            }
            for eni in self.all_enis
        ]
        tasks = [
            {
                "task_id": t.task_id,
                "eni_id": t.eni.eni_id,
                "ips": list(t.ips),
                "status": str(t.status),
                # When it was accepted and how long it ran (seconds, simulator clock): benchmarks derive the
                # best makespan any client could have reached from these. A task held RUNNING has no latency
                # yet (None) until ``finish`` ends it.
                "started_s": round(t.started_at, 6),
                "latency_s": None if math.isinf(t.ends_at) else round(max(0.0, t.ends_at - t.started_at), 6),
            }
            for t in self.tasks.values()
        ]
        return {"enis": enis, "tasks": tasks}
