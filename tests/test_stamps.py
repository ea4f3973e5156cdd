"""Stamp cutting, noise and S/N, PSF extraction and centring, coadds, rebinning, the split."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lensgen.data import stamps as st
from lensgen.data.synthetic import draw_galaxies, render_galaxies, star_stamp
from lensgen.errors import LensgenError
from lensgen.lensing.instrument import gaussian_psf, moffat_psf
from lensgen.lensing.psf_supersampling import kernel_fwhm


def test_cut_stamps_follow_the_grid():
    size, grid = 8, 5
    image = np.zeros((grid * size, grid * size), np.float32)
    for j in range(grid):
        for i in range(grid):
            image[j * size : (j + 1) * size, i * size : (i + 1) * size] = 10 * j + i
    x = np.array([4.0, 12.5, 39.0])  # 0- or 1-based centres land in the same cell
    y = np.array([4.0, 4.0, 20.0])
    cut, i, j = st.cut_stamps(image, x, y, size)
    assert cut.shape == (3, size, size)
    np.testing.assert_array_equal(cut[:, 0, 0], [0, 1, 24])
    np.testing.assert_array_equal(i, [0, 1, 4]) and np.testing.assert_array_equal(j, [0, 0, 2])
    with pytest.raises(LensgenError, match=r"\(41.0, 3.0\) lies outside the 40 × 40 image"):
        st.cut_stamps(image, np.array([41.0]), np.array([3.0]), size)


def test_border_sigma_is_robust():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2.0, (400, 48, 48)).astype(np.float32)
    noise[:, 0, :10] = 1e4  # cosmic rays / neighbours in the border barely matter
    sigma = st.border_sigma(noise, 8)
    assert abs(np.median(sigma) / 2.0 - 1) < 0.02  # 10 of 1280 border pixels hit
    assert np.std(sigma) / 2.0 < 0.06


@pytest.fixture(scope="module")
def galaxies():
    """Noiseless PSF-convolved synthetic galaxies, unit S/N at σ = 1."""
    psf = moffat_psf(0.75, 3.0, 0.2, size=31)
    params = draw_galaxies(jax.random.key(1), 120, 0.2, 1.0, paired=False)
    clean = render_galaxies(params, psf, 48, 0.2).astype(np.float64)
    return clean / st.true_snr(clean, 1.0)[:, None, None]


@pytest.mark.parametrize("nu", [15.0, 50.0])
def test_snr_estimate_is_unbiased_near_the_cuts(galaxies, nu):
    rng = np.random.default_rng(int(nu))
    reps = 10
    clean = np.repeat(galaxies * nu, reps, axis=0)
    noisy = (clean + rng.normal(size=clean.shape)).astype(np.float32)
    sigma = np.full(len(noisy), np.median(st.border_sigma(noisy, 8)))
    est = st.estimate_snr(noisy, sigma)
    ratio = est / nu
    assert abs(ratio.mean() - 1.0) < 0.03  # bias at the cut: a few per cent at most
    assert ratio.std() < 2.0 / np.sqrt(nu)  # per-stamp scatter ≈ optimal 1/ν … 2/ν
    # The whole-stamp estimate sqrt(Σd² − N σ²) scatters far more at S/N 15.
    naive = np.sqrt(np.maximum((noisy.astype(np.float64) ** 2).sum((1, 2)) - 48 * 48, 0)) / nu
    if nu == 15.0:
        assert naive.std() > 1.5 * ratio.std()


def test_snr_of_pure_noise_is_small():
    noise = np.random.default_rng(2).normal(size=(500, 48, 48)).astype(np.float32)
    est = st.estimate_snr(noise, np.ones(500))
    assert np.median(est) < 5.0 and np.percentile(est, 99) < 12.0


def test_psf_from_starfield_keeps_a_star_centred_on_a_pixel():
    psf = moffat_psf(0.8, 3.0, 0.2, size=47)
    field = np.zeros((144, 144))
    field[1:48, 1:48] = 7.0 * psf  # lower-left star centred on pixel (24, 24)
    field[60:107, 52:99] = 3.0 * psf  # another star must not be picked
    out = st.psf_from_starfield(field, 48)
    assert out.shape == (25, 25) and np.argmax(out) == 12 * 25 + 12
    crop = psf[11:36, 11:36]
    np.testing.assert_allclose(out, crop / crop.sum(), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("centre", [(23.5, 23.5), (23.5, 24.0), (23.27, 23.81), (24.4, 22.6)])
@pytest.mark.parametrize("fwhm", [0.5, 0.95])
def test_a_star_between_pixels_is_resampled_to_the_centre(centre, fwhm):
    """GREAT3 draws the star at the stamp's true centre, (23.5, 23.5) for 48 × 48."""
    star = star_stamp(fwhm, 0.2, 48, (centre[0] - 23.5, centre[1] - 23.5))
    field = np.zeros((144, 144))
    field[:48, :48] = star
    out = st.psf_from_starfield(field, 48)
    cy, cx = st.centroid(out)
    assert max(abs(cy - 12), abs(cx - 12)) <= 0.02  # the target; in practice ~1e-4
    assert abs(out.sum() - 1) < 1e-6
    # The same Moffat drawn centred on a pixel: the resampled star is that kernel.
    ref = moffat_psf(fwhm, 3.0, 0.2, size=25)
    assert np.abs(out - ref / ref.sum()).max() < 0.015 * ref.max()
    # Cropping around the brightest pixel (the old rule) is off by up to half a pixel.
    if centre == (23.5, 23.5):
        py, px = np.unravel_index(np.argmax(star), star.shape)
        naive = star[py - 12 : py + 13, px - 12 : px + 13]
        assert max(abs(c - 12) for c in st.centroid(naive)) > 0.4


