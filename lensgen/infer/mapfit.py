"""MAP fit and Laplace approximation in the unconstrained space NUTS works in.

Lensing posteriors are multimodal in the source orientation and position, so the
MAP is the best of several restarts optimised together (vmapped Adam steps, jitted
in chunks). The restarts are not blind prior draws
(:mod:`lensgen.infer.starts`): the lens geometry and the source's flux, position,
size and shape are read off the image. Every restart is polished with damped Newton
steps and the lowest wins; the inverse Hessian there is the Laplace covariance used
as NUTS's mass matrix and to initialise SVI.

Compiled programs depend only on the model function, never on the data (the
data are an argument), so fitting many observations of one shape compiles once.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import seed, trace

from lensgen.errors import LensgenError
from lensgen.infer.problem import (
    InferConfig,
    InferenceResult,
    Problem,
    normalised_residuals,
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
CHI2_RETRY = 2.0
"""χ² excess (in units of its noise spread) of the best restart above which
:func:`find_map` runs one more round of restarts."""


ADAM_CHUNK = 50
"""Adam steps per call of the compiled optimiser (Ctrl-C is honoured between calls)."""


def model_functions(problem: Problem) -> ModelFunctions:
    """The jitted potential and constrain functions of ``problem.model``."""
    return problem.programs.functions()


class MapSettings(NamedTuple):
    """Run-time settings of the Adam stage of a MAP fit (not part of the compiled program)."""

    steps: int
    lr: float


def adam_program(problem: Problem, settings: MapSettings):
    """``(x0 batch, data) -> (x, final potential, loss curve)``: Adam from each start.

    The learning rate decays from ``settings.lr`` to 1 % of it on a cosine over
    ``settings.steps`` steps. One compiled program per problem and batch size runs
    :data:`ADAM_CHUNK` steps a call, with the step count, its total and the rate as
    inputs, so every step count and rate (the MAP screen, its restarts, the subhalo
    fit) reuses it.
    """
    programs = problem.programs.get("adam", lambda: _adam_programs(problem))

    def run(x0, data):
        x, state = x0, programs.init(x0)
        curve = []
        for t in range(0, settings.steps, ADAM_CHUNK):
            check_interrupt()  # between compiled calls: a safe point for Ctrl-C
            x, state, losses = programs.steps(x, state, t, settings.steps, settings.lr, data)
            curve.append(np.asarray(losses)[:, : settings.steps - t])
        final = programs.potential(x, data)
        return x, final, np.concatenate(curve, axis=1) if curve else np.zeros((len(final), 0))

    return run


class AdamPrograms(NamedTuple):
    """Compiled parts of :func:`adam_program`, batched over starts."""

    init: Any  # x -> Adam state of each start
    steps: Any  # (x, adam state, first step, total steps, lr, data) -> (x, state, losses)
    potential: Any  # (x, data) -> potential of each start


def _adam_programs(problem: Problem) -> AdamPrograms:
    potential = model_functions(problem).potential
    adam = optax.scale_by_adam()

    def steps(x, state, t0, total, lr, data):
        def step(i, carry):
            x, state, losses = carry
            loss, grad = jax.value_and_grad(potential)(x, data)
            updates, state = adam.update(grad, state, x)
            # The rate of optax.cosine_decay_schedule(lr, total, alpha=0.01) at step t0 + i.
            rate = lr * (0.01 + 0.99 * 0.5 * (1.0 + jnp.cos(jnp.pi * (t0 + i) / total)))
            x = jax.tree_util.tree_map(lambda a, u: a - rate * u, x, updates)
            return x, state, losses.at[i].set(loss)

        n = jnp.minimum(ADAM_CHUNK, total - t0)  # a run-time trip count: one program for all
        losses = jnp.full(ADAM_CHUNK, jnp.nan, jax.eval_shape(potential, x, data).dtype)
        return jax.lax.fori_loop(0, n, step, (x, state, losses))

    compile = problem.programs.compile
    return AdamPrograms(
        jax.vmap(adam.init),
        compile(jax.vmap(steps, in_axes=(0, 0, None, None, None, None))),
        compile(jax.vmap(potential, in_axes=(0, None))),
    )


def latent_sites(problem: Problem, key, data) -> dict:
    """The model's latent sample sites (NumPyro trace entries), in the order it samples
    them, from a run seeded with ``key``; call it inside a traced function."""
    sites = trace(seed(problem.model, key)).get_trace(data)
    return {k: s for k, s in sites.items() if s["type"] == "sample" and not s["is_observed"]}


def prior_draws(key, problem: Problem, n: int) -> dict:
    """``n`` draws from the prior, in unconstrained space (a batch per latent site).

    One compiled program per problem: the model is traced with its sample sites drawn,
    and each value is mapped through the inverse bijection of its prior's support.
    """

    def draw(key, data):
        sites = latent_sites(problem, key, data)
        return {k: biject_to(s["fn"].support).inv(s["value"]) for k, s in sites.items()}

    programs = problem.programs
    program = programs.get("prior_draws", lambda: programs.compile(jax.vmap(draw, (0, None))))
    return program(jax.random.split(key, n), problem.data)


def derivatives(problem: Problem):
    """Jitted ``(v, like, data, with_hessian) -> (value, gradient, Hessian)`` of the
    potential of a flat vector ``v`` (unravelled like the pytree ``like``).

    One program for both uses of the Newton polish: with ``with_hessian`` False (a
    trial step) it evaluates only the value and gradient and returns a zero Hessian;
    with it True, the Hessian as the forward-mode Jacobian of the gradient, whose
    primal pass gives the value and gradient.
    """
    potential = model_functions(problem).potential

    def value_grad_hessian(v, like, data, with_hessian):
        def value_grad(v):
            return jax.value_and_grad(lambda v: potential(ravel_pytree(like)[1](v), data))(v)

        def hessian(v):
            def grad(v):
                value, g = value_grad(v)
                return g, (value, g)

            h, (value, g) = jax.jacfwd(grad, has_aux=True)(v)
            return value, g, h

        def no_hessian(v):
            value, g = value_grad(v)
            return value, g, jnp.zeros((v.size, v.size), v.dtype)

        return jax.lax.cond(with_hessian, hessian, no_hessian, v)

    programs = problem.programs
    return programs.get("derivatives", lambda: programs.compile(value_grad_hessian))


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
    derivs = derivatives(problem)
    flat, unravel = ravel_pytree(x)

    def eig(h):
        h = np.asarray(h, np.float64)
        return np.linalg.eigh(0.5 * (h + h.T))

    value, grad, h = derivs(flat, x, problem.data, True)
    w, vec = eig(h)
    damping = DAMPING_START
    for _ in range(newton_steps):
        check_interrupt()  # between compiled calls: a safe point for Ctrl-C
        g = vec.T @ np.asarray(grad, np.float64)
        scale = max(np.abs(w).max(), 1e-30)
        while damping <= 1e3:
            trial = flat - jnp.asarray(vec @ (g / (np.abs(w) + damping * scale)), flat.dtype)
            trial_value, trial_grad, _ = derivs(trial, x, problem.data, False)
            if trial_value < value:
                break
            damping *= 4.0
        else:
            break
        converged = value - trial_value < 1e-4
        flat, value, grad = trial, trial_value, trial_grad
        w, vec = eig(derivs(flat, x, problem.data, True)[2])
        damping = max(damping / DAMPING_DOWN, 1e-12)
        if converged:
            break
    floored = np.maximum(w, 1e-8 * max(np.abs(w).max(), 1e-30))
    return Mode(unravel(flat), (vec / floored) @ vec.T, float(value), np.asarray(grad), w)


def laplace_log_evidence(problem: Problem, x: dict, cov: np.ndarray) -> float:
    """``log Z ≈ −U(x) + (d/2) log 2π + ½ log det Σ`` at the mode ``x`` (unconstrained)."""
    potential = float(model_functions(problem).potential(x, problem.data))
    _, logdet = np.linalg.slogdet(cov)
    return -potential + 0.5 * len(cov) * math.log(2 * math.pi) + 0.5 * logdet


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

    With two or more restarts, a winner whose χ² lies more than :data:`CHI2_RETRY`
    noise spreads above what noise gives (:func:`_chi2_excess`) triggers one more round
    of restarts from new starts, and the best of both rounds wins. Restarts can share a
    local mode: in a K = 50 calibration, one lens's four restarts all ended with the
    lens centre 0.09″ off (χ² 2.3 spreads high), where 7 of 16 restarts find the true
    mode (BENCHMARKS.md).
    """
    t0 = time.perf_counter()
    k_init, k_starts = jax.random.split(raw_key(key))
    polished, final, losses = _restart_round(k_init, k_starts, problem, config)
    if not polished:
        raise LensgenError(
            "the MAP fit failed: every restart ended at a non-finite posterior density; "
            "check the priors and the noise map"
        )
    best, point, model = _best_fit(problem, polished)
    if config.map_restarts > 1 and _chi2_excess(problem, polished[best], model) > CHI2_RETRY:
        # A fit worse than the noise allows: the restarts may share a local mode (a lens
        # centre traded against the source position). One more round from new starts.
        more = _restart_round(jax.random.fold_in(k_init, 1), jax.random.fold_in(k_starts, 1),
                              problem, config)  # fmt: skip
        polished = {**polished, **{len(final) + i: m for i, m in more[0].items()}}
        final = np.concatenate([final, more[1]])
        losses = np.concatenate([np.asarray(losses), np.asarray(more[2])])
        best, point, model = _best_fit(problem, polished)
    mode = polished[best]
    chi2 = reduced_chi2(problem, model)
    if chi2 > CHI2_WARN:
        warnings.warn(
            f"the MAP fit has χ²/N = {chi2:.2f}: it may sit in a local mode (source "
            "orientation/latent) or the model may not describe the data; NUTS and SVI start "
            "there. Try more --map-restarts / --map-steps, or check the model and noise map",
            stacklevel=2,
        )
    return MapResult(point, mode, chi2, np.asarray(losses[best]), final, time.perf_counter() - t0)


