"""Subhalo detection study (issue 6): detection rate, false-positive rate, position error.

``n`` simulated observations with one injected TNFW subhalo of mass 10^``log10_m`` M☉
at a random angle on the Einstein ring, and ``n`` without, all of one 48×48 high-S/N
SIS + Sérsic configuration (the test suite's, tests/test_infer_substructure.py). Each
is fitted by :func:`lensgen.infer.substructure.fit_subhalos` (smooth MAP, subhalo
scan + MAP, Laplace evidences and posterior); one pair of compiled problems serves
every observation. Reported: the fraction with Δ log Z > 5 (detections / false
positives), the position error and 95%-interval coverage of the detected subhalos.

    python benchmarks/subhalo_detection.py --n 10 --log10-m 9.5 --out subhalo_study.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from lensgen.errors import LensgenError  # noqa: E402
from lensgen.infer.problem import InferConfig, with_data  # noqa: E402
from lensgen.infer.substructure import SubhaloConfig, build_subhalo_problems, fit_subhalos  # noqa: E402
from lensgen.simulate.batch import simulate_observation  # noqa: E402
from lensgen.simulate.population import SubhaloPopulation  # noqa: E402
from lensgen.simulate.scene import (  # noqa: E402
    PARAMETRIC_SOURCE,
    Component,
    InstrumentConfig,
    NoiseConfig,
    SimulateConfig,
)

THETA_E = 1.45


def simulate(seed: int, mass: float | None, x: float = 0.0, y: float = 0.0):
    pop = None
    if mass is not None:
        pop = SubhaloPopulation(n_subhalos=0, inject_mass=(mass,), inject_x=(x,), inject_y=(y,))
    source = {**PARAMETRIC_SOURCE.params, "amp": 150.0, "R_sersic": 0.15}
    cfg = SimulateConfig(
        lens=(Component("SIS", {"theta_E": THETA_E, "center_x": 0.0, "center_y": 0.0}),),
        source=(dataclasses.replace(PARAMETRIC_SOURCE, params=source),),
        instrument=InstrumentConfig(npix=48, pixel_scale=0.08, supersample=1, psf_fwhm=0.1),
        noise=NoiseConfig(exptime=5000.0, background_rms=0.05),
        substructure=pop,
    )
    return simulate_observation(cfg, jax.random.key(seed))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="observations with and without")
    parser.add_argument("--log10-m", type=float, default=9.5, help="injected log10 M200/M☉")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map-restarts", type=int, default=4, help="smooth-fit MAP restarts")
    parser.add_argument("--out", default="", help="optional JSON file for the per-lens rows")
    args = parser.parse_args()

    infer = InferConfig(method="map", map_steps=600, map_restarts=args.map_restarts)
    sub = SubhaloConfig()
    rng = np.random.default_rng(args.seed)
    angles = rng.uniform(0, 2 * np.pi, args.n)
    truths = [(THETA_E * math.cos(a), THETA_E * math.sin(a)) for a in angles]
    t0 = time.perf_counter()
    first = simulate(1000 * args.seed, 10**args.log10_m, *truths[0])
    smooth, subhalo = build_subhalo_problems(infer, sub, first)
    rows = []
    for i in range(2 * args.n):
        injected = i < args.n
        seed = 1000 * args.seed + i
        x, y = truths[i] if injected else (math.nan, math.nan)
        obs = first if i == 0 else simulate(seed, 10**args.log10_m if injected else None, x, y)
        t = time.perf_counter()
        try:
            fit = fit_subhalos(
                jax.random.PRNGKey(seed),
                with_data(smooth, obs),
                with_data(subhalo, obs),
                infer,
                sub,
            )
        except LensgenError as exc:  # counted as a failed fit, neither detection nor miss
            rows.append({"injected": injected, "failed": str(exc), "detected": False})
            print(f"{i:2d} failed: {exc}", flush=True)
            continue
        post = {k: v.reshape(-1) for k, v in fit.posterior.samples.items()}
        px, py, pm = (post[f"subhalo.0.{p}"] for p in ("center_x", "center_y", "log10_m"))
        row = {
            "injected": injected,
            "x": x,
            "y": y,
            "delta_log_evidence": fit.delta_log_evidence,
            "delta_log_likelihood": fit.delta_log_likelihood,
            "detected": fit.detected,
            "x_fit": float(np.median(px)),
            "y_fit": float(np.median(py)),
            "log10_m_fit": float(np.median(pm)),
            "position_error": math.hypot(np.median(px) - x, np.median(py) - y),
            "in_95": bool(
                np.percentile(px, 2.5) <= x <= np.percentile(px, 97.5)
                and np.percentile(py, 2.5) <= y <= np.percentile(py, 97.5)
            ),
            "seconds": time.perf_counter() - t,
            "failed": "",
        }
        rows.append(row)
        print(
            f"{i:2d} {'sub ' if injected else 'none'} ΔlogZ={row['delta_log_evidence']:8.1f} "
            f"ΔlogL={row['delta_log_likelihood']:7.1f} detected={row['detected']!s:5} "
            f"err={row['position_error']:.3f}″ in95={row['in_95']} {row['seconds']:.1f}s",
            flush=True,
        )
    wall = time.perf_counter() - t0
    sub_rows = [r for r in rows if r["injected"] and not r["failed"]]
    null_rows = [r for r in rows if not r["injected"] and not r["failed"]]
    detected = [r for r in sub_rows if r["detected"]]
    summary = {
        "log10_m": args.log10_m,
        "n": args.n,
        "failed_fits": sum(bool(r["failed"]) for r in rows),
        "detection_rate": len(detected) / max(len(sub_rows), 1),
        "false_positive_rate": sum(r["detected"] for r in null_rows) / max(len(null_rows), 1),
        "median_position_error": float(np.median([r["position_error"] for r in detected]))
        if detected
        else math.nan,
        "coverage_95": float(np.mean([r["in_95"] for r in detected])) if detected else math.nan,
        "median_log10_m_error": float(
            np.median([abs(r["log10_m_fit"] - args.log10_m) for r in detected])
        )
        if detected
        else math.nan,
        "delta_log_z_injected": [round(r["delta_log_evidence"], 1) for r in sub_rows],
        "delta_log_z_null": [round(r["delta_log_evidence"], 1) for r in null_rows],
        "wall_s": wall,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}, jax "
        f"{jax.__version__} {jax.default_backend()}",
    }
    print(json.dumps({k: v for k, v in summary.items()}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
