"""Time to result for the seed case: SIS θ_E = 2.3″, learned default source, NUTS 4 chains.

Reports wall time (MAP + warm-up + sampling, compile included), R-hat and
ESS(θ_E). Run: ``python benchmarks/bench_seed_case.py [--npix 100]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpyro

from lensgen.infer.demo import DemoConfig, simulate_seed_case
from lensgen.infer.run import InferConfig, build_problem, run_inference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--npix", type=int, default=100)
    p.add_argument("--num-warmup", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=500)
    args = p.parse_args()
    obs = simulate_seed_case(DemoConfig(npix=args.npix), seed=0)
    cfg = InferConfig(
        method="nuts",
        num_chains=4,
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
        progress=False,
    )
    t0 = time.perf_counter()
    problem = build_problem(cfg, obs)
    (res,) = run_inference(jax.random.PRNGKey(0), problem, cfg)
    wall = time.perf_counter() - t0
    draws = res.samples["lens.0.theta_E"]
    rhat = float(numpyro.diagnostics.split_gelman_rubin(draws))
    ess = float(numpyro.diagnostics.effective_sample_size(draws))
    print(f"device {jax.devices()[0].platform}, {args.npix}x{args.npix} px")
    print(
        f"wall {wall:.1f} s, theta_E {draws.mean():.4f} ± {draws.std():.4f} (truth 2.3), "
        f"R-hat {rhat:.4f}, ESS {ess:.0f}, divergences {res.diagnostics['divergences']}"
    )


if __name__ == "__main__":
    main()
