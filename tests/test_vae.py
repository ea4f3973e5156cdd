"""VAE pieces: PSF convolution, augmentation physics, likelihood normalisation,
weights files, config errors, exact resume, NaN stop (lensgen.source.vae/train)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import convolve2d
from scipy.stats import norm
from source_data import blob_dataset

from lensgen.config import from_dict, with_overrides
from lensgen.errors import ConfigError, LensgenError
from lensgen.io.modeldir import load_tree, save_tree
from lensgen.source import vae
from lensgen.source.model import load_source_model
from lensgen.source.train import (
    TrainConfig,
    image_terms,
    load_train_config,
    log_norm,
    train,
)


def test_psf_convolve_matches_direct_convolution():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(16, 16)).astype(np.float32)
    k = rng.uniform(size=(5, 5)).astype(np.float32)
    ours = np.asarray(vae.psf_convolve(jnp.asarray(img), jnp.asarray(k)))
    np.testing.assert_allclose(ours, convolve2d(img, k, mode="same"), atol=1e-4)
    # Even kernel: a delta at (k//2, k//2) is the identity (GREAT3 centre convention).
    delta = np.zeros((4, 4), np.float32)
    delta[2, 2] = 1.0
    np.testing.assert_allclose(
        vae.psf_convolve(jnp.asarray(img), jnp.asarray(delta)), img, atol=1e-5
    )
    np.testing.assert_allclose(vae.odd_psf(jnp.asarray(delta)).shape, (5, 5))


@pytest.mark.parametrize("turn", range(8))
def test_augmentation_turns_psf_with_stamp(turn):
    # R(g ⊛ P) = (R g) ⊛ (R P) holds exactly only if P turns about its centre pixel.
    rng = np.random.default_rng(turn)
    g = jnp.asarray(rng.normal(size=(12, 12)), jnp.float32)
    p = vae.odd_psf(jnp.asarray(rng.uniform(size=(6, 6)), jnp.float32))
    lhs = vae.dihedral(vae.psf_convolve(g, p), turn)
    rhs = vae.psf_convolve(vae.dihedral(g, turn), vae.dihedral(p, turn))
    np.testing.assert_allclose(lhs, rhs, atol=1e-5)


def test_initialisation_is_flax_lecun_normal_drawn_once():
    """Kernels: normal truncated at ±2σ with variance 1/fan_in, as flax draws them (on
    flax's parameter tree, shapes and dtypes); biases zero; another key, other values."""
    arch = vae.Architecture((32, 32), 8, (16, 32), 128)
    ours = vae.init_params(jax.random.key(0), arch)
    shapes = vae.param_shapes(arch)  # flax's own tree, abstractly (nothing drawn)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(shapes)
    pairs = zip(
        jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves(shapes), strict=True
    )
    for (path, a), b in pairs:
        assert a.shape == b.shape and a.dtype == b.dtype == jnp.float32, path
        a = np.asarray(a)
        if path[-1].key == "bias":
            assert not a.any(), path
            continue
        sd = 1.0 / np.sqrt(np.prod(a.shape[:-1]))
        # The sample σ of n draws is within ~4/√(2n) of the truncated normal's exact σ.
        assert abs(a.std() / sd - 1.0) < 4.0 / np.sqrt(2 * a.size) + 0.01, path
        assert abs(a.mean()) < 4.0 * sd / np.sqrt(a.size), path
        assert np.abs(a).max() <= 2.0 * sd / 0.87962566103423978 * (1 + 1e-6), path
    other = vae.init_params(jax.random.key(2), arch)["params"]["decoder"]["Dense_0"]["kernel"]
    assert not np.allclose(other, ours["params"]["decoder"]["Dense_0"]["kernel"])


def test_likelihood_is_physical_gaussian_density():
    """−χ²/2 + log_norm of eq. (1), in flux-scale units, is Σ log N(x; m, σ) in physical units."""
    rng = np.random.default_rng(0)
    x, m = rng.normal(size=(2, 8, 8))
    sigma, scale = 0.7, 5.0
    chi2 = np.sum(((x - m) / sigma) ** 2)
    ours = -0.5 * chi2 + float(log_norm(jnp.asarray(sigma), 64, np.log(scale)))
    ref = norm.logpdf(scale * x, scale * m, scale * sigma).sum()
    assert ours == pytest.approx(ref, rel=1e-10)


def test_image_terms_kl_and_chi2():
    arch = vae.Architecture((8, 8), 2, (4,), 8)
    params = vae.init_params(jax.random.key(3), arch)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8)), jnp.float32)
    chi2, kl = image_terms(params, arch, jax.random.key(0), x, jnp.float32(0.5), None)
    mu, log_s = vae.encode(params, arch, x)
    kl_ref = 0.5 * np.sum(
        np.asarray(mu) ** 2 + np.exp(2 * np.asarray(log_s)) - 1 - 2 * np.asarray(log_s)
    )
    assert float(kl) == pytest.approx(kl_ref, rel=1e-5)
    z = mu + jnp.exp(log_s) * jax.random.normal(jax.random.key(0), (2,), jnp.float32)
    model = vae.decode(params, arch, z)
    assert float(chi2) == pytest.approx(float(jnp.sum(((x - model) / 0.5) ** 2)), rel=1e-5)


