"""NUTS and SVI for a :class:`~lensgen.infer.problem.Problem`, started from its MAP fit.

NUTS is NumPyro's kernel (``numpyro.infer.hmc.hmc``) driven by a small loop of our
own: chains are ``vmap``-ped on one device and the whole transition is jitted
once per model, with the observed data, the starting points and the inverse mass
matrix as *arguments*. So a second observation of the same shape (the
calibration runs fifty) reuses the compiled sampler, and the mass matrix can be
the Laplace covariance at the MAP. The loop advances in chunks, which report
progress through a callback, let sampling stop once the effective sample size and
R-hat targets are met, and cost one compilation for any chunk length.

SVI uses NumPyro's autoguides with an optax Adam; the Normal guides start at the
Laplace approximation (location = MAP, scale from the inverse Hessian), so the
optimisation refines an already sensible posterior.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.flatten_util import ravel_pytree
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import SVI, Predictive, Trace_ELBO, init_to_value
from numpyro.infer.hmc import hmc

from lensgen.infer.mapfit import MapResult, latent_sites, model_functions
from lensgen.infer.problem import InferConfig, InferenceResult, Problem, raw_key

CHUNK = 50
"""Iterations per jitted call (progress-bar and stopping-check granularity)."""
RHAT_TARGET = 1.01
"""NUTS stops early only once every scalar parameter's split R-hat is below this."""
MIN_DRAWS = 100
"""Draws per chain before the early-stopping check starts (R-hat needs some length)."""
MIN_REFINE = 40
"""Warm-up iterations per stage below which the mass matrix is not refined."""

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, status)``, called after each jitted chunk of work."""


class NutsSettings(NamedTuple):
    """What the NUTS program is compiled for (the rest of InferConfig is run-time input)."""

    num_warmup: int
    target_accept: float
    max_tree_depth: int
    dense_mass: bool
    adapt_mass: bool

    @classmethod
    def from_config(cls, config: InferConfig) -> NutsSettings:
        return cls(
            _warmup_stages(config)[0],
            config.target_accept,
            config.max_tree_depth,
            config.dense_mass,
            config.mass_matrix == "adapt",
        )


def _nuts_program(problem: Problem, settings: NutsSettings):
    """Compiled ``init(keys, x0, inverse_mass, data)``, ``advance(states, data, n)`` and
    ``draws(z, data)`` (unconstrained draws → constrained sites)."""
    programs = problem.programs
    potential = model_functions(problem).potential
    init_kernel, sample_kernel = hmc(
        potential_fn_gen=lambda data: lambda x: potential(x, data), algo="NUTS"
    )

    def init_one(key, x0, inverse_mass, data):
        return init_kernel(
            x0,
            settings.num_warmup,
            inverse_mass_matrix=inverse_mass,
            adapt_mass_matrix=settings.adapt_mass,
            dense_mass=[tuple(sorted(x0))] if settings.dense_mass else [],
            target_accept_prob=settings.target_accept,
            max_tree_depth=settings.max_tree_depth,
            model_args=(data,),
            rng_key=key,
        )

    def record(states):
        return (
            states.z,
            states.diverging,
            states.potential_energy,
            states.accept_prob,
            states.num_steps,
        )

    def advance(states, data, n):
        def body(i, carry):
            states, buffer = carry
            states = jax.vmap(sample_kernel, in_axes=(0, None))(states, (data,))
            buffer = jax.tree_util.tree_map(lambda b, r: b.at[i].set(r), buffer, record(states))
            return states, buffer

        buffer = jax.tree_util.tree_map(
            lambda r: jnp.zeros((CHUNK, *r.shape), r.dtype), record(states)
        )
        return jax.lax.fori_loop(0, n, body, (states, buffer))

    constrain = model_functions(problem).constrain
    init = programs.compile(jax.vmap(init_one, in_axes=(0, 0, None, None)))
    draws = programs.compile(jax.vmap(jax.vmap(constrain, in_axes=(0, None)), in_axes=(0, None)))
    return init, programs.compile(advance), draws


def _warmup_stages(config: InferConfig) -> tuple[int, int]:
    """Warm-up iterations per stage and the number of stages (2 when refining the mass)."""
    if config.mass_matrix == "refine" and config.num_warmup >= 2 * MIN_REFINE:
        return config.num_warmup // 2, 2
    return config.num_warmup, 1


def refined_inverse_mass(laplace_cov: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The Laplace covariance corrected by the covariance of warm-up draws.

    The draws ((n, d), unconstrained, flattened) are whitened by the Laplace
    covariance's Cholesky factor L; their covariance C there is shrunk towards the
    identity, (n C + 5 I)/(n + 5), and mapped back: L C Lᵀ. Shrinking in whitened
    space keeps the scale of each parameter, which differ by orders of magnitude
    (θ_E to 1e-4, latents to 1): a learned source's posterior is wider and narrower
    than its curvature at the MAP along some latent directions, and that mismatch,
    not the lens, sets NUTS's step size and trajectory length.
    """
    d = len(laplace_cov)
    root = np.linalg.cholesky(laplace_cov + 1e-12 * np.trace(laplace_cov) * np.eye(d))
    white = np.linalg.solve(root, (draws - draws.mean(axis=0)).T).T
    n = len(draws)
    cov = (n * np.cov(white.T).reshape(d, d) + 5.0 * np.eye(d)) / (n + 5.0)
    return root @ cov @ root.T


