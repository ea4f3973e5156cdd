"""Subhalo inference: p(θ_sub | x) jointly with lens and source, and a detection test.

Two nested models of one observation are fitted:

* the *smooth* model, :func:`lensgen.infer.problem.build_problem` on the file with its
  ``"SUBHALOS"`` scene entry dropped (a simulation's subhalos are truths, not a model);
* the *subhalo* model, the same plus ``n`` truncated-NFW subhalos with sites
  ``subhalo.<k>.log10_m`` (Uniform on ``[log10_m_min, log10_m_max]``, M200 in M☉) and
  ``subhalo.<k>.center_x`` / ``center_y`` (uniform over the image, arcsec), converted
  by :func:`lensgen.lensing.halos.tnfw_from_mass` ("TNFW" lens components). The
  conversion's redshifts, cosmology, truncation and concentration come from
  :class:`SubhaloConfig` where set, else from the file's ``SUBHALOS`` table header,
  else the :class:`~lensgen.lensing.halos.HaloConventions` defaults.

The smooth MAP (:func:`~lensgen.infer.mapfit.find_map`) is the start of the subhalo
model's optimisation, with the subhalo placed at the best positions of a grid scan
(:func:`~lensgen.infer.subhalo_modes.scan_positions`); the best start is polished by Newton steps
(:func:`~lensgen.infer.mapfit.laplace`). Each model's evidence is the Laplace
approximation in the unconstrained space the samplers use,
``log Z ≈ −U(x*) + (d/2) log 2π + ½ log det Σ`` (U the potential, Σ its inverse
Hessian at the mode x*); its Occam factor penalises the three extra parameters. The
subhalo is *detected* when ``Δ log Z = log Z_sub − log Z_smooth > threshold``
(5 by default: odds above e^5 ≈ 150, "decisive" on Jeffreys' scale). The posterior
of mass and position is drawn from the Laplace approximation, or from NUTS/SVI
(:mod:`lensgen.infer.samplers`) started there. Outputs: :mod:`lensgen.infer.subhalo_report`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lensgen.errors import LensgenError
from lensgen.infer.mapfit import MapResult, MapSettings, adam_program, find_map
from lensgen.infer.model import likelihood_sigma, make_model
from lensgen.infer.priors import Prior
from lensgen.infer.problem import (
    InferConfig,
    InferenceResult,
    Problem,
    build_problem,
    normalised_residuals,
    raw_key,
)
from lensgen.infer.problem import render_values as _render_values
from lensgen.infer.programs import Programs
from lensgen.infer.samplers import run_nuts, run_svi
from lensgen.infer.subhalo_config import SubhaloConfig
from lensgen.infer.subhalo_modes import (
    SubhaloMode,
    find_modes,
    laplace_log_evidence,
    mixture_draws,
    refit_smooth,
    scan_positions,
    start_points,
)
from lensgen.lensing.halos import CONVENTION_FIELDS, HaloConventions
from lensgen.lensing.render import make_renderer
from lensgen.lensing.substructure import SUBHALOS


class SubhaloFit(NamedTuple):
    """Both fits, the detection statistic and the subhalo posterior.

    ``delta_log_likelihood`` and ``delta_log_evidence`` are subhalo minus smooth model
    (natural log); ``modes`` the subhalo model's distinct modes (best evidence first)
    and ``mode_weights`` their posterior weights; ``posterior`` holds draws of every
    site, (1, n) or (chains, n); ``residual`` the smooth fit's (data − model)/σ (NaN
    where masked).
    """

    smooth: Problem
    subhalo: Problem
    smooth_map: MapResult
    subhalo_map: MapResult
    modes: list[SubhaloMode]
    mode_weights: np.ndarray
    posterior: InferenceResult
    log_evidence: tuple[float, float]
    delta_log_likelihood: float
    delta_log_evidence: float
    threshold: float
    detected: bool
    residual: np.ndarray


def subhalo_conventions(obs, sub: SubhaloConfig) -> HaloConventions:
    """Halo conventions for :func:`tnfw_from_mass`: config ← file's SUBHALOS header ← defaults."""
    table = (getattr(obs, "tables", None) or {}).get(SUBHALOS)
    # A file read from disk holds a BinTableHDU, a fresh simulation an astropy Table.
    header = {} if table is None else getattr(table, "header", None) or table.meta
    overrides = {name: getattr(sub, name) for name in CONVENTION_FIELDS}
    try:
        return HaloConventions.from_header(header, **overrides)
    except LensgenError as exc:
        raise LensgenError(f"{obs.path or 'observation'}: subhalo model: {exc}") from None


