"""Inference workflow: MAP, then NUTS and/or SVI, then the outputs (``lensgen infer``).

The pieces live in :mod:`lensgen.infer.problem` (settings, model and data),
:mod:`lensgen.infer.mapfit` (MAP + Laplace) and :mod:`lensgen.infer.samplers`
(NUTS, SVI); they are re-exported here so ``lensgen.infer.run`` is the one import
a notebook needs.

Run in double precision, as the ``lensgen infer`` and ``lensgen demo`` commands do:
call ``jax.config.update("jax_enable_x64", True)`` before building a problem. The
posterior of a well-measured lens is ~1e-4 wide in θ_E under log-likelihoods of ~1e4,
so its Hessian (the Laplace mass matrix NUTS uses) has condition numbers near 1e7, past
what float32 resolves (BENCHMARKS.md, "Inference").
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax

from lensgen.config import dumps_toml, load_config, to_dict
from lensgen.infer.compare import (
    compare_outputs,
    compare_sources,
    comparison_key,
    print_evidence,
    write_evidence,
)
from lensgen.infer.coolest import coolest_names
from lensgen.infer.mapfit import MapResult, Mode, find_map, laplace
from lensgen.infer.outputs import check_run_outputs, infer_outputs, write_outputs
from lensgen.infer.problem import (
    GUIDES,
    InferConfig,
    InferenceResult,
    Problem,
    build_problem,
    load_mask,
    prior_table,
    raw_key,
    render_values,
    with_data,
)
from lensgen.infer.report import bestfit_plot, write_results
from lensgen.infer.samplers import ProgressFn, run_nuts, run_svi
from lensgen.infer.starts import estimate_geometry
from lensgen.io.atomic import check_output_dir
from lensgen.io.fits import read_observation

__all__ = [
    "GUIDES",
    "InferConfig",
    "InferenceResult",
    "MapResult",
    "Mode",
    "Problem",
    "ProgressFn",
    "build_problem",
    "estimate_geometry",
    "find_map",
    "laplace",
    "load_infer_config",
    "load_mask",
    "prior_table",
    "render_values",
    "run_infer",
    "run_inference",
    "run_nuts",
    "run_svi",
    "with_data",
]


def run_inference(
    key, problem: Problem, config: InferConfig, progress: ProgressFn | None = None
) -> list[InferenceResult]:
    """MAP, then the configured method(s); returns one result per method.

    Each result's ``diagnostics["timings"]`` says where its time went (seconds):
    ``compile``, ``map`` (the MAP fit it started from, compilation included) and the
    method's own stages (``warmup`` and ``sampling`` for NUTS, ``optimisation`` for SVI).
    """
    k_map, k_nuts, k_svi = jax.random.split(raw_key(key), 3)
    compile0 = problem.programs.compile_seconds
    if progress is not None:
        progress("MAP fit", 0, 1, f"{config.map_restarts} restarts")
    start = find_map(k_map, problem, config)
    map_compile = problem.programs.compile_seconds - compile0
    if progress is not None:
        rounds = len(start.restart_potentials) // max(config.map_restarts, 1)
        again = ", after a second round of restarts" if rounds > 1 else ""
        progress("MAP fit", 1, 1, f"χ²/N {start.chi2:.3f}{again}")
    if config.method == "map":
        return [start.as_result()]
    results = []
    if config.method in ("nuts", "nuts+svi"):
        results.append(run_nuts(k_nuts, problem, config, start, progress))
    if config.method in ("svi", "nuts+svi"):
        results.append(run_svi(k_svi, problem, config, start, progress))
    for r in results:
        timings = r.diagnostics["timings"]
        timings["compile"] += map_compile
        timings["map"] = start.wall_time_s - map_compile
    return results


def run_infer(
    config: InferConfig,
    obs_path: str | Path,
    out: str | Path,
    seed: int,
    overwrite: bool = False,
    console=None,
    source_model=None,
    progress: ProgressFn | None = None,
) -> list[InferenceResult]:
    """The ``lensgen infer`` workflow: read, fit, write the outputs into ``out``.

    Every output (:func:`lensgen.infer.outputs.infer_outputs`, with the resolved
    config as ``config.toml``) is checked before the fit and all are written together
    at the end, so a refused, failed or interrupted run changes nothing in ``out``.
    """

    check_output_dir(out)
    obs = read_observation(obs_path)
    mask = load_mask(config.mask, obs.image.shape) if config.mask else None
    problem = build_problem(config, obs, source_model, mask)
    names = output_names(config, problem, obs)
    compared = compare_outputs() if config.compare_sources else []
    check_run_outputs(out, [*compared, *names], overwrite,
                      inputs=(obs_path, config.mask, config.priors))  # fmt: skip
    warn_unfitted(config)
    extra = {}
    if config.compare_sources:
        fits = compare_sources(comparison_key(seed), config, obs, mask, problem.source_model,
                               progress=progress, built=problem)  # fmt: skip
        extra = comparison_writers(fits, obs)
        if console is not None:
            print_evidence(fits, console)
    results = run_inference(jax.random.PRNGKey(seed), problem, config, progress)
    header = f"# lensgen infer {obs_path} --seed {seed}\n"
    write_run(config, problem, obs, results, out, overwrite, header, extra=extra, console=console)
    if console is not None:
        console.print(f"wrote {len(names) + len(compared)} files to {out}")
    return results


def comparison_writers(fits, obs) -> dict[str, Any]:
    """Writers of the ``--compare-sources`` files: the evidence table and each best fit."""
    writers: dict[str, Any] = {"evidence.csv": lambda path: write_evidence(fits, path)}
    for f in fits:
        writers[f"bestfit_{f.source}.png"] = lambda path, f=f: bestfit_plot(
            f.problem, obs, f.map.as_result(), path, overwrite=True
        )
    return writers


def output_names(config: InferConfig, problem: Problem, obs) -> list[str]:
    """The files a run of ``config`` on ``problem`` and ``obs`` writes
    (:func:`~lensgen.infer.outputs.infer_outputs`, with the COOLEST files of
    :func:`~lensgen.infer.coolest.coolest_names`)."""

    theta = problem.priors.get("lens.0.theta_E")
    return infer_outputs(config, theta_e=theta is not None and not theta.fixed,
                         coolest=coolest_names(problem, obs))  # fmt: skip


def warn_unfitted(config: InferConfig) -> None:
    """Warn when the settings fit nothing: ``svi_steps = 0`` leaves SVI at its start."""
    if config.method in ("svi", "nuts+svi") and config.svi_steps == 0:
        warnings.warn(
            "--svi-steps 0: SVI fits nothing; its posterior is the guide's starting point "
            "around the MAP fit",
            stacklevel=2,
        )


def write_run(
    config: InferConfig,
    problem: Problem,
    obs,
    results: list[InferenceResult],
    out: str | Path,
    overwrite: bool,
    header: str,
    folder: str = "",
    extra: dict[str, Any] | None = None,
    console=None,
) -> list[Path]:
    """Write every output of a run together (:func:`lensgen.infer.outputs.write_outputs`).

    The inference outputs go to ``out/folder``; ``extra`` maps further file names
    (relative to ``out``) to functions that write them to a given path.
    """

    resolved = {k: v for k, v in to_dict(config).items() if v is not None}
    extra = extra or {}
    own = {f"{folder}/{n}" if folder else n: n for n in output_names(config, problem, obs)}

    def write(targets: dict[str, Path]) -> None:
        for name, writer in extra.items():
            writer(targets[name])
        paths = {own[k]: p for k, p in targets.items() if k in own}
        write_results(paths, problem, obs, results, console=console)
        paths["config.toml"].write_text(header + dumps_toml(resolved), encoding="utf-8")

    return write_outputs(out, [*extra, *own], overwrite, write)


def load_infer_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> InferConfig:
    """Defaults ← TOML file (top-level InferConfig keys, strict) ← flags (``None`` = unset)."""
    return load_config(InferConfig, path, overrides, flags)
