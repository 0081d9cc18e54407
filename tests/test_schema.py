"""Tests for grid.schema: the strict YAML -> frozen-dataclass builder."""
from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from grid.schema import ConfigError, Problem, build, load


@dataclass(frozen=True)
class Dataset:
    name: str
    flavour: Literal["merscope", "xenium"]
    n_cells: int = 1000
    path: Optional[str] = None

    __key_aliases__ = {"cells": "n_cells"}


@dataclass(frozen=True)
class Model:
    kind: Literal["mae", "contrastive"]
    lr: float
    layers: tuple[int, int]


@dataclass(frozen=True)
class Experiment:
    name: str
    seeds: tuple[int, ...]
    datasets: tuple[Dataset, ...]
    model: Model
    tags: dict[str, str] = field(default_factory=dict)
    extra: Any = None
    debug: bool = False
    min_cells: int = 0
    max_cells: int | None = None

    def __post_init__(self) -> None:
        if self.max_cells is not None and self.max_cells < self.min_cells:
            raise ValueError(f"max_cells ({self.max_cells}) must be >= min_cells ({self.min_cells})")


VALID = """\
name: baseline
seeds: [0, 1, 2]
datasets:
  - name: brain
    flavour: merscope
  - name: lung
    flavour: xenium
    n_cells: 5000
    path: /data/lung.h5ad
model:
  kind: mae
  lr: 1
  layers: [2, 4]
tags:
  owner: ana
extra:
  knobs: [1, {a: b}]
debug: true
"""


def _doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _problems(text: str, cls: type = Experiment) -> tuple[Problem, ...]:
    with pytest.raises(ConfigError) as info:
        build(cls, _doc(text), filename="exp.yaml")
    return info.value.problems


def _only(text: str, cls: type = Experiment) -> Problem:
    problems = _problems(text, cls)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_valid_document_builds_exact_object() -> None:
    got = build(Experiment, VALID)
    assert got == Experiment(
        name="baseline",
        seeds=(0, 1, 2),
        datasets=(
            Dataset(name="brain", flavour="merscope"),
            Dataset(name="lung", flavour="xenium", n_cells=5000, path="/data/lung.h5ad"),
        ),
        model=Model(kind="mae", lr=1.0, layers=(2, 4)),
        tags={"owner": "ana"},
        extra={"knobs": (1, {"a": "b"})},
        debug=True,
    )
    assert type(got.model.lr) is float
    assert dataclasses.is_dataclass(got.datasets[0])


def test_unknown_key_suggests_closest_and_points_at_line() -> None:
    p = _only(VALID.replace("seeds:", "sedes:"))
    assert (p.file, p.line, p.column) == ("exp.yaml", 2, 1)
    assert p.field == "sedes"
    assert "unknown key 'sedes'; did you mean 'seeds'?" in p.message
    assert "valid keys: name, seeds, datasets, model" in p.message


def test_nested_unknown_key_has_dotted_path() -> None:
    p = _only(VALID.replace("    flavour: xenium", "    flavor: xenium\n    flavour: xenium"))
    assert p.field == "datasets[1].flavor"
    assert (p.line, p.column) == (7, 5)
    assert "did you mean 'flavour'?" in p.message


def test_several_problems_reported_at_once_in_document_order() -> None:
    problems = _problems("""
        name: 3
        seeds: [1, x]
        datasets:
          - name: a
            flavour: merfish
        model: {kind: mae, lr: fast, layers: [1, 2]}
        debgu: true
    """)
    assert [(p.line, p.field) for p in problems] == [
        (1, "name"), (2, "seeds[1]"), (5, "datasets[0].flavour"), (6, "model.lr"), (7, "debgu"),
    ]
    report = str(ConfigError("exp.yaml", problems))
    assert report.startswith("invalid config exp.yaml (5 problems):")
    assert "exp.yaml:5:14: datasets[0].flavour: expected one of 'merscope', 'xenium'; got 'merfish'" in report


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ten", "expected an integer; got string 'ten'"),
        ("2.5", "expected an integer; got float 2.5"),
        ("true", "expected an integer; got boolean true"),
        ("null", "expected an integer; got null"),
        ("[1]", "expected an integer; got a list"),
    ],
)
def test_wrong_type_for_int(value: str, expected: str) -> None:
    p = _only(VALID + f"min_cells: {value}\n")
    assert p.field == "min_cells"
    assert p.message.startswith(expected)
    assert (p.line, p.column) == (19, 12)


def test_bool_rejected_for_float_and_number_for_string() -> None:
    p = _only(VALID.replace("lr: 1", "lr: yes"))
    assert p.field == "model.lr" and "expected a number; got boolean true" in p.message
    p = _only(VALID.replace("name: baseline", "name: 123"))
    assert p.message == "expected a string; got int 123; quote it (\"123\") to use it as text"


