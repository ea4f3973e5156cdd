"""Priors of the inference model: defaults per parameter and strict TOML overrides.

Parameters are named as the flat truth keys of an observation file,
``<group>.<index>.<name>`` with lenstronomy's names (``lens.0.theta_E``,
``source.0.center_x``, ``lens_light.0.R_sersic``), so a posterior lines up with
the truth of a simulation. A prior is written either as a string

    [priors]
    lens.0.theta_E = "Uniform(0.5, 4.0)"
    lens.0.center_x = "Fixed(0.0)"

or in any other form of the grammar of :mod:`lensgen.distributions`
(``lens.0.theta_E = { normal = [2.0, 0.5] }``). ``Fixed(v)`` or a plain number removes
the parameter from the sampled set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lensgen.config import load_toml, suggest
from lensgen.distributions import Distribution, is_distribution_table, parse_distribution
from lensgen.errors import ConfigError

Prior = Distribution
"""A prior is a :class:`~lensgen.distributions.Distribution` of one parameter."""


def parse_prior(value: Any, where: str) -> Prior:
    """Parse one prior in the distribution grammar of :mod:`lensgen.distributions`."""
    return parse_distribution(value, where)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML dotted keys nest (``lens.0.theta_E``); undo that, stopping at prior tables."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not is_distribution_table(value):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_priors(table: Mapping[str, Any], where: str = "[priors]") -> dict[str, Prior]:
    """Parse a ``[priors]`` table into ``{parameter name: Prior}``."""
    return {name: parse_prior(value, f"{where} {name}") for name, value in _flatten(table).items()}


def load_priors(path: str | Path) -> dict[str, Prior]:
    """Read the ``[priors]`` table of a TOML file (other top-level keys are errors)."""
    data = load_toml(path)
    unknown = [k for k in data if k != "priors"]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key '{unknown[0]}'; priors go in [priors]")
    table = data.get("priors", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: [priors] must be a table")
    return parse_priors(table, f"{path} [priors]")


# Defaults by parameter name (the part after "<group>.<index>."); group-specific first.
_DEFAULTS: dict[str, str] = {
    "lens.theta_E": "Uniform(0.2, 4.0)",
    "lens.gamma": "TruncatedNormal(2.0, 0.2, 1.5, 2.5)",
    "lens.e1": "TruncatedNormal(0.0, 0.2, -0.5, 0.5)",
    "lens.e2": "TruncatedNormal(0.0, 0.2, -0.5, 0.5)",
    "lens.center_x": "Normal(0.0, 0.1)",
    "lens.center_y": "Normal(0.0, 0.1)",
    "lens.gamma1": "Normal(0.0, 0.05)",
    "lens.gamma2": "Normal(0.0, 0.05)",
    "lens.ra_0": "Fixed(0.0)",
    "lens.dec_0": "Fixed(0.0)",
    "source.center_x": "Normal(0.0, 0.3)",
    "source.center_y": "Normal(0.0, 0.3)",
    "source.flux": "LogNormal(3.0, 1.5)",
    "source.amp": "LogNormal(1.0, 2.0)",
    # The learned source: core radius of its light (arcsec); its orientation is carried
    # by the latent, so the extra rotation is fixed unless a prior frees it.
    "source.size": "LogNormal(-1.7, 0.7)",
    "source.phi_G": "Fixed(0.0)",
    # Marginalised shapelets (lensgen.infer.linear): scale (arcsec) and the
    # regularisation strength ρ, ρ = 1 giving the amplitudes a prior width of about
    # one noise σ per pixel; bright lensed sources sit near ρ ~ 1e-4 to 1e-2.
    "source.beta": "LogNormal(-1.7, 0.7)",
    "source.width": "LogNormal(-0.7, 0.5)",
    "source.reg": "LogNormal(-6.0, 3.0)",
    "source.R_sersic": "LogNormal(-1.4, 0.7)",
    "source.n_sersic": "Uniform(0.5, 6.0)",
    "source.e1": "TruncatedNormal(0.0, 0.2, -0.6, 0.6)",
    "source.e2": "TruncatedNormal(0.0, 0.2, -0.6, 0.6)",
    "lens_light.amp": "LogNormal(0.0, 2.0)",
    "lens_light.R_sersic": "LogNormal(0.0, 0.7)",
    "lens_light.n_sersic": "Uniform(0.5, 8.0)",
    "lens_light.e1": "TruncatedNormal(0.0, 0.2, -0.6, 0.6)",
    "lens_light.e2": "TruncatedNormal(0.0, 0.2, -0.6, 0.6)",
    "lens_light.center_x": "Normal(0.0, 0.1)",
    "lens_light.center_y": "Normal(0.0, 0.1)",
    # Subhalos (lensgen.infer.substructure): log10 M200/M☉ and position; the position
    # default is replaced there by a uniform prior over the observed image.
    "subhalo.log10_m": "Uniform(8.0, 10.5)",
    "subhalo.center_x": "Uniform(-3.0, 3.0)",
    "subhalo.center_y": "Uniform(-3.0, 3.0)",
}


class Domain(NamedTuple):
    """The values a parameter can physically take: an interval, open or closed at each end."""

    low: float
    high: float
    open_low: bool
    open_high: bool
    text: str

    def contains(self, x: float) -> bool:
        above = x > self.low if self.open_low else x >= self.low
        below = x < self.high if self.open_high else x <= self.high
        return above and below

    def covers(self, low: float, high: float) -> bool:
        """Whether [low, high] lies in the domain's closure (a bound carries no mass)."""
        return self.low <= low and high <= self.high


