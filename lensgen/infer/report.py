"""Inference outputs: ArviZ InferenceData (netCDF), summary table, corner and fit plots.

Per method ``m`` the output directory holds ``posterior_m.nc`` (posterior,
sample_stats, observed_data), ``summary_m.csv`` (mean, sd, 94% HDI, R-hat, bulk
and tail ESS, plus the divergence count), ``corner_m.png`` (not for MAP) and for
SVI ``elbo.png``; for the whole run ``bestfit.png`` (data, model, normalised
residuals, reconstructed source, critical curves and caustics) and ``theta_E.png``
(p(θ_E | obs) of every method, truth marked when the file has one). The list is
:func:`lensgen.infer.outputs.infer_outputs`; :func:`write_results` writes them to the
paths it is given, which :func:`lensgen.infer.outputs.write_outputs` renames together.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lensgen.infer.coolest import (
    DOCUMENT,
    coolest_names,
    coolest_skip_reason,
    left_out_line,
    write_coolest,
)
from lensgen.infer.export import bestfit_document, draws_document, write_json
from lensgen.infer.problem import (
    InferenceResult,
    Problem,
    normalised_residuals,
    reduced_chi2,
    render_values,
)
from lensgen.lensing.caustics import critical_curves_and_caustics
from lensgen.lensing.grid import display_frame
from lensgen.lensing.render import render_source_plane
from lensgen.plots import savefig

SUMMARY_COLUMNS = ["mean", "sd", "hdi_3%", "hdi_97%", "r_hat", "ess_bulk", "ess_tail"]


def scalar_names(result: InferenceResult) -> list[str]:
    """Scalar parameters of a result, in model order (latent vectors excluded)."""
    return [k for k, v in result.samples.items() if v.ndim == 2]


def moving_names(result: InferenceResult) -> list[str]:
    """The scalar parameters whose draws are not all equal."""
    return [n for n in scalar_names(result) if np.ptp(result.samples[n]) > 0]


def warn_if_stuck(result: InferenceResult, console) -> None:
    """One warning line when a sampler's draws are all one point (its chains did not move)."""
    if result.method != "map" and scalar_names(result) and not moving_names(result):
        console.print(f"[bold yellow]warning:[/] every {result.method} draw is the same point: "
                      "the chains did not move; try more --map-restarts or --map-steps")  # fmt: skip


def _arviz():
    """ArviZ, imported without its once-a-day FutureWarning about a coming refactor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


@contextlib.contextmanager
def _quiet_arviz_log() -> Iterator[None]:
    """Silence ArviZ's shape log for one-chain results (SVI, MAP), whose R-hat is NaN anyway.

    ArviZ logs "Shape validation failed" through its own ``arviz._log`` object, which
    is not the ``logging.getLogger("arviz")`` of the logging registry; both are raised.
    """
    az = _arviz()
    logs = {id(log): log for log in (logging.getLogger("arviz"), getattr(az, "_log", None))
            if isinstance(log, logging.Logger)}  # fmt: skip
    levels = {k: log.level for k, log in logs.items()}
    for log in logs.values():
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for k, log in logs.items():
            log.setLevel(levels[k])


def _arviz_major(az) -> int:
    return int(az.__version__.split(".")[0])


def to_inference_data(result: InferenceResult, observed: np.ndarray | None = None):
    """ArviZ data with posterior, sample_stats and observed_data groups.

    ``InferenceData`` with ArviZ 0.x, an xarray ``DataTree`` with ArviZ ≥ 1 (whose
    ``from_dict`` takes the groups as one mapping); both write the same netCDF groups.
    """
    az = _arviz()
    groups: dict[str, Any] = {"posterior": dict(result.samples)}
    dims = {k: [f"{k}_dim"] for k, v in result.samples.items() if v.ndim == 3}
    if result.sample_stats:
        groups["sample_stats"] = dict(result.sample_stats)
    if observed is not None:
        groups["observed_data"] = {"image": np.asarray(observed)}
        dims["image"] = ["y", "x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if _arviz_major(az) >= 1:
            idata = az.from_dict(groups, dims=dims)
        else:
            idata = az.from_dict(**groups, dims=dims)
    idata["posterior"].attrs["inference_method"] = result.method
    return idata


def summary(result: InferenceResult, idata=None):
    """Summary table (pandas DataFrame) of the scalar parameters; 94% HDI.

    ``idata``: the result's ArviZ data when already built (:func:`to_inference_data`).
    The columns are :data:`SUMMARY_COLUMNS` with either ArviZ: 1.x names the HDI
    bounds ``hdi94_lb``/``hdi94_ub`` and takes ``ci_prob``, 0.x ``hdi_prob``.
    """
    az = _arviz()
    idata = to_inference_data(result) if idata is None else idata
    names = scalar_names(result)
    with _quiet_arviz_log(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _arviz_major(az) >= 1:
            table = az.summary(idata, var_names=names, kind="all", ci_kind="hdi",
                               ci_prob=0.94, round_to="none")  # fmt: skip
            table = table.rename(columns={"hdi94_lb": "hdi_3%", "hdi94_ub": "hdi_97%"})
        else:
            table = az.summary(idata, var_names=names, hdi_prob=0.94, kind="all",
                               round_to="none")  # fmt: skip
    table = table[SUMMARY_COLUMNS]
    # Only NUTS counts divergences: for SVI and MAP the column is left out, not zeroed.
    if "divergences" in result.diagnostics:
        table["divergences"] = result.diagnostics["divergences"]
    return table


def timing_line(result: InferenceResult) -> str:
    """Where a method's time went, and for NUTS its cost per draw and what it reached."""
    labels = {"compile": "compile", "map": "MAP", "warmup": "warm-up", "sampling": "sampling",
              "optimisation": "optimisation"}  # fmt: skip
    timings = result.diagnostics.get("timings", {})
    parts = [f"{labels.get(k, k)} {v:.1f} s" for k, v in timings.items()]
    total = sum(timings.values()) if timings else result.diagnostics["wall_time_s"]
    line = f"{result.method}: {total:.1f} s ({', '.join(parts)})"
    d = result.diagnostics
    if "mean_steps" in d:
        line += f"; {d['mean_steps']:.1f} leapfrog steps/draw, {d['draws_per_chain']} draws/chain"
        if d.get("ess"):
            worst = min(d["ess"], key=d["ess"].get)
            line += f", min ESS {d['ess'][worst]:.0f} ({worst})"
            finite = [v for v in d["rhat"].values() if np.isfinite(v)]
            if finite:
                line += f", max R-hat {max(finite):.4f}"
    return line


