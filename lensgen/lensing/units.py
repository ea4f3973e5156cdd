"""Physical to lensing units for NFW halos: M200 and concentration to ``Rs``, ``alpha_Rs``.

For a halo of mass ``M200`` (M☉, 200 times the critical density at the lens redshift
``z_d``) and concentration ``c = r200 / r_s`` in a cosmology from
:mod:`astropy.cosmology.realizations`:

* ``rho_crit = 3 H(z_d)^2 / (8 pi G)``,
  ``r200 = (3 M200 / (4 pi 200 rho_crit))^(1/3)``, ``r_s = r200 / c``;
* ``rho_s = (200/3) rho_crit c^3 / mu(c)`` with ``mu(c) = ln(1 + c) - c / (1 + c)``;
* ``Sigma_crit = c_light^2 D_s / (4 pi G D_d D_ds)`` (angular-diameter distances);
* ``Rs = r_s / D_d`` (arcsec) and, with ``kappa_s = rho_s r_s / Sigma_crit``,
  ``alpha_Rs = 4 kappa_s Rs (1 - ln 2)``: the deflection at ``Rs`` of lenstronomy's
  "NFW"/"TNFW" (``LensCosmo.nfw_physical2angle``).

Substituting ``r200``, both are power laws in ``M200`` times a function of ``c``:
``Rs = A_R M^(1/3) / c`` and ``alpha_Rs = A_alpha M^(2/3) c / mu(c)``. The two
coefficients depend only on the redshifts and the cosmology, so they are computed once
with astropy units (:func:`lensing_units`) and the mass-dependent part is a pure JAX
function (:func:`nfw_angles`), differentiable in ``M200`` and ``c``.

Constants are astropy's (CODATA 2022, IAU 2015 M☉); lenstronomy uses older values of
``G`` and ``M☉``, so ``alpha_Rs`` agrees to ~3e-4 relative, and both to rounding (~1e-14)
when lenstronomy is given the same constants (tested).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from lensgen.errors import LensgenError

DEFAULT_COSMOLOGY = "Planck18"


class LensingUnits(NamedTuple):
    """Redshift- and cosmology-dependent coefficients of the NFW conversion.

    Attributes
    ----------
    rs_coeff : float
        ``A_R`` in ``Rs = A_R M200^(1/3) / c``, arcsec M☉^(-1/3).
    alpha_coeff : float
        ``A_alpha`` in ``alpha_Rs = A_alpha M200^(2/3) c / mu(c)``, arcsec M☉^(-2/3).
    sigma_crit : float
        Critical surface density, M☉ / arcsec² (at the lens distance).
    d_d, d_s, d_ds : float
        Angular-diameter distances observer-lens, observer-source, lens-source (Mpc).
    rho_crit : float
        Critical density at the lens redshift, M☉ / Mpc³.
    """

    rs_coeff: float
    alpha_coeff: float
    sigma_crit: float
    d_d: float
    d_s: float
    d_ds: float
    rho_crit: float


def get_cosmology(name: str):
    """The astropy cosmology realisation called ``name`` (e.g. "Planck18")."""
    from astropy.cosmology import realizations

    if name not in realizations.available:
        raise LensgenError(
            f"unknown cosmology {name!r}; choose one of {', '.join(realizations.available)}"
        )
    return getattr(realizations, name)


def check_redshifts(z_lens: float, z_source: float) -> None:
    """Raise :class:`LensgenError` unless ``0 < z_lens < z_source``."""
    if not z_lens > 0:
        raise LensgenError(f"z_lens must be > 0, got {z_lens}")
    if not z_source > z_lens:
        raise LensgenError(
            f"z_source must be greater than z_lens, got z_source={z_source} <= z_lens={z_lens}"
        )


@functools.lru_cache(maxsize=32)
def lensing_units(z_lens: float, z_source: float, cosmology: str = DEFAULT_COSMOLOGY):
    """Coefficients of the M200, c → ``Rs``, ``alpha_Rs`` conversion (module docstring).

    Parameters
    ----------
    z_lens, z_source : float
        Lens (deflector) and source redshifts, ``0 < z_lens < z_source``.
    cosmology : str
        Name of an :mod:`astropy.cosmology.realizations` cosmology.

    Returns
    -------
    LensingUnits
    """
    import astropy.units as u
    from astropy.constants import G
    from astropy.constants import c as c_light

    check_redshifts(z_lens, z_source)
    cosmo = get_cosmology(cosmology)
    d_d = cosmo.angular_diameter_distance(z_lens)
    d_s = cosmo.angular_diameter_distance(z_source)
    d_ds = cosmo.angular_diameter_distance(z_lens, z_source)
    rho_crit = cosmo.critical_density(z_lens)
    sigma_crit = c_light**2 * d_s / (4.0 * math.pi * G * d_d * d_ds)
    # r200 per M200^(1/3): the mass enclosed within r200 has mean density 200 rho_crit.
    r_per_m = (3.0 / (4.0 * math.pi * 200.0 * rho_crit)) ** (1.0 / 3.0)
    per_m13 = u.Msun ** (-1.0 / 3.0)
    rs_coeff = (r_per_m / d_d * u.rad).to(u.arcsec * per_m13)
    # alpha_Rs = 4 (1 - ln 2) rho_s r_s^2 / (Sigma_crit D_d) with rho_s r_s^2 written out.
    alpha = 4.0 * (1.0 - math.log(2.0)) * (200.0 / 3.0) * rho_crit * r_per_m**2
    alpha_coeff = (alpha / (sigma_crit * d_d) * u.rad).to(u.arcsec * per_m13**2)
    sigma_arcsec = (sigma_crit * (d_d / u.rad) ** 2).to(u.Msun / u.arcsec**2)
    return LensingUnits(
        rs_coeff=float(rs_coeff.value),
        alpha_coeff=float(alpha_coeff.value),
        sigma_crit=float(sigma_arcsec.value),
        d_d=float(d_d.to_value(u.Mpc)),
        d_s=float(d_s.to_value(u.Mpc)),
        d_ds=float(d_ds.to_value(u.Mpc)),
        rho_crit=float(rho_crit.to_value(u.Msun / u.Mpc**3)),
    )


def nfw_angles(m200: ArrayLike, c: ArrayLike, units: LensingUnits) -> tuple[Array, Array]:
    """``Rs`` and ``alpha_Rs`` (arcsec) of NFW halos of mass ``m200`` (M☉), concentration ``c``.

    Pure JAX (jit/vmap/grad safe); ``units`` from :func:`lensing_units`.
    """
    m200 = jnp.asarray(m200)
    c = jnp.asarray(c)
    m13 = jnp.cbrt(m200)
    mu = jnp.log1p(c) - c / (1.0 + c)
    return units.rs_coeff * m13 / c, units.alpha_coeff * m13 * m13 * c / mu


def tnfw_lensing_params(
    m200: ArrayLike,
    c: ArrayLike,
    z_lens: float,
    z_source: float,
    cosmology: str = DEFAULT_COSMOLOGY,
) -> tuple[Array, Array]:
    """``(Rs, alpha_Rs)`` in arcsec for halos of mass ``m200`` (M☉) and concentration ``c``.

    The truncation radius of a TNFW is set separately (e.g. ``tau * Rs``); ``alpha_Rs``
    is that of the untruncated NFW with the same density, lenstronomy's convention.
    """
    return nfw_angles(m200, c, lensing_units(float(z_lens), float(z_source), cosmology))