def _restart_round(k_init, k_starts, problem: Problem, config: InferConfig):
    """One round of :func:`find_map`'s restarts: screen, optimise, polish.

    Returns the polished modes by restart index (restarts that ended finite), every
    restart's final potential (polished where finite, inf otherwise) and every
    restart's Adam potential curve.
    """
    n = config.map_restarts
    # Stage 1 screens SCREEN× as many starts for a third of the steps; the best n
    # go on to the full schedule (most starts fail in the first hundred steps).
    n_screen = SCREEN * n if n > 1 else 1
    init = map_starts(k_starts, problem, prior_draws(k_init, problem, n_screen), n_screen)
    if n_screen > n:
        # The screen runs in slices of n starts, so it shares the restarts' program.
        screen = adam_program(problem, MapSettings(max(config.map_steps // 3, 1), config.map_lr))
        pieces = [
            screen(jax.tree_util.tree_map(lambda a, i=i: a[i : i + n], init), problem.data)
            for i in range(0, n_screen, n)
        ]
        xs = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *[p[0] for p in pieces])
        final = np.concatenate([np.asarray(p[1]) for p in pieces])
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
    return polished, final, losses


def _best_fit(problem: Problem, polished: dict):
    """The lowest polished restart: its index, its constrained values and its model image."""
    best = min(polished, key=lambda i: polished[i].potential)
    constrain = model_functions(problem).constrain
    point = {k: np.asarray(v) for k, v in constrain(polished[best].x, problem.data).items()}
    return best, point, render_values(problem, point)[1]


def _chi2_excess(problem: Problem, mode: Mode, model) -> float:
    """How far the χ² of ``model`` (the image at ``mode``) lies above what noise gives, in
    units of its spread: (χ² − (N − d)) / √(2N) for N used pixels and d parameters."""
    resid = normalised_residuals(problem, model)
    n = int(np.isfinite(resid).sum())
    d = ravel_pytree(mode.x)[0].size
    return float((np.nansum(resid**2) - (n - d)) / math.sqrt(2.0 * max(n, 1)))


def map_from_mode(problem: Problem, mode: Mode, like: MapResult) -> MapResult:
    """``like`` moved to another polished ``mode`` of the same problem (point and χ² redone)."""
    constrain = model_functions(problem).constrain
    point = {k: np.asarray(v) for k, v in constrain(mode.x, problem.data).items()}
    chi2 = reduced_chi2(problem, render_values(problem, point)[1])
    return like._replace(point=point, mode=mode, chi2=chi2)
