"""PSF kernels, FFT convolution, noise maps and noise draws."""

import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits
from scipy.signal import fftconvolve

from lensgen.errors import LensgenError
from lensgen.lensing import instrument
from lensgen.lensing.grid import bin_image, pixel_grid


def test_gaussian_psf_width_and_normalisation():
    kernel = instrument.gaussian_psf(fwhm=0.5, pixel_scale=0.05)
    assert kernel.shape[0] % 2 == 1 and kernel.shape == kernel.T.shape
    assert kernel.sum() == pytest.approx(1.0, abs=1e-14)
    n = kernel.shape[0]
    r = (np.arange(n) - n // 2) * 0.05
    sigma = np.sqrt(np.sum(kernel.sum(axis=0) * r**2))
    # Pixel integration adds pixel²/12 to the variance.
    assert sigma**2 == pytest.approx((0.5 / 2.3548200450309493) ** 2 + 0.05**2 / 12, rel=1e-4)


def test_moffat_psf_half_maximum():
    kernel = instrument.moffat_psf(fwhm=0.6, beta=3.0, pixel_scale=0.02, size=151)
    assert kernel.shape == (151, 151) and kernel.sum() == pytest.approx(1.0)
    centre = kernel[75, 75]
    # The half-maximum radius 0.3" is 15 pixels from the centre.
    assert kernel[75, 90] / centre == pytest.approx(0.5, rel=2e-3)
    assert np.allclose(kernel, kernel.T)


@pytest.mark.parametrize("bad", [{"fwhm": 0.0}, {"fwhm": np.nan}, {"size": 10}])
def test_psf_bad_arguments(bad):
    kwargs = {"fwhm": 0.3, "pixel_scale": 0.1, "size": None, **bad}
    with pytest.raises(LensgenError):
        instrument.gaussian_psf(**kwargs)
    with pytest.raises(LensgenError, match="beta"):
        instrument.moffat_psf(0.3, 0.9, 0.1)


@pytest.mark.parametrize("shape,kshape", [((40, 40), (7, 7)), ((33, 50), (5, 9))])
def test_convolve_matches_scipy(shape, kshape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape)
    kernel = rng.uniform(size=kshape)
    ours = instrument.convolve(jnp.asarray(image), kernel)
    np.testing.assert_allclose(
        np.asarray(ours), fftconvolve(image, kernel, mode="same"), rtol=0, atol=1e-12
    )
    # Batched images share one transfer function.
    batch = instrument.convolve(jnp.stack([jnp.asarray(image)] * 2), kernel)
    np.testing.assert_allclose(np.asarray(batch[1]), np.asarray(ours), atol=1e-12)


@pytest.mark.parametrize("psf", ["gaussian", "rank2"])
def test_separable_path_matches_scipy(psf):
    gauss = instrument.gaussian_psf(0.3, 0.1, size=9)
    kernel = gauss if psf == "gaussian" else gauss + 0.1 * np.outer(np.arange(9.0), np.ones(9))
    transfer = instrument.PSFTransfer(kernel, (30, 37))
    assert transfer.separable is not None and len(transfer.separable) == (psf == "rank2") + 1
    image = np.random.default_rng(1).normal(size=(30, 37))
    np.testing.assert_allclose(
        np.asarray(transfer.apply(jnp.asarray(image))),
        fftconvolve(image, kernel, mode="same"),
        rtol=0,
        atol=1e-12,
    )


def test_convolve_float32_stays_float32():
    image = jnp.ones((16, 16), jnp.float32)
    out = instrument.convolve(image, instrument.gaussian_psf(0.3, 0.1))
    assert out.dtype == jnp.float32
    assert float(out[8, 8]) == pytest.approx(1.0, rel=1e-5)


def _write(path, data):
    fits.PrimaryHDU(data).writeto(path)
    return path


def test_load_psf_roundtrip_and_errors(tmp_path):
    kernel = instrument.gaussian_psf(0.4, 0.1, size=9)
    loaded = instrument.load_psf(_write(tmp_path / "ok.fits", 3.0 * kernel))
    np.testing.assert_allclose(loaded, kernel, rtol=1e-12)
    with pytest.raises(LensgenError, match="does not exist"):
        instrument.load_psf(tmp_path / "missing.fits")
    (tmp_path / "junk.fits").write_text("not a fits file")
    with pytest.raises(LensgenError, match="junk.fits"):
        instrument.load_psf(tmp_path / "junk.fits")
    with pytest.raises(LensgenError, match="2-D"):
        instrument.load_psf(_write(tmp_path / "cube.fits", np.ones((3, 5, 5))))
    with pytest.raises(LensgenError, match="even size"):
        instrument.load_psf(_write(tmp_path / "even.fits", np.ones((8, 8))))
    nan = np.ones((5, 5))
    nan[2, 2] = np.nan
    with pytest.raises(LensgenError, match="NaN"):
        instrument.load_psf(_write(tmp_path / "nan.fits", nan))
    with pytest.raises(LensgenError, match="non-positive sum"):
        instrument.load_psf(_write(tmp_path / "neg.fits", -np.ones((5, 5))))


def test_noise_map_values():
    model = jnp.array([[-1.0, 0.0], [4.0, 100.0]])
    sigma = instrument.noise_map(model, exptime=100.0, background_rms=0.3)
    expected = np.sqrt(0.09 + np.maximum(np.asarray(model), 0) / 100.0)
    np.testing.assert_allclose(np.asarray(sigma), expected, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(instrument.noise_map(model, None, 0.3)), 0.3)


def test_noise_statistics(key):
    model = jnp.array([0.0, 0.5, 3.0, 40.0])
    exptime, background = 20.0, 0.2
    # One draw over 10000 stacked copies of the model: pixels are independent.
    stacked = jnp.tile(model, (10000, 1))
    draws = instrument.add_noise(key, stacked, exptime, background)
    mean, var = np.asarray(draws.mean(0)), np.asarray(draws.var(0))
    expected_var = background**2 + np.asarray(model) / exptime
    assert np.all(np.abs(mean - np.asarray(model)) < 4 * np.sqrt(expected_var / 10000))
    np.testing.assert_allclose(var, expected_var, rtol=0.06)
    # Pure Poisson: counts·exptime are integers; pure Gaussian: no Poisson term.
    poisson = instrument.add_noise(key, stacked, exptime, 0.0) * exptime
    np.testing.assert_allclose(np.asarray(poisson), np.round(np.asarray(poisson)), atol=1e-9)
    gauss = instrument.add_noise(key, stacked, None, background)
    np.testing.assert_allclose(np.asarray(gauss.var(0)), background**2, rtol=0.06)
    # Equal keys give equal draws.
    a = instrument.add_noise(key, stacked, exptime, background)
    b = instrument.add_noise(key, stacked, exptime, background)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_noise_of_an_image_is_the_draw_of_its_own_shape(key):
    """add_noise draws on a padded flat array (one program for many sizes); the noise of
    each pixel must still be the draw an image of its own shape gets from the key."""
    import jax

    model = jnp.asarray(np.random.default_rng(1).uniform(0.0, 30.0, (3, 23, 29)))
    exptime, background = 7.0, 0.3
    k_poisson, k_gauss = jax.random.split(key)
    counts = jax.random.poisson(k_poisson, model * exptime, shape=model.shape)
    expected = counts / exptime + background * jax.random.normal(k_gauss, model.shape)
    got = instrument.add_noise(key, model, exptime, background)
    assert got.shape == model.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-12, atol=1e-12)
    assert instrument.padded_length(23 * 29 * 3, 1024) == 2048
    assert instrument.padded_length(5, 1024) == 1024 and instrument.padded_length(65, 64) == 128


def test_pixel_grid_and_binning():
    x, y = pixel_grid((3, 4), 0.5, supersample=1)
    np.testing.assert_allclose(x[0], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(y[:, 0], [-0.5, 0.0, 0.5])
    xs, ys = pixel_grid((3, 4), 0.5, supersample=3)
    assert xs.shape == (9, 12)
    # The mean of the sub-pixel centres is the pixel centre.
    np.testing.assert_allclose(bin_image(xs, 3), x, atol=1e-15)
    np.testing.assert_allclose(bin_image(ys, 3), y, atol=1e-15)
    np.testing.assert_allclose(xs[0, :3], [-0.75 - 0.5 / 3, -0.75, -0.75 + 0.5 / 3])
    with pytest.raises(LensgenError, match="supersample"):
        pixel_grid((3, 4), 0.5, supersample=0)
    with pytest.raises(LensgenError, match="pixel_scale"):
        pixel_grid((3, 4), -0.5)
