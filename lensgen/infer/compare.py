"""Which source the data need: the evidence of the learned, free-form and combined sources.

``lensgen infer --compare-sources`` fits each source model of :data:`COMPARED` by MAP
and scores it by its evidence: the Laplace approximation over the sampled parameters
(lens, latent, source geometry, regularisation; :func:`~lensgen.infer.mapfit.
laplace_log_evidence`) times, for the pixel-grid sources, the exact integral over
their amplitudes (:mod:`lensgen.infer.linear`). A Δ log Z of a few in favour of
``vae+pixels`` over ``vae`` says that the decoder misses structure in the source
(clumps, arms, a companion) that the data show; a Δ log Z against it says the
residual was not needed and the learned prior alone describes the galaxy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from lensgen.infer.mapfit import MapResult, find_map, laplace_log_evidence
from lensgen.infer.model import is_learned
from lensgen.infer.problem import InferConfig, Problem, build_problem

COMPARED = ("vae", "pixels", "vae+pixels")
"""The source models ``--compare-sources`` fits, in this order."""


class SourceFit(NamedTuple):
    """One compared source model: its problem, MAP, log evidence and wall time (s)."""

    source: str
    problem: Problem
    map: MapResult
    log_evidence: float
    wall_time_s: float


def compare_outputs() -> list[str]:
    """The files ``--compare-sources`` adds to a run's outputs."""
    return ["evidence.csv", *(f"bestfit_{s}.png" for s in COMPARED)]


def compare_sources(
    key,
    config: InferConfig,
    obs,
    mask: np.ndarray | None = None,
    source_model=None,
    sources: Sequence[str] = COMPARED,
    progress=None,
    built: Problem | None = None,
) -> list[SourceFit]:
    """MAP and log evidence of ``obs`` under each source model in ``sources``.

    ``config`` supplies everything else (lens, lens light, priors, MAP settings,
    shapelet order); the same key starts every fit. ``built``, the run's own problem,
    serves its source model (with its compiled programs) instead of a second build.
    """
    fits = []
    for i, source in enumerate(sources):
        if progress is not None:
            progress("source comparison", i, len(sources), source)
        t0 = time.perf_counter()
        cfg = dataclasses.replace(config, source=source)
        if built is not None and built.spec.source == source:
            problem = built
        else:
            problem = build_problem(cfg, obs, source_model if is_learned(source) else None, mask)
        result = find_map(key, problem, cfg)
        log_z = laplace_log_evidence(problem, result.mode.x, result.mode.cov)
        fits.append(SourceFit(source, problem, result, log_z, time.perf_counter() - t0))
    if progress is not None:
        progress("source comparison", len(sources), len(sources), "done")
    return fits


def evidence_rows(fits: Sequence[SourceFit]) -> list[dict]:
    """One row per source: log Z, Δ log Z to the best, χ²/N and θ_E at the MAP."""
    best = max(f.log_evidence for f in fits)
    rows = []
    for f in fits:
        theta = f.map.point.get("lens.0.theta_E")
        rows.append({
            "source": f.source,
            "log_evidence": f.log_evidence,
            "delta_log_evidence": f.log_evidence - best,
            "chi2": f.map.chi2,
            "theta_E": np.nan if theta is None else float(theta),
            "n_parameters": int(len(f.map.mode.cov)),
            "time_s": f.wall_time_s,
        })  # fmt: skip
    return rows


def write_evidence(fits: Sequence[SourceFit], path: Path) -> None:
    """The rows of :func:`evidence_rows` as CSV."""
    import pandas as pd

    pd.DataFrame(evidence_rows(fits)).to_csv(path, index=False, float_format="%.6g")


def print_evidence(fits: Sequence[SourceFit], console) -> None:
    """The comparison as a rich table, best evidence marked."""
    from rich.table import Table

    table = Table(title="source models: evidence (Laplace × exact over the grid's amplitudes)")
    for col in ("source", "log Z", "Δ log Z", "χ²/N", "θ_E", "parameters"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for row in evidence_rows(fits):
        mark = " ◀ best" if row["delta_log_evidence"] == 0 else ""
        table.add_row(row["source"] + mark, f"{row['log_evidence']:.1f}",
                      f"{row['delta_log_evidence']:.1f}", f"{row['chi2']:.3f}",
                      f"{row['theta_E']:.4f}", str(row["n_parameters"]))  # fmt: skip
    console.print(table)


def comparison_key(seed: int):
    """The key of the comparison's MAP fits (apart from the main run's)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 7)