def test_literal_violation_suggests_closest() -> None:
    p = _only(VALID.replace("flavour: xenium", "flavour: xenum"))
    assert p.field == "datasets[1].flavour"
    assert p.message == "expected one of 'merscope', 'xenium'; got 'xenum'; did you mean 'xenium'?"
    assert str(p) == ("exp.yaml:7:14: datasets[1].flavour: expected one of 'merscope', 'xenium'; "
                      "got 'xenum'; did you mean 'xenium'?")


def test_missing_required_key_reported_at_mapping() -> None:
    p = _only(VALID.replace("  kind: mae\n", ""))
    assert p.field == "model"
    assert p.message == "missing required key 'kind'"
    assert p.line == 11  # the mapping under "model:" starts at "lr: 1"


def test_duplicate_key() -> None:
    p = _only(VALID + "name: again\n")
    assert p.field == "name" and p.line == 19
    assert "duplicate key 'name' (first given on line 1)" in p.message


def test_duplicate_key_inside_any_and_dict() -> None:
    problems = _problems(VALID.replace("  owner: ana", "  owner: ana\n  owner: bob")
                         .replace("  knobs: [1, {a: b}]", "  knobs: [1, {a: b, a: c}]"))
    assert [(p.line, p.field) for p in problems] == [(16, "tags.owner"), (18, "extra.knobs[1].a")]


def test_yaml_syntax_error_has_line() -> None:
    p = _only("name: x\nseeds: [1, 2\nmodel: {}\n")
    assert p.message.startswith("invalid YAML:")
    assert p.line == 3
    with pytest.raises(ConfigError) as info:
        build(Experiment, "a: 1\n  b: 2\n", filename="bad.yaml")
    assert str(info.value.problems[0]).startswith("bad.yaml:2:4: invalid YAML:")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load(Experiment, missing)
    assert info.value.path == str(missing)
    assert "does not exist" in str(info.value)
    assert "e.g. experiments.yaml" in str(info.value)


def test_load_reads_file_and_reports_its_name(tmp_path: Path) -> None:
    good = tmp_path / "experiments.yaml"
    good.write_text(VALID)
    assert load(Experiment, good).name == "baseline"
    good.write_text(VALID.replace("debug: true", "debug: 1"))
    with pytest.raises(ConfigError) as info:
        load(Experiment, str(good))
    assert str(info.value.problems[0]).startswith(f"{good}:18:8: debug: expected a boolean")


def test_empty_file_and_non_mapping_root() -> None:
    assert "the file is empty" in _only("# only a comment\n").message
    p = _only("- 1\n- 2\n")
    assert p.field == "" and p.message.startswith("expected a mapping with keys name, seeds")


def test_post_init_value_error_mapped_to_mapping_position() -> None:
    p = _only(VALID + "min_cells: 10\nmax_cells: 5\n")
    assert (p.line, p.column, p.field) == (1, 1, "")
    assert p.message == "max_cells (5) must be >= min_cells (10)"


def test_post_init_not_run_when_fields_invalid() -> None:
    # The bad field is the only report: __post_init__ must not see half-built input.
    p = _only(VALID + "min_cells: ten\nmax_cells: 5\n")
    assert p.field == "min_cells"


def test_dash_keys_and_aliases_accepted() -> None:
    got = build(Experiment, VALID + "min-cells: 3\nmax-cells: 4\n")
    assert (got.min_cells, got.max_cells) == (3, 4)
    got = build(Experiment, VALID.replace("n_cells: 5000", "cells: 7"))
    assert got.datasets[1].n_cells == 7
    p = _only(VALID + "min-cells: 3\nmin_cells: 4\n")
    assert "sets the same field as 'min-cells'" in p.message


def test_sequence_required_for_tuple_and_fixed_length_checked() -> None:
    p = _only(VALID.replace("seeds: [0, 1, 2]", "seeds: 0"))
    assert p.field == "seeds" and p.message.startswith("expected a list; got int 0")
    p = _only(VALID.replace("layers: [2, 4]", "layers: [2, 4, 8]"))
    assert p.field == "model.layers" and "expected exactly 2 items; got 3" in p.message


def test_optional_accepts_null_and_anchors_merge() -> None:
    got = build(Experiment, VALID + "max_cells: ~\n")
    assert got.max_cells is None
    doc = VALID.replace("  - name: brain\n    flavour: merscope",
                        "  - &base\n    name: brain\n    flavour: merscope") \
               .replace("  - name: lung\n    flavour: xenium", "  - <<: *base\n    name: lung")
    got = build(Experiment, doc)
    assert got.datasets[1] == Dataset(name="lung", flavour="merscope", n_cells=5000, path="/data/lung.h5ad")


def test_unsupported_type_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Bad:
        x: set  # type: ignore[type-arg]

    with pytest.raises(TypeError, match="unsupported field type"):
        build(Bad, "x: [1]\n")


