"""Outputs of the subhalo fit (:mod:`lensgen.infer.substructure`): summary, posterior, plot.

``write_subhalo_results`` writes into the output directory ``subhalo_summary.json``
(detection statistic, per-subhalo MAP / mean / sd / central 95% interval of
log10 M200 and position, truths of a simulation matched to the fitted subhalos),
``subhalo_summary.csv`` (the same table flat), ``posterior_subhalo.nc`` (ArviZ) and
``subhalo.png`` (position posterior over the data and the residuals).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lensgen.infer.model import SUBHALO_SITES
from lensgen.infer.outputs import SUBHALO_OUTPUTS, check_run_outputs, write_outputs
from lensgen.infer.problem import InferConfig, load_mask
from lensgen.infer.report import save_report_figure, to_inference_data
from lensgen.infer.run import warn_unfitted
from lensgen.infer.substructure import (
    SubhaloConfig,
    SubhaloFit,
    build_subhalo_problems,
    fit_subhalos,
    log_likelihood,
)
from lensgen.io.atomic import check_output_dir
from lensgen.io.fits import read_observation
from lensgen.io.wcs import IDENTITY, Orientation
from lensgen.lensing.grid import display_frame
from lensgen.lensing.substructure import SUBHALOS


def true_subhalos(obs) -> list[dict[str, float]]:
    """Rows of the file's SUBHALOS table (mass in M☉, x, y in arcsec); [] without one."""
    table = (getattr(obs, "tables", None) or {}).get(SUBHALOS)
    if table is None:
        return []
    rows = table.data if hasattr(table, "header") else table
    return [
        {
            "mass": float(r["mass"]),
            "x": float(r["x"]),
            "y": float(r["y"]),
            "injected": bool(r["injected"]),
        }  # fmt: skip
        for r in rows
    ]


def subhalo_summary(fit: SubhaloFit, obs=None) -> dict[str, Any]:
    """Detection statistic and per-subhalo posterior (MAP, mean, sd, 95% interval).

    With the file's truths, each fitted subhalo is matched to the nearest true one
    (position error in arcsec; ``truth_in_95``: both coordinates inside their
    central 95% intervals).
    """
    post = {k: v.reshape(-1) for k, v in fit.posterior.samples.items() if v.ndim == 2}
    truths = true_subhalos(obs) if obs is not None else []
    subhalos = []
    for k in range(fit.subhalo.spec.subhalos):
        entry: dict[str, Any] = {"index": k}
        for p in SUBHALO_SITES:
            draws = post[f"subhalo.{k}.{p}"]
            lo, hi = np.percentile(draws, [2.5, 97.5])
            entry[p] = {"map": float(fit.subhalo_map.point[f"subhalo.{k}.{p}"]),
                        "mean": float(draws.mean()), "sd": float(draws.std()),
                        "q2.5": float(lo), "q97.5": float(hi)}  # fmt: skip
        if truths:
            cx, cy = entry["center_x"]["mean"], entry["center_y"]["mean"]
            t = min(truths, key=lambda t: math.hypot(t["x"] - cx, t["y"] - cy))
            inside = all(
                entry[p]["q2.5"] <= t[c] <= entry[p]["q97.5"]
                for p, c in (("center_x", "x"), ("center_y", "y"))
            )
            entry["truth"] = {**t, "log10_m": math.log10(t["mass"])}
            entry["position_error"] = math.hypot(t["x"] - cx, t["y"] - cy)
            entry["truth_in_95"] = bool(inside)
        subhalos.append(entry)
    return {
        "detected": fit.detected,
        "delta_log_evidence": fit.delta_log_evidence,
        "delta_log_likelihood": fit.delta_log_likelihood,
        "threshold": fit.threshold,
        "log_evidence_smooth": fit.log_evidence[0],
        "log_evidence_subhalo": fit.log_evidence[1],
        "method": fit.posterior.method,
        "chi2_smooth": float(np.nanmean(fit.residual**2)),
        "halos": dataclasses.asdict(fit.subhalo.spec.halos),
        "subhalos": subhalos,
        "truth": truths,
    }


