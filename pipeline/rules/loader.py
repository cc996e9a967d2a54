"""Load rule files: strict YAML in, validated rules out, or every problem at once.

:func:`load_rules` reads files and folders, and reports every problem of every file in one
:class:`~pipeline.errors.RuleError`, one line each::

    rules/ev.yaml:12: rules[0].for: '5 minutes' is not a duration; use forms like 30s, 5m, 1h, ...

How it works:

1. YAML is composed (not constructed) with PyYAML's safe loader into nodes that know their
   line. Aliases are refused as they are met (no alias bombs: nothing is ever expanded), and
   so are merge keys (``<<``), non-standard tags and complex keys.
2. The nodes are turned into plain data by hand, which finds duplicate keys (PyYAML keeps
   the last one silently) and records the line of every key and list item by data path.
   Keys are taken as written (``on:`` stays ``"on"``), scalar values are resolved as YAML 1.1
   does (``yes`` is a boolean; quote it if you mean text).
3. Each rule is validated by the pydantic models of :mod:`pipeline.rules.schema`; each error's
   ``loc`` is walked through the models (to drop union tags and find allowed keys) and through
   the recorded lines, then reworded as ``what is wrong; what is expected``, quoting the
   value exactly as written in YAML.
4. A second pass checks what single rules cannot: names unique across all files, channels
   known.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, Discriminator, Tag, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import RuleError, RuleProblem
from pipeline.rules.duration import DURATION_FORMS
from pipeline.rules.schema import Hint, Rule
from producers.strict_yaml import StrictLoader, StrictYAMLError, read_limited

__all__ = ["BUILTIN_CHANNELS", "MAX_FILE_BYTES", "MAX_NESTING", "load_rules"]

logger = logging.getLogger(__name__)

BUILTIN_CHANNELS: frozenset[str] = frozenset({"console"})
"""Channels that exist without configuration."""
MAX_FILE_BYTES = 1_000_000
"""Largest rule file accepted."""
MAX_NESTING = 32
"""Deepest YAML nesting accepted."""
MAX_ALIAS_REPORTS = 5
"""Aliases reported one by one per file; the rest are summed up in one line."""

_RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)
_QUOTE_MAX = 60
_SHAPE = "a list of rules or a mapping with a 'rules' key"

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")}

DataPath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where a data path was written: the line of its key (or list item) and its value node."""

    line: int
    node: Node


