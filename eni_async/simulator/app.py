"""``Simulator``: the aiohttp application, its one request pipeline for both dialects, and ``/_sim/``.

Pipeline (docs/protocol.md D11): settle due tasks, parse, count, authenticate, check the action, draw the faults,
add latency, strike a before-effect fault, rate-limit, run the action, strike an after-effect fault, answer.
Every answer is HTTP 200 JSON with ``Content-Type`` exactly ``application/json`` (D4) unless a fault says
otherwise. ``/_sim/state`` and ``/_sim/stats`` are the ground truth outside Tencent's API, and ``/_sim/hold``
and ``/_sim/finish`` a test's hand on the tasks (hold new ones RUNNING, end them now): no auth, no faults,
no rate limit; ``POST /_sim/outage`` starts an outage or refuses keys (``outage``), which strike before
anything else. The only awaits are reading the body and the clock's sleeps.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from aiohttp import web

from eni_async.clock import Clock, SystemClock
from eni_async.errors import ConfigError
from eni_async.models import Credentials, TaskStatus
from eni_async.simulator.config import SimulatorConfig
from eni_async.simulator.faults import AFTER_EFFECT, ALL_KINDS, BEFORE_EFFECT, NO_FAULT, FaultInjector
from eni_async.simulator.frontend import Frontend
from eni_async.simulator.keys import KeyRing
from eni_async.simulator.limits import DEFAULT_RATE_LIMITS, RateLimiter, ReplayGuard, throttle_message
from eni_async.simulator.login import LoginService
from eni_async.simulator.outage import UNREACHABLE, Outage
from eni_async.simulator.rejects import Reason, Reject
from eni_async.simulator.roles import STS_ACTIONS, MetadataService, StsService
from eni_async.simulator.seeding import load_world, seed_world
from eni_async.simulator.state import World
from eni_async.simulator.v2 import V2Frontend
from eni_async.simulator.v3 import V3Frontend

JSON_HEADERS = {"Content-Type": "application/json"}
V2_PATH = "/v2/index.php"
_GATEWAY_PAGE = "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center><hr></body></html>"
_STATUS_TEXT = {
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
}


def _json(body: Any, status: int = 200) -> web.Response:
    # Bytes plus an explicit header: web.json_response would add "; charset=utf-8", and the official SDK
    # then ignores error bodies (docs/protocol.md §2.1).
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return web.Response(body=data, status=status, headers=JSON_HEADERS)


async def _control_body(request: web.Request) -> dict[str, Any]:
    """A ``/_sim/`` control's body: a JSON object, or nothing (``{}``); ``ValueError`` for anything else."""
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer; the client sees ServerDisconnectedError."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=200, headers=JSON_HEADERS)


