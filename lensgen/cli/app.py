"""The ``lensgen`` Typer application.

Each command lives in its own module under ``lensgen/cli`` and only parses
arguments before calling one workflow function. Only working commands are
registered here.
"""

from __future__ import annotations

import typer

from lensgen import __version__
from lensgen.cli.common import handle_errors

app = typer.Typer(
    name="lensgen",
    help="Strong gravitational lensing with machine-learned galaxy source models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # Help texts are plain: "[arcsec]" is a unit, not rich markup.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lensgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Strong gravitational lensing with machine-learned galaxy source models."""


def _register() -> None:
    # Imported here so `lensgen --help` stays fast: each module imports JAX lazily.
    from lensgen.cli import simulate

    app.command("simulate")(handle_errors(simulate.simulate))
    from lensgen.cli import demo, infer

    app.command("infer")(handle_errors(infer.infer))
    app.command("demo")(handle_errors(demo.demo))
    from lensgen.cli import fit_iaf, train_vae

    app.command("train-vae")(handle_errors(train_vae.train_vae))
    app.command("fit-iaf")(handle_errors(fit_iaf.fit_iaf))
    from lensgen.cli import download_great3

    app.command("download-great3")(handle_errors(download_great3.download_great3))


_register()


def main() -> None:
    """Console-script entry point."""
    app()
