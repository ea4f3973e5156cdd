"""Lens mass profiles: deflection angles and convergence, lenstronomy conventions.

Spherical isothermal sphere, external shear and point mass live here; the elliptical
profiles (SIE, EPL) are in :mod:`lensgen.lensing.epl` and the NFW family in
:mod:`lensgen.lensing.nfw`. All are re-exported, and :data:`MASS_PROFILES` maps
lenstronomy model names to them. Every function is pure, broadcasts over ``x, y``
and its parameters, and is jit/vmap/grad safe in float32 and float64 (finite values
and gradients at the lens centre and at zero ellipticity).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from lensgen.lensing._mass_util import safe_norm, shift
from lensgen.lensing.epl import (
    EPL_SERIES_TERMS,
    epl_convergence,
    epl_deflection,
    sie_convergence,
    sie_deflection,
)
from lensgen.lensing.nfw import (
    nfw_convergence,
    nfw_deflection,
    tnfw_convergence,
    tnfw_deflection,
)
from lensgen.lensing.substructure import subhalos_convergence, subhalos_deflection

__all__ = [
    "EPL_SERIES_TERMS",
    "MASS_PROFILES",
    "MassProfile",
    "epl_convergence",
    "epl_deflection",
    "nfw_convergence",
    "nfw_deflection",
    "point_mass_convergence",
    "point_mass_deflection",
    "shear_convergence",
    "shear_deflection",
    "sie_convergence",
    "sie_deflection",
    "sis_convergence",
    "sis_deflection",
    "tnfw_convergence",
    "tnfw_deflection",
]


def sis_deflection(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """Singular isothermal sphere deflection, ``alpha = theta_E (dx, dy) / r``.

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec).
    theta_E : array_like
        Einstein radius (arcsec).
    center_x, center_y : array_like
        Lens centre (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection (arcsec); 0 at the exact centre (as lenstronomy).
    """
    dx, dy = shift(x, y, center_x, center_y)
    r, nonzero = safe_norm(dx, dy)
    a = jnp.where(nonzero, theta_E / jnp.where(nonzero, r, 1.0), 0.0)
    return a * dx, a * dy


def sis_convergence(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """SIS convergence ``theta_E / (2 r)``; radius floored at 1e-8 arcsec at the centre."""
    dx, dy = shift(x, y, center_x, center_y)
    r, _ = safe_norm(dx, dy)
    return 0.5 * theta_E / jnp.maximum(r, 1e-8)


def shear_deflection(
    x: ArrayLike,
    y: ArrayLike,
    gamma1: ArrayLike,
    gamma2: ArrayLike,
    ra_0: ArrayLike = 0.0,
    dec_0: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """External shear deflection (lenstronomy "SHEAR").

    Potential ``psi = (gamma1 (dx^2 - dy^2) + 2 gamma2 dx dy) / 2`` about
    ``(ra_0, dec_0)``, so ``alpha = (gamma1 dx + gamma2 dy, gamma2 dx - gamma1 dy)``.

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec).
    gamma1, gamma2 : array_like
        Shear components (dimensionless).
    ra_0, dec_0 : array_like
        Expansion point (arcsec); it only adds a constant deflection.
    """
    dx, dy = shift(x, y, ra_0, dec_0)
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy


def shear_convergence(
    x: ArrayLike,
    y: ArrayLike,
    gamma1: ArrayLike,
    gamma2: ArrayLike,
    ra_0: ArrayLike = 0.0,
    dec_0: ArrayLike = 0.0,
) -> Array:
    """External shear has zero convergence (returned with the broadcast shape)."""
    dx, dy = shift(x, y, ra_0, dec_0)
    return jnp.zeros_like(dx + dy + gamma1 + gamma2)


def point_mass_deflection(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """Point-mass deflection, ``alpha = theta_E^2 (dx, dy) / r^2``.

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec).
    theta_E : array_like
        Einstein radius (arcsec).
    center_x, center_y : array_like
        Position of the mass (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection (arcsec); 0 at the exact position of the mass.
    """
    dx, dy = shift(x, y, center_x, center_y)
    r2 = dx * dx + dy * dy
    nonzero = r2 > 0
    a = jnp.where(nonzero, theta_E**2 / jnp.where(nonzero, r2, 1.0), 0.0)
    return a * dx, a * dy


def point_mass_convergence(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Point-mass convergence: zero away from the mass (a delta function at it)."""
    dx, dy = shift(x, y, center_x, center_y)
    return jnp.zeros_like(dx + dy + theta_E)


class MassProfile(NamedTuple):
    """A lens mass profile: its functions, parameter names and defaults.

    Attributes
    ----------
    deflection : callable
        ``deflection(x, y, **params) -> (alpha_x, alpha_y)`` in arcsec.
    convergence : callable
        ``convergence(x, y, **params) -> kappa``.
    params : tuple of str
        All argument names after ``x, y`` (lenstronomy's names).
    defaults : dict
        Values used for parameters a component leaves out.
    """

    deflection: Callable[..., tuple[Array, Array]]
    convergence: Callable[..., Array]
    params: tuple[str, ...]
    defaults: dict[str, float]


def _profile(deflection: Callable, convergence: Callable) -> MassProfile:
    """Build a :class:`MassProfile`, reading names and defaults from the signature."""
    sig = list(inspect.signature(deflection).parameters.values())[2:]
    params = tuple(p.name for p in sig)
    defaults = {p.name: float(p.default) for p in sig if p.default is not inspect.Parameter.empty}
    return MassProfile(deflection, convergence, params, defaults)


#: Mass profiles keyed by lenstronomy model name.
MASS_PROFILES: dict[str, MassProfile] = {
    "SIS": _profile(sis_deflection, sis_convergence),
    "SIE": _profile(sie_deflection, sie_convergence),
    "EPL": _profile(epl_deflection, epl_convergence),
    "SHEAR": _profile(shear_deflection, shear_convergence),
    "POINT_MASS": _profile(point_mass_deflection, point_mass_convergence),
    "NFW": _profile(nfw_deflection, nfw_convergence),
    "TNFW": _profile(tnfw_deflection, tnfw_convergence),
    # K truncated-NFW subhalos with (K,) array parameters, summed in one vmap.
    "SUBHALOS": _profile(subhalos_deflection, subhalos_convergence),
}
