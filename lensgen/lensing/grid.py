"""Pixel grids with supersampling, and binning of supersampled images back to pixels.

Coordinates follow the lensgen convention (:mod:`lensgen.lensing.frames`): x = −ΔRA·cos δ,
y = ΔDec, origin at the image centre, arcsec. Pixel (row i, column j) of an (ny, nx)
image has its centre at (x, y) = pixel_scale · O · (j − (nx − 1)/2, i − (ny − 1)/2),
with O the image's orientation; for a north-up, east-left image O is the identity and
x runs along the columns (FITS axis 1), y along the rows (FITS axis 2).
"""

from __future__ import annotations

import numpy as np

from lensgen.errors import LensgenError
from lensgen.lensing.frames import IDENTITY, Orientation, is_diagonal


def check_grid(shape: tuple[int, int], pixel_scale: float, supersample: int) -> None:
    """Raise :class:`LensgenError` for a non-positive shape, pixel scale or supersampling."""
    if len(shape) != 2 or any(int(n) != n or n < 1 for n in shape):
        raise LensgenError(f"image shape must be two positive integers, got {shape!r}")
    if not pixel_scale > 0:
        raise LensgenError(f"pixel_scale must be > 0 arcsec, got {pixel_scale!r}")
    if int(supersample) != supersample or supersample < 1:
        raise LensgenError(f"supersample must be a positive integer, got {supersample!r}")


def pixel_grid(
    shape: tuple[int, int],
    pixel_scale: float,
    supersample: int = 1,
    orientation: Orientation = IDENTITY,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres of an image, arcsec.

    Each pixel is split into ``supersample`` × ``supersample`` equal sub-pixels; the
    sub-pixel centres lie at offsets ((k + 1/2)/s − 1/2) · pixel_scale, k = 0…s−1,
    from the pixel centre along each pixel axis (lenstronomy ``util.make_subgrid``),
    and ``orientation`` turns the pixel axes into (x, y).

    Parameters
    ----------
    shape : (ny, nx)
        Image size in pixels.
    pixel_scale : float
        Pixel size, arcsec.
    supersample : int
        Sub-pixels per pixel along each axis.
    orientation : 2 × 2 tuple
        (x, y) per unit step along (columns, rows) (:mod:`lensgen.lensing.frames`).

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
    u, v = np.meshgrid(x1, y1)
    if orientation == IDENTITY:
        return u, v
    (a, b), (c, d) = orientation
    return a * u + b * v, c * u + d * v


def pixel_centres(
    shape: tuple[int, int], pixel_scale: float, orientation: Orientation = IDENTITY
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of every pixel centre, arcsec, each of shape ``shape``."""
    return pixel_grid(shape, pixel_scale, 1, orientation)


def display_frame(shape: tuple[int, int], pixel_scale: float, orientation: Orientation = IDENTITY):
    """How to draw an image stored as ``shape`` with ``imshow(origin="lower")``.

    Returns ``(extent, to_display, labels)``: the imshow extent, a function taking
    (x, y) arrays to the axes' coordinates, and the two axis labels. When the pixel
    axes lie along x and y (possibly flipped) the axes are x and y themselves (a
    flipped axis runs backwards); for a rotated image they are the pixel axes in
    arcsec, and points in (x, y) are rotated onto them.
    """
    ny, nx = shape
    hx, hy = nx * pixel_scale / 2, ny * pixel_scale / 2
    (a, b), (c, d) = orientation
    if is_diagonal(orientation):
        extent = [-hx * a, hx * a, -hy * d, hy * d]
        return extent, (lambda x, y: (x, y)), ("x [arcsec]", "y [arcsec]")

    def to_display(x, y):
        x, y = np.asarray(x), np.asarray(y)
        return a * x + c * y, b * x + d * y  # Oᵀ (x, y): the offsets along columns and rows

    return [-hx, hx, -hy, hy], to_display, ("along columns [arcsec]", "along rows [arcsec]")


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
