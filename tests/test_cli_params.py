"""The CLI reads every option's default and validation from the pydantic parameter model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from cropflow.cli_params import build_params, params_command
from cropflow.errors import ConfigError


class Params(BaseModel):
    size: Literal["tiny", "default"] = Field("default", description="Size preset.")
    seed: int = Field(42, ge=0, description="Random seed.")
    bands: list[str] = Field(default_factory=lambda: ["red", "nir"], description="Bands.")
    weights: dict[str, float] = Field(default_factory=dict, description="Per-class weights.")


def _app(sink: list[Params]) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """root"""

    params_command(app, "go", Params, sink.append, "Run it.")
    return app


def test_help_shows_model_defaults_and_descriptions() -> None:
    out = CliRunner().invoke(_app([]), ["go", "--help"], terminal_width=200).output
    assert "Random seed (default: 42)" in out
    assert "Size preset (default: 'default')" in out


def test_options_validate_through_the_model() -> None:
    sink: list[Params] = []
    result = CliRunner().invoke(
        _app(sink), ["go", "--seed", "7", "--bands", "red, green", "--weights", '{"a": 2}']
    )
    assert result.exit_code == 0, result.output
    assert sink == [Params(seed=7, bands=["red", "green"], weights={"a": 2.0})]


def test_unset_options_keep_model_defaults() -> None:
    sink: list[Params] = []
    assert CliRunner().invoke(_app(sink), ["go"]).exit_code == 0
    assert sink == [Params()]


def test_params_file_overridden_by_options(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("seed: 3\nsize: tiny\n")
    p = build_params(Params, f, {"seed": "5", "size": None, "bands": None, "weights": None})
    assert (p.seed, p.size) == (5, "tiny")


@pytest.mark.parametrize(
    ("options", "needle"),
    [({"seed": "-1"}, "--seed"), ({"size": "huge"}, "--size"), ({"weights": "{bad"}, "JSON")],
)
def test_invalid_values_name_the_option(options: dict[str, str | None], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_params(Params, None, options)
    assert needle in str(info.value)


def test_key_value_pairs_nest_dotted_keys_and_refuse_bad_pairs() -> None:
    from cropflow.cli import _key_values
    from cropflow.errors import ConfigError

    got = _key_values(["region=demo", "train.epochs=5", "train.lr=0.01", "refresh=true"], None)
    assert got == {"region": "demo", "train": {"epochs": 5, "lr": 0.01}, "refresh": True}
    with pytest.raises(ConfigError, match="not key=value"):
        _key_values(["epochs"], None)
    with pytest.raises(ConfigError, match="not key=value"):
        _key_values(["train..epochs=5"], None)
    with pytest.raises(ConfigError, match="already set to a value"):
        _key_values(["train=3", "train.epochs=5"], None)
