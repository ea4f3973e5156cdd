"""The structured galaxy population of the offline generator (lensgen.data.morphology).

What the recipes must achieve, measured on noiseless stamps: the drawn flux is kept,
clumps and lopsided disks raise the asymmetry and clumpiness of the CAS system
(Conselice 2003, ApJS 147, 1), arms and bars break axial symmetry while staying
point-symmetric (m = 2), rotated pair partners are rotated images, the population
fractions are the documented ones, and the S/N 15–50 selection keeps a similar share.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import run_cli
from scipy.ndimage import gaussian_filter

from lensgen.data import morphology as mo
from lensgen.data import stamps as st
from lensgen.data.synthetic import draw_galaxies, render_galaxies
from lensgen.lensing.instrument import moffat_psf

SIZE, SCALE = 33, 0.1  # odd: the origin is a pixel centre, so rot90 maps the grid to itself
DELTA = np.ones((1, 1), np.float32)
STRUCTURE = ("arm_amp", "bar_frac", "lop_amp", "clump_frac", "comp_frac")


def _asymmetry(img, k=2):
    """CAS asymmetry Σ|I − R(I)| / Σ|I| under a rotation by k·90° about the centre pixel."""
    return np.abs(img - np.rot90(img, k, axes=(-2, -1))).sum((-2, -1)) / np.abs(img).sum((-2, -1))


def _clumpiness(img, sigma_px=1.5, r_in=1.5):
    """CAS clumpiness Σ max(I − I_s, 0) / Σ I outside the centre (I_s: smoothed copy).

    As Conselice (2003) the central pixels are left out: a Sérsic cusp is not a clump.
    """
    smooth = gaussian_filter(img, (0, sigma_px, sigma_px))
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    outer = xx**2 + yy**2 > r_in**2
    return (np.maximum(img - smooth, 0) * outer).sum((-2, -1)) / img.sum((-2, -1))


def _only(p, idx, keep=(), face_on=False):
    """Galaxies ``idx`` of ``p``, centred, with every structure but ``keep`` switched off."""
    q = {k: v[idx].copy() for k, v in p.items()}
    q["center_x"][:] = q["center_y"][:] = 0.0
    for name in STRUCTURE:
        if name not in keep:
            q[name][:] = 0.0
    if face_on:
        q["e1"][:] = q["e2"][:] = 0.0
    return q


# Every draw has 8,000 distinct galaxies: the base draw compiles once per size.
N = 8_000


@pytest.fixture(scope="module")
def population():
    return draw_galaxies(jax.random.key(11), N, SCALE, 1.0, paired=False)


@pytest.fixture(scope="module")
def paired():
    """Centred galaxies with structure and their 90°-rotated partners (12 pairs)."""
    p = draw_galaxies(jax.random.key(2), 2 * N, SCALE, 1.0, paired=True)
    has = np.zeros(2 * N, bool)
    for name in STRUCTURE:
        has |= p[name] > 0
    pairs = np.flatnonzero(has[0::2])[:12] * 2
    return _only(p, np.stack([pairs, pairs + 1], axis=1).ravel(), STRUCTURE)


@pytest.fixture(scope="module")
def rendered(population, paired):
    """One render call (one compilation): groups of centred galaxies, noiseless, no PSF."""
    p = population
    regular = p["clump_frac"] <= 0.3
    groups = {
        "clumpy": np.flatnonzero(p["clump_frac"] > 0)[:60],
        "lopsided": np.flatnonzero((p["lop_amp"] > 0.15) & regular)[:40],
        "arms": np.flatnonzero((p["arm_amp"] > 0.3) & (p["r_disk"] > 0.3))[:40],
        "bar": np.flatnonzero((p["bar_frac"] > 0.1) & (p["r_disk"] > 0.3))[:40],
        "any": np.arange(80),
    }
    keep = {
        "clumpy": ("clump_frac",),
        "lopsided": ("lop_amp",),
        "arms": ("arm_amp",),
        "bar": ("bar_frac",),
        "any": STRUCTURE,
    }
    parts, names = [], []
    for name, idx in groups.items():
        face_on = name in ("arms", "bar")
        parts += [_only(p, idx, keep[name], face_on), _only(p, idx, (), face_on)]
        names += [(name, "structured", len(idx)), (name, "smooth", len(idx))]
    parts.append(paired)
    names.append(("pairs", "structured", len(paired["flux"])))
    batch = {k: np.concatenate([q[k] for q in parts]) for k in p}
    img = render_galaxies(batch, DELTA, SIZE, SCALE).astype(np.float64)
    out, start = {}, 0
    for name, kind, n in names:
        out[name, kind] = img[start : start + n]
        out[name, "flux"] = batch["flux"][start : start + n]
        start += n
    return out


def test_recipes_keep_the_drawn_flux(rendered):
    for name in ("any", "clumpy", "lopsided", "arms", "bar"):
        img, flux = rendered[name, "structured"], rendered[name, "flux"]
        np.testing.assert_allclose(img.sum((1, 2)), flux, rtol=2e-5)


def test_clumps_and_lopsided_disks_raise_asymmetry_and_clumpiness(rendered):
    clumpy, smooth = rendered["clumpy", "structured"], rendered["clumpy", "smooth"]
    assert np.all(_asymmetry(smooth) < 1e-3)  # bulge + disk: point-symmetric
    a, s = _asymmetry(clumpy), _clumpiness(clumpy)
    assert np.median(a) > 0.15 and np.mean(a > 0.05) > 0.9
    s0 = _clumpiness(smooth)
    assert np.median(s) > 3 * np.median(s0) and np.mean(s > s0) > 0.8  # clumps near the core hide
    lop = _asymmetry(rendered["lopsided", "structured"])
    assert np.median(lop) > 0.05 and np.all(_asymmetry(rendered["lopsided", "smooth"]) < 1e-3)


@pytest.mark.parametrize("name", ["arms", "bar"])
def test_arms_and_bars_are_m2_not_axisymmetric(rendered, name):
    img, smooth = rendered[name, "structured"], rendered[name, "smooth"]
    assert np.all(_asymmetry(smooth, k=1) < 1e-3)  # face-on bulge + disk: axisymmetric
    assert np.all(_asymmetry(img, k=1) > 0.03) and np.median(_asymmetry(img, k=1)) > 0.08
    assert np.all(_asymmetry(img, k=2) < 1e-3)  # an m = 2 pattern is point-symmetric


def test_structure_off_is_the_bulge_disk_population(population, rendered):
    base = draw_galaxies(jax.random.key(11), N, SCALE, 1.0, paired=False, morphology="bulge_disk")
    assert not set(base) & {"arm_amp", "clump_w"}
    regular = population["clump_frac"] <= 0.3
    for k in base:  # the same key draws the same base galaxies; irregulars lose the bulge
        same = population[k] if k != "bt" else np.where(regular, population["bt"], base["bt"])
        np.testing.assert_array_equal(base[k], same)
    base = {k: v[:80].copy() for k, v in base.items()}
    base["center_x"][:] = base["center_y"][:] = 0.0
    regular = regular[:80]
    old = render_galaxies(base, DELTA, SIZE, SCALE)
    np.testing.assert_allclose(rendered["any", "smooth"][regular], old[regular], rtol=1e-4,
                               atol=1e-6 * old.max())  # fmt: skip


def test_population_fractions(population):
    p = population
    irregular = p["clump_frac"] > 0.3
    disks = (p["bt"] < 0.5) & ~irregular
    assert abs(irregular.mean() - mo.P_IRREGULAR) < 0.01
    assert np.all(p["bt"][irregular] == 0)
    for name, frac in [
        ("clump_frac", mo.P_CLUMPS),
        ("arm_amp", mo.P_ARMS),
        ("bar_frac", mo.P_BAR),
        ("lop_amp", mo.P_LOPSIDED),
    ]:
        assert abs(np.mean(p[name][disks] > 0) - frac) < 0.02, name
        assert np.all(p[name][(p["bt"] >= 0.5) & ~irregular] == 0), name  # bulge-dominated
    assert abs(np.mean(p["comp_frac"] > 0) - mo.P_COMPANION) < 0.01
    n_clumps = (p["clump_w"] > 0).sum(axis=1)
    clumpy = disks & (p["clump_frac"] > 0)
    assert n_clumps[clumpy].min() == 1 and n_clumps[clumpy].max() == mo.N_CLUMPS
    assert n_clumps[irregular].min() == 3
    np.testing.assert_allclose(p["clump_w"][n_clumps > 0].sum(axis=1), 1.0)
    cf = p["clump_frac"][clumpy]
    assert 0.05 <= cf.min() and cf.max() <= 0.30
    pitch = np.rad2deg(np.abs(p["arm_pitch"]))
    assert 10 <= pitch.min() and pitch.max() <= 30 and 0.4 < np.mean(p["arm_pitch"] > 0) < 0.6
    ratio = p["comp_frac"] / (1 - p["comp_frac"])
    assert np.all((ratio[p["comp_frac"] > 0] >= 0.1) & (ratio[p["comp_frac"] > 0] <= 0.5))


def test_pair_partners_are_rotated_images(rendered):
    img = rendered["pairs", "structured"]
    even, odd = img[0::2], img[1::2]
    # +90° on the sky (x = column, y = row): odd[r, c] = even[n − 1 − c, r].
    np.testing.assert_allclose(odd, np.rot90(even, -1, axes=(1, 2)), atol=1e-4 * img.max())
    assert np.all(_asymmetry(even, k=1) > 1e-3)  # the check is not vacuous


def test_a_fixed_seed_reproduces(population):
    a = population
    b = draw_galaxies(jax.random.key(11), N, SCALE, 1.0, paired=False)
    c = draw_galaxies(jax.random.key(12), N, SCALE, 1.0, paired=False)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["clump_theta"], c["clump_theta"])


def test_snr_selection_keeps_a_similar_share(population):
    """The flux scale is unchanged: S/N 15–50 selects about as many structured galaxies.

    Space-like stamps as the default model's data (0.1″ pixels, 0.27″ Moffat PSF).
    """
    psf = moffat_psf(0.27, 3.0, SCALE, size=15)
    idx = np.arange(120)
    both = [_only(population, idx, STRUCTURE), _only(population, idx)]
    img = render_galaxies({k: np.concatenate([q[k] for q in both]) for k in both[0]}, psf, 48,
                          SCALE)  # fmt: skip
    snr = st.true_snr(img, 1.0)
    share = [np.mean((s >= 15) & (s <= 50)) for s in (snr[:120], snr[120:])]
    assert 0.3 < share[0] and abs(share[0] / share[1] - 1) < 0.2


def test_cli_rejects_an_unknown_morphology(tmp_path):
    res = run_cli("download-great3", "--synthetic", "--morphology", "spiral",
                  "--cache-dir", tmp_path / "c", "-o", tmp_path / "d.fits")  # fmt: skip
    assert res.exit_code == 1 and "morphology must be one of" in res.output
    assert "'spiral'" in res.output and not (tmp_path / "c").exists()
