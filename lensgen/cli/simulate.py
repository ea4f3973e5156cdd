"""``lensgen simulate``: parse flags, resolve the config, call the simulate workflow."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path

import typer

from lensgen.cli.common import console, flag_overrides, seed_option
from lensgen.cli.vocabulary import mass_profiles, model_name


class ConvolutionChoice(StrEnum):
    auto = "auto"
    pixel = "pixel"
    subpixel = "subpixel"


KEYS = {
    "npix": "instrument.npix",
    "pixel_scale": "instrument.pixel_scale",
    "supersample": "instrument.supersample",
    "psf_fwhm": "instrument.psf_fwhm",
    "convolution": "instrument.convolution",
    "exptime": "noise.exptime",
    "background_rms": "noise.background_rms",
}
"""The config key each instrument and noise flag overrides (the lens, source and
subhalo flags edit components: :func:`lensgen.simulate.scene.apply_flags`)."""


def simulate(
    rein: float | None = typer.Option(
        None, "--rein", help="Einstein radius θ_E of the main lens [arcsec] (default 2.3)."
    ),
    lens: str | None = typer.Option(
        None,
        "--lens",
        help="Main lens profile, lenstronomy's name in any case: SIS (default), SIE, EPL, "
        "NFW, TNFW, POINT_MASS.",
    ),
    source: str | None = typer.Option(
        None,
        "--source",
        help="vae (learned, the default when a trained model exists) or SERSIC_ELLIPSE "
        "(alias sersic), in any case.",
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="Source model directory (default: the embedded model)."
    ),
    npix: int | None = typer.Option(
        None, "--npix", help="Image size in pixels (square; default 100)."
    ),
    pixel_scale: float | None = typer.Option(
        None, "--pixel-scale", help="Pixel scale [arcsec/pixel] (default 0.08)."
    ),
    supersample: int | None = typer.Option(
        None, "--supersample", help="Supersampling factor per axis (default 2)."
    ),
    psf_fwhm: float | None = typer.Option(
        None, "--psf-fwhm", help="PSF FWHM [arcsec] (default 0.15)."
    ),
    convolution: ConvolutionChoice | None = typer.Option(
        None,
        "--convolution",
        help="Apply the PSF to the binned pixels (pixel) or to the sub-pixels before binning "
        "(subpixel, lenstronomy's supersampling_convolution); auto (default): subpixel when "
        "the PSF FWHM is under 2 pixels and the image is supersampled.",
    ),
    exptime: float | None = typer.Option(
        None, "--exptime", help="Exposure time [s] for Poisson noise; 0 = none (default 1000)."
    ),
    background_rms: float | None = typer.Option(
        None, "--background-rms", help="Gaussian background rms [counts/s] (default 0.05)."
    ),
    n_subhalos: int | None = typer.Option(
        None,
        "--n-subhalos",
        help="Fixed number of random TNFW subhalos around the ring ([substructure] defaults).",
    ),
    subhalo_mass: float | None = typer.Option(
        None,
        "--subhalo-mass",
        help="Inject one TNFW subhalo of this M200 [M☉] at --subhalo-x, --subhalo-y.",
    ),
    subhalo_x: float | None = typer.Option(
        None, "--subhalo-x", help="x of the injected subhalo [arcsec]."
    ),
    subhalo_y: float | None = typer.Option(
        None, "--subhalo-y", help="y of the injected subhalo [arcsec]."
    ),
    n: int | None = typer.Option(
        None, "--n", help="Render N lenses with parameters drawn from the config into a FITS cube."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="TOML file with [[lens]], [[source]], [[lens_light]], [instrument], [noise], "
        "or a COOLEST JSON file (point estimates of its profiles, pixel grid, PSF, noise).",
    ),
    seed: int | None = seed_option(
        None, "Random seed: equal seeds give equal files (default: the config's seed, else 0)."
    ),
    out: Path = typer.Option(Path("obs.fits"), "--out", "-o", help="Output FITS file."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing outputs (the FITS file and its .toml/.png)."
    ),
    preview: bool = typer.Option(
        True, "--preview/--no-preview", help="Write a PNG preview next to the FITS file."
    ),
) -> None:
    """Render a lensed observation (FITS + PNG preview): ray-shooting, source, PSF, noise."""
    from lensgen.simulate.batch import run_simulate
    from lensgen.simulate.scene import (
        PARAMETRIC_SOURCE,
        apply_flags,
        apply_subhalo_flags,
        load_simulate_config,
    )

    if lens is not None:
        lens = model_name(lens, mass_profiles(), "--lens")
    if source is not None:
        source = model_name(source, ("vae", "SERSIC_ELLIPSE"), "--source")
    # The config holds plain strings, as a TOML file gives them.
    values = {**locals(), "convolution": None if convolution is None else convolution.value}
    cfg = load_simulate_config(config, *flag_overrides(KEYS, values))
    cfg = apply_flags(cfg, rein=rein, lens=lens, model_dir=model_dir)
    cfg = apply_subhalo_flags(cfg, n_subhalos, subhalo_mass, subhalo_x, subhalo_y)
    if source == "SERSIC_ELLIPSE":
        cfg = dataclasses.replace(cfg, source=(PARAMETRIC_SOURCE,))
    path = run_simulate(
        cfg, out, seed=seed, n=n, overwrite=overwrite, preview=preview and n is None,
        inputs=[config] if config else [],
    )
    what = f"{n} lenses" if n else "observation"
    console.print(f"wrote {what} to [bold]{path}[/]")
