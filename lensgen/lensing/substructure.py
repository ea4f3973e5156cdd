"""Dark-matter subhalos as one lens component: a vectorised sum of truncated NFW halos.

A population of ``K`` subhalos is one lens component, ``"SUBHALOS"``, whose parameters
are ``(K,)`` arrays with the names of lenstronomy's "TNFW" (``Rs``, ``alpha_Rs``,
``r_trunc``, ``center_x``, ``center_y``; arcsec). The deflection is a ``jax.vmap`` of
:func:`lensgen.lensing.nfw.tnfw_deflection` over the subhalos, summed. Entries with
``alpha_Rs = 0`` contribute exactly zero whatever their other values, so a Poisson
number of subhalos is padded to a fixed ``K`` and one compiled function serves every
count. Populations are drawn by :mod:`lensgen.simulate.population`; masses become TNFW
parameters under :class:`lensgen.lensing.halos.HaloConventions`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from lensgen.errors import LensgenError
from lensgen.lensing.nfw import tnfw_convergence, tnfw_deflection

SUBHALOS = "SUBHALOS"
"""Lens model name of the vectorised subhalo component."""
SUBHALO_PARAMS = ("Rs", "alpha_Rs", "r_trunc", "center_x", "center_y")


def _active(Rs: ArrayLike, alpha_Rs: ArrayLike, r_trunc: ArrayLike):
    """Mask of real subhalos and radii made safe (1) for padding entries."""
    alpha_Rs = jnp.asarray(alpha_Rs)
    active = alpha_Rs != 0
    return active, jnp.where(active, Rs, 1.0), jnp.where(active, r_trunc, 1.0)


def subhalos_deflection(x, y, Rs, alpha_Rs, r_trunc, center_x, center_y) -> tuple[Array, Array]:
    """Summed TNFW deflection of ``K`` subhalos (arcsec).

    Parameters
    ----------
    x, y : array_like
        Image-plane coordinates (arcsec), any shape.
    Rs, alpha_Rs, r_trunc, center_x, center_y : array_like, shape (K,)
        TNFW parameters of each subhalo (arcsec), as :func:`~lensgen.lensing.nfw.tnfw_deflection`.
        ``alpha_Rs = 0`` marks padding: it adds exactly 0 (value and gradient finite).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection summed over subhalos, shape of ``x, y``.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _, rs, rt = _active(Rs, alpha_Rs, r_trunc)
    ax, ay = jax.vmap(tnfw_deflection, in_axes=(None, None, 0, 0, 0, 0, 0))(
        x, y, rs, alpha_Rs, rt, center_x, center_y
    )
    return ax.sum(axis=0), ay.sum(axis=0)


def subhalos_convergence(x, y, Rs, alpha_Rs, r_trunc, center_x, center_y) -> Array:
    """Summed TNFW convergence of ``K`` subhalos; parameters as :func:`subhalos_deflection`."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    _, rs, rt = _active(Rs, alpha_Rs, r_trunc)
    kappa = jax.vmap(tnfw_convergence, in_axes=(None, None, 0, 0, 0, 0, 0))(
        x, y, rs, alpha_Rs, rt, center_x, center_y
    )
    return kappa.sum(axis=0)


def check_subhalos(params: dict[str, Any], where: str = "SUBHALOS") -> None:
    """Raise :class:`LensgenError` for non-finite values, ``alpha_Rs < 0``, or a real
    subhalo (``alpha_Rs > 0``) with ``Rs`` or ``r_trunc`` not > 0 (concrete arrays)."""
    vals = {k: np.asarray(params[k], dtype=float) for k in SUBHALO_PARAMS}
    for k, v in vals.items():
        if not np.all(np.isfinite(v)):
            raise LensgenError(f"{where}: {k} must be finite")
    if np.any(vals["alpha_Rs"] < 0):
        raise LensgenError(f"{where}: alpha_Rs must be >= 0 (0 marks padding)")
    live = vals["alpha_Rs"] > 0
    for k in ("Rs", "r_trunc"):
        if np.any(live & ~(vals[k] > 0)):
            raise LensgenError(f"{where}: {k} must be > 0 for every subhalo with alpha_Rs > 0")
