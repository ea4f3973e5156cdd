"""The offline GREAT3-format generator and the CLI built on it."""

from __future__ import annotations

import tarfile

import jax
import numpy as np
from astropy.io import fits
from conftest import run_cli

from lensgen.data import stamps as st
from lensgen.data.great3 import parse_branch
from lensgen.data.synthetic import apply_shear, draw_galaxies, make_branch_tarball
from lensgen.io.dataset import read_dataset


def test_branch_tarball_has_great3_layout(tmp_path):
    branch = parse_branch("control-ground-constant")
    tarball, truths = make_branch_tarball(jax.random.key(0), tmp_path, branch, 2, grid=6)
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "x", filter="data")
    assert names[:4] == [
        f"control/ground/constant/{n}"
        for n in (
            "galaxy_catalog-000.fits",
            "galaxy_catalog-000.txt",
            "image-000-0.fits",
            "starfield_image-000-0.fits",
        )
    ]
    folder = tmp_path / "x" / "control" / "ground" / "constant"
    image = fits.getdata(folder / "image-001-0.fits")
    assert image.shape == (288, 288) and image.dtype.kind == "f" and image.dtype.itemsize == 4
    # The .txt catalogue has GREAT3's header: one "# name" line per column.
    assert (folder / "galaxy_catalog-001.txt").read_text().startswith("# x\n# y\n# ID\n")
    cat = st.read_galaxy_catalog(folder / "galaxy_catalog-001.fits")
    txt = st.read_galaxy_catalog(folder / "galaxy_catalog-001.txt")
    np.testing.assert_array_equal(cat["x"], txt["x"]) and np.testing.assert_array_equal(
        cat["id"], txt["id"]
    )
    assert cat["x"][:3].tolist() == [24.0, 72.0, 120.0] and cat["y"][6] == 72.0
    # The lower-left star sits at the stamp's true centre, between pixels.
    star = fits.getdata(folder / "starfield_image-001-0.fits")
    assert star.shape == (144, 144)
    cy, cx = st.centroid(star[:48, :48])
    assert abs(cy - 23.5) < 1e-3 and abs(cx - 23.5) < 1e-3
    # The noise is what the truth says, and stamps are the noiseless galaxies plus noise.
    cut, _, _ = st.cut_stamps(image, cat["x"], cat["y"], 48)
    resid = cut - truths[1]["clean"]
    assert abs(resid.std() / truths[1]["sigma"] - 1) < 0.02
    assert 0.5 <= truths[1]["psf_fwhm"] <= 0.95


def test_rotated_twins_are_scattered_over_the_grid(tmp_path):
    """As in GREAT3: a random permutation places the twins, not neighbouring cells."""
    branch = parse_branch("control-ground-constant")
    _, truths = make_branch_tarball(jax.random.key(1), tmp_path, branch, 1, grid=10)
    twin, p = truths[0]["twin"], truths[0]["params"]
    k = np.arange(100)
    assert (twin >= 0).all() and (twin[twin] == k).all() and (twin != k).all()
    for name in ("r_disk", "flux", "bt"):  # the same galaxy (rotated, then both sheared)
        np.testing.assert_allclose(p[name][twin], p[name])
    assert not np.allclose(p["e1"][twin], p["e1"])
    assert np.mean(np.abs(twin - k) == 1) < 0.2  # neighbours only by chance


def test_multi_epoch_branch_layout(tmp_path):
    branch = parse_branch("multiepoch-ground-constant")
    tarball, truths = make_branch_tarball(jax.random.key(2), tmp_path, branch, 1, grid=4)
    with tarfile.open(tarball) as tar:
        names = [n.split("/")[-1] for n in tar.getnames()]
        tar.extractall(tmp_path / "x", filter="data")
    for e in range(6):
        assert {f"image-000-{e}.fits", f"starfield_image-000-{e}.fits",
                f"epoch_dither-000-{e}.txt"} <= set(names)  # fmt: skip
    folder = tmp_path / "x" / "multiepoch" / "ground" / "constant"
    dx, dy = np.loadtxt(folder / "epoch_dither-000-3.txt", comments="#")
    np.testing.assert_allclose((dx, dy), truths[0]["dithers"][3], atol=1e-6)
    fw = truths[0]["psf_fwhm"]
    assert len(fw) == 6 and np.ptp(fw) > 0  # each epoch its own PSF
    # Each epoch holds a sixth of the flux and σ/√6 of noise.
    image = fits.getdata(folder / "image-000-2.fits")
    flux = image.reshape(4, 48, 4, 48).sum(axis=(1, 3)).T.ravel()
    total = truths[0]["params"]["flux"]
    assert abs(np.median(flux / total) * 6 - 1) < 0.1


def test_galaxy_distributions_and_pairs():
    # The base population; the structured one only adds to it (test_synthetic_morphology.py).
    p = draw_galaxies(jax.random.key(4), 4000, 0.2, 1.0, paired=True, morphology="bulge_disk")
    np.testing.assert_allclose(p["e1"][1::2], -p["e1"][0::2])
    np.testing.assert_allclose(p["r_disk"][1::2], p["r_disk"][0::2])
    assert 0.25 < np.median(p["r_disk"]) < 0.35 and p["r_disk"].min() >= 0.08
    assert 0.3 < np.mean(p["bt"] == 0) < 0.4 and p["n_bulge"].min() >= 2.5
    e = np.hypot(p["e1"], p["e2"])
    assert 0.2 < np.median(e) < 0.3 and e.max() <= 0.7
    # Rotated partners have opposite ellipticity: their mean cancels shape noise.
    s1, s2 = apply_shear(p["e1"], p["e2"], 0.03, 0.0)
    assert abs(s1.mean() - 0.03) < 0.005 and abs(s2.mean()) < 0.005


def test_cli_synthetic_then_summary(tmp_path):
    out = tmp_path / "ds.fits"
    args = [
        "download-great3",
        "--synthetic",
        "--synthetic-grid",
        "10",
        "--max-images",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        "-o",
        str(out),
        "--seed",
        "3",
    ]
    res = run_cli(*args)
    assert res.exit_code == 0, res.output
    assert "S/N histogram" in res.output and f"wrote {out}" in res.output
    ds = read_dataset(out)
    # The default branch: real_galaxy-space-constant, 96 × 96 stamps of 0.05″ rebinned by 2.
    assert 0 < len(ds) < 200 and ds.meta["branch"] == "real_galaxy-space-constant"
    assert ds.image_shape == (48, 48) and ds.pixel_scale == 0.1 and ds.meta["rebin"] == 2
    assert ds.catalog["snr"].min() >= 15 and ds.catalog["snr"].max() <= 50
    assert len(ds.split_indices("val")) > 0
    assert "split by subfield: train 1, val 1 subfield(s)" in res.output
    assert "PSF FWHM over 2 PSF(s)" in res.output
    again = run_cli(*["download-great3", "--summary", str(out)])
    assert again.exit_code == 0 and f"kept {len(ds)}" in again.output
    res = run_cli(*args)  # refuses to overwrite
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = run_cli(*["download-great3", "--branch", "control-ground", "-o", str(out)])
    assert res.exit_code == 1 and "unknown GREAT3 branch" in res.output
