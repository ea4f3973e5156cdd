"""``fit-iaf``: fit the latent flow to the aggregate posterior of a trained VAE.

1. Encode the training and validation stamps with q(z|x): posterior means or
   ``draws`` samples per stamp (the aggregate posterior q(z) = E_x q(z|x)).
2. Fit :mod:`lensgen.source.flow` by maximum likelihood (Adam, jitted epochs),
   early stopping on the validation latents; keep the best parameters. The
   likelihood of an inverse autoregressive flow needs its sequential inverse
   (up to ``dim`` MADE passes per layer); its gradient is taken by the implicit
   function theorem, not through the passes, and each epoch is one ``lax.scan``.
3. Report held-out log-likelihood per dimension under the flow and under
   N(0, I), and the galaxy-level quality figures of
   :mod:`lensgen.source.quality`; save ``flow.json`` + ``flow.npz`` +
   ``flow_report.json`` and figures into the model directory.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lensgen import __version__
from lensgen.config import SEED_MAX, load_config, to_dict
from lensgen.errors import ConfigError, LensgenError
from lensgen.io.atomic import check_outputs
from lensgen.io.interrupt import check_interrupt, deferred_interrupt
from lensgen.io.modeldir import save_tree, write_json
from lensgen.source import flow as flowlib
from lensgen.source import vae
from lensgen.source.figures import flow_figures
from lensgen.source.model import FLOW_FORMAT, load_vae_params
from lensgen.source.quality import quality_report
from lensgen.source.train import (
    DataSection,
    ModelSection,
    TrainConfig,
    TrainSection,
    prepare_data,
)


@dataclass(frozen=True)
class FlowConfig:
    """[flow] settings; ``dataset`` empty → the one recorded in the model dir."""

    dataset: str = ""
    latents: Literal["mean", "sample"] = "sample"
    draws: int = 4
    n_layers: int = 4
    hidden: int = 64
    lr: float = 2e-3
    batch_size: int = 256
    max_epochs: int = 300
    patience: int = 20
    seed: int = 0
    n_quality: int = 500

    def __post_init__(self) -> None:
        for name in ("draws", "n_layers", "hidden", "batch_size", "max_epochs", "patience",
                     "n_quality"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"seed must be in [0, {SEED_MAX}], got {self.seed}")


def load_flow_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> FlowConfig:
    """Defaults ← ``[flow]`` table of a TOML file ← dotted overrides (``flow.`` stripped)."""
    return load_config(FlowConfig, path, overrides, flags, table="flow")


class FlowFit(NamedTuple):
    """Best flow parameters and the held-out log-likelihood trace."""

    params: dict
    history: list[dict[str, float]]
    best_epoch: int


def fit_flow(key: jax.Array, z_train: np.ndarray, z_val: np.ndarray, cfg: FlowConfig) -> FlowFit:
    """Maximum-likelihood flow on ``z_train``; early stopping on ``z_val`` (float32)."""
    z_train = jnp.asarray(z_train, jnp.float32)
    z_val = jnp.asarray(z_val, jnp.float32)
    n, dim = z_train.shape
    k_init, k_perm = jax.random.split(key)
    params = flowlib.init_flow(k_init, dim, cfg.n_layers, cfg.hidden)
    params["loc"] = jnp.mean(z_train, 0)
    params["log_scale"] = jnp.log(jnp.std(z_train, 0) + 1e-6)
    batch = min(cfg.batch_size, n)
    steps = n // batch
    opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(cfg.lr))

    def nll(p, z):
        return -jnp.mean(jax.vmap(lambda v: flowlib.log_prob(p, v))(z))

    @jax.jit
    def epoch(p, s, k):
        idx = jax.random.permutation(k, n)[: steps * batch].reshape(steps, batch)

        def step(c, i):
            p, s = c
            loss, g = jax.value_and_grad(nll)(p, z_train[i])
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, s), losses = jax.lax.scan(step, (p, s), idx)
        return p, s, jnp.mean(losses), nll(p, z_val)

    state = opt.init(params)
    # Jitted: run eagerly, the sequential inverse would dispatch (and compile) op by op.
    best, best_val, best_epoch, history = params, float(jax.jit(nll)(params, z_val)), 0, []
    for e in range(1, cfg.max_epochs + 1):
        check_interrupt()
        params, state, tr, va = epoch(params, state, jax.random.fold_in(k_perm, e))
        tr, va = float(tr), float(va)
        if not np.isfinite(tr):
            raise LensgenError(f"flow fit: non-finite loss at epoch {e}; lower flow.lr")
        history.append({"epoch": e, "train_nll_per_dim": tr / dim, "val_nll_per_dim": va / dim})
        if va < best_val:
            best, best_val, best_epoch = params, va, e
        elif e - best_epoch >= cfg.patience:
            break
    return FlowFit(best, history, best_epoch)


def encode_split(key, params, arch, x, mode: str, draws: int, batch: int = 256) -> np.ndarray:
    """Latents of stamps ``x`` (flux-scale units): means, or ``draws`` samples each."""
    enc = jax.jit(jax.vmap(lambda im: vae.encode(params, arch, im)))
    mus, sig = [], []
    for i in range(0, x.shape[0], batch):
        check_interrupt()
        m, ls = enc(jnp.asarray(x[i : i + batch], jnp.float32))
        mus.append(np.asarray(m))
        sig.append(np.exp(np.asarray(ls)))
    mu, s = np.concatenate(mus), np.concatenate(sig)
    if mode == "mean":
        return mu
    eps = np.asarray(jax.random.normal(key, (draws, *mu.shape), jnp.float32))
    return (mu[None] + s[None] * eps).reshape(-1, mu.shape[1])


FLOW_FILES = ("flow.npz", "flow_report.json", "flow.json")
"""What ``fit-iaf`` writes into a model directory besides figures, in commit order:
``flow.json`` (which holds the SHA-256 of ``flow.npz``) last."""
FLOW_FIGURES = ("latents.png", "samples_flow.png")


def check_flow_outputs(model_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, outputs that exist (without ``overwrite``) or cannot be written."""
    if (model_dir / "flow.json").exists() and not overwrite:
        raise LensgenError(f"{model_dir} already has a flow (flow.json); pass --overwrite")
    check_outputs([model_dir / n for n in FLOW_FILES], overwrite)
    figures = model_dir / "figures"
    if figures.exists() and not figures.is_dir():
        raise LensgenError(f"{figures} is a file; fit-iaf writes its figures into that folder")
    if figures.is_dir():
        check_outputs([figures / n for n in FLOW_FIGURES], overwrite=True)


