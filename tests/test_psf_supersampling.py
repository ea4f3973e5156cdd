"""Sub-pixel PSF convolution (issue 13): lenstronomy's supersampling_convolution=True,
kernel conventions, the FITS record of the mode, simulate's default and infer's use."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits
from conftest import assert_refused, run_cli, snapshot
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from scipy.signal import fftconvolve

from lensgen.errors import ConfigError, LensgenError
from lensgen.infer.problem import InferConfig, build_problem, with_data
from lensgen.io.fits import Observation, read_observation, write_observation
from lensgen.lensing import psf_supersampling as ps
from lensgen.lensing.grid import bin_image
from lensgen.lensing.instrument import PSFTransfer, gaussian_psf, moffat_psf
from lensgen.lensing.render import Scene, make_renderer, make_response, render
from lensgen.simulate.batch import make_psf
from lensgen.simulate.scene import InstrumentConfig, SimulateConfig

NPIX, SCALE = 40, 0.05
SIS = [{"theta_E": 0.7, "center_x": 0.0, "center_y": 0.0}]
SOURCE = [
    {
        "amp": 10.0,
        "R_sersic": 0.08,
        "n_sersic": 1.5,
        "e1": 0.1,
        "e2": -0.1,
        "center_x": 0.03,
        "center_y": 0.02,
    }
]


def _scene(lens, s, convolution, npix=NPIX):
    return Scene(
        lens=lens,
        source=("SERSIC_ELLIPSE",),
        shape=(npix, npix),
        pixel_scale=SCALE,
        supersample=s,
        convolution=convolution,
    )


def _lenstronomy(lens_names, lens, source, s, kernel, convolution, npix=NPIX, **numerics):
    """lenstronomy's image; ``kernel`` is supersampled when ``convolution`` is True."""
    data = ImageData(
        image_data=np.zeros((npix, npix)),
        transform_pix2angle=np.diag([SCALE, SCALE]),
        ra_at_xy_0=-(npix - 1) / 2 * SCALE,
        dec_at_xy_0=-(npix - 1) / 2 * SCALE,
    )
    factor = s if convolution else 1
    psf = PSF(
        psf_type="PIXEL", kernel_point_source=kernel, point_source_supersampling_factor=factor
    )
    model = ImageModel(
        data,
        psf,
        lens_model_class=LensModel(list(lens_names)),
        source_model_class=LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={
            "supersampling_factor": s,
            "supersampling_convolution": convolution,
            **numerics,
        },
    )
    return model.image(lens, source)


def _peak_error(ours, ref):
    return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(ref))


def test_issue_case_matches_lenstronomy_supersampled_convolution():
    """Gaussian FWHM 0.06″ on 0.05″ pixels, s = 4, SIS + Sérsic (issue 13)."""
    s, fwhm = 4, 0.06
    params = {"lens": SIS, "source": SOURCE}
    kernel = ps.gaussian_psf_supersampled(fwhm, SCALE, s)
    sub = render(_scene(("SIS",), s, "subpixel"), params, kernel)
    ref = _lenstronomy(("SIS",), SIS, SOURCE, s, kernel, True)
    assert _peak_error(sub, ref) < 1e-3
    # With lenstronomy's sub-pixel kernel covering the whole kernel, the two are one sum.
    full = _lenstronomy(("SIS",), SIS, SOURCE, s, kernel, True, supersampling_kernel_size=99)
    assert _peak_error(sub, full) < 1e-10
    # The pixel convolution is lenstronomy's supersampling_convolution=False, and
    # that is what missed the supersampled image by a few per cent.
    pixel = render(_scene(("SIS",), s, "pixel"), params, gaussian_psf(fwhm, SCALE))
    assert (
        _peak_error(pixel, _lenstronomy(("SIS",), SIS, SOURCE, s, gaussian_psf(fwhm, SCALE), False))
        < 1e-10
    )
    assert _peak_error(pixel, ref) > 1e-2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_match_lenstronomy(seed):
    rng = np.random.default_rng(seed)
    s = int(rng.choice([2, 3, 4]))
    fwhm = float(rng.uniform(0.04, 0.1))
    npix = 32
    if seed % 2:
        names = ("SIS",)
        lens = [{"theta_E": rng.uniform(0.4, 0.6), "center_x": 0.01, "center_y": -0.02}]
        kernel = ps.moffat_psf_supersampled(fwhm, 3.0, SCALE, s, size=7)
    else:
        names = ("SIE",)
        lens = [
            {
                "theta_E": rng.uniform(0.4, 0.6),
                "e1": rng.uniform(-0.2, 0.2),
                "e2": rng.uniform(-0.2, 0.2),
                "center_x": 0.0,
                "center_y": 0.0,
            }
        ]
        kernel = ps.gaussian_psf_supersampled(fwhm, SCALE, s)
    source = [
        {
            "amp": 5.0,
            "R_sersic": rng.uniform(0.04, 0.15),
            "n_sersic": rng.uniform(1.0, 3.0),
            "e1": rng.uniform(-0.3, 0.3),
            "e2": rng.uniform(-0.3, 0.3),
            "center_x": rng.uniform(-0.05, 0.05),
            "center_y": rng.uniform(-0.05, 0.05),
        }
    ]
    ours = render(_scene(names, s, "subpixel", npix), {"lens": lens, "source": source}, kernel)
    # lenstronomy's supersampling_kernel_size (pixels) covers the whole kernel here; with
    # its default of 5 it convolves a Moffat's wings beyond ±2.5 pixels on pixels.
    size = (kernel.shape[0] + (s % 2 == 0)) // s
    ref = _lenstronomy(
        names, lens, source, s, kernel, True, npix=npix, supersampling_kernel_size=size
    )
    assert _peak_error(ours, ref) < 1e-8
    assert _peak_error(ours, _lenstronomy(names, lens, source, s, kernel, True, npix=npix)) < 3e-3


