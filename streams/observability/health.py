"""Whether a worker's dependencies answer: Kafka (its group's offsets) and the LLM endpoint.

Each probe is bounded by `timeout_s` and reports a `Check`; `WorkerProbe.run_once` runs both
and, on the way, measures the consumer lag of the worker's own partitions, since the Kafka
probe already asks for the offsets that lag is made of.

- kafka: the group coordinator answered OffsetFetch for the worker's group, and the partition
  leaders answered ListOffsets for the partitions assigned to this worker.
- llm: `GET {base_url}/models` with the API key got an answer below 500 other than 401/403
  (an endpoint without /models answers 404: it is reachable, so that counts as up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from core.kafka.admin import KafkaAdminError
from core.kafka.groups import GroupAdmin, Partition

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 5.0
_REFUSED: Final = frozenset({401, 403})


@dataclass(frozen=True, kw_only=True)
class Check:
    """One dependency's state at the last probe."""

    ok: bool
    detail: str


@dataclass(frozen=True, kw_only=True)
class HealthReport:
    """Every check; healthy only when each one is ok."""

    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks.values())

    def as_json(self) -> dict[str, object]:
        status = "ok" if self.healthy else ("starting" if not self.checks else "degraded")
        return {
            "status": status,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
        }


async def probe_llm(
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    api_key: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Check:
    """Whether the OpenAI-compatible endpoint at `base_url` answers (see the module docstring)."""
    url = f"{base_url.rstrip('/')}/models"
    try:
        async with session.get(
            url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            status = response.status
    except TimeoutError:
        return Check(ok=False, detail=f"LLM endpoint {base_url} did not answer in {timeout_s:g} s")
    except aiohttp.ClientError as exc:
        return Check(ok=False, detail=f"LLM endpoint {base_url} unreachable: {exc}")
    if status in _REFUSED:
        return Check(ok=False, detail=f"LLM endpoint {base_url} refused our API key ({status})")
    if status >= 500:
        return Check(ok=False, detail=f"LLM endpoint {base_url} failing ({status})")
    return Check(ok=True, detail=f"LLM endpoint {base_url} answered {status}")


@dataclass(frozen=True, kw_only=True)
class LagProbe:
    """The Kafka check, and the lag of the partitions this worker is assigned."""

    check: Check
    lags: tuple[tuple[str, int, int], ...] = ()


async def probe_kafka(
    admin: GroupAdmin,
    *,
    group_id: str,
    assigned: Collection[Partition],
) -> LagProbe:
    """Committed offsets of `group_id` and log ends of `assigned`: the check and the lags."""
    try:
        committed = await admin.committed_offsets(group_id)
        ends = await admin.end_offsets(tp for tp in assigned if tp in committed)
    except KafkaAdminError as exc:
        return LagProbe(check=Check(ok=False, detail=str(exc)))
    lags = tuple(
        (topic, partition, max(0, end - committed[(topic, partition)]))
        for (topic, partition), end in sorted(ends.items())
    )
    return LagProbe(
        check=Check(
            ok=True,
            detail=f"Kafka at {admin.bootstrap_servers} answered; "
            f"{len(assigned)} partition(s) assigned",
        ),
        lags=lags,
    )


class WorkerProbe:
    """Probes Kafka and the LLM endpoint together; `report` is the latest outcome."""

    def __init__(
        self,
        *,
        admin: GroupAdmin,
        group_id: str,
        assignment: Callable[[], Iterable[Partition]],
        llm_base_url: str,
        llm_api_key: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._admin = admin
        self._group_id = group_id
        self._assignment = assignment
        self._llm_base_url = llm_base_url
        self._llm_api_key = llm_api_key
        self._timeout_s = timeout_s
        self.report = HealthReport()
        self.lags: tuple[tuple[str, int, int], ...] = ()

    async def run_once(self, session: aiohttp.ClientSession) -> HealthReport:
        kafka, llm = await asyncio.gather(
            probe_kafka(self._admin, group_id=self._group_id, assigned=set(self._assignment())),
            probe_llm(
                session,
                base_url=self._llm_base_url,
                api_key=self._llm_api_key,
                timeout_s=self._timeout_s,
            ),
        )
        previous = self.report
        self.report = HealthReport(checks={"kafka": kafka.check, "llm": llm})
        self.lags = kafka.lags
        for name, check in self.report.checks.items():
            before = previous.checks.get(name)
            if before is None or before.ok != check.ok:
                log = logger.info if check.ok else logger.warning
                log("health: %s %s: %s", name, "up" if check.ok else "DOWN", check.detail)
        return self.report
