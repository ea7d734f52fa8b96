"""Settings: environment names, flag overrides, empty values, validation and masked display."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr, ValidationError

from core.settings import Settings, SettingsError, _field_name, load_settings
from teleprompter.cli import main

OUTSIDE_NAMES = ("KAFKA_BOOTSTRAP_SERVERS", "OPENAI_BASE_URL", "OPENAI_API_KEY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from no configuration at all, whatever the machine has set."""
    for name in list(os.environ):
        if name.upper().startswith("TELEPROMPTER_") or name.upper() in OUTSIDE_NAMES:
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()

    assert settings.uses_embedded_broker
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.llm_base_url == "http://127.0.0.1:8000/v1"
    assert settings.secret is None
    assert settings.data_dir == Path(".teleprompter")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", settings.gateway_id)


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "k1:9092,k2:9092",
            "kafka_bootstrap_servers",
            "k1:9092,k2:9092",
        ),
        ("OPENAI_BASE_URL", "https://llm.example/v1", "openai_base_url", "https://llm.example/v1"),
        ("TELEPROMPTER_GATEWAY_PORT", "9000", "gateway_port", 9000),
        ("TELEPROMPTER_DATA_DIR", "/var/lib/tp", "data_dir", Path("/var/lib/tp")),
        ("TELEPROMPTER_TOPIC_PREFIX", "prod_tp", "topic_prefix", "prod_tp"),
        ("TELEPROMPTER_LLM_TEMPERATURE", "0.9", "llm_temperature", 0.9),
        ("TELEPROMPTER_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("teleprompter_partitions", "3", "partitions", 3),
    ],
)
def test_environment_names(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), field) == expected


def test_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abc")
    monkeypatch.setenv("TELEPROMPTER_SECRET", "signing-key")

    settings = load_settings()

    assert settings.openai_api_key.get_secret_value() == "sk-live-abc"
    assert settings.secret is not None
    assert settings.secret.get_secret_value() == "signing-key"
    assert "sk-live-abc" not in repr(settings)
    assert "signing-key" not in repr(settings)


def test_kafka_bootstrap_servers_replaces_the_embedded_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.internal:9093")

    settings = load_settings(broker_port=9999)

    assert not settings.uses_embedded_broker
    assert settings.bootstrap_servers == "kafka.internal:9093"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEPROMPTER_GATEWAY_PORT", "9000")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")

    flagged = load_settings(gateway_port=9100, kafka_bootstrap_servers="from-flag:9092")
    not_given = load_settings(gateway_port=None, kafka_bootstrap_servers=None)

    assert flagged.gateway_port == 9100
    assert flagged.bootstrap_servers == "from-flag:9092"
    assert not_given.gateway_port == 9000
    assert not_given.bootstrap_servers == "from-env:9092"


def test_flags_in_the_cli_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEPROMPTER_TOKEN_TTL_S", "60")

    result = CliRunner().invoke(main, ["token", "--conversation", "c", "--ttl", "-5"])

    # The flag, not the valid environment value, is what was validated and rejected.
    assert result.exit_code == 2
    assert "token_ttl_s (TELEPROMPTER_TOKEN_TTL_S)" in result.stderr
    assert "-5" in result.stderr


def test_an_override_that_is_no_setting_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="gateway_prot"):
        load_settings(gateway_prot=1)


@pytest.mark.parametrize(
    ("name", "field", "default"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers", None),
        ("OPENAI_BASE_URL", "openai_base_url", None),
        ("TELEPROMPTER_SECRET", "secret", None),
        ("TELEPROMPTER_ASR_MODEL", "asr_model", None),
        ("TELEPROMPTER_PARTITIONS", "partitions", 8),
        ("TELEPROMPTER_GATEWAY_PORT", "gateway_port", 8080),
        ("TELEPROMPTER_DATA_DIR", "data_dir", Path(".teleprompter")),
        ("TELEPROMPTER_LOG_LEVEL", "log_level", "INFO"),
    ],
)
@pytest.mark.parametrize("empty", ["", "   "], ids=["empty", "blank"])
def test_empty_values_are_unset(
    monkeypatch: pytest.MonkeyPatch, name: str, field: str, default: object, empty: str
) -> None:
    monkeypatch.setenv(name, empty)
    assert getattr(load_settings(), field) == default


def test_empty_openai_api_key_falls_back_to_the_simulator_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert load_settings().openai_api_key.get_secret_value() == "sk-local-simulator"


