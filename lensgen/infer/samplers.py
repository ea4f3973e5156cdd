"""NUTS and SVI for a :class:`~lensgen.infer.problem.Problem`, started from its MAP fit.

NUTS is NumPyro's kernel (``numpyro.infer.hmc.hmc``) driven by a small loop of our
own: chains are ``vmap``-ped on one device and the whole transition is jitted
once per model, with the observed data, the starting points and the inverse mass
matrix as *arguments*. So a second observation of the same shape (the
calibration runs fifty) reuses the compiled sampler, and the mass matrix can be
the Laplace covariance at the MAP. The loop advances in chunks, which drives a
progress bar and costs one compilation for any chunk length.

SVI uses NumPyro's autoguides with an optax Adam; the Normal guides start at the
Laplace approximation (location = MAP, scale from the inverse Hessian), so the
optimisation refines an already sensible posterior.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.flatten_util import ravel_pytree
from numpyro.infer import SVI, Predictive, Trace_ELBO, init_to_value
from numpyro.infer.hmc import hmc

from lensgen.infer.mapfit import cached_program, model_functions
from lensgen.infer.problem import InferConfig, InferenceResult, Problem, _keys

CHUNK = 50
"""Iterations per jitted call (progress-bar granularity)."""


def progress(enabled: bool):
    """A rich progress bar, shown only on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        transient=True,
        disable=not (enabled and sys.stdout.isatty()),
    )


def _nuts_program(problem: Problem, config: InferConfig):
    """Jitted ``init(keys, x0, inverse_mass, data)`` and ``advance(states, data, n)``."""
    potential = model_functions(problem).potential
    init_kernel, sample_kernel = hmc(
        potential_fn_gen=lambda data: lambda x: potential(x, data), algo="NUTS"
    )
    num_warmup = config.num_warmup

    def init_one(key, x0, inverse_mass, data):
        return init_kernel(
            x0,
            num_warmup,
            inverse_mass_matrix=inverse_mass,
            adapt_mass_matrix=config.mass_matrix == "adapt",
            dense_mass=[tuple(sorted(x0))] if config.dense_mass else [],
            target_accept_prob=config.target_accept,
            max_tree_depth=config.max_tree_depth,
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

    init = jax.jit(jax.vmap(init_one, in_axes=(0, 0, None, None)))
    constrain = model_functions(problem).constrain
    draws = jax.jit(jax.vmap(jax.vmap(constrain, in_axes=(0, None)), in_axes=(0, None)))
    return init, jax.jit(advance), draws


def run_nuts(key, problem: Problem, config: InferConfig, start: InferenceResult) -> InferenceResult:
    """NUTS with ``num_chains`` chains vectorised on one device, started around the MAP.

    The inverse mass matrix is the Laplace covariance at the MAP; with
    ``mass_matrix = "laplace"`` only the step size is adapted in warm-up (the
    posterior of a well-measured lens is close to Gaussian, and a dense matrix
    estimated from a short warm-up is noisier than the Hessian), with ``"adapt"``
    NumPyro's windowed adaptation starts from it. Chains start at independent
    draws from the Laplace approximation with half its width, so R-hat stays
    meaningful.
    """
    t0 = time.perf_counter()
    k_start, k_run = jax.random.split(_keys(key))
    settings = (
        "nuts",
        config.num_warmup,
        config.target_accept,
        config.max_tree_depth,
        config.dense_mass,
        config.mass_matrix,
    )
    init, advance, draws = cached_program(problem, settings, lambda: _nuts_program(problem, config))
    flat, unravel = ravel_pytree(start.diagnostics["map_unconstrained"])
    cov = start.diagnostics["laplace_cov"]
    root = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)) * np.trace(cov))
    noise = np.asarray(jax.random.normal(k_start, (config.num_chains, len(cov))))
    x0 = jax.vmap(unravel)(flat + jnp.asarray(0.5 * noise @ root.T, flat.dtype))
    inverse_mass = jnp.asarray(cov if config.dense_mass else np.diag(cov), flat.dtype)
    states = init(jax.random.split(k_run, config.num_chains), x0, inverse_mass, problem.data)

    total = config.num_warmup + config.num_samples
    pieces, done = [], 0
    with progress(config.progress) as bar:
        task = bar.add_task("NUTS warm-up", total=total, status="")
        while done < total:
            # Chunks end at the warm-up boundary so draws never mix with warm-up.
            limit = config.num_warmup if done < config.num_warmup else total
            n = min(CHUNK, limit - done)
            states, buffer = advance(states, problem.data, n)
            if done >= config.num_warmup:
                pieces.append(jax.tree_util.tree_map(lambda b, n=n: np.asarray(b[:n]), buffer))
            done += n
            phase = "NUTS warm-up" if done < config.num_warmup else "NUTS sampling"
            steps = float(np.mean(np.asarray(buffer[4][:n])))
            bar.update(task, advance=n, description=phase, status=f"{steps:.0f} steps/it")
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
    diagnostics = {
        "divergences": int(stats["diverging"].sum()),
        "wall_time_s": time.perf_counter() - t0,
        "mean_steps": float(stats["n_steps"].mean()),
    }
    return InferenceResult("nuts", samples, stats, start.point, diagnostics)


