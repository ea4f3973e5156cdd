"""Simulation settings: the scene (lens, source, lens light), instrument and noise.

A TOML file for ``lensgen simulate --config sim.toml`` looks like::

    [[lens]]
    type = "SIE"
    theta_E = 2.3
    e1 = 0.1
    e2 = { uniform = [-0.1, 0.1] }     # drawn per lens (``--n``) from the seed

    [[lens]]
    type = "SHEAR"
    gamma1 = 0.02
    gamma2 = -0.01

    [[source]]
    type = "VAE"          # the learned source; or any light profile, e.g. "SERSIC_ELLIPSE"
    flux = 50.0           # core flux of the source light, counts/s (= total for a Gaussian)
    size = 0.18           # core radius of the source light, arcsec (centre = core centroid)

A source can also be a galaxy image (``lensgen.io.source_image``)::

    [[source]]
    type = "IMAGE"
    file = "galaxy.fits"  # pixel scale from its header (PIXSCALE, CDELT or CD, degrees)
    pixel_scale = 0.03    # optional: arcsec, replaces the header's
    flux = 50.0           # total flux, counts/s
    center_x = 0.05       # position of the image centre, arcsec
    center_y = 0.03

    [instrument]
    npix = 100
    pixel_scale = 0.08
    psf = "gaussian"
    psf_fwhm = 0.15
    convolution = "auto"  # or "pixel" / "subpixel": PSF after or before binning sub-pixels

    [noise]
    exptime = 1000.0
    background_rms = 0.05

    [substructure]        # optional: TNFW subhalos (lensgen.lensing.substructure)
    m_min = 1e7           # M☉; dN/dm ∝ m^-slope on [m_min, m_max]
    m_max = 1e10
    n_mean = 20.0         # Poisson mean (or n_subhalos = 5 for a fixed count)
    width = 0.3           # arcsec either side of the Einstein ring
    z_lens = 0.5
    z_source = 2.0
    cosmology = "Planck18"
    inject_mass = [1e9]   # plus subhalos of given mass (M☉) at given positions (arcsec)
    inject_x = [1.6]
    inject_y = [0.8]

A COOLEST JSON file (:mod:`lensgen.simulate.coolest`) is read into the same tables.

Component keys are lenstronomy's parameter names. A value is a number or a
distribution in the grammar of :mod:`lensgen.distributions`, drawn per lens:
``{ uniform = [low, high] }``, ``{ normal = [mean, sd] }``, ``"LogNormal(mu, sigma)"``
(of the natural log), ``"TruncatedNormal(mean, sd, low, high)"`` and the other forms
that ``lensgen infer --priors`` reads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lensgen.config import SEED_MAX, dumps_toml, from_dict, load_config, toml_value, with_overrides
from lensgen.distributions import Distribution, parse_distribution
from lensgen.errors import ConfigError, LensgenError, did_you_mean
from lensgen.lensing.mass import MASS_PROFILES
from lensgen.simulate.coolest import coolest_tables, is_coolest
from lensgen.simulate.population import SubhaloPopulation
from lensgen.source.model import SOURCE_PARAMS

MIN_NPIX = 8
"""The smallest image ``simulate`` renders (and ``infer`` fits), in pixels per side."""
VAE_PARAMS = dict(zip(SOURCE_PARAMS, (50.0, 0.05, 0.03, 0.18, 0.0), strict=True))
"""Parameters of the learned (``type = "VAE"``) source and their defaults.