class _NoAliasLoader(StrictLoader):
    """The shared strict loader (:mod:`producers.strict_yaml`): anchors and aliases are refused
    at the first event, ambiguous YAML 1.1 scalars refused, nodes and depth bounded while
    composing. ``placeholders`` stays empty (it held aliases when they were collected)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream, max_depth=MAX_NESTING, collect_ambiguous=True)
        self.placeholders: dict[int, tuple[str, int]] = {}


class _FileReader:
    """Turns one file's text into plain data, collecting problems and key lines."""

    def __init__(self, display: str, problems: list[RuleProblem]) -> None:
        self.display = display
        self.problems = problems
        self.index: dict[DataPath, _Where] = {}
        self.suppressed: list[DataPath] = []
        self.placeholders: dict[int, tuple[str, int]] = {}
        self.aliases = 0
        self.incomplete: set[DataPath] = set()  # mappings that lost keys (merge/alias keys)
        self.refused_in: set[DataPath] = set()  # mappings with a refused value (alias, tag...)
        self._constructor = yaml.SafeLoader("")

    def problem(self, line: int, path: DataPath, message: str) -> None:
        self.problems.append(RuleProblem(self.display, line, format_path(path), message))

    def compose(self, text: str) -> Node | None:
        """Compose YAML text into a node tree; None (with problems recorded) if unusable."""
        loader: _NoAliasLoader | None = None
        try:
            # The reader checks for non-printable characters in the constructor already.
            loader = _NoAliasLoader(text)
            root: Node | None = loader.get_single_node()
        except StrictYAMLError as exc:
            self.problem(exc.line or 1, (), exc.message)
            return None
        except yaml.MarkedYAMLError as exc:
            self._syntax_problem(exc)
            return None
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            self.problem(line, (), f"invalid character {exc.character!r}; use printable text")
            return None
        except yaml.YAMLError as exc:
            self.problem(1, (), f"invalid YAML: {type(exc).__name__}")
            return None
        except RecursionError:
            self.problem(1, (), f"YAML nests too deep; use at most {MAX_NESTING} levels")
            return None
        finally:
            if loader is not None:
                for ambiguous in loader.ambiguous:  # reported with every other problem
                    self.problem(ambiguous.line, (), ambiguous.message)
                loader.dispose()
        self.placeholders = loader.placeholders
        return root

    def _syntax_problem(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = (exc.problem or "invalid syntax").rstrip(".")
        context = exc.context or ""
        if problem.startswith("but ") and context:
            detail = f"{context}, {problem}"  # "expected a single document..., but found..."
        else:
            detail = problem
            if context:
                if exc.context_mark is not None and exc.context_mark.line + 1 != line:
                    context += f" started at line {exc.context_mark.line + 1}"
                detail += f" ({context})"
        if "<block" in problem or "mapping values are not allowed" in problem:
            detail += "; check the indentation"
        self.problem(line, (), f"invalid YAML: {detail}")

    def build(self, node: Node, path: DataPath, line: int) -> tuple[bool, Any]:
        """Plain data of ``node``; ``(False, None)`` if the node was refused (and reported)."""
        self.index[path] = _Where(line, node)
        if len(path) > MAX_NESTING:
            self._refuse(path, line, f"nesting deeper than {MAX_NESTING} levels is not allowed")
            return False, None
        alias = self.placeholders.get(id(node))
        if alias is not None:
            self._refuse_alias(path, *alias)
            return False, None
        if isinstance(node, MappingNode):
            return self._build_mapping(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != f"{_TAG}seq":
                self._refuse(path, line, _tag_message(node.tag))
                return False, None
            items = []
            for i, item in enumerate(node.value):
                ok, value = self.build(item, (*path, i), item.start_mark.line + 1)
                items.append(value if ok else None)
            return True, items
        if not isinstance(node, ScalarNode) or node.tag not in _SCALAR_TAGS:
            self._refuse(path, line, _tag_message(node.tag))
            return False, None
        if node.tag in (f"{_TAG}str", f"{_TAG}timestamp"):
            return True, node.value
        try:
            return True, self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError):
            return True, node.value

    def _build_mapping(self, node: MappingNode, path: DataPath) -> tuple[bool, Any]:
        if node.tag != f"{_TAG}map":
            self._refuse(path, node.start_mark.line + 1, _tag_message(node.tag))
            return False, None
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if id(key_node) in self.placeholders:
                self.incomplete.add(path)
                self._refuse_alias((*path, "<<"), *self.placeholders[id(key_node)])
                continue
            if key_node.tag == f"{_TAG}merge":
                self.incomplete.add(path)
                self.problem(
                    key_line, path, "YAML merge key '<<' is not allowed; write the keys out in full"
                )
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                self.problem(key_line, path, "mapping keys must be plain names")
                continue
            key = key_node.value
            if key in first_line:
                self.problem(
                    key_line,
                    (*path, key),
                    f"duplicate key (first set at line {first_line[key]}); write each key once",
                )
                continue
            first_line[key] = key_line
            ok, value = self.build(value_node, (*path, key), key_line)
            if ok:
                result[key] = value
            else:
                self.refused_in.add(path)
        return True, result

    def _refuse_alias(self, path: DataPath, anchor: str, line: int) -> None:
        self.suppressed.append(path)
        self.aliases += 1
        if self.aliases <= MAX_ALIAS_REPORTS:
            self.problem(
                line,
                path,
                f"YAML alias '*{anchor}' is not allowed; write the value out in full "
                "(anchors and aliases are refused)",
            )
        elif self.aliases == MAX_ALIAS_REPORTS + 1:
            self.problem(line, path, "more YAML aliases follow; none is allowed")

    def _refuse(self, path: DataPath, line: int, message: str) -> None:
        self.problem(line, path, message)
        self.suppressed.append(path)

    def is_suppressed(self, path: DataPath) -> bool:
        """Whether ``path`` is at or below a refused node (its errors would be noise)."""
        return any(path[: len(s)] == s for s in self.suppressed)

    def where(self, path: DataPath) -> _Where:
        """The recorded location of ``path`` or of its nearest recorded ancestor."""
        for end in range(len(path), -1, -1):
            found = self.index.get(path[:end])
            if found is not None:
                return found
        raise LookupError(path)  # the root is always recorded


def _tag_message(tag: str) -> str:
    shown = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
    return f"YAML tag {shown!r} is not allowed; remove it"


def format_path(path: DataPath) -> str:
    """``('rules', 0, 'condition', 'op')`` -> ``rules[0].condition.op``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- mapping pydantic errors to user words ---------------------------------------------------


@dataclasses.dataclass
class _Resolved:
    """What the schema says about an error location."""

    path: DataPath  # loc without union tags
    leaf: Any = None  # annotation at the location (None when unknown)
    parent: type[BaseModel] | None = None  # model holding the last key
    union_tags: tuple[str, ...] = ()  # tags of a discriminated union at the location
    discriminator: str | None = None


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` layers and ``None`` from an annotation; return it and the metadata."""
    metadata: list[Any] = []
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            metadata.extend(tp.__metadata__)
            tp = tp.__origin__
            continue
        if typing.get_origin(tp) in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp, metadata


def _discriminator(metadata: Sequence[Any], field: FieldInfo | None) -> str | None:
    if field is not None and isinstance(field.discriminator, str):
        return field.discriminator
    for item in metadata:
        if isinstance(item, FieldInfo) and isinstance(item.discriminator, str):
            return item.discriminator
    return None


def _tagged_member(metadata: Sequence[Any], base: Any, tag: str | int) -> Any:
    """The member of a callable-discriminated union (``Discriminator(func)``) tagged ``tag``."""
    if not any(isinstance(item, Discriminator) for item in metadata):
        return None
    if typing.get_origin(base) not in (Union, types.UnionType):
        return None
    for member in typing.get_args(base):
        if typing.get_origin(member) is typing.Annotated and any(
            isinstance(m, Tag) and m.tag == tag for m in member.__metadata__
        ):
            return member
    return None


def _members(tp: Any) -> list[type[BaseModel]]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if isinstance(a, type)]
    return [tp] if isinstance(tp, type) else []


