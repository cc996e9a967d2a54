"""The sources file: one entry per upstream stream a producer can run.

Example::

    sources:
      - name: aliunid-demo            # unique; `streamwarden produce aliunid-demo`
        kind: aliunid
        url: ws://127.0.0.1:8765/web/api/data-export/v1/businesses/${ALIUNID_BUSINESS_ID}/measuring-points/live
        api_key: ${ALIUNID_API_KEY}
        measuring_points: []          # optional UUIDs -> one `&id=` each

Common optional keys (every kind), durations in seconds or as ``500ms``/``30s``/``5m``/``1h``:

=================  ===========  ==========================================================
key                default      meaning
=================  ===========  ==========================================================
ping_interval      null         WebSocket keepalive pings; null = none (aliunid's docs do not
                                say pings are allowed, and a client that sends a message is
                                disconnected)
open_timeout       10s          connect + opening handshake
idle_timeout       300s         reconnect when no frame arrived for this long; null = never
stable_after       10s          a connection up this long counts as good (backoff resets)
backoff_initial    0.5s         first reconnect delay ceiling (full jitter)
backoff_max        30s          reconnect delay cap
max_frame_bytes    1048576      larger frames are logged, counted and dead-lettered
                                (``deadletter.v1``, first 1 KiB only), not published
tls_verify         true         verify ``wss://`` certificates and hostnames; false is
                                refused unless ``tls_insecure_acknowledged: true`` is
                                set too, and then warned about at every connect
=================  ===========  ==========================================================

``${VAR}`` in any string value is replaced from the environment. Every problem in the file is
reported at once, one per line, as ``FILE:LINE: source 'NAME': KEY: MESSAGE``; credential values
never appear in messages or reprs (they are :class:`pydantic.SecretStr`).

Adding a kind: subclass :class:`SourceBase` with ``kind: Literal["<kind>"]``, add it to
:data:`SourceConfig`, and register its runner in :mod:`producers.runner`.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, quote_plus
from uuid import UUID

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from producers.errors import SourceConfigError, SourceProblem
from producers.redact import redact_url
from producers.sources.base import (
    Seconds,
    SourceBase,
    check_websocket_url,
)
from producers.sources.element import ElementSource
from producers.sources.hemis import HemisSource
from producers.sources.nobil import NobilSource
from producers.sources.valtronics import ValtronicsSource

__all__ = [
    "AliunidSource",
    "SourceBase",
    "SourceConfig",
    "find_source",
    "load_sources",
    "secrets_of",
    "source_kinds",
]


class AliunidSource(SourceBase):
    """aliunid OPERATOR live data export over WebSocket or HTTP long polling.

    Attributes:
        url: the ``.../businesses/{BUSINESS_ID}/measuring-points/live`` endpoint, ``ws://`` or
            ``wss://`` (``http://`` or ``https://`` for long polling), without a query string
            (the key and ids are added from the keys below).
        api_key: sent as the ``apiKey`` query parameter (or the ``x-api-key`` header).
        measuring_points: measuring point UUIDs; empty means every point of the business.
        transport: ``websocket`` (default) or ``long-poll`` (one ``data`` object per answer).
        api_key_in: long polling: ``query`` (``apiKey``, the current doc) or ``header``
            (``x-api-key``, the doc's first version).
        poll_timeout: long polling: bound on one request (the server holds it until data).
        error_delay: long polling: wait after an error (the doc: 5 s), growing while errors
            go on, up to ``backoff_max``.
    """

    kind: Literal["aliunid"]
    transport: Literal["websocket", "long-poll"] = "websocket"  # before url: url checks it
    url: str
    api_key: SecretStr = Field(min_length=1)
    measuring_points: tuple[UUID, ...] = ()
    api_key_in: Literal["query", "header"] = "query"
    poll_timeout: Seconds = 90.0
    error_delay: Seconds = 5.0

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("transport") == "long-poll":
            if value[:7].lower() != "http://" and value[:8].lower() != "https://":
                raise ValueError(
                    f"{redact_url(value)!r} is not an HTTP URL (transport: long-poll); use "
                    "http://host/path or https://host/path"
                )
            value_as_ws = "ws" + value[4:]  # the same checks as a WebSocket URL
        else:
            value_as_ws = value
        parts = check_websocket_url(value_as_ws)
        if parts.query or parts.fragment:
            raise ValueError(
                f"{redact_url(value)!r} must not have a query string or fragment; put the key in "
                "api_key and measuring point ids in measuring_points"
            )
        return value


#: Any source entry; ``kind`` selects the model.
SourceConfig = Annotated[
    AliunidSource | NobilSource | ElementSource | ValtronicsSource | HemisSource,
    Field(discriminator="kind"),
]

_SOURCE_ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)


def source_kinds() -> tuple[str, ...]:
    """The ``kind`` values the sources file accepts."""
    return tuple(sorted(_kind_of(m) for m in _source_models()))


def _kind_of(model: type[SourceBase]) -> str:
    (kind,) = typing.get_args(model.model_fields["kind"].annotation)
    return str(kind)


def _source_models(annotation: Any = SourceConfig) -> tuple[type[SourceBase], ...]:
    """The models of an ``Annotated[A | B | ..., Field(discriminator=...)]`` alias."""
    inner = (
        typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    )
    if typing.get_origin(inner) in (typing.Union, types.UnionType):
        members: tuple[Any, ...] = typing.get_args(inner)
    else:
        members = (inner,)
    return tuple(m for m in members if isinstance(m, type) and issubclass(m, SourceBase))


def _model_for(kind: object) -> type[SourceBase] | None:
    for model in _source_models():
        if _kind_of(model) == kind:
            return model
    return None


def _secret_fields(model: type[BaseModel]) -> frozenset[str]:
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
    for name in sorted(_secret_fields(type(source))):
        value = getattr(source, name)
        if not isinstance(value, SecretStr):
            continue
        raw = value.get_secret_value()
        for form in (raw, quote(raw, safe=""), quote_plus(raw, safe="")):
            if form and form not in found:
                found.append(form)
    return found


def find_source(sources: Sequence[SourceConfig], name: str) -> SourceConfig:
    """Return the source called ``name``.

    Raises:
        SourceConfigError: no such source; the message lists the known names.
    """
    for source in sources:
        if source.name == name:
            return source
    known = ", ".join(repr(s.name) for s in sources) or "none"
    raise SourceConfigError(f"no source named {name!r}; known sources: {known}")


# --------------------------------------------------------------------------- loading

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_sources(path: Path, env: Mapping[str, str] | None = None) -> list[SourceConfig]:
    """Read, expand and validate a sources file.

    Args:
        path: the YAML file; shown as given in messages.
        env: where ``${VAR}`` values come from; defaults to ``os.environ``.

    Raises:
        SourceConfigError: with every problem of the file, one per line, in line order.
    """
    return _Loader(path, os.environ if env is None else env).load()


class _Loader:
    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.shown = str(path)
        self.env = env
        self.problems: list[SourceProblem] = []

    def problem(self, line: int | None, message: str, *, source: str = "", key: str = "") -> None:
        self.problems.append(SourceProblem(self.shown, line, source, key, message))

    def fail(self) -> SourceConfigError:
        ordered = sorted(self.problems, key=lambda p: p.line or 0)
        return SourceConfigError(problems=ordered)

    def load(self) -> list[SourceConfig]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SourceConfigError(
                f"{self.shown}: cannot read the sources file: {reason}"
            ) from exc
        parsed = self._parse(text)
        if parsed is None:
            raise self.fail()
        root, data = parsed
        entries = self._entries(root, data)
        sources: list[tuple[int, SourceConfig]] = []
        for index, (node, entry) in enumerate(entries):
            source = self._entry(index, node, entry)
            if source is not None:
                sources.append((node.start_mark.line + 1, source))
        self._check_unique(sources, entries)
        if self.problems:
            raise self.fail()
        return [s for _, s in sources]

    def _parse(self, text: str) -> tuple[yaml.Node, Any] | None:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.problem(mark.line + 1 if mark else None, f"invalid YAML: {exc.problem}")
            return None
        except yaml.YAMLError as exc:
            self.problem(None, f"invalid YAML: {exc}")
            return None
        finally:
            loader.dispose()
        if node is None:
            self.problem(None, "the file is empty; expected a mapping with a 'sources' list")
            return None
        return node, data

    def _entries(self, root: yaml.Node, data: Any) -> list[tuple[yaml.MappingNode, Any]]:
        line = root.start_mark.line + 1
        if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
            self.problem(line, "expected a mapping with a 'sources' list at the top level")
            return []
        self._duplicate_keys(root, source="")
        sources_node: yaml.Node | None = None
        for key_node, value_node in root.value:
            if key_node.value == "sources":
                sources_node = value_node
            else:
                self.problem(
                    key_node.start_mark.line + 1,
                    f"unknown top-level key {key_node.value!r}; expected 'sources'",
                )
        if sources_node is None:
            self.problem(line, "required key is missing", key="sources")
            return []
        items = data.get("sources")
        if not isinstance(sources_node, yaml.SequenceNode) or not isinstance(items, list):
            self.problem(
                sources_node.start_mark.line + 1, "expected a list of source entries", key="sources"
            )
            return []
        if not items:
            self.problem(
                sources_node.start_mark.line + 1,
                "the list is empty; define at least one source",
                key="sources",
            )
            return []
        entries: list[tuple[yaml.MappingNode, Any]] = []
        for index, (item_node, item) in enumerate(zip(sources_node.value, items, strict=True)):
            if not isinstance(item_node, yaml.MappingNode) or not isinstance(item, dict):
                self.problem(
                    item_node.start_mark.line + 1,
                    f"expected a mapping (name: ..., kind: ...), got {_yaml_type(item)}",
                    source=f"sources[{index}]",
                )
                continue
            entries.append((item_node, item))
        return entries

    def _duplicate_keys(self, node: yaml.MappingNode, *, source: str) -> None:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                self.problem(
                    line,
                    f"duplicate key; first given at line {seen[key]}",
                    source=source,
                    key=str(key),
                )
            else:
                seen[key] = line

    def _entry(
        self, index: int, node: yaml.MappingNode, entry: dict[Any, Any]
    ) -> SourceConfig | None:
        name = entry.get("name")
        label = f"source {name!r}" if isinstance(name, str) and name else f"sources[{index}]"
        entry_line = node.start_mark.line + 1
        lines = _key_lines(node)
        self._duplicate_keys(node, source=label)
        before = len(self.problems)

        def where(loc: Sequence[str | int]) -> int:
            for end in range(len(loc), 0, -1):
                found = lines.get(tuple(loc[:end]))
                if found is not None:
                    return found
            return entry_line

        model = _model_for(entry.get("kind"))
        secret_keys = _secret_fields(model) if model is not None else frozenset()
        expanded: dict[Any, Any] = {}
        unresolved: set[str] = set()
        for key, value in entry.items():
            messages: list[tuple[tuple[str | int, ...], str]] = []
            expanded[key] = self._expand(value, (str(key),), messages)
            for loc, message in messages:
                unresolved.add(str(key))
                self.problem(where(loc), message, source=label, key=_key_path(loc))

        try:
            source = _SOURCE_ADAPTER.validate_python(expanded)
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=True):
                loc, message = _describe(error, expanded.get("kind"), secret_keys)
                if loc and str(loc[0]) in unresolved:
                    continue  # already reported as a missing variable
                self.problem(where(loc), message, source=label, key=_key_path(loc))
            return None
        if len(self.problems) > before:
            return None
        return source

    def _expand(
        self,
        value: Any,
        loc: tuple[str | int, ...],
        messages: list[tuple[tuple[str | int, ...], str]],
    ) -> Any:
        if isinstance(value, str):
            return self._expand_string(value, loc, messages)
        if isinstance(value, list):
            return [self._expand(v, (*loc, i), messages) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self._expand(v, (*loc, str(k)), messages) for k, v in value.items()}
        return value

    def _expand_string(
        self,
        value: str,
        loc: tuple[str | int, ...],
        messages: list[tuple[tuple[str | int, ...], str]],
    ) -> str:
        def replace(match: re.Match[str]) -> str:
            variable = match.group(1)
            if not _VARIABLE_NAME.match(variable):
                messages.append(
                    (
                        loc,
                        f"'${{{variable}}}' is not a variable reference; use ${{NAME}} with "
                        "letters, digits and _",
                    )
                )
                return ""
            resolved = self.env.get(variable)
            if resolved is None:
                messages.append((loc, f"environment variable {variable} is not set"))
                return ""
            if resolved == "":
                messages.append((loc, f"environment variable {variable} is empty"))
            return resolved

        expanded = _VARIABLE.sub(replace, value)
        if "${" in _VARIABLE.sub("", value):
            messages.append((loc, "unterminated '${'; use ${NAME}"))
        return expanded

    def _check_unique(
        self,
        sources: list[tuple[int, SourceConfig]],
        entries: list[tuple[yaml.MappingNode, Any]],
    ) -> None:
        first: dict[str, int] = {}
        for node, entry in entries:
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                continue
            lines = _key_lines(node)
            line = lines.get(("name",), node.start_mark.line + 1)
            if name in first:
                self.problem(
                    line,
                    f"duplicate source name; first defined at line {first[name]}",
                    source=f"source {name!r}",
                    key="name",
                )
            else:
                first[name] = line


def _key_lines(node: yaml.MappingNode) -> dict[tuple[str | int, ...], int]:
    """Map key paths inside one entry to 1-based lines (keys, list items, nested keys)."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(value: yaml.Node, loc: tuple[str | int, ...]) -> None:
        if isinstance(value, yaml.MappingNode):
            for key_node, child in value.value:
                child_loc = (*loc, str(key_node.value))
                lines.setdefault(child_loc, key_node.start_mark.line + 1)
                walk(child, child_loc)
        elif isinstance(value, yaml.SequenceNode):
            for i, child in enumerate(value.value):
                lines.setdefault((*loc, i), child.start_mark.line + 1)
                walk(child, (*loc, i))

    walk(node, ())
    return lines


def _key_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _yaml_type(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


def _describe(
    error: ErrorDetails, kind: object, secret_keys: frozenset[str]
) -> tuple[tuple[str | int, ...], str]:
    """Turn one pydantic error into (key path, message) without echoing secret inputs."""
    loc = tuple(error["loc"])
    if loc and loc[0] == kind:  # the discriminated union prefixes the tag
        loc = loc[1:]
    kind_name = error["type"]
    ctx = error.get("ctx", {})
    known = ", ".join(source_kinds())
    secret = bool(loc) and str(loc[0]) in secret_keys
    value = error.get("input")
    got = "" if secret else f" (got {_show(value)})"

    if kind_name == "union_tag_invalid":
        return ("kind",), f"unknown source kind {ctx.get('tag')!r}; known kinds: {known}"
    if kind_name == "union_tag_not_found":
        return ("kind",), f"required key is missing; known kinds: {known}"
    if kind_name == "missing":
        return loc, "required key is missing"
    if kind_name == "extra_forbidden":
        model = _model_for(kind)
        allowed = ", ".join(sorted(model.model_fields)) if model else ""
        return loc, f"unknown key; allowed keys: {allowed}"
    if kind_name == "value_error":
        return loc, str(ctx.get("error", error["msg"]))
    if kind_name == "string_pattern_mismatch" and loc == ("name",):
        return loc, (
            f"must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit{got}"
        )
    if kind_name in ("string_type", "string_sub_type"):
        hint = "; quote the value in YAML" if secret else ""
        return loc, f"expected a string, got {_yaml_type(value)}{hint}"
    if kind_name in ("string_too_short", "too_short"):
        return loc, "must not be empty"
    if kind_name in ("uuid_parsing", "uuid_type"):
        return loc, f"expected a measuring point UUID{got}"
    if kind_name in ("tuple_type", "list_type"):
        return loc, f"expected a list, got {_yaml_type(value)}"
    if kind_name == "greater_than":
        return loc, f"must be greater than {ctx.get('gt')}{got}"
    if kind_name == "greater_than_equal":
        return loc, f"must be at least {ctx.get('ge')}{got}"
    if kind_name == "literal_error":
        return loc, f"{error['msg']}{got}"
    return loc, f"{error['msg']}{got}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