def write_subhalo_results(out, fit: SubhaloFit, obs, overwrite: bool, console=None) -> dict:
    """``subhalo_summary.json``/``.csv``, ``posterior_subhalo.nc`` and ``subhalo.png`` in ``out``.

    All four are checked first and written together
    (:func:`lensgen.infer.outputs.write_outputs`): an error leaves ``out`` unchanged.
    """

    out = Path(out)
    check_run_outputs(out, SUBHALO_OUTPUTS, overwrite)
    summary = subhalo_summary(fit, obs)
    lines = ["parameter,map,mean,sd,q2.5,q97.5,truth"]
    for s in summary["subhalos"]:
        truth = s.get("truth", {})
        for p, c in zip(SUBHALO_SITES, ("log10_m", "x", "y"), strict=True):
            e = s[p]
            cells = [e["map"], e["mean"], e["sd"], e["q2.5"], e["q97.5"]]
            row = ",".join(f"{v:.6g}" for v in cells)
            lines.append(f"subhalo.{s['index']}.{p},{row},{truth.get(c, '')}")
    for name in ("delta_log_evidence", "delta_log_likelihood", "threshold"):
        lines.append(f"{name},{summary[name]:.6g},,,,,")
    lines.append(f"detected,{int(summary['detected'])},,,,,")
    samples = fit.posterior.samples
    draws = [
        (samples[f"subhalo.{k}.center_x"].reshape(-1), samples[f"subhalo.{k}.center_y"].reshape(-1))
        for k in range(fit.subhalo.spec.subhalos)
    ]
    _, resid_sub = log_likelihood(fit.subhalo, fit.subhalo_map.point)
    verdict = "detected" if fit.detected else "not detected"
    title = (f"subhalo {verdict}: Δ log Z = {fit.delta_log_evidence:.1f} (threshold "
             f"{fit.threshold:g}), Δ log L = {fit.delta_log_likelihood:.1f}")  # fmt: skip
    truths = [(t["x"], t["y"]) for t in summary["truth"]]

    def write(tmp: dict[str, Path]) -> None:
        tmp["subhalo_summary.json"].write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
        tmp["subhalo_summary.csv"].write_text("\n".join(lines) + "\n", "utf-8")
        idata = to_inference_data(fit.posterior, obs.image)
        idata.to_netcdf(str(tmp["posterior_subhalo.nc"]), engine="h5netcdf")
        subhalo_plot(np.where(np.asarray(fit.smooth.data.mask), obs.image, np.nan),
                     (fit.residual, resid_sub), obs.pixel_scale, draws, truths, title,
                     tmp["subhalo.png"], overwrite=True,
                     orientation=fit.smooth.scene.orientation)  # fmt: skip

    write_outputs(out, SUBHALO_OUTPUTS, overwrite, write)
    if console is not None:
        console.print(title)
        for s in summary["subhalos"]:
            m, x, y = (s[p] for p in SUBHALO_SITES)
            console.print(
                f"  subhalo {s['index']}: log10 M = {m['mean']:.2f} ± {m['sd']:.2f}, "
                f"x = {x['mean']:.3f} ± {x['sd']:.3f}″, y = {y['mean']:.3f} ± {y['sd']:.3f}″"
            )
    keys = ("json", "csv", "posterior", "plot")
    return {k: out / n for k, n in zip(keys, SUBHALO_OUTPUTS, strict=True)}


def run_subhalo_infer(
    config: InferConfig,
    sub: SubhaloConfig,
    obs_path,
    out,
    seed: int,
    overwrite: bool = False,
    console=None,
    source_model=None,
) -> SubhaloFit:
    """Read ``obs_path``, fit the smooth and subhalo models, write the subhalo outputs.

    The outputs are checked before the fit, so a run that would be refused at the end
    is refused at the start.
    """

    check_output_dir(out)
    obs = read_observation(obs_path)
    mask = load_mask(config.mask, obs.image.shape) if config.mask else None
    smooth, subhalo = build_subhalo_problems(config, sub, obs, source_model, mask)
    inputs = (obs_path, config.mask, config.priors)
    check_run_outputs(out, SUBHALO_OUTPUTS, overwrite, inputs)
    if sub.method == "svi":
        warn_unfitted(config)
    fit = fit_subhalos(jax.random.PRNGKey(seed), smooth, subhalo, config, sub)
    write_subhalo_results(out, fit, obs, overwrite, console)
    return fit


