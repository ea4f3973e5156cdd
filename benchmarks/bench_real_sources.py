"""Lens models of galaxies unlike the training set: χ²/N and θ_E per source model.

Each test source is a clumpy disk with a companion (``tests/clumpy_sources.py``, a
recipe no training galaxy follows), lensed by lenstronomy (SIE + SHEAR, INTERPOL
source, Gaussian PSF, Poisson + Gaussian noise) at the demo's field, pixels and
source flux. For each source model lensgen fits the observation by MAP (``lensgen
infer --method map`` defaults, SIE + SHEAR) and reports χ²/N at the best fit, the
θ_E error and whether the truth lies inside the 95 % Laplace interval of θ_E; then
the medians over the sources. One compiled problem per source model serves every
observation (``with_data``).

Run: ``python benchmarks/bench_real_sources.py [--sources 6] [--npix 60]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from clumpy_sources import lensed_observation  # noqa: E402

from lensgen.infer.mapfit import laplace_log_evidence  # noqa: E402
from lensgen.infer.run import InferConfig, build_problem, find_map, with_data  # noqa: E402

MODELS = ("SERSIC_ELLIPSE", "vae", "pixels", "vae+pixels", "shapelets")


def theta_interval(problem, result) -> tuple[float, float]:
    """95 % Laplace interval of θ_E (Gaussian in the sampler's unconstrained space)."""
    flat, unravel = ravel_pytree(result.mode.x)
    index = int(unravel(np.arange(flat.size, dtype=float))["lens.0.theta_E"])
    centre = float(flat[index])
    half = 1.96 * float(np.sqrt(result.mode.cov[index, index]))
    to_theta = biject_to(problem.priors["lens.0.theta_E"].to_numpyro().support)
    return float(to_theta(centre - half)), float(to_theta(centre + half))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=6)
    parser.add_argument("--npix", type=int, default=60)
    parser.add_argument("--shapelet-order", type=int, default=InferConfig().shapelet_order)
    parser.add_argument("--source-grid", type=int, default=InferConfig().source_grid)
    parser.add_argument("--map-restarts", type=int, default=InferConfig().map_restarts)
    parser.add_argument("--map-steps", type=int, default=InferConfig().map_steps)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    pixel_scale = 8.0 / args.npix  # the demo's 8″ field
    observations = [lensed_observation(s, args.npix, pixel_scale)[0] for s in range(args.sources)]
    print(f"{args.sources} clumpy sources, {args.npix}×{args.npix} px of {pixel_scale:.3f}″, "
          f"grid {args.source_grid}, shapelet order {args.shapelet_order}, MAP "
          f"{args.map_restarts} × {args.map_steps} steps")  # fmt: skip
    print("| model | source | χ²/N | θ_E error | truth in 95 % | log Z | MAP s |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for model in args.models:
        config = InferConfig(source=model, lens=("SIE", "SHEAR"), method="map",
                             shapelet_order=args.shapelet_order, source_grid=args.source_grid,
                             map_restarts=args.map_restarts, map_steps=args.map_steps)  # fmt: skip
        problem = build_problem(config, observations[0])
        rows = []
        for s, obs in enumerate(observations):
            problem = with_data(problem, obs, config=config)
            t0 = time.perf_counter()
            result = find_map(jax.random.key(s), problem, config)
            wall = time.perf_counter() - t0
            truth = obs.truth["lens.0.theta_E"]
            theta = float(result.point["lens.0.theta_E"])
            lo, hi = theta_interval(problem, result)
            log_z = laplace_log_evidence(problem, result.mode.x, result.mode.cov)
            rows.append((result.chi2, abs(theta / truth - 1), lo <= truth <= hi))
            print(f"| {model} | {s} | {result.chi2:.3f} | {100 * (theta / truth - 1):+.3f} % | "
                  f"{'yes' if lo <= truth <= hi else 'no'} | {log_z:.1f} | {wall:.0f} |",
                  flush=True)  # fmt: skip
        summary[model] = rows
    print("\n| model | median χ²/N | max |θ_E error| | truth in 95 % |")
    print("|---|---|---|---|")
    for model, rows in summary.items():
        print(f"| {model} | {statistics.median(r[0] for r in rows):.3f} | "
              f"{100 * max(r[1] for r in rows):.3f} % | {sum(r[2] for r in rows)}/{len(rows)} |")  # fmt: skip


if __name__ == "__main__":
    main()
