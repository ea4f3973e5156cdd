"""NUTS and SVI for a :class:`~lensgen.infer.problem.Problem`, started from its MAP fit.

NUTS is NumPyro's kernel (``numpyro.infer.hmc.hmc``) driven by a small loop of our
own: all chains advance in one jitted program per model (``vmap``-ped in lockstep on
an accelerator, one after another on a CPU: :func:`chains_in_lockstep`), with the
observed data, the starting points and the inverse mass matrix as *arguments*. So a
second observation of the same shape (the calibration runs fifty) reuses the
compiled sampler, and the mass matrix can be the Laplace covariance at the MAP. The
loop advances in chunks, which report progress through a callback, let sampling
stop once the effective sample size and R-hat targets are met, and cost one
compilation for any chunk length.

SVI fits a Gaussian guide over the same unconstrained vector, started at the Laplace
approximation (location = MAP, scale from the inverse Hessian), so the optimisation
refines an already sensible posterior; NumPyro's ``AutoIAFNormal`` is the other choice.
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

from lensgen.infer.mapfit import MapResult, model_functions
from lensgen.infer.problem import InferConfig, InferenceResult, Problem, raw_key

CHUNK = 50
"""Iterations per jitted call (progress-bar and stopping-check granularity)."""
SVI_DRAW_BATCH = 500
"""Posterior draws of a fitted SVI guide per compiled call."""
RHAT_TARGET = 1.01
"""NUTS stops early only once every scalar parameter's split R-hat is below this."""
ESS_GROUPS = ("lens.", "subhalo.")
"""Sites whose ESS must reach ``target_ess`` (the mass model); the others need only R-hat."""
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
    max_tree_depth: tuple[int, int]
    dense_mass: bool
    adapt_mass: bool
    lockstep: bool

    @classmethod
    def from_config(cls, config: InferConfig) -> NutsSettings:
        return cls(
            _warmup_stages(config)[0],
            config.target_accept,
            (min(config.max_tree_depth_warmup, config.max_tree_depth), config.max_tree_depth),
            config.dense_mass,
            config.mass_matrix == "adapt",
            chains_in_lockstep(),
        )


def chains_in_lockstep() -> bool:
    """Whether the NUTS chains are ``vmap``-ped (True on a GPU or TPU) or run one after
    another inside the same program (on a CPU).

    A vmapped NUTS transition ends when the longest of the chains' trajectories does,
    so every chain pays for the longest tree. An accelerator evaluates the batch's
    gradients in parallel and gains from it; a CPU evaluates a batch of gradients in
    the time of as many single ones, so there the wait is pure loss: on the seed case
    (60 × 60, 4 chains) the per-iteration maximum of the leapfrog steps was 1.3–1.4×
    their mean, at the same 6.6–6.9 ms per chain and gradient in both layouts
    (BENCHMARKS.md, "Chains in lockstep").
    """
    return jax.default_backend() != "cpu"


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
            if settings.lockstep:
                states = jax.vmap(sample_kernel, in_axes=(0, None))(states, (data,))
            else:
                states = jax.lax.map(lambda state: sample_kernel(state, (data,)), states)
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


