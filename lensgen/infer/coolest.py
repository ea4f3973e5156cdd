"""The fitted model as a COOLEST file (Galan et al. 2023, "COOLEST: COde-independent
Organized LEns STandard", JOSS 8, 5567).

``lensgen infer`` writes ``coolest.json`` (mode ``"MAP"``) next to
``bestfit_lenstronomy.json``, with the FITS files it references, all in the output
folder: ``coolest_image.fits`` (the observed image), ``coolest_noise_map.fits`` (the σ
per pixel of the likelihood at the best fit), ``coolest_psf.fits`` (the kernel the model
was convolved with: on the sub-pixels, at pixel_scale / supersample, for ``'subpixel'``
convolution) and ``coolest_source_<k>.fits`` for each pixelated source component ``k``.
The JSON is plain JSON in the layout that ``coolest.template.json.JSONSerializer``
reads; lensgen does not need the ``coolest`` package to write it.

Profiles (lensgen's names are lenstronomy's):

======================  =====================================================
lensgen                 COOLEST
======================  =====================================================
SIE                     SIE (θ_E, q, φ, centre)
SIS                     SIE with q = 1, φ = 0 (fixed)
EPL                     PEMD (``gamma``: 2 = isothermal, κ ∝ R^(1−γ))
SHEAR (ra_0 = dec_0 = 0)  ExternalShear (γ_ext = |γ|, φ_ext)
SERSIC, SERSIC_ELLIPSE  Sersic (I_eff = amp, θ_eff = R_sersic, n = n_sersic)
SHAPELETS               Shapelets (amps in lenstronomy's order, n_max, β, centre)
INTERPOL (learned source, pixel grid)  PixelatedRegularGrid (FITS image)
======================  =====================================================

Both θ_E and R_sersic are intermediate-axis (product-average) radii in lensgen and
COOLEST alike. Ellipticity: q = (1 − c)/(1 + c), c = |e|; COOLEST's position angle is
measured counter-clockwise from +y (east of north on a north-up, east-left image), so
φ_COOLEST = atan2(e2, e1)/2 − 90° wrapped into (−90°, 90°] (``coolest.api.profiles``
turns it back with ``eastofnorth2normalradians``, φ − 90°); the shear angle likewise.
A pixelated source holds surface brightness per image-pixel area (counts/s per
pixel_size²), as COOLEST's ``ComposableLightModel`` adds a pixelated profile to the
analytic ones multiplied by the image pixel area. Profiles COOLEST has no class for
(NFW, TNFW, POINT_MASS, GAUSSIAN, …) are left out and named in ``meta.lensgen.left_out``.

COOLEST coordinates run along the image axes ("x to the right, y up"). For a north-up,
east-left observation (:data:`~lensgen.lensing.frames.IDENTITY`) they are lensgen's x, y;
for east to the right (:data:`~lensgen.lensing.frames.MIRROR_X`, ``CDELT1 > 0``) every
component is mirrored in x (:func:`~lensgen.lensing.frames.mirror_x`). A rotated image
gets no COOLEST file (:func:`coolest_skip_reason`).

Point estimates are the best fit drawn in ``bestfit.png`` (the posterior median of each
sampled site, the MAP for ``--method map``). Posterior statistics (mean, median, 16th and
84th percentiles) are computed from the posterior draws of the run's sampling method,
each COOLEST parameter from its own transformed draws (q and φ from each draw's e1, e2),
never by transforming summaries; a parameter none of whose inputs is sampled is marked
``fixed``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units
from astropy.coordinates import SkyCoord
from astropy.io import fits

from lensgen import __version__
from lensgen.infer.model import likelihood_sigma
from lensgen.infer.problem import InferenceResult, Problem, render_values
from lensgen.lensing.frames import IDENTITY, MIRROR_X, mirror_x
from lensgen.lensing.light import interpolated

DOCUMENT = "coolest.json"
IMAGE = "coolest_image.fits"
NOISE = "coolest_noise_map.fits"
PSF = "coolest_psf.fits"
SOURCE = "coolest_source_{}.fits"

MASS = {"SIE": "SIE", "SIS": "SIE", "EPL": "PEMD", "SHEAR": "ExternalShear"}
"""lensgen mass profiles → COOLEST mass profiles."""
LIGHT = {"SERSIC": "Sersic", "SERSIC_ELLIPSE": "Sersic", "SHAPELETS": "Shapelets"}
"""lensgen light profiles → COOLEST light profiles (INTERPOL sources: PixelatedRegularGrid)."""

INPUTS = {
    "q": ("e1", "e2"),
    "phi": ("e1", "e2"),
    "gamma_ext": ("gamma1", "gamma2"),
    "phi_ext": ("gamma1", "gamma2"),
    "I_eff": ("amp",),
    "theta_eff": ("R_sersic",),
    "n": ("n_sersic",),
}
"""The lensgen parameters each derived COOLEST parameter is computed from (others: itself)."""


def coolest_angle(a, b):
    """COOLEST position angle (degrees, counter-clockwise from +y, in (−90, 90]) of the
    spin-2 pair (a, b) = (e1, e2) or (γ1, γ2), whose angle from +x is atan2(b, a)/2."""
    phi = np.degrees(np.arctan2(b, a)) / 2.0 - 90.0
    return np.where(phi <= -90.0, phi + 180.0, phi)


def axis_ratio(e1, e2):
    """q = (1 − c)/(1 + c) with c = sqrt(e1² + e2²) (lenstronomy's ellipticity)."""
    c = np.hypot(e1, e2)
    return (1.0 - c) / (1.0 + c)


def coolest_values(name: str, kw: Mapping[str, Any]) -> dict[str, Any]:
    """COOLEST parameters of lensgen profile ``name`` with parameters ``kw`` (scalars, or
    arrays of draws: the transformation works elementwise)."""
    if name in ("SIE", "EPL", "SERSIC_ELLIPSE"):
        shape = {"q": axis_ratio(kw["e1"], kw["e2"]), "phi": coolest_angle(kw["e1"], kw["e2"])}
    elif name in ("SIS", "SERSIC"):
        shape = {"q": 1.0, "phi": 0.0}
    centre = {k: kw[k] for k in ("center_x", "center_y") if k in kw}
    if name in ("SIE", "SIS"):
        return {"theta_E": kw["theta_E"], **shape, **centre}
    if name == "EPL":
        return {"gamma": kw["gamma"], "theta_E": kw["theta_E"], **shape, **centre}
    if name == "SHEAR":
        g1, g2 = kw["gamma1"], kw["gamma2"]
        return {"gamma_ext": np.hypot(g1, g2), "phi_ext": coolest_angle(g1, g2)}
    if name in ("SERSIC", "SERSIC_ELLIPSE"):
        return {"I_eff": kw["amp"], "theta_eff": kw["R_sersic"], "n": kw["n_sersic"],
                **shape, **centre}  # fmt: skip
    raise ValueError(f"no COOLEST parameters for {name}")


def coolest_frame(obs) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The observation's orientation when COOLEST can describe it (x, y along the image
    axes: :data:`IDENTITY` or :data:`MIRROR_X`), else None."""
    orientation = getattr(obs, "orientation", IDENTITY)
    return orientation if orientation in (IDENTITY, MIRROR_X) else None


def coolest_skip_reason(obs) -> str | None:
    """Why no COOLEST file is written for ``obs`` (one line), or None when one is."""
    if coolest_frame(obs) is not None:
        return None
    orientation = getattr(obs, "orientation", IDENTITY)
    return (
        f"no {DOCUMENT}: the image axes are rotated on the sky (orientation "
        f"{[list(r) for r in orientation]}), and COOLEST coordinates run along the image axes"
    )


def coolest_names(problem: Problem, obs) -> list[str]:
    """The COOLEST files a run writes for ``problem`` on ``obs`` (none for a rotated image)."""
    if coolest_frame(obs) is None:
        return []
    names = [DOCUMENT, IMAGE, NOISE]
    if problem.psf is not None:
        names.append(PSF)
    names += [SOURCE.format(k) for k, n in enumerate(problem.scene.source) if n == "INTERPOL"]
    return names


def _stats(draws: np.ndarray) -> dict[str, float]:
    values = np.asarray(draws, dtype=float).reshape(-1)
    p16, p50, p84 = np.percentile(values, [16.0, 50.0, 84.0])
    return {"mean": float(np.mean(values)), "median": float(p50),
            "percentile_16th": float(p16), "percentile_84th": float(p84)}  # fmt: skip


NO_STATS = {"mean": None, "median": None, "percentile_16th": None, "percentile_84th": None}


def _parameter(pid: str, value: Any, stats: dict | None, fixed: bool) -> dict[str, Any]:
    value = np.asarray(value, dtype=float)
    return {
        "id": pid,
        "fixed": fixed,
        "point_estimate": {"value": value.tolist() if value.ndim else float(value)},
        "posterior_stats": stats or dict(NO_STATS),
        "prior": {"type": None},
    }


def _grid(path: str, fov_x, fov_y, shape: tuple[int, ...], pid: str | None = None) -> dict:
    grid = {
        "fits_file": {"path": path},
        "field_of_view_x": [float(fov_x[0]), float(fov_x[1])],
        "field_of_view_y": [float(fov_y[0]), float(fov_y[1])],
        "num_pix_x": int(shape[1]),
        "num_pix_y": int(shape[0]),
    }
    return {"id": pid, **grid} if pid is not None else grid


def _centred(shape: tuple[int, ...], scale: float, cx: float = 0.0, cy: float = 0.0):
    """Field of view (x and y edges, arcsec) of an image of ``shape`` centred on (cx, cy)."""
    ny, nx = shape
    return (cx - nx * scale / 2, cx + nx * scale / 2), (cy - ny * scale / 2, cy + ny * scale / 2)


def axis_aligned(kw: Mapping[str, Any]) -> tuple[np.ndarray, float, float, float]:
    """An INTERPOL component as an unrotated image: (surface brightness, scale, cx, cy).

    With ``phi_G = 0`` the image itself (times ``amp``); otherwise the profile sampled at
    its own pixel scale on the axis-aligned grid that covers the turned image.
    """
    image = np.asarray(kw["image"], dtype=float)
    scale, amp = float(kw["scale"]), float(kw.get("amp", 1.0))
    cx, cy, phi = float(kw["center_x"]), float(kw["center_y"]), float(kw.get("phi_G", 0.0))
    if phi == 0.0:
        return amp * image, scale, cx, cy
    h, w = image.shape
    c, s = abs(math.cos(phi)), abs(math.sin(phi))
    nx, ny = math.ceil(c * w + s * h) + 2, math.ceil(s * w + c * h) + 2
    x = cx + (np.arange(nx) - (nx - 1) / 2) * scale
    y = cy + (np.arange(ny) - (ny - 1) / 2) * scale
    xx, yy = np.meshgrid(x, y)
    resampled = interpolated(xx, yy, image, amp, cx, cy, phi, scale)
    return np.asarray(resampled, dtype=float), scale, cx, cy


def _flat_draws(result: InferenceResult | None) -> dict[str, np.ndarray]:
    if result is None or result.method == "map":
        return {}
    return {k: v.reshape(-1) for k, v in result.samples.items() if v.ndim == 2}


class _Builder:
    """Collects the profiles of one document and the FITS arrays it references."""

    def __init__(self, problem: Problem, obs, params: dict, draws: dict[str, np.ndarray]):
        self.problem, self.obs, self.params, self.draws = problem, obs, params, draws
        self.mirrored = coolest_frame(obs) == MIRROR_X
        self.arrays: dict[str, tuple[np.ndarray, dict]] = {}
        self.left_out: list[str] = []
        self.light_profiles: list[dict] = []  # the light model being filled

    def frame(self, name: str, kw: Mapping[str, Any]) -> dict[str, Any]:
        return mirror_x(name, kw) if self.mirrored else dict(kw)

    def analytic(self, name: str, kw: Mapping, sites: Callable[[str], str], pid: str) -> dict:
        """One analytic profile: point estimates of ``kw``, statistics from the draws of
        the sites ``sites(param)`` (lensgen parameter → site name)."""
        point = {k: np.asarray(v, dtype=float) for k, v in kw.items()}
        sampled = {k for k in point if sites(k) in self.draws}
        values = coolest_values(name, self.frame(name, point))
        stats: dict[str, dict] = {}
        if sampled:
            n = len(self.draws[sites(next(iter(sampled)))])
            per_draw = {k: self.draws[sites(k)] if k in sampled else np.full(n, point[k])
                        for k in point}  # fmt: skip
            transformed = coolest_values(name, self.frame(name, per_draw))
            for key in values:
                if set(INPUTS.get(key, (key,))) & sampled:
                    stats[key] = _stats(transformed[key])
        kind = MASS.get(name) or LIGHT[name]
        return {
            "type": kind,
            "id": pid,
            "parameters": {
                key: _parameter(f"{pid}-{key}", value, stats.get(key), key not in stats)
                for key, value in values.items()
            },
        }

    def shapelets(self, kw: Mapping, sites: Callable[[str], str], pid: str) -> dict:
        kw = self.frame("SHAPELETS", kw)
        amps = np.asarray(kw["amp"], dtype=float)
        out = {"type": "Shapelets", "id": pid, "parameters": {}}
        params = out["parameters"]
        n_max = int(self.problem.spec.shapelet_order)
        params["n_max"] = _parameter(f"{pid}-n_max", n_max, None, True)
        params["n_max"]["point_estimate"]["value"] = n_max
        for key in ("beta", "center_x", "center_y"):
            draws = self.draws.get(sites(key))
            if draws is not None and self.mirrored and key == "center_x":
                draws = -draws
            stats = None if draws is None else _stats(draws)
            params[key] = _parameter(f"{pid}-{key}", kw[key], stats, stats is None)
        params["amps"] = {**_parameter(f"{pid}-amps", amps, None, False),
                          "num_values": int(amps.size)}  # fmt: skip
        return out

    def pixelated(self, kw: Mapping, k: int, pid: str) -> dict:
        image, scale, cx, cy = axis_aligned(self.frame("INTERPOL", kw))
        fov_x, fov_y = _centred(image.shape, scale, cx, cy)
        # Per image-pixel area, as COOLEST's pixelated profiles (see the module docstring).
        values = image * self.problem.scene.pixel_scale**2
        name = SOURCE.format(k)
        self.arrays[name] = (values, {"PIXSCALE": (scale, "arcsec / pixel"),
                                      "BUNIT": "electron/s/pixel_area"})  # fmt: skip
        grid = _grid(name, fov_x, fov_y, image.shape, f"{pid}-pixels")
        return {"type": "PixelatedRegularGrid", "id": pid, "parameters": {"pixels": grid}}

    def light(self, group: str, entity: int, k: int, name: str, kw: Mapping) -> dict | None:
        index = len(self.light_profiles)
        if name == "INTERPOL" and group == "source":
            pid = f"{entity}-galaxy-light-{index}-PixelatedRegularGrid"
            return self.pixelated(kw, k, pid)
        if name not in LIGHT:
            self.left_out.append(f"{group}.{k} ({name})")
            return None
        pid = f"{entity}-galaxy-light-{index}-{LIGHT[name]}"
        # Every source site is source.0.*: the spec has one source, split into components.
        prefix = "source.0" if group == "source" else f"{group}.{k}"

        def sites(p: str) -> str:
            return f"{prefix}.{p}"

        if name == "SHAPELETS":
            return self.shapelets(kw, sites, pid)
        return self.analytic(name, kw, sites, pid)

    def entities(self) -> list[dict]:
        scene, params = self.problem.scene, self.params
        galaxy_mass, fields = [], []
        for k, (name, kw) in enumerate(zip(scene.lens, params["lens"], strict=True)):
            origin = [float(kw.get(c, 0.0)) for c in ("ra_0", "dec_0")]
            if name not in MASS or (name == "SHEAR" and any(origin)):
                why = " with its origin off (0, 0)" if name == "SHEAR" else ""
                self.left_out.append(f"lens.{k} ({name}{why})")
                continue
            (fields if name == "SHEAR" else galaxy_mass).append((k, name, kw))
        out: list[dict] = []
        lens = {"type": "Galaxy", "name": "lens", "redshift": None, "light_model": [],
                "mass_model": []}  # fmt: skip
        for j, (k, name, kw) in enumerate(galaxy_mass):
            pid = f"0-galaxy-mass-{j}-{MASS[name]}"
            kw = {p: v for p, v in kw.items() if p not in ("ra_0", "dec_0")}
            lens["mass_model"].append(self.analytic(name, kw, lambda p, k=k: f"lens.{k}.{p}", pid))
        self.light_profiles = lens["light_model"]
        for k, (name, kw) in enumerate(zip(scene.lens_light, params.get("lens_light", []),
                                           strict=True)):  # fmt: skip
            profile = self.light("lens_light", 0, k, name, kw)
            if profile is not None:
                lens["light_model"].append(profile)
        out.append(lens)
        for k, name, kw in fields:
            e = len(out)
            pid = f"{e}-massfield-mass-0-ExternalShear"
            kw = {p: v for p, v in kw.items() if p not in ("ra_0", "dec_0")}
            profile = self.analytic(name, kw, lambda p, k=k: f"lens.{k}.{p}", pid)
            out.append({"type": "MassField", "name": f"external shear (lens.{k})",
                        "redshift": None, "mass_model": [profile]})  # fmt: skip
        e = len(out)
        source = {"type": "Galaxy", "name": "source", "redshift": None, "light_model": [],
                  "mass_model": []}  # fmt: skip
        self.light_profiles = source["light_model"]
        for k, (name, kw) in enumerate(zip(scene.source, params["source"], strict=True)):
            profile = self.light("source", e, k, name, kw)
            if profile is not None:
                source["light_model"].append(profile)
        out.append(source)
        return out


def _origin(obs) -> dict[str, str]:
    """RA, Dec of the image centre (the WCS reference pixel) in COOLEST's hms/dms form."""
    header = getattr(obs, "header", None)
    ra = float(header.get("CRVAL1", 0.0)) if header is not None else 0.0
    dec = float(header.get("CRVAL2", 0.0)) if header is not None else 0.0
    ra_s, dec_s = SkyCoord(ra * units.deg, dec * units.deg).to_string("hmsdms").split(" ")
    return {"ra": ra_s, "dec": dec_s}


