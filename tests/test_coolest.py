"""COOLEST interchange (Galan et al. 2023): `lensgen infer` writes a COOLEST file that the
`coolest` package reads, whose lens model coolest's own profile code evaluates as lensgen
does, and `lensgen simulate --config` reads it back with every parameter kept."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from clumpy_sources import lensed_observation
from conftest import run_cli, snapshot
from coolest.api.profiles import light as coolest_light
from coolest.api.profiles import mass as coolest_mass
from coolest.template.json import JSONSerializer

from lensgen.infer import coolest
from lensgen.infer.mapfit import model_functions, prior_draws
from lensgen.infer.problem import InferConfig, InferenceResult, build_problem, render_values
from lensgen.infer.report import bestfit_values
from lensgen.lensing import raytrace
from lensgen.lensing.frames import IDENTITY, MIRROR_X, mirror_x
from lensgen.simulate.scene import load_simulate_config

LENS = ("SIE", "SHEAR", "EPL")


@pytest.fixture(scope="module")
def observation():
    obs, _ = lensed_observation(seed=2, npix=24, pixel_scale=0.2, background_rms=0.2)
    return obs


def _result(problem, n: int = 40) -> InferenceResult:
    """``n`` prior draws as a one-chain NUTS result (constrained site values)."""
    x = prior_draws(jax.random.key(3), problem, n)
    constrain = jax.vmap(model_functions(problem).constrain, (0, None))
    values = constrain(x, problem.data)
    samples = {k: np.asarray(v)[None] for k, v in values.items() if k in x or k == "source.z"}
    return InferenceResult("nuts", samples, {}, {}, {})


def _export(obs, tmp_path, source: str, lens=LENS, light=(), orientation=IDENTITY):
    """Write the COOLEST files of a toy problem into ``tmp_path``; returns what it used."""
    obs = dataclasses.replace(obs, orientation=orientation)
    config = InferConfig(source=source, lens=lens, lens_light="none" if not light else light[0],
                         method="map", source_grid=6, shapelet_order=3)  # fmt: skip
    problem = build_problem(config, obs)
    result = _result(problem)
    point = bestfit_values(problem, result)
    names = coolest.coolest_names(problem, obs)
    left = coolest.write_coolest({n: tmp_path / n for n in names}, problem, obs, point, result)
    params = render_values(problem, point)[0]
    return problem, obs, result, params, names, left


def _load(tmp_path):
    return JSONSerializer(str(tmp_path / "coolest"), check_external_files=True).load(
        skip_jsonpickle=True, verbose=False
    )


def _frame(orientation, name, kw):
    return mirror_x(name, kw) if orientation == MIRROR_X else dict(kw)


@pytest.mark.parametrize("orientation", [IDENTITY, MIRROR_X])
def test_coolest_reads_the_file_and_simulate_keeps_every_parameter(
    observation, tmp_path, orientation
):
    problem, obs, _, params, names, left = _export(
        observation, tmp_path, "SERSIC_ELLIPSE", light=("SERSIC_ELLIPSE",),
        orientation=orientation,
    )  # fmt: skip
    assert names == ["coolest.json", "coolest_image.fits", "coolest_noise_map.fits",
                     "coolest_psf.fits"] and left == []  # fmt: skip
    model = _load(tmp_path)
    assert model.mode == "MAP" and model.instrument.pixel_size == pytest.approx(0.2)
    types = [[p.type for p in e.mass_model] for e in model.lensing_entities]
    assert types == [["SIE", "PEMD"], ["ExternalShear"], []]
    assert model.lensing_entities[2].light_model[0].type == "Sersic"
    assert model.observation.pixels.num_pix_x == 24

    cfg = load_simulate_config(tmp_path / "coolest.json")
    assert [c.type for c in cfg.lens] == ["SIE", "EPL", "SHEAR"]
    want = {"SIE": params["lens"][0], "SHEAR": params["lens"][1], "EPL": params["lens"][2]}
    for comp in cfg.lens:
        ours = _frame(orientation, comp.type, want[comp.type])
        for key, value in comp.params.items():
            assert value == pytest.approx(float(ours[key]), abs=1e-10), (comp.type, key)
    for group, theirs in (("source", cfg.source), ("lens_light", cfg.lens_light)):
        (comp,) = theirs
        ours = _frame(orientation, "SERSIC_ELLIPSE", params[group][0])
        assert comp.type == "SERSIC_ELLIPSE" and set(comp.params) == set(ours)
        for key, value in comp.params.items():
            assert value == pytest.approx(float(ours[key]), abs=1e-10), (group, key)
    assert cfg.instrument.npix == 24 and cfg.instrument.pixel_scale == pytest.approx(0.2)
    assert cfg.instrument.psf == "pixel" and cfg.noise.exptime == pytest.approx(obs.exptime)
    assert cfg.noise.background_rms == pytest.approx(0.2)


def test_posterior_statistics_are_those_of_the_transformed_draws(observation, tmp_path):
    _, _, result, _, _, _ = _export(observation, tmp_path, "SERSIC_ELLIPSE")
    doc = json.loads((tmp_path / "coolest.json").read_text())
    draws = {k: v.reshape(-1) for k, v in result.samples.items()}
    sie = doc["lensing_entities"][0]["mass_model"][0]["parameters"]
    shear = doc["lensing_entities"][1]["mass_model"][0]["parameters"]
    c = np.hypot(draws["lens.0.e1"], draws["lens.0.e2"])
    phi = np.degrees(np.arctan2(draws["lens.0.e2"], draws["lens.0.e1"])) / 2 - 90
    g_phi = np.degrees(np.arctan2(draws["lens.1.gamma2"], draws["lens.1.gamma1"])) / 2 - 90
    expected = [
        (sie, "q", (1 - c) / (1 + c)),
        (sie, "phi", np.where(phi <= -90, phi + 180, phi)),
        (sie, "theta_E", draws["lens.0.theta_E"]),
        (shear, "gamma_ext", np.hypot(draws["lens.1.gamma1"], draws["lens.1.gamma2"])),
        (shear, "phi_ext", np.where(g_phi <= -90, g_phi + 180, g_phi)),
    ]
    for table, name, values in expected:
        stats = table[name]["posterior_stats"]
        assert stats["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert stats["median"] == pytest.approx(np.median(values), rel=1e-12)
        assert stats["percentile_16th"] == pytest.approx(np.percentile(values, 16), rel=1e-12)
        assert stats["percentile_84th"] == pytest.approx(np.percentile(values, 84), rel=1e-12)
        assert not table[name]["fixed"]
    # Not the summary transformed: q of the median (e1, e2) is the point estimate instead.
    q = sie["q"]
    assert q["posterior_stats"]["median"] != pytest.approx(q["point_estimate"]["value"], rel=1e-9)


@pytest.mark.parametrize("orientation", [IDENTITY, MIRROR_X])
def test_coolest_profiles_deflect_as_lensgen(observation, tmp_path, orientation):
    """Independent reference: coolest's PEMD and ExternalShear code (PEMD with γ = 2 for
    the SIE) evaluates the exported lens as lensgen does, in COOLEST's frame."""
    problem, _, _, params, _, _ = _export(observation, tmp_path, "SERSIC_ELLIPSE",
                                          orientation=orientation)  # fmt: skip
    model = _load(tmp_path)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-2.4, 2.4, (2, 200))
    sign = -1.0 if orientation == MIRROR_X else 1.0
    ax, ay = raytrace.deflection(problem.scene.lens, params["lens"], sign * x, y)
    kappa = raytrace.convergence(problem.scene.lens, params["lens"], sign * x, y)
    tx, ty, tk = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for entity in model.lensing_entities:
        for profile in entity.mass_model:
            kw = {k: p.point_estimate.value for k, p in profile.parameters.items()}
            if profile.type == "SIE":
                profile_code, kw = coolest_mass.PEMD(), {**kw, "gamma": 2.0}
            else:
                profile_code = getattr(coolest_mass, profile.type)()
            dx, dy = profile_code.deflection(x, y, **kw)
            tx, ty, tk = tx + dx, ty + dy, tk + profile_code.convergence(x, y, **kw)
    np.testing.assert_allclose(tx, sign * np.asarray(ax), atol=1e-6)
    np.testing.assert_allclose(ty, np.asarray(ay), atol=1e-6)
    np.testing.assert_allclose(tk, np.asarray(kappa), rtol=1e-6)


