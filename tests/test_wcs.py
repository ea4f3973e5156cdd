"""The sky convention (issue 15 §3): observations read through their WCS.

lensgen's (x, y) = (−ΔRA·cos δ, ΔDec). The references are independent of lensgen's
WCS code: astropy's ``pixel_to_world`` with spherical offsets for where each pixel
lies, and lenstronomy's ``ImageModel`` on a grid built from the header for what the
model image must be.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS
from clumpy_sources import lensed_observation
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

from lensgen.errors import LensgenError
from lensgen.infer import export
from lensgen.infer.mapfit import model_functions, prior_draws
from lensgen.infer.problem import InferConfig, build_problem, render_values
from lensgen.io.fits import read_observation, write_observation
from lensgen.io.source_image import read_source_image
from lensgen.io.wcs import IDENTITY, MIRROR_X, frame_from_header
from lensgen.lensing.frames import mirror_model
from lensgen.lensing.grid import display_frame, pixel_centres
from lensgen.lensing.light import interpolated

NPIX, SCALE = 24, 0.2
RA0, DEC0 = 150.1, 2.2


def _header(cd: np.ndarray, ctype=("RA---TAN", "DEC--TAN"), crpix=None) -> fits.Header:
    """A header with CD matrix ``cd`` (degrees per pixel), written by astropy."""
    w = WCS(naxis=2)
    w.wcs.ctype = list(ctype)
    w.wcs.crpix = crpix or [(NPIX + 1) / 2, (NPIX + 1) / 2]
    w.wcs.crval = [RA0, DEC0] if ctype[0].startswith("RA") else [DEC0, RA0]
    w.wcs.cd = cd
    return w.to_header()


def _rotation(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s], [s, c]])


def _cd(flip: bool, deg: float) -> np.ndarray:
    """CD matrix (deg/pixel): north rotated by ``deg``, east left unless ``flip``."""
    return _rotation(deg) @ np.diag([1.0 if flip else -1.0, 1.0]) * SCALE / 3600


def _astropy_offsets(header: fits.Header) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) = (−ΔRA cos δ, ΔDec) of every pixel centre from the image centre, arcsec."""
    w = WCS(header)
    rows, cols = np.mgrid[0:NPIX, 0:NPIX]
    sky = w.pixel_to_world(cols, rows)
    centre = w.pixel_to_world((NPIX - 1) / 2, (NPIX - 1) / 2)
    east, north = centre.spherical_offsets_to(sky)
    return -east.to_value(u.arcsec), north.to_value(u.arcsec)


CASES = {
    "north up, east left": (False, 0.0),
    "east right (CDELT1 > 0)": (True, 0.0),
    "rotated 30°": (False, 30.0),
    "rotated −65°, east right": (True, -65.0),
}


@pytest.mark.parametrize("case", CASES)
def test_pixel_centres_follow_the_wcs(case):
    header = _header(_cd(*CASES[case]))
    scale, orientation = frame_from_header(header, "x.fits")
    assert scale == pytest.approx(SCALE, rel=1e-9)
    x, y = pixel_centres((NPIX, NPIX), scale, orientation)
    ref_x, ref_y = _astropy_offsets(header)
    assert np.max(np.hypot(x - ref_x, y - ref_y)) < 1e-6


def test_usual_and_flipped_orientations_are_exact():
    assert frame_from_header(_header(_cd(False, 0.0)), "x")[1] == IDENTITY
    assert frame_from_header(_header(_cd(True, 0.0)), "x")[1] == MIRROR_X
    # CDELT + CROTA2 (the old AIPS form) and a latitude-first WCS.
    h = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 12.5, "CRPIX2": 12.5,
                     "CRVAL1": RA0, "CRVAL2": DEC0, "CDELT1": -SCALE / 3600,
                     "CDELT2": SCALE / 3600, "CROTA2": 30.0})  # fmt: skip
    _, orientation = frame_from_header(h, "x")
    x, y = pixel_centres((NPIX, NPIX), SCALE, orientation)
    ref_x, ref_y = _astropy_offsets(h)
    assert np.max(np.hypot(x - ref_x, y - ref_y)) < 1e-6
    swapped = _header(_cd(False, 20.0)[::-1], ctype=("DEC--TAN", "RA---TAN"))
    _, orientation = frame_from_header(swapped, "x")
    x, y = pixel_centres((NPIX, NPIX), SCALE, orientation)
    ref_x, ref_y = _astropy_offsets(swapped)
    assert np.max(np.hypot(x - ref_x, y - ref_y)) < 1e-6


