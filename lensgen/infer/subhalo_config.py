"""Settings of the subhalo fit (``lensgen infer --subhalos N``), shared by its stages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lensgen.errors import ConfigError


class SubhaloConfigError(ConfigError):
    """An invalid :class:`SubhaloConfig` (a ConfigError: config loaders add the file and section)."""


@dataclass(frozen=True)
class SubhaloConfig:
    """Settings of the subhalo fit (``lensgen infer --subhalos N``).

    Masses are log10(M200 / M☉); ``box`` > 0 restricts the position prior to
    ``|x|, |y| ≤ box`` arcsec (0: the whole image). ``z_lens``, ``z_source``,
    ``cosmology``, ``tau`` and ``concentration`` (0: Duffy et al. 2008) override the
    file's ``SUBHALOS`` table header. ``method``: posterior from the Laplace
    approximation, or NUTS / SVI started there (InferConfig's sampler settings).
    """

    n_subhalos: int = 1
    log10_m_min: float = 8.0
    log10_m_max: float = 10.5
    box: float = 0.0
    threshold: float = 5.0
    n_starts: int = 12
    n_polish: int = 4
    steps: int = 400
    lr: float = 0.02
    n_draws: int = 4000
    method: Literal["laplace", "nuts", "svi"] = "laplace"
    z_lens: float | None = None
    z_source: float | None = None
    cosmology: str | None = None
    tau: float | None = None
    concentration: float | None = None

    def __post_init__(self) -> None:
        for name in ("log10_m_min", "log10_m_max", "threshold", "box", "lr"):
            if not math.isfinite(getattr(self, name)):
                raise SubhaloConfigError(
                    f"{name} must be a finite number, got {getattr(self, name)}"
                )
        if not self.log10_m_min < self.log10_m_max:
            raise SubhaloConfigError(
                f"subhalo mass prior bounds reversed: log10_m_min={self.log10_m_min} >= "
                f"log10_m_max={self.log10_m_max} (log10 M200/M☉)"
            )
        for name in ("n_subhalos", "n_starts", "n_polish", "steps", "n_draws"):
            if getattr(self, name) < 1:
                raise SubhaloConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.box < 0 or not self.lr > 0:
            raise SubhaloConfigError(f"box must be >= 0 and lr > 0, got {self.box}, {self.lr}")
