"""Pixel grids with supersampling, and binning of supersampled images back to pixels.

Coordinates follow the lensgen convention: x along the image columns (FITS axis 1),
y along the rows (FITS axis 2), origin at the image centre, arcsec. Pixel (row i,
column j) of an (ny, nx) image has its centre at x = (j − (nx − 1)/2) · pixel_scale,
y = (i − (ny − 1)/2) · pixel_scale, the same as lenstronomy's ImageData with
``ra_at_xy_0 = −(nx − 1)/2 · pixel_scale`` and ``transform_pix2angle =
diag(pixel_scale, pixel_scale)``.
"""

from __future__ import annotations

import numpy as np

from lensgen.errors import LensgenError


def check_grid(shape: tuple[int, int], pixel_scale: float, supersample: int) -> None:
    """Raise :class:`LensgenError` for a non-positive shape, pixel scale or supersampling."""
    if len(shape) != 2 or any(int(n) != n or n < 1 for n in shape):
        raise LensgenError(f"image shape must be two positive integers, got {shape!r}")
    if not pixel_scale > 0:
        raise LensgenError(f"pixel_scale must be > 0 arcsec, got {pixel_scale!r}")
    if int(supersample) != supersample or supersample < 1:
        raise LensgenError(f"supersample must be a positive integer, got {supersample!r}")


def pixel_grid(
    shape: tuple[int, int], pixel_scale: float, supersample: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres of an image, arcsec.

    Each pixel is split into ``supersample`` × ``supersample`` equal sub-pixels; the
    sub-pixel centres lie at offsets ((k + 1/2)/s − 1/2) · pixel_scale, k = 0…s−1,
    from the pixel centre along each axis (lenstronomy ``util.make_subgrid``).

    Parameters
    ----------
    shape : (ny, nx)
        Image size in pixels.
    pixel_scale : float
        Pixel size, arcsec.
    supersample : int
        Sub-pixels per pixel along each axis.

    Returns
    -------
    x, y : numpy arrays, shape (ny·s, nx·s), float64
        Static grids: they become compile-time constants under ``jax.jit``.
    """
    check_grid(shape, pixel_scale, supersample)
    ny, nx = shape
    s = int(supersample)
    x1 = ((np.arange(nx * s) + 0.5) / s - nx / 2.0) * pixel_scale
    y1 = ((np.arange(ny * s) + 0.5) / s - ny / 2.0) * pixel_scale
    x, y = np.meshgrid(x1, y1)
    return x, y


def bin_image(image, supersample: int):
    """Mean over ``supersample`` × ``supersample`` blocks: (ny·s, nx·s) → (ny, nx).

    Averaging surface brightness over the sub-pixels and multiplying by the pixel
    area gives the flux in each pixel, so the total flux is conserved. Works on jax
    and numpy arrays, with any leading batch axes.
    """
    s = int(supersample)
    if s == 1:
        return image
    *lead, h, w = image.shape
    blocks = image.reshape(*lead, h // s, s, w // s, s)
    return blocks.mean(axis=(-3, -1))
