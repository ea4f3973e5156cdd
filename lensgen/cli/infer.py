"""``lensgen infer``: parse flags, resolve the config, call the inference workflow."""

from __future__ import annotations

from pathlib import Path

import typer

from lensgen.cli.common import console, double_precision, progress, seed_option, stage_reporter


def infer(
    obs: Path | None = typer.Argument(
        None, help="Observation FITS file (from `lensgen simulate` or real data)."
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
        help="Comma-separated lens models, e.g. SIE,SHEAR (default: the file's, else SIE,SHEAR).",
    ),
    source: str | None = typer.Option(
        None, "--source", help="vae (learned) or SERSIC_ELLIPSE (default: the file's)."
    ),
    lens_light: str | None = typer.Option(
        None, "--lens-light", help="none or SERSIC_ELLIPSE (default: the file's)."
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
        help="Effective sample size every scalar parameter must reach before NUTS stops "
        "(default 400; 0 draws all --num-samples).",
    ),
    target_accept: float | None = typer.Option(
        None, "--target-accept", help="NUTS target acceptance (default 0.8)."
    ),
    max_tree_depth: int | None = typer.Option(
        None, "--max-tree-depth", help="NUTS maximum tree depth (default 8)."
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
    seed: int = seed_option(0, "Random seed: equal seeds give equal posteriors."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace output files of an earlier run in the output folder."
    ),
) -> None:
    """Posterior of lens and source parameters (NUTS, SVI or MAP) with the learned source."""
    import math

    from lensgen.errors import LensgenError
    from lensgen.infer.run import load_infer_config, prior_table, run_infer

    if subhalos < 0:
        raise LensgenError(f"--subhalos must be >= 0 (0: no subhalo search), got {subhalos}")
    for flag, value in (("--subhalo-mass-min", subhalo_mass_min),
                        ("--subhalo-mass-max", subhalo_mass_max),
                        ("--subhalo-threshold", subhalo_threshold)):  # fmt: skip
        if not math.isfinite(value):
            raise LensgenError(f"{flag} must be a finite number, got {value}")
    cfg = load_infer_config(
        config,
        {
            "method": method,
            "priors": None if priors is None else str(priors),
            "source_model": None if source_model is None else str(source_model),
            "lens": None if lens is None else [s.strip() for s in lens.split(",") if s.strip()],
            "source": source,
            "lens_light": lens_light,
            "latent_prior": latent_prior,
            "likelihood": likelihood,
            "mask": None if mask is None else str(mask),
            "exptime": exptime,
            "background_rms": background_rms,
            "num_chains": num_chains,
            "num_warmup": num_warmup,
            "num_samples": num_samples,
            "target_ess": target_ess,
            "target_accept": target_accept,
            "max_tree_depth": max_tree_depth,
            "svi_guide": svi_guide,
            "svi_steps": svi_steps,
            "svi_lr": svi_lr,
            "map_steps": map_steps,
            "map_restarts": map_restarts,
        },
    )
    if show_priors:
        typer.echo(prior_table(cfg, obs), nl=False)
        return
    if obs is None:
        raise LensgenError("missing the observation file: lensgen infer OBS.fits")
    double_precision()
    if subhalos > 0:
        from lensgen.infer.subhalo_report import run_subhalo_infer
        from lensgen.infer.substructure import SubhaloConfig

        sub = SubhaloConfig(
            n_subhalos=subhalos,
            log10_m_min=subhalo_mass_min,
            log10_m_max=subhalo_mass_max,
            threshold=subhalo_threshold,
            method=cfg.method if cfg.method in ("nuts", "svi") else "laplace",
        )
        run_subhalo_infer(cfg, sub, obs, out, seed=seed, overwrite=overwrite, console=console)
        return
    with progress(transient=True) as bar:
        run_infer(cfg, obs, out, seed=seed, overwrite=overwrite, console=console,
                  progress=stage_reporter(bar))  # fmt: skip