def test_pixelated_and_shapelet_sources(observation, tmp_path):
    """The learned source becomes a PixelatedRegularGrid whose pixels coolest places where
    lensgen's INTERPOL nodes are; shapelets keep their coefficients."""
    problem, obs, _, params, names, _ = _export(observation, tmp_path, "vae+shapelets")
    assert "coolest_source_0.fits" in names
    model = _load(tmp_path)
    grid_profile, shapelets = model.lensing_entities[2].light_model
    assert (grid_profile.type, shapelets.type) == ("PixelatedRegularGrid", "Shapelets")
    kw = params["source"][0]
    image = np.asarray(kw["image"]) * float(kw["amp"])
    pixels = grid_profile.parameters["pixels"]
    # coolest's own coordinates of the grid's pixel centres are lensgen's INTERPOL nodes.
    # (Its interpolator pairs x with the y limits, so it is only right for a grid centred
    # on the origin; the nodes and their values are compared instead.)
    code = coolest_light.PixelatedRegularGrid(pixels.field_of_view_x, pixels.field_of_view_y,
                                              pixels.num_pix_x, pixels.num_pix_y)  # fmt: skip
    cx, cy = code.get_coordinates().pixel_coordinates
    values = pixels.get_pixels(directory=str(tmp_path))
    h, w = image.shape
    j, i = np.meshgrid(np.arange(w), np.arange(h))
    s = float(kw["scale"])
    np.testing.assert_allclose(cx, float(kw["center_x"]) + (j - (w - 1) / 2) * s, atol=1e-12)
    np.testing.assert_allclose(cy, float(kw["center_y"]) + (i - (h - 1) / 2) * s, atol=1e-12)
    np.testing.assert_allclose(values, image * obs.pixel_scale**2, rtol=1e-12)
    amps = shapelets.parameters["amps"].point_estimate.value
    np.testing.assert_allclose(amps, np.asarray(params["source"][1]["amp"]), rtol=1e-12)

    cfg = load_simulate_config(tmp_path / "coolest.json")
    img, shp = cfg.source
    assert img.type == "IMAGE" and shp.type == "SHAPELETS"
    assert img.params["pixel_scale"] == pytest.approx(s, rel=1e-12)
    assert img.params["center_x"] == pytest.approx(float(kw["center_x"]), abs=1e-10)
    flux = image.sum() * s**2
    assert img.params["flux"] == pytest.approx(flux, rel=1e-10)
    ours = params["source"][1]
    np.testing.assert_allclose(shp.params["amp"], np.asarray(ours["amp"]), atol=1e-10)
    for key in ("beta", "center_x", "center_y"):
        assert shp.params[key] == pytest.approx(float(ours[key]), abs=1e-10)


