"""``lensgen train-vae CONFIG``: parse arguments, call :func:`lensgen.source.train.train`."""

from __future__ import annotations

from pathlib import Path

import typer

from lensgen.cli.common import console, flag_overrides, progress, seed_option
from lensgen.errors import ConfigError
from lensgen.io.interrupt import deferred_interrupt

KEYS = {"dataset": "data.path", "epochs": "train.epochs", "seed": "train.seed"}
"""The config key each flag overrides."""


def train_vae(
    config: Path = typer.Argument(
        None, help="TOML with [data], [model], [train] (optional with --resume)."
    ),
    out: Path = typer.Option(Path("runs/vae"), "--out", "-o", help="Model / run directory."),
    dataset: str = typer.Option(None, "--dataset", help="Override data.path."),
    epochs: int = typer.Option(None, "--epochs", help="Override train.epochs."),
    seed: int = seed_option(None, "Override train.seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run in --out."),
) -> None:
    """Train the VAE galaxy model on a dataset file."""
    with deferred_interrupt():  # Ctrl-C at safe points only, also during the imports
        from lensgen.source.train import check_workdir, load_train_config, resume_config, train

        overrides, flags = flag_overrides(KEYS, locals())
        if resume:
            check_workdir(out, resume, overwrite)
            given = load_train_config(config, overrides, flags) if config is not None else None
            cfg = resume_config(out, given, epochs)
        else:
            if config is None:
                raise ConfigError("train-vae: CONFIG is required unless --resume is given")
            cfg = load_train_config(config, overrides, flags)
        with progress() as bar:
            task = bar.add_task("train-vae", total=None, status="compiling")

            def report(done: int, total: int, status: str) -> None:
                bar.update(task, completed=done, total=total, status=status)

            def epoch_line(m: dict) -> None:
                console.print(
                    f"epoch {m['epoch']:3d}  ELBO {m['val_elbo']:.1f}  "
                    f"χ²/N {m['val_chi2_per_pix']:.3f}  KL {m['val_kl']:.2f}  "
                    f"({m['images_per_s']:.0f} img/s)"
                )

            result = train(cfg, out, resume=resume, overwrite=overwrite, progress=report,
                           on_epoch=epoch_line)  # fmt: skip
    console.print(f"model written to {result.workdir} ({result.epochs_done} epochs)")
