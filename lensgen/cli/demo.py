"""``lensgen demo``: simulate θ_E = 2.3 with the learned source, infer (NUTS + SVI), report."""

from __future__ import annotations

from pathlib import Path

import typer

from lensgen.cli.common import (
    console,
    double_precision,
    flag_overrides,
    progress,
    seed_option,
    stage_reporter,
)

KEYS = {
    name: name
    for name in (
        "rein", "npix", "num_warmup", "num_samples", "num_chains", "target_ess", "svi_steps",
        "map_steps", "map_restarts", "source_model",
    )
}  # fmt: skip
"""The :class:`~lensgen.infer.demo.DemoConfig` key each flag overrides."""


def demo(
    out: Path = typer.Option(Path("lensgen_demo"), "--out", "-o", help="Output directory."),
    rein: float = typer.Option(2.3, "--rein", help="True Einstein radius [arcsec]."),
    npix: int = typer.Option(60, "--npix", help="Image size in pixels."),
    num_warmup: int = typer.Option(200, "--num-warmup", help="NUTS warm-up steps per chain."),
    num_samples: int = typer.Option(
        500, "--num-samples", help="Most NUTS draws per chain (stops at --target-ess)."
    ),
    num_chains: int = typer.Option(2, "--num-chains", help="NUTS chains (vectorised)."),
    target_ess: int = typer.Option(
        200, "--target-ess", help="ESS every mass parameter must reach (R-hat < 1.01 for all)."
    ),
    svi_steps: int = typer.Option(1000, "--svi-steps", help="SVI steps."),
    map_steps: int = typer.Option(600, "--map-steps", help="MAP Adam steps per restart."),
    map_restarts: int = typer.Option(4, "--map-restarts", help="MAP restarts."),
    source_model: Path | None = typer.Option(
        None, "--source-model", help="Source model directory (default: the embedded model)."
    ),
    seed: int = seed_option(0, "Random seed."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace output files of an earlier demo in the output folder."
    ),
) -> None:
    """The main job end to end: simulate a lens, fit it with NUTS and SVI, compare with the truth."""
    from lensgen.config import load_config
    from lensgen.infer.demo import DemoConfig, run_demo

    cfg = load_config(DemoConfig, None, *flag_overrides(KEYS, locals()))
    double_precision()
    with progress(transient=True) as bar:
        run_demo(cfg, out, seed=seed, overwrite=overwrite, console=console,
                 progress=stage_reporter(bar))  # fmt: skip
