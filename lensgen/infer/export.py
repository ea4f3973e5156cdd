"""The fitted model in lenstronomy's terms: model lists and keyword-argument lists.

``lensgen infer`` writes ``bestfit_lenstronomy.json`` (the point drawn in
``bestfit.png``, kwargs at the top level) and, per sampling method,
``draws_lenstronomy_<m>.json`` (up to :data:`MAX_DRAWS` posterior draws, evenly
spaced over chains and draws, under ``"draws"``). Each holds what lenstronomy's
``ImageModel`` needs to render the same image:

* ``lens_model_list`` / ``kwargs_lens``, ``source_light_model_list`` /
  ``kwargs_source``, ``lens_light_model_list`` / ``kwargs_lens_light``: lensgen's
  profiles are lenstronomy's, with the same parameter names (Birrer & Amara 2018).
  A learned source is exported as the ``INTERPOL`` image the decoder drew for that
  draw, a pixel-grid source as its ``INTERPOL`` node image, shapelets as
  ``SHAPELETS`` with ``n_max``;
* ``kwargs_data``: the pixel grid (``ra_at_xy_0``, ``dec_at_xy_0``,
  ``transform_pix2angle``), the image and its noise settings, so that
  ``ImageData(**kwargs_data)`` places every pixel where lensgen does;
* ``kwargs_psf`` and ``kwargs_numerics`` (supersampling, and whether the PSF acts on
  the sub-pixels).

Coordinates are lenstronomy's sky frame, (ra, dec) = (ΔRA·cos δ, ΔDec) in arcsec from
the image centre, RA growing to the east: lensgen's (x, y) with x mirrored
(:func:`lensgen.lensing.frames.mirror_x`: ``center_x``, ``e2``, ``gamma2`` change sign,
images are reversed along their columns). ``transform_pix2angle`` is then the image's
WCS matrix in arcsec, so an ``ImageData`` built from the observation's own WCS places
the model where lensgen does. Arrays are nested lists; every number is a float or an
int.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lensgen.infer.problem import InferenceResult, Problem, render_values
from lensgen.lensing.frames import MIRROR_X, mirror_x

MAX_DRAWS = 64
"""Posterior draws written per method (each carries its own source image when learned)."""

FORMAT = "lensgen-lenstronomy-2"
"""Version 2: lenstronomy's sky frame (version 1 wrote lensgen's (x, y) as they are)."""


def _plain(value: Any) -> Any:
    """JSON-ready copy: arrays to (nested) lists of floats, scalars to float."""
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array)
    return array.astype(float).tolist()


def _kwargs(names: tuple[str, ...], components: list[Mapping[str, Any]], n_max: int) -> list:
    out = []
    for name, comp in zip(names, components, strict=True):
        kw = {k: _plain(v) for k, v in mirror_x(name, comp).items()}
        if name == "SHAPELETS":
            kw["n_max"] = int(n_max)
        out.append(kw)
    return out


def lenstronomy_kwargs(problem: Problem, params: Mapping[str, Any]) -> dict[str, Any]:
    """The model lists and kwargs lists of a rendered parameter pytree."""
    scene = problem.scene
    n_max = problem.spec.shapelet_order
    return {
        "lens_model_list": list(scene.lens),
        "kwargs_lens": _kwargs(scene.lens, params["lens"], n_max),
        "source_light_model_list": list(scene.source),
        "kwargs_source": _kwargs(scene.source, params["source"], n_max),
        "lens_light_model_list": list(scene.lens_light),
        "kwargs_lens_light": _kwargs(scene.lens_light, params.get("lens_light", []), n_max),
    }


def lenstronomy_setup(problem: Problem, obs) -> dict[str, Any]:
    """``kwargs_data``, ``kwargs_psf`` and ``kwargs_numerics`` of the observation."""
    scene = problem.scene
    ny, nx = scene.shape
    # lenstronomy's (ra, dec) per pixel step: the WCS matrix in arcsec, diag(−1, 1)·s·O.
    pix2angle = np.asarray(MIRROR_X) @ (scene.pixel_scale * np.asarray(scene.orientation))
    ra0, dec0 = pix2angle @ np.array([-(nx - 1) / 2, -(ny - 1) / 2])
    data = {
        "image_data": _plain(obs.image),
        "ra_at_xy_0": float(ra0),
        "dec_at_xy_0": float(dec0),
        "transform_pix2angle": _plain(pix2angle),
    }
    if obs.background_rms is not None:
        data["background_rms"] = float(obs.background_rms)
    if obs.exptime is not None:
        data["exposure_time"] = float(obs.exptime)
    if obs.noise_map is not None:
        data["noise_map"] = _plain(obs.noise_map)
    subpixel = scene.convolution == "subpixel"
    if problem.psf is None:
        psf: dict[str, Any] = {"psf_type": "NONE"}
    else:
        psf = {"psf_type": "PIXEL", "kernel_point_source": _plain(problem.psf)}
        if subpixel:
            psf["point_source_supersampling_factor"] = scene.supersample
    numerics = {
        "supersampling_factor": scene.supersample,
        "supersampling_convolution": subpixel,
    }
    return {"kwargs_data": data, "kwargs_psf": psf, "kwargs_numerics": numerics}


def _draw_values(result: InferenceResult, n: int) -> list[dict[str, np.ndarray]]:
    """Up to ``n`` draws, evenly spaced over the flattened chains."""
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in result.samples.items()}
    total = len(next(iter(flat.values())))
    picks = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    return [{k: v[i] for k, v in flat.items()} for i in picks]


def _document(
    problem: Problem, obs, points: list[Mapping[str, Any]], what: str
) -> tuple[dict, list[dict]]:
    models = [lenstronomy_kwargs(problem, render_values(problem, p)[0]) for p in points]
    lists = {k: v for k, v in models[0].items() if k.endswith("_list")}
    head = {
        "format": FORMAT,
        "what": what,
        "coordinates": "lenstronomy sky frame: ra = ΔRA·cos(dec) (east), dec = ΔDec (north), "
        "arcsec from the image centre",
        **lists,
        **lenstronomy_setup(problem, obs),
    }
    return head, [{k: v for k, v in m.items() if not k.endswith("_list")} for m in models]


def bestfit_document(problem: Problem, obs, point: Mapping[str, Any]) -> dict:
    """The best-fit point as one set of lenstronomy kwargs (top-level keys)."""
    head, (kwargs,) = _document(problem, obs, [point], "best fit (as in bestfit.png)")
    return {**head, **kwargs}


def draws_document(problem: Problem, obs, result: InferenceResult) -> dict:
    """Up to :data:`MAX_DRAWS` posterior draws of ``result``, one kwargs set each
    (under ``"draws"``)."""
    points = _draw_values(result, MAX_DRAWS)
    if problem.spec.latent == "flow":
        for p in points:
            p.pop("source.z", None)  # a deterministic site: recomputed from source.u
    head, draws = _document(problem, obs, points, f"posterior draws ({result.method})")
    return {**head, "draws": draws}


def write_json(path: Path, document: dict) -> Path:
    """Write a document of this module as compact JSON."""
    Path(path).write_text(json.dumps(document, separators=(",", ":")) + "\n")
    return Path(path)


def _arrays(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list) and value and not isinstance(value[0], dict | str):
        return np.asarray(value, dtype=float)
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return value


def read_lenstronomy(path: str | Path) -> dict[str, Any]:
    """A document written by ``lensgen infer``, with arrays as NumPy arrays, ready for
    ``ImageData(**doc["kwargs_data"])``, ``PSF(**doc["kwargs_psf"])`` and
    ``ImageModel(...).image(doc["kwargs_lens"], doc["kwargs_source"], …)``."""
    doc = json.loads(Path(path).read_text())
    return {k: v if k.endswith("_list") else _arrays(v) for k, v in doc.items()}
