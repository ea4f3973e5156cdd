"""`download-great3` on the real GREAT3 format: per-subfield PSFs, a split that cannot
leak rotated twins, multi-epoch coadds, refused branches, and training on each
stamp's own PSF. The synthetic branches follow the real format (scattered twins,
a PSF per subfield, stars between pixels, per-column `.txt` headers, 6 epochs)."""

from __future__ import annotations

import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits
from conftest import assert_refused, run_cli, snapshot

from lensgen.config import from_dict, with_overrides
from lensgen.data import stamps as st
from lensgen.data.build import Great3Config, build_great3_dataset
from lensgen.data.great3 import parse_branch
from lensgen.data.synthetic import make_branch_tarball
from lensgen.errors import ConfigError
from lensgen.io.dataset import StampDataset, make_catalog, read_dataset, write_dataset
from lensgen.lensing.psf_supersampling import kernel_fwhm
from lensgen.source import vae
from lensgen.source.train import TrainConfig, make_steps, prepare_data


def _build(tmp_path, tarball, branch, **kw):
    cfg = Great3Config(branch=branch, base_url=str(tarball), cache_dir=str(tmp_path / "cache"),
                       **{"snr_min": 5.0, "snr_max": 1e4, **kw})  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    build_great3_dataset(cfg, tmp_path / "ds.fits")
    return read_dataset(tmp_path / "ds.fits")  # as train-vae will see it


@pytest.fixture(scope="module")
def two_seeings(tmp_path_factory):
    """A control-ground-constant branch whose two subfields have 0.6″ and 0.95″ seeing."""
    tmp = tmp_path_factory.mktemp("seeing")
    branch = parse_branch("control-ground-constant")
    tarball, truths = make_branch_tarball(
        jax.random.key(7), tmp / "src", branch, 3, grid=8, fwhm=[0.6, 0.95, 0.75]
    )
    return tmp, tarball, truths


