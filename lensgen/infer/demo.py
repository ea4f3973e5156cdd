"""The ``lensgen demo`` workflow: the seed talk's main job, end to end.

Simulate a lens with θ_E = 2.3″ and the learned default source (``lensgen
simulate`` defaults, the 8″ field resampled to ``npix`` pixels), fit it with NUTS
and SVI started from a MAP fit, write the inference outputs and print the truth
against both posteriors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lensgen.errors import LensgenError
from lensgen.infer.run import InferConfig, InferenceResult

FIELD_OF_VIEW = 8.0
"""Side of the simulated image, arcsec (``lensgen simulate``'s 100 × 0.08″)."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``lensgen demo`` (a 60 × 60 image; a few minutes on a 2-core CPU).

    NUTS stops once every scalar parameter has ESS ≥ ``target_ess`` and R-hat < 1.01
    (at most ``num_samples`` draws per chain).
    """

    rein: float = 2.3
    npix: int = 60
    num_warmup: int = 200
    num_samples: int = 300
    num_chains: int = 2
    target_ess: int = 200
    # Depth 5 (≤ 31 leapfrog steps per draw) bounds the demo's run time: the learned
    # source's latent directions make NUTS take long trajectories (BENCHMARKS.md).
    max_tree_depth: int = 5
    svi_steps: int = 1000
    map_steps: int = 600
    map_restarts: int = 4
    source_model: str = ""

    def __post_init__(self) -> None:
        if not self.rein > 0:
            raise LensgenError(f"--rein must be > 0, got {self.rein}")
        if self.npix < 16:
            raise LensgenError(f"--npix must be >= 16, got {self.npix}")


def simulate_seed_case(cfg: DemoConfig, seed: int):
    """The seed case observation: SIS θ_E = ``rein``, learned source, default noise."""
    import jax

    from lensgen.lensing.scene_config import Component, SimulateConfig, SourceModelConfig
    from lensgen.lensing.simulate import simulate_observation

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

    ``progress(stage, done, total, status)`` is called as the stages advance.
    """
    from lensgen.io.fits import write_observation

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise LensgenError(
            f"output directory {out} is not empty; pass --overwrite to replace files"
        )
    out.mkdir(parents=True, exist_ok=True)
    obs = simulate_seed_case(cfg, seed)
    obs_path = write_observation(out / "obs.fits", obs, overwrite=True)
    if console is not None:
        console.print(f"simulated θ_E = {cfg.rein} ({cfg.npix}×{cfg.npix} px) → {obs_path}")
    infer_cfg = InferConfig(
        method="nuts+svi",
        source_model=cfg.source_model,
        num_chains=cfg.num_chains,
        num_warmup=cfg.num_warmup,
        num_samples=cfg.num_samples,
        target_ess=cfg.target_ess,
        max_tree_depth=cfg.max_tree_depth,
        svi_steps=cfg.svi_steps,
        map_steps=cfg.map_steps,
        map_restarts=cfg.map_restarts,
    )
    from lensgen.infer.run import run_infer

    results = run_infer(
        infer_cfg, obs_path, out / "posterior", seed, overwrite=True, console=console,
        progress=progress,
    )  # fmt: skip
    if console is not None:
        from rich.table import Table

        table = Table(title="truth vs posterior (mean ± sd; ✓ = truth inside the 95% interval)")
        table.add_column("parameter", no_wrap=True)
        table.add_column("truth", justify="right", no_wrap=True)
        for r in results:
            table.add_column(r.method.upper(), justify="right", no_wrap=True)
        rows = truth_table(obs, results)
        for name, true, stats in rows:
            cells = (f"{m:.5g} ± {s:.2g} {'✓' if inside else '✗'}" for m, s, inside in stats)
            table.add_row(name, f"{true:.4g}", *cells)
        console.print(table)
    return obs, results
