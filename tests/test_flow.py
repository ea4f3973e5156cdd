"""Latent flow (lensgen.source.flow, an inverse autoregressive flow): sampling is one
MADE pass per layer and autoregressive in the noise, the sequential inverse and its
implicit-function gradient are exact, the density is normalised and its log-determinant
matches autodiff, fitting beats Gaussians on a non-Gaussian density
(lensgen.source.fit.fit_flow), and flow files of another kind, format or dimension
are refused with one clear line (lensgen.source.model.load_flow)."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lensgen.errors import LensgenError
from lensgen.source import flow
from lensgen.source.fit import FlowConfig, fit_flow
from lensgen.source.model import default_model_path, load_source_model


def _random_flow(key, dim, n_layers=3, hidden=16, scale=0.5, dtype=jnp.float32):
    """A flow with every weight non-zero (init makes the last layer zero)."""
    p = flow.init_flow(key, dim, n_layers, hidden)
    # NumPy noise: eager jax.random per leaf shape would compile a kernel for each.
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x + scale * rng.standard_normal(x.shape), dtype), p
    )


def _primitives(jaxpr) -> list[str]:
    """Primitive names of a closed jaxpr, sub-jaxprs (pjit, custom rules) included."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for v in eqn.params.values():
            for sub in v if isinstance(v, (list, tuple)) else [v]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    names += _primitives(getattr(inner, "jaxpr", inner))
    return names


def test_sampling_is_one_pass_per_layer_and_density_is_sequential(key):
    p = _random_flow(key, 6, n_layers=3)
    u = jnp.zeros(6, jnp.float32)
    fwd = _primitives(jax.make_jaxpr(lambda v: flow.from_normal(p, v))(u).jaxpr)
    # 3 masked matmuls per MADE pass, one pass per layer, no loop.
    assert fwd.count("dot_general") == 3 * 3
    assert not {"while", "scan"} & set(fwd)
    inv = _primitives(jax.make_jaxpr(lambda v: flow.log_prob(p, v))(u).jaxpr)
    assert inv.count("while") == 3


def test_one_layer_is_autoregressive_in_the_noise(key):
    # z = s ⊙ (y ⊙ exp α(y) + μ(y)) + loc with y = reversed u: the MADE sees the noise side.
    p = _random_flow(key, 5, n_layers=1)
    u = jax.random.normal(jax.random.fold_in(key, 3), (5,), jnp.float32)
    y = u[::-1]
    mu, alpha = flow._made(p["layers"][0], y)
    ref = (y * jnp.exp(alpha) + mu) * jnp.exp(p["log_scale"]) + p["loc"]
    np.testing.assert_allclose(flow.from_normal(p, u), ref, rtol=1e-6, atol=1e-6)
    jac = np.asarray(jax.jacfwd(lambda v: flow.from_normal(p, v[::-1]))(y))
    assert np.all(np.triu(jac, 1) == 0.0)
    assert np.all(np.abs(np.tril(jac, -1))[np.tril_indices(5, -1)] > 1e-6)


def test_round_trip_float32(key):
    # Scale 0.2: far from the identity (|u − standardised z| up to ~60) but not so
    # ill-conditioned that float32 rounding of the inverse is amplified past 1e-5.
    p = _random_flow(key, 6, n_layers=4, scale=0.2)
    z = jax.random.normal(jax.random.fold_in(key, 2), (64, 6), jnp.float32)
    u = jax.jit(jax.vmap(lambda v: flow.to_normal(p, v)[0]))(z)
    assert u.dtype == jnp.float32
    back = jax.jit(jax.vmap(lambda v: flow.from_normal(p, v)))(u)
    np.testing.assert_allclose(back, z, rtol=1e-5, atol=1e-5)
    again = jax.jit(jax.vmap(lambda v: flow.to_normal(p, v)[0]))(back)
    np.testing.assert_allclose(again, u, rtol=1e-5, atol=1e-5)
    # Identity at init: the flow is the standardisation alone.
    p0 = flow.init_flow(key, 6, 4, 16)
    np.testing.assert_allclose(jax.vmap(lambda v: flow.from_normal(p0, v))(u), u, atol=0)


def test_log_prob_matches_autodiff_jacobian_of_sampling(key):
    # float64 (x64 is on in the tests): 3 random layers are ill-conditioned.
    p = _random_flow(key, 5, dtype=jnp.float64)
    inverse = jax.jit(lambda v: flow.to_normal(p, v))
    density = jax.jit(lambda v: flow.log_prob(p, v))
    jacobian = jax.jit(jax.jacfwd(lambda v: flow.from_normal(p, v)))
    for i in range(4):
        z = jax.random.normal(jax.random.fold_in(key, 10 + i), (5,), jnp.float64)
        u, logdet = inverse(z)
        sign, ref = np.linalg.slogdet(np.asarray(jacobian(u)))
        assert sign != 0
        assert float(logdet) == pytest.approx(-ref, abs=1e-8)
        expected = float(flow.std_normal_log_prob(u)) - ref
        assert float(density(z)) == pytest.approx(expected, abs=1e-8)


