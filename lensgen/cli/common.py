"""Shared CLI helpers: the console, one-line error reporting, progress bars, flag overrides."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lensgen.config import SEED_MAX
from lensgen.errors import LensgenError
from lensgen.io.interrupt import check_interrupt, deferred_interrupt

# Long paths stay on one line; piped into a log (no terminal), tables get 160 columns
# rather than rich's 80, so their numbers are not cut to "2.2…".
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def flag_overrides(
    keys: Mapping[str, str], values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Config overrides from a command's flags, and the flag of each key (for errors).

    ``keys`` is the command's table of ``parameter name → dotted config key``
    (``{"epochs": "train.epochs"}``), the one place a flag is tied to a key; the flag is
    the parameter name as Typer spells it (``--epochs``). ``values`` holds the
    parameters (a command passes its ``locals()``); None means the flag was not given.
    Paths become strings, as config files hold them.
    """
    overrides = {
        key: str(values[name]) if isinstance(values[name], Path) else values[name]
        for name, key in keys.items()
    }
    flags = {key: "--" + name.replace("_", "-") for name, key in keys.items()}
    return overrides, flags


def seed_option(default: int | None, help: str) -> Any:
    """The ``--seed`` option of every command, range-checked by the parser (one line)."""
    return typer.Option(default, "--seed", min=0, max=SEED_MAX, help=help)


def handle_errors(func: F) -> F:
    """Turn :class:`LensgenError` into a one-line message and exit code 1.

    Ctrl-C exits with 130 after the workflow has had the chance to save state.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except LensgenError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def safe_interrupt(func: F) -> F:
    """Run a command with Ctrl-C taken at safe points only (:mod:`lensgen.io.interrupt`).

    Progress callbacks (:func:`stage_reporter`) and the final writes are the points
    where Ctrl-C acts; never inside a JAX compilation, which would crash the process.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with deferred_interrupt():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    # Warnings raised by lensgen reach users as one line, without a source path.
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}")


def double_precision() -> None:
    """Switch JAX to float64, as inference needs.

    Posterior widths of ~1e-5 of θ_E under log-likelihoods of ~1e4 need double
    precision in the Newton polish, the Laplace mass matrix and the NUTS energy.
    """
    import jax

    jax.config.update("jax_enable_x64", True)


def progress(transient: bool = False) -> Progress:
    """A rich progress bar with count, elapsed and remaining time.

    Disabled (no output) when stdout is not a terminal so logs and tests stay clean.
    """
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not sys.stdout.isatty(),
    )


def stage_reporter(bar: Progress):
    """A ``progress(stage, done, total, status)`` callback drawing one bar per stage."""
    tasks: dict[str, Any] = {}

    def report(stage: str, done: int, total: int, status: str) -> None:
        check_interrupt()  # between jitted chunks: a safe point for Ctrl-C
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, status=status)
        bar.update(tasks[stage], completed=done, total=total, status=status)

    return report
