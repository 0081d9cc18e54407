"""Strict YAML -> frozen-dataclass builder with precise, friendly errors.

`load(cls, path)` / `build(cls, text)` build a dataclass tree from YAML, driven by its type hints,
and raise one `ConfigError` listing every problem -- unknown keys (with a "did you mean"), wrong
types, Literal violations, missing or duplicate keys, `__post_init__` ValueErrors -- each at
file:line:column with its dotted field path.  We walk PyYAML's node tree (`yaml.compose`) rather
than loaded objects because only nodes keep positions and reveal duplicate keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["ChosenBy", "ConfigError", "FieldError", "Name", "Problem", "SettingsByName", "SharedSettings", "Tagged", "build", "load", "suggest"]

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file; line/column are 1-based (0: no position)."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class FieldError(ValueError):
    """A ``__post_init__`` check that knows where it belongs: ``path`` is a dotted path from the
    record that raises it (``tasks[0].datasets[1]``), and the problem is reported at that node's line
    instead of the record's."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path

    def within(self, prefix: str) -> FieldError:
        """The same error, seen from the record that holds this one under ``prefix``."""
        path = prefix + self.path if self.path.startswith("[") else _join(prefix, self.path) if self.path else prefix
        return FieldError(path, str(self))


class ConfigError(Exception):
    """All problems found in one config file; str() is the full multi-line report."""

    def __init__(self, path: str, problems: typing.Iterable[Problem]) -> None:
        self.path = path
        self.problems: tuple[Problem, ...] = tuple(sorted(problems, key=lambda p: (p.line, p.column)))
        n = len(self.problems)
        header = f"invalid config {path} ({n} problem{'s' if n != 1 else ''}):"
        super().__init__("\n".join([header, *(f"  {p}" for p in self.problems)]))


# Returned by conversions that failed (and already recorded why); None is a valid value.
_INVALID: Any = object()
_NONE_TYPE = type(None)
_MERGE, _NULL, _STR = (f"tag:yaml.org,2002:{t}" for t in ("merge", "null", "str"))
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SCALAR_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true/false)"}