def _tags(member: type[BaseModel], discriminator: str) -> tuple[str, ...]:
    field = member.model_fields.get(discriminator)
    if field is None or typing.get_origin(field.annotation) is not Literal:
        return ()
    return tuple(str(a) for a in typing.get_args(field.annotation))


def _resolve(root: Any, loc: Sequence[str | int]) -> _Resolved:
    """Follow a pydantic error ``loc`` through the schema, starting at ``root``."""
    tp: Any = root
    field: FieldInfo | None = None
    parent: type[BaseModel] | None = None
    path: list[str | int] = []
    for element in loc:
        base, metadata = _unwrap(tp)
        tagged = _tagged_member(metadata, base, element)
        if tagged is not None:
            tp, field = tagged, None
            continue
        disc = _discriminator(metadata, field)
        if disc is not None:
            members = _members(base)
            chosen = next((m for m in members if str(element) in _tags(m, disc)), None)
            if chosen is not None:
                tp, field = chosen, None
                continue
        if isinstance(base, type) and issubclass(base, BaseModel):
            parent = base
            field = _field_by_key(base, str(element))
            tp = field.annotation if field is not None else None
            if field is not None and field.metadata:
                tp = typing.Annotated[(tp, *field.metadata)]
        elif typing.get_origin(base) in (list, tuple, dict):
            args = typing.get_args(base)
            tp, field = (args[-1] if args else None), None
        else:
            tp, field = None, None
        path.append(element)
    base, metadata = _unwrap(tp)
    disc = _discriminator(metadata, field)
    tags: tuple[str, ...] = ()
    if disc is not None:
        tags = tuple(t for m in _members(base) for t in _tags(m, disc))
    return _Resolved(tuple(path), tp, parent, tags, disc)


