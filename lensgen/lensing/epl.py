"""Elliptical isothermal (SIE) and elliptical power-law (EPL) mass profiles.

Both follow lenstronomy's parameterisation: ``theta_E`` is the product-average
Einstein radius, the ellipticity is given by ``e1, e2`` (see
:func:`lensgen.lensing._mass_util.ellipticity_to_phi_q`) and the convergence is

.. math:: \\kappa = \\frac{3-\\gamma}{2}
          \\left(\\frac{\\theta_E}{\\sqrt{q x'^2 + y'^2/q}}\\right)^{\\gamma-1}

in the frame aligned with the major axis (``gamma = 2`` is isothermal).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array, lax
from jax.typing import ArrayLike

from lensgen.lensing._mass_util import arctan, ellipticity_to_phi_q, rotate, safe_norm, shift

#: Number of terms of the Tessore & Metcalf (2015) angular series. The n-th term is
#: of order ``((1 - q) / (1 + q))**n``. Measured against scipy's hyp2f1 (1.6 <= gamma
#: <= 2.45), max error relative to |alpha|: ~1e-15 for q >= 0.3, 4e-13 at q = 0.2,
#: 4e-10 at q = 0.15, 3e-7 at q = 0.1.
EPL_SERIES_TERMS = 64

# Below this k^2 = 1 - q^2 the SIE closed form is replaced by its Taylor series in
# k^2 (the closed form is 0/0 at q = 1); the dropped term is O(k^6).
_SIE_K2_SERIES = 1e-6


def _atan_over_k(k2: Array, z: Array) -> Array:
    """``atan(k z) / k`` for ``k = sqrt(k2) >= 0``, smooth through ``k = 0``."""
    small = k2 < _SIE_K2_SERIES
    k = jnp.sqrt(jnp.where(small, 1.0, k2))
    direct = arctan(k * z) / k
    w = k2 * z * z
    series = z * (1.0 - w / 3.0 + w * w / 5.0)
    return jnp.where(small, series, direct)


def _atanh_over_k(k2: Array, z: Array) -> Array:
    """``atanh(k z) / k`` for ``k = sqrt(k2) >= 0``, smooth through ``k = 0``."""
    small = k2 < _SIE_K2_SERIES
    k = jnp.sqrt(jnp.where(small, 1.0, k2))
    direct = jnp.arctanh(k * z) / k
    w = k2 * z * z
    series = z * (1.0 + w / 3.0 + w * w / 5.0)
    return jnp.where(small, series, direct)


def sie_deflection(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    e1: ArrayLike = 0.0,
    e2: ArrayLike = 0.0,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """Deflection of the singular isothermal ellipsoid (arcsec).

    Closed form of Kormann, Schneider & Bartelmann (1994) in the notation of Keeton &
    Kochanek (1998, eq. 8 with core ``s = 0``): in the major-axis frame

    .. math:: \\alpha_{x'} = \\frac{b}{k}\\arctan\\frac{k x'}{\\psi},\\quad
              \\alpha_{y'} = \\frac{b}{k}\\operatorname{artanh}\\frac{k y'}{\\psi},

    with ``psi = sqrt(q^2 x'^2 + y'^2)``, ``k = sqrt(1 - q^2)``, ``b = theta_E sqrt(q)``.
    This is lenstronomy's "SIE" (its NIE with core 1e-10) to ~1e-10 relative.

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec).
    theta_E : array_like
        Product-average Einstein radius (arcsec).
    e1, e2 : array_like
        Eccentricity components.
    center_x, center_y : array_like
        Lens centre (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection (arcsec); 0 at the exact centre.
    """
    c, q, cos_phi, sin_phi = ellipticity_to_phi_q(e1, e2)
    dx, dy = shift(x, y, center_x, center_y)
    xr, yr = rotate(dx, dy, cos_phi, sin_phi)
    psi, nonzero = safe_norm(q * xr, yr)
    psi_safe = jnp.where(nonzero, psi, 1.0)
    # 1 - q^2 written through c to avoid cancellation for q -> 1.
    k2 = 4.0 * c / (1.0 + c) ** 2
    b = theta_E * jnp.sqrt(q)
    ax = b * _atan_over_k(k2, xr / psi_safe)
    ay = b * _atanh_over_k(k2, yr / psi_safe)
    ax = jnp.where(nonzero, ax, 0.0)
    ay = jnp.where(nonzero, ay, 0.0)
    return rotate(ax, ay, cos_phi, -sin_phi)


def sie_convergence(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    e1: ArrayLike = 0.0,
    e2: ArrayLike = 0.0,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Convergence of the singular isothermal ellipsoid (``gamma = 2`` EPL).

    Parameters as :func:`sie_deflection`. Returns ``kappa`` (dimensionless), finite
    (large) at the exact centre.
    """
    return epl_convergence(x, y, theta_E, 2.0, e1, e2, center_x, center_y)


def _hyp2f1_series(t: Array, f: Array, wr: Array, wi: Array, dtype) -> tuple[Array, Array]:
    """Sum ``2F1(1, t/2; 2 - t/2; -f w)`` for ``|w| = 1`` with a fixed number of terms.

    The series coefficients depend only on the lens (``t``, ``f``), so they are built
    once as a vector and the per-pixel polynomial in ``w`` is evaluated by Horner's
    rule inside ``lax.fori_loop`` (compiled once, independent of the term count).
    Tessore & Metcalf (2015), eqs. (23)-(29).
    """
    n = jnp.arange(1, EPL_SERIES_TERMS + 1, dtype=dtype)
    ratios = -f * (2.0 * n - 2.0 + t) / (2.0 * n + 2.0 - t)
    coeffs = jnp.concatenate([jnp.ones((1,), dtype), jnp.cumprod(ratios)])

    def horner(i, carry):
        pr, pi = carry
        a = coeffs[EPL_SERIES_TERMS - 1 - i]
        return pr * wr - pi * wi + a, pr * wi + pi * wr

    start = jnp.full(wr.shape, coeffs[EPL_SERIES_TERMS], dtype)
    return lax.fori_loop(0, EPL_SERIES_TERMS, horner, (start, jnp.zeros(wr.shape, dtype)))


def epl_deflection(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    gamma: ArrayLike,
    e1: ArrayLike = 0.0,
    e2: ArrayLike = 0.0,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """Deflection of the elliptical power law (arcsec), Tessore & Metcalf (2015).

    In the major-axis frame, with ``Z = q x' + i y' = R e^{i varphi}``,
    ``t = gamma - 1``, ``b = theta_E sqrt(q)`` and ``f = (1 - q)/(1 + q)`` (eq. 22):

    .. math:: \\alpha = \\frac{2 b}{1+q}\\left(\\frac{b}{R}\\right)^{t-1}
              e^{i\\varphi}\\,{}_2F_1\\!\\left(1, \\tfrac{t}{2}; 2-\\tfrac{t}{2};
              -f e^{2 i\\varphi}\\right)

    The hypergeometric function is summed with :data:`EPL_SERIES_TERMS` terms.

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec).
    theta_E : array_like
        Product-average Einstein radius (arcsec).
    gamma : array_like
        Power-law slope of the 3D density (2 = isothermal); valid for 1 < gamma < 3.
    e1, e2 : array_like
        Eccentricity components.
    center_x, center_y : array_like
        Lens centre (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection (arcsec); 0 at the exact centre.
    """
    dtype = jnp.result_type(x, y, theta_E, gamma, e1, e2, center_x, center_y, float)
    _, q, cos_phi, sin_phi = ellipticity_to_phi_q(e1, e2)
    t = jnp.asarray(gamma, dtype) - 1.0
    dx, dy = shift(x, y, center_x, center_y)
    xr, yr = rotate(dx, dy, cos_phi, sin_phi)
    zr = q * xr
    R, nonzero = safe_norm(zr, yr)
    R_safe = jnp.where(nonzero, R, 1.0)
    cz, sz = zr / R_safe, yr / R_safe
    f = (1.0 - q) / (1.0 + q)
    fr, fi = _hyp2f1_series(t, f, cz * cz - sz * sz, 2.0 * cz * sz, dtype)
    b = theta_E * jnp.sqrt(q)
    amp = 2.0 * b / (1.0 + q) * (b / R_safe) ** (t - 1.0)
    ax = jnp.where(nonzero, amp * (cz * fr - sz * fi), 0.0)
    ay = jnp.where(nonzero, amp * (cz * fi + sz * fr), 0.0)
    return rotate(ax, ay, cos_phi, -sin_phi)


def epl_convergence(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    gamma: ArrayLike,
    e1: ArrayLike = 0.0,
    e2: ArrayLike = 0.0,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Convergence of the elliptical power law, ``(2-t)/2 (b/R)^t`` (T&M 2015 eq. 2).

    Parameters as :func:`epl_deflection`. The elliptical radius is floored at 1e-8
    arcsec, as lenstronomy does, so the value at the exact centre is finite.
    """
    _, q, cos_phi, sin_phi = ellipticity_to_phi_q(e1, e2)
    t = gamma - 1.0
    dx, dy = shift(x, y, center_x, center_y)
    xr, yr = rotate(dx, dy, cos_phi, sin_phi)
    R, _ = safe_norm(q * xr, yr)
    R = jnp.maximum(R, 1e-8)
    b = theta_E * jnp.sqrt(q)
    return (2.0 - t) / 2.0 * (b / R) ** t
