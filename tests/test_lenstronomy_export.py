"""`lensgen infer`'s lenstronomy export: lenstronomy's ImageModel renders the exported
kwargs into lensgen's model image, for every kind of source and both PSF modes."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from clumpy_sources import lensed_observation
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

from lensgen.infer import export
from lensgen.infer.mapfit import model_functions, prior_draws
from lensgen.infer.problem import InferConfig, InferenceResult, build_problem, render_values
from lensgen.infer.report import bestfit_values


@pytest.fixture(scope="module")
def observation():
    obs, _ = lensed_observation(seed=2, npix=24, pixel_scale=0.2, background_rms=0.2)
    return obs


def _result(problem, n: int = 3) -> InferenceResult:
    """``n`` prior draws as a one-chain result (constrained site values)."""
    x = prior_draws(jax.random.key(1), problem, n)
    constrain = jax.vmap(model_functions(problem).constrain, (0, None))
    values = constrain(x, problem.data)
    samples = {k: np.asarray(v)[None] for k, v in values.items() if k in x or k == "source.z"}
    return InferenceResult("nuts", samples, {}, {}, {})


def _lenstronomy_image(doc: dict) -> np.ndarray:
    model = ImageModel(
        ImageData(**doc["kwargs_data"]),
        PSF(**doc["kwargs_psf"]),
        lens_model_class=LensModel(doc["lens_model_list"]),
        source_model_class=LightModel(doc["source_light_model_list"]),
        lens_light_model_class=LightModel(doc["lens_light_model_list"]),
        kwargs_numerics=doc["kwargs_numerics"],
    )
    return model.image(doc["kwargs_lens"], doc["kwargs_source"],
                       kwargs_lens_light=doc["kwargs_lens_light"])  # fmt: skip


@pytest.mark.parametrize(
    ("source", "convolution"),
    [("SERSIC_ELLIPSE", "pixel"), ("vae", "pixel"), ("pixels", "subpixel"),
     ("vae+shapelets", "pixel")],
)  # fmt: skip
def test_lenstronomy_renders_the_exported_best_fit(observation, tmp_path, source, convolution):
    obs = dataclasses.replace(observation, convolution=convolution)
    if convolution == "subpixel":  # a kernel on the sub-pixels, as lensgen simulate writes
        from lensgen.lensing.instrument import gaussian_psf

        obs = dataclasses.replace(obs, psf_supersampled=gaussian_psf(0.15, 0.1, size=9))
    config = InferConfig(source=source, lens=("SIE", "SHEAR"), method="map", source_grid=6,
                         shapelet_order=3)  # fmt: skip
    problem = build_problem(config, obs)
    result = _result(problem)
    values = bestfit_values(problem, result)
    ours = np.asarray(render_values(problem, values)[1])
    path = export.write_json(tmp_path / "b.json", export.bestfit_document(problem, obs, values))
    doc = export.read_lenstronomy(path)
    assert doc["lens_model_list"] == ["SIE", "SHEAR"] and doc["format"] == export.FORMAT
    ref = _lenstronomy_image(doc)
    assert np.max(np.abs(ours - ref)) < 1e-6 * np.max(np.abs(ref))
    # The posterior draws: each one renders as lensgen renders that draw.
    path = export.write_json(tmp_path / "d.json", export.draws_document(problem, obs, result))
    doc = export.read_lenstronomy(path)
    assert len(doc["draws"]) == 3
    for i, kwargs in enumerate(doc["draws"]):
        point = {k: v[0, i] for k, v in result.samples.items()}
        if problem.spec.latent == "flow":
            point.pop("source.z", None)
        mine = np.asarray(render_values(problem, point)[1])
        theirs = _lenstronomy_image({**doc, **kwargs})
        assert np.max(np.abs(mine - theirs)) < 1e-6 * np.max(np.abs(theirs))


def test_export_is_plain_json_with_the_grid(observation, tmp_path):
    problem = build_problem(InferConfig(source="SERSIC_ELLIPSE", method="map"), observation)
    values = bestfit_values(problem, _result(problem, 1))
    path = export.write_json(tmp_path / "b.json", export.bestfit_document(problem, observation,
                                                                          values))  # fmt: skip
    raw = json.loads(path.read_text())
    s = observation.pixel_scale
    # lenstronomy's sky frame: RA grows to the east, against the columns of a CDELT1 < 0 image.
    assert raw["kwargs_data"]["transform_pix2angle"] == [[-s, 0.0], [0.0, s]]
    assert raw["kwargs_data"]["ra_at_xy_0"] == pytest.approx(11.5 * s)
    assert raw["kwargs_data"]["dec_at_xy_0"] == pytest.approx(-11.5 * s)
    assert raw["kwargs_numerics"]["supersampling_factor"] == observation.supersample
    lens = raw["kwargs_lens"][0]
    assert lens["theta_E"] == pytest.approx(float(values["lens.0.theta_E"]))
    assert lens["center_x"] == pytest.approx(-float(values["lens.0.center_x"]))
    assert lens["e2"] == pytest.approx(-float(values["lens.0.e2"]))
    assert lens["e1"] == pytest.approx(float(values["lens.0.e1"]))
