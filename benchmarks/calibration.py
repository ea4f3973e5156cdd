"""Calibration: simulate K lenses from the prior, infer each, count interval coverage.

Reports the coverage of the central 68% and 95% intervals of θ_E and of the lens
centre (x and y), and the SBC rank statistic of θ_E (rank of the truth among L
thinned posterior draws; uniform on 0..L for a calibrated method; chi² test on 10
bins). Each lens is an SIS with the learned default source (``--source vae``: latent
drawn from the model's flow prior, flux, light centroid and size from the inference
priors) or a SERSIC_ELLIPSE source (``--source sersic``), inferred with ``lensgen
infer``'s defaults (``--method nuts``: MAP, Laplace mass matrix, 4 chains, stop at
ESS 400 and R-hat < 1.01) or full-rank SVI. The problem is built once; every further
lens only swaps the data (:func:`lensgen.infer.run.with_data`), so the MAP optimiser
and the NUTS / SVI programs compile once for the whole run.
``--model pixels`` (or ``vae+pixels``, ``shapelets``) infers with a marginalised
free-form source instead (:mod:`lensgen.infer.linear`, regularisation inferred), which
checks that its prior calibrates θ_E.
Run: ``python benchmarks/calibration.py --k 50 --method nuts [--source vae]
[--model pixels --source-grid 10]``.
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
from lensgen.simulate.batch import simulate_observation
from lensgen.simulate.scene import Component, SimulateConfig

LENS_PRIORS = {
    "lens.0.theta_E": "Uniform(0.8, 1.6)",
    "lens.0.center_x": "Normal(0.0, 0.05)",
    "lens.0.center_y": "Normal(0.0, 0.05)",
}
VAE_PRIORS = {
    "source.0.flux": "LogNormal(3.9, 0.2)",
    "source.0.size": "LogNormal(-1.7, 0.15)",
    "source.0.center_x": "Normal(0.0, 0.1)",
    "source.0.center_y": "Normal(0.0, 0.1)",
}
SERSIC_PRIORS = {
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


def simulate(truth: dict[str, float], npix: int, seed: int, source: str):
    sim = SimulateConfig()
    kind = "VAE" if source == "vae" else "SERSIC_ELLIPSE"
    sim = dataclasses.replace(
        sim,
        lens=(Component("SIS", _group(truth, "lens.")),),
        source=(Component(kind, _group(truth, "source.")),),
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
    p.add_argument("--source", choices=["vae", "sersic"], default="vae")
    p.add_argument("--model", default="", help="inferred source model (default: the simulated)")
    p.add_argument("--source-grid", type=int, default=InferConfig().source_grid)
    p.add_argument("--npix", type=int, default=40)
    p.add_argument("--draws", type=int, default=99, help="thinned draws per lens for SBC ranks")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)  # as `lensgen infer` runs
    model = args.model or ("vae" if args.source == "vae" else "SERSIC_ELLIPSE")
    table = {**LENS_PRIORS, **(VAE_PRIORS if args.source == "vae" else SERSIC_PRIORS)}
    simulated = table
    if model != ("vae" if args.source == "vae" else "SERSIC_ELLIPSE"):
        # The free-form source keeps its default priors; the truths are still drawn
        # from the simulated source's.
        table = dict(LENS_PRIORS)
        if model.startswith("vae+"):
            table.update(VAE_PRIORS)
    priors = parse_priors(simulated)
    rng = np.random.default_rng(args.seed)
    names = ("lens.0.theta_E", "lens.0.center_x", "lens.0.center_y")
    with tempfile.TemporaryDirectory() as tmp:
        ptoml = Path(tmp) / "priors.toml"
        ptoml.write_text("[priors]\n" + "\n".join(f'{k} = "{v}"' for k, v in table.items()) + "\n")
        cfg = InferConfig(
            method=args.method,
            lens=("SIS",),
            source=model,
            source_grid=args.source_grid,
            priors=str(ptoml),
            svi_samples=4 * args.draws,
        )
        ranks, walls = [], []
        in68 = {n: [] for n in names}
        in95 = {n: [] for n in names}
        problem = None
        t0 = time.perf_counter()
        for i in range(args.k):
            truth = draw_truth(rng, priors)
            obs = simulate(truth, args.npix, 1000 + i, args.source)
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
            for name in names:
                post = res.samples[name].reshape(-1)
                lo68, hi68, lo95, hi95 = np.percentile(post, [16, 84, 2.5, 97.5])
                in68[name].append(lo68 < truth[name] < hi68)
                in95[name].append(lo95 < truth[name] < hi95)
            print(
                f"lens {i:3d}: theta_E true {t:.4f} post {flat.mean():.4f} ± {flat.std():.4f} "
                f"rank {ranks[-1]:3d}  {walls[-1]:.1f} s "
                f"{res.diagnostics.get('draws_per_chain', '')} draws/chain",
                flush=True,
            )
    ranks = np.asarray(ranks)
    counts, _ = np.histogram(ranks, bins=10, range=(0, args.draws + 1))
    chi2 = stats.chisquare(counts)
    n = args.k
    print(
        f"K = {n}, method {args.method}, source {args.source}, model {model}, "
        f"{args.npix}x{args.npix} px, "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(
        f"per lens: first {walls[0]:.1f} s (compiles), median of the rest {np.median(walls[1:]):.1f} s"
    )
    se68, se95 = np.sqrt(0.68 * 0.32 / n), np.sqrt(0.95 * 0.05 / n)
    for name in names:
        print(
            f"{name}: coverage 68% {np.mean(in68[name]):.2f} (± {se68:.2f}), "
            f"95% {np.mean(in95[name]):.2f} (± {se95:.2f})"
        )
    print(f"theta_E SBC rank histogram (10 bins): {counts.tolist()}  chi2 p = {chi2.pvalue:.3f}")


if __name__ == "__main__":
    main()
