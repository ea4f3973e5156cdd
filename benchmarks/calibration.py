"""Calibration: simulate K lenses from the prior, infer them as one catalogue, count coverage.

A thin wrapper over ``lensgen infer``'s catalogue mode (:mod:`lensgen.infer.catalogue`):
it draws K truths from the priors below, writes each simulated lens as an observation
file (with its truths as TRUTH cards), runs the catalogue (one compiled problem; every
lens keyed by the seed and its id) and reads ``catalogue.fits``. Reported for every
parameter with a truth, the lens's first: the coverage of the central 68 % and 95 %
intervals, the SBC rank histogram (rank of the truth among 99 thinned posterior draws;
uniform on 0..99 for a calibrated method; χ² test on 10 bins; Talts et al. 2018), and
the standardised errors (mean − truth)/sd (mean ≈ 0 and rms ≈ 1 when calibrated).

Each lens is an SIS with the learned default source (``--source vae``: latent drawn
from the model's flow prior, flux, light centroid and size from the inference priors)
or a SERSIC_ELLIPSE source (``--source sersic``), inferred with ``lensgen infer``'s
defaults (``--method nuts``: MAP, Laplace mass matrix, 4 chains, stop at ESS 400 and
R-hat < 1.01) or full-rank SVI. ``--model pixels`` (or ``vae+pixels``, ``shapelets``)
infers with a marginalised free-form source instead (:mod:`lensgen.infer.linear`,
regularisation inferred), which checks that its prior calibrates θ_E. ``--out`` keeps
the catalogue (and resumes an interrupted run).
Run: ``python benchmarks/calibration.py --k 50 --method nuts [--source vae]
[--model pixels --source-grid 10] [--out calib_run]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from astropy.table import Table
from scipy import stats

from lensgen.infer.catalogue import RANK_DRAWS, run_catalogue
from lensgen.infer.priors import parse_priors
from lensgen.infer.run import InferConfig
from lensgen.io.fits import write_observation
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="catalogue folder (default: a temporary one)")
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
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "catalogue")
        lenses = out.parent / f"{out.name}_lenses"
        lenses.mkdir(parents=True, exist_ok=True)
        ptoml = lenses.parent / f"{out.name}_priors.toml"
        ptoml.write_text("[priors]\n" + "\n".join(f'{k} = "{v}"' for k, v in table.items()) + "\n")
        cfg = InferConfig(method=args.method, lens=("SIS",), source=model,
                          source_grid=args.source_grid, priors=str(ptoml),
                          svi_samples=4 * RANK_DRAWS)  # fmt: skip
        t0 = time.perf_counter()
        for i in range(args.k):
            truth = draw_truth(rng, priors)  # drawn in order, so a rerun makes the same lenses
            path = lenses / f"lens_{i:04d}.fits"
            if not path.exists():
                obs = simulate(truth, args.npix, 1000 + i, args.source)
                write_observation(path, dataclasses.replace(obs, truth=truth))
        t_sim = time.perf_counter() - t0

        def report(stage, done, total, status):
            print(f"{stage} {done}/{total}: {status}", flush=True)

        run = run_catalogue(cfg, [lenses], out, seed=args.seed, progress=report)
        result = Table.read(out / "catalogue.fits")
    done = result[result["status"] == "done"]
    n = len(done)
    times = np.asarray(done["time_s"], dtype=float)
    print(f"K = {args.k} ({n} inferred), method {args.method}, source {args.source}, model "
          f"{model}, {args.npix}x{args.npix} px; simulation {t_sim:.0f} s, catalogue "
          f"{run.seconds:.0f} s")  # fmt: skip
    if n > 1:
        print(f"per lens: first {times[0]:.1f} s (compiles), median of the rest "
              f"{np.median(times[1:]):.1f} s")  # fmt: skip
    se68, se95 = np.sqrt(0.68 * 0.32 / max(n, 1)), np.sqrt(0.95 * 0.05 / max(n, 1))
    # The lens first (the coverage target), then the source.
    names = sorted((c[: -len(".truth")] for c in result.colnames if c.endswith(".truth")),
                   key=lambda n: (not n.startswith("lens."), n))  # fmt: skip
    for name in names:
        truth = np.asarray(done[f"{name}.truth"], dtype=float)
        in68 = (done[f"{name}.lo68"] < truth) & (truth < done[f"{name}.hi68"])
        in95 = (done[f"{name}.lo95"] < truth) & (truth < done[f"{name}.hi95"])
        ranks = np.asarray(done[f"{name}.rank"], dtype=float)
        counts, _ = np.histogram(ranks, bins=10, range=(0, RANK_DRAWS + 1))
        p_value = stats.chisquare(counts).pvalue if n >= 10 else float("nan")
        # Standardised errors: mean ≈ 0 (± 1/√n) and rms ≈ 1 for calibrated posteriors.
        mean, sd = (np.asarray(done[f"{name}.{s}"], dtype=float) for s in ("mean", "sd"))
        z = (mean - truth) / sd
        print(f"{name}: coverage 68% {np.mean(in68):.2f} (± {se68:.2f}), 95% "
              f"{np.mean(in95):.2f} (± {se95:.2f}); SBC ranks {counts.tolist()} "
              f"χ² p = {p_value:.3f}; (mean − truth)/sd: mean {np.mean(z):+.2f} "
              f"(± {1 / np.sqrt(max(n, 1)):.2f}), rms {np.sqrt(np.mean(z**2)):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
