"""NUTS chains in lockstep (vmapped) against one after another, in the same program.

A vmapped NUTS transition lasts as long as the longest chain's trajectory; one after
another (``jax.lax.map``), each chain pays for its own. The script simulates the seed
case (``lensgen simulate --rein 2.3 --seed 11`` at ``--npix``), fits the MAP once, and
runs ``run_nuts`` at fixed length (no early stop) in both layouts, in one process.

Reported per layout: wall time of NUTS (compile, warm-up, sampling), the mean
leapfrog steps per draw, the mean over iterations of the longest chain's steps, and
the time per chain-gradient: warm-up + sampling time divided by the gradients the
layout evaluates (Σ over iterations of the longest chain × chains in lockstep, of
every chain's own steps one after another). The chains' trajectories differ between
layouts after a few hundred iterations (batched arithmetic rounds differently and
NUTS amplifies it), so the wall times compare two runs of the sampler; the
per-gradient cost and the longest/mean ratio compare the layouts.

Run: ``python benchmarks/bench_nuts_chains.py [--npix 60] [--num-warmup 200]
[--num-samples 150]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from lensgen.cli.app import app
from lensgen.infer import samplers
from lensgen.infer.mapfit import find_map
from lensgen.infer.problem import InferConfig, build_problem
from lensgen.io.fits import read_observation


def seed_case(npix: int, pixel_scale: float, seed: int):
    """The observation ``lensgen simulate --rein 2.3 --seed SEED`` writes at this size."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "obs.fits"
        app(["simulate", "--rein", "2.3", "--seed", str(seed), "--npix", str(npix),
             "--pixel-scale", str(pixel_scale), "--no-preview", "--out", str(path)],
            standalone_mode=False)  # fmt: skip
        return read_observation(path)


def seed_case_arguments(description: str, num_samples: int) -> argparse.ArgumentParser:
    """The command-line options of a fixed-length NUTS run on the seed case."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--npix", type=int, default=60)
    parser.add_argument("--pixel-scale", type=float, default=0.133)
    parser.add_argument("--num-warmup", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=num_samples)
    parser.add_argument("--seed", type=int, default=11)
    return parser


def seed_case_start(args: argparse.Namespace):
    """The seed case's config (fixed length: no early stop), problem and MAP, in x64."""
    jax.config.update("jax_enable_x64", True)  # as `lensgen infer` runs
    obs = seed_case(args.npix, args.pixel_scale, args.seed)
    config = InferConfig(num_warmup=args.num_warmup, num_samples=args.num_samples, target_ess=0)
    problem = build_problem(config, obs)
    return config, problem, timed_map(problem, config)


def timed_map(problem, config):
    """The MAP fit (key 0), printing its wall time, its χ²/N, the device and jax's version."""
    t0 = time.perf_counter()
    start = find_map(jax.random.key(0), problem, config)
    print(f"MAP: {time.perf_counter() - t0:.1f} s, chi2/N {start.chi2:.3f}")
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    return start


def main() -> None:
    args = seed_case_arguments(__doc__.splitlines()[0], num_samples=150).parse_args()
    config, problem, start = seed_case_start(args)

    print("| layout | NUTS wall s | compile | warm-up | sampling | mean steps/draw "
          "| longest chain's steps | ms per chain-gradient |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for lockstep in (True, False):
        # The layout is part of the NUTS settings, so each gets (and times) its own program.
        samplers.chains_in_lockstep = lambda lockstep=lockstep: lockstep
        t0 = time.perf_counter()
        res = samplers.run_nuts(jax.random.key(1), problem, config, start)
        wall = time.perf_counter() - t0
        t = res.diagnostics["timings"]
        steps = np.asarray(res.sample_stats["n_steps"])  # (chain, draw): sampling only
        longest = float(steps.max(axis=0).mean())
        chains = steps.shape[0]
        # Warm-up steps are not returned; their per-iteration mix is taken to be the
        # sampling phase's.
        iterations = args.num_warmup + args.num_samples
        per_iteration = chains * longest if lockstep else float(steps.sum(axis=0).mean())
        ms = 1e3 * (t["warmup"] + t["sampling"]) / (iterations * per_iteration)
        name = "lockstep (vmap)" if lockstep else "one after another (lax.map)"
        print(f"| {name} | {wall:.1f} | {t['compile']:.1f} | {t['warmup']:.1f} | "
              f"{t['sampling']:.1f} | {steps.mean():.1f} | {longest:.1f} | {ms:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