def test_unquoted_exponent_is_a_float_but_quoted_text_is_not() -> None:
    # PyYAML (YAML 1.1) resolves 1e-4 to a string; a float field should still take it.
    assert build(Experiment, VALID.replace("lr: 1", "lr: 1e-4")).model.lr == 1e-4
    p = _only(VALID.replace("lr: 1", "lr: '1e-4'"))
    assert p.message == "expected a number; got string '1e-4'"


def test_optional_rejects_wrong_type_and_non_text_keys() -> None:
    p = _only(VALID + "max_cells: lots\n")
    assert p.field == "max_cells" and p.message.startswith("expected an integer; got string 'lots'")
    p = _only(VALID + "1: x\n")
    assert p.message == "keys must be text; got '1'"


# --- classes chosen by name: task kinds, a model's pretrain settings, settings per method ------------

from typing import Annotated, ClassVar  # noqa: E402

from grid.schema import ChosenBy, Name, SettingsByName, SharedSettings, Tagged  # noqa: E402
from ssl_st.registry import Registry  # noqa: E402

SHAPES = Registry("shape")
METHODS = Registry("method")


@SHAPES.register
@dataclass(frozen=True)
class Square:
    name: ClassVar[str] = "square"
    side: float = 1.0


@SHAPES.register
@dataclass(frozen=True)
class Circle:
    name: ClassVar[str] = "circle"
    radius: float = 1.0

    def __post_init__(self) -> None:
        if self.radius <= 0:
            raise ValueError("radius must be positive")


@METHODS.register
@dataclass(frozen=True)
class Fast:
    name: ClassVar[str] = "fast"
    epochs: int = 10
    k: int = 3


@METHODS.register
@dataclass(frozen=True)
class Plain:
    name: ClassVar[str] = "plain"
    k: int = 6


@dataclass(frozen=True)
class Job:
    method: Annotated[str, Name(SHAPES)]
    settings: Annotated[Any, ChosenBy("method", SHAPES)] = None


@dataclass(frozen=True)
class Study:
    shapes: tuple[Annotated[Any, Tagged("shape", SHAPES, default="square")], ...] = ()
    jobs: tuple[Job, ...] = ()
    methods: tuple[Annotated[str, Name(METHODS)], ...] = ("fast", "plain")
    common: Annotated[dict[str, Any], SharedSettings("methods", METHODS)] = field(default_factory=dict)
    own: Annotated[dict[str, dict[str, Any]], SettingsByName(METHODS)] = field(default_factory=dict)


def test_tagged_records_take_the_class_their_key_names() -> None:
    study = build(Study, "shapes: [{shape: circle, radius: 2}, {side: 3}]\n")
    assert study.shapes == (Circle(radius=2.0), Square(side=3.0))
    wrong = _only("shapes: [{shape: circel}]\n", Study)
    assert wrong.field == "shapes[0].shape" and "did you mean 'circle'" in wrong.message
    # the chosen class's own keys are checked, with its fields as suggestions
    typo = _only("shapes: [{shape: circle, radios: 2}]\n", Study)
    assert typo.field == "shapes[0].radios" and "did you mean 'radius'" in typo.message
    assert "radius must be positive" in _only("shapes: [{shape: circle, radius: -1}]\n", Study).message


def test_a_sibling_names_the_class_of_a_record() -> None:
    study = build(Study, "jobs: [{method: circle, settings: {radius: 4}}, {method: square}]\n")
    assert study.jobs == (Job("circle", Circle(radius=4.0)), Job("square", None))
    wrong = _only("jobs: [{method: square, settings: {radius: 4}}]\n", Study)
    assert wrong.field == "jobs[0].settings.radius" and "valid keys: side" in wrong.message
    # a wrong sibling is reported once, not again for the record it would have chosen
    bad = _only("jobs: [{method: triangle, settings: {radius: 4}}]\n", Study)
    assert bad.field == "jobs[0].method" and "unknown shape 'triangle'" in bad.message


def test_settings_by_name_are_checked_and_kept_as_given() -> None:
    study = build(Study, "own: {fast: {epochs: 40}, plain: {}}\n")
    assert study.own == {"fast": {"epochs": 40}, "plain": {}}
    assert "did you mean 'fast'" in _only("own: {fats: {epochs: 40}}\n", Study).message
    assert _only("own: {plain: {epochs: 40}}\n", Study).field == "own.plain.epochs"
    assert "expected an integer" in _only("own: {fast: {epochs: many}}\n", Study).message


def test_shared_settings_apply_to_the_methods_that_have_them() -> None:
    study = build(Study, "common: {epochs: 40, k: 8}\n")
    assert study.common == {"epochs": 40, "k": 8}
    only_plain = _only("methods: [plain]\ncommon: {epochs: 40}\n", Study)
    assert "'epochs' is a setting of none of the methods ['plain']" in only_plain.message
    assert "expected an integer" in _only("common: {k: 1.5}\n", Study).message
