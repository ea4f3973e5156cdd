"""Figures shared by the commands (matplotlib with the Agg backend; files only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lensgen.io.atomic import atomic_path  # noqa: E402
from lensgen.lensing.caustics import critical_curves_and_caustics


def extent(shape: tuple[int, int], pixel_scale: float) -> list[float]:
    """imshow extent in arcsec for an image centred on the origin."""
    ny, nx = shape
    return [
        -nx * pixel_scale / 2,
        nx * pixel_scale / 2,
        -ny * pixel_scale / 2,
        ny * pixel_scale / 2,
    ]


def savefig(
    fig: plt.Figure, path: str | Path, dpi: int = 110, overwrite: bool = True, tight: bool = True
) -> Path:
    """Save atomically (no half-written PNG) and close the figure."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(
            tmp,
            dpi=dpi,
            bbox_inches="tight" if tight else None,
            format=path.suffix.lstrip(".") or "png",
        )
    plt.close(fig)
    return path


def _panel(
    ax: plt.Axes, img: np.ndarray, ext: list[float], title: str, cmap: str = "magma"
) -> None:
    im = ax.imshow(img, origin="lower", extent=ext, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x [arcsec]")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)


def simulation_preview(obs: Any, params: dict, path: str | Path) -> Path:
    """Observation, noiseless model, source with caustics, image with critical curves."""

    ext = extent(obs.shape, obs.pixel_scale)
    lens_model = tuple(obs.scene["lens"])
    crit, caus = critical_curves_and_caustics(
        lens_model, params["lens"], obs.shape, obs.pixel_scale
    )
    fig, axes = plt.subplots(1, 4, figsize=(18, 4), gridspec_kw={"wspace": 0.35})
    _panel(axes[0], obs.image, ext, "observation [counts/s]")
    _panel(axes[1], obs.model, ext, "noiseless model")
    src_ext = extent(obs.source.shape, obs.source_pixel_scale or obs.pixel_scale)
    _panel(axes[2], obs.source, src_ext, "source + caustics", cmap="viridis")
    for cx, cy in caus:
        axes[2].plot(cx, cy, color="w", lw=0.8)
    _panel(axes[3], obs.model, ext, "model + critical curves")
    for cx, cy in crit:
        axes[3].plot(cx, cy, color="c", lw=0.8)
    for ax, e in ((axes[2], src_ext), (axes[3], ext)):
        ax.set_xlim(e[0], e[1])
        ax.set_ylim(e[2], e[3])
    axes[0].set_ylabel("y [arcsec]")
    theta = [f"{k.split('.')[-1]}={v:.3g}" for k, v in obs.truth.items() if k.startswith("lens.")]
    fig.suptitle(
        f"lensgen simulate: {' + '.join(lens_model)}  " + ", ".join(theta[:6]), fontsize=10
    )
    return savefig(fig, path)
