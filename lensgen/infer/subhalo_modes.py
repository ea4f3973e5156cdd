"""Finding the modes of the subhalo model and its Laplace evidence and posterior.

The position of a subhalo is multimodal: it moves light only where there is light,
so each arc, and either side of a bright knot, can hold a mode of similar height.
:func:`scan_positions` grids the potential over positions and masses to pick start
points, :func:`find_modes` polishes the best starts into distinct local minima,
:func:`mixture_draws` samples the Laplace mixture over them, and
:func:`refit_smooth` re-polishes the smooth model from each mode so that the
detection statistic compares both models at their best.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to

from lensgen.errors import LensgenError
from lensgen.infer.mapfit import (
    MapResult,
    Mode,
    laplace,
    laplace_log_evidence,
    map_from_mode,
    model_functions,
)
from lensgen.infer.model import SUBHALO_SITES
from lensgen.infer.problem import Problem
from lensgen.infer.subhalo_config import SubhaloConfig
from lensgen.lensing.grid import pixel_centres


class SubhaloMode(NamedTuple):
    """One distinct local minimum of the subhalo model.

    ``mode`` the Newton-polished point with its Laplace covariance; ``log_evidence``
    its Laplace evidence; ``point`` its constrained site values.
    """

    mode: Mode
    log_evidence: float
    point: dict[str, np.ndarray]


def _unconstrained(problem: Problem, site: str, value) -> jnp.ndarray:
    """``value`` of ``site`` mapped to the sampler's unconstrained space (kept off the edges)."""
    prior = problem.priors[site]
    low, high = prior.support()
    value = np.clip(value, low + 1e-3 * (high - low), high - 1e-3 * (high - low))
    return biject_to(prior.to_numpyro().support).inv(jnp.asarray(value))


def scan_positions(problem: Problem, x_smooth: dict, sub: SubhaloConfig):
    """Best subhalo positions (arcsec, (n_starts, 2)) and log10 masses from a grid scan.

    The posterior of a subhalo's position is multimodal along the arcs (a subhalo
    moves light only where there is light, and either side of a bright knot fits
    partly), so gradient steps from a few guesses stall in side modes. The potential
    is evaluated with the smooth MAP's lens and source for ``subhalo.0`` at every
    pixel centre of the position prior and four masses across the mass prior (other
    subhalos at the lower mass bound); the ``n_starts`` best positions at least
    three pixels apart start the optimisation.
    """
    scene = problem.scene
    xg, yg = pixel_centres(scene.shape, scene.pixel_scale, scene.orientation)
    (xlo, xhi), (ylo, yhi) = (problem.priors[f"subhalo.0.center_{c}"].support() for c in "xy")
    inside = (xg > xlo) & (xg < xhi) & (yg > ylo) & (yg < yhi)
    gx, gy = xg[inside], yg[inside]
    lo, hi = sub.log10_m_min, sub.log10_m_max
    masses = lo + (np.arange(4) + 0.5) / 4 * (hi - lo)
    pos = np.repeat(np.stack([gx.ravel(), gy.ravel()], axis=1), len(masses), axis=0)
    mass = np.tile(masses, gx.size)
    n = len(mass)
    batch = {k: jnp.repeat(jnp.asarray(v)[None], n, axis=0) for k, v in x_smooth.items()}
    for k in range(problem.spec.subhalos):
        first = k == 0
        values = (mass if first else np.full(n, lo), pos[:, 0] * first, pos[:, 1] * first)
        for p, v in zip(SUBHALO_SITES, values, strict=True):
            batch[f"subhalo.{k}.{p}"] = _unconstrained(problem, f"subhalo.{k}.{p}", v)
    potential = model_functions(problem).potential
    programs = problem.programs
    scan = programs.get(
        "subhalo-scan",
        lambda: programs.compile(
            lambda xs, d: jax.lax.map(lambda x: potential(x, d), xs, batch_size=256)
        ),
    )
    u = np.asarray(scan(batch, problem.data)).reshape(-1, len(masses))
    u = np.where(np.isfinite(u), u, np.inf)
    best_mass, u = masses[np.argmin(u, axis=1)], u.min(axis=1)
    grid = pos[:: len(masses)]
    picked: list[int] = []
    for i in np.argsort(u):
        if all(np.hypot(*(grid[i] - grid[j])) >= 3 * scene.pixel_scale for j in picked):
            picked.append(int(i))
        if len(picked) == sub.n_starts:
            break
    return grid[picked], best_mass[picked]