def build_subhalo_problems(
    config: InferConfig, sub: SubhaloConfig, obs, source_model=None, mask=None
) -> tuple[Problem, Problem]:
    """The smooth and the subhalo :class:`Problem` of ``obs`` (same data, priors, source)."""
    halos = subhalo_conventions(obs, sub)
    lens = tuple(config.lens) or tuple((obs.scene or {}).get("lens") or ())
    if lens:
        config = dataclasses.replace(config, lens=tuple(n for n in lens if n != SUBHALOS))
    smooth = build_problem(config, obs, source_model, mask)
    n = sub.n_subhalos
    ny, nx = smooth.scene.shape
    half_x, half_y = 0.5 * nx * smooth.scene.pixel_scale, 0.5 * ny * smooth.scene.pixel_scale
    if sub.box:
        half_x, half_y = min(half_x, sub.box), min(half_y, sub.box)
    priors = dict(smooth.priors)
    for k in range(n):
        priors[f"subhalo.{k}.log10_m"] = Prior("Uniform", (sub.log10_m_min, sub.log10_m_max))
        priors[f"subhalo.{k}.center_x"] = Prior("Uniform", (-half_x, half_x))
        priors[f"subhalo.{k}.center_y"] = Prior("Uniform", (-half_y, half_y))
    spec = dataclasses.replace(smooth.spec, subhalos=n, halos=halos)
    scene = dataclasses.replace(smooth.scene, lens=smooth.scene.lens + ("TNFW",) * n)

    psf = None if smooth.psf is None else jnp.asarray(smooth.psf)
    renderer = make_renderer(scene, psf)
    model = make_model(spec, priors, renderer, smooth.source_model)
    return smooth, smooth._replace(
        spec=spec, priors=priors, model=model, renderer=renderer, scene=scene,
        programs=Programs(model),
    )  # fmt: skip


def render_values(problem: Problem, values: dict[str, Any]):
    """Parameters and model image at ``values`` (deterministic sites such as a flow's z dropped)."""
    if problem.spec.latent == "flow":
        values = {k: v for k, v in values.items() if k != "source.z"}
    return _render_values(problem, values)


def log_likelihood(problem: Problem, values: dict[str, Any]) -> tuple[float, np.ndarray]:
    """Gaussian log-likelihood at ``values`` and the normalised residuals (NaN where masked)."""
    model = np.asarray(render_values(problem, values)[1], dtype=np.float64)
    sigma = np.asarray(likelihood_sigma(problem.data, jnp.asarray(model)), dtype=np.float64)
    r = normalised_residuals(problem, model)
    logl = -0.5 * r**2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)
    return float(np.nansum(logl)), r


def fit_subhalos(
    key,
    smooth: Problem,
    subhalo: Problem,
    config: InferConfig,
    sub: SubhaloConfig,
    smooth_map: MapResult | None = None,
) -> SubhaloFit:
    """MAP of both models, Laplace evidences, detection and the subhalo posterior.

    The subhalo model's evidence sums the Laplace evidences of its distinct modes
    (:func:`~lensgen.infer.subhalo_modes.find_modes`); its Laplace posterior is their mixture with those weights, and
    its MAP the mode of highest evidence (NUTS and SVI start there).
    """
    k_map, k_post = jax.random.split(raw_key(key))
    if smooth_map is None:
        smooth_map = find_map(k_map, smooth, config)
    t0 = time.perf_counter()
    peaks, masses = scan_positions(subhalo, smooth_map.mode.x, sub)
    optimise = adam_program(subhalo, MapSettings(sub.steps, sub.lr))
    starts = start_points(subhalo, smooth_map.mode.x, peaks, masses, len(peaks))
    xs, final, losses = optimise(starts, subhalo.data)
    modes = find_modes(subhalo, xs, final, sub)
    smooth_map = refit_smooth(smooth, smooth_map, modes)
    logl0, residual = log_likelihood(smooth, smooth_map.point)
    log_zs = np.array([m.log_evidence for m in modes])
    log_z1 = float(log_zs.max() + np.log(np.exp(log_zs - log_zs.max()).sum()))
    weights = np.exp(log_zs - log_z1)
    best = modes[0]
    logl1, r1 = log_likelihood(subhalo, best.point)
    log_z = (laplace_log_evidence(smooth, smooth_map.mode.x, smooth_map.mode.cov), log_z1)
    chi2 = float(np.nanmean(r1**2))
    subhalo_map = MapResult(
        best.point, best.mode, chi2, np.asarray(losses[int(np.nanargmin(np.asarray(final)))]),
        np.array([m.mode.potential for m in modes]), time.perf_counter() - t0,
    )  # fmt: skip
    if sub.method == "laplace":
        t1 = time.perf_counter()
        draws = mixture_draws(k_post, subhalo, modes, weights / weights.sum(), sub.n_draws)
        wall = time.perf_counter() - t1
        posterior = InferenceResult(
            "laplace", draws, {}, best.point, {"wall_time_s": wall, "timings": {"draws": wall}}
        )
    elif sub.method == "nuts":
        posterior = run_nuts(k_post, subhalo, config, subhalo_map)
    else:
        posterior = run_svi(k_post, subhalo, config, subhalo_map)
    d_log_z = log_z[1] - log_z[0]
    return SubhaloFit(smooth, subhalo, smooth_map, subhalo_map, modes, weights, posterior, log_z,
                      logl1 - logl0, d_log_z, sub.threshold, bool(d_log_z > sub.threshold),
                      residual)  # fmt: skip
