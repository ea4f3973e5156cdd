"""Overhead of lensgen's inference model vs a minimal hand-written NumPyro model.

Same parametric problem (SIE + SHEAR lens, SERSIC_ELLIPSE source, 100×100 pixels,
Gaussian noise map), same priors, same NumPyro NUTS settings (dense mass matrix,
windowed adaptation, 2 vectorised chains) and the same starting point (lensgen's
MAP). The hand-written model is written out here site by site and renders with
the same physics (lensgen's jitted renderer), so the comparison isolates what the
inference layer adds: parameter assembly from the priors table, the data passed
as a model argument, masking. Sampling is timed on a second run from the
post-warm-up state, so compilation is excluded for both. Reports the median ratio
of ESS(θ_E) per second of sampling (target ≥ 0.9) and, for reference, the ESS/s of
lensgen's own sampler (``run_nuts``: Laplace mass matrix from the MAP, compile
included). Run: ``python benchmarks/bench_infer_overhead.py [--npix 100]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, init_to_value

from lensgen.infer.run import InferConfig, build_problem, find_map, run_nuts
from lensgen.lensing.render import Scene, make_renderer
from lensgen.simulate.batch import simulate_observation
from lensgen.simulate.scene import PARAMETRIC_SOURCE, Component, SimulateConfig


def simulate(npix: int):
    sim = SimulateConfig()
    lens = (
        Component(
            "SIE", {"theta_E": 1.2, "e1": 0.1, "e2": -0.05, "center_x": 0.0, "center_y": 0.0}
        ),
        Component("SHEAR", {"gamma1": 0.02, "gamma2": -0.01}),
    )
    sim = dataclasses.replace(
        sim,
        lens=lens,
        source=(PARAMETRIC_SOURCE,),
        instrument=dataclasses.replace(
            sim.instrument, npix=npix, pixel_scale=4.0 / npix, supersample=1
        ),
    )
    obs, _ = simulate_observation(sim, jax.random.key(0))
    return obs


def handwritten(obs):
    """The minimal model: the same renderer and priors, written out by hand."""
    scene = Scene(
        lens=("SIE", "SHEAR"),
        source=("SERSIC_ELLIPSE",),
        shape=obs.image.shape,
        pixel_scale=obs.pixel_scale,
        supersample=obs.supersample,
    )
    render = make_renderer(scene, jnp.asarray(obs.psf))
    image, sigma = jnp.asarray(obs.image), jnp.asarray(obs.noise_map)
    tn = dict(low=-0.5, high=0.5)

    def model():
        lens = {
            "theta_E": numpyro.sample("lens.0.theta_E", dist.Uniform(0.2, 4.0)),
            "e1": numpyro.sample("lens.0.e1", dist.TruncatedNormal(0.0, 0.2, **tn)),
            "e2": numpyro.sample("lens.0.e2", dist.TruncatedNormal(0.0, 0.2, **tn)),
            "center_x": numpyro.sample("lens.0.center_x", dist.Normal(0.0, 0.1)),
            "center_y": numpyro.sample("lens.0.center_y", dist.Normal(0.0, 0.1)),
        }
        shear = {
            "gamma1": numpyro.sample("lens.1.gamma1", dist.Normal(0.0, 0.05)),
            "gamma2": numpyro.sample("lens.1.gamma2", dist.Normal(0.0, 0.05)),
        }
        ts = dict(low=-0.6, high=0.6)
        src = {
            "amp": numpyro.sample("source.0.amp", dist.LogNormal(1.0, 2.0)),
            "R_sersic": numpyro.sample("source.0.R_sersic", dist.LogNormal(-1.4, 0.7)),
            "n_sersic": numpyro.sample("source.0.n_sersic", dist.Uniform(0.5, 6.0)),
            "e1": numpyro.sample("source.0.e1", dist.TruncatedNormal(0.0, 0.2, **ts)),
            "e2": numpyro.sample("source.0.e2", dist.TruncatedNormal(0.0, 0.2, **ts)),
            "center_x": numpyro.sample("source.0.center_x", dist.Normal(0.0, 0.3)),
            "center_y": numpyro.sample("source.0.center_y", dist.Normal(0.0, 0.3)),
        }
        mu = render({"lens": [lens, shear], "source": [src], "lens_light": []})
        numpyro.sample("obs", dist.Normal(mu, sigma).to_event(2), obs=image)

    return model


def ess_per_second(model, model_args, start, args, key):
    kernel = NUTS(model, dense_mass=True, init_strategy=init_to_value(values=start))
    mcmc = MCMC(
        kernel,
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.warmup(key, *model_args, collect_warmup=False)
    state = mcmc.post_warmup_state
    mcmc.run(state.rng_key, *model_args)  # compiles the sampling phase
    jax.block_until_ready(mcmc.get_samples())
    mcmc.post_warmup_state = state
    t0 = time.perf_counter()
    mcmc.run(state.rng_key, *model_args)
    jax.block_until_ready(mcmc.get_samples())
    wall = time.perf_counter() - t0
    ess = float(
        numpyro.diagnostics.effective_sample_size(
            np.asarray(mcmc.get_samples(group_by_chain=True)["lens.0.theta_E"])
        )
    )
    return ess, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--npix", type=int, default=100)
    p.add_argument("--num-chains", type=int, default=2)
    p.add_argument("--num-warmup", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--single", action="store_true", help="single precision (lensgen infer runs in double)"
    )
    args = p.parse_args()
    if not args.single:
        jax.config.update("jax_enable_x64", True)
    obs = simulate(args.npix)
    cfg = InferConfig(
        lens=("SIE", "SHEAR"),
        source="SERSIC_ELLIPSE",
        likelihood="gaussian",
        map_steps=800,
        map_restarts=4,
        map_lr=0.05,
        num_chains=args.num_chains,
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
    )
    problem = build_problem(cfg, obs)
    fit = find_map(jax.random.PRNGKey(1), problem, cfg)
    start = fit.point
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {args.npix}x{args.npix} px")
    print(f"MAP theta_E {float(start['lens.0.theta_E']):.4f} (truth 1.2)")
    models = {"lensgen": (problem.model, (problem.data,)), "handwritten": (handwritten(obs), ())}
    rates: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.repeats):
        for name, (model, model_args) in models.items():
            ess, wall = ess_per_second(model, model_args, start, args, jax.random.PRNGKey(10 + r))
            rates[name].append(ess / wall)
            print(
                f"{name:12s} repeat {r}: ESS(theta_E) = {ess:7.1f}, "
                f"sampling {wall:6.2f} s, ESS/s = {ess / wall:7.2f}",
                flush=True,
            )
    ratio = np.median(rates["lensgen"]) / np.median(rates["handwritten"])
    print(f"median ESS/s ratio lensgen / handwritten = {ratio:.3f} (target >= 0.9)")
    res = run_nuts(jax.random.PRNGKey(20), problem, cfg, fit)
    ess = float(numpyro.diagnostics.effective_sample_size(res.samples["lens.0.theta_E"]))
    wall = res.diagnostics["wall_time_s"]
    print(
        f"lensgen run_nuts (Laplace mass matrix, warm-up + sampling + compile): "
        f"ESS(theta_E) = {ess:.1f} in {wall:.1f} s, ESS/s = {ess / wall:.2f}, "
        f"{res.diagnostics['mean_steps']:.1f} leapfrog steps/iteration"
    )


if __name__ == "__main__":
    main()
