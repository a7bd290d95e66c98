"""The embedded Tencent VPC simulator: API 2.0 and API 3.0 over one simulated world, with faults on demand.

::

    sim = Simulator(SimulatorConfig(enis=10, ips_per_eni=3, seed=1), clock=FakeClock())
    async with running(sim) as server:
        ...  # point a client at server.endpoint with sim.credentials and sim.region

Modules: ``config`` (the settings value), ``state`` (ENIs, IPs, tasks), ``seeding`` (seed or state file),
``validate`` (id and IP shapes), ``limits`` (rate limits, replay window), ``faults`` (profiles and the
injector), ``v2``/``v3`` (the wire formats), ``app`` (the pipeline and ``/_sim/``), ``server`` (serving) and
``command`` (``eni-async simulate``).
"""

from eni_async.simulator.app import Simulator
from eni_async.simulator.config import SimulatorConfig
from eni_async.simulator.faults import FaultProfile, FaultRates, load_fault_profile
from eni_async.simulator.server import RunningServer, running

__all__ = [
    "FaultProfile",
    "FaultRates",
    "RunningServer",
    "Simulator",
    "SimulatorConfig",
    "load_fault_profile",
    "running",
]
