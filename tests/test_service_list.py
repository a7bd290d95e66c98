"""Listing releases over HTTP and through ``ServiceClient``: filters by status, ENI, VPC and creation time
(RFC 3339), combined with each other and with the cursor; each bad value is a 400 naming its parameter.

The releases are recorded in the journal before the service starts, at creation times the test chooses,
some finished and one cancelled; the simulator's tasks never end (its clock is never advanced), so every
final status stays as recorded while the service lists them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from eni_async import ServiceClient
from eni_async.clock import FakeClock
from eni_async.journal import SqliteJournal
from eni_async.outcomes import Outcome
from eni_async.service.registry import Registry
from eni_async.simulator import Simulator, SimulatorConfig
from tests.test_service import AUTH, TOKEN, Service, service_on

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z: release n is created at T0 + 60 n


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def listed(tmp_path: Path) -> AsyncIterator[tuple[Service, list[dict[str, Any]]]]:
    """A service over nine releases: n on ENI n % 3, in the VPC of that ENI, created at T0 + 60 n; release 1
    succeeded, 2 failed, 5 cancelled, the others unfinished. The releases as first made, oldest first."""
    sim = Simulator(
        SimulatorConfig(enis=3, ips_per_eni=3, seed=7, task_latency=(100.0, 0.0)),
        clock=FakeClock(start=time.time()),
    )
    enis = sim.ground_truth()["enis"]
    journal = tmp_path / "j.db"
    made: list[dict[str, Any]] = []
    async with SqliteJournal(journal) as jr:
        for n in range(9):
            eni = enis[n % 3]
            registry = Registry(jr, now=functools.partial(float, T0 + 60 * n))
            (release,), _ = await registry.create(
                [(eni["vpc_id"], eni["eni_id"], (eni["secondary_ips"][n // 3],))]
            )
            made.append(release.to_json())
            if n in (1, 2):
                status = "succeeded" if n == 1 else "failed"
                outcome = Outcome(release.vpc_id, release.eni_id, release.ips, status=status)
                await jr.finished(release.item_key, outcome)
                await registry.finish(release.id, outcome.to_json())
            if n == 5:
                assert (await registry.cancel(release.id)) is not None
    async with service_on(sim, journal) as svc:
        yield svc, made


async def ids(svc: Service, query: str, *, limit: int = 2) -> list[str]:
    """Every release the query lists, following next_cursor, ``limit`` a page."""
    seen: list[str] = []
    cursor = ""
    for _ in range(50):
        resp = await svc.http.get(f"/v1/releases?{query}&limit={limit}&cursor={cursor}", headers=AUTH)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        seen += [r["id"] for r in page["releases"]]
        if page["next_cursor"] is None:
            return seen
        cursor = page["next_cursor"]
    raise AssertionError("the pages never ended")


def numbered(made: list[dict[str, Any]], *numbers: int) -> list[str]:
    return [made[n]["id"] for n in numbers]


async def test_each_filter_lists_exactly_its_releases_newest_first_across_pages(
    listed: tuple[Service, list[dict[str, Any]]],
) -> None:
    """eni_id, vpc_id, status and the creation window each select exactly their releases, newest first, the
    same through pages of two as through one page."""
    svc, made = listed
    eni1 = made[1]["eni_id"]
    assert await ids(svc, f"eni_id={eni1}") == numbered(made, 7, 4, 1)
    vpc = made[2]["vpc_id"]
    in_vpc = [n for n in reversed(range(9)) if made[n]["vpc_id"] == vpc]
    assert await ids(svc, f"vpc_id={vpc}") == numbered(made, *in_vpc)
    assert await ids(svc, "status=cancelled") == numbered(made, 5)
    assert await ids(svc, "status=succeeded") == numbered(made, 1)
    window = f"created_after={iso(T0 + 120)}&created_before={iso(T0 + 360)}"
    assert await ids(svc, window) == numbered(made, 5, 4, 3, 2)
    assert await ids(svc, window, limit=1000) == numbered(made, 5, 4, 3, 2)
    shifted = datetime.fromtimestamp(
        T0 + 120, timezone(timedelta(hours=8))
    ).isoformat()  # +08:00, same moment
    assert await ids(svc, f"created_after={shifted.replace('+', '%2B')}") == numbered(
        made, 8, 7, 6, 5, 4, 3, 2
    )


async def test_filters_combine_with_each_other_and_the_cursor(
    listed: tuple[Service, list[dict[str, Any]]],
) -> None:
    """All filters at once select their intersection; a filter that matches nothing is an empty last page."""
    svc, made = listed
    eni2 = made[2]
    both = f"eni_id={eni2['eni_id']}&vpc_id={eni2['vpc_id']}&created_after={iso(T0 + 100)}&status=failed"
    assert await ids(svc, both, limit=1) == numbered(made, 2)
    early = await ids(svc, f"eni_id={made[0]['eni_id']}&created_before={iso(T0 + 361)}", limit=1)
    assert early == numbered(made, 6, 3, 0)
    assert await ids(svc, f"created_after={iso(T0 + 10_000)}") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("eni_id=eni-123", "eni_id"),
        ("eni_id=ENI-12345678", "eni_id"),
        ("vpc_id=vpc-xyz", "vpc_id"),
        ("status=done", "status"),
        ("created_after=2027-01-15", "created_after"),
        ("created_after=2027-01-15T08:00:00", "created_after"),
        ("created_after=2027-02-30T08:00:00Z", "created_after"),
        ("created_before=2027-01-15T24:00:00Z", "created_before"),
        ("created_before=yesterday", "created_before"),
        ("created_before=2027-01-15T08:00:00%2B24:00", "created_before"),
        ("eni_id=eni-12345678&eni_id=eni-12345679", "eni_id"),
        ("owner=me", "owner"),
    ],
)
async def test_each_bad_filter_value_is_400_naming_its_parameter(
    listed: tuple[Service, list[dict[str, Any]]], query: str, field: str
) -> None:
    """A filter value that breaks its rule answers 400 InvalidInput naming the parameter, never the value."""
    svc, _ = listed
    resp = await svc.http.get(f"/v1/releases?{query}", headers=AUTH)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("InvalidInput", field)
    assert "yesterday" not in error["message"]


async def test_service_client_lists_with_filters_and_follows_every_page(
    listed: tuple[Service, list[dict[str, Any]]],
) -> None:
    """``list_releases`` takes the filters (aware datetimes or RFC 3339 text); ``releases`` yields every
    match across pages; a naive datetime is refused naming its parameter, before any request."""
    svc, made = listed
    async with ServiceClient(svc.url, TOKEN) as client:
        page, cursor = await client.list_releases(
            vpc_id=made[1]["vpc_id"], created_after=datetime.fromtimestamp(T0 + 60, UTC), limit=1
        )
        newest = max(n for n in range(1, 9) if made[n]["vpc_id"] == made[1]["vpc_id"])
        assert [r["id"] for r in page] == numbered(made, newest)
        assert cursor is not None
        every = [r["id"] async for r in client.releases(eni_id=made[1]["eni_id"], page=1)]
        assert every == numbered(made, 7, 4, 1)
        text = [r["id"] async for r in client.releases(created_before=iso(T0 + 120), status="succeeded")]
        assert text == numbered(made, 1)
        with pytest.raises(ValueError, match="created_before"):
            await client.list_releases(created_before=datetime(2027, 1, 15))  # naive on purpose