def suggest(name: str, options: list[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``options``, or the list of them."""
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else f" (defined: {', '.join(options) or 'none'})"


def _describe(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"boolean {str(value).lower()}"
    return f"{'string' if isinstance(value, str) else type(value).__name__} {value!r}"


def _node_kind(node: Node) -> str:
    return {MappingNode: "a mapping", SequenceNode: "a list"}.get(type(node), "a scalar")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Builder:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        # Only used to turn scalar nodes into Python values with YAML 1.1 tag semantics.
        self._loader = yaml.SafeLoader("")

    def fail(self, node: Node, field: str, message: str) -> Any:
        mark = node.start_mark
        self.problems.append(Problem(self.filename, mark.line + 1, mark.column + 1, field, message))
        return _INVALID

    def scalar(self, node: Node, field: str) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:  # e.g. an unknown '!tag'
            return self.fail(node, field, f"cannot read value: {getattr(exc, 'problem', exc)}")

    def convert(self, tp: Any, node: Node, field: str) -> Any:
        marker = _marker(tp)
        if marker is not None:
            return marker.convert(self, node, field)
        if typing.get_origin(tp) is typing.Annotated:
            tp = tp.__origin__
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return self.plain(node, field)
        if origin in (Union, types.UnionType):
            return self.union(args, node, field)
        if origin is Literal:
            return self.literal(args, node, field)
        if dataclasses.is_dataclass(tp):
            return self.record(tp, node, field)
        if tp is tuple or origin is tuple:
            return self.sequence(args or (Any, ...), node, field)
        if tp is dict or origin is dict:
            key_tp, val_tp = args or (str, Any)
            if not isinstance(node, MappingNode):
                return self.fail(node, field, f"expected a mapping; got {_node_kind(node)}")
            before = len(self.problems)
            out = {self.convert(key_tp, k, field): self.convert(val_tp, v, _join(field, str(k.value)))
                   for k, v in self.pairs(node, field)}
            return _INVALID if len(self.problems) > before else out
        if tp in _SCALAR_NAMES:
            return self.builtin(tp, node, field)
        raise TypeError(f"grid.schema: unsupported field type {tp!r} at {field or '<root>'}")

    def builtin(self, tp: type, node: Node, field: str) -> Any:
        expected = _SCALAR_NAMES[tp]
        if not isinstance(node, ScalarNode):
            return self.fail(node, field, f"expected {expected}; got {_node_kind(node)}")
        value = self.scalar(node, field)
        if value is _INVALID or type(value) is tp:
            return value
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if tp is float and node.style is None and isinstance(value, str) and _EXPONENT.fullmatch(value):
            # YAML 1.1 resolves unquoted 1e-4 to text (it wants 1.0e-4); nobody writing lr: 1e-4 means text.
            return float(value)
        hint = ""
        if tp is str and value is not None:
            hint = f"; quote it (\"{node.value}\") to use it as text"
        elif tp is int and isinstance(value, float):
            hint = "; write a whole number without a decimal point"
        return self.fail(node, field, f"expected {expected}; got {_describe(value)}{hint}")

    def literal(self, allowed: tuple[Any, ...], node: Node, field: str) -> Any:
        choices = ", ".join(repr(a) for a in allowed)
        if not isinstance(node, ScalarNode):
            return self.fail(node, field, f"expected one of {choices}; got {_node_kind(node)}")
        value = self.scalar(node, field)
        # type() check because True == 1 and 1 == 1.0 would otherwise slip through.
        if value is _INVALID or any(value == a and type(value) is type(a) for a in allowed):
            return value
        message = f"expected one of {choices}; got {value!r}"
        texts = [a for a in allowed if isinstance(a, str)]
        if node.value in texts:
            message += f"; quote it (\"{node.value}\") to use it as text"
        elif close := difflib.get_close_matches(str(value), texts, n=1):
            message += f"; did you mean {close[0]!r}?"
        return self.fail(node, field, message)

    def union(self, args: tuple[Any, ...], node: Node, field: str) -> Any:
        options = [a for a in args if a is not _NONE_TYPE]
        if _NONE_TYPE in args and isinstance(node, ScalarNode) and node.tag == _NULL:
            return None
        if len(options) == 1:
            return self.convert(options[0], node, field)
        trials: list[tuple[Any, _Builder]] = []
        for option in options:  # first alternative that converts cleanly wins
            trial = _Builder(self.filename)
            value = trial.convert(option, node, field)
            if not trial.problems:
                return value
            trials.append((option, trial))
        # When only one alternative takes this kind of node (a mapping: the one record among
        # ``str | Pulled``), its own problems say what is wrong inside it, better than a list of types.
        fitting = [trial for option, trial in trials if _takes(option, node)]
        if len(fitting) == 1:
            self.problems.extend(fitting[0].problems)
            return _INVALID
        names = " or ".join("null" if a is _NONE_TYPE else getattr(a, "__name__", str(a)) for a in args)
        got = f"{node.value!r}" if isinstance(node, ScalarNode) else _node_kind(node)
        return self.fail(node, field, f"expected {names}; got {got}")

    def sequence(self, args: tuple[Any, ...], node: Node, field: str) -> Any:
        if not isinstance(node, SequenceNode):
            got = _describe(self.scalar(node, field)) if isinstance(node, ScalarNode) else _node_kind(node)
            return self.fail(node, field, f"expected a list; got {got}; write one item as [item]")
        items = node.value
        if len(args) == 2 and args[1] is Ellipsis:
            types_ = [args[0]] * len(items)
        else:
            types_ = list(args)
            if len(items) != len(types_):
                return self.fail(node, field, f"expected exactly {len(types_)} items; got {len(items)}")
        out = tuple(self.convert(t, n, f"{field}[{i}]") for i, (t, n) in enumerate(zip(types_, items)))
        return _INVALID if any(v is _INVALID for v in out) else out

    def pairs(self, node: MappingNode, field: str) -> list[tuple[Node, Node]]:
        """Key/value node pairs with duplicates reported and '<<' merge keys expanded."""
        seen: dict[Any, Node] = {}
        own: list[tuple[Node, Node]] = []
        for key_node, val_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = key_node.value if isinstance(key_node, ScalarNode) else id(key_node)
            if key in seen:
                line = seen[key].start_mark.line + 1
                self.fail(key_node, _join(field, str(key)),
                          f"duplicate key {key!r} (first given on line {line}); remove one of them")
                continue
            seen[key] = key_node
            own.append((key_node, val_node))
        if len(own) == len(node.value):
            return own
        # Merged keys come first so that explicitly written keys override them.
        merged = MappingNode(node.tag, [p for p in node.value if p[0].tag == _MERGE])
        try:
            self._loader.flatten_mapping(merged)
        except yaml.YAMLError as exc:
            self.fail(node, field, f"cannot merge: {getattr(exc, 'problem', exc)}")
            return own
        inherited = [p for p in merged.value if p[0].value not in seen]
        return list({k.value: (k, v) for k, v in inherited}.values()) + own

    def plain(self, node: Node, field: str) -> Any:
        if isinstance(node, SequenceNode):
            out = tuple(self.plain(n, f"{field}[{i}]") for i, n in enumerate(node.value))
            return _INVALID if any(v is _INVALID for v in out) else out
        if isinstance(node, MappingNode):
            before = len(self.problems)
            result: dict[Any, Any] = {}
            for k, v in self.pairs(node, field):
                if not isinstance(k, ScalarNode):
                    self.fail(k, field, "keys must be plain values, not lists or mappings")
                    continue
                result[self.scalar(k, field)] = self.plain(v, _join(field, str(k.value)))
            return _INVALID if len(self.problems) > before else result
        return self.scalar(node, field)

    def record(self, cls: type, node: Node, field: str, *, tag: str | None = None,
               as_given: bool = False) -> Any:
        """Build ``cls`` from a mapping. ``tag``: a key that chose the class and is not a field.
        ``as_given``: check the values by building ``cls``, but return only the given ones (a dict),
        to be laid over defaults chosen later."""
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        if not isinstance(node, MappingNode):
            return self.fail(node, field, f"expected a mapping with keys {', '.join(fields)}; "
                             f"got {_node_kind(node)}")
        hints = field_types(cls)
        aliases: dict[str, str] = getattr(cls, "__key_aliases__", {})
        before = len(self.problems)
        values: dict[str, Any] = {}
        given: dict[str, str] = {}
        deferred: dict[str, Node] = {}  # fields whose type depends on their siblings' values
        suggested: set[str] = set()  # a typo'd key already explains why its field is missing
        for key_node, val_node in self.pairs(node, field):
            key = key_node.value
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.fail(key_node, field, f"keys must be text; got {key_node.value!r}")
                continue
            if key == tag:
                continue
            name = aliases.get(key, key.replace("-", "_"))
            if name not in fields:
                close = difflib.get_close_matches(name, list(fields), n=1)
                suggested.update(close)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.fail(key_node, _join(field, key),
                          f"unknown key {key!r}{hint} (valid keys: {', '.join(fields)})")
            elif name in given:
                self.fail(key_node, _join(field, key), f"key {key!r} sets the same field as {given[name]!r}; "
                          "keep only one")
            else:
                given[name] = key
                if isinstance(_marker(hints[name]), _SIBLING_MARKERS):
                    deferred[name] = val_node
                else:
                    values[name] = self.convert(hints[name], val_node, _join(field, name))
        if deferred:
            defaults = {n: f.default for n, f in fields.items() if f.default is not dataclasses.MISSING}
            siblings = {**defaults, **values}
            for name, val_node in deferred.items():
                values[name] = _marker(hints[name]).convert(self, val_node, _join(field, name), siblings)
        for name, f in fields.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and name not in values and name not in suggested:
                self.fail(node, field, f"missing required key {name!r}")
        if len(self.problems) > before:
            return _INVALID
        try:
            built = cls(**values)
        except FieldError as exc:  # a cross-reference check that names its field
            return self.fail(_locate(node, exc.path), _join(field, exc.path), str(exc))
        except ValueError as exc:  # cross-field checks from __post_init__
            return self.fail(node, field, str(exc))
        return values if as_given else built


def _takes(tp: Any, node: Node) -> bool:
    """Whether a type of a union is written as this kind of node (a record or dict as a mapping, a
    tuple as a list); used only to choose whose problems to report."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = tp.__origin__
    if dataclasses.is_dataclass(tp) or tp is dict or typing.get_origin(tp) is dict:
        return isinstance(node, MappingNode)
    if tp is tuple or typing.get_origin(tp) is tuple:
        return isinstance(node, SequenceNode)
    return False


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _locate(node: Node, path: str) -> Node:
    """The node at a dotted path below ``node`` (``tasks[0].datasets[1]``), or the deepest that exists."""
    for key, index in _STEP.findall(path):
        if key and isinstance(node, MappingNode):
            child = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key), None)
        elif index and isinstance(node, SequenceNode) and int(index) < len(node.value):
            child = node.value[int(index)]
        else:
            child = None
        if child is None:
            break
        node = child
    return node