@pytest.mark.parametrize("kind", ["gaussian", "moffat"])
def test_response_is_linear_batched_and_matches_scipy(kind):
    """Separable (Gaussian, binning folded into matrices) and FFT (Moffat) paths."""
    s, npix = 3, 12
    kernel = (
        ps.gaussian_psf_supersampled(0.07, SCALE, s)
        if kind == "gaussian"
        else ps.moffat_psf_supersampled(0.07, 2.5, SCALE, s, size=3)
    )
    transfer = PSFTransfer(kernel, (npix, npix), s)
    assert (transfer.separable is not None) == (kind == "gaussian")
    scene = _scene(("SIS",), s, "subpixel", npix)
    response = make_response(scene, kernel)
    basis = np.random.default_rng(3).normal(size=(4, npix * s, npix * s))
    out = np.asarray(response(jnp.asarray(basis)))
    assert out.shape == (4, npix, npix)
    expected = bin_image(fftconvolve(basis[2], kernel, mode="same"), s) * SCALE**2
    np.testing.assert_allclose(out[2], expected, rtol=0, atol=1e-12)
    one = np.asarray(response(jnp.asarray(basis[0] + 2 * basis[1])))
    np.testing.assert_allclose(one, out[0] + 2 * out[1], rtol=0, atol=1e-12)
    # A kernel passed through jit (traced) takes the FFT path and agrees.
    traced = jax.jit(lambda b, k: make_response(scene, k)(b))(jnp.asarray(basis), kernel)
    np.testing.assert_allclose(np.asarray(traced), out, rtol=0, atol=1e-12)


def test_gradient_matches_finite_differences():
    s = 2
    scene = _scene(("SIS",), s, "subpixel", 16)
    kernel = ps.gaussian_psf_supersampled(0.06, SCALE, s)
    f = make_renderer(scene, kernel)
    weights = jnp.asarray(np.random.default_rng(4).normal(size=(16, 16)))

    def loss(theta_e):
        return jnp.sum(weights * f({"lens": [{**SIS[0], "theta_E": theta_e}], "source": SOURCE}))

    grad = float(jax.grad(loss)(0.5))
    eps = 1e-6
    assert grad == pytest.approx(float(loss(0.5 + eps) - loss(0.5 - eps)) / (2 * eps), rel=1e-5)


def test_kernel_sides_and_binning():
    assert [ps.supersampled_side(7, s) for s in (1, 2, 3, 4)] == [7, 13, 21, 27]
    # For odd s the sub-pixel integrals add up to the pixel integrals exactly.
    fine = ps.gaussian_psf_supersampled(0.12, 0.1, 3)
    coarse = gaussian_psf(0.12, 0.1)
    assert fine.shape == (3 * coarse.shape[0],) * 2
    np.testing.assert_allclose(ps.bin_psf(fine, 3), coarse, rtol=0, atol=1e-15)
    # For even s the edge sub-pixels are shared: same footprint, unit sum, symmetric.
    binned = ps.bin_psf(ps.gaussian_psf_supersampled(0.12, 0.1, 4), 4)
    assert binned.shape == coarse.shape and binned.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(binned, binned.T, atol=1e-15)
    np.testing.assert_allclose(binned, coarse, atol=0.02)
    assert ps.bin_psf(moffat_psf(0.12, 3.0, 0.1 / 3, size=9), 3).shape == (3, 3)
    assert ps.kernel_fwhm(gaussian_psf(0.5, 0.02), 0.02) == pytest.approx(0.5, rel=0.05)
    assert ps.auto_convolution(1.9, 2) == "subpixel"
    assert ps.auto_convolution(2.1, 2) == "pixel" and ps.auto_convolution(1.0, 1) == "pixel"
    with pytest.raises(LensgenError, match="convolution"):
        Scene(lens=("SIS",), source=("SERSIC",), shape=(8, 8), pixel_scale=0.1, convolution="x")


