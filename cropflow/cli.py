"""The ``cropflow`` command line: each subcommand runs one flow (or a helper) in-process.

Options come from the flows' pydantic parameter models, so defaults live in one place.
Errors that the user can fix are printed as one line and exit with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from cropflow.errors import CropflowError

app = typer.Typer(
    name="cropflow",
    help="Crop-type, cropland and land-cover maps from satellite image time series.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Print a CropflowError as one line (what was wrong, how to fix it) and exit 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CropflowError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@app.command()
def version() -> None:
    """Print cropflow's version."""
    from cropflow import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry point
    app()
