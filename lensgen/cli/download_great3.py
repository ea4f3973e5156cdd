"""``lensgen download-great3``: parse flags, run the workflow, print the summary."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lensgen.cli.common import console, seed_option
from lensgen.data.great3 import DEFAULT_BASE_URL
from lensgen.io.interrupt import deferred_interrupt


def download_great3(
    output: Path = typer.Option(
        Path("great3.fits"), "--output", "-o", help="Dataset file to write."
    ),
    branch: str = typer.Option(
        "real_galaxy-space-constant",
        "--branch",
        "-b",
        help="GREAT3 branch <experiment>-<obs>-<shear>: experiment in control, real_galaxy, "
        "multiepoch (6 epochs, coadded); obs in ground, space; shear in constant, variable. "
        "variable_psf and full branches are refused (their PSF varies over the field).",
    ),
    base_url: str = typer.Option(
        DEFAULT_BASE_URL,
        "--base-url",
        help="Mirror (http/https), or a local folder / file:// URL holding <branch>.tar.gz.",
    ),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Download cache (default: ~/.cache/lensgen/great3)."
    ),
    max_images: int = typer.Option(
        None,
        "--max-images",
        min=1,
        help="Stop reading after N subfields (10,000 stamps each); default: read until "
        "--n-stamps are selected (--synthetic: 3 subfields).",
    ),
    n_stamps: int = typer.Option(10_000, "--n-stamps", min=1, help="Keep at most N stamps."),
    snr_min: float = typer.Option(15.0, "--snr-min", help="Lowest matched-filter S/N kept."),
    snr_max: float = typer.Option(50.0, "--snr-max", help="Highest matched-filter S/N kept."),
    val_fraction: float = typer.Option(
        0.1,
        "--val-fraction",
        help="Share of stamps for validation, taken as whole subfields (leak-free: a "
        "subfield holds each galaxy's rotated twin).",
    ),
    seed: int = seed_option(0, "Seed of the train/val split (and --synthetic)."),
    synthetic: bool = typer.Option(
        False, "--synthetic", help="Generate a GREAT3-format branch offline instead of downloading."
    ),
    synthetic_grid: int = typer.Option(
        100, "--synthetic-grid", help="Stamps per side of a synthetic image (100 as GREAT3)."
    ),
    morphology: str = typer.Option(
        "structured",
        "--morphology",
        help="Galaxies of a --synthetic branch: structured (bulge + disk with clumps, arms, "
        "bars, lopsided disks, irregulars, companions) or bulge_disk (smooth only).",
    ),
    rebin: int = typer.Option(
        None,
        "--rebin",
        min=1,
        help="Sum N × N pixel blocks; default 2 for 0.05″ space stamps (96 × 96 → 48 × 48 "
        "of 0.1″), else 1.",
    ),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries of a dropped download."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    summary: Path = typer.Option(
        None, "--summary", help="Only print the summary of an existing dataset file."
    ),
    list_tarballs: bool = typer.Option(
        False,
        "--list",
        help="Print the tarballs the mirror (--base-url) offers, with sizes, and exit.",
    ),
) -> None:
    """Build the galaxy training set from GREAT3 postage stamps (streamed, resumable)."""
    if list_tarballs:  # before anything else: --list creates no cache folder, no output
        from lensgen.data.great3 import list_offers, offer_lines

        for line in offer_lines(list_offers(base_url), base_url):
            console.print(line, markup=False)
        return
    from lensgen.data.build import Great3Config, build_great3_dataset, summary_lines
    from lensgen.io.dataset import read_dataset

    if summary is not None:
        for line in summary_lines(read_dataset(summary)):
            console.print(line)
        return
    config = Great3Config(
        branch=branch,
        base_url=base_url,
        cache_dir=str(cache_dir or ""),
        max_images=max_images,
        n_stamps=n_stamps,
        snr_min=snr_min,
        snr_max=snr_max,
        val_fraction=val_fraction,
        seed=seed,
        synthetic=synthetic,
        synthetic_grid=synthetic_grid,
        morphology=morphology,
        rebin=rebin,
        retries=retries,
    )
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not sys.stdout.isatty(),
    )
    with deferred_interrupt(), bar:  # Ctrl-C between blocks and subfields, never inside JAX
        task = bar.add_task(f"{branch}.tar.gz", total=None)

        def on_bytes(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        ds = build_great3_dataset(
            config, output, overwrite, on_bytes=on_bytes, on_status=lambda m: console.print(m)
        )
    for line in summary_lines(ds):
        console.print(line)
    console.print(f"wrote {output}")
