"""Build CLI options from a pydantic parameter model, so the CLI holds no copy of any default.

Each field of the model becomes an option ``--field-name`` whose help text is the field's
description and default, read from the model. Values arrive as strings and are validated by
the model itself (lists: comma-separated, or JSON; nested models and dicts: JSON). A
``--params FILE`` (YAML or JSON) gives the whole model; options override it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import typer
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from cropflow.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _is_listish(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_is_listish(a) for a in get_args(annotation) if a is not type(None))


def _is_structured(annotation: Any) -> bool:
    """Nested models and dicts take JSON on the command line."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return True
    if get_origin(annotation) is dict:
        return True
    return any(_is_structured(a) for a in get_args(annotation) if a is not type(None))


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "see --params"
    return f"default: {default!r}" if default not in (None, "") else "default: none"


def _accepts_str(annotation: Any) -> bool:
    """True for ``str`` and unions with ``str`` as a member (not ``list[str]``)."""
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_accepts_str(a) for a in get_args(annotation))
    return False


def parse_value(raw: str, annotation: Any) -> Any:
    """Turn one option string into what pydantic validates for this annotation.

    JSON objects and arrays are decoded; other list values are comma-separated; anything else
    is passed as text for the model to parse (e.g. a bbox string for an AOI field).
    """
    text = raw.strip()
    wants_json = _is_structured(annotation) or _is_listish(annotation)
    if wants_json and text[:1] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON {raw!r}: {exc.msg}", hint="quote the JSON") from exc
    if _is_structured(annotation) and not _accepts_str(annotation) and not _is_listish(annotation):
        raise ConfigError(f"expected a JSON object, got {raw!r}", hint="pass it as '{...}'")
    if _is_listish(annotation) and not _accepts_str(annotation):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON parameter file into a dict."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read parameter file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"parameter file {path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"parameter file {path} must hold a mapping of parameter names")
    return data


def build_params(model: type[M], params_file: Path | None, options: dict[str, str | None]) -> M:
    """Validate file values overridden by command-line options into the model."""
    data: dict[str, Any] = load_params_file(params_file) if params_file else {}
    for name, raw in options.items():
        if raw is not None:
            data[name] = parse_value(raw, model.model_fields[name].annotation)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"{_option_name(loc) if loc else '(params)'}: {err['msg']}")
        raise ConfigError(
            f"invalid {model.__name__}: " + "; ".join(lines),
            hint="see --help for each option's meaning and default",
        ) from exc


def params_command(
    app: typer.Typer,
    name: str,
    model: type[M],
    run: Callable[[M], None],
    help_text: str,
    wrap: Callable[[Callable[..., None]], Callable[..., None]] = lambda f: f,
) -> None:
    """Register ``name`` on ``app`` with one option per field of ``model``."""
    parameters = [
        inspect.Parameter(
            "params_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                None, "--params", help="YAML/JSON file with parameters (options override it)."
            ),
            annotation=Path | None,
        )
    ]
    for field, info in model.model_fields.items():
        desc = (info.description or "").rstrip(".")
        parameters.append(
            inspect.Parameter(
                field,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(
                    None, _option_name(field), help=f"{desc} ({_default_text(info)})"
                ),
                annotation=str | None,
            )
        )

    def command(**kwargs: Any) -> None:
        params_file = kwargs.pop("params_file")
        run(build_params(model, params_file, kwargs))

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = help_text
    command.__name__ = name.replace("-", "_")
    app.command(name=name, help=help_text)(wrap(command))