def test_weights_roundtrip_and_corruption(tmp_path):
    arch = vae.Architecture((8, 8), 3, (4,), 8)
    params = vae.init_params(jax.random.key(0), arch)
    entry = save_tree(tmp_path / "w.npz", params)
    back, _ = load_tree(tmp_path / "w.npz", vae.param_shapes(arch), entry["sha256"])
    for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    data = bytearray((tmp_path / "w.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "w.npz").write_bytes(bytes(data))
    with pytest.raises(LensgenError, match="corrupt"):
        load_tree(tmp_path / "w.npz", vae.param_shapes(arch), entry["sha256"])
    (tmp_path / "w.npz").write_bytes(bytes(data[:100]))
    with pytest.raises(LensgenError, match="corrupt weights"):
        load_tree(tmp_path / "w.npz", vae.param_shapes(arch))
    other = vae.Architecture((8, 8), 5, (4,), 8)
    save_tree(tmp_path / "v.npz", params)
    with pytest.raises(LensgenError, match="shape"):
        load_tree(tmp_path / "v.npz", vae.param_shapes(other))


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        load_train_config(bad)
    bad.write_text("[train]\nlr = -1.0\n")
    with pytest.raises(ConfigError, match="lr must be a positive"):
        load_train_config(bad)
    bad.write_text('[model]\nchannels = "many"\n')
    with pytest.raises(ConfigError, match="model.channels"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="psf"):
        from_dict(TrainConfig, {"data": {"psf": "maybe"}})


MICRO = {"model": {"latent_dim": 2, "channels": [4], "dense": 8},
         "train": {"epochs": 2, "batch_size": 16, "steps_per_call": 2, "warmup_steps": 2,
                   "kl_warmup_steps": 4, "lr": 3e-3}}  # fmt: skip


def test_resume_after_interrupt_is_exact(tmp_path):
    blob_dataset(tmp_path / "d.fits", n=60, size=8)
    cfg = with_overrides(from_dict(TrainConfig, MICRO), {"data.path": str(tmp_path / "d.fits")})
    full = train(cfg, tmp_path / "full", figures=False)

    def stop(m):
        if m["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="--resume"):
        train(cfg, tmp_path / "cut", on_epoch=stop, figures=False)
    # Ctrl-C left a usable model and a checkpoint of epoch 1.
    assert load_source_model(tmp_path / "cut").decode(jnp.zeros(2)).shape == (8, 8)
    resumed = train(cfg, tmp_path / "cut", resume=True, figures=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(full.history, resumed.history, strict=True):
        for k in ("loss", "val_elbo", "val_chi2_per_pix"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6)
    wa = np.load(tmp_path / "full" / "weights.npz")
    wb = np.load(tmp_path / "cut" / "weights.npz")
    for name in wa.files:
        np.testing.assert_allclose(wa[name], wb[name], rtol=1e-6, atol=1e-7)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]
    # A finished run is not overwritten without --overwrite.
    with pytest.raises(LensgenError, match="--overwrite"):
        train(cfg, tmp_path / "full", figures=False)


def test_nan_stops_cleanly_keeping_last_good_checkpoint(tmp_path):
    blob_dataset(tmp_path / "d.fits", n=60, size=8)
    micro = {**MICRO, "train": {**MICRO["train"], "lr": 1e30, "clip_norm": 1e30}}
    cfg = with_overrides(from_dict(TrainConfig, micro), {"data.path": str(tmp_path / "d.fits")})
    with pytest.raises(LensgenError, match="non-finite .* epoch 1.*keeps epoch 0"):
        train(cfg, tmp_path / "run", figures=False)
    ckpt = np.load(tmp_path / "run" / "checkpoint.npz")
    assert int(ckpt["step"]) == 0
    model = load_source_model(tmp_path / "run")
    assert np.all(np.isfinite(np.asarray(model.decode(jnp.ones(2)))))


def test_missing_or_invalid_dataset(tmp_path):
    cfg = with_overrides(TrainConfig(), {"data.path": str(tmp_path / "nope.fits")})
    with pytest.raises(LensgenError, match="nope.fits"):
        train(cfg, tmp_path / "run")
    blob_dataset(tmp_path / "d.fits", n=40, size=12)
    cfg = with_overrides(
        TrainConfig(), {"data.path": str(tmp_path / "d.fits"), "train.batch_size": 8}
    )
    with pytest.raises(ConfigError, match="divisible"):
        train(cfg, tmp_path / "run2")
