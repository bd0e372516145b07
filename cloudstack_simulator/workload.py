"""The workload generator: jobs arriving at a rate, with a command mix, durations and failures.

Arrivals are a Poisson process; each command has a log-normal duration (given by its median and
spread) and failure rates by result code. Everything random comes from one seeded generator, so
the same seed and settings give the same jobs. Jobs finish by themselves in the store (lazily);
the generator only creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudstack_simulator import catalog
from cloudstack_simulator.accounts import Directory, User
from cloudstack_simulator.store import JobStore, Outcome, StoreError, catalog_uuid


class WorkloadError(ValueError):
    """Workload settings that cannot be used; the message names the field."""


@dataclass(frozen=True)
class CommandMix:
    weight: float
    median: float  # seconds
    sigma: float  # spread of log(duration)
    failures: Mapping[int, float] = field(default_factory=dict)  # result code -> probability


DEFAULT_MIX: dict[str, CommandMix] = {
    "DeployVMCmd": CommandMix(30, 45.0, 0.6, {533: 0.03, 530: 0.01, 535: 0.01}),
    "StartVMCmd": CommandMix(20, 20.0, 0.5, {534: 0.02, 530: 0.01}),
    "StopVMCmd": CommandMix(20, 15.0, 0.5, {530: 0.01}),
    "CreateSnapshotCmd": CommandMix(10, 120.0, 0.8, {530: 0.02, 534: 0.01}),
    "MigrateVMCmd": CommandMix(5, 90.0, 0.7, {534: 0.03, 530: 0.02}),
    "CreateVolumeCmd": CommandMix(10, 5.0, 0.4, {535: 0.02, 431: 0.01}),
    "MigrateVolumeCmd": CommandMix(5, 300.0, 0.9, {530: 0.03, 536: 0.01}),
}


def parse_mix(raw: Any) -> dict[str, CommandMix]:
    """{"StopVMCmd": {"weight": 1, "median": 10, "sigma": 0.5, "failures": {"530": 0.1}}}."""
    if not isinstance(raw, Mapping) or not raw:
        raise WorkloadError("mix: a non-empty mapping of command name to settings")
    mix: dict[str, CommandMix] = {}
    for name, spec in raw.items():
        where = f"mix.{name}"
        if not isinstance(spec, Mapping):
            raise WorkloadError(f"{where}: a mapping")
        unknown = set(spec) - {"weight", "median", "sigma", "failures"}
        if unknown:
            raise WorkloadError(f"{where}: unknown fields {', '.join(sorted(map(str, unknown)))}")
        values = {}
        for key, default in (("weight", 1.0), ("median", 30.0), ("sigma", 0.5)):
            value = spec.get(key, default)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise WorkloadError(f"{where}.{key}: a non-negative number")
            values[key] = float(value)
        failures: dict[int, float] = {}
        raw_failures = spec.get("failures", {})
        if not isinstance(raw_failures, Mapping):
            raise WorkloadError(f"{where}.failures: a mapping of result code to probability")
        for code, rate in raw_failures.items():
            try:
                code_int = int(code)
            except (TypeError, ValueError):
                raise WorkloadError(f"{where}.failures: {code!r:.16} is not a code") from None
            if not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise WorkloadError(f"{where}.failures.{code}: a probability between 0 and 1")
            failures[code_int] = float(rate)
        if sum(failures.values()) > 1:
            raise WorkloadError(f"{where}.failures: probabilities add up to more than 1")
        mix[str(name)] = CommandMix(values["weight"], values["median"], values["sigma"], failures)
    if not any(m.weight > 0 for m in mix.values()):
        raise WorkloadError("mix: at least one command needs a positive weight")
    return mix


class Workload:
    """Creates jobs in a JobStore, at a rate, from a seeded random generator."""

    def __init__(
        self,
        store: JobStore,
        directory: Directory,
        *,
        rate: float = 0.0,
        seed: int | None = 0,
        mix: Mapping[str, CommandMix] | None = None,
        accounts: Sequence[str] | None = None,
        work_jobs: bool = True,
    ) -> None:
        self.store = store
        self.directory = directory
        self.created = 0
        self._task: asyncio.Task[None] | None = None
        self.configure(rate=rate, seed=seed, mix=mix, accounts=accounts, work_jobs=work_jobs)

    def configure(
        self,
        *,
        rate: float | None = None,
        seed: int | None = None,
        mix: Mapping[str, CommandMix] | None = None,
        accounts: Sequence[str] | None = None,
        work_jobs: bool | None = None,
    ) -> None:
        if rate is not None:
            if not math.isfinite(rate) or rate < 0:
                raise WorkloadError("rate: jobs per second, a non-negative number")
            self.rate = rate
        if seed is not None or not hasattr(self, "rng"):
            self.seed = seed
            # Not the store's stream: the same seed there would draw the same job UUIDs.
            self.rng = random.Random(None if seed is None else f"workload:{seed}")
        if mix is not None or not hasattr(self, "mix"):
            self.mix = dict(mix or DEFAULT_MIX)
            self._names = list(self.mix)
            self._weights = [self.mix[n].weight for n in self._names]
        if accounts is not None or not hasattr(self, "users"):
            self.users = self._users(accounts)
        if work_jobs is not None:
            self.work_jobs = work_jobs

    def _users(self, refs: Sequence[str] | None) -> list[User]:
        if refs is None:
            return list(self.directory.users)
        users = []
        for ref in refs:
            account = self.directory.account_by_ref(ref)
            if account is None:
                raise WorkloadError(f"accounts: no account {ref!r:.64}")
            users.append(self.directory.first_user(account))
        if not users:
            raise WorkloadError("accounts: at least one account")
        return users

    # -- one job ---------------------------------------------------------------------------
    def spawn(self, *, never_finish: bool = False, created_ago: float = 0.0) -> None:
        """Create one job (and its VM work sub-job) drawn from the mix."""
        rng = self.rng
        name = rng.choices(self._names, self._weights)[0]
        spec = self.mix[name]
        user = rng.choice(self.users)
        duration = spec.median * math.exp(rng.gauss(0.0, spec.sigma)) if spec.sigma else spec.median
        roll = rng.random()
        outcome = Outcome("success")
        for code, rate in spec.failures.items():
            if roll < rate:
                outcome = Outcome("failure", code)
                break
            roll -= rate
        cmd, instance_type, result_object = catalog.class_for(name, user.account.is_root_admin)
        job = self.store.create(
            user,
            cmd=cmd,
            instance_type=instance_type,
            duration=None if never_finish else duration,
            outcome=outcome,
            created_ago=created_ago,
            job_uuid=catalog_uuid(rng),
            result_object=result_object,
        )
        self.created += 1
        known = catalog.resolve(name)
        if self.work_jobs and known is not None and known.work_job is not None:
            # The sub-job starts with its parent and ends just before it, with the same outcome.
            self.store.create(
                user,
                cmd=f"{catalog.VM_WORK_PACKAGE}.VmWork{known.work_job}",
                instance_type="VirtualMachine",
                instance_id=job.instance_id if instance_type == "VirtualMachine" else None,
                duration=None if never_finish else duration * 0.95,
                outcome=outcome,
                created_ago=created_ago,
                job_uuid=catalog_uuid(rng),
            )

    def prefill(self, count: int, *, spread: float = 3600.0) -> None:
        """`count` jobs that stay pending, created over the last `spread` seconds, oldest first."""
        if count < 0:
            raise WorkloadError("jobs: a non-negative number")
        if spread >= self.store.expire:
            raise WorkloadError("the spread of pre-created jobs must be shorter than job expiry")
        step = spread / count if count else 0.0
        saved = self.work_jobs
        self.work_jobs = False  # exactly `count` jobs
        try:
            for i in range(count):
                self.spawn(never_finish=True, created_ago=spread - i * step)
        finally:
            self.work_jobs = saved

    # -- the arrival loop ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        last = time.monotonic()
        next_arrival = 0.0  # seconds from `last`
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            elapsed = now - last
            last = now
            if self.rate <= 0:
                next_arrival = 0.0
                continue
            if next_arrival <= 0.0:
                next_arrival = self.rng.expovariate(self.rate)
            while next_arrival <= elapsed:
                # A UUID clash (a reused seed) skips that one job.
                with contextlib.suppress(StoreError):
                    self.spawn(created_ago=elapsed - next_arrival)
                next_arrival += self.rng.expovariate(self.rate)
            next_arrival -= elapsed

    def describe(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "rate": self.rate,
            "seed": self.seed,
            "created": self.created,
            "work_jobs": self.work_jobs,
            "accounts": sorted({u.account.name for u in self.users}),
            "mix": {
                name: {
                    "weight": m.weight,
                    "median": m.median,
                    "sigma": m.sigma,
                    "failures": {str(k): v for k, v in m.failures.items()},
                }
                for name, m in self.mix.items()
            },
        }