def with_sd_digits(value: float, sd: float) -> str:
    """``value`` with the decimals that show two significant digits of ``sd``.

    A posterior mean of 2.29990 with sd 0.00012 prints as ``2.29990``, not ``2.3``: the
    digits a reader compares with the truth or another fit are never rounded away.
    Without a usable sd (zero, NaN), six significant digits.
    """
    if not (np.isfinite(value) and np.isfinite(sd) and sd > 0):
        return f"{value:.6g}"
    decimals = int(min(max(1 - np.floor(np.log10(sd)), 0), 12))
    return f"{value:.{decimals}f}"


DROP_ORDER = ("ess_tail", "hdi_3%", "hdi_97%", "r_hat", "ess_bulk", "truth")
"""Summary columns left out, in this order, when a table is wider than the console."""


def fit_columns(columns: dict[str, list[str]], width: int) -> list[str]:
    """The columns of a box table (name → cells, header first) that fit ``width``
    characters, dropping :data:`DROP_ORDER` ones as needed: a number is never cut."""
    kept = list(columns)

    def needed() -> int:
        return 1 + sum(max(len(c) for c in columns[k]) + 3 for k in kept)

    for name in DROP_ORDER:
        if needed() <= width:
            break
        if name in kept:
            kept.remove(name)
    return kept


def print_summary(table, method: str, truth: dict[str, float], console) -> None:
    """Print the summary with rich (truth column when known): the mean, the interval
    bounds and the truth with the decimals that the sd resolves (:func:`with_sd_digits`).

    Columns that do not fit the console are left out (:func:`fit_columns`), never cut;
    ``summary_<method>.csv`` holds them all.
    """
    from rich.table import Table

    cols: dict[str, list[str]] = {"parameter": ["parameter", *map(str, table.index)]}
    if truth:
        cols["truth"] = ["truth"]
    for c in SUMMARY_COLUMNS:
        cols[c] = [c]
    for name, row in table.iterrows():
        sd = float(row["sd"])
        if truth:
            cols["truth"].append(with_sd_digits(truth[name], sd) if name in truth else "-")
        for c in SUMMARY_COLUMNS:
            if c in ("mean", "hdi_3%", "hdi_97%"):
                cols[c].append(with_sd_digits(float(row[c]), sd))
            elif c == "sd":
                cols[c].append(f"{sd:.2g}")
            elif c == "r_hat":
                cols[c].append(f"{row[c]:.3f}")
            else:  # effective sample sizes
                cols[c].append(f"{row[c]:.0f}")
    kept = fit_columns(cols, console.width)
    out = Table(title=f"posterior ({method})")
    for k in kept:
        out.add_column(k, justify="left" if k == "parameter" else "right", no_wrap=True)
    for i in range(1, len(cols["parameter"])):
        out.add_row(*(cols[k][i] for k in kept))
    console.print(out)
    dropped = [k for k in cols if k not in kept]
    if dropped:
        console.print(f"(left out to fit {console.width} columns: {', '.join(dropped)}; "
                      f"all are in summary_{method}.csv)")  # fmt: skip
    n_div = int(table["divergences"].iloc[0]) if "divergences" in table and len(table) else 0
    if n_div:
        console.print(f"[bold yellow]warning:[/] {n_div} divergent transition(s) in {method}")


