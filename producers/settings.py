"""Producer settings, read once from ``STREAMWARDEN_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProducerSettings(BaseSettings):
    """Everything a producer process reads from its environment.

    Attributes:
        kafka_bootstrap: ``host:port[,host:port]`` of Kafka (real or embedded).
        sources_file: YAML file with one entry per upstream stream.
        buffer_max_messages: envelopes held in memory while Kafka is unreachable; when full,
            the producer stops reading the upstream (backpressure) and logs it.
        log_level: Python logging level name.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMWARDEN_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(default="")
    sources_file: Path = Path("sources.yaml")
    buffer_max_messages: int = Field(default=10_000, ge=1)
    log_level: str = "INFO"