As in :data:`lensgen.source.model.SOURCE_PARAMS`: core flux (counts/s), core
centroid and core radius of the light (arcsec), extra rotation (radians; the latent
already carries orientation, and ``lensgen infer`` keeps this fixed at 0 by default).
"""


@dataclass(frozen=True)
class Component:
    """One lens or light component: a lenstronomy model name and its parameters."""

    type: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InstrumentConfig:
    """Detector and PSF.

    ``pixel_scale`` in arcsec/pixel; ``psf_fwhm`` in arcsec; ``psf_file`` a FITS
    kernel used when ``psf = "pixel"``, sampled at the pixel scale or, with
    ``psf_supersample = supersample``, at pixel_scale / supersample (odd sides m·s,
    or m·s − 1 for even s, m odd: :mod:`lensgen.lensing.psf_supersampling`).
    ``convolution``: where the PSF is applied, ``"pixel"`` (after binning the
    sub-pixels), ``"subpixel"`` (before; lenstronomy's
    ``supersampling_convolution=True``) or ``"auto"``: ``"subpixel"`` when the image
    is supersampled, a supersampled kernel is available (always for the Gaussian and
    Moffat PSFs) and the PSF FWHM is under
    :data:`~lensgen.lensing.psf_supersampling.SUBPIXEL_MAX_FWHM` pixels.
    """

    npix: int = 100
    pixel_scale: float = 0.08
    supersample: int = 2
    psf: Literal["gaussian", "moffat", "pixel", "none"] = "gaussian"
    psf_fwhm: float = 0.15
    moffat_beta: float = 3.0
    psf_file: str = ""
    psf_supersample: int = 1
    convolution: Literal["auto", "pixel", "subpixel"] = "auto"

    def __post_init__(self) -> None:
        if self.npix < MIN_NPIX:
            raise ConfigError(f"npix must be >= {MIN_NPIX} pixels, got {self.npix}")
        if not 0 < self.pixel_scale < math.inf:
            raise ConfigError(f"pixel_scale must be a finite number > 0, got {self.pixel_scale}")
        if self.supersample < 1:
            raise ConfigError(f"supersample must be >= 1, got {self.supersample}")
        if self.psf in ("gaussian", "moffat") and not 0 < self.psf_fwhm < math.inf:
            raise ConfigError(f"psf_fwhm must be a finite number > 0, got {self.psf_fwhm}")
        if self.psf == "moffat" and not 1 < self.moffat_beta < math.inf:
            raise ConfigError(f"moffat_beta must be a finite number > 1, got {self.moffat_beta}")
        if self.psf == "pixel" and not self.psf_file:
            raise ConfigError("psf = 'pixel' needs psf_file (a FITS kernel)")
        if self.psf_supersample < 1:
            raise ConfigError(f"psf_supersample must be >= 1, got {self.psf_supersample}")
        if self.psf_supersample > 1 and self.psf != "pixel":
            raise ConfigError(
                f"psf_supersample = {self.psf_supersample} applies to psf = 'pixel' (a kernel "
                f"file); psf = '{self.psf}' is sampled on the sub-pixels by lensgen"
            )
        if self.psf_supersample not in (1, self.supersample):
            raise ConfigError(
                f"psf_supersample = {self.psf_supersample} must be 1 (a pixel-level psf_file) "
                f"or equal supersample = {self.supersample} (the kernel is applied on the "
                "image's sub-pixels)"
            )
        if self.convolution == "subpixel" and self.psf == "none":
            raise ConfigError("convolution = 'subpixel' needs a PSF, got psf = 'none'")
        if (
            self.convolution == "subpixel"
            and self.psf == "pixel"
            and self.psf_supersample != self.supersample
        ):
            raise ConfigError(
                "convolution = 'subpixel' needs a supersampled psf_file: give one sampled "
                f"at pixel_scale / {self.supersample} and set psf_supersample = "
                f"{self.supersample}"
            )


@dataclass(frozen=True)
class NoiseConfig:
    """Poisson noise from ``exptime`` (s; 0 switches it off) plus Gaussian background
    of rms ``background_rms`` (counts/s)."""

    exptime: float = 1000.0
    background_rms: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.exptime < math.inf:
            raise ConfigError(f"exptime must be a finite number >= 0 (s), got {self.exptime}")
        if not 0 <= self.background_rms < math.inf:
            raise ConfigError(
                f"background_rms must be a finite number >= 0 (counts/s), got {self.background_rms}"
            )


@dataclass(frozen=True)
class SourceModelConfig:
    """Where the learned source comes from: a model directory ('' = embedded default)."""

    path: str = ""
    use_flow: bool = True


def _default_lens() -> tuple[Component, ...]:
    return (Component("SIS", {"theta_E": 2.3, "center_x": 0.0, "center_y": 0.0}),)


def _default_source() -> tuple[Component, ...]:
    return (Component("VAE", dict(VAE_PARAMS)),)


@dataclass(frozen=True)
class SimulateConfig:
    """Everything ``lensgen simulate`` needs; see the module docstring for the TOML form."""

    lens: tuple[Component, ...] = field(default_factory=_default_lens)
    source: tuple[Component, ...] = field(default_factory=_default_source)
    lens_light: tuple[Component, ...] = ()
    instrument: InstrumentConfig = field(default_factory=InstrumentConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    source_model: SourceModelConfig = field(default_factory=SourceModelConfig)
    substructure: SubhaloPopulation | None = None
    seed: int | None = None
    """Top-level ``seed = …`` of a file (the resolved file records the run's seed);
    ``--seed`` overrides it, and 0 is used when neither is given."""


PARAMETRIC_SOURCE = Component(
    "SERSIC_ELLIPSE",
    {
        "amp": 8.0,
        "R_sersic": 0.25,
        "n_sersic": 1.5,
        "e1": 0.1,
        "e2": -0.05,
        "center_x": 0.05,
        "center_y": 0.03,
    },
)
"""The source used when no learned source model is available or ``--source sersic``."""


def _components(value: Any, where: str) -> tuple[Component, ...]:
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected [[{where.split()[-1]}]] tables")
    out = []
    for i, table in enumerate(value):
        if not isinstance(table, Mapping) or "type" not in table:
            raise ConfigError(f"{where}[{i}]: each component needs a 'type' key")
        params = {
            k: _file_value(v, f"{where}[{i}].{k}")
            if k == "file"
            else parse_value(v, f"{where}[{i}].{k}")
            for k, v in table.items()
            if k != "type"
        }
        out.append(Component(str(table["type"]), params))
    return tuple(out)


def _file_value(value: Any, where: str) -> str:
    """The ``file`` of an ``IMAGE`` source: a path string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected the path of a FITS image, got {value!r}")
    return value


def parse_value(value: Any, where: str) -> float | list[float] | Distribution:
    """A component parameter: a number, a list of numbers (a latent vector ``z``) or a
    distribution in the grammar of :mod:`lensgen.distributions`, drawn per lens."""
    if isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        if not all(math.isfinite(v) for v in value):
            raise ConfigError(f"{where}: expected finite numbers, got {value!r}")
        return [float(v) for v in value]
    dist = parse_distribution(value, where)
    return dist.args[0] if dist.fixed else dist


def load_simulate_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> SimulateConfig:
    """Defaults ← the scene file at ``path`` (strict keys) ← dotted overrides.

    The file is TOML, or a COOLEST JSON file (recognised by its ``.json`` suffix or
    its content: :func:`lensgen.simulate.coolest.is_coolest`) whose point estimates
    :func:`~lensgen.simulate.coolest.coolest_tables` turns into the same tables.
    """
    if path is not None and is_coolest(path):
        cfg = _from_toml(SimulateConfig, coolest_tables(path), str(path))
        return with_overrides(cfg, overrides or {}, flags)
    return load_config(SimulateConfig, path, overrides, flags, parse=_from_toml)


def _from_toml(cls: type[SimulateConfig], data: dict[str, Any], where: str) -> SimulateConfig:
    """A scene file: ``[[lens]]``/``[[source]]``/``[[lens_light]]`` components and tables."""
    known = {f.name for f in dataclasses.fields(SimulateConfig)}
    kwargs: dict[str, Any] = {}
    if "seed" in data:
        seed = data["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise ConfigError(f"{where}: seed must be an integer in [0, {SEED_MAX}], got {seed!r}")
        kwargs["seed"] = seed
    for key in data:
        if key not in known:
            hint = did_you_mean(key, sorted(known)) or f" (valid: {', '.join(sorted(known))})"
            raise ConfigError(f"{where}: unknown section '{key}'{hint}")
    for group in ("lens", "source", "lens_light"):
        if group in data:
            kwargs[group] = _components(data[group], f"{where} {group}")
    if "instrument" in data:
        kwargs["instrument"] = from_dict(
            InstrumentConfig, data["instrument"], f"{where} [instrument]"
        )
    if "noise" in data:
        kwargs["noise"] = from_dict(NoiseConfig, data["noise"], f"{where} [noise]")
    if "source_model" in data:
        kwargs["source_model"] = from_dict(
            SourceModelConfig, data["source_model"], f"{where} [source_model]"
        )
    if "substructure" in data:
        kwargs["substructure"] = from_dict(
            SubhaloPopulation, data["substructure"], f"{where} [substructure]"
        )
    return cls(**kwargs)


def config_to_toml_dict(cfg: SimulateConfig) -> dict[str, Any]:
    """The resolved config as a TOML-ready dict (written next to outputs)."""
    out: dict[str, Any] = {}
    if cfg.seed is not None:
        out["seed"] = cfg.seed
    for group in ("lens", "source", "lens_light"):
        comps = getattr(cfg, group)
        if comps:
            out[group] = [{"type": c.type, **_toml_params(c.params)} for c in comps]
    out["instrument"] = dataclasses.asdict(cfg.instrument)
    out["noise"] = dataclasses.asdict(cfg.noise)
    out["source_model"] = dataclasses.asdict(cfg.source_model)
    if cfg.substructure is not None:
        out["substructure"] = dataclasses.asdict(cfg.substructure)
    return out


def _toml_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.table() if isinstance(v, Distribution) else v for k, v in params.items()}


def dumps_config(cfg: SimulateConfig) -> str:
    """TOML text of the resolved config that :func:`load_simulate_config` reads back.

    Components are arrays of tables whose values are numbers, latent vectors or
    one-line distribution tables (``theta_E = { uniform = [1.5, 2.5] }``).
    """

    d = config_to_toml_dict(cfg)
    parts = [f"seed = {d.pop('seed')}\n"] if "seed" in d else []
    for group in ("lens", "source", "lens_light"):
        for comp in d.pop(group, []):
            body = "".join(f"{k} = {toml_value(v)}\n" for k, v in comp.items())
            parts.append(f"[[{group}]]\n{body}")
    parts.append(dumps_toml(d))
    return "\n".join(parts)


SWITCH_DEFAULTS = {"gamma": 2.0}
"""When ``--lens`` switches the main lens to a profile with parameters the old one lacks,
they start at the profile's defaults, else isothermal (``gamma = 2``), else 0."""


def apply_flags(
    cfg: SimulateConfig, rein: float | None, lens: str | None, model_dir: str | Path | None
) -> SimulateConfig:
    """Everyday flags override the main lens (component 0) and the source model path."""
    main = cfg.lens[0]
    params = dict(main.params)
    kind = main.type
    if lens is not None and lens.upper() != kind:
        kind = lens.upper()
        profile = MASS_PROFILES[kind]
        # Keep what the new profile understands; fill the rest from its defaults.
        params = {k: v for k, v in params.items() if k in profile.params}
        for name in profile.params:
            params.setdefault(name, profile.defaults.get(name, SWITCH_DEFAULTS.get(name, 0.0)))
    if rein is not None:
        params["theta_E"] = rein
    cfg = dataclasses.replace(cfg, lens=(Component(kind, params), *cfg.lens[1:]))
    if model_dir is not None:
        cfg = dataclasses.replace(
            cfg, source_model=dataclasses.replace(cfg.source_model, path=str(model_dir))
        )
    return cfg


def apply_subhalo_flags(
    cfg: SimulateConfig,
    n_subhalos: int | None,
    mass: float | None,
    x: float | None,
    y: float | None,
) -> SimulateConfig:
    """``--n-subhalos`` sets a fixed count; ``--subhalo-mass/-x/-y`` inject one subhalo.

    Without a ``[substructure]`` section these start from its defaults, with no random
    subhalos unless ``--n-subhalos`` asks for them.
    """
    if mass is None and (x is not None or y is not None):
        raise LensgenError("--subhalo-x/--subhalo-y need --subhalo-mass (M☉)")
    if mass is not None and (x is None or y is None):
        raise LensgenError("--subhalo-mass needs both --subhalo-x and --subhalo-y (arcsec)")
    if n_subhalos is None and mass is None:
        return cfg
    pop = cfg.substructure or SubhaloPopulation(n_subhalos=0)
    changes = {}
    if n_subhalos is not None:
        changes["n_subhalos"] = n_subhalos
    if mass is not None:
        changes["inject_mass"] = (*pop.inject_mass, mass)
        changes["inject_x"] = (*pop.inject_x, x)
        changes["inject_y"] = (*pop.inject_y, y)
    return dataclasses.replace(cfg, substructure=dataclasses.replace(pop, **changes))
