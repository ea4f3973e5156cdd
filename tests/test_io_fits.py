"""Observation FITS round trip, WCS, errors, atomic writes."""

import errno
import os
import tempfile

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from lensgen.errors import LensgenError
from lensgen.io.atomic import atomic_path
from lensgen.io.fits import Observation, read_observation, write_observation


def _obs(rng):
    img = rng.normal(size=(20, 30))
    return Observation(
        image=img,
        pixel_scale=0.05,
        psf=np.ones((3, 3)) / 9,
        noise_map=np.full(img.shape, 0.1),
        exptime=900.0,
        background_rms=0.1,
        supersample=3,
        model=img * 0.5,
        source=np.ones((20, 30)),
        truth={"lens.0.theta_E": 2.3, "source.0.R_sersic": 0.2},
        scene={"lens": ["SIE", "SHEAR"], "source": ["SERSIC_ELLIPSE"], "lens_light": []},
        seed=7,
    )


def test_round_trip_and_wcs(tmp_path):
    rng = np.random.default_rng(1)
    obs = _obs(rng)
    path = write_observation(tmp_path / "o.fits", obs)
    back = read_observation(path)
    np.testing.assert_allclose(back.image, obs.image.astype(np.float32))
    assert back.pixel_scale == 0.05 and back.exptime == 900.0 and back.supersample == 3
    assert back.truth == obs.truth and back.scene == obs.scene and back.seed == 7
    np.testing.assert_allclose(back.psf.sum(), 1.0)
    w = WCS(fits.getheader(path))
    # The centre of the image is the reference point; one pixel is 0.05 arcsec.
    ra, dec = w.pixel_to_world_values((30 - 1) / 2, (20 - 1) / 2)
    assert abs(ra) < 1e-12 or abs(ra - 360) < 1e-12
    assert abs(dec) < 1e-12
    ra1, dec1 = w.pixel_to_world_values((30 - 1) / 2, (20 - 1) / 2 + 1)
    assert dec1 * 3600 == pytest.approx(0.05, rel=1e-6)
    ra2, _ = w.pixel_to_world_values((30 - 1) / 2 + 1, (20 - 1) / 2)
    assert ((ra2 + 180) % 360 - 180) * 3600 == pytest.approx(-0.05, rel=1e-6)  # x grows west


def test_existing_output_refused_and_left_intact(tmp_path):
    rng = np.random.default_rng(2)
    path = write_observation(tmp_path / "o.fits", _obs(rng))
    before = path.read_bytes()
    with pytest.raises(LensgenError, match="exists; pass --overwrite"):
        write_observation(path, _obs(rng))
    assert path.read_bytes() == before


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(LensgenError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "x.bin"):
            pass



def test_a_folder_that_refuses_new_files_is_one_line(tmp_path, monkeypatch):
    """A read-only or full file system fails at the temporary file: a one-line error
    naming the output, not a traceback (as `lensgen simulate --out /proc/x.fits` did)."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = tmp_path / "x.fits"
    with pytest.raises(LensgenError, match=r"cannot write .*x\.fits: Read-only file system"):
        with atomic_path(target):
            pass
    assert list(tmp_path.iterdir()) == []

def test_missing_pixel_scale_is_named(tmp_path):
    path = tmp_path / "bare.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(path)
    with pytest.raises(LensgenError, match="PIXSCALE"):
        read_observation(path)
    path2 = tmp_path / "text.fits"
    path2.write_text("not fits")
    with pytest.raises(LensgenError, match="not a readable FITS"):
        read_observation(path2)
    with pytest.raises(LensgenError, match="not found"):
        read_observation(tmp_path / "absent.fits")
