"""Time to result for the seed case, against a hand-written NumPyro model in the same run.

The seed case: SIS θ_E = 2.3″, the learned default source (`lensgen demo`'s
simulation), double precision as ``lensgen infer`` runs. lensgen's inference runs at
its defaults (MAP, Laplace mass matrix, short warm-up, 4 vectorised chains, stop at
lens ESS ≥ 400 with R-hat < 1.01); reported: wall time (compile + MAP + NUTS), where it
went, leapfrog steps per draw, θ_E with its 95 % interval, R-hat and ESS(θ_E).

The reference is the same posterior written by hand as a minimal NumPyro model (the
same priors, lensgen's renderer and decoder, the latent sampled in u-space) run by
NumPyro's stock ``MCMC(NUTS)`` (windowed diagonal adaptation, 4 vectorised chains,
``--ref-warmup`` + ``--ref-samples``), started at lensgen's MAP. Both are timed from the MAP on, compilation
included; the ratio is ESS(θ_E) per second, lensgen / reference (target ≥ 1).

Run: ``python benchmarks/bench_seed_case.py [--npix 60] [--no-reference]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS, init_to_value

from lensgen.infer.demo import DemoConfig, simulate_seed_case
from lensgen.infer.run import InferConfig, build_problem, find_map, run_nuts
from lensgen.lensing.render import Scene, make_renderer
from lensgen.source.model import interpol_params


def handwritten(obs, source_model):
    """The seed case's model written out site by site (lensgen's default priors)."""
    scene = Scene(
        lens=("SIS",),
        source=("INTERPOL",),
        shape=obs.image.shape,
        pixel_scale=obs.pixel_scale,
        supersample=obs.supersample,
    )
    render = make_renderer(scene, jnp.asarray(obs.psf))
    image, sigma = jnp.asarray(obs.image), jnp.asarray(obs.noise_map)
    d = source_model.latent_dim

    def model():
        lens = {
            "theta_E": numpyro.sample("lens.0.theta_E", dist.Uniform(0.2, 4.0)),
            "center_x": numpyro.sample("lens.0.center_x", dist.Normal(0.0, 0.1)),
            "center_y": numpyro.sample("lens.0.center_y", dist.Normal(0.0, 0.1)),
        }
        flux = numpyro.sample("source.0.flux", dist.LogNormal(3.0, 1.5))
        cx = numpyro.sample("source.0.center_x", dist.Normal(0.0, 0.3))
        cy = numpyro.sample("source.0.center_y", dist.Normal(0.0, 0.3))
        size = numpyro.sample("source.0.size", dist.LogNormal(-1.7, 0.7))
        u = numpyro.sample("source.u", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
        decoded = source_model.decode(source_model.from_normal(u))
        src = interpol_params(decoded, flux, cx, cy, size)
        mu = render({"lens": [lens], "source": [src], "lens_light": []})
        numpyro.sample("obs", dist.Normal(mu, sigma).to_event(2), obs=image)

    return model


def reference(obs, source_model, start: dict, args, key) -> tuple[float, float, float, float]:
    """Stock NumPyro NUTS on the hand-written model: ESS(θ_E), R-hat, wall s, steps/draw."""
    sites = ("lens.0.theta_E", "lens.0.center_x", "lens.0.center_y", "source.0.flux",
             "source.0.center_x", "source.0.center_y", "source.0.size", "source.u")  # fmt: skip
    kernel = NUTS(
        handwritten(obs, source_model),
        init_strategy=init_to_value(values={k: jnp.asarray(start[k]) for k in sites}),
    )
    mcmc = MCMC(
        kernel,
        num_warmup=args.ref_warmup,
        num_samples=args.ref_samples,
        num_chains=args.num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    t0 = time.perf_counter()
    mcmc.run(key, extra_fields=("num_steps",))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["lens.0.theta_E"])
    wall = time.perf_counter() - t0
    steps = float(np.mean(mcmc.get_extra_fields()["num_steps"]))
    return float(effective_sample_size(draws)), float(split_gelman_rubin(draws)), wall, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--npix", type=int, default=60)
    p.add_argument("--num-chains", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-reference", action="store_true", help="skip the stock NumPyro run")
    p.add_argument("--ref-warmup", type=int, default=300)
    p.add_argument("--ref-samples", type=int, default=300)
    p.add_argument("--target-accept", type=float, default=InferConfig().target_accept,
                   help="NUTS target acceptance of lensgen's run (default: lensgen infer's)")  # fmt: skip
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    obs = simulate_seed_case(DemoConfig(npix=args.npix), seed=args.seed)
    cfg = InferConfig(method="nuts", num_chains=args.num_chains, target_accept=args.target_accept)

    t0 = time.perf_counter()
    problem = build_problem(cfg, obs)
    start = find_map(jax.random.PRNGKey(args.seed), problem, cfg)
    t_map = time.perf_counter()
    res = run_nuts(jax.random.PRNGKey(args.seed + 1), problem, cfg, start)
    wall = time.perf_counter() - t0
    nuts_wall = time.perf_counter() - t_map
    draws = res.samples["lens.0.theta_E"]
    rhat = float(split_gelman_rubin(draws))
    ess = float(effective_sample_size(draws))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    d = res.diagnostics
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in d["timings"].items())
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, device {jax.devices()[0]}")
    print(f"{args.npix}x{args.npix} px, supersample {obs.supersample}, seed {args.seed}")
    print(
        f"lensgen: wall {wall:.1f} s (MAP {t_map - t0:.1f} s incl. build; NUTS {timings}), "
        f"theta_E {draws.mean():.5f} ± {draws.std():.5f} (truth 2.3, 95% [{lo:.5f}, {hi:.5f}]), "
        f"R-hat {rhat:.4f}, ESS {ess:.0f}, draws/chain {d['draws_per_chain']}, "
        f"min ESS {min(d['ess'].values()):.0f}, max R-hat {max(d['rhat'].values()):.4f}, "
        f"divergences {d['divergences']}, leapfrog steps/draw {d['mean_steps']:.1f}"
    )
    if args.no_reference:
        return
    ref_ess, ref_rhat, ref_wall, ref_steps = reference(
        obs, problem.source_model, start.point, args, jax.random.PRNGKey(args.seed + 2)
    )
    print(
        f"hand-written NumPyro (stock NUTS {args.ref_warmup}+{args.ref_samples}): "
        f"ESS(theta_E) {ref_ess:.0f}, "
        f"R-hat {ref_rhat:.4f}, {ref_wall:.1f} s, leapfrog steps/draw {ref_steps:.1f}"
    )
    ratio = (ess / nuts_wall) / (ref_ess / ref_wall)
    print(
        f"ESS(theta_E)/s from the MAP on: lensgen {ess / nuts_wall:.2f}, "
        f"hand-written {ref_ess / ref_wall:.2f}, ratio {ratio:.2f} (target >= 1)"
    )


if __name__ == "__main__":
    main()
