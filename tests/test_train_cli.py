"""train-vae and fit-iaf through the real CLI on the tiny example config:
the VAE must reconstruct validation stamps to the noise level, the flow must beat
N(0, I) on held-out latents, and bad input must fail cleanly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli
from source_data import blob_dataset

from lensgen.errors import LensgenError
from lensgen.source import flow, vae
from lensgen.source.model import load_source_model, load_vae_params

pytestmark = pytest.mark.float32  # as users run the command (32-bit JAX)

TINY = Path(__file__).parents[1] / "examples" / "vae_tiny.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    blob_dataset(tmp / "d.fits", n=300, size=16)
    out = tmp / "run"
    res = run_cli(*["train-vae", str(TINY), "--dataset", str(tmp / "d.fits"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = run_cli(*["fit-iaf", str(out)])
    assert res.exit_code == 0, res.output
    return tmp, out


def test_tiny_training_reaches_noise_level(trained):
    _, out = trained
    hist = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 20
    assert hist[-1]["loss"] < 0.6 * hist[0]["loss"]
    assert hist[-1]["val_elbo"] > hist[0]["val_elbo"] + 50.0
    # Validation χ²/N of posterior-mean reconstructions: 1 is the noise floor.
    assert 0.8 < hist[-1]["val_chi2_per_pix"] <= 1.5
    for name in ("reconstructions", "loss", "samples_normal", "latents", "samples_flow"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000


def test_flow_beats_normal_on_encoded_latents(trained):
    _, out = trained
    rep = json.loads((out / "flow_report.json").read_text())
    assert rep["val_loglik_per_dim_flow"] > rep["val_loglik_per_dim_normal"] + 0.05
    for q in ("flux", "size", "abs_e"):
        assert np.isfinite(rep[f"w1_{q}_flow"]) and np.isfinite(rep[f"w1_{q}_normal"])


def test_source_model_contract(trained, key):
    _, out = trained
    m = load_source_model(out)
    assert m.has_flow and m.latent_dim == 8 and m.image_shape == (16, 16)
    assert m.pixel_scale == pytest.approx(0.2)
    header, arch, params = load_vae_params(out)
    z = jax.random.normal(key, (8,))
    ref = vae.decode(params, arch, z) * header["flux_scale"]
    np.testing.assert_allclose(m.decode(z), ref, rtol=1e-5, atol=1e-5)
    # Decoded flux is in physical units: comparable to the data's 50–150.
    flux = np.asarray(jax.vmap(m.decode)(m.sample(key, 64))).sum(axis=(1, 2))
    assert 20 < np.median(flux) < 300
    fheader, fparams = json.loads((out / "flow.json").read_text()), m.flow_params
    assert (fheader["kind"], fheader["format_version"]) == ("iaf", 2)
    assert fheader["latent_dim"] == 8
    assert float(m.prior_log_prob(z)) == pytest.approx(float(flow.log_prob(fparams, z)), rel=1e-5)
    u = jax.random.normal(key, (8,), jnp.float32)
    np.testing.assert_allclose(flow.to_normal(fparams, m.from_normal(u))[0], u, atol=1e-3)
    g = jax.jit(jax.grad(lambda v: jnp.sum(m.decode(v)) + m.prior_log_prob(v)))(z)
    assert g.shape == (8,) and np.all(np.isfinite(np.asarray(g)))
    plain = load_source_model(out, use_flow=False)
    assert not plain.has_flow
    assert float(plain.prior_log_prob(z)) == pytest.approx(float(flow.std_normal_log_prob(z)))


def test_bad_inputs_fail_cleanly(trained, tmp_path):
    tmp, out = trained
    sha = (out / "weights.npz").read_bytes()
    res = run_cli(*["train-vae", str(TINY), "--dataset", str(tmp / "d.fits"), "-o", str(out)])
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert (out / "weights.npz").read_bytes() == sha
    res = run_cli(*["train-vae", str(TINY), "--dataset", str(tmp_path / "no.fits"),
                              "-o", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 1 and "no.fits" in res.output and not (tmp_path / "r").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("latent_dim", "latent_dims"))
    res = run_cli(*["train-vae", str(bad), "-o", str(tmp_path / "r")])
    assert res.exit_code == 1 and "latent_dims" in res.output and "latent_dim'" in res.output
    bad.write_text(TINY.read_text().replace("batch_size = 16", "batch_size = 0"))
    res = run_cli(*["train-vae", str(bad), "-o", str(tmp_path / "r")])
    assert res.exit_code == 1 and "batch_size" in res.output
    res = run_cli(*["fit-iaf", str(tmp_path)])
    assert res.exit_code == 1 and "model.json" in res.output
    res = run_cli(*["fit-iaf", str(out)])
    assert res.exit_code == 1 and "already has a flow" in res.output
    nof = tmp_path / "noflow"
    nof.mkdir()
    for f in ("model.json", "weights.npz"):
        shutil.copy(out / f, nof / f)
    with pytest.raises(LensgenError, match="no latent flow"):
        load_source_model(nof, use_flow=True)
    data = (nof / "weights.npz").read_bytes()
    (nof / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(LensgenError, match="noflow.*corrupt"):
        load_source_model(nof)