def _convergence(z: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """ESS and split R-hat of every scalar site of draws ``z`` ((chain, draw) arrays)."""
    ess, rhat = {}, {}
    for name, v in z.items():
        if v.ndim == 2:
            ess[name] = float(effective_sample_size(v))
            rhat[name] = float(split_gelman_rubin(v)) if v.shape[0] > 1 else float("nan")
    return ess, rhat


def _targets_met(ess: dict[str, float], rhat: dict[str, float], target: int) -> bool:
    worst_rhat = max((r for r in rhat.values() if np.isfinite(r)), default=1.0)
    return bool(ess) and min(ess.values()) >= target and worst_rhat < RHAT_TARGET


def run_nuts(
    key,
    problem: Problem,
    config: InferConfig,
    start: MapResult,
    progress: ProgressFn | None = None,
) -> InferenceResult:
    """NUTS with ``num_chains`` chains vectorised on one device, started around the MAP.

    The inverse mass matrix starts as the Laplace covariance at the MAP. With
    ``mass_matrix = "refine"`` (default) the warm-up runs in two halves: after the
    first, the matrix is corrected by the covariance of its draws
    (:func:`refined_inverse_mass`) and the step size is adapted again; with
    ``"laplace"`` only the step size is adapted; with ``"adapt"`` NumPyro's windowed
    adaptation starts from it. Chains start at independent
    draws from the Laplace approximation with half its width, so R-hat stays
    meaningful. After ``MIN_DRAWS`` draws per chain, sampling stops at the first chunk
    where every scalar parameter has R-hat < ``RHAT_TARGET`` and ESS ≥
    ``config.target_ess``, else after ``num_samples`` draws with a one-line warning
    naming what was reached.
    """
    t0 = time.perf_counter()
    compile0 = problem.programs.compile_seconds
    k_start, k_run = jax.random.split(raw_key(key))
    settings = NutsSettings.from_config(config)
    init, advance, draws = problem.programs.get(settings, lambda: _nuts_program(problem, settings))
    flat, unravel = ravel_pytree(start.mode.x)
    cov = start.mode.cov
    root = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)) * np.trace(cov))
    noise = np.asarray(jax.random.normal(k_start, (config.num_chains, len(cov))))
    x0 = jax.vmap(unravel)(flat + jnp.asarray(0.5 * noise @ root.T, flat.dtype))
    inverse_mass = jnp.asarray(cov if config.dense_mass else np.diag(cov), flat.dtype)
    stage_len, stages = _warmup_stages(config)
    k_runs = jax.random.split(k_run, stages)
    states = init(jax.random.split(k_runs[0], config.num_chains), x0, inverse_mass, problem.data)

    phase_time = {"warmup": 0.0, "sampling": 0.0}
    pieces, done, drawn, warm = [], 0, 0, []
    ess: dict[str, float] = {}
    rhat: dict[str, float] = {}
    converged = False
    total = config.num_warmup + config.num_samples
    while done < total and not converged:
        # Chunks end at the warm-up boundaries so draws never mix with warm-up.
        if done < config.num_warmup:
            limit = stage_len if done < stage_len else config.num_warmup
        else:
            limit = total
        n = min(CHUNK, limit - done)
        phase = "warmup" if done < config.num_warmup else "sampling"
        c0, t1 = problem.programs.compile_seconds, time.perf_counter()
        states, buffer = advance(states, problem.data, n)
        buffer = jax.tree_util.tree_map(lambda b, n=n: np.asarray(b[:n]), buffer)
        phase_time[phase] += time.perf_counter() - t1 - (problem.programs.compile_seconds - c0)
        done += n
        steps = float(np.mean(buffer[4]))
        status = f"{steps:.0f} leapfrog steps/draw"
        if stages == 2 and done <= stage_len:
            warm.append(buffer[0])
            if done == stage_len:
                # Stage 2 of the warm-up: restart the kernels where the chains are, with
                # the mass matrix refined by stage 1's second half, and re-adapt the step.
                z_warm = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *warm)
                keep = jax.tree_util.tree_map(lambda a: a[stage_len // 2 :], z_warm)
                flat_draws = np.asarray(jax.vmap(jax.vmap(lambda v: ravel_pytree(v)[0]))(keep))
                refined = refined_inverse_mass(cov, flat_draws.reshape(-1, len(cov)))
                inverse_mass = jnp.asarray(
                    refined if config.dense_mass else np.diag(refined), flat.dtype
                )
                keys = jax.random.split(k_runs[1], config.num_chains)
                states = init(keys, states.z, inverse_mass, problem.data)
        if phase == "sampling":
            pieces.append(buffer)
            drawn += n
            if config.target_ess and drawn >= MIN_DRAWS:
                z = {k: np.concatenate([p[0][k] for p in pieces]).swapaxes(0, 1) for k in x0}
                ess, rhat = _convergence(z)
                converged = _targets_met(ess, rhat, config.target_ess)
                status += f", min ESS {min(ess.values(), default=0):.0f}"
        if progress is not None:
            label = "NUTS warm-up" if phase == "warmup" else "NUTS sampling"
            progress(label, done, total, status)
    z, diverging, energy, accept, n_steps = jax.tree_util.tree_map(
        lambda *a: np.concatenate(a, axis=0), *pieces
    )
    constrained = draws(z, problem.data)
    # (draw, chain) → (chain, draw)
    samples = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in constrained.items()}
    stats = {
        "diverging": np.swapaxes(diverging, 0, 1),
        "lp": -np.swapaxes(energy, 0, 1),
        "acceptance_rate": np.swapaxes(accept, 0, 1),
        "n_steps": np.swapaxes(n_steps, 0, 1),
    }
    scalars = {k: v for k, v in samples.items() if v.ndim == 2}
    ess, rhat = _convergence(scalars)
    converged = _targets_met(ess, rhat, config.target_ess) if config.target_ess else None
    if converged is False:
        worst_ess = min(ess, key=ess.get)
        worst_rhat = max(rhat, key=lambda k: rhat[k] if np.isfinite(rhat[k]) else -1.0)
        warnings.warn(
            f"NUTS did not reach its targets in {drawn} draws per chain: ESS({worst_ess}) "
            f"{ess[worst_ess]:.0f} (target {config.target_ess}), R-hat({worst_rhat}) "
            f"{rhat[worst_rhat]:.3f} (target < {RHAT_TARGET}); raise --num-samples or check "
            "the MAP fit",
            stacklevel=2,
        )
    wall = time.perf_counter() - t0
    diagnostics = {
        "divergences": int(stats["diverging"].sum()),
        "wall_time_s": wall,
        "mean_steps": float(stats["n_steps"].mean()),
        "draws_per_chain": drawn,
        "ess": ess,
        "rhat": rhat,
        "timings": {
            "compile": problem.programs.compile_seconds - compile0,
            "warmup": phase_time["warmup"],
            "sampling": phase_time["sampling"],
        },
    }
    if converged is not None:
        diagnostics["converged"] = converged
    return InferenceResult("nuts", samples, stats, start.point, diagnostics)


def _sample_sites(problem: Problem, point: dict) -> dict:
    """Latent sample sites of a point (the deterministic ``source.z`` of a flow dropped)."""
    drop = {"source.z"} if problem.spec.latent == "flow" else set()
    return {k: v for k, v in point.items() if k not in drop}


def _guide(problem: Problem, config: InferConfig, start: MapResult):
    from numpyro import handlers
    from numpyro.infer import autoguide

    # An autoguide learns the model's latent sites by running it once outside jit,
    # with a gradient; without the likelihood site that run touches only the priors
    # (the guide needs nothing else, and SVI itself uses the whole model).
    latent_model = handlers.block(problem.model, hide=["obs"])
    if config.svi_guide == "AutoIAFNormal":
        init = init_to_value(values=_sample_sites(problem, start.point))
        return autoguide.AutoIAFNormal(latent_model, init_loc_fn=init, num_flows=2)
    if config.svi_guide == "AutoMultivariateNormal":
        return autoguide.AutoMultivariateNormal(latent_model)
    return autoguide.AutoNormal(latent_model)


def _model_order(problem: Problem) -> list[str]:
    """Latent sites in the order the model samples them (the order autoguides ravel in).

    Read from an abstract trace (``jax.eval_shape``): only names are kept, nothing runs.
    """
    order: list[str] = []
    jax.eval_shape(lambda data: order.extend(latent_sites(problem, 0, data)), problem.data)
    return order


def _guide_init(problem: Problem, config: InferConfig, start: MapResult) -> dict | None:
    """Guide parameters of the Laplace approximation at the MAP (Normal guides only)."""
    x, cov = start.mode.x, start.mode.cov
    flat, unravel = ravel_pytree(x)
    if config.svi_guide == "AutoMultivariateNormal":
        # The guide ravels sites in model order, ravel_pytree in sorted order.
        sizes = {k: int(np.size(v)) for k, v in x.items()}
        offsets = dict(zip(sorted(x), np.cumsum([0] + [sizes[k] for k in sorted(x)]), strict=False))
        perm = np.concatenate([offsets[k] + np.arange(sizes[k]) for k in _model_order(problem)])
        cov = cov[np.ix_(perm, perm)]
        root = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)) * np.trace(cov))
        loc = jnp.asarray(np.asarray(flat)[perm], flat.dtype)
        return {"auto_loc": loc, "auto_scale_tril": jnp.asarray(root, flat.dtype)}
    if config.svi_guide == "AutoNormal":
        scale = unravel(jnp.asarray(np.sqrt(np.diag(cov)), flat.dtype))
        params = {f"{k}_auto_loc": v for k, v in x.items()}
        params.update({f"{k}_auto_scale": v for k, v in scale.items()})
        return params
    return None