def convergence(z: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """ESS and split R-hat of every scalar site of draws ``z`` ((chain, draw) arrays)."""
    ess, rhat = {}, {}
    for name, v in z.items():
        if v.ndim == 2:
            ess[name] = float(effective_sample_size(v))
            rhat[name] = float(split_gelman_rubin(v)) if v.shape[0] > 1 else float("nan")
    return ess, rhat


def mass_ess(ess: dict[str, float]) -> dict[str, float]:
    """The ESS of the mass model's parameters (of every site if there is none)."""
    return {k: v for k, v in ess.items() if k.startswith(ESS_GROUPS)} or ess


def _targets_met(ess: dict[str, float], rhat: dict[str, float], target: int) -> bool:
    """Every mass parameter (lens and subhalos) at ESS ≥ ``target`` and every parameter
    at R-hat < 1.01.

    The source's and the lens light's parameters are nuisances for the lens: their ESS
    is reported but does not hold sampling up, while R-hat covers them. Since the
    learned source is placed by its core (:func:`lensgen.source.model.core_moments`),
    its parameters mix at about the lens's rate (seed case, 250 draws per chain:
    source ESS 394–1092, lens 614–1206; BENCHMARKS.md, "Core placement of the learned
    source"). A source whose posterior keeps a ridge that the placement does not remove
    should not hold up a lens that has converged.
    """
    worst_rhat = max((r for r in rhat.values() if np.isfinite(r)), default=1.0)
    mass = mass_ess(ess)
    return bool(mass) and min(mass.values()) >= target and worst_rhat < RHAT_TARGET


def run_nuts(
    key,
    problem: Problem,
    config: InferConfig,
    start: MapResult,
    progress: ProgressFn | None = None,
) -> InferenceResult:
    """NUTS with ``num_chains`` chains in one program on one device, started around the MAP.

    The inverse mass matrix starts as the Laplace covariance at the MAP. With
    ``mass_matrix = "refine"`` (default) the warm-up runs in two halves: after the
    first, the matrix is corrected by the covariance of its draws
    (:func:`refined_inverse_mass`) and the step size is adapted again; with
    ``"laplace"`` only the step size is adapted; with ``"adapt"`` NumPyro's windowed
    adaptation starts from it. Chains start at independent
    draws from the Laplace approximation with half its width, so R-hat stays
    meaningful. After ``MIN_DRAWS`` draws per chain, sampling stops at the first chunk
    where every scalar parameter has R-hat < ``RHAT_TARGET`` and every mass parameter
    ESS ≥ ``config.target_ess`` (:func:`_targets_met`), else after
    ``num_samples`` draws with a one-line warning naming what was reached. Trees are
    at most ``config.max_tree_depth_warmup`` deep in the warm-up, whose draws serve
    only to adapt the step size and the mass matrix, and ``config.max_tree_depth``
    deep while sampling.
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
                ess, rhat = convergence(z)
                converged = _targets_met(ess, rhat, config.target_ess)
                status += f", min mass ESS {min(mass_ess(ess).values(), default=0):.0f}"
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
    ess, rhat = convergence(scalars)
    converged = _targets_met(ess, rhat, config.target_ess) if config.target_ess else None
    if converged is False:
        mass = mass_ess(ess)
        worst_ess = min(mass, key=mass.get)
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


class SviSettings(NamedTuple):
    """What the SVI step is compiled for (the rate, steps and draws are run-time inputs)."""

    guide: str


class GaussianGuide(NamedTuple):
    """Parameters of a Gaussian q(x) = N(loc, L Lᵀ) over the flat unconstrained vector.

    L = diag(σ) C with σ = softplus(``raw_diag``) and C unit lower triangular, whose
    entries below the diagonal are ``tril``'s (unused by the diagonal guide): the
    correlations are dimensionless and the scales positive for every value of the
    parameters, so one Adam rate suits parameters whose widths differ by orders of
    magnitude (as NumPyro's ``scaled_unit_lower_cholesky``). See :func:`_scale_tril`.
    """

    loc: jnp.ndarray
    raw_diag: jnp.ndarray
    tril: jnp.ndarray


def _softplus_inverse(y: np.ndarray) -> np.ndarray:
    return y + np.log(-np.expm1(-y))


def _gaussian_guide_at(start: MapResult, full_rank: bool) -> GaussianGuide:
    """The Laplace approximation at the MAP as a guide (location = MAP, L = Cholesky of
    the inverse Hessian, or its diagonal's square root)."""
    flat, _ = ravel_pytree(start.mode.x)
    cov = np.asarray(start.mode.cov)
    d = len(cov)
    if full_rank:
        root = np.linalg.cholesky(cov + 1e-12 * np.eye(d) * np.trace(cov))
    else:
        root = np.diag(np.sqrt(np.diag(cov)))
    diag = np.maximum(np.diag(root), 1e-30)
    unit = np.tril(root / diag[:, None], -1)
    as_flat = lambda a: jnp.asarray(a, flat.dtype)  # noqa: E731
    return GaussianGuide(flat, as_flat(_softplus_inverse(diag)), as_flat(unit))


def _scale_tril(guide: GaussianGuide, full_rank: bool) -> jnp.ndarray:
    """L of the guide: diag(σ) C (see :class:`GaussianGuide`), or diag(σ)."""
    sigma = jax.nn.softplus(guide.raw_diag)
    if not full_rank:
        return jnp.diag(sigma)
    return sigma[:, None] * (jnp.tril(guide.tril, -1) + jnp.eye(len(sigma), dtype=sigma.dtype))


def _scaled_locations(full_rank: bool) -> optax.GradientTransformation:
    """Multiply each location update by the guide's current standard deviation.

    Adam moves every parameter by about the learning rate per step, but in
    unconstrained space a well-measured θ_E has a posterior width of ~1e-4, so a
    rate that suits the guide's scales would throw its locations far off. Scaling
    location steps by the guide's own σ (the row norms of L) makes the rate a fraction
    of the posterior width for every parameter (a diagonal preconditioner); the
    scales are left as they are.
    """

    def update(updates, state, params=None):
        sigma = jnp.sqrt(jnp.sum(_scale_tril(params, full_rank) ** 2, axis=-1))
        return updates._replace(loc=updates.loc * sigma), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _gaussian_svi_program(problem: Problem, full_rank: bool):
    """The optimiser, and compiled ``advance(guide, opt_state, step, key, lr, like, data,
    n)`` and ``draws(guide, key, batch, like, data)`` (:data:`SVI_DRAW_BATCH` draws a
    batch) of SVI with a Gaussian guide.

    The negative ELBO of one draw x = loc + L ε is U(x) − log|L| − d/2 (1 + log 2π),
    with U the model's potential (its negative log joint in unconstrained space) and
    the guide's entropy exact; its gradient is the reparameterisation estimator of
    Kingma & Welling (2013) with one draw per step, as NumPyro's ``Trace_ELBO``. The
    guide lives on the flat vector of the MAP's Laplace step (unravelled like the
    pytree ``like``), so it starts there. Adam's rate is a run-time input: the chain
    ends with a unit rate and its updates are multiplied by ``lr``.
    """
    potential = model_functions(problem).potential
    constrain = model_functions(problem).constrain
    optimizer = optax.chain(
        optax.clip_by_global_norm(1e3), optax.adam(1.0), _scaled_locations(full_rank)
    )

    def negative_elbo(guide, eps, like, data):
        root = _scale_tril(guide, full_rank)
        x = ravel_pytree(like)[1](guide.loc + root @ eps)
        d = eps.shape[0]
        entropy = jnp.sum(jnp.log(jnp.diag(root))) + 0.5 * d * (1.0 + jnp.log(2 * jnp.pi))
        return potential(x, data) - entropy

    def advance(guide, opt_state, step, key, lr, like, data, n):
        def body(i, carry):
            guide, opt_state, losses = carry
            eps = jax.random.normal(jax.random.fold_in(key, step + i), guide.loc.shape)
            loss, grad = jax.value_and_grad(negative_elbo)(guide, eps, like, data)
            updates, opt_state = optimizer.update(grad, opt_state, guide)
            updates = jax.tree_util.tree_map(lambda u: lr * u, updates)
            return optax.apply_updates(guide, updates), opt_state, losses.at[i].set(loss)

        losses = jnp.zeros(CHUNK * 10, guide.loc.dtype)
        return jax.lax.fori_loop(0, n, body, (guide, opt_state, losses))

    def draws(guide, key, batch, like, data):
        root = _scale_tril(guide, full_rank)
        unravel = ravel_pytree(like)[1]
        shape = (SVI_DRAW_BATCH, *guide.loc.shape)
        eps = jax.random.normal(jax.random.fold_in(key, batch), shape, guide.loc.dtype)
        return jax.vmap(lambda e: constrain(unravel(guide.loc + root @ e), data))(eps)

    programs = problem.programs
    return optimizer, programs.compile(advance), programs.compile(draws)


def _svi_chunks(chunk: Callable, steps: int, progress: ProgressFn | None) -> list[np.ndarray]:
    """Run ``steps`` SVI steps as ``chunk(done, n) -> losses`` calls of at most
    ``10 * CHUNK`` steps, reporting progress after each; returns the loss chunks."""
    losses, done = [], 0
    while done < steps:
        n = min(CHUNK * 10, steps - done)
        losses.append(np.asarray(chunk(done, n)[:n]))
        done += n
        if progress is not None:
            progress("SVI", done, steps, f"ELBO {-float(losses[-1][-1]):.4g}")
    return losses


def _run_gaussian_svi(key, problem, config, start, progress):
    """Gaussian-guide SVI; returns (draws of every site, negative-ELBO chunks)."""
    full_rank = config.svi_guide == "AutoMultivariateNormal"
    optimizer, advance, draws = problem.programs.get(
        SviSettings(config.svi_guide), lambda: _gaussian_svi_program(problem, full_rank)
    )
    k_steps, k_draw = jax.random.split(key)
    like = start.mode.x
    guide = _gaussian_guide_at(start, full_rank)
    opt_state = optimizer.init(guide)
    lr = jnp.asarray(config.svi_lr, guide.loc.dtype)

    def chunk(done, n):
        nonlocal guide, opt_state
        guide, opt_state, loss = advance(guide, opt_state, done, k_steps, lr, like, problem.data, n)
        return loss

    losses = _svi_chunks(chunk, config.svi_steps, progress)
    # Draws in batches of a fixed size, so any number of them runs one program.
    n_batches = -(-config.svi_samples // SVI_DRAW_BATCH)
    parts = [draws(guide, k_draw, i, like, problem.data) for i in range(n_batches)]
    samples = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    return {k: v[: config.svi_samples] for k, v in samples.items()}, losses


def _run_iaf_svi(key, problem, config, start, progress):
    """SVI with NumPyro's ``AutoIAFNormal`` (started at the MAP; compiled per run, since
    the guide bakes its starting point in)."""
    from numpyro import handlers
    from numpyro.infer import autoguide

    k_init, k_draw = jax.random.split(key)
    # An autoguide learns the model's latent sites by running it once outside jit;
    # without the likelihood site that run touches only the priors.
    latent_model = handlers.block(problem.model, hide=["obs"])
    init_loc = init_to_value(values=_sample_sites(problem, start.point))
    guide = autoguide.AutoIAFNormal(latent_model, init_loc_fn=init_loc, num_flows=2)
    optim = numpyro.optim.optax_to_numpyro(
        optax.chain(optax.clip_by_global_norm(1e3), optax.adam(config.svi_lr))
    )
    svi = SVI(problem.model, guide, optim, loss=Trace_ELBO())

    def advance(state, data, n):
        def body(i, carry):
            state, losses = carry
            state, loss = svi.update(state, data)
            return state, losses.at[i].set(loss)

        return jax.lax.fori_loop(0, n, body, (state, jnp.zeros(CHUNK * 10)))

    advance = problem.programs.compile(advance)
    state = svi.init(k_init, problem.data)

    def chunk(done, n):
        nonlocal state
        state, loss = advance(state, problem.data, n)
        return loss

    losses = _svi_chunks(chunk, config.svi_steps, progress)
    sites = [*_sample_sites(problem, start.point)]
    if problem.spec.latent == "flow":
        sites.append("source.z")
    predictive = Predictive(
        problem.model,
        guide=guide,
        params=svi.get_params(state),
        num_samples=config.svi_samples,
        return_sites=sites,
    )
    return predictive(k_draw, problem.data), losses


def run_svi(
    key,
    problem: Problem,
    config: InferConfig,
    start: MapResult,
    progress: ProgressFn | None = None,
) -> InferenceResult:
    """SVI started at the Laplace approximation of the MAP, Adam (optax).

    ``AutoMultivariateNormal`` (default) and ``AutoNormal`` are Gaussian guides over the
    unconstrained parameter vector, full-rank or diagonal, fitted by one compiled
    program per problem (:func:`_gaussian_svi_program`) that every rate and step count
    reuses; ``AutoIAFNormal`` is NumPyro's autoguide of that name. Steps run in jitted
    chunks; the ELBO curve (negative loss per step) is kept in ``diagnostics["elbo"]``.
    """
    t0 = time.perf_counter()
    compile0 = problem.programs.compile_seconds
    run = _run_iaf_svi if config.svi_guide == "AutoIAFNormal" else _run_gaussian_svi
    draws, losses = run(raw_key(key), problem, config, start, progress)
    samples = {k: np.asarray(v)[None] for k, v in draws.items()}
    elbo = -np.concatenate(losses) if losses else np.zeros(0)
    wall = time.perf_counter() - t0
    compile_s = problem.programs.compile_seconds - compile0
    diagnostics = {
        "elbo": elbo,
        "wall_time_s": wall,
        "timings": {"compile": compile_s, "optimisation": wall - compile_s},
    }
    return InferenceResult("svi", samples, {}, start.point, diagnostics)
