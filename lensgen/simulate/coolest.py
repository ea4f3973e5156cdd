"""A COOLEST file (Galan et al. 2023) as a ``lensgen simulate`` scene.

``lensgen simulate --config model.json`` reads the point estimates of a COOLEST
template (plain JSON, as ``coolest.template.json.JSONSerializer`` writes and
``lensgen infer`` writes in ``coolest.json``) into the same tables as a scene TOML
file, which :mod:`lensgen.simulate.scene` then checks and resolves:

======================  ==========================================================
COOLEST                 lensgen
======================  ==========================================================
SIE                     SIE
PEMD                    EPL (``gamma``: 2 = isothermal)
ExternalShear           SHEAR (origin (0, 0))
Sersic                  SERSIC_ELLIPSE (amp = I_eff, R_sersic = θ_eff, n_sersic = n)
Shapelets               SHAPELETS (amp = amps, beta, centre)
PixelatedRegularGrid    IMAGE source: its FITS file, pixel scale = field of view /
                        pixels, centre = field-of-view centre, flux = Σ pixels ×
                        (source pixel / image pixel)² (values per image-pixel area)
======================  ==========================================================

q and the position angle φ (degrees counter-clockwise from +y) become
e1 = c cos 2φ', e2 = c sin 2φ' with c = (1 − q)/(1 + q) and φ' = φ + 90°, the
inverse of :func:`lensgen.infer.coolest.coolest_angle`; (γ_ext, φ_ext) become
(γ1, γ2) likewise. COOLEST's x, y (along the image axes) are taken as lensgen's x, y
of the simulated north-up, east-left image.

A Galaxy with a mass model is a lens (its light is lens light), a Galaxy without one a
source, a MassField a lens. The instrument gives the pixel scale, the observation's
pixel grid the image size (square), its PSF (``PixelatedPSF``: the FITS kernel, on the
sub-pixels when its pixels are smaller; ``GaussianPSF``: FWHM in pixels) and noise:
the exposure time, and the background rms from ``UniformGaussianNoise`` (``std_dev``),
``DrizzledNoise`` (``background_rms``), ``InstrumentalNoise`` (readout noise /
exposure time) or else lensgen's own record in ``meta.lensgen.background_rms``.
Anything not given keeps its default. Any other profile is refused with one line
naming it and the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from lensgen.errors import ConfigError

SUPPORTED = ("SIE", "PEMD", "ExternalShear", "Sersic", "Shapelets", "PixelatedRegularGrid")


def is_coolest(path: str | Path) -> bool:
    """True for a ``.json`` file or a file whose text starts with ``{`` (never TOML)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(256).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


def ellipticity(q: float, phi: float) -> tuple[float, float]:
    """(e1, e2) of axis ratio ``q`` and COOLEST position angle ``phi`` (degrees)."""
    c = (1.0 - q) / (1.0 + q)
    angle = 2.0 * math.radians(phi + 90.0)
    return c * math.cos(angle), c * math.sin(angle)


class _Reader:
    """Reads one COOLEST document; every error names the file and the key."""

    def __init__(self, path: Path, doc: dict):
        self.path, self.doc, self.folder = path, doc, path.parent

    def fail(self, where: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {what}")

    def get(self, table: Any, key: str, where: str) -> Any:
        if not isinstance(table, dict) or key not in table:
            raise self.fail(where, f"missing key '{key}'")
        return table[key]

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(where, f"expected a finite number, got {value!r}")
        return float(value)

    def point(self, profile: dict, name: str, where: str) -> Any:
        params = self.get(profile, "parameters", where)
        entry = self.get(params, name, f"{where}.parameters")
        value = self.get(self.get(entry, "point_estimate", f"{where}.parameters.{name}"),
                         "value", f"{where}.parameters.{name}.point_estimate")  # fmt: skip
        key = f"{where}.parameters.{name}.point_estimate.value"
        if isinstance(value, list):
            return [self.number(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if value is None:
            raise self.fail(key, "no point estimate")
        return self.number(value, key)

    def shape(self, profile: dict, where: str) -> dict[str, float]:
        q, phi = self.point(profile, "q", where), self.point(profile, "phi", where)
        if not 0.0 < q <= 1.0:
            raise self.fail(f"{where}.parameters.q", f"axis ratio must be in (0, 1], got {q:g}")
        e1, e2 = ellipticity(q, phi)
        return {"e1": e1, "e2": e2}

    def centre(self, profile: dict, where: str) -> dict[str, float]:
        return {k: self.point(profile, k, where) for k in ("center_x", "center_y")}

    def fits_path(self, grid: dict, where: str) -> Path:
        name = self.get(self.get(grid, "fits_file", where), "path", f"{where}.fits_file")
        if not isinstance(name, str) or not name:
            raise self.fail(f"{where}.fits_file.path", f"expected a FITS file name, got {name!r}")
        path = Path(name) if Path(name).is_absolute() else self.folder / name
        if not path.is_file():
            raise self.fail(f"{where}.fits_file.path", f"FITS file {path} does not exist")
        return path.resolve()

    def grid_geometry(self, grid: dict, where: str) -> tuple[float, float, float, float]:
        """Pixel scale (square pixels), centre x, y, and pixel count along x of a grid."""
        fov = [self.get(grid, k, where) for k in ("field_of_view_x", "field_of_view_y")]
        n = [self.get(grid, k, where) for k in ("num_pix_x", "num_pix_y")]
        if not all(isinstance(f, list) and len(f) == 2 for f in fov):
            raise self.fail(where, f"field_of_view_x/y must be [min, max] pairs, got {fov}")
        fx, fy = ([self.number(v, f"{where}.field_of_view") for v in f] for f in fov)
        if not all(isinstance(v, int) and v > 0 for v in n):
            raise self.fail(where, f"num_pix_x/y must be integers > 0, got {n}")
        sx, sy = abs(fx[1] - fx[0]) / n[0], abs(fy[1] - fy[0]) / n[1]
        if not (sx > 0 and math.isclose(sx, sy, rel_tol=1e-6)):
            raise self.fail(where, f"pixels must be square and > 0, got {sx:g}″ × {sy:g}″")
        return sx, (fx[0] + fx[1]) / 2, (fy[0] + fy[1]) / 2, n[0]

    def mass(self, profile: dict, where: str) -> dict[str, Any]:
        kind = profile.get("type")
        if kind == "SIE":
            return {"type": "SIE", "theta_E": self.point(profile, "theta_E", where),
                    **self.shape(profile, where), **self.centre(profile, where)}  # fmt: skip
        if kind == "PEMD":
            return {"type": "EPL", "theta_E": self.point(profile, "theta_E", where),
                    "gamma": self.point(profile, "gamma", where),
                    **self.shape(profile, where), **self.centre(profile, where)}  # fmt: skip
        if kind == "ExternalShear":
            strength = self.point(profile, "gamma_ext", where)
            angle = 2.0 * math.radians(self.point(profile, "phi_ext", where) + 90.0)
            return {"type": "SHEAR", "gamma1": strength * math.cos(angle),
                    "gamma2": strength * math.sin(angle)}  # fmt: skip
        raise self.unsupported(kind, where)

    def light(self, profile: dict, where: str, source: bool) -> dict[str, Any]:
        kind = profile.get("type")
        if kind == "Sersic":
            return {"type": "SERSIC_ELLIPSE", "amp": self.point(profile, "I_eff", where),
                    "R_sersic": self.point(profile, "theta_eff", where),
                    "n_sersic": self.point(profile, "n", where),
                    **self.shape(profile, where), **self.centre(profile, where)}  # fmt: skip
        if kind == "Shapelets":
            amps = self.point(profile, "amps", where)
            n_max = self.point(profile, "n_max", where)
            count = (int(n_max) + 1) * (int(n_max) + 2) // 2
            if not isinstance(amps, list) or n_max != int(n_max) or len(amps) != count:
                raise self.fail(f"{where}.parameters.amps",
                                f"n_max = {n_max:g} needs {count} amplitudes")  # fmt: skip
            return {"type": "SHAPELETS", "amp": amps, "beta": self.point(profile, "beta", where),
                    **self.centre(profile, where)}  # fmt: skip
        if kind == "PixelatedRegularGrid" and source:
            return self.pixelated(profile, where)
        raise self.unsupported(kind, where)

    def pixelated(self, profile: dict, where: str) -> dict[str, Any]:
        where = f"{where}.parameters.pixels"
        grid = self.get(self.get(profile, "parameters", where), "pixels", where)
        scale, cx, cy, _ = self.grid_geometry(grid, where)
        path = self.fits_path(grid, where)
        try:
            pixels = np.asarray(fits.getdata(path), dtype=np.float64)
        except (OSError, ValueError, TypeError) as exc:
            raise self.fail(where, f"cannot read FITS file {path}: {exc}") from None
        # Values per image-pixel area: total flux = Σ values × (source / image pixel)².
        flux = float(np.sum(pixels)) * (scale / self.pixel_size) ** 2
        return {"type": "IMAGE", "file": str(path), "pixel_scale": scale, "flux": flux,
                "center_x": cx, "center_y": cy, "phi_G": 0.0}  # fmt: skip

    def unsupported(self, kind: Any, where: str) -> ConfigError:
        return self.fail(
            where,
            f"COOLEST profile '{kind}' is not supported by lensgen simulate "
            f"(supported: {', '.join(SUPPORTED)})",
        )

    def instrument(self) -> dict[str, Any]:
        ins = self.get(self.doc, "instrument", "COOLEST")
        self.pixel_size = self.number(self.get(ins, "pixel_size", "instrument"),
                                      "instrument.pixel_size")  # fmt: skip
        if not self.pixel_size > 0:
            raise self.fail("instrument.pixel_size", f"must be > 0, got {self.pixel_size:g}")
        out: dict[str, Any] = {"pixel_scale": self.pixel_size}
        pixels = self.get(self.get(self.doc, "observation", "COOLEST"), "pixels", "observation")
        nx, ny = (self.get(pixels, k, "observation.pixels") for k in ("num_pix_x", "num_pix_y"))
        if not (isinstance(nx, int) and isinstance(ny, int) and nx > 0 and ny > 0):
            raise self.fail("observation.pixels", f"num_pix_x/y must be > 0, got {nx}, {ny}")
        if nx != ny:
            raise self.fail("observation.pixels",
                            f"lensgen simulate renders square images, got {nx} × {ny} pixels")  # fmt: skip
        out["npix"] = nx
        lensgen = self.doc.get("meta", {}).get("lensgen", {})
        if isinstance(lensgen.get("supersample"), int):
            out["supersample"] = lensgen["supersample"]
        psf = ins.get("psf") or {}
        kind = psf.get("type")
        if kind is None:
            out["psf"] = "none"
        elif kind == "GaussianPSF":
            fwhm = self.number(psf.get("fwhm"), "instrument.psf.fwhm")
            out.update(psf="gaussian", psf_fwhm=fwhm * self.pixel_size)
        elif kind == "PixelatedPSF":
            grid = self.get(psf, "pixels", "instrument.psf")
            scale, _, _, _ = self.grid_geometry(grid, "instrument.psf.pixels")
            ratio = self.pixel_size / scale
            sub = round(ratio)
            if sub < 1 or not math.isclose(ratio, sub, rel_tol=1e-6):
                raise self.fail("instrument.psf.pixels",
                                f"PSF pixels of {scale:g}″ do not divide the image pixels of "
                                f"{self.pixel_size:g}″ a whole number of times")  # fmt: skip
            out.update(psf="pixel", psf_file=str(self.fits_path(grid, "instrument.psf.pixels")))
            if sub > 1:
                out.update(psf_supersample=sub, supersample=sub, convolution="subpixel")
            else:
                out["convolution"] = "pixel"
        else:
            raise self.fail("instrument.psf.type", f"PSF type '{kind}' is not supported")
        return out

    def noise(self) -> dict[str, Any]:
        obs = self.get(self.doc, "observation", "COOLEST")
        out: dict[str, Any] = {}
        exptime = obs.get("exposure_time")
        if exptime is not None:
            out["exptime"] = self.number(exptime, "observation.exposure_time")
        noise = obs.get("noise") or {}
        kind = noise.get("type")
        where = "observation.noise"
        if kind == "UniformGaussianNoise":
            out["background_rms"] = self.number(noise.get("std_dev"), f"{where}.std_dev")
        elif kind == "DrizzledNoise":
            out["background_rms"] = self.number(noise.get("background_rms"),
                                                f"{where}.background_rms")  # fmt: skip
        elif kind == "InstrumentalNoise" and noise.get("with_readout_noise") and exptime:
            readout = self.get(self.doc, "instrument", "COOLEST").get("readout_noise", 0.0)
            out["background_rms"] = self.number(readout, "instrument.readout_noise") / exptime
        else:
            bkg = self.doc.get("meta", {}).get("lensgen", {}).get("background_rms")
            if bkg is not None:
                out["background_rms"] = self.number(bkg, "meta.lensgen.background_rms")
        return out

    def scene(self) -> dict[str, Any]:
        if self.doc.get("standard") != "COOLEST":
            raise self.fail("standard", f"not a COOLEST file (expected 'COOLEST', got "
                                        f"{self.doc.get('standard')!r})")  # fmt: skip
        instrument = self.instrument()
        entities = self.get(self.doc, "lensing_entities", "COOLEST")
        if not isinstance(entities, list):
            raise self.fail("lensing_entities", "expected a list of Galaxy and MassField entries")
        lens, source, light = [], [], []
        lens_z = set()
        for i, entity in enumerate(entities):
            where = f"lensing_entities[{i}]"
            kind = entity.get("type") if isinstance(entity, dict) else None
            if kind not in ("Galaxy", "MassField"):
                raise self.fail(f"{where}.type", f"expected Galaxy or MassField, got {kind!r}")
            masses = entity.get("mass_model") or []
            lights = entity.get("light_model") or [] if kind == "Galaxy" else []
            if masses and entity.get("redshift") is not None:
                lens_z.add(entity["redshift"])
            for j, profile in enumerate(masses):
                lens.append(self.mass(profile, f"{where}.mass_model[{j}]"))
            for j, profile in enumerate(lights):
                target = light if masses else source
                target.append(self.light(profile, f"{where}.light_model[{j}]", not masses))
        if len(lens_z) > 1:
            raise self.fail("lensing_entities", f"lenses at redshifts {sorted(lens_z)}: lensgen "
                                                "simulates one lens plane")  # fmt: skip
        if not lens:
            raise self.fail("lensing_entities", "no mass model (no lens)")
        if not source:
            raise self.fail("lensing_entities", "no source (a Galaxy with a light model and "
                                                "no mass model)")  # fmt: skip
        return {"lens": lens, "source": source, "lens_light": light,
                "instrument": instrument, "noise": self.noise()}  # fmt: skip


def coolest_tables(path: str | Path) -> dict[str, Any]:
    """The scene tables (as a scene TOML file holds them) of the COOLEST file ``path``.

    Raises
    ------
    ConfigError
        One line naming the file and the key: unreadable or invalid JSON, not a COOLEST
        document, a profile lensgen cannot simulate, a missing point estimate, a missing
        FITS file, non-square images or pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a COOLEST JSON file: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a COOLEST file (a JSON object is expected)")
    return _Reader(path, doc).scene()
