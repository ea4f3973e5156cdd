"""``lensgen fit-iaf MODEL_DIR``: parse arguments, call :func:`lensgen.source.fit.fit_iaf`."""

from __future__ import annotations

from pathlib import Path

import typer

from lensgen.cli.common import console, flag_overrides, seed_option
from lensgen.io.interrupt import deferred_interrupt

KEYS = {"dataset": "dataset", "seed": "seed"}
"""The ``[flow]`` key each flag overrides."""


def fit_iaf(
    model_dir: Path = typer.Argument(..., help="Model directory written by train-vae."),
    config: Path = typer.Option(None, "--config", help="TOML with a [flow] table."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset (default: the training one)."),
    seed: int = seed_option(None, "Override flow.seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing flow."),
) -> None:
    """Fit the latent flow to the encoded training stamps and save it in MODEL_DIR."""
    with deferred_interrupt():  # Ctrl-C at safe points only, also during the imports
        from lensgen.source.fit import fit_iaf as run
        from lensgen.source.fit import load_flow_config

        cfg = load_flow_config(config, *flag_overrides(KEYS, locals()))
        rep = run(model_dir, cfg, overwrite=overwrite, on_status=console.print)
    console.print(
        f"held-out log-likelihood per dimension: flow {rep['val_loglik_per_dim_flow']:.3f}, "
        f"N(0, I) {rep['val_loglik_per_dim_normal']:.3f}"
    )
    for q in ("flux", "size", "abs_e"):
        console.print(
            f"W1 {q:6s} to validation: N(0, I) {rep[f'w1_{q}_normal']:.4g}, "
            f"flow {rep[f'w1_{q}_flow']:.4g}"
        )
    console.print(f"flow written to {model_dir}")
