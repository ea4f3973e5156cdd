"""NUTS warm-up tree depth, and where each stopping rule would stop, on the seed case.

The warm-up's draws serve only to adapt the step size and to refine the mass matrix,
so its trees can be shallower than the sampling's (``max_tree_depth_warmup``). The
script simulates the seed case (``lensgen simulate --rein 2.3 --seed 11`` at
``--npix``), fits the MAP once, and runs ``run_nuts`` at fixed length (no early stop)
for each warm-up depth and key in ``--runs`` (``depth:key`` pairs), in one process.

Reported per run: NUTS wall time (compile, warm-up, sampling), the sampling's mean
leapfrog steps per draw and acceptance, θ_E; and at every 50 draws per chain from 100
on: the smallest ESS over all scalar parameters and over the lens mass parameters,
ESS(θ_E) and the largest split R-hat. ``lensgen infer`` stops at the first of these
checkpoints where the lens mass ESS reaches ``target_ess`` and every R-hat is < 1.01;
before, it waited for the ESS of every parameter.

Run: ``python benchmarks/bench_nuts_warmup.py [--npix 60] [--runs 8:1,5:1,8:2,5:2]
[--num-samples 300]``.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from bench_nuts_chains import seed_case_arguments, seed_case_start

from lensgen.infer.samplers import convergence, mass_ess, run_nuts


def main() -> None:
    parser = seed_case_arguments(__doc__.splitlines()[0], num_samples=300)
    parser.add_argument("--runs", default="8:1,5:1,8:2,5:2", help="depth:key,...")
    args = parser.parse_args()
    runs = [tuple(int(x) for x in run.split(":")) for run in args.runs.split(",")]
    config, problem, start = seed_case_start(args)
    for depth, key in runs:
        cfg = dataclasses.replace(config, max_tree_depth_warmup=depth)
        t0 = time.perf_counter()
        res = run_nuts(jax.random.key(key), problem, cfg, start)
        t = res.diagnostics["timings"]
        steps = np.asarray(res.sample_stats["n_steps"])
        accept = float(np.mean(res.sample_stats["acceptance_rate"]))
        theta = res.samples["lens.0.theta_E"]
        print(f"warm-up depth {depth}, key {key}: NUTS {time.perf_counter() - t0:.1f} s "
              f"(compile {t['compile']:.1f}, warm-up {t['warmup']:.1f}, sampling "
              f"{t['sampling']:.1f}), {steps.mean():.1f} steps/draw, accept {accept:.3f}, "
              f"theta_E {theta.mean():.5f} ± {theta.std():.5f}")  # fmt: skip
        scalars = {k: v for k, v in res.samples.items() if v.ndim == 2}
        for n in range(100, args.num_samples + 1, 50):
            ess, rhat = convergence({k: v[:, :n] for k, v in scalars.items()})
            lens = mass_ess(ess)
            worst = max(rhat, key=rhat.get)
            print(f"  {n} draws/chain: min ESS {min(ess.values()):.0f} ({min(ess, key=ess.get)}), "
                  f"lens {min(lens.values()):.0f} ({min(lens, key=lens.get)}), theta_E "
                  f"{ess['lens.0.theta_E']:.0f}, max R-hat {rhat[worst]:.4f} ({worst})")  # fmt: skip


if __name__ == "__main__":
    main()