def test_log_prob_gradient_matches_finite_differences(key):
    # The inverse's derivative comes from the implicit function theorem (custom JVP):
    # check it against central differences in the parameters and the point, in both
    # forward and reverse mode.
    p = _random_flow(key, 4, dtype=jnp.float64)
    dp = _random_flow(jax.random.fold_in(key, 1), 4, dtype=jnp.float64)
    z, dz = jax.random.normal(jax.random.fold_in(key, 5), (2, 4), jnp.float64)

    @jax.jit
    def f(eps):
        q = jax.tree_util.tree_map(lambda a, b: a + eps * b, p, dp)
        return flow.log_prob(q, z + eps * dz)

    h = 1e-5
    fd = (float(f(h)) - float(f(-h))) / (2 * h)
    _, fwd = jax.jit(lambda e: jax.jvp(f, (e,), (1.0,)))(0.0)
    gp, gz = jax.jit(jax.grad(flow.log_prob, argnums=(0, 1)))(p, z)
    rev = sum(
        float(jnp.vdot(a, b))
        for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(dp), strict=True)
    ) + float(jnp.vdot(gz, dz))
    assert abs(fd) > 1e-3
    assert float(fwd) == pytest.approx(fd, rel=1e-6, abs=1e-7)
    assert rev == pytest.approx(fd, rel=1e-6, abs=1e-7)


def test_density_integrates_to_one(key):
    p = _random_flow(key, 2, scale=0.3)
    t = np.linspace(-12, 12, 481, dtype=np.float32)
    zz = jnp.asarray(np.stack(np.meshgrid(t, t), -1).reshape(-1, 2))
    dens = np.exp(np.asarray(jax.jit(jax.vmap(lambda v: flow.log_prob(p, v)))(zz), np.float64))
    total = dens.sum() * (t[1] - t[0]) ** 2
    assert total == pytest.approx(1.0, abs=0.01)


def _banana(key, n, dim):
    """(a, 0.6 a² − 0.6 + 0.35 ε) in the first two coordinates, then |N(0, 1)| − 0.8 each."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    a, eps = rng.standard_normal((2, n))
    rest = np.abs(rng.standard_normal((n, dim - 2))) - 0.8
    return np.column_stack([a, 0.6 * a**2 - 0.6 + 0.35 * eps, rest]).astype(np.float32)


@pytest.mark.parametrize("dim", [2, 4])
def test_flow_beats_gaussians_on_banana(key, dim):
    z_tr, z_va = (
        _banana(jax.random.fold_in(key, 0), 2000, dim),
        _banana(jax.random.fold_in(key, 1), 1000, dim),
    )
    cfg = FlowConfig(n_layers=2, hidden=32, lr=1e-2, batch_size=500, max_epochs=20, patience=5)
    fit = fit_flow(key, z_tr, z_va, cfg)
    # Held-out mean log_prob of the kept parameters, as fit_flow evaluated it.
    assert fit.best_epoch > 0
    ll_flow = -dim * fit.history[fit.best_epoch - 1]["val_nll_per_dim"]
    ll_std = float(jnp.mean(jax.vmap(flow.std_normal_log_prob)(jnp.asarray(z_va))))
    mean, cov = z_tr.mean(0), np.cov(z_tr.T)
    d = z_va - mean
    ll_gauss = float(np.mean(-0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
                             - 0.5 * np.log(np.linalg.det(2 * np.pi * cov))))  # fmt: skip
    # The flow gets ~0.95 nats above the best Gaussian in 2-D, ~1.15 in 4-D (each
    # half-normal coordinate's entropy is 0.19 nats below its Gaussian's).
    assert ll_flow > ll_gauss + 0.25 + 0.1 * (dim - 2)
    assert ll_flow > ll_std + 0.5
    # Samples reproduce the curved mean E[b | a] = 0.6 a² − 0.6.
    s = np.asarray(flow.sample(key, fit.params, 4000))
    inner = np.abs(s[:, 0]) < 0.5
    outer = np.abs(s[:, 0]) > 1.5
    assert s[outer, 1].mean() - s[inner, 1].mean() > 1.0


@pytest.fixture
def model_copy(tmp_path):
    """A copy of the embedded default model directory (VAE + IAF)."""
    out = tmp_path / "model"
    shutil.copytree(default_model_path(), out)
    return out


def _edit_header(path, **changes):
    header = json.loads((path / "flow.json").read_text())
    for k, v in changes.items():
        if v is None:
            header.pop(k)
        else:
            header[k] = v
    (path / "flow.json").write_text(json.dumps(header))


def test_embedded_flow_is_an_iaf(model_copy, key):
    header = json.loads((model_copy / "flow.json").read_text())
    assert (header["kind"], header["format_version"]) == (flow.KIND, flow.FORMAT_VERSION)
    m = load_source_model(model_copy)
    assert m.has_flow
    u = jax.random.normal(key, (m.latent_dim,), jnp.float32)
    np.testing.assert_allclose(flow.to_normal(m.flow_params, m.from_normal(u))[0], u, atol=1e-4)


def test_old_or_mismatched_flow_files_are_refused(model_copy):
    where = str(model_copy / "flow.json")
    _edit_header(model_copy, format_version=1, kind=None)  # a format-1 (MAF) header
    with pytest.raises(LensgenError) as err:
        load_source_model(model_copy)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(where)
    assert "flow format 1 (masked autoregressive)" in msg and "fit-iaf" in msg
    _edit_header(model_copy, format_version=2, kind="maf")
    with pytest.raises(LensgenError, match="flow format 2 .kind 'maf'. is not supported"):
        load_source_model(model_copy)
    _edit_header(model_copy, kind="iaf", latent_dim=8)
    with pytest.raises(LensgenError) as err:
        load_source_model(model_copy)
    assert str(err.value) == (
        f"{where}: latent flow of dimension 8 does not match the decoder's latent dimension 16"
    )
    _edit_header(model_copy, latent_dim=16, n_layers=None)
    with pytest.raises(LensgenError, match="corrupt flow header"):
        load_source_model(model_copy)
    # The flow is optional: without flow.json the prior is N(0, I), unless required.
    (model_copy / "flow.json").unlink()
    assert not load_source_model(model_copy).has_flow
    with pytest.raises(LensgenError, match="no latent flow"):
        load_source_model(model_copy, use_flow=True)