def save_report_figure(fig, path: Path, overwrite: bool) -> Path:

    return savefig(fig, path, dpi=90, overwrite=overwrite, tight=False)


def corner_plot(
    result: InferenceResult,
    truth: dict[str, float],
    path: Path,
    overwrite: bool,
    max_params: int = 8,
):
    """A corner plot of up to ``max_params`` scalar parameters (lens first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = moving_names(result)[:max_params]
    n = len(names)
    if n == 0:  # a stuck chain: say so in the figure rather than draw empty axes
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{result.method}: every draw is the same point\n"
                "(the chain did not move; see the run's warning)",
                ha="center", va="center")  # fmt: skip
        return save_report_figure(fig, path, overwrite)
    fig, axes = plt.subplots(n, n, figsize=(1.8 * n + 1, 1.8 * n + 1), squeeze=False)
    flat = {k: result.samples[k].reshape(-1) for k in names}
    for i, yi in enumerate(names):
        for j, xj in enumerate(names):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(flat[xj], bins=30, histtype="step", color="k")
                if xj in truth:
                    ax.axvline(truth[xj], color="tab:red")
                ax.set_yticks([])
            else:
                ax.plot(flat[xj], flat[yi], ",", color="k", alpha=0.3)
                if xj in truth and yi in truth:
                    ax.plot(truth[xj], truth[yi], "s", color="tab:red", ms=4)
            if i == n - 1:
                ax.set_xlabel(xj, fontsize=7)
            if j == 0 and i > 0:
                ax.set_ylabel(yi, fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"{result.method} posterior")
    return save_report_figure(fig, path, overwrite)


def theta_e_plot(
    results: list[InferenceResult], truth: dict[str, float], path: Path, overwrite: bool
):
    """p(θ_E | obs) of each method overlaid (the seed talk's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for res, color in zip(results, ["tab:blue", "tab:orange", "tab:green"], strict=False):
        draws = res.samples["lens.0.theta_E"].reshape(-1)
        if np.ptp(draws) > 0:
            ax.hist(
                draws,
                bins=40,
                density=True,
                histtype="step",
                lw=2,
                color=color,
                label=f"{res.method.upper()}: {draws.mean():.4f} ± {draws.std():.4f}",
            )
        else:
            ax.axvline(draws[0], color=color, lw=2, label=f"{res.method.upper()}: {draws[0]:.4f}")
    if "lens.0.theta_E" in truth:
        ax.axvline(
            truth["lens.0.theta_E"],
            color="k",
            ls="--",
            label=f"truth {truth['lens.0.theta_E']:.4g}",
        )
    ax.set_xlabel(r"$\theta_E$ [arcsec]")
    ax.set_ylabel(r"$p(\theta_E\,|\,\mathrm{obs})$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_report_figure(fig, path, overwrite)


def posterior_point(result: InferenceResult) -> dict[str, np.ndarray]:
    """Posterior median of every site (the MAP for ``map``)."""
    return {k: np.median(v.reshape(-1, *v.shape[2:]), axis=0) for k, v in result.samples.items()}


def bestfit_values(problem: Problem, result: InferenceResult) -> dict[str, np.ndarray]:
    """The site values of the best fit: the posterior median (the MAP for ``map``),
    without the flow's deterministic ``source.z`` (recomputed from ``source.u``)."""
    values = posterior_point(result)
    if problem.spec.latent == "flow":
        values.pop("source.z", None)
    return values


def bestfit_plot(problem: Problem, obs, result: InferenceResult, path: Path, overwrite: bool):
    """Data, model, normalised residuals, reconstructed source with caustics, critical curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params, model = render_values(problem, bestfit_values(problem, result))
    model = np.asarray(model)
    data = np.where(np.asarray(problem.data.mask), np.asarray(problem.data.image), np.nan)
    resid = normalised_residuals(problem, model)
    ny, nx = obs.image.shape
    extent, to_display, (xlabel, ylabel) = display_frame(
        obs.image.shape, obs.pixel_scale, problem.scene.orientation
    )
    half = 0.5 * np.array([nx, ny]) * obs.pixel_scale
    src = np.asarray(
        render_source_plane(problem.scene, params, obs.image.shape, obs.pixel_scale / 2)
    )
    curves = _critical_curves(problem, params, obs)

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    vmax = np.nanpercentile(data, 99.5)
    for ax, img, title in ((axes[0], data, "data"), (axes[1], model, "model")):
        im = ax.imshow(img, origin="lower", extent=extent, vmin=0, vmax=vmax, cmap="magma")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(title)
    im = axes[2].imshow(resid, origin="lower", extent=extent, vmin=-4, vmax=4, cmap="RdBu_r")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    chi2 = reduced_chi2(problem, model)
    axes[2].set_title(f"(data − model)/σ, χ²/N = {chi2:.3f}")
    source_extent = (-half[0] / 2, half[0] / 2, -half[1] / 2, half[1] / 2)
    im = axes[3].imshow(src, origin="lower", extent=source_extent, cmap="magma")
    fig.colorbar(im, ax=axes[3], shrink=0.8)
    axes[3].set_title("reconstructed source + caustics")
    for crit, caus in curves:
        axes[1].plot(*to_display(crit[0], crit[1]), color="cyan", lw=0.8)
        axes[3].plot(caus[0], caus[1], color="cyan", lw=0.8)
    # The source plane is drawn with the image's axis directions where those are x, y.
    axes[3].set_xlim(extent[0] / 2, extent[1] / 2)
    axes[3].set_ylim(extent[2] / 2, extent[3] / 2)
    for ax in axes[:3]:
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    axes[3].set_xlabel("source-plane x [arcsec]")
    fig.suptitle(f"best fit ({result.method}, posterior median)")
    fig.tight_layout()
    return save_report_figure(fig, path, overwrite)


def _critical_curves(problem: Problem, params, obs) -> list[tuple[Any, Any]]:
    """Critical curves and caustics from raytrace (pairs of (x, y) polylines)."""

    lens = [{k: float(v) for k, v in comp.items()} for comp in params["lens"]]
    crit, caus = critical_curves_and_caustics(
        problem.scene.lens, lens, obs.image.shape, obs.pixel_scale, supersample=2
    )
    return list(zip(crit, caus, strict=False))


def write_results(
    targets: Mapping[str, Path],
    problem: Problem,
    obs,
    results: list[InferenceResult],
    console=None,
) -> dict[str, Path]:
    """Write the outputs of a run to ``targets`` (file name → path to write); returns name → path.

    ``targets`` names the files :func:`lensgen.infer.outputs.infer_outputs` lists;
    this writes every one of them except ``config.toml`` (the caller's), each to
    the path given (:func:`lensgen.infer.outputs.write_outputs` passes temporary
    paths that it renames onto the outputs once all are written).
    """
    truth = dict(obs.truth)
    paths: dict[str, Path] = {}

    def target(name: str) -> Path:
        paths[name] = targets[name]
        return targets[name]

    for res in results:
        m = res.method
        idata = to_inference_data(res, obs.image)
        idata.to_netcdf(str(target(f"posterior_{m}.nc")), engine="h5netcdf")
        table = summary(res, idata)
        table.to_csv(target(f"summary_{m}.csv"), index_label="parameter")
        if console is not None:
            print_summary(table, m, truth, console)
            console.print(timing_line(res))
            warn_if_stuck(res, console)
        if f"corner_{m}.png" in targets:
            corner_plot(res, truth, target(f"corner_{m}.png"), overwrite=True)
        if m == "svi" and "elbo.png" in targets:
            _elbo_plot(res.diagnostics["elbo"], target("elbo.png"), overwrite=True)
        if f"draws_lenstronomy_{m}.json" in targets:
            doc = draws_document(problem, obs, res)
            write_json(target(f"draws_lenstronomy_{m}.json"), doc)
    bestfit_plot(problem, obs, results[0], target("bestfit.png"), overwrite=True)
    point = bestfit_values(problem, results[0])
    doc = bestfit_document(problem, obs, point)
    write_json(target("bestfit_lenstronomy.json"), doc)
    _write_coolest(targets, target, problem, obs, point, results, console)
    if "theta_E.png" in targets:
        theta_e_plot(results, truth, target("theta_E.png"), overwrite=True)
    return paths


def _write_coolest(targets, target, problem: Problem, obs, point, results, console) -> None:
    """The COOLEST files (:mod:`lensgen.infer.coolest`) when ``targets`` lists them, with
    the posterior statistics of the first sampling method; one printed line for what is
    left out, or for why no file is written."""
    if DOCUMENT not in targets:
        reason = coolest_skip_reason(obs)
        if console is not None and reason:
            console.print(reason)
        return
    sampled = next((r for r in results if r.method != "map"), None)
    names = coolest_names(problem, obs)
    left_out = write_coolest({n: target(n) for n in names}, problem, obs, point, sampled)
    if console is not None and left_out:
        console.print(left_out_line(left_out))


def _elbo_plot(elbo: np.ndarray, path: Path, overwrite: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(elbo) + 1), elbo, lw=0.8)
    lo = np.percentile(elbo, 5)
    ax.set_ylim(lo, elbo.max() + 0.05 * (elbo.max() - lo + 1))
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO")
    fig.tight_layout()
    return save_report_figure(fig, path, overwrite)
