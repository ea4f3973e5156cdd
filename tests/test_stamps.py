"""Stamp cutting, noise and S/N estimation, PSF extraction and the pair-preserving split."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lensgen.data import stamps as st
from lensgen.data.synthetic import draw_galaxies, render_galaxies
from lensgen.errors import LensgenError
from lensgen.lensing.instrument import moffat_psf


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


def test_psf_from_starfield_recovers_the_centred_star():
    psf = moffat_psf(0.8, 3.0, 0.2, size=47)
    field = np.zeros((144, 144))
    field[1:48, 1:48] = 7.0 * psf  # lower-left star centred on pixel (24, 24)
    field[60:107, 52:99] = 3.0 * psf  # another star must not be picked
    out = st.psf_from_starfield(field, 48)
    assert out.shape == (25, 25) and np.argmax(out) == 12 * 25 + 12
    crop = psf[11:36, 11:36]
    np.testing.assert_allclose(out, crop / crop.sum(), rtol=1e-5, atol=1e-9)


def test_pairs_never_split():
    i = np.tile(np.arange(10), 10)
    j = np.repeat(np.arange(10), 10)
    pair = np.concatenate([st.pair_ids(s, i, j, 10, True) for s in (0, 1)])
    assert len(np.unique(pair)) == 100
    split = st.split_pairs(pair, 0.2, seed=5)
    for p in np.unique(pair):
        assert len(set(split[pair == p])) == 1
    assert (split == "val").sum() == 40
    np.testing.assert_array_equal(split, st.split_pairs(pair, 0.2, seed=5))
    assert (split != st.split_pairs(pair, 0.2, seed=6)).any()
    assert len(np.unique(st.pair_ids(0, i, j, 10, False))) == 100
