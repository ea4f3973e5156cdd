"""MAP fit and Laplace approximation in the unconstrained space NUTS works in.

Lensing posteriors are multimodal in the source orientation and position, so the
MAP is the best of several restarts optimised together (one vmapped, jitted
``lax.scan`` of Adam steps). The restarts are not blind prior draws: the Einstein
radius and lens centre are read off the image (detected pixels lie near the
Einstein ring), and the restarts spread θ_E by ±15%, turn the source through the
full circle and scatter the source around the lens centre. Every restart is
polished with damped Newton steps and the lowest wins; the inverse Hessian there
is the Laplace covariance used as NUTS's mass matrix and to initialise SVI.

Compiled programs depend only on the model function, never on the data (the
data are an argument), so fitting many observations of one shape compiles once.
"""

from __future__ import annotations

import time
import warnings
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_sample
from numpyro.infer.util import initialize_model

from lensgen.errors import LensgenError
from lensgen.infer.model import likelihood_sigma
from lensgen.infer.problem import (
    InferConfig,
    InferenceResult,
    Problem,
    _keys,
    reduced_chi2,
    render_values,
)

SCREEN = 4
"""Starts screened per kept MAP restart."""
CHI2_WARN = 1.5
"""A MAP fit with a reduced χ² above this is reported as a likely local mode."""


class ModelFunctions(NamedTuple):
    """Data-independent functions of a model; ``x`` is a dict of unconstrained values."""

    potential: Any  # (x, data) -> negative log joint
    constrain: Any  # (x, data) -> constrained sample and deterministic sites


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_functions(problem: Problem) -> ModelFunctions:
    """The potential and constrain functions of ``problem.model`` (built once per model)."""
    fns = _FUNCTIONS.get(problem.model)
    if fns is None:
        info = initialize_model(
            jax.random.PRNGKey(0), problem.model, model_args=(problem.data,), dynamic_args=True
        )
        gen_potential, gen_constrain = info.potential_fn, info.postprocess_fn
        fns = ModelFunctions(
            potential=lambda x, data: gen_potential(data)(x),
            constrain=lambda x, data: gen_constrain(data)(x),
        )
        _FUNCTIONS[problem.model] = fns
    return fns


def cached_program(problem: Problem, name: tuple, build):
    """A compiled program of ``problem.model`` keyed by ``name``, built by ``build()`` once."""
    table = _PROGRAMS.setdefault(problem.model, {})
    if name not in table:
        table[name] = build()
    return table[name]


def estimate_geometry(problem: Problem) -> tuple[float, float, float] | None:
    """Einstein radius and lens centre (arcsec) read off the detected pixels.

    Pixels at S/N > 3 trace the lensed arcs, which lie near the Einstein ring: their
    mean position estimates the lens centre and their mean distance from it θ_E.
    Unweighted means, because the brightest arc of an off-centre source would pull
    a flux-weighted centroid towards it. ``None`` when nothing is detected.
    """
    data = problem.data
    image, mask = np.asarray(data.image), np.asarray(data.mask)
    sigma = np.asarray(likelihood_sigma(data, data.image))  # data as the model for Poisson σ
    detected = mask & (image > 3.0 * sigma)
    if detected.sum() < 3:
        return None
    ny, nx = image.shape
    scale = problem.scene.pixel_scale
    rows, cols = np.nonzero(detected)
    x = (cols - (nx - 1) / 2) * scale
    y = (rows - (ny - 1) / 2) * scale
    cx, cy = float(x.mean()), float(y.mean())
    return float(np.hypot(x - cx, y - cy).mean()), cx, cy


def _prior_centre(problem: Problem, axis: str, default: float) -> float:
    """Location of the lens-centre prior along ``axis`` (``default`` if it has none)."""
    prior = problem.priors.get(f"lens.0.center_{axis}")
    if prior is None or prior.dist not in ("Normal", "TruncatedNormal", "Fixed"):
        return default
    return prior.args[0]


def _starts(key, problem: Problem, z: dict, n: int) -> dict:
    """Unconstrained restart points: prior draws ``z`` with data-driven geometry."""
    geometry = estimate_geometry(problem)
    rng = np.random.default_rng(np.asarray(key).tolist())
    values: dict[str, np.ndarray] = {}
    if geometry is not None:
        theta, cx, cy = geometry
        spread = np.linspace(0.85, 1.15, n) if n > 1 else np.ones(1)
        jitter = 0.1 * theta * rng.standard_normal((2, n))
        jitter[:, :2] = 0.0
        # Half the starts put the lens at the detected pixels' centre, half at the
        # prior's centre: the arcs of an off-centre source pull the former aside.
        centre_x = np.where(np.arange(n) % 2 == 0, cx, _prior_centre(problem, "x", cx))
        centre_y = np.where(np.arange(n) % 2 == 0, cy, _prior_centre(problem, "y", cy))
        values = {
            "lens.0.theta_E": theta * spread,
            "lens.0.center_x": centre_x,
            "lens.0.center_y": centre_y,
            "source.0.center_x": centre_x + jitter[0],
            "source.0.center_y": centre_y + jitter[1],
        }
    values["source.0.phi_G"] = np.pi * (2 * np.arange(n) / n - 1) + rng.uniform(0, 2 * np.pi / n)
    out = dict(z)
    for site, value in values.items():
        prior = problem.priors.get(site)
        if site not in z or prior is None or prior.fixed:
            continue
        low, high = prior.support()
        pad = 1e-3 * (high - low) if np.isfinite(high - low) else 0.0
        value = np.clip(value, low + pad, high - pad)
        transform = biject_to(prior.to_numpyro().support).inv
        out[site] = transform(jnp.asarray(value, z[site].dtype)).reshape(z[site].shape)
    return out