def start_points(
    problem: Problem, x_smooth: dict, peaks: np.ndarray, masses, n_starts: int
) -> dict:
    """Unconstrained start points: the smooth MAP plus subhalos at scanned positions."""
    out = {k: jnp.repeat(jnp.asarray(v)[None], n_starts, axis=0) for k, v in x_smooth.items()}
    for k in range(problem.spec.subhalos):
        idx = (np.arange(n_starts) + k) % len(peaks)
        values = (masses[idx], peaks[idx, 0], peaks[idx, 1])
        for p, v in zip(SUBHALO_SITES, values, strict=True):
            out[f"subhalo.{k}.{p}"] = _unconstrained(problem, f"subhalo.{k}.{p}", v)
    return out


def mixture_draws(
    key, problem: Problem, modes: list[SubhaloMode], weights: np.ndarray, n: int
) -> dict:
    """``n`` constrained draws from the mixture of Laplace approximations ``N(x_i, Σ_i)``."""
    k_pick, k_noise = jax.random.split(key)
    flats = np.stack([np.asarray(ravel_pytree(m.mode.x)[0]) for m in modes])
    eye = np.eye(flats.shape[1])
    covs = [m.mode.cov for m in modes]
    roots = np.stack([np.linalg.cholesky(c + 1e-12 * np.trace(c) * eye) for c in covs])
    pick = np.asarray(jax.random.choice(k_pick, len(modes), (n,), p=jnp.asarray(weights)))
    noise = np.asarray(jax.random.normal(k_noise, (n, flats.shape[1])))
    flat = flats[pick] + np.einsum("nij,nj->ni", roots[pick], noise)
    flat0, unravel = ravel_pytree(modes[0].mode.x)
    batch = jax.vmap(unravel)(jnp.asarray(flat, flat0.dtype))
    constrain = model_functions(problem).constrain
    programs = problem.programs
    draw = programs.get(
        "subhalo-draws", lambda: programs.compile(jax.vmap(constrain, in_axes=(0, None)))
    )
    return {k: np.asarray(v)[None] for k, v in draw(batch, problem.data).items()}


def find_modes(subhalo: Problem, xs: dict, final, sub: SubhaloConfig) -> list[SubhaloMode]:
    """Distinct Newton-polished modes, best evidence first.

    Starts are polished in order of their Adam potential until ``n_polish`` of them
    are true minima (or ``2 n_polish`` have been tried).

    Starts on different arcs or either side of a knot end in different modes of
    similar height; keeping each lets the evidence sum them and the posterior mix
    them instead of trusting whichever Adam happened to rank first.
    """
    constrain = model_functions(subhalo).constrain
    final = np.where(np.isfinite(np.asarray(final)), np.asarray(final), np.inf)
    modes: list[SubhaloMode] = []
    accepted = 0
    for i in np.argsort(final)[: 2 * sub.n_polish]:
        if accepted == sub.n_polish:
            break
        mode = laplace(subhalo, jax.tree_util.tree_map(lambda a, i=i: a[i], xs))
        x, cov, grad = mode.x, mode.cov, mode.grad
        # Only true minima count: Newton can stop at a saddle or on a ridge, where the
        # floored inverse Hessian of `laplace` would inflate the evidence.
        if mode.curvature.min() <= 0 or grad @ cov @ grad > 1e-2:
            continue
        accepted += 1
        point = {k: np.asarray(v) for k, v in constrain(x, subhalo.data).items()}
        log_z = laplace_log_evidence(subhalo, x, cov)
        tol = 0.5 * subhalo.scene.pixel_scale
        same = [
            j
            for j, m in enumerate(modes)
            if all(abs(m.point[k] - v) < tol for k, v in point.items() if k.startswith("subhalo."))
        ]
        if not same:
            modes.append(SubhaloMode(mode, log_z, point))
        elif log_z > modes[same[0]].log_evidence:
            modes[same[0]] = SubhaloMode(mode, log_z, point)
    if not modes:
        raise LensgenError(
            f"subhalo fit: none of the best {2 * sub.n_polish} starts converged to a minimum; "
            "check the smooth fit (raise map_restarts / map_steps) or raise n_polish"
        )
    return sorted(modes, key=lambda m: -m.log_evidence)


def refit_smooth(smooth: Problem, smooth_map: MapResult, modes: list[SubhaloMode]) -> MapResult:
    """The smooth MAP, re-polished from each subhalo mode's lens and source when better.

    A subhalo can rescue a smooth fit stuck in a side mode; the smooth model must be
    compared at its own best, or Δ log Z would credit the subhalo with the rescue.
    """
    best = smooth_map.mode
    for m in modes:
        trial = laplace(smooth, {k: v for k, v in m.mode.x.items() if k in best.x})
        if trial.potential < best.potential - 1e-6:
            best = trial
    if best is smooth_map.mode:
        return smooth_map
    return map_from_mode(smooth, best, smooth_map)
