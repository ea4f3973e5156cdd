"""The ``lensgen demo`` workflow: the seed talk's main job, end to end.

Simulate a lens with θ_E = 2.3″ and the learned default source (``lensgen
simulate`` defaults, the 8″ field resampled to ``npix`` pixels), fit it with NUTS
and SVI started from a MAP fit, write the inference outputs and print the truth
against both posteriors.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from lensgen.errors import ConfigError
from lensgen.infer.outputs import check_run_outputs, infer_outputs
from lensgen.infer.report import with_sd_digits
from lensgen.infer.run import (
    InferConfig,
    InferenceResult,
    build_problem,
    output_names,
    run_inference,
    warn_unfitted,
    write_run,
)
from lensgen.io.fits import read_observation, write_observation
from lensgen.simulate.batch import simulate_observation
from lensgen.simulate.scene import Component, SimulateConfig, SourceModelConfig

FIELD_OF_VIEW = 8.0
"""Side of the simulated image, arcsec (``lensgen simulate``'s 100 × 0.08″)."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``lensgen demo`` (a 60 × 60 image; a few minutes on a 2-core CPU).

    NUTS stops once every mass parameter has ESS ≥ ``target_ess`` and every parameter
    R-hat < 1.01 (at most ``num_samples`` draws per chain).
    """

    rein: float = 2.3
    npix: int = 60
    num_warmup: int = 200
    num_samples: int = 500
    num_chains: int = 2
    target_ess: int = 200
    # Depth 5 (≤ 31 leapfrog steps per draw) bounds the demo's run time: the learned
    # source's latent directions make NUTS take long trajectories (BENCHMARKS.md).
    max_tree_depth: int = 5
    # The warm-up's draws only adapt the step size and the mass matrix: trees of depth 4
    # cut its cost by a third, and where sampling stops did not change beyond the
    # key-to-key spread over 12 keys (BENCHMARKS.md).
    max_tree_depth_warmup: int = 4
    svi_steps: int = 1000
    map_steps: int = 600
    map_restarts: int = 4
    source_model: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rein) and self.rein > 0):
            raise ConfigError(f"rein must be a finite number > 0 (arcsec), got {self.rein}")
        least = {"npix": 16, "num_chains": 1, "num_samples": 1, "num_warmup": 0,
                 "target_ess": 0, "svi_steps": 0, "map_steps": 1, "map_restarts": 1}  # fmt: skip
        for name, low in least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("max_tree_depth", "max_tree_depth_warmup"):
            if not 1 <= getattr(self, name) <= 15:
                raise ConfigError(f"{name} must be in 1..15, got {getattr(self, name)}")

    def infer_config(self) -> InferConfig:
        """The inference settings of the demo: NUTS and SVI, both started from a MAP fit."""
        return InferConfig(
            method="nuts+svi",
            source_model=self.source_model,
            num_chains=self.num_chains,
            num_warmup=self.num_warmup,
            num_samples=self.num_samples,
            target_ess=self.target_ess,
            max_tree_depth=self.max_tree_depth,
            max_tree_depth_warmup=self.max_tree_depth_warmup,
            svi_steps=self.svi_steps,
            map_steps=self.map_steps,
            map_restarts=self.map_restarts,
        )


def simulate_seed_case(cfg: DemoConfig, seed: int):
    """The seed case observation: SIS θ_E = ``rein``, learned source, default noise."""
    import jax

    sim = SimulateConfig()
    lens = (Component("SIS", {"theta_E": cfg.rein, "center_x": 0.0, "center_y": 0.0}),)
    sim = dataclasses.replace(
        sim,
        lens=lens,
        instrument=dataclasses.replace(
            sim.instrument, npix=cfg.npix, pixel_scale=FIELD_OF_VIEW / cfg.npix
        ),
        source_model=SourceModelConfig(path=cfg.source_model, use_flow=True),
    )
    obs, _ = simulate_observation(sim, jax.random.key(seed))
    return dataclasses.replace(obs, seed=seed)


def truth_table(
    obs, results: list[InferenceResult]
) -> list[tuple[str, float, list[tuple[float, float, bool]]]]:
    """(name, truth, [(mean, sd, truth inside the central 95% interval) per method])."""
    rows = []
    for name, true in obs.truth.items():
        if all(name in r.samples for r in results):
            stats = []
            for r in results:
                draws = np.asarray(r.samples[name], dtype=float).reshape(-1)
                lo, hi = np.percentile(draws, [2.5, 97.5])
                stats.append((float(draws.mean()), float(draws.std()), bool(lo <= true <= hi)))
            rows.append((name, true, stats))
    return rows


def run_demo(
    cfg: DemoConfig,
    out: str | Path,
    seed: int,
    overwrite: bool = False,
    console=None,
    progress=None,
):
    """Simulate → infer (NUTS + SVI) → report into ``out``; returns the results.

    ``out`` receives ``obs.fits`` and the inference outputs in ``out/posterior``. All
    are checked before the simulation and written together at the end, so a refused,
    failed or interrupted demo changes nothing in ``out`` and a rerun needs no
    ``--overwrite``. ``progress(stage, done, total, status)`` is called as the stages
    advance.
    """

    infer_cfg = cfg.infer_config()
    out = Path(out)
    names = ["obs.fits", *(f"posterior/{n}" for n in infer_outputs(infer_cfg, theta_e=True))]
    check_run_outputs(out, names, overwrite)
    warn_unfitted(infer_cfg)
    with tempfile.TemporaryDirectory(prefix="lensgen_demo_") as scratch:
        # Fit the file's contents (a float32 image), so that `lensgen infer obs.fits`
        # reproduces the demo; obs.fits joins the other outputs at the end.
        staged = write_observation(Path(scratch) / "obs.fits", simulate_seed_case(cfg, seed))
        obs = dataclasses.replace(read_observation(staged), path=out / "obs.fits")
        if console is not None:
            console.print(f"simulated θ_E = {cfg.rein} ({cfg.npix}×{cfg.npix} px)")
        problem = build_problem(infer_cfg, obs)
        # The COOLEST files depend on the problem (its PSF, its pixel sources): checked
        # now, before the fit.
        names = ["obs.fits", *(f"posterior/{n}" for n in output_names(infer_cfg, problem, obs))]
        check_run_outputs(out, names, overwrite)
        results = run_inference(jax.random.PRNGKey(seed), problem, infer_cfg, progress)
        header = f"# lensgen infer {out / 'obs.fits'} --seed {seed}\n"
        write_run(infer_cfg, problem, obs, results, out, overwrite, header, folder="posterior",
                  extra={"obs.fits": lambda path: shutil.copyfile(staged, path)},
                  console=console)  # fmt: skip
    if console is not None:
        console.print(f"wrote {out / 'obs.fits'} and {len(names) - 1} files to {out / 'posterior'}")
        from rich.table import Table

        table = Table(title="truth vs posterior (mean ± sd; ✓ = truth inside the 95% interval)")
        table.add_column("parameter", no_wrap=True)
        table.add_column("truth", justify="right", no_wrap=True)
        for r in results:
            table.add_column(r.method.upper(), justify="right", no_wrap=True)
        rows = truth_table(obs, results)
        for name, true, stats in rows:
            cells = (f"{with_sd_digits(m, s)} ± {s:.2g} {'✓' if inside else '✗'}"
                     for m, s, inside in stats)  # fmt: skip
            table.add_row(name, f"{true:.6g}", *cells)
        console.print(table)
    return obs, results