def subhalo_plot(
    image: np.ndarray,
    residuals: tuple[np.ndarray, np.ndarray],
    pixel_scale: float,
    draws: list[tuple[np.ndarray, np.ndarray]],
    truths: list[tuple[float, float]],
    title: str,
    path: Path,
    overwrite: bool,
    orientation: Orientation = IDENTITY,
) -> Path:
    """Subhalo position posterior over the data and the residuals.

    Panels: observed image, normalised residuals of the smooth (no-subhalo) fit and
    of the subhalo fit, each with posterior position draws (one colour per fitted
    subhalo) and true positions (open circles); last, a zoom on the position
    posterior with its 68% and 95% contours. ``draws`` holds (x, y) draws (arcsec)
    per fitted subhalo, ``truths`` true positions (arcsec); ``orientation`` is the
    image's (:func:`lensgen.lensing.grid.display_frame`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extent, to_display, (xlabel, ylabel) = display_frame(image.shape, pixel_scale, orientation)
    colours = ["cyan", "orange", "magenta", "yellow"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.3))
    vmax = np.nanpercentile(image, 99.5)
    im = axes[0].imshow(image, origin="lower", extent=extent, vmin=0, vmax=vmax, cmap="magma")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="counts/s")
    axes[0].set_title("data + subhalo position posterior")
    for ax, resid, name in zip(axes[1:3], residuals, ("smooth", "subhalo"), strict=True):
        im = ax.imshow(resid, origin="lower", extent=extent, vmin=-5, vmax=5, cmap="RdBu_r")
        fig.colorbar(im, ax=ax, shrink=0.8, label="(data − model)/σ")
        chi2 = np.nanmean(resid**2)
        ax.set_title(f"{name} fit residuals, χ²/N = {chi2:.3f}")
    for ax in axes[:3]:
        for k, (x, y) in enumerate(draws):
            pick = slice(None, None, max(len(x) // 400, 1))
            ax.plot(*to_display(x[pick], y[pick]), ".", ms=2, alpha=0.4, color=colours[k % 4])
        for tx, ty in truths:
            ax.plot(*to_display(tx, ty), "o", mfc="none", mec="lime", ms=12, mew=1.5)
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    ax = axes[3]
    for k, (x, y) in enumerate(draws):
        _contours(ax, x, y, colours[k % 4], label=f"subhalo {k}")
    for i, (tx, ty) in enumerate(truths):
        label = "truth" if not i else None
        ax.plot(tx, ty, "o", mfc="none", mec="green", ms=10, mew=1.5, label=label)
    if draws:
        # Zoom on the draws (and whatever truths fall there), not on every true subhalo.
        xs = np.concatenate([d[0] for d in draws])
        ys = np.concatenate([d[1] for d in draws])
        rx, ry = np.percentile(xs, [0.5, 99.5]), np.percentile(ys, [0.5, 99.5])
        width = max(rx[1] - rx[0], ry[1] - ry[0], 4 * pixel_scale)
        mid = (rx.mean(), ry.mean())
        span = 0.8 * width
        ax.set_xlim(mid[0] - span, mid[0] + span)
        ax.set_ylim(mid[1] - span, mid[1] + span)
    ax.set_aspect("equal")
    ax.set_xlabel("x [arcsec]")
    ax.set_ylabel("y [arcsec]")
    ax.set_title("position posterior (68%, 95%)")
    ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save_report_figure(fig, path, overwrite)


def _contours(ax, x: np.ndarray, y: np.ndarray, colour: str, label: str) -> None:
    """Draws and the 68% / 95% highest-density contours of a 2-D histogram."""
    from scipy.ndimage import gaussian_filter

    ax.plot(x[::4], y[::4], ",", color="0.5", alpha=0.5)
    hist, xe, ye = np.histogram2d(x, y, bins=40)
    hist = gaussian_filter(hist, 1.0).T
    levels = np.sort(hist.ravel())[::-1]
    mass = np.cumsum(levels) / max(levels.sum(), 1e-300)
    lv = [levels[min(np.searchsorted(mass, p), len(levels) - 1)] for p in (0.95, 0.68)]
    if lv[0] < lv[1]:
        centres = (0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]))
        ax.contour(*centres, hist, levels=lv, colors=colour, linewidths=(1.0, 1.8))
    ax.plot(np.median(x), np.median(y), "+", color=colour, ms=10, label=label)
