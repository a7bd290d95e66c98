"""Fill a ``World`` reproducibly from a seed, or from a JSON state file in the ``/_sim/state`` shape.

Seeding: ENIs are packed into VPCs of at most 1,000 ENIs (fewer when each has many IPs), one VPC per
``10.N.0.0/16`` with one subnet covering it; addresses are handed out in order from ``.2``; about
``eip_fraction`` of the secondary IPs get an EIP. Every id and EIP comes from ``random.Random(seed)``, so the
same seed gives the same world. It is written for speed: 100,000 ENIs seed in about a second.

State file (JSON)::

    {"enis": [{"vpc_id": "vpc-…", "eni_id": "eni-…", "primary_ip": "10.0.0.2",
               "secondary_ips": ["10.0.0.3"], "eips": {"10.0.0.3": "eip-…"},
               "subnet_id": "subnet-…", "cidr": "10.0.0.0/16"}],      # subnet_id and cidr optional
     "tasks": [{"task_id": "16285", "eni_id": "eni-…", "ips": ["10.0.0.3"], "status": "SUCCESS"}]}

Without ``cidr`` the subnet is the ``/16`` around the primary IP. ``tasks`` is optional; a RUNNING task is
restarted with a fresh latency and ends SUCCESS. Anything malformed is a ``ConfigError`` naming the entry.
"""

from __future__ import annotations

import ipaddress
import json
import random
import string
from pathlib import Path
from typing import Any

from eni_async.errors import ConfigError
from eni_async.models import TaskStatus
from eni_async.simulator.rejects import Reject
from eni_async.simulator.resources import NORMAL, Eip, Eni, Subnet
from eni_async.simulator.state import World
from eni_async.simulator.validate import ip_list, ipv4, resource_id

_ALPHABET = string.ascii_lowercase + string.digits
_PUBLIC_BASE = int(ipaddress.IPv4Address("43.128.0.0"))
MAX_VPCS = 256


