"""Small synthetic stamp datasets for the source-model tests (not a test module).

Noisy elliptical Gaussian galaxies (random size, axis ratio, angle, flux)
convolved with a Gaussian PSF, each stamp with its own noise σ; 80 % train,
20 % validation. Exact and fast: analytic profiles, FFT convolution.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from lensgen.io.dataset import StampDataset, make_catalog, write_dataset


def blob_dataset(path, n: int = 300, size: int = 16, seed: int = 0, psf: bool = True,
                 flux: tuple[float, float] = (50.0, 150.0)):  # fmt: skip
    """Write and return a dataset of ``n`` ``size``×``size`` stamps (0.2″/pixel)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    ky, kx = np.mgrid[-3:4, -3:4]
    kern = np.exp(-0.5 * (kx**2 + ky**2) / 0.8**2)
    kern /= kern.sum()
    stamps, sig = [], []
    for _ in range(n):
        r, q, phi = rng.uniform(1.2, 2.5), rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
        c, s = np.cos(phi), np.sin(phi)
        img = np.exp(-0.5 * (((c * x + s * y) / r) ** 2 + ((-s * x + c * y) / (q * r)) ** 2))
        img *= rng.uniform(*flux) / img.sum()
        if psf:
            img = fftconvolve(img, kern, mode="same")
        sigma = rng.uniform(0.5, 1.0)
        stamps.append(img + rng.normal(0.0, sigma, img.shape))
        sig.append(sigma)
    split = np.where(np.arange(n) < int(0.8 * n), "train", "val")
    ds = StampDataset(
        np.asarray(stamps, np.float32), make_catalog(n, sigma=np.asarray(sig), split=split),
        0.2, kern.astype(np.float32) if psf else None,
    )  # fmt: skip
    write_dataset(path, ds, overwrite=True)
    return ds
