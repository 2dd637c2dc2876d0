"""The config mixin: typed fields, nested configs, every problem at once, strict YAML, round trips."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pangu_core.config import Config, ConfigError, expect, expect_name, load_yaml


@dataclass(frozen=True)
class Inner(Config):
    lr: float = 1e-3
    steps: int = 10

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect(problems, self.lr > 0, "lr", "a number > 0", self.lr)
        return problems


@dataclass(frozen=True)
class Outer(Config):
    method: str = "linear"
    mode: Literal["fast", "slow"] = "slow"
    show_progress: bool = False
    levels: tuple[int, ...] = (1, 2)
    fraction: float | tuple[float, ...] = 0.5
    weights: tuple[tuple[str, float], ...] = (("math", 1.0),)
    inner: Inner = field(default_factory=Inner)
    note: str | None = None

    def validate(self) -> list[str]:
        problems: list[str] = []
        expect_name(problems, "method", self.method, ("linear", "ties"), "merge method")
        return problems


@dataclass(frozen=True)
class Required(Config):
    name: str


def problems_of(build) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build()
    return caught.value.problems


def test_defaults_build_and_lists_become_tuples():
    # Lists from YAML are stored as tuples so configs stay hashable and picklable.
    config = Outer(levels=[3, 4], fraction=[0.1, 0.2])
    assert config.levels == (3, 4) and config.fraction == (0.1, 0.2)
    assert pickle.loads(pickle.dumps(config)) == config and hash(config) == hash(Outer(levels=(3, 4), fraction=(0.1, 0.2)))


@pytest.mark.parametrize("values, problem", [
    ({"show_progress": "yes"}, "show_progress: expected a bool, got 'yes' (str)"),
    ({"levels": [1, True]}, "levels[1]: expected an int, got True"),
    ({"levels": [1, 2.5]}, "levels[1]: expected an int, got 2.5"),
    ({"mode": "auto"}, "mode: expected one of 'fast', 'slow', got 'auto' (str)"),
    ({"fraction": [0.1, "x"]}, "fraction[1]: expected a number, got 'x' (str)"),
    ({"weights": {"math": "high"}}, "weights['math']: expected a number, got 'high' (str)"),
    ({"note": 3}, "note: expected a string or null, got 3"),
    ({"inner": 5}, "inner: expected a mapping of Inner fields, got 5"),
    ({"method": "average"}, "method: unknown merge method 'average'; known: linear, ties"),
    ({"inner": {"lr": -1}}, "inner.lr: expected a number > 0, got -1.0"),
    ({"inner": {"lrr": 1}}, "inner.lrr: unknown key; known: lr, steps"),
    ({"colour": 1}, "colour: unknown key; known: method, mode, show_progress, levels, fraction, weights, inner, note"),
])
def test_each_kind_of_mistake_names_its_field(values, problem):
    assert problems_of(lambda: Outer.from_dict(values)) == [problem]


def test_every_problem_is_reported_at_once_and_rules_still_run():
    # A wrong type and a bad value elsewhere are both reported; the rule on a badly typed field is not.
    problems = problems_of(lambda: Outer.from_dict({"show_progress": 1, "method": "x", "inner": {"steps": "a", "lr": 0}}))
    assert problems == ["show_progress: expected a bool, got 1", "inner.steps: expected an int, got 'a' (str)",
                        "inner.lr: expected a number > 0, got 0.0", "method: unknown merge method 'x'; known: linear, ties"]
    error = ConfigError("Outer", problems)
    assert str(error).startswith("invalid Outer:\n  show_progress") and "\n" not in error.one_line()


def test_python_construction_is_checked_like_a_mapping():
    assert problems_of(lambda: Outer(show_progress="yes")) == ["show_progress: expected a bool, got 'yes' (str)"]
    assert problems_of(lambda: Outer().replace(levels=("a",))) == ["levels[0]: expected an int, got 'a' (str)"]
    assert Outer(inner={"steps": 3}).inner == Inner(steps=3)


def test_missing_required_field_and_non_mapping_are_config_errors():
    assert problems_of(lambda: Required.from_dict({})) == ["missing 1 required positional argument: 'name'"]
    assert problems_of(lambda: Outer.from_dict([1, 2])) == ["expected a mapping of Outer fields, got [1, 2] (list)"]


def test_round_trip_through_dict_and_yaml(tmp_path):
    config = Outer(method="ties", mode="fast", levels=(5,), fraction=(0.5, 0.25), weights=(("a", 2.0), ("b", 0.5)),
                   inner=Inner(lr=0.25, steps=7), note="n")
    assert config.to_dict()["weights"] == {"a": 2.0, "b": 0.5} and config.to_dict()["inner"] == {"lr": 0.25, "steps": 7}
    assert Outer.from_dict(config.to_dict()) == config
    path = tmp_path / "c.yaml"
    config.to_yaml(path)
    assert Outer.from_yaml(path) == config


def test_yaml_problems_carry_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: ties\ninner:\n  lr: -2\n  steps: 1.5\nweights:\n  math: no\n")
    problems = problems_of(lambda: Outer.from_yaml(path))
    assert f"{path}:6: weights['math']: expected a number, got False" in problems
    assert f"{path}:4: inner.steps: expected an int, got 1.5" in problems
    assert f"{path}:3: inner.lr: expected a number > 0, got -2.0" in problems


def test_yaml_duplicate_keys_are_refused(tmp_path):
    # With a plain YAML load the last duplicate silently wins.
    path = tmp_path / "c.yaml"
    path.write_text("levels: [1]\ninner:\n  lr: 0.1\n  lr: 0.2\nlevels: [2]\n")
    problems = problems_of(lambda: Outer.from_yaml(path))
    assert problems == [f"{path}:4: inner.lr: duplicate key (first at line 3)", f"{path}:5: levels: duplicate key (first at line 1)"]


def test_bad_yaml_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("levels: [1, 2\n")
    assert problems_of(lambda: Outer.from_yaml(broken))[0].startswith(f"{broken}:2: YAML syntax:")
    assert problems_of(lambda: Outer.from_yaml(tmp_path / "absent.yaml")) == [f"{tmp_path / 'absent.yaml'}: no such file"]
    assert problems_of(lambda: Outer.from_yaml(tmp_path)) == [f"{tmp_path}: is a directory, expected a YAML file"]
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    assert problems_of(lambda: Outer.from_yaml(listing)) == [f"{listing}: expected a mapping of Outer fields, got [1, 2] (list)"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert Outer.from_yaml(empty) == Outer()


def test_load_yaml_maps_keys_and_items_to_lines(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("models:\n  - model: a\n  - model: b\n    parameters: {weight: 1}\n")
    data, lines = load_yaml(path)
    assert data["models"][1]["parameters"] == {"weight": 1}
    assert lines[("models",)] == 1 and lines[("models", 1)] == 3 and lines[("models", 1, "parameters", "weight")] == 4