class _Ids:
    """Unique ``prefix-xxxxxxxx`` ids from one seeded stream."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seen: set[str] = set()

    def new(self, prefix: str) -> str:
        while True:
            value = f"{prefix}-{''.join(self._rng.choices(_ALPHABET, k=8))}"
            if value not in self._seen:
                self._seen.add(value)
                return value


def _public_ip(world: World) -> str:
    """The next public address for an EIP (from 43.128.0.0 up, as Tencent's ranges look)."""
    p = _PUBLIC_BASE + world.eip_count
    world.eip_count += 1
    return f"{p >> 24}.{(p >> 16) & 255}.{(p >> 8) & 255}.{p & 255}"


def _mac(n: int) -> str:
    return f"20:90:6F:{(n >> 16) & 255:02X}:{(n >> 8) & 255:02X}:{n & 255:02X}"


def seed_world(world: World, *, enis: int, ips_per_eni: int, seed: int, eip_fraction: float) -> None:
    """Add ``enis`` ENIs with ``ips_per_eni`` secondary IPs each, reproducibly from ``seed``."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    world.next_v2_task = rng.randint(10_000, 90_000)
    per_vpc = max(1, min(1000, 60_000 // (ips_per_eni + 1)))
    vpc_count = -(-enis // per_vpc)
    if vpc_count > MAX_VPCS or ips_per_eni + 1 > 60_000:
        raise ConfigError(
            "enis", enis, f"too many addresses to seed (at most {MAX_VPCS} VPCs of {per_vpc} ENIs)"
        )
    zone = f"{world.region}-3"
    made = 0
    for n in range(vpc_count):
        vpc_id = ids.new("vpc")
        subnet = Subnet(ids.new("subnet"), vpc_id, ipaddress.IPv4Network(f"10.{n}.0.0/16"), zone)
        world.subnets[subnet.subnet_id] = subnet
        world.vpcs[vpc_id] = []
        prefix = f"10.{n}."
        host = 2
        for _ in range(min(per_vpc, enis - made)):
            primary = f"{prefix}{host >> 8}.{host & 255}"
            secondary: dict[str, Eip | None] = {}
            for h in range(host + 1, host + 1 + ips_per_eni):
                eip = None
                if eip_fraction and rng.random() < eip_fraction:
                    eip = Eip(ids.new("eip"), _public_ip(world))
                secondary[f"{prefix}{h >> 8}.{h & 255}"] = eip
            host += ips_per_eni + 1
            world.add_eni(Eni(ids.new("eni"), vpc_id, subnet, primary, secondary, _mac(made)))
            made += 1
        subnet.next_host = host


def load_world(world: World, path: str | Path, *, seed: int) -> None:
    """Fill ``world`` from the JSON state file at ``path`` (format in the module docstring)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("state_file", str(path), f"cannot read JSON state: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("enis"), list):
        raise ConfigError("state_file", str(path), 'expected an object with an "enis" list')
    rng = random.Random(seed)
    ids = _Ids(rng)
    world.next_v2_task = rng.randint(10_000, 90_000)
    subnets: dict[tuple[str, str], Subnet] = {}
    for index, entry in enumerate(data["enis"]):
        try:
            _load_eni(world, entry, ids, subnets, index)
        except (Reject, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"state_file enis[{index}]", str(path), str(exc)) from None
    for index, entry in enumerate(data.get("tasks") or []):
        try:
            _load_task(world, entry)
        except (Reject, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"state_file tasks[{index}]", str(path), str(exc)) from None


def _load_eni(
    world: World, entry: dict[str, Any], ids: _Ids, subnets: dict[tuple[str, str], Subnet], index: int
) -> None:
    vpc_id = resource_id("vpc", entry["vpc_id"], name="vpc_id")
    eni_id = resource_id("eni", entry["eni_id"], name="eni_id")
    if eni_id in world.enis:
        raise ValueError(f"duplicate eni_id {eni_id}")
    primary = ipv4(entry["primary_ip"], name="primary_ip")
    cidr = entry.get("cidr") or f"{primary}/16"
    network = ipaddress.IPv4Network(cidr, strict=False)
    subnet = subnets.get((vpc_id, str(network)))
    if subnet is None:
        subnet_id = entry.get("subnet_id") or ids.new("subnet")
        subnet = Subnet(
            resource_id("subnet", subnet_id, name="subnet_id"), vpc_id, network, f"{world.region}-3"
        )
        subnets[(vpc_id, str(network))] = subnet
        world.subnets[subnet.subnet_id] = subnet
    world.vpcs.setdefault(vpc_id, [])
    secondary_ips = entry.get("secondary_ips") or []
    eip_ids = entry.get("eips") or {}
    secondary: dict[str, Eip | None] = {}
    for ip in [ipv4(ip, name="secondary_ips") for ip in secondary_ips]:
        if ip in secondary or ip == primary:
            raise ValueError(f"{ip} listed twice")
        eip_id = eip_ids.get(ip)
        secondary[ip] = (
            None if eip_id is None else Eip(resource_id("eip", eip_id, name="eips"), _public_ip(world))
        )
    for ip in [primary, *secondary]:
        if (vpc_id, ip) in world.owners or ipaddress.IPv4Address(ip) not in network:
            raise ValueError(f"{ip} is already used or outside {network}")
        offset = int(ipaddress.IPv4Address(ip)) - int(network.network_address)
        subnet.next_host = max(subnet.next_host, offset + 1)
    world.add_eni(Eni(eni_id, vpc_id, subnet, primary, secondary, _mac(index)))


def _load_task(world: World, entry: dict[str, Any]) -> None:
    task_id = str(entry["task_id"])
    eni = world.enis[entry["eni_id"]]
    ips = ip_list(list(entry.get("ips") or []), name="ips", required=False)
    status = TaskStatus(entry.get("status", "SUCCESS"))
    if task_id in world.tasks:
        raise ValueError(f"duplicate task_id {task_id}")
    if status is TaskStatus.RUNNING:
        world.unassign(eni, ips, lambda: task_id, NORMAL)
    else:
        world.record_ended(task_id, eni, ips, status)
    if task_id.isdigit():
        world.next_v2_task = max(world.next_v2_task, int(task_id))