def _write_kernel(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float64)).writeto(path)
    return path


@pytest.mark.parametrize(
    "s, side, ok",
    [(4, 11, True), (4, 12, False), (4, 13, False), (3, 9, True), (3, 6, False), (3, 8, False)],
)
def test_supersampled_psf_file_sides(tmp_path, s, side, ok):
    path = _write_kernel(tmp_path / f"psf{side}.fits", np.ones((side, side)))
    if ok:
        assert ps.load_supersampled_psf(path, s).sum() == pytest.approx(1.0)
        return
    rule = f"an odd multiple of {s}" + (", minus 1" if s % 2 == 0 else "")
    with pytest.raises(LensgenError, match=f"psf{side}.fits has shape \\({side}, {side}\\)") as exc:
        ps.load_supersampled_psf(path, s)
    assert rule in str(exc.value) and f"supersample = {s}" in str(exc.value)


def _observation(convolution, s=2):
    image = np.random.default_rng(0).normal(size=(16, 16))
    kernel = ps.gaussian_psf_supersampled(0.1, 0.08, s)
    return Observation(
        image=image,
        pixel_scale=0.08,
        psf=gaussian_psf(0.1, 0.08),
        supersample=s,
        convolution=convolution,
        psf_supersampled=kernel if convolution == "subpixel" else None,
    )


def test_fits_records_the_convolution(tmp_path):
    path = write_observation(tmp_path / "sub.fits", _observation("subpixel"))
    obs = read_observation(path)
    assert obs.convolution == "subpixel" and obs.header["CONVMODE"] == "subpixel"
    np.testing.assert_allclose(obs.psf_supersampled, _observation("subpixel").psf_supersampled)
    with fits.open(path) as hdul:
        assert hdul["PSFSUPER"].header["SUPERSMP"] == 2
        assert hdul["PSFSUPER"].header["PIXSCALE"] == pytest.approx(0.04)
    assert "PSFSUPER" not in obs.extra
    # A file written before the card existed reads as the pixel convolution.
    old = tmp_path / "old.fits"
    with fits.open(write_observation(tmp_path / "pix.fits", _observation("pixel"))) as hdul:
        del hdul[0].header["CONVMODE"]
        hdul.writeto(old)
    assert read_observation(old).convolution == "pixel"
    assert read_observation(old).psf_supersampled is None


def _edited(tmp_path, name, edit):
    path = tmp_path / name
    with fits.open(write_observation(tmp_path / f"src-{name}", _observation("subpixel"))) as hdul:
        edit(hdul)
        hdul.writeto(path)
    return path


def test_fits_convolution_errors(tmp_path):
    def bad_card(h):
        h[0].header["CONVMODE"] = "fourier"

    def no_kernel(h):
        del h["PSFSUPER"]
        h[0].header["NEXTEND"] = len(h) - 1

    def even(h):
        h["PSFSUPER"].data = np.ones((6, 6))

    def other_s(h):
        h["PSFSUPER"].header["SUPERSMP"] = 3

    for name, edit, needle in [
        ("card.fits", bad_card, "CONVMODE = 'fourier'"),
        ("missing.fits", no_kernel, "needs the PSFSUPER extension"),
        ("even.fits", even, "even shape (6, 6)"),
        ("other.fits", other_s, "SUPERSMP = 3"),
    ]:
        with pytest.raises(LensgenError, match="PSFSUPER|CONVMODE") as exc:
            read_observation(_edited(tmp_path, name, edit))
        assert needle in str(exc.value) and name in str(exc.value)


def _instrument(**kw):
    return SimulateConfig(instrument=InstrumentConfig(**kw))