def _positive(name: str) -> Domain:
    return Domain(0.0, math.inf, True, True, f"{name} > 0")


def _unit(name: str) -> Domain:
    # Each component of the ellipticity (lenstronomy's e1, e2) has |e_i| <= |e| < 1.
    return Domain(-1.0, 1.0, True, True, f"-1 < {name} < 1, as |e| < 1")


# Physical domains by parameter name (the part after "<group>.<index>."); group-specific
# first. Parameters not listed (centres, shear, angles, log masses) take any real value.
_DOMAINS: dict[str, Domain] = {
    "lens.theta_E": _positive("theta_E"),
    "lens.gamma": Domain(1.0, 3.0, True, True, "1 < gamma < 3"),
    "lens.Rs": _positive("Rs"),
    "lens.alpha_Rs": _positive("alpha_Rs"),
    "lens.r_trunc": _positive("r_trunc"),
    "e1": _unit("e1"),
    "e2": _unit("e2"),
    "R_sersic": _positive("R_sersic"),
    "n_sersic": _positive("n_sersic"),
    "sigma": _positive("sigma"),
    "size": _positive("size"),
    "beta": _positive("beta"),
    "width": _positive("width"),
    "reg": _positive("reg (the regularisation strength)"),
    "amp": Domain(0.0, math.inf, False, True, "amp >= 0"),
    "flux": Domain(0.0, math.inf, False, True, "flux >= 0"),
}


def domain(name: str) -> Domain | None:
    """The physical domain of parameter ``name`` (``"lens.0.theta_E"``), None if unbounded."""
    group, _, param = name.split(".", 2)
    return _DOMAINS.get(f"{group}.{param}") or _DOMAINS.get(param)


def _median(prior: Prior) -> float:
    a = prior.args
    if prior.dist == "LogNormal":
        return math.exp(a[0])
    if prior.dist == "HalfNormal":
        return 0.6744897501960817 * a[0]
    return a[0]  # Normal


def check_domain(name: str, prior: Prior, where: str = "[priors]") -> None:
    """Refuse a prior that puts ``name`` outside its physical domain (:func:`domain`).

    A fixed value must lie in the domain and a bounded prior (Uniform, TruncatedNormal)
    must keep its whole support inside it; an unbounded prior (Normal, LogNormal,
    HalfNormal) must have its median inside, so most of its mass is physical.
    """
    dom = domain(name)
    if dom is None:
        return
    if prior.fixed:
        ok, what = dom.contains(prior.args[0]), "lies"
    elif prior.dist in ("Uniform", "TruncatedNormal"):
        lo, hi = prior.support()
        ok = dom.covers(lo, hi)
        what = "reaches" if dom.contains((lo + hi) / 2) else "lies"
    else:
        ok, what = dom.contains(_median(prior)), "has its median"
    if not ok:
        raise ConfigError(f'{where}: prior {name} = "{prior}" {what} outside the domain {dom.text}')


def default_prior(name: str) -> Prior:
    """The default prior of parameter ``name`` (``"lens.0.theta_E"``)."""
    group, _, param = name.split(".", 2)
    text = _DEFAULTS.get(f"{group}.{param}")
    if text is None:
        raise ConfigError(f"no default prior for parameter '{name}'")
    return parse_prior(text, f"default prior of {name}")


def resolve_priors(
    names: Iterable[str], overrides: Mapping[str, Prior], where: str = "[priors]"
) -> dict[str, Prior]:
    """Defaults for ``names`` updated by ``overrides``; an override naming no parameter is an error."""
    names = list(names)
    for key in overrides:
        if key not in names:
            raise ConfigError(f"{where}: unknown parameter '{key}'{suggest(key, names)}")
    priors = {n: overrides.get(n) or default_prior(n) for n in names}
    for name, prior in priors.items():
        check_domain(name, prior, where)
    return priors


def format_priors(priors: Mapping[str, Prior]) -> str:
    """The priors as TOML text (valid input for ``--priors``)."""
    width = max((len(n) for n in priors), default=0)
    lines = ["[priors]"]
    lines += [f'{name:<{width}} = "{prior}"' for name, prior in priors.items()]
    return "\n".join(lines) + "\n"
