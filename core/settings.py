"""The one typed settings object, read from flags and the environment and passed in."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
AsrDevice = Literal["cpu", "cuda", "auto"]

DEFAULT_DATA_DIR: Final = Path(".teleprompter")
SECRET_FILE_NAME: Final = "secret"


class SettingsError(ValueError):
    """A setting has a value the system cannot run with; the message names the setting."""


def _default_gateway_id() -> str:
    # Reply topics are named after the gateway, so the id must be a legal topic-name fragment.
    host = "".join(
        c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in socket.gethostname()
    )
    return f"gw-{host}"[:48]


class Settings(BaseSettings):
    """Everything configurable. Environment: `TELEPROMPTER_<NAME>`, plus the Kafka/OpenAI names."""

    model_config = SettingsConfigDict(
        env_prefix="TELEPROMPTER_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # --- where things run -------------------------------------------------------------------
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: LogLevel = "INFO"

    # --- Kafka ------------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="Kafka to use; unset means the embedded broker.",
    )
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(default=9092, ge=0, le=65535)
    topic_prefix: str = Field(default="tp", pattern=r"^[A-Za-z0-9_-]+$")
    partitions: int = Field(default=8, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    min_insync_replicas: int = Field(
        default=1,
        ge=1,
        le=16,
        description="replicas that must have a write before it is acknowledged (acks=all); "
        "unset: 2 when replication_factor is 3 or more, else 1",
    )

    # --- embedded broker: what one client may cost it (Kafka's names in the descriptions) -------
    broker_max_request_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024, description="largest request (socket.request.max.bytes)"
    )
    broker_idle_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="close a connection silent this long (connections.max.idle.ms)",
    )
    broker_request_read_timeout_s: float = Field(
        default=30.0, gt=0, description="close a connection whose request stops arriving mid-frame"
    )
    broker_auto_create_topics: bool = Field(
        default=False,
        description="create unknown topics on metadata requests (auto.create.topics.enable)",
    )

    # --- gateway ----------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_id: str = Field(default_factory=_default_gateway_id, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for client tokens; unset means a generated one under data_dir.",
    )
    token_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    token_max_lifetime_s: float = Field(
        default=24 * 3600.0, gt=0, description="how long renewals may keep one link alive"
    )
    max_msg_size: int = Field(
        default=512 * 1024,
        ge=1024,
        le=900 * 1024,
        description="bytes per WebSocket frame (over it: close 1009); every frame must fit one "
        "Kafka message (librdkafka's 1,000,000-byte default) with room for the event around it",
    )
    heartbeat_s: float = Field(default=30.0, gt=0)
    client_timeout_s: float = Field(default=45.0, gt=0)

    # --- gateway limits ---------------------------------------------------------------------
    # Per socket, per conversation (on one gateway) and per connection; docs/protocol.md.
    ws_send_queue_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        description="bytes of server messages queued for one socket before it is closed 1013",
    )
    ws_unacked_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        description="bytes of one socket's messages waiting for Kafka; beyond: `unavailable`",
    )
    ws_delivery_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="how long the gateway retries storing a client message in Kafka",
    )
    ws_sockets_per_conversation: int = Field(
        default=4,
        ge=1,
        description="open sockets of one conversation on one gateway; a newer one replaces "
        "the oldest (close 4002)",
    )
    ws_rate_messages_per_s: float = Field(
        default=200.0,
        gt=0,
        description="per conversation: room for two 20 ms telephony tracks and the rep's page",
    )
    ws_rate_burst_messages: int = Field(default=2000, ge=1, description="per conversation")
    ws_rate_bytes_per_s: float = Field(
        default=256 * 1024, gt=0, description="per conversation (4x live 16 kHz PCM)"
    )
    ws_rate_burst_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="per conversation: a reconnect's resend"
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a connection must send a whole request head this soon after opening "
        "(or after its previous response)",
    )

    # --- turns and context ------------------------------------------------------------------
    turn_pause_ms: float = Field(default=600.0, ge=0)
    context_window_s: float = Field(default=90.0, gt=0)
    conversation_idle_s: float = Field(default=1800.0, gt=0)

    # --- LLM --------------------------------------------------------------------------------
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
        description="OpenAI-compatible endpoint; unset means the built-in simulator.",
    )
    openai_api_key: SecretStr = Field(
        default=SecretStr("sk-local-simulator"),
        validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"),
    )
    llm_model: str = "gpt-4o-mini"
    summary_model: str = "gpt-4o-mini"
    llm_max_tokens: int = Field(default=120, ge=1, le=4096)
    llm_temperature: float = Field(default=0.4, ge=0.0, le=2.0)
    llm_timeout_s: float = Field(default=20.0, gt=0)
    llm_max_streams: int = Field(default=64, ge=1, description="M: concurrent streams per worker")
    llm_max_waiting: int = Field(default=3, ge=0, description="N: turns allowed to wait for a slot")
    llm_sim_host: str = Field(default="127.0.0.1", description="where the simulator listens")
    suggestion_batch_ms: float = Field(
        default=30.0,
        ge=0,
        le=1000,
        description="after a suggestion's first delta, what the LLM sends within this long "
        "goes out as one delta (0: whatever has arrived when the previous delta is out)",
    )
    llm_sim_port: int = Field(default=8000, ge=0, le=65535)
    llm_ttft_ms: float = Field(default=300.0, ge=0)
    llm_tokens_per_s: float = Field(default=40.0, gt=0)

    # --- speculative suggestions (docs/protocol.md, docs/benchmarks.md) ---------------------
    speculative_suggestions: bool = Field(
        default=True,
        description="start the LLM on customer words waiting for the turn pause; the client "
        "sees the stream only if they become the turn",
    )
    speculation_pause_ms: float = Field(
        default=200.0,
        ge=0,
        description="pause after a final customer chunk without a sentence end before the LLM "
        "starts on it (below turn_pause_ms to gain anything)",
    )

    # --- speech recognition -----------------------------------------------------------------
    asr_model: str | None = Field(
        default=None,
        description="CTranslate2 model directory or name; unset means the bundled tiny.en.",
    )
    asr_device: AsrDevice = "cpu"
    asr_compute_type: str = "int8"
    asr_endpoint_silence_ms: float = Field(
        default=150.0,
        ge=50,
        description="silence that ends an utterance (see streams/asr/README.md for the trade-off)",
    )

    # --- processes --------------------------------------------------------------------------
    workers: int = Field(default=1, ge=1, le=64)
    worker_http_host: str = "127.0.0.1"
    worker_http_port: int = Field(
        default=8081, ge=0, le=65535, description="a worker's /metrics and /healthz; 0 picks one"
    )

    # --- stream workers: failover (docs/reliability.md, "Workers") --------------------------
    worker_instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="static group membership (group.instance.id), unique per worker; unset: "
        "dynamic membership",
    )
    worker_session_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="a worker silent this long loses its partitions (raised to the broker's "
        "group.min.session.timeout.ms)",
    )
    worker_commit_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="how often consumed offsets are committed: what a crash makes a worker re-read",
    )
    turn_recovery_window_s: float = Field(
        default=10.0,
        ge=0,
        description="a turn a lost worker left unanswered is answered again if younger than "
        "this, else only cancelled",
    )
    worker_stall_timeout_s: float = Field(
        default=300.0, gt=0, description="a partition not fetched or processed this long is logged"
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # `KAFKA_BOOTSTRAP_SERVERS=` (or a blank flag) means "not set": the default applies.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @model_validator(mode="before")
    @classmethod
    def _min_insync_follows_replication(cls, data: Any) -> Any:
        # One replica may be down and writes still succeed, yet none is acknowledged on one
        # broker alone: 2 of 3, Kafka's usual production pairing.
        if not isinstance(data, dict):
            return data
        given = data.get("min_insync_replicas")
        if given is None or (isinstance(given, str) and not given.strip()):
            replication = data.get("replication_factor", 1)
            if isinstance(replication, int | str) and str(replication).strip().isdigit():
                return {**data, "min_insync_replicas": 2 if int(replication) >= 3 else 1}
        return data

    @field_validator("min_insync_replicas")
    @classmethod
    def _min_insync_within_replication(cls, value: int, info: ValidationInfo) -> int:
        replication = info.data.get("replication_factor")
        if replication is not None and value > replication:
            raise ValueError(
                f"must not exceed replication_factor ({replication}): Kafka would refuse every "
                "acks=all write"
            )
        return value

    @model_validator(mode="after")
    def _a_whole_frame_fits_every_budget(self) -> Settings:
        # A frame the budgets could never pay for would be refused forever, not just now.
        for name in ("ws_rate_burst_bytes", "ws_unacked_bytes"):
            if getattr(self, name) < self.max_msg_size:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be at least max_msg_size "
                    f"({self.max_msg_size}): a frame of the maximum size must be able to pass"
                )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    # --- derived ----------------------------------------------------------------------------
    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.broker_host}:{self.broker_port}"

    @property
    def llm_base_url(self) -> str:
        return self.openai_base_url or f"http://127.0.0.1:{self.llm_sim_port}/v1"

    def masked(self) -> dict[str, str]:
        """Effective values for display; secrets show only whether they are set."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown[name] = "********" if value.get_secret_value() else "(empty)"
            elif value is None:
                shown[name] = "(unset)"
            else:
                shown[name] = str(value)
        return shown


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus explicit overrides (flags).

    An override of None means the flag was not given; an empty or blank value, from a flag or
    the environment, means unset.
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"load_settings got overrides that are not settings: {unknown}")
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings; its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = _field_name(str(error["loc"][0]))
            # A secret's rejected value is never shown, not even in an error.
            got = "" if field in _secret_fields() else f" (got {error.get('input')!r})"
            problems.append(f"{field} ({env_name(field)}): {error['msg']}{got}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


def _field_name(loc: str) -> str:
    """The setting an error is about; errors from `KAFKA_BOOTSTRAP_SERVERS` name the alias."""
    for name, field_info in Settings.model_fields.items():
        alias = field_info.validation_alias
        if isinstance(alias, AliasChoices) and loc.lower() in (
            str(choice).lower() for choice in alias.choices
        ):
            return name
    return loc


def _secret_fields() -> set[str]:
    return {
        name
        for name, field_info in Settings.model_fields.items()
        if SecretStr in (field_info.annotation, *get_args(field_info.annotation))
    }


def environment_names() -> dict[str, str]:
    """Every setting's environment variable -> the setting it sets."""
    return {env_name(field): field for field in Settings.model_fields}


def env_name(field: str) -> str:
    """The environment variable that sets `field` (TELEPROMPTER_<FIELD>, or its alias)."""
    field_info = Settings.model_fields.get(field)
    if field_info is not None and isinstance(field_info.validation_alias, AliasChoices):
        first = field_info.validation_alias.choices[0]
        if isinstance(first, str):
            return first
    return f"TELEPROMPTER_{field.upper()}"
