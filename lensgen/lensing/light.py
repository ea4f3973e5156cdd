"""Surface-brightness profiles with lenstronomy's parameter names and definitions.

Every profile is a pure function ``f(x, y, **params)`` returning surface brightness
(flux per arcsec²) at angular positions ``x, y`` (arcsec); it broadcasts over arrays
and is safe under ``jax.jit``, ``jax.vmap`` and ``jax.grad``. The values agree with
lenstronomy 1.14 ("SERSIC", "SERSIC_ELLIPSE", "GAUSSIAN", "GAUSSIAN_ELLIPSE",
"INTERPOL", "SHAPELETS") to floating-point rounding, including lenstronomy's small-radius floor
and outer cut-off of the Sérsic profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from lensgen.errors import LensgenError
from lensgen.lensing.shapelets import shapelet_set

# lenstronomy floors radii at this value (arcsec) so that R^(1/n) stays finite
# and differentiable at the profile centre.
SERSIC_SMOOTHING = 1e-4
# lenstronomy sets the Sérsic profile to zero beyond this many R_sersic.
SERSIC_MAX_R_FRAC = 1000.0


def sersic_b_n(n_sersic):
    """Sérsic b_n ≈ 1.9992 n − 0.3271 (Capaccioli 1989), floored at 1e-5 as lenstronomy."""
    return jnp.maximum(1.9992 * n_sersic - 0.3271, 1e-5)


def _sersic_kernel(r2, R_sersic, n_sersic):
    """exp(−b_n [(R/R_sersic)^(1/n) − 1]) from the squared elliptical radius ``r2``.

    Both radii are floored at 1e-4 arcsec as in lenstronomy. Working with
    log(R/R_sersic) = ½ log max(R², 1e-8) − log R_sersic avoids a square root per
    point and keeps the gradient finite at R = 0.
    """
    log_frac = 0.5 * jnp.log(jnp.maximum(r2, SERSIC_SMOOTHING**2)) - jnp.log(
        jnp.maximum(R_sersic, SERSIC_SMOOTHING)
    )
    inside = log_frac <= jnp.log(SERSIC_MAX_R_FRAC)
    # Outside the cut the exponent may overflow; a safe value keeps gradients finite.
    safe_log = jnp.where(inside, log_frac, 0.0)
    b_n = sersic_b_n(n_sersic)
    return jnp.where(inside, jnp.exp(-b_n * (jnp.exp(safe_log / n_sersic) - 1.0)), 0.0)


def _product_average_coords(x, y, e1, e2, center_x, center_y):
    """Elliptical coordinates with R = sqrt(a b) (lenstronomy's product-average radius).

    x' = [(1 − e1) dx − e2 dy] / N, y' = [−e2 dx + (1 + e1) dy] / N with
    N = sqrt(max(|1 − e1² − e2²|, 1e-6)); then x'² + y'² = q dx_maj² + dy_min²/q.
    """
    dx = x - center_x
    dy = y - center_y
    norm = jnp.sqrt(jnp.maximum(jnp.abs(1.0 - e1**2 - e2**2), 1e-6))
    return ((1.0 - e1) * dx - e2 * dy) / norm, (-e2 * dx + (1.0 + e1) * dy) / norm


def sersic(x, y, amp, R_sersic, n_sersic, center_x=0.0, center_y=0.0):
    """Circular Sérsic profile I(R) = amp · exp(−b_n [(R/R_sersic)^(1/n) − 1]).

    Parameters
    ----------
    x, y : array_like
        Angular position, arcsec.
    amp : float
        Surface brightness at R = R_sersic, flux/arcsec².
    R_sersic : float
        Half-light radius, arcsec.
    n_sersic : float
        Sérsic index.
    center_x, center_y : float
        Profile centre, arcsec.

    Returns
    -------
    array
        Surface brightness, flux/arcsec². Radii below 1e-4 arcsec are floored and
        the profile is zero beyond 1000 R_sersic, as in lenstronomy.
    """
    r2 = (x - center_x) ** 2 + (y - center_y) ** 2
    return amp * _sersic_kernel(r2, R_sersic, n_sersic)


def sersic_ellipse(x, y, amp, R_sersic, n_sersic, e1, e2, center_x=0.0, center_y=0.0):
    """Elliptical Sérsic profile with the product-average radius R = sqrt(q x² + y²/q).

    Parameters as :func:`sersic`, plus ellipticity ``e1``, ``e2`` (dimensionless;
    q = (1 − |e|)/(1 + |e|), position angle φ = atan2(e2, e1)/2). R_sersic is the
    half-light radius along the geometric mean of the axes.
    """
    xe, ye = _product_average_coords(x, y, e1, e2, center_x, center_y)
    return amp * _sersic_kernel(xe**2 + ye**2, jnp.maximum(R_sersic, 0.0), n_sersic)


def gaussian(x, y, amp, sigma, center_x=0.0, center_y=0.0):
    """Circular Gaussian I = amp / (2π σ²) · exp(−r² / 2σ²).

    ``amp`` is the total flux (flux), ``sigma`` the standard deviation (arcsec).
    """
    r2 = ((x - center_x) ** 2 + (y - center_y) ** 2) / sigma**2
    return amp / (2.0 * jnp.pi * sigma**2) * jnp.exp(-0.5 * r2)


def gaussian_ellipse(x, y, amp, sigma, e1, e2, center_x=0.0, center_y=0.0):
    """Elliptical Gaussian on the product-average radius (lenstronomy "GAUSSIAN_ELLIPSE").

    ``amp`` is the total flux, ``sigma`` the standard deviation along the geometric
    mean axis (arcsec), ``e1``, ``e2`` the ellipticity.
    """
    xe, ye = _product_average_coords(x, y, e1, e2, center_x, center_y)
    return gaussian(xe, ye, amp, sigma)


def interpolated(x, y, image, amp=1.0, center_x=0.0, center_y=0.0, phi_G=0.0, scale=1.0):
    """Bilinear interpolation of a pixelated surface-brightness image ("INTERPOL").

    The image pixel (row i, column j) of an (H, W) ``image`` sits at pixel coordinates
    u = j − (W − 1)/2, v = i − (H − 1)/2, which relate to the sky by
    u = cos φ dx/s + sin φ dy/s, v = −sin φ dx/s + cos φ dy/s with
    (dx, dy) = (x − center_x, y − center_y), s = ``scale`` and φ = ``phi_G``
    (lenstronomy ``Interpol.coord2image_pixel``).

    Outside the image the profile is zero beyond a one-pixel margin: the image is
    surrounded by a ring of zero pixels and interpolated linearly across it, exactly
    as lenstronomy's zero-padded bilinear ``RectBivariateSpline``. Differentiable in
    ``image``, ``amp``, the centre, ``phi_G`` and ``scale``.

    Parameters
    ----------
    x, y : array_like
        Angular position, arcsec.
    image : array, shape (H, W)
        Surface brightness, flux/arcsec² (not flux per pixel).
    amp : float
        Multiplier of the image.
    center_x, center_y : float
        Sky position of the image centre, arcsec.
    phi_G : float
        Rotation of the image, radians.
    scale : float
        Image pixel size, arcsec.
    """
    image = jnp.asarray(image)
    h, w = image.shape
    padded = jnp.pad(image, 1)
    dx = (x - center_x) / scale
    dy = (y - center_y) / scale
    cos_phi, sin_phi = jnp.cos(phi_G), jnp.sin(phi_G)
    u = cos_phi * dx + sin_phi * dy
    v = -sin_phi * dx + cos_phi * dy
    # Continuous indices in the padded array, clamped to its edge (where it is zero):
    # FITPACK's evaluation clamps out-of-range points the same way.
    col = jnp.clip(u + (w + 1) / 2.0, 0.0, w + 1.0)
    row = jnp.clip(v + (h + 1) / 2.0, 0.0, h + 1.0)
    j0 = jnp.clip(jnp.floor(col), 0, w).astype(jnp.int32)
    i0 = jnp.clip(jnp.floor(row), 0, h).astype(jnp.int32)
    fx = col - j0
    fy = row - i0
    top = padded[i0, j0] * (1.0 - fx) + padded[i0, j0 + 1] * fx
    bottom = padded[i0 + 1, j0] * (1.0 - fx) + padded[i0 + 1, j0 + 1] * fx
    return amp * (top * (1.0 - fy) + bottom * fy)


class LightProfile(NamedTuple):
    """A light profile: its function, parameter names (after x, y) and defaults."""

    function: Callable
    params: tuple[str, ...]
    defaults: dict[str, float]


_CENTRE = {"center_x": 0.0, "center_y": 0.0}

LIGHT_PROFILES: dict[str, LightProfile] = {
    "SERSIC": LightProfile(
        sersic, ("amp", "R_sersic", "n_sersic", "center_x", "center_y"), dict(_CENTRE)
    ),
    "SERSIC_ELLIPSE": LightProfile(
        sersic_ellipse,
        ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y"),
        {"e1": 0.0, "e2": 0.0, **_CENTRE},
    ),
    "GAUSSIAN": LightProfile(gaussian, ("amp", "sigma", "center_x", "center_y"), dict(_CENTRE)),
    "GAUSSIAN_ELLIPSE": LightProfile(
        gaussian_ellipse,
        ("amp", "sigma", "e1", "e2", "center_x", "center_y"),
        {"e1": 0.0, "e2": 0.0, **_CENTRE},
    ),
    "INTERPOL": LightProfile(
        interpolated,
        ("image", "amp", "center_x", "center_y", "phi_G", "scale"),
        {"amp": 1.0, "phi_G": 0.0, "scale": 1.0, **_CENTRE},
    ),
    # ``amp`` is the vector of shapelet amplitudes (lensgen.lensing.shapelets).
    "SHAPELETS": LightProfile(shapelet_set, ("amp", "beta", "center_x", "center_y"), dict(_CENTRE)),
}


def validate_light(model: Sequence[str], params: Sequence[Mapping]) -> None:
    """Check model names and parameter keys; raise :class:`LensgenError` naming the problem."""
    if len(model) != len(params):
        raise LensgenError(
            f"light model {tuple(model)} has {len(model)} components but {len(params)} "
            "parameter sets were given"
        )
    for name, kwargs in zip(model, params, strict=True):
        if name not in LIGHT_PROFILES:
            raise LensgenError(
                f"unknown light profile {name!r}; choose from {sorted(LIGHT_PROFILES)}"
            )
        profile = LIGHT_PROFILES[name]
        unknown = sorted(set(kwargs) - set(profile.params))
        if unknown:
            raise LensgenError(
                f"unknown parameter(s) {unknown} for light profile {name!r}; "
                f"expected {list(profile.params)}"
            )
        missing = [p for p in profile.params if p not in kwargs and p not in profile.defaults]
        if missing:
            raise LensgenError(f"light profile {name!r} is missing parameter(s) {missing}")


_POSITIVE = ("R_sersic", "n_sersic", "sigma", "scale", "beta")
"""Light-profile parameters that must be > 0 (sizes and the Sérsic index)."""


def check_light_values(name: str, params: Mapping[str, Any], where: str) -> None:
    """Check concrete parameter values of one light component (arrays elementwise).

    Emitted light is never negative, so ``amp`` must be >= 0; sizes and the Sérsic
    index must be > 0; ellipticities need ``|e| < 1``; every value must be finite.
    Raises :class:`LensgenError` naming ``where``, the parameter and the bad value.
    """
    for key, value in params.items():
        if key == "image":
            continue
        v = np.asarray(value, dtype=float).ravel()
        for ok, rule in (
            (np.isfinite(v), "must be finite"),
            (v > 0 if key in _POSITIVE else None, "must be > 0"),
            # Shapelet amplitudes are signed: only their sum over the set is light.
            (
                v >= 0 if key == "amp" and name != "SHAPELETS" else None,
                "must be >= 0 (emitted light is not negative)",
            ),
        ):
            if ok is not None and not np.all(ok):
                raise LensgenError(f"{where} ({name}): {key} {rule}, got {v[~ok][0]:g}")
    if "e1" in params or "e2" in params:
        e = np.hypot(np.asarray(params.get("e1", 0.0)), np.asarray(params.get("e2", 0.0)))
        if not np.all(e < 1):
            raise LensgenError(
                f"{where} ({name}): ellipticity |e| = hypot(e1, e2) must be < 1, got {np.max(e):g}"
            )


def surface_brightness(model: Sequence[str], params: Sequence[Mapping], x, y):
    """Summed surface brightness (flux/arcsec²) of the components of a light model.

    Parameters
    ----------
    model : sequence of str
        Profile names from :data:`LIGHT_PROFILES`, e.g. ``("SERSIC_ELLIPSE",)``.
    params : sequence of dict
        One parameter dict per component; keys missing from a dict take the
        profile's defaults.
    x, y : array
        Angular positions, arcsec.
    """
    validate_light(model, params)
    total = jnp.zeros(jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y)), jnp.result_type(x, y))
    for name, kwargs in zip(model, params, strict=True):
        profile = LIGHT_PROFILES[name]
        total = total + profile.function(x, y, **{**profile.defaults, **kwargs})
    return total
