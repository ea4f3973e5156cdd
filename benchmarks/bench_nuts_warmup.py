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

With ``--demo`` the runs are ``lensgen demo``'s instead: its observation (seed 0), its
MAP and its NUTS settings (2 chains, sampling trees at most 5 deep, ``num_samples`` and
``target_ess`` from :class:`~lensgen.infer.demo.DemoConfig`), stopping as the demo
stops; each run reports where it stopped and what that cost.

Run: ``python benchmarks/bench_nuts_warmup.py [--npix 60] [--runs 8:1,5:1,8:2,5:2]
[--num-samples 300]`` or ``python benchmarks/bench_nuts_warmup.py --demo --runs
5:1,4:1,...``.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from bench_nuts_chains import seed_case_arguments, seed_case_start, timed_map

from lensgen.infer.samplers import convergence, mass_ess, run_nuts


def main() -> None:
    parser = seed_case_arguments(__doc__.splitlines()[0], num_samples=300)
    parser.add_argument("--runs", default="8:1,5:1,8:2,5:2", help="depth:key,...")
    parser.add_argument("--demo", action="store_true", help="lensgen demo's case and settings")
    args = parser.parse_args()
    runs = [tuple(int(x) for x in run.split(":")) for run in args.runs.split(",")]
    if args.demo:
        demo_runs(runs)
        return
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


def demo_runs(runs: list[tuple[int, int]]) -> None:
    """``lensgen demo``'s NUTS, stopping as it does, for each warm-up depth and key."""
    from lensgen.infer.demo import DemoConfig, simulate_seed_case
    from lensgen.infer.problem import build_problem

    jax.config.update("jax_enable_x64", True)  # as `lensgen demo` runs
    demo = DemoConfig()
    config = dataclasses.replace(demo.infer_config(), method="nuts")
    problem = build_problem(config, simulate_seed_case(demo, 0))
    start = timed_map(problem, config)
    print("| warm-up depth | key | NUTS wall s | warm-up | sampling | draws/chain at the stop "
          "| steps/draw | min lens ESS | max R-hat |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for depth, key in runs:
        cfg = dataclasses.replace(config, max_tree_depth_warmup=depth)
        t0 = time.perf_counter()
        d = run_nuts(jax.random.key(key), problem, cfg, start).diagnostics
        t = d["timings"]
        print(f"| {depth} | {key} | {time.perf_counter() - t0:.1f} | {t['warmup']:.1f} | "
              f"{t['sampling']:.1f} | {d['draws_per_chain']} | {d['mean_steps']:.1f} | "
              f"{min(mass_ess(d['ess']).values()):.0f} | {max(d['rhat'].values()):.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