def field_types(cls: type) -> dict[str, Any]:
    """The types of a dataclass's init fields, ``Annotated`` kept. Only those: a class variable may
    name a type that its module imports for type checkers alone (``typing.get_type_hints`` would
    evaluate it and fail)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = vars(module) if module else {}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if name in names:
                out[name] = eval(annotation, namespace, dict(vars(klass))) if isinstance(annotation, str) else annotation
    return out


def _marker(tp: Any) -> Any:
    """The schema marker of an ``Annotated[...]`` hint, if any."""
    if typing.get_origin(tp) is typing.Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, _MARKERS)), None)
    return None


class Names(typing.Protocol):
    """What the markers choose classes from: a :class:`ssl_st.registry.Registry`."""

    def __contains__(self, name: object) -> bool: ...
    def __getitem__(self, name: str) -> type: ...
    def unknown(self, name: object) -> str: ...


@dataclass(frozen=True)
class Name:
    """``Annotated[str, Name(REGISTRY)]``: text that must be a registered name."""

    registry: Names

    def convert(self, builder: _Builder, node: Node, field: str) -> Any:
        value = builder.builtin(str, node, field)
        if value is _INVALID or value in self.registry:
            return value
        return builder.fail(node, field, self.registry.unknown(value))


@dataclass(frozen=True)
class Tagged:
    """``Annotated[Base, Tagged("kind", REGISTRY, default=...)]``: the record's class is named by one
    of its own keys (``kind: spatial-clustering``), which is not a field of the class."""

    key: str
    registry: Names
    default: str | None = None

    def convert(self, builder: _Builder, node: Node, field: str) -> Any:
        if not isinstance(node, MappingNode):
            return builder.fail(node, field, f"expected a mapping; got {_node_kind(node)}")
        pairs = {k.value: (k, v) for k, v in builder.pairs(node, field) if isinstance(k, ScalarNode)}
        if self.key in pairs:
            value_node = pairs[self.key][1]
            name = builder.scalar(value_node, _join(field, self.key))
        elif self.default is not None:
            value_node, name = node, self.default
        else:
            return builder.fail(node, field, f"missing required key {self.key!r}")
        if name is _INVALID:
            return _INVALID
        if not isinstance(name, str) or name not in self.registry:
            return builder.fail(value_node, _join(field, self.key), self.registry.unknown(name))
        return builder.record(self.registry[name], node, field, tag=self.key)


@dataclass(frozen=True)
class ChosenBy:
    """``Annotated[Any, ChosenBy("method", REGISTRY)]``: a record whose class is the one that a
    sibling field names (a model's ``pretrain`` settings by its ``method``)."""

    sibling: str
    registry: Names

    def convert(self, builder: _Builder, node: Node, field: str, siblings: dict[str, Any]) -> Any:
        name = siblings.get(self.sibling, _INVALID)
        if name is _INVALID:  # the sibling is missing or wrong, and reported as such
            return _INVALID
        if name not in self.registry:
            return builder.fail(node, field, f"does not apply to {self.sibling} {name!r}; remove it")
        return builder.record(self.registry[name], node, field)


@dataclass(frozen=True)
class SettingsByName:
    """``Annotated[dict[str, dict[str, Any]], SettingsByName(REGISTRY)]``: settings per registered
    name (``per_method: {stagate: {epochs: 100}}``), each checked against the named class and kept
    as given, to be laid over that class's defaults."""

    registry: Names

    def convert(self, builder: _Builder, node: Node, field: str) -> Any:
        if not isinstance(node, MappingNode):
            return builder.fail(node, field, f"expected a mapping; got {_node_kind(node)}")
        before = len(builder.problems)
        out: dict[str, Any] = {}
        for key_node, val_node in builder.pairs(node, field):
            name = key_node.value
            if name not in self.registry:
                builder.fail(key_node, _join(field, str(name)), self.registry.unknown(name))
                continue
            out[name] = builder.record(self.registry[name], val_node, _join(field, name), as_given=True)
        return _INVALID if len(builder.problems) > before else out


@dataclass(frozen=True)
class SharedSettings:
    """``Annotated[dict[str, Any], SharedSettings("methods", REGISTRY)]``: settings given once for
    every class that a sibling list names (``clustering: {epochs: 40}`` for ``methods``). A key must be
    a field of at least one of them; it applies to those that have it. Kept as given."""

    sibling: str
    registry: Names

    def convert(self, builder: _Builder, node: Node, field: str, siblings: dict[str, Any]) -> Any:
        names = siblings.get(self.sibling, _INVALID)
        if names is _INVALID:
            return _INVALID
        classes = [self.registry[n] for n in names or () if n in self.registry]
        if not isinstance(node, MappingNode):
            return builder.fail(node, field, f"expected a mapping; got {_node_kind(node)}")
        hints: dict[str, Any] = {}
        for cls in classes:
            for name, hint in field_types(cls).items():
                hints.setdefault(name, hint)
        before = len(builder.problems)
        out: dict[str, Any] = {}
        for key_node, val_node in builder.pairs(node, field):
            key = key_node.value
            if key not in hints:
                close = difflib.get_close_matches(str(key), list(hints), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                builder.fail(key_node, _join(field, str(key)), f"{key!r} is a setting of none of the "
                             f"{self.sibling} {list(names or ())}; {hint}(their settings: {', '.join(sorted(hints))})")
                continue
            out[key] = builder.convert(hints[key], val_node, _join(field, key))
        if len(builder.problems) > before:
            return _INVALID
        for cls in classes:  # each class checks the values that apply to it
            own = {k: v for k, v in out.items() if k in {f.name for f in dataclasses.fields(cls)}}
            try:
                cls(**own)
            except ValueError as exc:
                return builder.fail(node, field, f"{cls.__dict__.get('name', cls.__name__)}: {exc}")
        return out


_MARKERS = (Name, Tagged, ChosenBy, SettingsByName, SharedSettings)
_SIBLING_MARKERS = (ChosenBy, SharedSettings)


def build(cls: type[T], text: str, *, filename: str = "<string>") -> T:
    """Parse YAML `text` and build `cls`; raise ConfigError listing every problem."""
    builder = _Builder(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        detail = "; ".join(s for s in (exc.context, exc.problem) if s)
        raise ConfigError(filename, [Problem(filename, line, column, "", f"invalid YAML: {detail}; "
                                             "check the indentation and quoting around here")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(filename, [Problem(filename, 0, 0, "", f"invalid YAML: {exc}")]) from None
    if root is None:
        keys = ", ".join(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else "..."
        raise ConfigError(filename, [Problem(filename, 1, 1, "", f"the file is empty; expected keys {keys}")])
    result = builder.convert(cls, root, "")
    if builder.problems or result is _INVALID:
        raise ConfigError(filename, builder.problems)
    return typing.cast(T, result)


def load(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Read the YAML file at `path` and build `cls`; raise ConfigError listing every problem."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ConfigError(name, [Problem(name, 0, 0, "", "file does not exist; pass the path of an "
                                         "experiments file, e.g. experiments.yaml")])
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, [Problem(name, 0, 0, "", f"cannot read file: {exc}")]) from None
    return build(cls, text, filename=name)
