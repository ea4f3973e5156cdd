"""Halo conventions: from a subhalo's mass M200 to lenstronomy "TNFW" parameters.

A truncated NFW subhalo of mass ``M200`` (M☉) is turned into lensing parameters under
fixed conventions, :class:`HaloConventions`:

* the lens and source redshifts and the cosmology, which set the angular scale and
  ``Sigma_crit`` (:func:`lensgen.lensing.units.lensing_units`);
* the concentration: Duffy et al. (2008, MNRAS 390, L64, Table 1, NFW, M200, full
  sample, 0 < z < 2), ``c = 5.71 (M / 2e12 h^-1 M☉)^-0.084 (1 + z)^-0.47``, extrapolated
  below its calibrated range (1e11-1e15 M☉); or a fixed value;
* the truncation radius ``r_trunc = tau * Rs`` (Baltz, Marshall & Oguri 2009).

Both the simulator (which draws populations) and the inference model (which samples
mass and position) use the same conventions, written as FITS header cards
(:meth:`HaloConventions.header_cards`) so that a fit rebuilds the simulator's halos.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from lensgen.errors import ConfigError, LensgenError
from lensgen.lensing.units import (
    DEFAULT_COSMOLOGY,
    check_redshifts,
    get_cosmology,
    lensing_units,
    nfw_angles,
)

HEADER_CARDS = {
    "z_lens": "Z_LENS",
    "z_source": "Z_SOURCE",
    "cosmology": "COSMO",
    "tau": "TAU",
    "concentration": "CONC",
}
"""FITS header card of each :class:`HaloConventions` field."""


@dataclass(frozen=True)
class HaloConventions:
    """Redshifts, cosmology, concentration and truncation of TNFW subhalos.

    Attributes
    ----------
    z_lens, z_source : float
        Lens and source redshifts (``0 < z_lens < z_source``).
    cosmology : str
        Name of an :mod:`astropy.cosmology.realizations` cosmology.
    concentration : float
        Fixed concentration ``c = r200 / r_s``; 0 means the Duffy et al. (2008) median.
    tau : float
        Truncation radius in units of the scale radius, ``r_trunc = tau * Rs``.
    """

    z_lens: float = 0.5
    z_source: float = 2.0
    cosmology: str = DEFAULT_COSMOLOGY
    concentration: float = 0.0
    tau: float = 5.0

    def __post_init__(self) -> None:
        try:
            check_redshifts(self.z_lens, self.z_source)
            get_cosmology(self.cosmology)
        except LensgenError as exc:
            raise ConfigError(str(exc)) from None
        if not self.concentration >= 0:
            raise ConfigError(f"concentration must be >= 0, got {self.concentration}")
        if not self.tau > 0:
            raise ConfigError(f"tau must be > 0, got {self.tau}")

    def header_cards(self) -> dict[str, Any]:
        """The conventions as FITS header cards (:data:`HEADER_CARDS`)."""
        return {card: getattr(self, name) for name, card in HEADER_CARDS.items()}

    @classmethod
    def from_header(cls, header, **overrides: Any) -> HaloConventions:
        """Conventions from header cards; ``overrides`` that are not None win, and
        fields in neither keep their defaults."""
        values = {name: header[card] for name, card in HEADER_CARDS.items() if card in header}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


CONVENTION_FIELDS = tuple(f.name for f in fields(HaloConventions))


def concentration(m200: ArrayLike, halos: HaloConventions) -> Array:
    """Median concentration ``c(M200, z_lens)``: Duffy et al. (2008) or the fixed value."""
    if halos.concentration > 0:
        return jnp.full_like(jnp.asarray(m200, dtype=float), halos.concentration)
    h = get_cosmology(halos.cosmology).h
    pivot = 2e12 / h
    return 5.71 * (jnp.asarray(m200) / pivot) ** -0.084 * (1.0 + halos.z_lens) ** -0.47


def tnfw_params(m200: ArrayLike, c: ArrayLike, halos: HaloConventions) -> dict[str, Array]:
    """``Rs``, ``alpha_Rs`` and ``r_trunc`` (arcsec) of halos of mass ``m200`` (M☉) and
    concentration ``c``."""
    units = lensing_units(halos.z_lens, halos.z_source, halos.cosmology)
    rs, alpha = nfw_angles(m200, c, units)
    return {"Rs": rs, "alpha_Rs": alpha, "r_trunc": halos.tau * rs}


def tnfw_from_mass(
    m200: ArrayLike, center_x: ArrayLike, center_y: ArrayLike, halos: HaloConventions
) -> dict[str, Array]:
    """TNFW lens parameters of subhalos of mass ``m200`` (M☉) at ``(center_x, center_y)``.

    Uses the median ``c(M)`` (no scatter). Pure JAX, so a NumPyro model can sample mass
    and position and render ``{"type": "TNFW", **this}``.
    """
    out = tnfw_params(m200, concentration(m200, halos), halos)
    dtype = out["Rs"].dtype
    return {
        **out,
        "center_x": jnp.asarray(center_x, dtype),
        "center_y": jnp.asarray(center_y, dtype),
    }
