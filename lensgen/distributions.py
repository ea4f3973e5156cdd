"""The one grammar for univariate distributions in config files: priors and scene draws.

``lensgen infer --priors`` and the scene files of ``lensgen simulate`` write a
distribution in any of these forms, which all mean the same thing:

* a call string, ``"Normal(2.0, 0.5)"``;
* a one-key table, ``{ normal = [2.0, 0.5] }``;
* a table with named arguments, ``{ dist = "Normal", loc = 2.0, scale = 0.5 }``;
* a plain number, which is ``Fixed(number)``.

Names are case-insensitive. The distributions and their arguments, in order:
``Normal(loc, scale)``, ``LogNormal(loc, scale)`` (of the natural log),
``Uniform(low, high)``, ``TruncatedNormal(loc, scale, low, high)``,
``HalfNormal(scale)`` and ``Fixed(value)``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensgen.errors import ConfigError, did_you_mean

DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "Normal": ("loc", "scale"),
    "LogNormal": ("loc", "scale"),
    "Uniform": ("low", "high"),
    "TruncatedNormal": ("loc", "scale", "low", "high"),
    "HalfNormal": ("scale",),
    "Fixed": ("value",),
}
"""Distribution name → argument names, in positional order."""

_BY_LOWER = {name.lower(): name for name in DISTRIBUTIONS}
_CALL = re.compile(r"^\s*([A-Za-z]+)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Distribution:
    """A univariate distribution: a name from :data:`DISTRIBUTIONS` and its arguments."""

    dist: str
    args: tuple[float, ...]

    @property
    def fixed(self) -> bool:
        """True for ``Fixed(value)``: not sampled."""
        return self.dist == "Fixed"

    def __str__(self) -> str:
        return f"{self.dist}({', '.join(f'{a:g}' for a in self.args)})"

    def table(self) -> dict[str, list[float]]:
        """The one-key table form (``{"uniform": [1.0, 2.0]}``), exact, for TOML files."""
        return {self.dist.lower(): [float(a) for a in self.args]}

    def to_numpyro(self):
        """The matching ``numpyro.distributions`` object (not for ``Fixed``)."""
        import numpyro.distributions as dist  # numpyro only where a model is built

        a = self.args
        if self.dist == "Normal":
            return dist.Normal(a[0], a[1])
        if self.dist == "LogNormal":
            return dist.LogNormal(a[0], a[1])
        if self.dist == "Uniform":
            return dist.Uniform(a[0], a[1])
        if self.dist == "TruncatedNormal":
            return dist.TruncatedNormal(a[0], a[1], low=a[2], high=a[3])
        if self.dist == "HalfNormal":
            return dist.HalfNormal(a[0])
        raise ConfigError(f"{self} has no numpyro distribution (it is fixed)")

    def support(self) -> tuple[float, float]:
        """Interval holding the probability mass."""
        a = self.args
        if self.dist == "Uniform":
            return a[0], a[1]
        if self.dist == "TruncatedNormal":
            return a[2], a[3]
        if self.dist in ("LogNormal", "HalfNormal"):
            return 0.0, math.inf
        if self.dist == "Fixed":
            return a[0], a[0]
        return -math.inf, math.inf

    def draw(self, key, n: int) -> np.ndarray:
        """``n`` independent draws (float64), from the JAX PRNG ``key``.

        The random numbers are made in JAX's default float type and then kept in
        float64, so a draw depends only on the key and the precision setting.
        """
        import jax  # JAX only where values are drawn

        a = self.args
        if self.dist == "Fixed":
            return np.full(n, a[0])
        if self.dist == "Uniform":
            return np.asarray(jax.random.uniform(key, (n,), minval=a[0], maxval=a[1]), np.float64)
        if self.dist == "TruncatedNormal":
            lo, hi = (a[2] - a[0]) / a[1], (a[3] - a[0]) / a[1]
            u = np.asarray(jax.random.truncated_normal(key, lo, hi, (n,)), np.float64)
            return np.clip(a[0] + a[1] * u, a[2], a[3])
        u = np.asarray(jax.random.normal(key, (n,)), np.float64)
        if self.dist == "Normal":
            return a[0] + a[1] * u
        if self.dist == "LogNormal":
            return np.exp(a[0] + a[1] * u)
        return np.abs(a[0] * u)  # HalfNormal


def is_distribution_table(value: Mapping[str, Any]) -> bool:
    """True for a table of the grammar (a ``dist`` key, or one key naming a
    distribution), so that nested TOML tables can be told apart from it."""
    return "dist" in value or (len(value) == 1 and str(next(iter(value))).lower() in _BY_LOWER)


def _name(name: str, where: str) -> str:
    if name.lower() in _BY_LOWER:
        return _BY_LOWER[name.lower()]
    valid = list(DISTRIBUTIONS) if name != name.lower() else list(_BY_LOWER)
    hint = did_you_mean(name, valid) or f" (choose one of {', '.join(valid)})"
    raise ConfigError(f"{where}: unknown distribution '{name}'{hint}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked(dist: str, args: tuple[Any, ...], where: str) -> Distribution:
    names = DISTRIBUTIONS[dist]
    if len(args) != len(names):
        raise ConfigError(
            f"{where}: {dist} takes {len(names)} argument(s) ({', '.join(names)}), got {len(args)}"
        )
    if not all(_number(a) for a in args):
        raise ConfigError(f"{where}: arguments of {dist} must be numbers, got {list(args)}")
    if not all(math.isfinite(a) for a in args):
        raise ConfigError(f"{where}: {dist} arguments must be finite numbers, got {list(args)}")
    values = dict(zip(names, args, strict=True))
    if "scale" in values and not values["scale"] > 0:
        raise ConfigError(f"{where}: {dist} scale must be > 0, got {values['scale']}")
    if "low" in values and not values["low"] < values["high"]:
        raise ConfigError(
            f"{where}: {dist} needs low < high, got {values['low']}, {values['high']}"
        )
    return Distribution(dist, tuple(float(a) for a in args))


def parse_distribution(value: Any, where: str) -> Distribution:
    """Parse any form of the grammar (module docstring) into a :class:`Distribution`.

    Raises
    ------
    ConfigError
        Naming ``where`` and what is wrong: an unknown distribution (with the closest
        name), the wrong number or names of arguments, a non-finite argument, a
        non-positive scale, or low ≥ high.
    """
    if _number(value):
        return _checked("Fixed", (value,), where)
    if isinstance(value, str):
        match = _CALL.match(value)
        if not match:
            raise ConfigError(
                f'{where}: cannot parse {value!r}; write a distribution like "Normal(2.0, 0.5)"'
            )
        name = _name(match.group(1), where)
        text = match.group(2).strip()
        try:
            args = ast.literal_eval(f"({text},)") if text else ()
        except (ValueError, SyntaxError):
            raise ConfigError(f"{where}: arguments of {value!r} must be numbers") from None
        if not all(_number(a) for a in args):
            raise ConfigError(f"{where}: arguments of {value!r} must be numbers")
        return _checked(name, tuple(args), where)
    if isinstance(value, Mapping) and "dist" in value:
        name = _name(str(value["dist"]), where)
        names = DISTRIBUTIONS[name]
        for k in value:
            if k != "dist" and k not in names:
                raise ConfigError(
                    f"{where}: unknown argument '{k}' for {name}"
                    f"{did_you_mean(k, names) or ' (arguments: ' + ', '.join(names) + ')'}"
                )
        missing = [n for n in names if n not in value]
        if missing:
            raise ConfigError(f"{where}: {name} is missing argument(s) {', '.join(missing)}")
        return _checked(name, tuple(value[n] for n in names), where)
    if isinstance(value, Mapping) and len(value) == 1:
        ((name, args),) = value.items()
        if any(name in names for names in DISTRIBUTIONS.values()):
            raise ConfigError(
                f"{where}: a distribution table needs a 'dist' key (dist = \"Normal\", loc = …) "
                f"or one key naming the distribution (normal = [loc, scale]), got '{name}'"
            )
        name = _name(str(name), where)
        if not isinstance(args, (list, tuple)):
            args = [args]
        return _checked(name, tuple(args), where)
    if isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: a distribution table has one key (uniform = [low, high]) or a "
            f"'dist' key, got {list(value)}"
        )
    raise ConfigError(
        f'{where}: expected a distribution like "Normal(2.0, 0.5)" or '
        f"{{ normal = [2.0, 0.5] }}, or a number, got {value!r}"
    )