def _sample_sites(problem: Problem, point: dict) -> dict:
    """Latent sample sites of a point (the deterministic ``source.z`` of a flow dropped)."""
    drop = {"source.z"} if problem.spec.latent == "flow" else set()
    return {k: v for k, v in point.items() if k not in drop}


def _guide(problem: Problem, config: InferConfig, start: InferenceResult):
    from numpyro.infer import autoguide

    if config.svi_guide == "AutoIAFNormal":
        init = init_to_value(values=_sample_sites(problem, start.point))
        return autoguide.AutoIAFNormal(problem.model, init_loc_fn=init, num_flows=2)
    if config.svi_guide == "AutoMultivariateNormal":
        return autoguide.AutoMultivariateNormal(problem.model)
    return autoguide.AutoNormal(problem.model)


def _model_order(problem: Problem) -> list[str]:
    """Latent sites in the order the model samples them (the order autoguides ravel in)."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(problem.model, 0)).get_trace(problem.data)
    return [k for k, site in trace.items() if site["type"] == "sample" and not site["is_observed"]]


def _guide_init(problem: Problem, config: InferConfig, start: InferenceResult) -> dict | None:
    """Guide parameters of the Laplace approximation at the MAP (Normal guides only)."""
    x = start.diagnostics["map_unconstrained"]
    cov = start.diagnostics["laplace_cov"]
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


def _svi_program(problem: Problem, config: InferConfig, start: InferenceResult):
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

    return guide, svi, jax.jit(advance)


def run_svi(key, problem: Problem, config: InferConfig, start: InferenceResult) -> InferenceResult:
    """SVI with an autoguide started at the Laplace approximation, Adam (optax), Trace ELBO.

    Steps run in jitted chunks; the ELBO curve (negative loss per step) is kept in
    ``diagnostics["elbo"]``.
    """
    t0 = time.perf_counter()
    k_init, k_draw = jax.random.split(_keys(key))
    build = lambda: _svi_program(problem, config, start)  # noqa: E731
    if config.svi_guide == "AutoIAFNormal":
        guide, svi, advance = build()  # its initial location is baked in: not reusable
    else:
        guide, svi, advance = cached_program(
            problem, ("svi", config.svi_guide, config.svi_lr), build
        )
    state = svi.init(k_init, problem.data, init_params=_guide_init(problem, config, start))
    losses, done, chunk = [], 0, CHUNK * 10
    with progress(config.progress) as bar:
        task = bar.add_task("SVI", total=config.svi_steps, status="")
        while done < config.svi_steps:
            n = min(chunk, config.svi_steps - done)
            state, loss = advance(state, problem.data, n)
            losses.append(np.asarray(loss[:n]))
            done += n
            bar.update(task, advance=n, status=f"ELBO {-float(losses[-1][-1]):.4g}")
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
    diagnostics = {"elbo": elbo, "wall_time_s": time.perf_counter() - t0, "divergences": 0}
    return InferenceResult("svi", samples, {}, start.point, diagnostics)