class Simulator:
    """An in-process Tencent VPC: API 2.0 at ``/v2/index.php``, API 3.0 at ``/``, ground truth at ``/_sim/``.

    The same server is the CVM metadata service (``/latest/meta-data/...``) and STS (API 3.0 actions
    ``AssumeRoleWithWebIdentity``, ``AssumeRole`` and ``GetCallerIdentity`` at ``/``): see ``roles``; and
    tccli's login service, which renews ``tccli auth login`` and ``tccli sso login`` keys: see ``login``.
    """

    def __init__(self, config: SimulatorConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.region = config.region
        keys = config.key_pairs()
        first = next(iter(keys))
        self.credentials = Credentials(first, keys[first])
        self.world = World(
            clock=self.clock,
            region=config.region,
            task_latency=(float(config.task_latency[0]), float(config.task_latency[1])),
            task_rng=random.Random(f"tasks:{config.seed}"),
            id_rng=random.Random(f"ids:{config.seed}"),
            max_secondary=config.max_ips_per_eni,
        )
        if config.state_file is not None:
            load_world(self.world, config.state_file, seed=config.seed)
        else:
            seed_world(
                self.world,
                enis=config.enis,
                ips_per_eni=config.ips_per_eni,
                seed=config.seed,
                eip_fraction=config.eip_fraction,
            )
        self.keys = KeyRing(keys, self.clock, seed=config.seed, accounts=config.accounts)
        # Limits are counted per sub-account (a role's keys count as the role's, whatever their SecretId).
        self.limiter = RateLimiter(
            self.clock,
            config.effective_rate_limits(),
            account_of=self.keys.sub_account,
            region=config.region,
            skew=config.clock_skew,
            drift=config.clock_drift,
        )
        self._jitter = config.jitter
        self._jitter_rng = random.Random(f"jitter-{config.seed}")
        self.faults = FaultInjector(config.faults, config.seed)
        self.outage = Outage(self.clock)
        self.limiter.message_form = config.faults.throttle_message
        self.requests: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        replay = ReplayGuard(self.clock)
        self._v2 = V2Frontend(self.world, self.keys, replay)
        self._v3 = V3Frontend(self.world, self.keys, replay, config.region)
        self.metadata = MetadataService(self.keys, config.role_name, config.credential_lifetime)
        self.sts = StsService(
            self.keys,
            config.credential_lifetime,
            self._v3.verify,
            self.world.new_uuid,
            now=self.clock.time,
            roles=config.roles,
        )
        self.login = LoginService(self.keys, self.clock, config.credential_lifetime, seed=config.seed)
        self.app = self._build_app()
        # ENIs refused per resource; starts from the fault profile, and a test may add to it while running.
        self.denied_enis: set[str] = set(config.faults.denied_enis)
        self._v2.denied = self._v3.denied = self.denied_enis
        self._v2.describe_missing = self._v3.describe_missing = config.describe_missing

    def __repr__(self) -> str:
        return f"Simulator(region={self.region!r}, enis={len(self.world.enis)}, faults={self.faults.profile.name!r})"

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", V2_PATH, self._handle_v2)
        app.router.add_route("POST", V2_PATH, self._handle_v2)
        app.router.add_route("GET", "/", self._handle_v3)
        app.router.add_route("POST", "/", self._handle_v3)
        self.metadata.add_routes(app)
        self.login.add_routes(app)
        app.router.add_route("GET", "/_sim/state", self._handle_state)
        app.router.add_route("GET", "/_sim/stats", self._handle_stats)
        app.router.add_route("POST", "/_sim/hold", self._handle_hold)
        app.router.add_route("POST", "/_sim/finish", self._handle_finish)
        app.router.add_route("GET", "/_sim/outage", self._handle_outage)
        app.router.add_route("POST", "/_sim/outage", self._handle_outage)
        return app

    # --- ground truth -------------------------------------------------------------------------------

    def ground_truth(self) -> dict[str, Any]:
        """Every ENI with its IPs and EIPs, and every task (the ``GET /_sim/state`` document)."""
        return self.world.ground_truth()

    def stats(self) -> dict[str, Any]:
        """Request, throttle, fault and task counts (the ``GET /_sim/stats`` document)."""
        self.world.settle()
        counts = self.world.task_counts
        return {
            "requests": dict(self.requests),
            "throttled": dict(self.throttled),
            "faults": {kind: self.world.fault_counts[kind] for kind in ALL_KINDS},
            "tasks": {status.value: counts[status] for status in TaskStatus},
        }

    def hold_tasks(self, on: bool = True) -> None:
        """New tasks stay RUNNING until ``finish_tasks`` ends them (``POST /_sim/hold {"hold": true}``), so a
        test decides when work in flight ends instead of sleeping through latencies; ``on=False`` undoes it
        for new tasks."""
        self.world.hold(on)

    def finish_tasks(self, task_ids: list[str] | None = None, *, count: int | None = None) -> list[str]:
        """End RUNNING tasks now, as their fate says (``POST /_sim/finish``): the ones named, else the
        ``count`` oldest, else every one. Their ids, oldest first."""
        return self.world.finish(task_ids, count=count)

    async def _handle_hold(self, request: web.Request) -> web.Response:
        try:
            hold = (await _control_body(request)).get("hold", True)
            if not isinstance(hold, bool):
                raise ValueError("hold must be true or false")
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        self.hold_tasks(hold)
        return _json({"hold": hold})

    async def _handle_finish(self, request: web.Request) -> web.Response:
        try:
            body = await _control_body(request)
            task_ids, count = body.get("task_ids"), body.get("count")
            if task_ids is not None and not (
                isinstance(task_ids, list) and all(isinstance(t, str) for t in task_ids)
            ):
                raise ValueError("task_ids must be a list of task ids (strings)")
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                raise ValueError("count must be a whole number, 0 or more")
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        try:
            return _json({"finished": self.finish_tasks(task_ids, count=count)})
        except Reject as exc:
            return _json({"error": exc.message}, 404)

    async def _handle_state(self, request: web.Request) -> web.Response:
        return _json(self.ground_truth())

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    async def _handle_outage(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return _json(self.outage.state())
        try:
            body = json.loads(await request.read() or b"null")
            return _json(self.outage.control(body))
        except ValueError as exc:  # ConfigError is one; so is JSON that does not parse
            return _json(
                {"error": str(exc) if isinstance(exc, ConfigError) else f"body: not JSON ({exc})"}, 400
            )

    # --- the API pipeline ---------------------------------------------------------------------------

    async def _handle_v2(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(self._v2, request)

    async def _handle_v3(self, request: web.Request) -> web.StreamResponse:
        action = request.headers.get("X-TC-Action", "")
        if (
            request.method == "POST" and action in STS_ACTIONS
        ):  # STS shares the API 3.0 path: only hosts differ
            self.requests[action] += 1
            return await self.sts.handle(request, action)
        return await self._serve(self._v3, request)

    async def _serve(self, front: Frontend, request: web.Request) -> web.StreamResponse:
        self.world.settle()
        outage = self.outage.strike()
        if outage == UNREACHABLE:  # a connection opened before the socket closed
            return _drop(request)
        try:
            call = await front.read(request)
        except Reject as exc:
            return _json(front.error(exc))
        action = call.action
        if action:
            self.requests[action] += 1
        if outage is not None:
            return self._before_effect(front, request, outage, action)
        plan = NO_FAULT
        try:
            secret_id = front.authenticate(request, call)
            if secret_id in self.outage.refused:
                raise Reject(Reason.SECRET_ID_NOT_FOUND, "the SecretId does not exist or is disabled")
            if action not in front.actions:
                raise Reject(Reason.INVALID_ACTION, f"unknown action {action!r}")
            plan = self.faults.draw(action)
            if plan.latency:
                self.world.fault_counts["latency"] += 1
                await self.clock.sleep(plan.latency)
                self.world.settle()
            if plan.response in BEFORE_EFFECT:
                self.world.fault_counts[plan.response] += 1
                return self._before_effect(front, request, plan.response, action)
            if self._jitter:  # the network's share of when the request is counted
                await self.clock.sleep(self._jitter_rng.uniform(0.0, self._jitter))
                self.world.settle()
            try:
                self.limiter.check(secret_id, action)
            except Reject:
                self.throttled[action] += 1
                raise
            body = front.dispatch(call, plan.task)
        except Reject as exc:
            body = front.error(exc)
        if plan.response in AFTER_EFFECT:
            self.world.fault_counts[plan.response] += 1
            return await self._after_effect(request, plan.response, body)
        return _json(body)

    def _before_effect(self, front: Frontend, request: web.Request, kind: str, action: str) -> web.Response:
        """Strike a fault that leaves the world untouched."""
        if kind == "throttle":
            limit = self.limiter.limit(action) or DEFAULT_RATE_LIMITS[action]
            message = throttle_message(limit + 1, limit, self.limiter.message_form)
            return _json(front.error(Reject(Reason.THROTTLED, message)))
        if kind == "internal_error":
            return _json(
                front.error(Reject(Reason.INTERNAL, "an internal error occurred, please retry later"))
            )
        if kind == "drop_before":
            return _drop(request)
        status = int(kind.removeprefix("http_"))
        page = _GATEWAY_PAGE.format(_STATUS_TEXT[status]).encode()
        return web.Response(body=page, status=status, headers=JSON_HEADERS)

    async def _after_effect(self, request: web.Request, kind: str, body: Any) -> web.StreamResponse:
        """Strike a fault after the call took effect: the client cannot tell whether it did."""
        if kind == "malformed_body":
            page = _GATEWAY_PAGE.format(_STATUS_TEXT[502]).encode()
            return web.Response(body=page, status=200, headers=JSON_HEADERS)
        if kind == "truncated_body":
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            response = web.StreamResponse(status=200, headers=JSON_HEADERS)
            response.content_length = len(data)
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        if kind == "withhold_after":
            # Bounded: a client without a read timeout still gets an answer (a dropped connection) in time.
            await self.clock.sleep(self.faults.profile.withhold_seconds)
        return _drop(request)