def test_simulate_default_rule():
    narrow = make_psf(_instrument(pixel_scale=0.05, psf_fwhm=0.06, supersample=4))
    assert narrow.convolution == "subpixel" and narrow.kernel is narrow.supersampled
    np.testing.assert_array_equal(narrow.psf, gaussian_psf(0.06, 0.05))
    np.testing.assert_array_equal(narrow.supersampled, ps.gaussian_psf_supersampled(0.06, 0.05, 4))
    broad = make_psf(_instrument(pixel_scale=0.05, psf_fwhm=0.15, supersample=4))
    assert broad.convolution == "pixel" and broad.supersampled is None
    assert make_psf(_instrument(psf_fwhm=0.06, supersample=1)).convolution == "pixel"
    forced = make_psf(
        _instrument(psf_fwhm=0.3, supersample=2, convolution="subpixel", psf="moffat")
    )
    assert forced.convolution == "subpixel" and forced.supersampled.shape[0] % 2 == 1
    kept = make_psf(_instrument(psf_fwhm=0.06, supersample=2, convolution="pixel"))
    assert kept.convolution == "pixel" and kept.supersampled is None
    with pytest.raises(ConfigError, match="needs a PSF"):
        InstrumentConfig(psf="none", convolution="subpixel")
    with pytest.raises(ConfigError, match="psf_supersample = 4"):
        InstrumentConfig(psf="pixel", psf_file="k.fits", supersample=2, psf_supersample=4)
    with pytest.raises(ConfigError, match="supersampled psf_file"):
        InstrumentConfig(psf="pixel", psf_file="k.fits", supersample=2, convolution="subpixel")


def test_simulate_with_supersampled_psf_file(tmp_path):
    kernel = ps.gaussian_psf_supersampled(0.1, 0.08, 2)
    path = _write_kernel(tmp_path / "k.fits", 5 * kernel)
    cfg = _instrument(pixel_scale=0.08, supersample=2, psf="pixel", psf_file=str(path),
                      psf_supersample=2)  # fmt: skip
    psfs = make_psf(cfg)
    assert psfs.convolution == "subpixel"
    np.testing.assert_allclose(psfs.supersampled, kernel, atol=1e-15)
    np.testing.assert_allclose(psfs.psf, ps.bin_psf(kernel, 2), atol=1e-15)


TINY = "--npix 16 --pixel-scale 0.08 --supersample 2 --source sersic --rein 0.4".split()


@pytest.mark.float32
def test_simulate_cli_records_mode_and_infer_uses_it(tmp_path):
    sub, pix = tmp_path / "sub.fits", tmp_path / "pix.fits"
    args = [*TINY, "--psf-fwhm", "0.1", "--no-preview", "--seed", 3]
    assert run_cli("simulate", *args, "--out", sub).exit_code == 0
    toml = tmp_path / "pix-config.toml"
    toml.write_text('[instrument]\nconvolution = "pixel"\n')
    res = run_cli("simulate", *args, "--config", toml, "--out", pix)
    assert res.exit_code == 0, res.output
    obs = read_observation(sub)
    assert obs.convolution == "subpixel"  # FWHM 1.25 pixels: the default picks sub-pixels
    assert obs.psf_supersampled.shape == (ps.supersampled_side(obs.psf.shape[0], 2),) * 2
    assert "convolution" in (tmp_path / "sub.toml").read_text()
    pixel_obs = read_observation(pix)
    assert pixel_obs.convolution == "pixel" and pixel_obs.psf_supersampled is None

    config = InferConfig(lens=("SIS",), source="SERSIC_ELLIPSE", lens_light="none")
    problem = build_problem(config, obs)
    assert problem.scene.convolution == "subpixel"
    np.testing.assert_array_equal(problem.psf, obs.psf_supersampled)
    # The problem's renderer reproduces the file's noiseless model from its truths.
    params = {
        group: [
            {k.split(".", 2)[2]: v for k, v in obs.truth.items() if k.startswith(f"{group}.0.")}
        ]
        for group in ("lens", "source")
    }
    model = np.asarray(problem.renderer(params))
    np.testing.assert_allclose(model, obs.model, rtol=0, atol=1e-5 * np.abs(obs.model).max())
    with pytest.raises(LensgenError, match="CONVMODE = 'pixel' differs"):
        with_data(problem, pixel_obs)
    pixel_problem = build_problem(config, pixel_obs)
    assert pixel_problem.scene == dataclasses.replace(problem.scene, convolution="pixel")
    np.testing.assert_array_equal(pixel_problem.psf, pixel_obs.psf)


@pytest.mark.float32
def test_simulate_cli_refuses_a_psf_file_of_the_wrong_side(tmp_path):
    _write_kernel(tmp_path / "psf.fits", np.ones((12, 12)))
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        '[instrument]\npsf = "pixel"\npsf_file = "'
        + str(tmp_path / "psf.fits")
        + '"\npsf_supersample = 2\n'
    )
    before = snapshot(tmp_path)
    res = run_cli("simulate", *TINY, "--config", cfg, "--out", tmp_path / "o.fits")
    assert_refused(res, before, "psf.fits", "(12, 12)", "supersample = 2", "odd multiple of 2")