def _scaled_locations() -> optax.GradientTransformation:
    """Multiply each location update by the guide's current standard deviation.

    Adam moves every parameter by about the learning rate per step, but in
    unconstrained space a well-measured θ_E has a posterior width of ~1e-4, so a
    rate that suits the guide's scales would throw its locations far off. Scaling
    location steps by the guide's own σ makes the rate a fraction of the posterior
    width for every parameter (a diagonal preconditioner); scales and flows are
    left as they are.
    """
    from numpyro.distributions import constraints
    from numpyro.distributions.transforms import biject_to

    def update(updates, state, params=None):
        out = dict(updates)
        if "auto_loc" in updates and "auto_scale_tril" in params:
            tril = biject_to(constraints.scaled_unit_lower_cholesky)(params["auto_scale_tril"])
            out["auto_loc"] = updates["auto_loc"] * jnp.sqrt(jnp.sum(tril**2, axis=-1))
        for name in updates:
            scale = name[: -len("_auto_loc")] + "_auto_scale"
            if name.endswith("_auto_loc") and scale in params:
                out[name] = updates[name] * jax.nn.softplus(params[scale])
        return out, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class SviSettings(NamedTuple):
    """What the SVI step is compiled for."""

    guide: str
    lr: float


def _svi_program(problem: Problem, config: InferConfig, start: MapResult):
    guide = _guide(problem, config, start)
    optim = numpyro.optim.optax_to_numpyro(
        optax.chain(optax.clip_by_global_norm(1e3), optax.adam(config.svi_lr), _scaled_locations())
    )
    svi = SVI(problem.model, guide, optim, loss=Trace_ELBO())

    def advance(state, data, n):
        def body(i, carry):
            state, losses = carry
            state, loss = svi.update(state, data)
            return state, losses.at[i].set(loss)

        return jax.lax.fori_loop(0, n, body, (state, jnp.zeros(CHUNK * 10)))

    return guide, svi, problem.programs.compile(advance)


