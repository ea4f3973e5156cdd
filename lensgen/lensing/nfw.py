"""Navarro-Frenk-White (NFW) and truncated NFW (TNFW) lens profiles.

Parameterisation as lenstronomy's "NFW" and "TNFW": scale radius ``Rs`` (arcsec),
deflection at the scale radius ``alpha_Rs`` (arcsec), for TNFW the truncation radius
``r_trunc`` (arcsec). The density normalisation is
``rho0 = alpha_Rs / (4 Rs^2 (1 + ln(1/2)))`` (for TNFW the truncation is neglected in
this relation, as in lenstronomy). With ``X = R / Rs``:

* NFW (Bartelmann 1996; Golse & Kneib 2002): ``kappa = 2 rho0 Rs F(X)``,
  ``alpha = 4 rho0 Rs g(X) / X^2 * (x, y)``.
* TNFW (Baltz, Marshall & Oguri 2009, eqs. A.3-A.4) with ``tau = r_trunc / Rs``;
  like lenstronomy, ``X`` is floored at 1e-3 (inside ``R < 1e-3 Rs`` the profile is
  evaluated at ``X = 1e-3``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from lensgen.lensing._mass_util import safe_norm, shift

_LOG_HALF = math.log(0.5)
_SERIES_U = 0.05  # |X^2 - 1| below which the series forms are used
_SERIES_TERMS = 13  # 0.05**13 / 27 ~ 5e-19: below float64 rounding


def _horner(coeffs: list[float], u: Array) -> Array:
    """``sum_n coeffs[n] u^n`` by Horner's rule (few ops, cheap to compile)."""
    out = coeffs[-1] * jnp.ones_like(u)
    for c in reversed(coeffs[:-1]):
        out = out * u + c
    return out


# Taylor coefficients in u = X^2 - 1 of arc(X) and of (1 - arc(X)) / u.
_ARC_SERIES = [(-1.0) ** n / (2 * n + 1) for n in range(_SERIES_TERMS)]
_F_SERIES = [(-1.0) ** n / (2 * n + 3) for n in range(_SERIES_TERMS)]
_TNFW_X_MIN = 1e-3  # lenstronomy TNFW._s


def _arc_over_root(X: Array) -> Array:
    """``arccos(1/X)/sqrt(X^2-1)`` for X > 1, ``arccosh(1/X)/sqrt(1-X^2)`` for X < 1.

    The NFW function written ``F(x)`` in lenstronomy's TNFW. ``arccosh(1/X)`` is
    evaluated as ``log1p(s) - log(X)`` with ``s = sqrt(1 - X^2)``, accurate for small
    ``X``; near ``X = 1`` the Taylor series ``sum (-u)^n / (2n + 1)`` in
    ``u = X^2 - 1`` keeps it smooth.
    """
    u = (X - 1.0) * (X + 1.0)
    pos = u > _SERIES_U
    neg = u < -_SERIES_U
    vp = jnp.sqrt(jnp.where(pos, u, 1.0))
    vn = jnp.sqrt(jnp.where(neg, -u, 0.5))
    Xn = jnp.where(neg, X, 0.5)
    us = jnp.where(pos | neg, 0.0, u)
    series = _horner(_ARC_SERIES, us)
    below = (jnp.log1p(vn) - jnp.log(Xn)) / vn
    return jnp.where(pos, jnp.arctan(vp) / vp, jnp.where(neg, below, series))


def _nfw_F(X: Array) -> Array:
    """Projected NFW shape ``F(X) = (1 - arc(X)) / (X^2 - 1)``, smooth at ``X = 1``."""
    u = (X - 1.0) * (X + 1.0)
    far = jnp.abs(u) > _SERIES_U
    u_far = jnp.where(far, u, 1.0)
    direct = (1.0 - _arc_over_root(jnp.where(far, X, 2.0))) / u_far
    us = jnp.where(far, 0.0, u)
    series = _horner(_F_SERIES, us)
    return jnp.where(far, direct, series)


def _nfw_g_over_x2(X: Array) -> Array:
    """``g(X) / X^2`` with ``g(X) = ln(X/2) + arc(X)``, the NFW enclosed-mass function.

    For ``X < 1/2`` the logarithms in ``g`` cancel to O(X^2); there the identity
    ``g = [d ln(2/X) + log1p(-d/2)] / s`` with ``s = sqrt(1 - X^2)``,
    ``d = X^2 / (1 + s)`` is used, which is free of cancellation.
    """
    small = X < 0.5
    Xs = jnp.where(small, X, 0.25)
    s = jnp.sqrt(1.0 - Xs * Xs)
    d = Xs * Xs / (1.0 + s)
    small_val = (jnp.log(2.0 / Xs) + jnp.log1p(-0.5 * d) / d) / ((1.0 + s) * s)
    Xl = jnp.where(small, 1.0, X)
    large_val = (jnp.log(0.5 * Xl) + _arc_over_root(Xl)) / (Xl * Xl)
    return jnp.where(small, small_val, large_val)


