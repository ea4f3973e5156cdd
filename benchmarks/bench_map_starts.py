"""How often the MAP fit of the seed case lands in the right mode, and how long it takes.

For seeds 0..n−1 the seed case (SIS θ_E = 2.3″, the learned default source, 60 × 60
px, as ``lensgen demo`` simulates it) is fitted with ``lensgen infer``'s MAP stage
(data-driven starts, Adam, Newton polish); one problem is reused through
``with_data``. Prints per seed the wall time (the first includes compilation), the
best fit's χ²/N (≈ 1 in the right mode), the polished potentials of the kept
restarts relative to the best, and the recovered θ_E, source size and flux against
the truth, and the Newton polish's cost (Hessians evaluated, seconds). ``--damping-start``
and ``--damping-down`` set the polish's Levenberg–Marquardt schedule
(:data:`lensgen.infer.mapfit.DAMPING_START`, :data:`~lensgen.infer.mapfit.DAMPING_DOWN`).
Run: ``python benchmarks/bench_map_starts.py [--seeds 4] [--restarts 4]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import lensgen.infer.mapfit as mapfit
from lensgen.infer.demo import DemoConfig, simulate_seed_case
from lensgen.infer.run import InferConfig, build_problem, find_map, with_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--restarts", type=int, default=InferConfig.map_restarts)
    p.add_argument("--steps", type=int, default=InferConfig.map_steps)
    p.add_argument("--npix", type=int, default=60)
    p.add_argument("--damping-start", type=float, default=mapfit.DAMPING_START)
    p.add_argument("--damping-down", type=float, default=mapfit.DAMPING_DOWN)
    args = p.parse_args()
    mapfit.DAMPING_START, mapfit.DAMPING_DOWN = args.damping_start, args.damping_down
    polish = {"hessians": 0, "seconds": 0.0}
    derivatives = mapfit.derivatives

    def counted(problem):
        value_grad_hessian = derivatives(problem)

        def timed(*a):
            t = time.perf_counter()
            out = jax.block_until_ready(value_grad_hessian(*a))
            polish["hessians"] += bool(a[-1])
            polish["seconds"] += time.perf_counter() - t
            return out

        return timed

    mapfit.derivatives = counted
    jax.config.update("jax_enable_x64", True)  # as `lensgen infer` runs
    cfg = InferConfig(map_restarts=args.restarts, map_steps=args.steps)
    problem = None
    for seed in range(args.seeds):
        obs = simulate_seed_case(DemoConfig(npix=args.npix), seed=seed)
        problem = build_problem(cfg, obs) if problem is None else with_data(problem, obs)
        polish.update(hessians=0, seconds=0.0)
        t0 = time.perf_counter()
        r = find_map(jax.random.PRNGKey(seed), problem, cfg)
        truth = obs.truth
        rel = np.round(r.restart_potentials - r.restart_potentials.min(), 1)
        print(
            f"seed {seed}: {time.perf_counter() - t0:.1f} s, chi2/N {r.chi2:.3f}, "
            f"restart potentials {rel.tolist()}, theta_E {r.point['lens.0.theta_E']:.4f}, "
            f"size {r.point['source.0.size']:.3f} (truth {truth['source.0.size']:.3f}), "
            f"flux {r.point['source.0.flux']:.1f} (truth {truth['source.0.flux']:.1f}), "
            f"potential {r.mode.potential:.3f}, polish {polish['hessians']} Hessians "
            f"{polish['seconds']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
