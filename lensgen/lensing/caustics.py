"""Critical curves (det A = 0 in the image plane) and caustics (their source-plane map).

Used for plots, so the result is plain numpy polylines. The determinant of the lens
Jacobian comes from autodiff (:func:`lensgen.lensing.raytrace.hessian`) on a
supersampled pixel grid; its zero level is traced with contourpy's marching squares
(the contour engine matplotlib uses), then each vertex is ray-shot to the source plane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import contourpy
import jax
import jax.numpy as jnp
import numpy as np

from lensgen.lensing.grid import pixel_grid
from lensgen.lensing.raytrace import hessian, ray_shoot


@partial(jax.jit, static_argnums=0)
def _det_jacobian(model: tuple[str, ...], params, x, y):
    f_xx, f_xy, f_yx, f_yy = hessian(model, params, x, y)
    return (1.0 - f_xx) * (1.0 - f_yy) - f_xy * f_yx


@partial(jax.jit, static_argnums=0)
def _shoot(model: tuple[str, ...], params, x, y):
    return ray_shoot(model, params, x, y)


def critical_curves_and_caustics(
    model: Sequence[str],
    params: Sequence[Mapping],
    shape: tuple[int, int],
    pixel_scale: float,
    supersample: int = 4,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """Trace the critical curves over an image and map them to caustics.

    Parameters
    ----------
    model : sequence of str
        Lens model names.
    params : sequence of dict
        Lens parameters (concrete values).
    shape : (ny, nx)
        Image size in pixels; the curves are searched within this field of view.
    pixel_scale : float
        Pixel size (arcsec).
    supersample : int
        Grid refinement per pixel along each axis for the determinant.

    Returns
    -------
    critical_curves : list of (x, y)
        Image-plane polylines (arcsec), one per connected curve.
    caustics : list of (x, y)
        The same polylines mapped through the lens equation (source plane, arcsec).
    """
    x, y = pixel_grid(tuple(shape), pixel_scale, supersample)
    model = tuple(model)
    params = [{k: jnp.asarray(v, float) for k, v in p.items()} for p in params]
    det = np.asarray(_det_jacobian(model, params, x, y))
    gen = contourpy.contour_generator(x[0], y[:, 0], np.ma.masked_invalid(det))
    critical, caustics = [], []
    for line in gen.lines(0.0):
        if len(line) < 2:
            continue
        bx, by = _shoot(model, params, line[:, 0], line[:, 1])
        critical.append((line[:, 0].copy(), line[:, 1].copy()))
        caustics.append((np.asarray(bx), np.asarray(by)))
    return critical, caustics