def test_non_square_and_skewed_pixels_are_refused():
    with pytest.raises(LensgenError, match=r"b\.fits: non-square pixels \(0\.2″ along the col"):
        frame_from_header(_header(np.diag([-SCALE, 1.5 * SCALE]) / 3600), "b.fits")
    skew = np.array([[-1.0, 0.1], [0.0, 1.0]]) * SCALE / 3600
    skew[:, 1] /= np.hypot(*skew[:, 1])
    skew[:, 1] *= SCALE / 3600
    with pytest.raises(LensgenError, match=r"b\.fits: the WCS.s pixel axes are 95\.71\d\d° apart, not 90°"):
        frame_from_header(_header(skew), "b.fits")


@pytest.mark.parametrize("case", ["rotated 30°", "east right (CDELT1 > 0)"])
def test_orientation_survives_write_and_read(tmp_path, case):
    _, orientation = frame_from_header(_header(_cd(*CASES[case])), "x")
    obs, _ = lensed_observation(seed=2, npix=NPIX, pixel_scale=SCALE, background_rms=0.2)
    path = write_observation(tmp_path / "o.fits", dataclasses.replace(obs, orientation=orientation))
    back = read_observation(path)
    assert np.allclose(back.orientation, orientation, atol=1e-12)
    assert back.pixel_scale == pytest.approx(SCALE)


def _lenstronomy_grid_image(header: fits.Header, doc: dict, kwargs: dict) -> np.ndarray:
    """lenstronomy's image on a grid built from the header alone (astropy + offsets)."""
    ref_x, ref_y = _astropy_offsets(header)
    ra, dec = -ref_x, ref_y  # lenstronomy's ra grows to the east
    pix2angle = np.array([[ra[0, 1] - ra[0, 0], ra[1, 0] - ra[0, 0]],
                          [dec[0, 1] - dec[0, 0], dec[1, 0] - dec[0, 0]]])  # fmt: skip
    data = ImageData(image_data=np.zeros((NPIX, NPIX)), transform_pix2angle=pix2angle,
                     ra_at_xy_0=ra[0, 0], dec_at_xy_0=dec[0, 0])  # fmt: skip
    model = ImageModel(data, PSF(**doc["kwargs_psf"]),
                       lens_model_class=LensModel(doc["lens_model_list"]),
                       source_model_class=LightModel(doc["source_light_model_list"]),
                       kwargs_numerics=doc["kwargs_numerics"])  # fmt: skip
    return model.image(kwargs["kwargs_lens"], kwargs["kwargs_source"])


@pytest.mark.parametrize("case", ["north up, east left", "rotated −65°, east right"])
def test_lenstronomy_round_trip_on_the_files_wcs(tmp_path, case):
    """A model fitted on a FITS file renders in lenstronomy, on a grid built from that
    file's WCS, as lensgen renders it; mirrored back, its kwargs are lensgen's values."""
    obs, _ = lensed_observation(seed=2, npix=NPIX, pixel_scale=SCALE, background_rms=0.2)
    hdul = fits.HDUList([fits.PrimaryHDU(obs.image.astype(np.float32),
                                         header=_header(_cd(*CASES[case]))),
                         fits.ImageHDU(obs.psf, name="PSF")])  # fmt: skip
    hdul[0].header["EXPTIME"] = obs.exptime
    hdul[0].header["BKGRMS"] = obs.background_rms
    hdul.writeto(tmp_path / "lens.fits")
    read = read_observation(tmp_path / "lens.fits")
    config = InferConfig(source="SERSIC_ELLIPSE", lens=("SIE", "SHEAR"), method="map")
    problem = build_problem(config, read)
    x = prior_draws(jax.random.key(3), problem, 1)
    values = {k: np.asarray(v)[0] for k, v in
              jax.vmap(model_functions(problem).constrain, (0, None))(x, problem.data).items()}
    params, ours = render_values(problem, values)
    doc = export.bestfit_document(problem, read, values)
    theirs = _lenstronomy_grid_image(hdul[0].header, doc, doc)
    assert np.max(np.abs(np.asarray(ours) - theirs)) < 1e-5 * np.max(np.abs(theirs))
    back = mirror_model(doc["lens_model_list"], doc["kwargs_lens"])
    for mine, theirs_kw in zip(params["lens"], back, strict=True):
        for key, value in mine.items():
            assert float(theirs_kw[key]) == pytest.approx(float(value), abs=1e-12)


