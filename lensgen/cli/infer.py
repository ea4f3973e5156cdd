"""``lensgen infer``: parse flags, resolve the config, call the inference workflow."""

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
from lensgen.cli.vocabulary import INFER_SOURCES, lens_names, model_name

KEYS = {
    name: name
    for name in (
        "method", "priors", "source_model", "lens", "source", "lens_light", "latent_prior",
        "likelihood", "mask", "exptime", "background_rms", "num_chains", "num_warmup",
        "num_samples", "target_ess", "target_accept", "max_tree_depth",
        "max_tree_depth_warmup", "svi_guide",
        "svi_steps", "svi_lr", "map_steps", "map_restarts", "shapelet_order", "source_grid", "compare_sources",
    )
}  # fmt: skip
"""The :class:`~lensgen.infer.problem.InferConfig` key each flag overrides."""

SUBHALO_KEYS = {
    "subhalos": "n_subhalos",
    "subhalo_mass_min": "log10_m_min",
    "subhalo_mass_max": "log10_m_max",
    "subhalo_threshold": "threshold",
}
"""The :class:`~lensgen.infer.subhalo_config.SubhaloConfig` key each subhalo flag overrides."""


def infer(
    obs: list[str] | None = typer.Argument(
        None,
        help="Observation FITS file (from `lensgen simulate` or real data). Several files, "
        "a folder, a glob pattern or a `simulate --n` cube run a catalogue: one row per "
        "lens in catalogue.fits/.csv, resumable.",
    ),
    out: Path = typer.Option(Path("infer_out"), "--out", "-o", help="Output directory."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML file of InferConfig keys (flags override it)."
    ),
    method: str | None = typer.Option(
        None, "--method", help="nuts (default), svi, map or nuts+svi."
    ),
    priors: Path | None = typer.Option(
        None,
        "--priors",
        help='TOML file with a [priors] table, e.g. lens.0.theta_E = "Uniform(1, 3)".',
    ),
    show_priors: bool = typer.Option(
        False, "--show-priors", help="Print the priors of the model (as TOML) and exit."
    ),
    source_model: Path | None = typer.Option(
        None, "--source-model", help="Source model directory (default: the embedded model)."
    ),
    lens: str | None = typer.Option(
        None,
        "--lens",
        help="Comma-separated mass profiles, lenstronomy's names in any case, e.g. SIE,SHEAR "
        "(default: the file's, else SIE,SHEAR).",
    ),
    source: str | None = typer.Option(
        None,
        "--source",
        help="vae (learned), SERSIC_ELLIPSE (alias sersic), pixels or shapelets (free-form, "
        "amplitudes marginalised), vae+pixels or vae+shapelets (learned + free-form "
        "residual), in any case; default: the file's.",
    ),
    source_grid: int | None = typer.Option(
        None,
        "--source-grid",
        help="Nodes per side of the pixels sources' grid (default 16).",
    ),
    compare_sources: bool | None = typer.Option(
        None,
        "--compare-sources/--no-compare-sources",
        help="First fit the vae, pixels and vae+pixels sources by MAP and report their "
        "evidence (evidence.csv, bestfit_<source>.png): does the source need a free-form part?",
    ),
    shapelet_order: int | None = typer.Option(
        None,
        "--shapelet-order",
        help="Order n_max of the shapelet sources (default 12: 91 shapelets).",
    ),
    lens_light: str | None = typer.Option(
        None, "--lens-light", help="none or SERSIC_ELLIPSE (alias sersic; default: the file's)."
    ),
    latent_prior: str | None = typer.Option(
        None, "--latent-prior", help="flow (default when the model has one) or normal."
    ),
    likelihood: str | None = typer.Option(
        None, "--likelihood", help="gaussian (NOISE map) or poisson (EXPTIME + BKGRMS)."
    ),
    mask: Path | None = typer.Option(None, "--mask", help="FITS mask, non-zero = pixel used."),
    exptime: float | None = typer.Option(
        None, "--exptime", help="Exposure time [s] (supplies/replaces EXPTIME)."
    ),
    background_rms: float | None = typer.Option(
        None, "--background-rms", help="Background rms [counts/s] (supplies/replaces BKGRMS)."
    ),
    num_chains: int | None = typer.Option(
        None, "--num-chains", help="NUTS chains, vectorised on one device (default 4)."
    ),
    num_warmup: int | None = typer.Option(
        None, "--num-warmup", help="NUTS warm-up steps per chain (default 200)."
    ),
    num_samples: int | None = typer.Option(
        None,
        "--num-samples",
        help="Most NUTS draws per chain (default 2000); sampling stops earlier once "
        "--target-ess is reached with R-hat < 1.01.",
    ),
    target_ess: int | None = typer.Option(
        None,
        "--target-ess",
        help="Effective sample size every mass parameter (lens, subhalos) must reach, with "
        "R-hat < 1.01 for all, before NUTS stops (default 400; 0 draws all --num-samples).",
    ),
    target_accept: float | None = typer.Option(
        None, "--target-accept", help="NUTS target acceptance (default 0.8)."
    ),
    max_tree_depth: int | None = typer.Option(
        None, "--max-tree-depth", help="NUTS maximum tree depth (default 8)."
    ),
    max_tree_depth_warmup: int | None = typer.Option(
        None,
        "--max-tree-depth-warmup",
        help="NUTS maximum tree depth during the warm-up (default 5; at most --max-tree-depth).",
    ),
    svi_guide: str | None = typer.Option(
        None,
        "--svi-guide",
        help="AutoMultivariateNormal (default), AutoNormal or AutoIAFNormal.",
    ),
    svi_steps: int | None = typer.Option(
        None, "--svi-steps", help="SVI optimisation steps (default 1000)."
    ),
    svi_lr: float | None = typer.Option(
        None, "--svi-lr", help="SVI Adam learning rate (default 0.01)."
    ),
    map_steps: int | None = typer.Option(
        None, "--map-steps", help="MAP Adam steps per restart (default 600)."
    ),
    map_restarts: int | None = typer.Option(
        None,
        "--map-restarts",
        help="MAP restarts kept after screening 4x as many starts (default 4).",
    ),
    subhalos: int = typer.Option(
        0,
        "--subhalos",
        help="Fit N dark-matter subhalos (TNFW) jointly with lens and source and report "
        "the evidence for them against the smooth model (0: no subhalo search).",
    ),
    subhalo_mass_min: float = typer.Option(
        8.0, "--subhalo-mass-min", help="Lower bound of the log10(M200/M☉) prior."
    ),
    subhalo_mass_max: float = typer.Option(
        10.5, "--subhalo-mass-max", help="Upper bound of the log10(M200/M☉) prior."
    ),
    subhalo_threshold: float = typer.Option(
        5.0, "--subhalo-threshold", help="Δ log Z (Laplace) above which a subhalo is detected."
    ),
    coordinator: str | None = typer.Option(
        None,
        "--coordinator",
        help="host:port of process 0 of a multi-process catalogue run (jax.distributed); "
        "with --num-processes and --process-id.",
    ),
    num_processes: int | None = typer.Option(
        None, "--num-processes", help="Processes of a multi-process catalogue run."
    ),
    process_id: int | None = typer.Option(
        None, "--process-id", help="This process's rank, 0 … --num-processes − 1."
    ),
    distributed: bool = typer.Option(
        False,
        "--distributed",
        help="Join a multi-process catalogue run whose settings JAX reads from the cluster "
        "(SLURM, Open MPI, …) instead of --coordinator/--num-processes/--process-id.",
    ),
    seed: int = seed_option(0, "Random seed: equal seeds give equal posteriors."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace output files of an earlier run in the output folder."
    ),
) -> None:
    """Posterior of lens and source parameters (NUTS, SVI or MAP) with the learned source."""
    import dataclasses

    from lensgen.config import load_config
    from lensgen.errors import LensgenError
    from lensgen.infer.catalogue import is_catalogue, join_processes, run_catalogue
    from lensgen.infer.run import load_infer_config, prior_table, run_infer
    from lensgen.infer.subhalo_config import SubhaloConfig

    if subhalos < 0:
        raise LensgenError(f"--subhalos must be >= 0 (0: no subhalo search), got {subhalos}")
    if lens is not None:
        lens = list(lens_names(lens))
    if source is not None:
        source = model_name(source, INFER_SOURCES, "--source")
    if lens_light is not None:
        lens_light = model_name(lens_light, ("none", "SERSIC_ELLIPSE"), "--lens-light")
    cfg = load_infer_config(config, *flag_overrides(KEYS, locals()))
    sub_overrides, sub_flags = flag_overrides(SUBHALO_KEYS, locals())
    sub_overrides["n_subhalos"] = subhalos or None  # 0: no search, the settings are checked
    sub = load_config(SubhaloConfig, None, sub_overrides, sub_flags)
    sub = dataclasses.replace(
        sub, method=cfg.method if cfg.method in ("nuts", "svi") else "laplace"
    )
    inputs = list(obs or [])
    if show_priors:
        typer.echo(prior_table(cfg, Path(inputs[0]) if inputs else None), nl=False)
        return
    if not inputs:
        raise LensgenError("missing the observation file: lensgen infer OBS.fits")
    multi = distributed or any(v is not None for v in (coordinator, num_processes, process_id))
    if multi or is_catalogue(inputs):
        if subhalos > 0 or cfg.compare_sources:
            flag = "--subhalos" if subhalos > 0 else "--compare-sources"
            raise LensgenError(f"{flag} fits one observation; a catalogue run takes one lens at "
                               "a time with the smooth model")  # fmt: skip
        if multi:
            join_processes(coordinator, num_processes, process_id)
        double_precision()
        with progress() as bar:
            run = run_catalogue(cfg, inputs, out, seed=seed, overwrite=overwrite,
                                progress=stage_reporter(bar),
                                header=f"# lensgen infer {' '.join(inputs)} --seed {seed}\n")  # fmt: skip
        console.print(run.summary())
        if run.failed and not (run.done or run.skipped):
            raise typer.Exit(code=1)  # not one lens inferred: scripts must notice
        return
    obs = Path(inputs[0])
    double_precision()
    if subhalos > 0:
        from lensgen.infer.subhalo_report import run_subhalo_infer

        run_subhalo_infer(cfg, sub, obs, out, seed=seed, overwrite=overwrite, console=console)
        return
    with progress(transient=True) as bar:
        run_infer(cfg, obs, out, seed=seed, overwrite=overwrite, console=console,
                  progress=stage_reporter(bar))  # fmt: skip