def test_each_stamp_keeps_the_psf_of_its_subfield(two_seeings, tmp_path):
    _, tarball, truths = two_seeings
    ds = _build(tmp_path, tarball, "control-ground-constant", val_fraction=0.3)
    assert ds.psf.shape[0] == 3 and len(np.unique(ds.catalog["subfield"])) == 3
    psfs = ds.stamp_psfs(np.arange(len(ds)))
    for sub in range(3):
        rows = ds.catalog["subfield"] == sub
        fwhm = np.array([kernel_fwhm(k, ds.pixel_scale, upsample=8) for k in psfs[rows]])
        assert np.all(np.abs(fwhm / truths[sub]["psf_fwhm"] - 1) < 0.05), (sub, fwhm)
        for k in psfs[rows]:  # centred: centroid on the middle pixel
            assert np.max(np.abs(np.array(st.centroid(k)) - k.shape[0] // 2)) <= 0.02
    again = read_dataset(tmp_path / "ds.fits")
    np.testing.assert_array_equal(again.psf, ds.psf)
    np.testing.assert_array_equal(again.catalog["psf"], ds.catalog["psf"])


def test_no_rotated_twin_crosses_the_split(two_seeings, tmp_path):
    _, tarball, truths = two_seeings
    ds = _build(tmp_path, tarball, "control-ground-constant", val_fraction=0.3, seed=4)
    sub, ids = ds.catalog["subfield"], ds.catalog["id"]
    keys = zip(sub.tolist(), ids.tolist(), strict=True)
    split = dict(zip(keys, ds.catalog["split"], strict=True))
    assert {"train", "val"} == set(split.values())
    pairs = 0
    for (s, i), side in split.items():
        k = i - s * 1_000_000  # grid position (the synthetic ids are subfield·10⁶ + k)
        twin = truths[s]["twin"][k]
        if (s, s * 1_000_000 + twin) in split:
            pairs += 1
            assert split[(s, s * 1_000_000 + twin)] == side
    assert pairs > 20
    # The old rule (stamps 2m and 2m + 1 are twins) would have split real twins.
    k = ids - sub * 1_000_000
    old_pair = sub * 1_000_000 + k // 2
    val = np.random.default_rng(0).permutation(np.unique(old_pair))[: len(np.unique(old_pair)) // 3]
    old_split = np.isin(old_pair, val)
    lookup = {(s, i): v for s, i, v in zip(sub, ids, old_split, strict=True)}
    crossed = sum(
        lookup.get((s, s * 1_000_000 + truths[s]["twin"][i - s * 1_000_000]), v) != v
        for s, i, v in zip(sub, ids, old_split, strict=True)
    )
    assert crossed > 0


def test_multi_epoch_branch_is_coadded(tmp_path):
    branch = parse_branch("multiepoch-ground-constant")
    tarball, truths = make_branch_tarball(jax.random.key(9), tmp_path / "src", branch, 2, grid=6)
    ds = _build(tmp_path, tarball, branch.name, val_fraction=0.3)
    assert ds.meta["epochs"] == 6 and ds.pixel_scale == 0.2
    for sub in (0, 1):
        rows = ds.catalog["subfield"] == sub
        # The coadd has the noise of the six epochs summed: σ_e √6 = σ.
        assert abs(np.median(ds.catalog["sigma"][rows]) / truths[sub]["sigma"] - 1) < 0.05
        # Its PSF is the mean of the epochs' PSFs.
        fwhm = kernel_fwhm(ds.psf[ds.catalog["psf"][rows][0]], ds.pixel_scale, upsample=8)
        assert abs(fwhm / np.mean(truths[sub]["psf_fwhm"]) - 1) < 0.05
        # Full flux: the S/N of the coadd is that of the galaxy at its whole flux.
        k = ds.catalog["id"][rows] - sub * 1_000_000
        true = st.true_snr(truths[sub]["clean"][k], truths[sub]["sigma"])
        assert abs(np.median(ds.catalog["snr"][rows] / true) - 1) < 0.1


def test_txt_only_catalogue_in_the_real_header_format(two_seeings, tmp_path):
    _, tarball, _ = two_seeings
    stripped = tmp_path / "src" / "control-ground-constant.tar.gz"
    stripped.parent.mkdir()
    with tarfile.open(tarball) as src, tarfile.open(stripped, "w:gz") as out:
        for member in src:
            if not member.name.endswith("galaxy_catalog-000.fits"):
                out.addfile(member, src.extractfile(member))
    ref = _build(tmp_path / "a", tarball, "control-ground-constant", val_fraction=0.3)
    got = _build(tmp_path / "b", stripped, "control-ground-constant", val_fraction=0.3)
    np.testing.assert_array_equal(got.catalog["id"], ref.catalog["id"])
    np.testing.assert_array_equal(got.stamps, ref.stamps)


@pytest.mark.parametrize("branch", ["variable_psf-ground-constant", "full-space-variable"])
def test_variable_psf_branches_are_refused(tmp_path, branch, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    res = run_cli("download-great3", "--synthetic", "-b", branch, "--cache-dir", "cache")
    assert_refused(res, before, branch, "varies over the field", "multiepoch-*")
    with pytest.raises(ConfigError, match="varies over the field"):
        make_branch_tarball(jax.random.key(0), tmp_path, parse_branch(branch), 1, grid=2)


def test_one_image_cannot_hold_a_leak_free_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    res = run_cli("download-great3", "--synthetic", "--max-images", "1", "--cache-dir", "cache")
    assert_refused(res, before, "max_images = 1", "val_fraction = 0")


def test_old_dataset_files_read_as_one_psf(tmp_path):
    """Files written before per-subfield PSFs: a 2-D PSF and a `pair` column."""
    n = 6
    cols = [fits.Column(name=c, format=f, array=a) for c, f, a in (
        ("subfield", "J", np.zeros(n, np.int32)), ("id", "K", np.arange(n)),
        ("x", "D", np.zeros(n)), ("y", "D", np.zeros(n)), ("sigma", "D", np.ones(n)),
        ("snr", "D", np.full(n, 20.0)), ("pair", "K", np.arange(n) // 2),
        ("split", "5A", np.array(["train"] * 4 + ["val"] * 2)))]  # fmt: skip
    primary = fits.PrimaryHDU()
    primary.header["PIXSCALE"] = 0.1
    kernel = np.zeros((5, 5), np.float32)
    kernel[2, 2] = 1.0
    fits.HDUList([primary, fits.ImageHDU(np.ones((n, 8, 8), np.float32), name="STAMPS"),
                  fits.BinTableHDU.from_columns(cols, name="CATALOG"),
                  fits.ImageHDU(kernel, name="PSF")]).writeto(tmp_path / "old.fits")  # fmt: skip
    ds = read_dataset(tmp_path / "old.fits")
    assert ds.psf.shape == (1, 5, 5) and (ds.catalog["psf"] == 0).all()
    assert ds.stamp_psfs(np.arange(3)).shape == (3, 5, 5)


MICRO = {"model": {"latent_dim": 2, "channels": [4], "dense": 8},
         "train": {"epochs": 1, "batch_size": 8, "steps_per_call": 2, "warmup_steps": 2,
                   "kl_warmup_steps": 4}}  # fmt: skip


def test_training_convolves_each_stamp_with_its_own_psf(tmp_path):
    rng = np.random.default_rng(0)
    n, size = 32, 8
    narrow = np.zeros((5, 5), np.float32)
    narrow[2, 2] = 1.0
    broad = np.full((5, 5), 1 / 25, np.float32)
    index = np.arange(n) % 2
    ds = StampDataset(
        rng.normal(5.0, 1.0, (n, size, size)).astype(np.float32),
        make_catalog(n, psf=index, split=np.where(np.arange(n) < 24, "train", "val")),
        0.1,
        np.stack([narrow, broad]),
    )
    write_dataset(tmp_path / "d.fits", ds)
    cfg = with_overrides(from_dict(TrainConfig, MICRO), {"data.path": str(tmp_path / "d.fits")})
    data = prepare_data(cfg)
    assert data.psf.shape == (2, 5, 5)
    np.testing.assert_array_equal(data.p_train, index[:24])
    np.testing.assert_array_equal(data.p_val, index[24:])
    arch = vae.Architecture((size, size), 2, (4,), 8, "relu")
    _, run, evaluate = make_steps(arch, cfg, 3, True)
    params = vae.init_params(jax.random.key(1), arch)
    x, s = jnp.asarray(data.x_val), jnp.asarray(data.s_val)
    _, chi2, _ = evaluate(params, jax.random.key(2), x, s, jnp.asarray(data.val_psfs()), 0.0)
    recon = jax.vmap(lambda im: vae.VAE(arch).apply(params, im))(x)
    own = jax.vmap(vae.psf_convolve)(recon, jnp.asarray(data.val_psfs()))
    manual = jnp.sum(((x - own) / s[:, None, None]) ** 2, axis=(1, 2)) / size**2
    np.testing.assert_allclose(chi2, manual, rtol=1e-5)
    swapped = jnp.asarray(data.psf[1 - data.p_val])
    _, chi2_swapped, _ = evaluate(params, jax.random.key(2), x, s, swapped, 0.0)
    assert not np.allclose(chi2_swapped, chi2, rtol=1e-3)


def test_without_a_stamp_budget_whole_subfields_are_kept(two_seeings, tmp_path):
    _, tarball, _ = two_seeings
    ds = _build(tmp_path, tarball, "control-ground-constant", val_fraction=0.3, n_stamps=None)
    m = ds.meta
    assert m["ncapped"] == 0 and len(ds) == m["nseen"] - m["nlowsnr"] - m["nhighsnr"] - m["nbad"]
    val = ds.catalog["split"] == "val"
    assert 0 < val.sum() < len(ds)
    assert set(ds.catalog["subfield"][val]).isdisjoint(ds.catalog["subfield"][~val])
