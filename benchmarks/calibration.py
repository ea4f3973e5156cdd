"""Calibration of θ_E posteriors: simulate K lenses from the prior, infer each.

Reports the coverage of the central 68% and 95% intervals of θ_E and the SBC rank
statistic (rank of the truth among L thinned posterior draws; uniform on 0..L for
a calibrated method; chi² test on 10 bins). Fast setting: SIS + SERSIC_ELLIPSE
source drawn from the inference priors, 32×32 pixels, MAP then NUTS (2 chains,
short) or full-rank SVI. The problem is built once; every further lens only
swaps the data (:func:`lensgen.infer.run.with_data`), so the MAP optimiser and
the NUTS / SVI programs compile once for the whole run.
Run: ``python benchmarks/calibration.py --k 50 --method nuts``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from scipy import stats

from lensgen.infer.priors import parse_priors
from lensgen.infer.run import InferConfig, build_problem, run_inference, with_data
from lensgen.lensing.scene_config import Component, SimulateConfig
from lensgen.lensing.simulate import simulate_observation

PRIORS = {
    "lens.0.theta_E": "Uniform(0.8, 1.6)",
    "lens.0.center_x": "Normal(0.0, 0.05)",
    "lens.0.center_y": "Normal(0.0, 0.05)",
    "source.0.amp": "LogNormal(1.5, 0.3)",
    "source.0.R_sersic": "LogNormal(-1.4, 0.2)",
    "source.0.n_sersic": "Uniform(1.0, 3.0)",
    "source.0.e1": "TruncatedNormal(0.0, 0.1, -0.3, 0.3)",
    "source.0.e2": "TruncatedNormal(0.0, 0.1, -0.3, 0.3)",
    "source.0.center_x": "Normal(0.0, 0.1)",
    "source.0.center_y": "Normal(0.0, 0.1)",
}


def draw_truth(rng: np.random.Generator, priors) -> dict[str, float]:

    key = jax.random.PRNGKey(int(rng.integers(2**31)))
    keys = jax.random.split(key, len(priors))
    return {
        n: float(p.to_numpyro().sample(k)) for (n, p), k in zip(priors.items(), keys, strict=True)
    }


def _group(truth: dict[str, float], prefix: str) -> dict[str, float]:
    return {k.split(".")[2]: v for k, v in truth.items() if k.startswith(prefix)}


def simulate(truth: dict[str, float], npix: int, seed: int):
    sim = SimulateConfig()
    sim = dataclasses.replace(
        sim,
        lens=(Component("SIS", _group(truth, "lens.")),),
        source=(Component("SERSIC_ELLIPSE", _group(truth, "source.")),),
        instrument=dataclasses.replace(
            sim.instrument, npix=npix, pixel_scale=4.0 / npix, supersample=1
        ),
    )
    obs, _ = simulate_observation(sim, jax.random.key(seed))
    return obs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--method", choices=["svi", "nuts"], default="nuts")
    p.add_argument("--npix", type=int, default=32)
    p.add_argument("--draws", type=int, default=99, help="thinned draws per lens for SBC ranks")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)  # as `lensgen infer` runs
    priors = parse_priors(PRIORS)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ptoml = Path(tmp) / "priors.toml"
        ptoml.write_text("[priors]\n" + "\n".join(f'{k} = "{v}"' for k, v in PRIORS.items()) + "\n")
        cfg = InferConfig(
            method=args.method,
            lens=("SIS",),
            source="SERSIC_ELLIPSE",
            priors=str(ptoml),
            map_steps=400,
            map_restarts=4,
            map_lr=0.05,
            svi_steps=800,
            svi_guide="AutoMultivariateNormal",
            svi_samples=4 * args.draws,
            num_chains=2,
            num_warmup=150,
            num_samples=2 * args.draws,
            progress=False,
        )
        ranks, in68, in95, walls = [], [], [], []
        problem = None
        t0 = time.perf_counter()
        for i in range(args.k):
            truth = draw_truth(rng, priors)
            obs = simulate(truth, args.npix, 1000 + i)
            t1 = time.perf_counter()
            if problem is None:
                problem = build_problem(cfg, obs)
            else:
                problem = with_data(problem, obs, config=cfg)
            (res,) = run_inference(jax.random.PRNGKey(i), problem, cfg)
            walls.append(time.perf_counter() - t1)
            flat = res.samples["lens.0.theta_E"].reshape(-1)
            # Thin to L draws spread over all chains (reduces autocorrelation for SBC).
            draws = flat[np.linspace(0, len(flat) - 1, args.draws).astype(int)]
            t = truth["lens.0.theta_E"]
            ranks.append(int((draws < t).sum()))
            lo68, hi68, lo95, hi95 = np.percentile(flat, [16, 84, 2.5, 97.5])
            in68.append(lo68 < t < hi68)
            in95.append(lo95 < t < hi95)
            print(
                f"lens {i:3d}: theta_E true {t:.4f} post {flat.mean():.4f} ± {flat.std():.4f} "
                f"rank {ranks[-1]:3d}  {walls[-1]:.1f} s",
                flush=True,
            )
    ranks = np.asarray(ranks)
    counts, _ = np.histogram(ranks, bins=10, range=(0, args.draws + 1))
    chi2 = stats.chisquare(counts)
    n = args.k
    print(
        f"K = {n}, method {args.method}, {args.npix}x{args.npix} px, {time.perf_counter() - t0:.0f} s"
    )
    print(
        f"per lens: first {walls[0]:.1f} s (compiles), median of the rest {np.median(walls[1:]):.1f} s"
    )
    se68, se95 = np.sqrt(0.68 * 0.32 / n), np.sqrt(0.95 * 0.05 / n)
    print(
        f"coverage 68%: {np.mean(in68):.2f} (± {se68:.2f})   95%: {np.mean(in95):.2f} (± {se95:.2f})"
    )
    print(f"SBC rank histogram (10 bins): {counts.tolist()}  chi2 p = {chi2.pvalue:.3f}")


if __name__ == "__main__":
    main()