def _commit(stage: Path, model_dir: Path) -> None:
    """Move the staged flow files and figures into ``model_dir``, ``flow.json`` last.

    Runs with Ctrl-C deferred (no :func:`check_interrupt` here), so an interrupt
    cannot split the set; the model reads the flow only through ``flow.json``,
    which names the SHA-256 of ``flow.npz``.
    """
    try:
        (model_dir / "figures").mkdir(exist_ok=True)
        for name in FLOW_FIGURES:
            os.replace(stage / "figures" / name, model_dir / "figures" / name)
        for name in FLOW_FILES:
            os.replace(stage / name, model_dir / name)
    except OSError as exc:
        raise LensgenError(
            f"cannot write the flow into {model_dir}: {exc.strerror or exc}"
        ) from None


def fit_iaf(
    model_dir: str | Path,
    cfg: FlowConfig,
    *,
    overwrite: bool = False,
    on_status: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Fit the flow of ``model_dir`` and write it there; returns the report dict.

    Every check comes before the work. The flow files and figures are written to a
    staging folder inside ``model_dir`` and moved in together at the end, so an
    error or Ctrl-C (taken between epochs, :mod:`lensgen.io.interrupt`) leaves
    the previous flow, if any, untouched.
    """
    model_dir = Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise LensgenError(f"{model_dir} is a file, not a model directory (from train-vae)")
    header, arch, params = load_vae_params(model_dir)
    check_flow_outputs(model_dir, overwrite)
    dataset = cfg.dataset or header.get("dataset", "")
    if not dataset:
        raise ConfigError(f"{model_dir}: no dataset recorded; pass --dataset")
    data = prepare_data(TrainConfig(
        DataSection(dataset, "on" if header["psf_in_likelihood"] else "off", augment=False),
        ModelSection(arch.latent_dim, arch.channels, arch.dense),
        TrainSection(batch_size=1),
    ))  # fmt: skip
    if data.x_train.shape[1:] != arch.image_shape:
        raise LensgenError(f"{dataset}: stamps {data.x_train.shape[1:]} ≠ model {arch.image_shape}")
    with deferred_interrupt():
        check_interrupt()
        try:
            stage = Path(tempfile.mkdtemp(prefix=".fit-iaf-", dir=model_dir))
        except OSError as exc:
            raise LensgenError(f"cannot write into {model_dir}: {exc.strerror or exc}") from None
        try:
            report = _fit(stage, cfg, arch, params, data, str(dataset), on_status)
            check_interrupt()  # the last moment at which the model directory is untouched
            _commit(stage, model_dir)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return report


def _fit(stage, cfg, arch, params, data, dataset, on_status) -> dict[str, Any]:

    key = jax.random.key(cfg.seed)
    k_tr, k_va, k_fit, k_q = jax.random.split(key, 4)
    on_status(f"encoding {len(data.x_train)} training and {len(data.x_val)} validation stamps")
    z_tr = encode_split(k_tr, params, arch, data.x_train, cfg.latents, cfg.draws)
    z_va = encode_split(k_va, params, arch, data.x_val, cfg.latents, cfg.draws)
    on_status(f"fitting the flow to {len(z_tr)} latents (at most {cfg.max_epochs} epochs)")
    fit = fit_flow(k_fit, z_tr, z_va, cfg)
    check_interrupt()
    zv = jnp.asarray(z_va, jnp.float32)
    ll_flow = float(jnp.mean(jax.vmap(lambda v: flowlib.log_prob(fit.params, v))(zv)))
    ll_norm = float(jnp.mean(jax.vmap(flowlib.std_normal_log_prob)(zv)))
    report: dict[str, Any] = {
        "dataset": dataset, "n_train_latents": int(z_tr.shape[0]),
        "n_val_latents": int(z_va.shape[0]), "best_epoch": fit.best_epoch,
        "val_loglik_per_dim_flow": ll_flow / arch.latent_dim,
        "val_loglik_per_dim_normal": ll_norm / arch.latent_dim,
    }  # fmt: skip
    on_status("measuring galaxies drawn from the flow and from N(0, I)")
    report.update(quality_report(k_q, params, arch, fit.params, data, cfg.n_quality))
    check_interrupt()
    entry = save_tree(stage / "flow.npz", fit.params)
    write_json(stage / "flow.json", {
        "format": FLOW_FORMAT, "format_version": flowlib.FORMAT_VERSION, "kind": flowlib.KIND,
        "lensgen_version": __version__, "latent_dim": arch.latent_dim,
        "n_layers": cfg.n_layers, "hidden": cfg.hidden, "config": to_dict(cfg), "weights": entry,
    })  # fmt: skip
    write_json(stage / "flow_report.json", {**report, "history": fit.history})
    flow_figures(stage, k_q, params, arch, fit.params, z_tr, data)
    return report