def _field_by_key(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, field in model.model_fields.items():
        if (field.alias or name) == key:
            return field
    return None


def _allowed_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return "(unknown)"
    return ", ".join(sorted(field.alias or name for name, field in model.model_fields.items()))


def _hint(resolved: _Resolved) -> str | None:
    _, metadata = _unwrap(resolved.leaf)
    for item in metadata:
        if isinstance(item, Hint):
            return item.text
    return None


def _literal_options(annotation: Any) -> tuple[str, ...]:
    base, _ = _unwrap(annotation)
    if typing.get_origin(base) is Literal:
        return tuple(str(a) for a in typing.get_args(base))
    return ()


_NOUNS = {
    "type": "a rule type",
    "op": "an operator",
    "severity": "a severity",
    "kind": "a window kind",
    "aggregate": "an aggregate",
}


def _noun(key: str | int | None) -> str:
    return _NOUNS.get(str(key), f"a valid {key}") if key is not None else "valid"


def _quote(text: str) -> str:
    """Quote a value for a one-line message: control characters are escaped, long text cut."""
    if len(text) > _QUOTE_MAX:
        text = text[: _QUOTE_MAX - 3] + "..."
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return "'" + escaped + "'"


def _describe(node: Node | None, value: Any) -> str:
    """The offending value as the user wrote it: ``'5 minutes'``, ``40``, ``a mapping``."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        if node.tag == f"{_TAG}null":
            return "an empty value"
        if node.tag == f"{_TAG}str":
            return _quote(node.value)
        return node.value if len(node.value) <= _QUOTE_MAX else _quote(node.value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _quote(str(value))


def _items(count: Any) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _required_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    names = [f.alias or n for n, f in model.model_fields.items() if f.is_required()]
    return ", ".join(names)


def _reword(error: Any, resolved: _Resolved, reader: _FileReader) -> tuple[DataPath, int, str]:
    """``(key path, line, message)`` of one pydantic error, in the user's words."""
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    path = resolved.path
    key = path[-1] if path else None
    at = reader.index.get(path)
    node = at.node if at is not None else None
    what = _describe(node, error.get("input"))
    hint = _hint(resolved)

    def line_of(p: DataPath) -> int:
        return reader.where(p).line

    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = resolved.discriminator or str(ctx.get("discriminator", "")).strip("'")
        options = ", ".join(resolved.union_tags)
        disc_path = (*path, disc)
        if kind == "union_tag_not_found" and (node is None or isinstance(node, MappingNode)):
            return disc_path, line_of(path), f"required key is missing; use one of {options}"
        if kind == "union_tag_invalid":
            disc_at = reader.index.get(disc_path)
            shown = _describe(disc_at.node if disc_at else None, ctx.get("tag"))
            return (
                disc_path,
                line_of(disc_path),
                f"{shown} is not {_noun(disc)}; use one of {options}",
            )
        kind = "model_attributes_type"  # not a mapping at all: fall through

    messages: dict[str, str] = {
        "missing": "required key is missing",
        "extra_forbidden": f"unknown key; allowed keys are {_allowed_keys(resolved.parent)}",
        "string_type": f"{what} is not a string"
        + ("; put it in quotes" if isinstance(node, ScalarNode) else "; write text"),
        "float_type": f"{what} is not a number; write a number such as 40 or 12.5",
        "int_type": f"{what} is not a whole number; write a number such as 40",
        "finite_number": f"{what} is not a finite number; write a number such as 40 or 12.5",
        "duration": f"{what} is not a duration; use forms like {DURATION_FORMS}",
        "duration_too_long": f"{what} is longer than {ctx.get('days')} days; "
        "use a shorter duration",
        "string_too_short": "must not be empty; write at least one character",
        "string_too_long": f"is longer than {ctx.get('max_length')} characters; shorten it",
        "too_short": f"must have at least {_items(ctx.get('min_length'))}",
        "too_long": f"must have at most {_items(ctx.get('max_length'))}",
        "range_order": f"low ({ctx.get('low', 0):g}) must be less than high "
        f"({ctx.get('high', 0):g}); swap them or fix the bounds",
        "template_syntax": f"template syntax error: {str(ctx.get('problem', '')).rstrip('.')} "
        f"(template line {ctx.get('lineno')}); fix the Jinja2 syntax",
        "template_budget": f"template refused when rendered on sample data: "
        f"{str(ctx.get('problem', '')).rstrip('.')}; make it smaller or simpler",
    }
    if kind in ("list_type", "tuple_type"):
        example = f"[{node.value}]" if isinstance(node, ScalarNode) and node.value else "[a, b]"
        message = f"{what} is not a list; write a list such as {example}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        model = _unwrap(resolved.leaf)[0]
        required = _required_keys(model if isinstance(model, type) else None)
        expected = hint or (
            f"write a mapping with at least the keys {required}" if required else "write a mapping"
        )
        message = f"{what} is not a mapping; {expected}"
    elif kind == "literal_error":
        options = ", ".join(_literal_options(resolved.leaf)) or str(ctx.get("expected"))
        message = f"{what} is not {_noun(key)}; use one of {options}"
        if hint:
            message += f", or {hint}"
    elif kind.startswith("sw.value."):
        message = f"{what} {error['msg']}"
    elif kind.startswith("sw.key."):
        message = str(error["msg"])
    elif kind == "string_pattern_mismatch":
        expected = hint or f"it must match {ctx.get('pattern')}"
        message = f"{what} is not {_noun(key)}; {expected}"
    elif kind in messages:
        message = messages[kind]
    else:
        message = f"{what} is invalid: {str(error.get('msg', kind)).rstrip('.')}"
    if kind == "missing" and path:
        return path, line_of(path[:-1]), message
    return path, line_of(path), message


def _validate_rule(reader: _FileReader, data: Any, path: DataPath) -> Rule | None:
    """Validate one rule, reporting each error; the rule, or None if it had problems."""
    try:
        return _RULE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        reported = False
        for error in exc.errors(include_url=False):
            resolved = _resolve(Rule, error["loc"])
            resolved.path = (*path, *resolved.path)
            at = (error.get("ctx") or {}).get("at")
            if isinstance(at, str):  # a model-level check about one of its keys
                if resolved.path in reader.refused_in:
                    continue  # it judged a mapping without the value that was refused
                resolved = _resolve(Rule, (*error["loc"], at))
                resolved.path = (*path, *resolved.path)
            if reader.is_suppressed(resolved.path):
                continue
            if error["type"] == "missing" and resolved.path[:-1] in reader.incomplete:
                continue
            if error["type"] == "union_tag_not_found" and resolved.path in reader.incomplete:
                continue
            key_path, line, message = _reword(error, resolved, reader)
            reader.problem(line, key_path, message)
            reported = True
        if not reported and not reader.suppressed:
            reader.problem(reader.where(path).line, path, "invalid rule")
        return None


# --- files ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """A rule read from a file; ``rule`` is None when it failed validation, but its name and
    channels (when readable) are still cross-checked so every problem shows in one run."""

    rule: Rule | None
    name: str | None
    channels: tuple[str, ...]
    file: str
    path: DataPath
    index: dict[DataPath, _Where]


def _partial(item: Any, display: str, path: DataPath, index: dict[DataPath, _Where]) -> _Loaded:
    """What can be cross-checked of an invalid rule: a text name and text channel names."""
    name = item.get("name") if isinstance(item, dict) else None
    channels = item.get("channels") if isinstance(item, dict) else None
    return _Loaded(
        None,
        name if isinstance(name, str) and (*path, "name") in index else None,
        tuple(channels)
        if isinstance(channels, list) and all(isinstance(c, str) for c in channels)
        else (),
        display,
        path,
        index,
    )


def _files(paths: Sequence[Path]) -> Iterator[tuple[str, Path | None, str]]:
    """``(display path, file, problem)``: a file to read, or ``None`` and what is wrong."""
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            if not found:
                yield str(path), None, "folder holds no *.yaml or *.yml rule files"
            for file in found:
                yield str(file), file, ""
        elif path.is_file():
            yield str(path), path, ""
        else:
            yield str(path), None, "no such file or folder"


def _read(display: str, file: Path, problems: list[RuleProblem]) -> str | None:
    try:
        raw = read_limited(file, MAX_FILE_BYTES)  # never reads more than the limit
    except OSError as exc:
        problems.append(RuleProblem(display, 0, "", f"cannot read: {exc.strerror or exc}"))
        return None
    except StrictYAMLError:
        problems.append(
            RuleProblem(display, 0, "", f"file is larger than {MAX_FILE_BYTES} bytes; split it")
        )
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problems.append(RuleProblem(display, line, "", "not UTF-8 text; save the file as UTF-8"))
        return None


def _load_file(display: str, text: str, problems: list[RuleProblem]) -> list[_Loaded]:
    reader = _FileReader(display, problems)
    before = len(problems)
    root = reader.compose(text)
    if root is None:
        if len(problems) == before:  # no syntax problem: there was no document at all
            reader.problem(1, (), f"file is empty; expected {_SHAPE}")
        return []
    if isinstance(root, ScalarNode) and root.tag == f"{_TAG}null" and not root.value:
        reader.problem(root.start_mark.line + 1, (), f"file is empty; expected {_SHAPE}")
        return []
    root_line = root.start_mark.line + 1
    if isinstance(root, SequenceNode):
        # A bare list reads as {rules: [...]}, so key paths look the same in both forms.
        reader.index[()] = _Where(root_line, root)
        ok, rules = reader.build(root, ("rules",), root_line)
        if not ok:
            return []
    elif isinstance(root, MappingNode):
        ok, data = reader.build(root, (), root_line)
        if not ok:
            return []
        for extra in (k for k in data if k != "rules"):
            reader.problem(
                reader.where((extra,)).line, (extra,), "unknown key; allowed keys are rules"
            )
        if "rules" not in data:
            if not reader.is_suppressed(("rules",)):
                reader.problem(
                    root_line,
                    ("rules",),
                    "required key is missing; write rules: followed by a list of rules",
                )
            return []
        rules = data["rules"]
        if not isinstance(rules, list):
            what = _describe(reader.index[("rules",)].node, rules)
            reader.problem(
                reader.where(("rules",)).line,
                ("rules",),
                f"{what} is not a list; write a list of rules",
            )
            return []
    else:
        ok, data = reader.build(root, (), root_line)
        if ok:
            reader.problem(root_line, (), f"expected {_SHAPE}, got {_describe(root, data)}")
        return []

    loaded = []
    for i, item in enumerate(rules):
        path: DataPath = ("rules", i)
        if reader.is_suppressed(path):
            continue
        rule = _validate_rule(reader, item, path)
        if rule is not None:
            loaded.append(
                _Loaded(rule, rule.name, tuple(rule.channels), display, path, reader.index)
            )
        else:
            loaded.append(_partial(item, display, path, reader.index))
    return loaded


def _cross_check(
    loaded: list[_Loaded], known_channels: Collection[str] | None, problems: list[RuleProblem]
) -> None:
    first: dict[str, _Loaded] = {}
    known = None if known_channels is None else BUILTIN_CHANNELS | set(known_channels)
    for item in loaded:
        name_path = (*item.path, "name")
        seen = first.get(item.name) if item.name is not None else None
        if item.name is None:
            pass
        elif seen is None:
            first[item.name] = item
        else:
            line = item.index[name_path].line
            seen_line = seen.index[(*seen.path, "name")].line
            problems.append(
                RuleProblem(
                    item.file,
                    line,
                    format_path(name_path),
                    f"{_quote(item.name)} is already defined at {seen.file}:{seen_line}; "
                    "rule names must be unique",
                )
            )
        if known is None:
            continue
        for j, channel in enumerate(item.channels):
            if channel in known:
                continue
            channel_path = (*item.path, "channels", j)
            at = item.index.get(channel_path) or item.index.get(name_path) or item.index[item.path]
            problems.append(
                RuleProblem(
                    item.file,
                    at.line,
                    format_path(channel_path),
                    f"unknown channel {_quote(channel)}; known channels are "
                    + ", ".join(sorted(known)),
                )
            )


def load_rules(
    paths: Sequence[Path],
    *,
    known_channels: Collection[str] | None = None,
    warnings: list[RuleProblem] | None = None,
) -> list[Rule]:
    """Load and validate rules from files and folders.

    Args:
        paths: rule files, or folders whose ``*.yaml`` / ``*.yml`` files (not subfolders) are
            read in name order.
        known_channels: configured channel names; ``console`` always exists. ``None`` skips
            the channel check (for validating rule files without a channel configuration).
        warnings: when given, receives a warning per rule part that no record can match
            (:mod:`pipeline.rules.catalogue`), for valid files.

    Returns:
        Every rule, in file then position order.

    Raises:
        RuleError: anything is wrong; it lists every problem of every file, ordered by file
            and line.
    """
    problems: list[RuleProblem] = []
    loaded: list[_Loaded] = []
    order: dict[str, int] = {}
    for display, file, trouble in _files(paths):
        if display in order:
            continue  # the same file named twice (e.g. a file and its folder)
        order[display] = len(order)
        if file is None:
            problems.append(RuleProblem(display, 0, "", trouble))
            continue
        text = _read(display, file, problems)
        if text is not None:
            loaded.extend(_load_file(display, text, problems))
    _cross_check(loaded, known_channels, problems)
    if problems:
        problems.sort(key=lambda p: (order.get(p.path, len(order)), p.line))
        raise RuleError(problems)
    if warnings is not None:
        from pipeline.rules.catalogue import catalogue_warnings

        found = [(i.rule, i.file, i.path, i.index) for i in loaded if i.rule is not None]
        warnings.extend(catalogue_warnings(found))
    logger.info("rules loaded count=%d files=%d", len(loaded), len(order))
    return [item.rule for item in loaded if item.rule is not None]