def test_empty_flag_is_unset() -> None:
    assert load_settings(kafka_bootstrap_servers="", broker_port=9093).uses_embedded_broker
    assert load_settings(topic_prefix=" ").topic_prefix == "tp"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("TELEPROMPTER_GATEWAY_PORT", "99999", "gateway_port (TELEPROMPTER_GATEWAY_PORT)"),
        ("TELEPROMPTER_PARTITIONS", "eight", "partitions (TELEPROMPTER_PARTITIONS)"),
        ("TELEPROMPTER_PARTITIONS", "0", "partitions (TELEPROMPTER_PARTITIONS)"),
        ("TELEPROMPTER_TOPIC_PREFIX", "tp.prod", "topic_prefix (TELEPROMPTER_TOPIC_PREFIX)"),
        ("TELEPROMPTER_GATEWAY_ID", "gw 1", "gateway_id (TELEPROMPTER_GATEWAY_ID)"),
        ("TELEPROMPTER_LOG_LEVEL", "LOUD", "log_level (TELEPROMPTER_LOG_LEVEL)"),
        ("TELEPROMPTER_LLM_TEMPERATURE", "3", "llm_temperature (TELEPROMPTER_LLM_TEMPERATURE)"),
        ("TELEPROMPTER_ASR_DEVICE", "tpu", "asr_device (TELEPROMPTER_ASR_DEVICE)"),
        ("TELEPROMPTER_HEARTBEAT_S", "-1", "heartbeat_s (TELEPROMPTER_HEARTBEAT_S)"),
    ],
)
def test_invalid_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert named in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("replication", "min_insync", "expected"),
    [("1", None, 1), ("2", None, 1), ("3", None, 2), ("5", None, 2), ("3", "3", 3), ("3", "", 2)],
)
def test_min_insync_replicas_follow_replication_unless_set(
    monkeypatch: pytest.MonkeyPatch, replication: str, min_insync: str | None, expected: int
) -> None:
    monkeypatch.setenv("TELEPROMPTER_REPLICATION_FACTOR", replication)
    if min_insync is not None:
        monkeypatch.setenv("TELEPROMPTER_MIN_INSYNC_REPLICAS", min_insync)

    assert load_settings().min_insync_replicas == expected


def test_min_insync_replicas_above_replication_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEPROMPTER_MIN_INSYNC_REPLICAS", "2")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert "min_insync_replicas (TELEPROMPTER_MIN_INSYNC_REPLICAS)" in str(caught.value)
    assert "must not exceed replication_factor (1)" in str(caught.value)


def test_every_invalid_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEPROMPTER_GATEWAY_PORT", "-1")
    monkeypatch.setenv("TELEPROMPTER_WORKERS", "0")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert "TELEPROMPTER_GATEWAY_PORT" in str(caught.value)
    assert "TELEPROMPTER_WORKERS" in str(caught.value)


def test_invalid_alias_setting_is_named_by_its_own_variable() -> None:
    with pytest.raises(SettingsError, match=r"openai_base_url \(OPENAI_BASE_URL\)"):
        load_settings(openai_base_url=12)


def test_errors_located_at_an_alias_name_the_setting() -> None:
    # Values read from KAFKA_BOOTSTRAP_SERVERS etc. are validated under the alias's name.
    assert _field_name("OPENAI_BASE_URL") == "openai_base_url"
    assert _field_name("kafka_bootstrap_servers") == "kafka_bootstrap_servers"
    assert _field_name("gateway_port") == "gateway_port"


def test_a_rejected_secret_is_not_shown() -> None:
    with pytest.raises(SettingsError, match=r"openai_api_key \(OPENAI_API_KEY\)") as caught:
        load_settings(openai_api_key=31337)
    assert "31337" not in str(caught.value)


def test_invalid_environment_fails_cli_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEPROMPTER_BROKER_PORT", "65536")

    result = CliRunner().invoke(main, ["config"])

    assert result.exit_code == 2
    assert "broker_port (TELEPROMPTER_BROKER_PORT)" in result.stderr
    assert result.stdout == ""


def test_config_prints_effective_values_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789")
    monkeypatch.setenv("TELEPROMPTER_SECRET", "hmac-signing-key-xyz")
    monkeypatch.setenv("TELEPROMPTER_GATEWAY_PORT", "9443")

    result = CliRunner().invoke(main, ["config"])

    assert result.exit_code == 0, result.output
    shown = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert set(shown) == set(Settings.model_fields)
    assert shown["openai_api_key"] == "********"
    assert shown["secret"] == "********"
    assert shown["gateway_port"] == "9443"
    assert shown["kafka_bootstrap_servers"] == "(unset)"
    assert "sk-live-0123456789" not in result.output
    assert "hmac-signing-key-xyz" not in result.output


def test_masked_tells_empty_and_unset_secrets_apart() -> None:
    assert Settings(openai_api_key=SecretStr("")).masked()["openai_api_key"] == "(empty)"
    assert Settings().masked()["secret"] == "(unset)"


def test_settings_cannot_change_once_built() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.gateway_port = 1


@pytest.mark.parametrize("hostname", ["büro.example.com", "a" * 80, "host_1-x", "??"])
def test_default_gateway_id_is_a_legal_topic_fragment(
    monkeypatch: pytest.MonkeyPatch, hostname: str
) -> None:
    monkeypatch.setattr("core.settings.socket.gethostname", lambda: hostname)

    gateway_id = Settings().gateway_id

    assert re.fullmatch(r"gw-[A-Za-z0-9_-]+", gateway_id)
    assert len(gateway_id) <= 48
    # The default passes the same validation as a configured value.
    assert load_settings(gateway_id=gateway_id).gateway_id == gateway_id