def adam_program(problem: Problem, steps: int, lr: float):
    """Jitted ``(x0 batch, data) -> (x, final potential, loss curve)`` for the restarts."""
    potential = model_functions(problem).potential
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))

    def optimise(x0, data):
        def step(carry, _):
            x, state = carry
            loss, grad = jax.value_and_grad(potential)(x, data)
            updates, state = opt.update(grad, state, x)
            return (optax.apply_updates(x, updates), state), loss

        (x, _), losses = jax.lax.scan(step, (x0, opt.init(x0)), None, length=steps)
        return x, potential(x, data), losses

    return jax.jit(jax.vmap(optimise, in_axes=(0, None)))


def derivatives(problem: Problem):
    """Jitted value-and-gradient and Hessian of the potential of a flat vector."""
    potential = model_functions(problem).potential

    def flat_potential(v, like, data):
        return potential(ravel_pytree(like)[1](v), data)

    return cached_program(
        problem,
        ("derivatives",),
        lambda: (jax.jit(jax.value_and_grad(flat_potential)), jax.jit(jax.hessian(flat_potential))),
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


def laplace(problem: Problem, x, newton_steps: int = 60) -> Mode:
    """Polish a mode with damped Newton steps; return it with the Laplace covariance.

    Adam crawls along the ridges of a lensing posterior (source size against the
    latent size, flux against shape; Hessian condition numbers reach 1e7), where
    Newton steps with the full Hessian go straight to the bottom. The steps are
    saddle-free and Levenberg–Marquardt damped: with H = V diag(w) Vᵀ the step is
    V diag(1/(|w| + λ max|w|)) Vᵀ g, so directions of negative curvature still go
    downhill; λ shrinks threefold after a step that lowers the potential and grows
    fourfold until one does. Iterations stop when the potential changes by less than
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
    damping = 1e-3
    for _ in range(newton_steps):
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
        damping = max(damping / 3.0, 1e-9)
        w, vec = eig(flat)
        if converged:
            break
    floored = np.maximum(w, 1e-8 * max(np.abs(w).max(), 1e-30))
    return Mode(unravel(flat), (vec / floored) @ vec.T, float(value), np.asarray(grad), w)


def find_map(key, problem: Problem, config: InferConfig) -> InferenceResult:
    """Maximum a posteriori fit in unconstrained space, best of ``map_restarts`` starts.

    ``SCREEN × map_restarts`` starts run ``map_steps // 3`` Adam steps, the best
    ``map_restarts`` of them then ``map_steps`` steps (cosine-decayed rate from
    ``map_lr``), and each of those is polished by :func:`laplace`; the lowest
    polished potential wins. See the module docstring for how the starts are chosen.
    """
    t0 = time.perf_counter()
    k_init, k_starts = jax.random.split(_keys(key))
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
    init = _starts(k_starts, problem, dict(info.param_info.z), n_screen)
    if n_screen > n:
        steps = max(config.map_steps // 3, 1)
        screen = cached_program(
            problem,
            ("map", steps, config.map_lr),
            lambda: adam_program(problem, steps, config.map_lr),
        )
        xs, final, _ = screen(init, problem.data)
        keep = np.argsort(np.where(np.isfinite(final), final, np.inf))[:n]
        init = jax.tree_util.tree_map(lambda a: a[keep], xs)
    optimise = cached_program(
        problem,
        ("map", config.map_steps, config.map_lr),
        lambda: adam_program(problem, config.map_steps, config.map_lr),
    )
    xs, final, losses = optimise(init, problem.data)
    final = np.where(np.isfinite(final), np.asarray(final), np.inf)
    # Adam leaves each restart somewhere on its ridge; the Newton polish (cheap: the
    # Hessian of ~20 parameters) ranks the restarts by where their ridges bottom out.
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
    x_best, cov = polished[best].x, polished[best].cov
    constrain = model_functions(problem).constrain
    point = {k: np.asarray(v) for k, v in constrain(x_best, problem.data).items()}
    chi2 = reduced_chi2(problem, render_values(problem, point)[1])
    if chi2 > CHI2_WARN:
        warnings.warn(
            f"the MAP fit has χ²/N = {chi2:.2f}: it may sit in a local mode (source "
            "orientation/latent) or the model may not describe the data; NUTS and SVI start "
            "there. Try more --map-restarts / --map-steps, or check the model and noise map",
            stacklevel=2,
        )
    samples = {k: v[None, None] for k, v in point.items()}
    diagnostics = {
        "map_loss": np.asarray(losses[best]),
        "map_potential": float(final[best]),
        "map_chi2": chi2,
        "map_restart_potentials": final,
        "map_unconstrained": x_best,
        "laplace_cov": cov,
        "wall_time_s": time.perf_counter() - t0,
        "divergences": 0,
    }
    return InferenceResult("map", samples, {}, point, diagnostics)
