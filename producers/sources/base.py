"""What every source kind shares: connection tuning keys and value types of the sources file.

Kind-specific models live next to their runner in ``producers/sources/<kind>.py`` and subclass
:class:`SourceBase`; :mod:`producers.config` puts them in the ``kind`` union.
"""

from __future__ import annotations

import typing
from typing import Annotated
from urllib.parse import SplitResult, quote, quote_plus, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationInfo,
    field_validator,
)

from producers.duration import DURATION_FORMS, DURATION_RE, parse_duration
from producers.redact import redact_url

__all__ = ["Seconds", "SourceBase", "check_websocket_url", "secret_fields", "secrets_of"]

_DURATION_FORMS = f"use seconds (e.g. 30) or forms like {DURATION_FORMS}"


def _to_seconds(value: object) -> object:
    """A YAML number is seconds; a string is a duration in the one grammar of
    :mod:`producers.duration` (the same as rule files)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {_DURATION_FORMS}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and DURATION_RE.match(value):
        try:
            return parse_duration(value).total_seconds()
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"{value!r} is not a duration; {_DURATION_FORMS}")


def _strict_int(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


#: Positive duration in float seconds; YAML accepts numbers or ``500ms``/``30s``/``5m``/``1h``.
Seconds = Annotated[float, BeforeValidator(_to_seconds), Field(gt=0)]

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class SourceBase(BaseModel):
    """Keys every source kind shares (connection tuning, identity and TLS).

    ``tls_verify`` (default true) checks ``wss://`` certificates and hostnames. Turning it off
    is refused unless ``tls_insecure_acknowledged: true`` says so deliberately; the producer
    then logs a WARNING naming the source at every connection attempt.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(pattern=_NAME_PATTERN)
    ping_interval: Seconds | None = None
    open_timeout: Seconds = 10.0
    idle_timeout: Seconds | None = 300.0
    stable_after: Seconds = 10.0
    backoff_initial: Seconds = 0.5
    backoff_max: Seconds = 30.0
    max_frame_bytes: Annotated[int, BeforeValidator(_strict_int), Field(ge=1)] = 1 << 20
    tls_insecure_acknowledged: StrictBool = False
    tls_verify: StrictBool = True

    @field_validator("tls_verify")
    @classmethod
    def _insecure_acknowledged(cls, value: bool, info: ValidationInfo) -> bool:
        if not value and info.data.get("tls_insecure_acknowledged") is not True:
            raise ValueError(
                "false turns off TLS certificate and hostname checks (anyone on the path can "
                "read the credentials); set tls_insecure_acknowledged: true as well if you "
                "really mean it"
            )
        return value

    @field_validator("backoff_max")
    @classmethod
    def _backoff_order(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("backoff_initial")
        if isinstance(initial, float) and value < initial:
            raise ValueError(f"must be at least backoff_initial ({initial:g}s), got {value:g}s")
        return value


def check_websocket_url(value: str) -> SplitResult:
    """Parse a ``ws://``/``wss://`` URL or raise ValueError with a redacted, actionable message."""
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(
            f"{redact_url(value)!r} is not a WebSocket URL; use ws://host/path or wss://host/path"
        )
    return parts


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names of a source model's credential keys (typed :class:`pydantic.SecretStr`)."""
    names = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if annotation is SecretStr or SecretStr in typing.get_args(annotation):
            names.add(name)
    return frozenset(names)


def secrets_of(source: SourceBase) -> list[str]:
    """Every credential value of a source, as given and as it appears percent-encoded in URLs.

    Feed the result to :func:`producers.redact.install_secret_filter`.
    """
    found: list[str] = []
    for name in sorted(secret_fields(type(source))):
        value = getattr(source, name)
        if not isinstance(value, SecretStr):
            continue
        raw = value.get_secret_value()
        for form in (raw, quote(raw, safe=""), quote_plus(raw, safe="")):
            if form and form not in found:
                found.append(form)
    return found
