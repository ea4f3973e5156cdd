"""Galaxy-level quality of a source model: flux, size and ellipticity distributions.

Galaxies decoded from z ~ N(0, I) and from z ~ flow are passed through the same
observation as the data (PSF of the likelihood, Gaussian noise with σ drawn from
the validation catalogue) and measured exactly like the validation stamps, so
noise and PSF biases of the estimators cancel in the comparison. Measured per
stamp: total flux (Σ I), Gaussian-weighted second-moment size
r = sqrt((Q_xx + Q_yy) / 2) in arcsec and ellipticity |e| = |(Q_xx − Q_yy, 2 Q_xy)|
/ (Q_xx + Q_yy), with a fixed circular weight of σ_w = H / 6 pixels centred on
the weighted centroid. The 1-D Wasserstein-1 distance of each distribution to
the validation one is reported for both priors (smaller is better).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import wasserstein_distance

from lensgen.source import flow as flowlib
from lensgen.source import vae


def moments(image: jnp.ndarray, pixel_scale: float) -> jnp.ndarray:
    """(flux, size [arcsec], |e|) of one stamp; NaN size/|e| when Σ w I ≤ 0."""
    H, W = image.shape
    y, x = jnp.mgrid[:H, :W].astype(image.dtype)
    sw = H / 6.0
    w = jnp.exp(-0.5 * ((x - (W - 1) / 2) ** 2 + (y - (H - 1) / 2) ** 2) / sw**2)
    wi = w * image
    norm = jnp.sum(wi)
    ok = norm > 0
    norm = jnp.where(ok, norm, 1.0)
    cx, cy = jnp.sum(wi * x) / norm, jnp.sum(wi * y) / norm
    w = jnp.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / sw**2)
    wi = w * image
    norm = jnp.where(jnp.sum(wi) > 0, jnp.sum(wi), 1.0)
    qxx = jnp.sum(wi * (x - cx) ** 2) / norm
    qyy = jnp.sum(wi * (y - cy) ** 2) / norm
    qxy = jnp.sum(wi * (x - cx) * (y - cy)) / norm
    tr = qxx + qyy
    ok = ok & (tr > 0)
    size = jnp.where(ok, jnp.sqrt(jnp.abs(tr) / 2) * pixel_scale, jnp.nan)
    e = jnp.where(ok, jnp.hypot(qxx - qyy, 2 * qxy) / jnp.where(tr > 0, tr, 1.0), jnp.nan)
    return jnp.stack([jnp.sum(image), size, e])


def measure(images: np.ndarray, pixel_scale: float) -> np.ndarray:
    """(n, 3) flux, size, |e| of a stack of stamps."""
    return np.asarray(_measure(jnp.asarray(images, jnp.float32), pixel_scale), np.float64)


@partial(jax.jit, static_argnums=1)
def _measure(images: jnp.ndarray, pixel_scale: float) -> jnp.ndarray:
    return jax.vmap(lambda im: moments(im, pixel_scale))(images)


def observe(key, params, arch, z, psf, sigmas) -> np.ndarray:
    """Decode latents, apply each one's PSF ((n, k, k) or None) and add noise of σ's."""
    psf = None if psf is None else jnp.asarray(psf)
    z = jnp.asarray(z, jnp.float32)
    return np.asarray(_observe(key, params, arch, z, psf, jnp.asarray(sigmas, jnp.float32)))


@partial(jax.jit, static_argnums=2)
def _observe(key, params, arch, z, psf, sigmas):
    img = jax.vmap(lambda v: vae.decode(params, arch, v))(z)
    if psf is not None:
        img = jax.vmap(vae.psf_convolve)(img, psf)
    return img + jax.random.normal(key, img.shape, jnp.float32) * sigmas[:, None, None]


def quality_report(key, params, arch, flow_params, data, n: int) -> dict[str, Any]:
    """W1 distances of flux / size / |e| to validation stamps: N(0, I) vs flow."""
    k_idx, k_n, k_f, k_noise1, k_noise2 = jax.random.split(key, 5)
    n = min(n, data.x_val.shape[0])
    sel = np.asarray(jax.random.permutation(k_idx, data.x_val.shape[0]))[:n]
    ref = measure(data.x_val[sel] * data.flux_scale, data.pixel_scale)
    sig = data.s_val[sel]
    z_n = jax.random.normal(k_n, (n, arch.latent_dim), jnp.float32)
    z_f = flowlib.sample(k_f, flow_params, n)
    out: dict[str, Any] = {"n_quality": int(n)}
    for name, z, kn in (("normal", z_n, k_noise1), ("flow", z_f, k_noise2)):
        obs = observe(kn, params, arch, z, data.val_psfs(sel), sig) * data.flux_scale
        m = measure(obs, data.pixel_scale)
        for j, q in enumerate(("flux", "size", "abs_e")):
            a, b = ref[:, j], m[:, j]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            out[f"w1_{q}_{name}"] = float(wasserstein_distance(a, b)) if len(a) and len(b) else None
    return out
