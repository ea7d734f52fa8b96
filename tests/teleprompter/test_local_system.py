"""LocalSystem's rules that need no processes: restart backoff and the ports it claims."""

from __future__ import annotations

from pathlib import Path

from core.settings import load_settings
from teleprompter.local_system import PortClaim, RestartBackoff, port_claims


def test_a_child_that_keeps_dying_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    backoff = RestartBackoff(initial_s=0.5, max_s=4.0, stable_after_s=30.0)

    delays = []
    previous = None
    for _ in range(6):
        previous = backoff.delay_s(previous_s=previous, ran_s=1.0)
        delays.append(previous)

    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_child_that_ran_a_while_restarts_at_once_again() -> None:
    backoff = RestartBackoff(initial_s=0.5, max_s=30.0, stable_after_s=30.0)

    assert backoff.delay_s(previous_s=16.0, ran_s=45.0) == 0.5


def test_up_claims_the_gateway_broker_and_simulator_ports_it_was_given(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, gateway_port=8081, broker_port=0, llm_sim_port=8001)

    assert port_claims(settings) == [
        PortClaim(what="gateway", host="127.0.0.1", port=8081, flag="--gateway-port"),
        PortClaim(what="LLM simulator", host="127.0.0.1", port=8001, flag="--llm-port"),
    ]


def test_external_kafka_and_llm_claim_no_local_ports(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        gateway_port=8081,
        kafka_bootstrap_servers="kafka:9092",
        openai_base_url="https://llm.example/v1",
    )

    assert [claim.what for claim in port_claims(settings)] == ["gateway"]


def test_explicit_worker_ports_are_claimed_one_per_worker(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, gateway_port=0, llm_sim_port=0, workers=2, worker_http_port=9400
    )

    assert [(claim.what, claim.port) for claim in port_claims(settings)] == [
        ("broker", 9092),
        ("worker 1 metrics", 9400),
        ("worker 2 metrics", 9401),
    ]
