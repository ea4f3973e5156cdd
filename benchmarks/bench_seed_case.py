"""Time to result for the seed case: SIS θ_E = 2.3″, learned default source, NUTS 4 chains.

Reports wall time (MAP + warm-up + sampling, compile included), R-hat and
ESS(θ_E), and whether the truth lies in the central 95% interval. Double precision,
as ``lensgen infer`` runs. Run: ``python benchmarks/bench_seed_case.py [--npix 100]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import numpyro

from lensgen.infer.demo import DemoConfig, simulate_seed_case
from lensgen.infer.run import InferConfig, build_problem, run_inference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--npix", type=int, default=100)
    p.add_argument("--num-warmup", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--max-tree-depth", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    obs = simulate_seed_case(DemoConfig(npix=args.npix), seed=args.seed)
    cfg = InferConfig(
        method="nuts",
        num_chains=4,
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
        max_tree_depth=args.max_tree_depth,
        progress=False,
    )
    t0 = time.perf_counter()
    problem = build_problem(cfg, obs)
    (res,) = run_inference(jax.random.PRNGKey(args.seed), problem, cfg)
    wall = time.perf_counter() - t0
    draws = res.samples["lens.0.theta_E"]
    rhat = float(numpyro.diagnostics.split_gelman_rubin(draws))
    ess = float(numpyro.diagnostics.effective_sample_size(draws))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    print(f"device {jax.devices()[0].platform}, {args.npix}x{args.npix} px, seed {args.seed}")
    print(
        f"wall {wall:.1f} s, theta_E {draws.mean():.5f} ± {draws.std():.5f} (truth 2.3, "
        f"95% [{lo:.5f}, {hi:.5f}]), R-hat {rhat:.4f}, ESS {ess:.0f}, "
        f"divergences {res.diagnostics['divergences']}, "
        f"mean leapfrog steps {np.mean(res.sample_stats['n_steps']):.1f}"
    )


if __name__ == "__main__":
    main()
