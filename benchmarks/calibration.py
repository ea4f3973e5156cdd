"""Calibration of θ_E posteriors: simulate K lenses from the prior, infer each.

Reports the coverage of the central 68% and 95% intervals of θ_E and the SBC rank
statistic (rank of the truth among L posterior draws; uniform on 0..L for a
calibrated method; chi² test on 10 bins). Fast setting: SIS + SERSIC_ELLIPSE
source, 32×32 pixels, SVI (AutoMultivariateNormal) or short NUTS.
Run: ``python benchmarks/calibration.py --k 50 --method svi``.
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
from lensgen.infer.run import InferConfig, build_problem, run_inference
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--method", choices=["svi", "nuts"], default="svi")
    p.add_argument("--npix", type=int, default=32)
    p.add_argument("--draws", type=int, default=99)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
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
            map_restarts=3,
            svi_steps=1500,
            svi_guide="AutoMultivariateNormal",
            svi_samples=args.draws,
            num_chains=1,
            num_warmup=150,
            num_samples=args.draws,
            progress=False,
        )
        ranks, in68, in95 = [], [], []
        t0 = time.perf_counter()
        for i in range(args.k):
            truth = draw_truth(rng, priors)
            sim = SimulateConfig()
            sim = dataclasses.replace(
                sim,
                lens=(Component("SIS", _group(truth, "lens.")),),
                source=(Component("SERSIC_ELLIPSE", _group(truth, "source.")),),
                instrument=dataclasses.replace(
                    sim.instrument, npix=args.npix, pixel_scale=4.0 / args.npix, supersample=1
                ),
            )
            obs, _ = simulate_observation(sim, jax.random.key(1000 + i))
            problem = build_problem(cfg, obs)
            (res,) = run_inference(jax.random.PRNGKey(i), problem, cfg)
            draws = res.samples["lens.0.theta_E"].reshape(-1)[: args.draws]
            t = truth["lens.0.theta_E"]
            ranks.append(int((draws < t).sum()))
            lo68, hi68, lo95, hi95 = np.percentile(draws, [16, 84, 2.5, 97.5])
            in68.append(lo68 < t < hi68)
            in95.append(lo95 < t < hi95)
            print(
                f"lens {i:3d}: theta_E true {t:.4f} post {draws.mean():.4f} ± {draws.std():.4f} rank {ranks[-1]}"
            )
    ranks = np.asarray(ranks)
    counts, _ = np.histogram(ranks, bins=10, range=(0, args.draws + 1))
    chi2 = stats.chisquare(counts)
    print(f"K = {args.k}, method {args.method}, {time.perf_counter() - t0:.0f} s")
    print(f"coverage 68%: {np.mean(in68):.2f}   95%: {np.mean(in95):.2f}")
    print(f"SBC rank histogram (10 bins): {counts.tolist()}  chi2 p = {chi2.pvalue:.3f}")


if __name__ == "__main__":
    main()