def run_svi(
    key,
    problem: Problem,
    config: InferConfig,
    start: MapResult,
    progress: ProgressFn | None = None,
) -> InferenceResult:
    """SVI with an autoguide started at the Laplace approximation, Adam (optax), Trace ELBO.

    Steps run in jitted chunks; the ELBO curve (negative loss per step) is kept in
    ``diagnostics["elbo"]``.
    """
    t0 = time.perf_counter()
    compile0 = problem.programs.compile_seconds
    k_init, k_draw = jax.random.split(raw_key(key))
    build = lambda: _svi_program(problem, config, start)  # noqa: E731
    if config.svi_guide == "AutoIAFNormal":
        guide, svi, advance = build()  # its initial location is baked in: not reusable
    else:
        settings = SviSettings(config.svi_guide, config.svi_lr)
        guide, svi, advance = problem.programs.get(settings, build)
    state = svi.init(k_init, problem.data, init_params=_guide_init(problem, config, start))
    losses, done, chunk = [], 0, CHUNK * 10
    while done < config.svi_steps:
        n = min(chunk, config.svi_steps - done)
        state, loss = advance(state, problem.data, n)
        losses.append(np.asarray(loss[:n]))
        done += n
        if progress is not None:
            progress("SVI", done, config.svi_steps, f"ELBO {-float(losses[-1][-1]):.4g}")
    params = svi.get_params(state)
    sites = [*_sample_sites(problem, start.point)]
    if problem.spec.latent == "flow":
        sites.append("source.z")
    predictive = Predictive(
        problem.model,
        guide=guide,
        params=params,
        num_samples=config.svi_samples,
        return_sites=sites,
    )
    samples = {k: np.asarray(v)[None] for k, v in predictive(k_draw, problem.data).items()}
    elbo = -np.concatenate(losses) if losses else np.zeros(0)
    wall = time.perf_counter() - t0
    compile_s = problem.programs.compile_seconds - compile0
    diagnostics = {
        "elbo": elbo,
        "wall_time_s": wall,
        "timings": {"compile": compile_s, "optimisation": wall - compile_s},
    }
    return InferenceResult("svi", samples, {}, start.point, diagnostics)
