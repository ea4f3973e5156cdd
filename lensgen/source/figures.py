"""Figures of ``train-vae`` and ``fit-iaf`` (matplotlib, Agg backend, PNG files).

train-vae: ``reconstructions.png`` (validation originals, posterior-mean model
after the PSF, galaxy before the PSF, residual / σ), ``loss.png`` (ELBO, χ²/N and
KL per epoch), ``samples_normal.png`` (galaxies decoded from z ~ N(0, I)).
fit-iaf: ``latents.png`` (2-D projections of training latents vs N(0, I) vs flow
samples on the two leading principal axes and the first coordinate pairs),
``samples_flow.png`` (decoded N(0, I) draws next to decoded flow draws).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lensgen.plots import savefig  # noqa: E402
from lensgen.source import flow as flowlib  # noqa: E402
from lensgen.source import vae  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    savefig(fig, path, dpi=90, overwrite=True, tight=False)


def _grid(images: np.ndarray, title: str, path: Path, ncol: int = 8) -> None:
    n = len(images)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.3 * ncol, 1.3 * nrow + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im in zip(axes.ravel(), images, strict=False):
        ax.imshow(im, origin="lower", cmap="magma")
    fig.suptitle(title)
    _save(fig, path)


def training_figures(workdir, arch, params, data, history, key, n: int = 8) -> None:
    """Reconstructions, loss curves and N(0, I) samples into ``workdir/figures``."""
    out = Path(workdir) / "figures"
    x = jnp.asarray(data.x_val[:n])
    s = np.asarray(data.s_val[:n])
    mu = jax.vmap(lambda im: vae.encode(params, arch, im)[0])(x)
    gal = jax.vmap(lambda z: vae.decode(params, arch, z))(mu)
    psfs = data.val_psfs(slice(n))
    model = gal if psfs is None else jax.vmap(vae.psf_convolve)(gal, jnp.asarray(psfs))
    rows = [("data", x), ("model ⊛ PSF", model), ("galaxy (pre-PSF)", gal),
            ("residual / σ", (x - model) / s[:, None, None])]  # fmt: skip
    fig, axes = plt.subplots(4, len(x), figsize=(1.4 * len(x), 6.0), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(len(x)):
            ax = axes[r, c]
            kw = {"vmin": -3, "vmax": 3, "cmap": "RdBu_r"} if r == 3 else {"cmap": "magma"}
            ax.imshow(np.asarray(imgs[c]), origin="lower", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("validation stamps and reconstructions")
    _save(fig, out / "reconstructions.png")

    if history:
        ep = [h["epoch"] for h in history]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
        axes[0].plot(ep, [h["train_elbo"] for h in history], label="train")
        axes[0].plot(ep, [h["val_elbo"] for h in history], label="validation")
        axes[0].set_ylabel("ELBO per stamp [nats]")
        axes[0].legend()
        axes[1].plot(ep, [h["val_chi2_per_pix"] for h in history])
        axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
        axes[1].set_ylabel("validation χ²/N (posterior mean)")
        axes[2].plot(ep, [h["val_kl"] for h in history])
        axes[2].set_ylabel("validation KL [nats]")
        for ax in axes:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        _save(fig, out / "loss.png")

    z = jax.random.normal(key, (16, arch.latent_dim), jnp.float32)
    imgs = np.asarray(jax.vmap(lambda v: vae.decode(params, arch, v))(z))
    _grid(imgs, "decoded from z ~ N(0, I) (pre-PSF)", out / "samples_normal.png")


def flow_figures(model_dir, key, params, arch, flow_params, z_train, data, n: int = 16) -> None:
    """Latent projections and decoded N(0, I) vs flow galaxies into ``figures/``."""
    out = Path(model_dir) / "figures"
    k_n, k_f, k_d = jax.random.split(key, 3)
    m = min(2000, len(z_train))
    zt = np.asarray(z_train[:m])
    zn = np.asarray(jax.random.normal(k_n, (m, arch.latent_dim)))
    zf = np.asarray(flowlib.sample(k_f, flow_params, m))
    centre = zt.mean(0)
    axes_pc = np.linalg.svd(zt - centre, full_matrices=False)[2][:2].T
    d = arch.latent_dim
    pairs = [("PC1", "PC2", axes_pc)]
    for i in range(0, min(d - 1, 4), 2):
        e = np.zeros((d, 2))
        e[i, 0] = e[i + 1, 1] = 1.0
        pairs.append((f"z{i}", f"z{i + 1}", e))
    fig, axes = plt.subplots(len(pairs), 3, figsize=(9, 3 * len(pairs)), squeeze=False)
    for r, (lx, ly, P) in enumerate(pairs):
        c0 = centre if lx == "PC1" else 0.0
        for c, (label, z) in enumerate((("training latents", zt), ("N(0, I)", zn), ("flow", zf))):
            p = (z - c0) @ P
            axes[r, c].scatter(p[:, 0], p[:, 1], s=2, alpha=0.3)
            axes[r, c].set_title(label, fontsize=9)
            axes[r, c].set_xlabel(lx)
            axes[r, c].set_ylabel(ly)
        lim = np.percentile(np.abs((zt - c0) @ P), 99.5) * 1.3
        for ax in axes[r]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
    fig.tight_layout()
    _save(fig, out / "latents.png")

    dec = jax.vmap(lambda v: vae.decode(params, arch, v))
    both = np.concatenate(
        [np.asarray(dec(jnp.asarray(zn[:n]))), np.asarray(dec(jnp.asarray(zf[:n])))]
    )
    _grid(
        both,
        f"top {n // 8} rows: z ~ N(0, I); bottom: z ~ flow (pre-PSF)",
        out / "samples_flow.png",
    )