def _rho0(Rs: ArrayLike, alpha_Rs: ArrayLike) -> Array:
    """Density normalisation from the deflection at the scale radius."""
    return alpha_Rs / (4.0 * Rs**2 * (1.0 + _LOG_HALF))


def nfw_deflection(
    x: ArrayLike,
    y: ArrayLike,
    Rs: ArrayLike,
    alpha_Rs: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """NFW deflection (arcsec), ``alpha = 4 rho0 Rs g(X)/X^2 (dx, dy)``.

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec).
    Rs : array_like
        Scale radius (arcsec).
    alpha_Rs : array_like
        Deflection at ``R = Rs`` (arcsec).
    center_x, center_y : array_like
        Halo centre (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection (arcsec); 0 at the exact centre.
    """
    dx, dy = shift(x, y, center_x, center_y)
    R, nonzero = safe_norm(dx, dy)
    X = jnp.where(nonzero, R, Rs) / Rs
    a = jnp.where(nonzero, 4.0 * _rho0(Rs, alpha_Rs) * Rs * _nfw_g_over_x2(X), 0.0)
    return a * dx, a * dy


def nfw_convergence(
    x: ArrayLike,
    y: ArrayLike,
    Rs: ArrayLike,
    alpha_Rs: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """NFW convergence ``2 rho0 Rs F(R/Rs)``; parameters as :func:`nfw_deflection`.

    Finite at the centre: ``X`` is floored at 1e-7 there (lenstronomy's value at X=0).
    """
    dx, dy = shift(x, y, center_x, center_y)
    R, _ = safe_norm(dx, dy)
    X = jnp.maximum(R / Rs, 1e-7)
    return 2.0 * _rho0(Rs, alpha_Rs) * Rs * _nfw_F(X)


def _tnfw_L(X: Array, tau: Array) -> Array:
    """``ln(X / (tau + sqrt(tau^2 + X^2)))`` (Baltz et al. 2009, eq. A.4)."""
    return jnp.log(X / (tau + jnp.sqrt(tau * tau + X * X)))


def tnfw_deflection(
    x: ArrayLike,
    y: ArrayLike,
    Rs: ArrayLike,
    alpha_Rs: ArrayLike,
    r_trunc: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """Truncated NFW deflection (arcsec), Baltz, Marshall & Oguri (2009) eq. A.4.

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec).
    Rs : array_like
        Scale radius (arcsec).
    alpha_Rs : array_like
        Deflection at ``Rs`` of the untruncated NFW with the same ``rho0`` (arcsec).
    r_trunc : array_like
        Truncation radius (arcsec).
    center_x, center_y : array_like
        Halo centre (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection (arcsec); 0 at the exact centre.
    """
    dx, dy = shift(x, y, center_x, center_y)
    R, _ = safe_norm(dx, dy)
    X = jnp.maximum(R / Rs, _TNFW_X_MIN)
    tau = r_trunc / Rs
    t2 = tau * tau
    # Baltz et al.'s bracket regrouped so the O(1) logarithms and pi terms, which
    # cancel to O(X^2) at small X, are combined analytically (d = sqrt(t2+X^2) - tau):
    # g/X^2 = t2/(t2+1)^2 [(t2-1)(G - log1p(d/2tau)/X^2 + L/(tau(r+tau))) + 2F - pi/(r+tau)]
    # with G = g_NFW/X^2. This keeps float32 accurate where the textbook form is not.
    r_plus = jnp.sqrt(t2 + X * X) + tau
    d = X * X / r_plus
    g_over_x2 = (
        t2
        / (t2 + 1.0) ** 2
        * (
            (t2 - 1.0)
            * (
                _nfw_g_over_x2(X)
                - jnp.log1p(d / (2.0 * tau)) / (X * X)
                + _tnfw_L(X, tau) / (tau * r_plus)
            )
            + 2.0 * _arc_over_root(X)
            - jnp.pi / r_plus
        )
    )
    a = 4.0 * _rho0(Rs, alpha_Rs) * Rs * g_over_x2
    return a * dx, a * dy


def tnfw_convergence(
    x: ArrayLike,
    y: ArrayLike,
    Rs: ArrayLike,
    alpha_Rs: ArrayLike,
    r_trunc: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Truncated NFW convergence, Baltz, Marshall & Oguri (2009) eq. A.3.

    Parameters as :func:`tnfw_deflection`.
    """
    dx, dy = shift(x, y, center_x, center_y)
    R, _ = safe_norm(dx, dy)
    X = jnp.maximum(R / Rs, _TNFW_X_MIN)
    tau = r_trunc / Rs
    t2 = tau * tau
    root = jnp.sqrt(t2 + X * X)
    shape = (
        t2
        / (t2 + 1.0) ** 2
        * (
            (t2 + 1.0) * _nfw_F(X)
            + 2.0 * _arc_over_root(X)
            - jnp.pi / root
            + (t2 - 1.0) / (tau * root) * _tnfw_L(X, tau)
        )
    )
    return 2.0 * _rho0(Rs, alpha_Rs) * Rs * shape
