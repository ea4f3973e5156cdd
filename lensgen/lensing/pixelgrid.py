"""A regular source-plane pixel grid as a linear basis (Warren & Dye 2003; Suyu et al. 2006).

The source is n × n node values s_k on a square grid of half-width w (arcsec) centred
on (x₀, y₀), node spacing d = 2w/(n − 1), interpolated bilinearly between nodes and
falling linearly to zero one spacing beyond the edge: exactly lenstronomy's
``INTERPOL`` profile of the (n, n) image s with ``scale`` d
(:func:`lensgen.lensing.light.interpolated`). So the surface brightness is
Σ_k s_k B_k(x, y) with B_k the bilinear "tent" of node k, and
:func:`grid_basis` returns the B_k at given (ray-traced) positions.

:func:`gradient_regulariser` is the precision matrix R = D_xᵀD_x + D_yᵀD_y of the
gradient (first-order) regularisation of Suyu et al. (2006, eq. A.5) with zero values
beyond the grid, so R is positive definite and the prior s ~ N(0, (λR)⁻¹) is proper:
it prefers smooth sources that fade at the grid's edge.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def grid_spacing(n: int, width):
    """Node spacing d = 2w/(n − 1) of an n × n grid of half-width ``width`` (arcsec)."""
    return 2.0 * width / (n - 1)


def grid_basis(x, y, n: int, width, center_x=0.0, center_y=0.0, bins: int = 1):
    """The n² bilinear tents of the grid at positions (x, y), shape (n², *x.shape).

    Node (row i, column j) is basis k = i n + j, at (x₀ + (j − (n−1)/2) d,
    y₀ + (i − (n−1)/2) d). Differentiable in the positions, the width and the centre.
    With ``bins`` > 1 the positions are an image's (H, W) sub-pixels and the tents
    are averaged over each bins × bins block as they are summed (shape
    (n², H/bins, W/bins)): the binned basis without its sub-pixel intermediate.
    """
    d = grid_spacing(n, width)
    shape = jnp.shape(x)
    if bins > 1:
        h, w = shape
        rows, cols = np.divmod(np.arange(h * w), w)
        points = jnp.asarray((rows // bins) * (w // bins) + cols // bins)
        shape = (h // bins, w // bins)
    else:
        points = jnp.arange(int(np.prod(shape)))
    # Continuous indices in the grid padded by one zero node on each side, clamped to
    # the padding as INTERPOL does.
    col = jnp.clip((x.ravel() - center_x) / d + (n + 1) / 2.0, 0.0, n + 1.0)
    row = jnp.clip((y.ravel() - center_y) / d + (n + 1) / 2.0, 0.0, n + 1.0)
    j0 = jnp.clip(jnp.floor(col), 0, n).astype(jnp.int32)
    i0 = jnp.clip(jnp.floor(row), 0, n).astype(jnp.int32)
    fx, fy = col - j0, row - i0
    size = int(np.prod(shape))
    tents = jnp.zeros(((n + 2) * (n + 2), size), dtype=jnp.result_type(x, d))
    for di, dj, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                      (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
        tents = tents.at[(i0 + di) * (n + 2) + j0 + dj, points].add(w / bins**2)
    interior = tents.reshape(n + 2, n + 2, -1)[1:-1, 1:-1]
    return interior.reshape(n * n, *shape)


def grid_interpol(amplitudes, width, center_x, center_y) -> dict:
    """INTERPOL parameters of a grid source with node values ``amplitudes`` (flux/arcsec²)."""
    n = int(round(np.sqrt(amplitudes.shape[-1])))
    return {"image": amplitudes.reshape(n, n), "amp": 1.0, "center_x": center_x,
            "center_y": center_y, "phi_G": 0.0, "scale": grid_spacing(n, width)}  # fmt: skip


def gradient_regulariser(n: int) -> np.ndarray:
    """R = D_xᵀD_x + D_yᵀD_y of an n × n grid with zero values beyond it, (n², n²)."""
    diff = np.eye(n + 1, n, k=0) - np.eye(n + 1, n, k=-1)  # (n + 1, n): edges included
    eye = np.eye(n)
    d_x, d_y = np.kron(eye, diff), np.kron(diff, eye)
    return d_x.T @ d_x + d_y.T @ d_y