def coolest_document(
    problem: Problem, obs, point: Mapping[str, Any], result: InferenceResult | None
) -> tuple[dict, dict[str, tuple[np.ndarray, dict]], list[str]]:
    """The COOLEST document of a best fit, the FITS arrays it names, and what it left out.

    Parameters
    ----------
    problem, obs
        The inference problem and its observation (orientation :data:`IDENTITY` or
        :data:`MIRROR_X`; see :func:`coolest_frame`).
    point : mapping
        Site values of the best fit (:func:`lensgen.infer.report.bestfit_values`).
    result : InferenceResult or None
        The sampling run whose draws give the posterior statistics (none for MAP).

    Returns
    -------
    document : dict
        Plain-JSON COOLEST template.
    arrays : dict
        FITS file name → (array, header cards) for every file the document references.
    left_out : list of str
        The components COOLEST cannot hold, as ``"lens.2 (NFW)"``.
    """
    if coolest_frame(obs) is None:
        raise ValueError(coolest_skip_reason(obs))
    params, model = render_values(problem, dict(point))
    draws = _flat_draws(result)
    builder = _Builder(problem, obs, params, draws)
    entities = builder.entities()
    scene, data = problem.scene, problem.data
    s = float(scene.pixel_scale)
    shape = tuple(obs.image.shape)
    fov_x, fov_y = _centred(shape, s)
    sigma = np.asarray(likelihood_sigma(data, model), dtype=float)
    arrays = dict(builder.arrays)
    arrays[IMAGE] = (np.asarray(obs.image, dtype=float), {"BUNIT": "electron/s"})
    arrays[NOISE] = (sigma, {"BUNIT": "electron/s"})
    exptime = float(data.exptime) or (obs.exptime or None)
    instrument: dict[str, Any] = {"name": "", "band": "", "pixel_size": s, "readout_noise": 0.0,
                                  "psf": {"type": None}}  # fmt: skip
    if problem.psf is not None:
        kernel = np.asarray(problem.psf, dtype=float)
        psf_scale = s / scene.supersample if scene.convolution == "subpixel" else s
        arrays[PSF] = (kernel, {"PIXSCALE": (psf_scale, "arcsec / pixel")})
        instrument["psf"] = {
            "type": "PixelatedPSF",
            "description": f"lensgen kernel ({scene.convolution} convolution)",
            "pixels": _grid(PSF, *_centred(kernel.shape, psf_scale), kernel.shape),
        }
    method = result.method if result is not None and result.method != "map" else None
    meta = {
        "lensgen": {
            "version": __version__,
            "point_estimate": "best fit as in bestfit.png: posterior median of each sampled "
            "parameter (the MAP for --method map)",
            "posterior_stats": f"from {len(next(iter(draws.values())))} draws of {method}"
            if method and draws
            else None,
            "frame": "image axes; lensgen's (x, y) mirrored in x (CDELT1 > 0)"
            if builder.mirrored
            else "image axes = lensgen's (x, y): x west, y north",
            "pixelated_units": "surface brightness per image-pixel area (counts/s per "
            "instrument.pixel_size²)",
            "noise": "NoiseMap: σ of the likelihood at the best fit"
            + (" (Poisson-like: σ² = background_rms² + model/exptime)" if data.sigma is None
               else ""),  # fmt: skip
            "background_rms": float(data.background_rms) or obs.background_rms,
            "exptime": exptime,
            "supersample": int(scene.supersample),
            "convolution": scene.convolution,
            "left_out": builder.left_out,
        }
    }
    document = {
        "standard": "COOLEST",
        "mode": "MAP",
        "coordinates_origin": _origin(obs),
        "lensing_entities": entities,
        "observation": {
            "pixels": _grid(IMAGE, fov_x, fov_y, shape),
            "exposure_time": exptime,
            "mag_zero_point": None,
            "mag_sky_brightness": None,
            "noise": {"type": "NoiseMap", "noise_map": _grid(NOISE, fov_x, fov_y, shape)},
        },
        "instrument": instrument,
        "cosmology": None,
        "likelihoods": None,
        "meta": meta,
    }
    return document, arrays, builder.left_out


def write_coolest(
    targets: Mapping[str, Path],
    problem: Problem,
    obs,
    point: Mapping[str, Any],
    result: InferenceResult | None,
) -> list[str]:
    """Write the COOLEST document and its FITS files to ``targets`` (file name → path to
    write, as :func:`coolest_names` lists them); returns the components left out."""
    document, arrays, left_out = coolest_document(problem, obs, point, result)
    for name, (array, cards) in arrays.items():
        header = fits.Header()
        for key, value in cards.items():
            header[key] = value
        fits.PrimaryHDU(np.asarray(array, dtype=np.float64), header=header).writeto(
            targets[name], overwrite=True
        )
    Path(targets[DOCUMENT]).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return left_out


def left_out_line(left_out: list[str]) -> str:
    """The one line printed when a COOLEST file leaves components out."""
    return (f"{DOCUMENT} leaves out {', '.join(left_out)}: COOLEST has no such profile "
            "(listed in its meta.lensgen.left_out)")  # fmt: skip