def test_display_frame_draws_points_where_the_pixels_are():
    """The figures' mapping puts a point at the pixel whose centre it is."""
    for case in CASES:
        _, orientation = frame_from_header(_header(_cd(*CASES[case])), "x")
        extent, to_display, _ = display_frame((NPIX, NPIX), SCALE, orientation)
        x, y = pixel_centres((NPIX, NPIX), SCALE, orientation)
        dx, dy = to_display(x[3, 5], y[3, 5])
        # imshow(origin="lower", extent): column j centre at left + (j + ½)·width/NPIX.
        left, right, bottom, top = extent
        assert dx == pytest.approx(left + 5.5 * (right - left) / NPIX, abs=1e-9)
        assert dy == pytest.approx(bottom + 3.5 * (top - bottom) / NPIX, abs=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_source_image_is_placed_by_its_wcs(tmp_path, case):
    """INTERPOL of a source image read through its WCS, evaluated where astropy puts
    each pixel centre, gives back that pixel's value (bilinear at nodes is exact)."""
    rng = np.random.default_rng(4)
    pixels = rng.uniform(0.5, 1.5, (NPIX, NPIX))
    header = _header(_cd(*CASES[case]))
    fits.PrimaryHDU(pixels, header=header).writeto(tmp_path / "galaxy.fits")
    image, scale, angle = read_source_image(tmp_path / "galaxy.fits")
    x, y = _astropy_offsets(header)
    values = interpolated(x, y, image * pixels.sum(), phi_G=angle, scale=scale)
    assert np.max(np.abs(np.asarray(values) - pixels)) < 1e-5


def _restore(array: np.ndarray, orientation) -> np.ndarray:
    """``array`` (north up, east left) stored with pixel axes ``orientation``: each stored
    pixel holds the value at its own sky position."""
    n = array.shape[0]
    c = (n - 1) / 2
    x, y = pixel_centres(array.shape, 1.0, orientation)
    return array[np.rint(y + c).astype(int), np.rint(x + c).astype(int)]


@pytest.mark.parametrize("turn", [90.0, 180.0, -90.0])
@pytest.mark.parametrize("flip", [False, True])
def test_the_same_sky_stored_any_way_has_the_same_likelihood(tmp_path, flip, turn):
    """One image of the sky, stored turned and/or flipped with the WCS saying so: the
    posterior density at every parameter point is the same."""
    obs, _ = lensed_observation(seed=5, npix=NPIX, pixel_scale=SCALE, background_rms=0.2)
    assert obs.psf.shape[0] % 2 == 1 and obs.psf.shape[0] == obs.psf.shape[1]
    cd = _cd(flip, turn)
    _, orientation = frame_from_header(_header(cd), "x")
    stored = dataclasses.replace(obs, image=_restore(obs.image, orientation),
                                 psf=_restore(obs.psf, orientation), orientation=orientation)
    path = write_observation(tmp_path / "turned.fits", stored)
    turned = read_observation(path)
    assert turned.orientation == orientation
    config = InferConfig(source="SERSIC_ELLIPSE", lens=("SIE", "SHEAR"), method="map")
    plain, other = build_problem(config, obs), build_problem(config, turned)
    x = prior_draws(jax.random.key(7), plain, 4)
    mine, theirs = (np.asarray(jax.vmap(p.programs.functions().potential, (0, None))(x, p.data))
                    for p in (plain, other))  # fmt: skip
    assert np.allclose(mine, theirs, rtol=1e-9, atol=1e-6)
