"""MAP fit and Laplace approximation in the unconstrained space NUTS works in.

Lensing posteriors are multimodal in the source orientation and position, so the
MAP is the best of several restarts optimised together (one vmapped, jitted
``lax.scan`` of Adam steps). The restarts are not blind prior draws
(:mod:`lensgen.infer.starts`): the lens geometry and the source's flux, position,
size and shape are read off the image. Every restart is polished with damped Newton
steps and the lowest wins; the inverse Hessian there is the Laplace covariance used
as NUTS's mass matrix and to initialise SVI.

Compiled programs depend only on the model function, never on the data (the
data are an argument), so fitting many observations of one shape compiles once.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from numpyro.infer import init_to_sample
from numpyro.infer.util import initialize_model

from lensgen.errors import LensgenError
from lensgen.infer.problem import (
    InferConfig,
    InferenceResult,
    Problem,
    raw_key,
    reduced_chi2,
    render_values,
)
from lensgen.infer.programs import ModelFunctions
from lensgen.infer.starts import map_starts
from lensgen.io.interrupt import check_interrupt

SCREEN = 4
"""Starts screened per kept MAP restart."""
CHI2_WARN = 1.5
"""A MAP fit with a reduced χ² above this is reported as a likely local mode."""


class MapSettings(NamedTuple):
    """What an Adam program of the MAP fit is compiled for."""

    steps: int
    lr: float


def model_functions(problem: Problem) -> ModelFunctions:
    """The potential and constrain functions of ``problem.model``."""
    return problem.programs.functions(problem.data)


def adam_program(problem: Problem, settings: MapSettings):
    """Compiled ``(x0 batch, data) -> (x, final potential, loss curve)`` for the restarts.

    Built once per ``settings`` and kept by ``problem.programs``.
    """
    return problem.programs.get(("adam", settings), lambda: _adam(problem, settings))


def _adam(problem: Problem, settings: MapSettings):
    potential = model_functions(problem).potential
    steps = settings.steps
    opt = optax.adam(optax.cosine_decay_schedule(settings.lr, steps, alpha=0.01))

    def optimise(x0, data):
        def step(carry, _):
            x, state = carry
            loss, grad = jax.value_and_grad(potential)(x, data)
            updates, state = opt.update(grad, state, x)
            return (optax.apply_updates(x, updates), state), loss

        (x, _), losses = jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)
        return x, potential(x, data), losses

    return problem.programs.compile(jax.vmap(optimise, in_axes=(0, None)))


def derivatives(problem: Problem):
    """Jitted value-and-gradient and Hessian of the potential of a flat vector."""
    potential = model_functions(problem).potential

    def flat_potential(v, like, data):
        return potential(ravel_pytree(like)[1](v), data)

    programs = problem.programs
    return programs.get(
        "derivatives",
        lambda: (
            programs.compile(jax.value_and_grad(flat_potential)),
            programs.compile(jax.hessian(flat_potential)),
        ),
    )


class Mode(NamedTuple):
    """A Newton-polished point of the posterior (unconstrained space).

    ``x`` the point; ``cov`` the Laplace covariance there; ``potential`` the negative
    log joint; ``grad`` its gradient and ``curvature`` the Hessian's eigenvalues
    (unfloored: a negative one marks a saddle), both over the flat vector ordered as
    ``jax.flatten_util.ravel_pytree``.
    """

    x: Any
    cov: np.ndarray
    potential: float
    grad: np.ndarray
    curvature: np.ndarray


DAMPING_START = 1e-6
"""Initial Levenberg–Marquardt damping λ of the Newton polish, relative to max|w|."""
DAMPING_DOWN = 10.0
"""Factor by which λ shrinks after a step that lowers the potential."""


def laplace(problem: Problem, x, newton_steps: int = 60) -> Mode:
    """Polish a mode with damped Newton steps; return it with the Laplace covariance.

    Adam crawls along the ridges of a lensing posterior (source size against the
    latent size, flux against shape; Hessian condition numbers reach 1e7), where
    Newton steps with the full Hessian go straight to the bottom. The steps are
    saddle-free and Levenberg–Marquardt damped: with H = V diag(w) Vᵀ the step is
    V diag(1/(|w| + λ max|w|)) Vᵀ g, so directions of negative curvature still go
    downhill; λ starts at :data:`DAMPING_START`, shrinks tenfold after a step that
    lowers the potential and grows fourfold until one does (on the seed case this
    needs 16 % fewer Hessians than starting at 1e-3 and shrinking threefold, and ends
    as low or lower; BENCHMARKS.md). Iterations stop when the potential changes by less than
    1e-4 or no damping helps. The covariance is the inverse Hessian of the potential
    in unconstrained space (ordered as ``jax.flatten_util.ravel_pytree``), with
    eigenvalues floored at 1e-8 of the largest so flat or saddle directions stay
    finite.
    """
    value_grad, hessian = derivatives(problem)
    flat, unravel = ravel_pytree(x)
    data = problem.data

    def eig(v):
        h = np.asarray(hessian(v, x, data), np.float64)
        return np.linalg.eigh(0.5 * (h + h.T))

    value, grad = value_grad(flat, x, data)
    w, vec = eig(flat)
    damping = DAMPING_START
    for _ in range(newton_steps):
        check_interrupt()  # between compiled calls: a safe point for Ctrl-C
        g = vec.T @ np.asarray(grad, np.float64)
        scale = max(np.abs(w).max(), 1e-30)
        while damping <= 1e3:
            trial = flat - jnp.asarray(vec @ (g / (np.abs(w) + damping * scale)), flat.dtype)
            trial_value, trial_grad = value_grad(trial, x, data)
            if trial_value < value:
                break
            damping *= 4.0
        else:
            break
        converged = value - trial_value < 1e-4
        flat, value, grad = trial, trial_value, trial_grad
        damping = max(damping / DAMPING_DOWN, 1e-12)
        w, vec = eig(flat)
        if converged:
            break
    floored = np.maximum(w, 1e-8 * max(np.abs(w).max(), 1e-30))
    return Mode(unravel(flat), (vec / floored) @ vec.T, float(value), np.asarray(grad), w)


class MapResult(NamedTuple):
    """The MAP fit: what NUTS, SVI and the subhalo search start from.

    ``point`` the constrained values (deterministic sites such as a flow's ``source.z``
    included); ``mode`` the polished point in unconstrained space with its Laplace
    covariance; ``chi2`` the reduced χ² of the model image there; ``loss`` the Adam
    potential curve of the winning restart; ``restart_potentials`` every kept
    restart's polished potential (inf where it failed); ``wall_time_s`` the time taken.
    """

    point: dict[str, np.ndarray]
    mode: Mode
    chi2: float
    loss: np.ndarray
    restart_potentials: np.ndarray
    wall_time_s: float

    def as_result(self) -> InferenceResult:
        """The MAP as an :class:`InferenceResult` of one draw (for the reports)."""
        samples = {k: v[None, None] for k, v in self.point.items()}
        diagnostics = {
            "map_loss": self.loss,
            "map_potential": self.mode.potential,
            "map_chi2": self.chi2,
            "wall_time_s": self.wall_time_s,
            "timings": {"map": self.wall_time_s},
        }
        return InferenceResult("map", samples, {}, self.point, diagnostics)


def find_map(key, problem: Problem, config: InferConfig) -> MapResult:
    """Maximum a posteriori fit in unconstrained space, best of ``map_restarts`` starts.

    ``SCREEN × map_restarts`` starts run ``map_steps // 3`` Adam steps, the best
    ``map_restarts`` of them then ``map_steps`` steps (cosine-decayed rate from
    ``map_lr``), and each of those is polished by :func:`laplace`; the lowest
    polished potential wins. See the module docstring for how the starts are chosen.
    """
    t0 = time.perf_counter()
    k_init, k_starts = jax.random.split(raw_key(key))
    n = config.map_restarts
    # Stage 1 screens SCREEN× as many starts for a third of the steps; the best n
    # go on to the full schedule (most starts fail in the first hundred steps).
    n_screen = SCREEN * n if n > 1 else 1
    info = initialize_model(
        jax.random.split(k_init, n_screen),
        problem.model,
        model_args=(problem.data,),
        init_strategy=init_to_sample,
    )
    init = map_starts(k_starts, problem, dict(info.param_info.z), n_screen)
    if n_screen > n:
        screen = adam_program(problem, MapSettings(max(config.map_steps // 3, 1), config.map_lr))
        xs, final, _ = screen(init, problem.data)
        keep = np.argsort(np.where(np.isfinite(final), final, np.inf))[:n]
        init = jax.tree_util.tree_map(lambda a: a[keep], xs)
    optimise = adam_program(problem, MapSettings(config.map_steps, config.map_lr))
    xs, final, losses = optimise(init, problem.data)
    final = np.where(np.isfinite(final), np.asarray(final), np.inf)
    # Adam leaves each restart somewhere on its ridge; the Newton polish (cheap: the
    # Hessian of ~25 parameters) ranks the restarts by where their ridges bottom out.
    polished = {}
    for i in np.flatnonzero(np.isfinite(final)):
        polished[i] = laplace(problem, jax.tree_util.tree_map(lambda a, i=i: a[i], xs))
        final[i] = polished[i].potential
    if not polished:
        raise LensgenError(
            "the MAP fit failed: every restart ended at a non-finite posterior density; "
            "check the priors and the noise map"
        )
    best = min(polished, key=lambda i: polished[i].potential)
    mode = polished[best]
    constrain = model_functions(problem).constrain
    point = {k: np.asarray(v) for k, v in constrain(mode.x, problem.data).items()}
    chi2 = reduced_chi2(problem, render_values(problem, point)[1])
    if chi2 > CHI2_WARN:
        warnings.warn(
            f"the MAP fit has χ²/N = {chi2:.2f}: it may sit in a local mode (source "
            "orientation/latent) or the model may not describe the data; NUTS and SVI start "
            "there. Try more --map-restarts / --map-steps, or check the model and noise map",
            stacklevel=2,
        )
    return MapResult(point, mode, chi2, np.asarray(losses[best]), final, time.perf_counter() - t0)


def map_from_mode(problem: Problem, mode: Mode, like: MapResult) -> MapResult:
    """``like`` moved to another polished ``mode`` of the same problem (point and χ² redone)."""
    constrain = model_functions(problem).constrain
    point = {k: np.asarray(v) for k, v in constrain(mode.x, problem.data).items()}
    chi2 = reduced_chi2(problem, render_values(problem, point)[1])
    return like._replace(point=point, mode=mode, chi2=chi2)
