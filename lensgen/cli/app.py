"""The ``lensgen`` Typer application.

Each command lives in its own module under ``lensgen/cli`` and only parses
arguments before calling one workflow function. Only working commands are
registered here.
"""

from __future__ import annotations

import os
import sys

import typer

from lensgen import __version__
from lensgen.cli.common import handle_errors, safe_interrupt
from lensgen.io.atomic import user_cache_dir

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
    compilation_cache()


COMPILATION_CACHE_BYTES = 2 << 30
"""Size cap of the persistent compilation cache (least recently used entries go first)."""


def compilation_cache() -> None:
    """Keep compiled programs between runs: JAX's persistent compilation cache.

    ``lensgen infer`` and ``lensgen demo`` spend a minute or more compiling their
    MAP, NUTS and SVI programs; a later run of the same model on an image of the same
    shape loads them from ``$XDG_CACHE_HOME/lensgen/jax`` (``~/.cache/lensgen/jax``)
    instead. ``LENSGEN_JAX_CACHE`` names another folder, or turns the cache off when
    empty. Set through JAX's environment variables, which JAX reads when it is first
    imported: a process that has already imported JAX (a test session, a notebook)
    keeps its own setting. A folder that cannot be created leaves the cache off.
    """
    if "jax" in sys.modules or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = os.environ.get("LENSGEN_JAX_CACHE")
    if folder is None:
        folder = str(user_cache_dir() / "jax")
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return
    date_unstamped_entries(folder)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILATION_CACHE_BYTES))


def date_unstamped_entries(folder: str | os.PathLike) -> int:
    """Give every entry of a compilation cache folder the access-time stamp JAX's size cap
    needs; returns how many were stamped.

    With a size cap, JAX keeps ``<key>-atime`` next to each ``<key>-cache`` and reads
    them all before it stores a new program; a single entry without one (written by a
    process without the cap: a notebook or test session pointed at the same folder)
    makes every later store fail with a warning, so the cache silently stops growing.
    An unstamped entry gets its file's modification time.
    """
    stamped = 0
    try:
        names = set(os.listdir(folder))
        for name in names:
            if name.endswith("-cache") and name[: -len("-cache")] + "-atime" not in names:
                entry = os.path.join(folder, name)
                stamp = os.stat(entry).st_mtime_ns.to_bytes(8, "little")
                with open(entry[: -len("-cache")] + "-atime", "wb") as f:
                    f.write(stamp)
                stamped += 1
    except OSError:
        pass  # the cache is a convenience: an unreadable folder only costs compile time
    return stamped


def _register() -> None:
    # Imported here so `lensgen --help` stays fast: each module imports JAX lazily.
    from lensgen.cli import simulate

    app.command("simulate")(handle_errors(safe_interrupt(simulate.simulate)))
    from lensgen.cli import demo, infer

    app.command("infer")(handle_errors(safe_interrupt(infer.infer)))
    app.command("demo")(handle_errors(safe_interrupt(demo.demo)))
    from lensgen.cli import fit_iaf, train_vae

    app.command("train-vae")(handle_errors(train_vae.train_vae))
    app.command("fit-iaf")(handle_errors(fit_iaf.fit_iaf))
    from lensgen.cli import download_great3

    app.command("download-great3")(handle_errors(download_great3.download_great3))


_register()


def main() -> None:
    """Console-script entry point.

    After Ctrl-C (exit 130) the outputs are already complete or cleaned up, so the
    process leaves at once: JAX's exit hook spends about a second clearing caches, and
    a second Ctrl-C in that window would print a traceback.
    """
    try:
        app()
    except SystemExit as exc:
        if exc.code == 130:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise
