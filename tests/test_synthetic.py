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
    cat = st.read_galaxy_catalog(folder / "galaxy_catalog-001.fits")
    txt = st.read_galaxy_catalog(folder / "galaxy_catalog-001.txt")
    np.testing.assert_array_equal(cat["x"], txt["x"]) and np.testing.assert_array_equal(
        cat["id"], txt["id"]
    )
    assert cat["x"][:3].tolist() == [24.0, 72.0, 120.0] and cat["y"][6] == 72.0
    star = fits.getdata(folder / "starfield_image-001-0.fits")
    assert star.shape == (144, 144) and np.unravel_index(np.argmax(star[:48, :48]), (48, 48)) == (
        24,
        24,
    )
    # The noise is what the truth says, and stamps are the noiseless galaxies plus noise.
    cut, _, _ = st.cut_stamps(image, cat["x"], cat["y"], 48)
    resid = cut - truths[1]["clean"]
    assert abs(resid.std() / truths[1]["sigma"] - 1) < 0.02
    assert 0.6 <= truths[1]["psf_fwhm"] <= 0.9


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
    assert 0 < len(ds) < 200 and ds.meta["branch"] == "control-ground-constant"
    assert ds.catalog["snr"].min() >= 15 and ds.catalog["snr"].max() <= 50
    assert len(ds.split_indices("val")) > 0
    again = run_cli(*["download-great3", "--summary", str(out)])
    assert again.exit_code == 0 and f"kept {len(ds)}" in again.output
    res = run_cli(*args)  # refuses to overwrite
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = run_cli(*["download-great3", "--branch", "control-ground", "-o", str(out)])
    assert res.exit_code == 1 and "unknown GREAT3 branch" in res.output