def test_rotated_images_and_unknown_profiles_are_left_out(observation, tmp_path):
    rotated = dataclasses.replace(observation, orientation=((0.0, -1.0), (1.0, 0.0)))
    problem = build_problem(InferConfig(source="SERSIC_ELLIPSE", lens=("SIS",), method="map"),
                            rotated)  # fmt: skip
    assert coolest.coolest_names(problem, rotated) == []
    assert "rotated" in coolest.coolest_skip_reason(rotated)
    _, _, _, _, _, left = _export(observation, tmp_path, "SERSIC_ELLIPSE",
                                  lens=("SIS", "POINT_MASS"))  # fmt: skip
    assert left == ["lens.1 (POINT_MASS)"]
    doc = json.loads((tmp_path / "coolest.json").read_text())
    assert doc["meta"]["lensgen"]["left_out"] == left
    sie = doc["lensing_entities"][0]["mass_model"][0]
    assert sie["type"] == "SIE" and sie["parameters"]["q"]["point_estimate"]["value"] == 1.0
    assert sie["parameters"]["q"]["fixed"] and sie["parameters"]["phi"]["fixed"]
    (comp,) = load_simulate_config(tmp_path / "coolest.json").lens
    assert comp.type == "SIE" and comp.params["e1"] == comp.params["e2"] == 0.0


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda d: d["lensing_entities"][0]["mass_model"][0].update(type="NFW"),
         ("'NFW'", "lensing_entities[0].mass_model[0]")),
        (lambda d: d.pop("instrument"), ("instrument",)),
        (None, ("not a COOLEST JSON file",)),
    ],
)  # fmt: skip
def test_bad_coolest_files_are_refused_in_one_line(observation, tmp_path, edit, needles):
    _export(observation, tmp_path, "SERSIC_ELLIPSE")
    path = tmp_path / "coolest.json"
    if edit is None:
        path.write_text(path.read_text()[:200])
    else:
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    res = run_cli("simulate", "--config", str(path), "--out", str(tmp_path / "sim.fits"))
    assert res.exit_code == 1, res.output
    line = res.output.strip()
    assert "\n" not in line and str(path) in line and "Traceback" not in res.output, line
    for needle in needles:
        assert needle in line, line
    assert snapshot(tmp_path) == before


def test_simulate_renders_a_coolest_file(observation, tmp_path):
    """`lensgen simulate --config coolest.json` end to end (toy size)."""
    _export(observation, tmp_path, "SERSIC_ELLIPSE", lens=("SIE", "SHEAR"))
    out = tmp_path / "sim.fits"
    res = run_cli("simulate", "--config", str(tmp_path / "coolest.json"), "--out", str(out),
                  "--no-preview")  # fmt: skip
    assert res.exit_code == 0, res.output
    from lensgen.io.fits import read_observation

    sim = read_observation(out)
    assert sim.image.shape == (24, 24) and sim.pixel_scale == pytest.approx(0.2)
    doc = json.loads((tmp_path / "coolest.json").read_text())
    theta = doc["lensing_entities"][0]["mass_model"][0]["parameters"]["theta_E"]
    assert sim.truth["lens.0.theta_E"] == pytest.approx(theta["point_estimate"]["value"])
