"""``lensgen simulate`` with a galaxy image (FITS) as the source."""

import numpy as np
from astropy.io import fits
from clumpy_sources import SOURCE_SCALE, clumpy_galaxy
from conftest import assert_refused, run_cli, snapshot
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

from lensgen.io.fits import read_observation

SCENE = """
seed = 3
[[lens]]
type = "SIE"
theta_E = 1.2
e1 = 0.05
e2 = -0.03
[[source]]
type = "IMAGE"
file = "{file}"
flux = 40.0
center_x = 0.04
center_y = -0.02
[instrument]
npix = 40
pixel_scale = 0.08
supersample = 2
psf = "none"
[noise]
exptime = 1000.0
background_rms = 0.05
"""


def _galaxy_file(path, header=True):
    image = clumpy_galaxy(np.random.default_rng(1))
    hdu = fits.PrimaryHDU(image.astype(np.float32))
    if header:
        hdu.header["CDELT1"] = -SOURCE_SCALE / 3600.0
        hdu.header["CDELT2"] = SOURCE_SCALE / 3600.0
    hdu.writeto(path)
    return image


def test_image_source_renders_as_lenstronomy_interpol(tmp_path):
    image = _galaxy_file(tmp_path / "galaxy.fits")
    (tmp_path / "sim.toml").write_text(SCENE.format(file=tmp_path / "galaxy.fits"))
    res = run_cli("simulate", "-c", tmp_path / "sim.toml", "-o", tmp_path / "obs.fits",
                  "--no-preview")  # fmt: skip
    assert res.exit_code == 0, res.output
    obs = read_observation(tmp_path / "obs.fits")
    assert obs.scene["source"] == ["INTERPOL"]
    data = ImageData(
        image_data=np.zeros((40, 40)),
        transform_pix2angle=np.diag([0.08, 0.08]),
        ra_at_xy_0=-19.5 * 0.08,
        dec_at_xy_0=-19.5 * 0.08,
    )
    model = ImageModel(
        data,
        PSF(psf_type="NONE"),
        lens_model_class=LensModel(["SIE"]),
        source_model_class=LightModel(["INTERPOL"]),
        kwargs_numerics={"supersampling_factor": 2},
    )
    lens = [{"theta_E": 1.2, "e1": 0.05, "e2": -0.03, "center_x": 0.0, "center_y": 0.0}]
    source = [{"image": image / image.sum() * 40.0 / SOURCE_SCALE**2, "amp": 1.0,
               "center_x": 0.04, "center_y": -0.02, "phi_G": 0.0, "scale": SOURCE_SCALE}]  # fmt: skip
    ref = model.image(lens, source)
    np.testing.assert_allclose(obs.model, ref, atol=1e-6 * ref.max())
    # The resolved config names the image, so the run can be repeated from it.
    assert "galaxy.fits" in (tmp_path / "obs.toml").read_text()


def test_image_source_without_pixel_scale_is_refused(tmp_path):
    _galaxy_file(tmp_path / "galaxy.fits", header=False)
    (tmp_path / "sim.toml").write_text(SCENE.format(file=tmp_path / "galaxy.fits"))
    before = snapshot(tmp_path)
    res = run_cli("simulate", "-c", tmp_path / "sim.toml", "-o", tmp_path / "obs.fits")
    assert_refused(res, before, "galaxy.fits has no pixel scale", "PIXSCALE", "pixel_scale")


def test_image_source_pixel_scale_from_the_scene_file(tmp_path):
    _galaxy_file(tmp_path / "galaxy.fits", header=False)
    scene = SCENE.format(file=tmp_path / "galaxy.fits").replace(
        "flux = 40.0", f"flux = 40.0\npixel_scale = {SOURCE_SCALE}"
    )
    (tmp_path / "sim.toml").write_text(scene)
    res = run_cli("simulate", "-c", tmp_path / "sim.toml", "-o", tmp_path / "obs.fits",
                  "--no-preview")  # fmt: skip
    assert res.exit_code == 0, res.output
    # The noiseless model holds the requested flux (the ring is inside the field).
    assert read_observation(tmp_path / "obs.fits").model.sum() > 40.0


def test_image_source_missing_file_is_refused(tmp_path):
    (tmp_path / "sim.toml").write_text(SCENE.format(file=tmp_path / "nothere.fits"))
    before = snapshot(tmp_path)
    res = run_cli("simulate", "-c", tmp_path / "sim.toml", "-o", tmp_path / "obs.fits")
    assert_refused(res, before, "nothere.fits does not exist")