def test_shift_image_moves_content_and_keeps_white_noise():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(64, 64))
    np.testing.assert_allclose(
        st.shift_image(img, 2, -3), np.roll(img, (2, -3), (0, 1)), atol=1e-12
    )
    assert abs(st.shift_image(img, 0.5, 0.5).std() / img.std() - 1) < 0.05
    star = star_stamp(0.6, 0.2, 48)
    back = st.shift_image(st.shift_image(star, 0.3, -0.7, pad=12), -0.3, 0.7, pad=12)
    np.testing.assert_allclose(back, star, atol=1e-4 * star.max())  # sub-pixel round trip
    moved = st.shift_image(star, 0.25, -0.4, pad=12)
    cy, cx = st.centroid(moved)
    assert abs(cy - 23.75) < 1e-3 and abs(cx - 23.1) < 1e-3


def test_coadd_undoes_the_dithers():
    """Six epochs, each a sixth of the flux and moved by its dither, sum to the galaxy."""
    dithers = [(0.3, -0.2), (-0.45, 0.1), (0.0, 0.0), (0.2, 0.4), (-0.1, -0.35), (0.49, 0.05)]
    truth = star_stamp(0.7, 0.2, 48)
    epochs = [star_stamp(0.7, 0.2, 48, (dy, dx)) / 6 for dx, dy in dithers]
    out = st.coadd(epochs, dithers)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, truth, atol=2e-3 * truth.max())
    plain = np.sum(epochs, axis=0)  # without the dither correction: smeared
    assert np.abs(plain - truth).max() > 10 * np.abs(out - truth).max()


def test_psf_fwhm_of_known_kernels():
    for fwhm in (0.3, 0.6, 0.95):  # a finely sampled Moffat: the pixel barely widens it
        assert (
            abs(kernel_fwhm(moffat_psf(fwhm, 3.0, 0.02, size=251), 0.02, upsample=8) / fwhm - 1)
            < 0.01
        )
    # Pixel-integrated Gaussian of σ = 2 px: FWHM² ≈ (2.3548 σ)² + 2.3548² / 12 pixel².
    k = gaussian_psf(2.3548 * 2 * 0.1, 0.1, size=41)
    assert (
        abs(kernel_fwhm(k, 1.0, upsample=8) / np.sqrt((2.3548 * 2) ** 2 + 2.3548**2 / 12) - 1)
        < 0.01
    )


def test_rebin_sums_blocks():
    x = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    out = st.rebin(x, 2)
    assert out.shape == (2, 2, 3) and out[0, 0, 0] == 0 + 1 + 6 + 7
    assert st.rebin(x, 1) is x
    with pytest.raises(LensgenError, match="cannot rebin 6 × 4 pixels by 4"):
        st.rebin(x, 4)


def test_split_by_subfield_keeps_subfields_whole():
    subfield = np.repeat([3, 8, 11, 12, 40], [500, 500, 500, 500, 120])
    val = st.split_by_subfield(subfield, 0.2, seed=5)
    assert 1 <= len(val) <= 4 and set(val) <= {3, 8, 11, 12, 40}
    assert np.isin(subfield, val).sum() >= 0.2 * len(subfield)
    np.testing.assert_array_equal(val, st.split_by_subfield(subfield, 0.2, seed=5))
    seeds = {tuple(st.split_by_subfield(subfield, 0.2, seed=k)) for k in range(10)}
    assert len(seeds) > 1
    # Never all subfields: training keeps at least one.
    assert len(st.split_by_subfield(subfield, 0.9, seed=0)) == 4
    assert len(st.split_by_subfield(subfield, 0.0, seed=0)) == 0
    with pytest.raises(LensgenError, match="≥ 2 subfields.*only subfield 007"):
        st.split_by_subfield(np.full(10, 7), 0.1, seed=0)


@pytest.mark.parametrize(
    "header",
    ["# x\n# y\n# ID\n", "# x y ID\n", "#   1 x\n#   2 y\n#   3 ID\n", ""],
    ids=["per-column", "one-line", "numbered", "none"],
)
def test_txt_catalogue_headers(tmp_path, header):
    path = tmp_path / "galaxy_catalog-000.txt"
    path.write_text(header + "24 24 1000\n72 24 1001\n")
    cat = st.read_galaxy_catalog(path)
    assert cat["x"].tolist() == [24.0, 72.0] and cat["id"].tolist() == [1000, 1001]


def test_txt_catalogue_in_another_column_order(tmp_path):
    path = tmp_path / "galaxy_catalog-000.txt"
    path.write_text("# ID\n# y\n# x\n7 10.0 20.0\n")
    cat = st.read_galaxy_catalog(path)
    assert (cat["x"][0], cat["y"][0], cat["id"][0]) == (20.0, 10.0, 7)
    path.write_text("# x\n# y\n5 6 7\n")
    with pytest.raises(LensgenError, match="header names 2 columns.*rows hold 3"):
        st.read_galaxy_catalog(path)
