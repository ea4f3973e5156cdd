"""``train-vae``: ELBO, optimiser, jitted training loop, checkpoints, metrics.

The likelihood is Gaussian with each stamp's own noise σ_i (catalogue column
``sigma``) in physical flux units, so the reported ELBO is a bound on
log p(x) for x in the dataset's units:

    log p(x | z) = −½ Σ_p ((x_p − (P ⊛ g(z))_p) / σ)² − N log σ − ½ N log 2π,   (1)
    ELBO(x)     = E_q[log p(x | z)] − KL(q(z|x) ‖ N(0, I)),                       (2)

with g the decoder, P the PSF of the stamp's own subfield (when ``data.psf``
resolves to on: the decoder learns the galaxy *before* the PSF) and q(z|x) a
diagonal Gaussian. The
network works on images divided by one global ``flux_scale`` (the median peak
pixel of the training stamps); (1) is evaluated with σ in the same units plus
the constant −N log flux_scale, which is exactly the physical-unit density.

The loss minimised is −[E_q log p(x|z) − β_t KL] per pixel (β_t rises linearly
to ``train.beta`` over ``train.kl_warmup_steps``), averaged over a batch of
randomly flipped / 90°-rotated stamps (the PSF is turned with its stamp, since
R(g ⊛ P) = (R g) ⊛ (R P)). Adam with linear warm-up + cosine decay and global-norm
clipping (optax). ``train.steps_per_call`` steps run inside one jitted loop (one
compiled program for every chunk, the last one of an epoch included); the per-step
key is ``fold_in(key, step)`` and the batch order of epoch e comes from
``fold_in(key, e)``, so a resumed run repeats an uninterrupted one step for step.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lensgen import __version__
from lensgen.config import (
    SEED_MAX,
    dumps_toml,
    from_dict,
    load_config,
    load_toml,
    to_dict,
    with_overrides,
)
from lensgen.devices import constrain_leading, local_mesh, replicate
from lensgen.errors import ConfigError, LensgenError
from lensgen.io.atomic import atomic_write_text, check_output_dir
from lensgen.io.dataset import read_dataset
from lensgen.io.interrupt import check_interrupt, deferred_interrupt
from lensgen.io.modeldir import load_tree, save_tree
from lensgen.source import vae
from lensgen.source.figures import training_figures
from lensgen.source.model import write_model_header
from lensgen.source.vae import Architecture


@dataclass(frozen=True)
class DataSection:
    """[data]: ``path`` of the dataset file (relative to the working directory);
    ``psf``: convolve the decoder output with the dataset PSF inside the
    likelihood ("auto" = when the dataset has one); ``augment``: flips + 90° turns."""

    path: str = "dataset.fits"
    psf: Literal["auto", "on", "off"] = "auto"
    augment: bool = True


@dataclass(frozen=True)
class ModelSection:
    """[model]: latent size, feature maps per resolution level, dense width and the
    decoder's nonlinearity (:class:`lensgen.source.vae.Architecture`)."""

    latent_dim: int = 16
    channels: tuple[int, ...] = (16, 32, 64)
    dense: int = 128
    activation: Literal["relu", "gelu", "elu", "softplus"] = "relu"

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.dense < 1:
            raise ConfigError("latent_dim and dense must be ≥ 1")
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(
                f"channels must be a non-empty list of positive ints, got {self.channels}"
            )


@dataclass(frozen=True)
class TrainSection:
    """[train]: optimisation settings (lr in Adam units, steps counted in batches)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    final_lr_factor: float = 0.05
    clip_norm: float = 1.0
    beta: float = 1.0
    kl_warmup_steps: int = 500
    steps_per_call: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "steps_per_call"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"seed must be in [0, {SEED_MAX}], got {self.seed}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_steps < 0 or self.kl_warmup_steps < 0:
            raise ConfigError("warmup_steps and kl_warmup_steps must be ≥ 0")
        if not 0 < self.final_lr_factor <= 1:
            raise ConfigError(f"final_lr_factor must be in (0, 1], got {self.final_lr_factor}")
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ConfigError(f"clip_norm must be a positive number, got {self.clip_norm}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ConfigError(f"beta must be a number ≥ 0, got {self.beta}")


@dataclass(frozen=True)
class TrainConfig:
    """The resolved ``train-vae`` configuration ([data], [model], [train])."""

    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)


def load_train_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> TrainConfig:
    """Defaults ← TOML file ← dotted overrides (``{"train.epochs": 5}``)."""
    return load_config(TrainConfig, path, overrides, flags)


def resume_config(workdir: Path, given: TrainConfig | None, epochs: int | None) -> TrainConfig:
    """The saved config of ``workdir``; ``given`` must agree except ``train.epochs``."""
    saved_path = Path(workdir) / "config.toml"
    saved = from_dict(TrainConfig, load_toml(saved_path), str(saved_path))
    if given is not None:
        a, b = to_dict(saved), to_dict(given)
        for sec in a:
            for k in a[sec]:
                if (sec, k) != ("train", "epochs") and a[sec][k] != b[sec][k]:
                    raise ConfigError(
                        f"--resume: {sec}.{k} = {b[sec][k]!r} differs from the saved "
                        f"{a[sec][k]!r} in {saved_path}"
                    )
        epochs = epochs or given.train.epochs
    return with_overrides(saved, {"train.epochs": epochs})


class Prepared(NamedTuple):
    """Training arrays in flux-scale units (float32)."""

    x_train: np.ndarray
    s_train: np.ndarray
    x_val: np.ndarray
    s_val: np.ndarray
    psf: np.ndarray | None  # (P, k, k) odd kernels, one per subfield
    p_train: np.ndarray  # index of each training stamp's PSF
    p_val: np.ndarray
    flux_scale: float
    pixel_scale: float

    def val_psfs(self, rows=slice(None)) -> np.ndarray | None:
        """The PSF of each validation stamp in ``rows`` (a slice or indices), or None."""
        return None if self.psf is None else self.psf[self.p_val[rows]]


def prepare_data(cfg: TrainConfig) -> Prepared:
    """Read and check the dataset; normalise by the global flux scale."""
    path = Path(cfg.data.path)
    ds = read_dataset(path)
    tr, va = ds.split_indices("train"), ds.split_indices("val")
    if len(ds) == 0:
        raise LensgenError(f"{path}: the dataset holds no stamps")
    if len(tr) == 0:
        raise LensgenError(f"{path}: no training stamps (catalog split == 'train')")
    if len(tr) < cfg.train.batch_size:
        raise LensgenError(
            f"{path}: {len(tr)} training stamps < train.batch_size = {cfg.train.batch_size}"
        )
    if len(va) == 0:
        raise LensgenError(f"{path}: no validation stamps (catalog split == 'val')")
    stamps = np.asarray(ds.stamps, np.float32)
    sigma = np.asarray(ds.catalog["sigma"], np.float64)
    if not np.all(np.isfinite(stamps)):
        raise LensgenError(f"{path}: stamps contain NaN or Inf")
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise LensgenError(f"{path}: catalog column 'sigma' must be finite and > 0")
    H, W = ds.image_shape
    f = 2 ** len(cfg.model.channels)
    if H % f or W % f:
        raise ConfigError(
            f"model.channels = {list(cfg.model.channels)}: image size {H}×{W} must be "
            f"divisible by 2^{len(cfg.model.channels)} = {f}"
        )
    if cfg.data.augment and H != W:
        raise ConfigError(f"data.augment = true needs square stamps, got {H}×{W}")
    psf = None
    if cfg.data.psf == "on" or (cfg.data.psf == "auto" and ds.psf is not None):
        if ds.psf is None:
            raise ConfigError(f"data.psf = 'on' but {path} has no PSF")
        if ds.psf.shape[1] != ds.psf.shape[2]:
            raise LensgenError(f"{path}: PSF must be square, got {ds.psf.shape[1:]}")
        unit = ds.psf / ds.psf.sum(axis=(1, 2), keepdims=True)
        psf = np.asarray(jax.vmap(vae.odd_psf)(jnp.asarray(unit, jnp.float32)))
    index = np.asarray(ds.catalog["psf"], np.int32)
    scale = float(np.median(stamps[tr].max(axis=(1, 2))))
    if not scale > 0:
        raise LensgenError(f"{path}: median peak pixel of the training stamps is ≤ 0")
    norm = np.float32(1.0 / scale)
    return Prepared(
        stamps[tr] * norm, (sigma[tr] / scale).astype(np.float32),
        stamps[va] * norm, (sigma[va] / scale).astype(np.float32),
        psf, index[tr], index[va], scale, float(ds.pixel_scale),
    )  # fmt: skip


def image_terms(params, arch, key, x, sigma, psf):
    """χ² and KL of eq. (1)-(2) for one stamp, one reparameterised z draw."""
    mu, log_sigma = vae.encode(params, arch, x)
    z = mu + jnp.exp(log_sigma) * jax.random.normal(key, mu.shape, jnp.float32)
    model = vae.decode(params, arch, z)
    if psf is not None:
        model = vae.psf_convolve(model, psf)
    chi2 = jnp.sum(((x - model) / sigma) ** 2)
    kl = 0.5 * jnp.sum(mu**2 + jnp.exp(2 * log_sigma) - 1.0 - 2 * log_sigma)
    return chi2, kl


def log_norm(sigma: jnp.ndarray, n_pix: int, log_flux_scale: float) -> jnp.ndarray:
    """The constant −N log σ_phys − ½ N log 2π of eq. (1), per stamp."""
    return -n_pix * (jnp.log(sigma) + log_flux_scale + 0.5 * jnp.log(2 * jnp.pi))


def make_optimizer(cfg: TrainSection, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with linear warm-up + cosine decay, after global-norm clipping."""
    total = max(cfg.epochs * steps_per_epoch, cfg.warmup_steps + 1)
    sched = optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, cfg.warmup_steps, total, end_value=cfg.lr * cfg.final_lr_factor
    )
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(sched))


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jnp.ndarray  # int32 global step


@functools.lru_cache(maxsize=8)
def make_steps(
    arch: Architecture, cfg: TrainConfig, steps_per_epoch: int, use_psf: bool, mesh=None
):
    """Optimizer and jitted ``run(state, key, X, S, psf, PI, log_fs, idx, n) → (state, metrics)``.

    With a device ``mesh`` (:func:`lensgen.devices.local_mesh`) each step's batch is split
    over its devices and the parameters are replicated: data-parallel training, whose
    gradient is the same mean over the batch, summed in another order.

    ``psf`` is the (P, k, k) cube of PSFs and ``PI`` the index of each training
    stamp's PSF in it (unused without PSF).

    ``idx`` is (K, B) stamp indices, of which the first ``n`` rows are used: ``n``
    optimiser steps in one loop. ``n`` is a run-time value, so an epoch's shorter last
    chunk (padded to K rows) runs the same compiled program. Metrics are (4, K), valid
    in their first ``n`` columns.
    """
    optimizer = make_optimizer(cfg.train, steps_per_epoch)
    t = cfg.train
    n_pix = arch.image_shape[0] * arch.image_shape[1]

    def batch_loss(params, key, x, s, psfs, beta, log_fs):
        keys = jax.random.split(key, x.shape[0])
        chi2, kl = jax.vmap(image_terms, (None, None, 0, 0, 0, 0 if use_psf else None))(
            params, arch, keys, x, s[:, None, None], psfs
        )
        loss = jnp.mean(0.5 * chi2 + beta * kl) / n_pix
        elbo = -0.5 * chi2 - kl + log_norm(s, n_pix, log_fs)
        return loss, (jnp.mean(elbo), jnp.mean(chi2) / n_pix, jnp.mean(kl))

    def step(state, idx, key, X, S, psf, PI, log_fs):
        k_aug, k_z = jax.random.split(jax.random.fold_in(key, state.step))
        x, s = X[idx], S[idx]
        psfs = psf[PI[idx]] if use_psf else None
        if cfg.data.augment:
            turns = jax.random.randint(k_aug, idx.shape, 0, 8)
            x = jax.vmap(vae.dihedral)(x, turns)
            if use_psf:
                psfs = jax.vmap(vae.dihedral)(psfs, turns)
        x, s, psfs = constrain_leading((x, s, psfs), mesh)
        warm = jnp.minimum(1.0, (state.step + 1) / max(t.kl_warmup_steps, 1))
        beta = jnp.float32(t.beta) * warm.astype(jnp.float32)
        (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(
            state.params, k_z, x, s, psfs, beta, log_fs
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), jnp.stack([loss, *aux])

    @jax.jit
    def run(state, key, X, S, psf, PI, log_fs, idx, n):
        def body(i, carry):
            state, metrics = step(carry[0], idx[i], key, X, S, psf, PI, log_fs)
            return state, carry[1].at[:, i].set(metrics)

        return jax.lax.fori_loop(0, n, body, (state, jnp.zeros((4, idx.shape[0]), jnp.float32)))

    @jax.jit
    def evaluate(params, key, x, s, psf, log_fs):
        """Per-stamp ELBO (one z draw) and χ²/N of the posterior-mean reconstruction
        (``psf``: each stamp's PSF, (B, k, k), or None)."""
        keys = jax.random.split(key, x.shape[0])
        chi2_z, kl = jax.vmap(image_terms, (None, None, 0, 0, 0, 0 if use_psf else None))(
            params, arch, keys, x, s[:, None, None], psf
        )
        recon = jax.vmap(lambda im: vae.VAE(arch).apply(params, im))(x)
        if use_psf:
            recon = jax.vmap(vae.psf_convolve)(recon, psf)
        chi2 = jnp.sum(((x - recon) / s[:, None, None]) ** 2, axis=(1, 2))
        elbo = -0.5 * chi2_z - kl + log_norm(s, n_pix, log_fs)
        return elbo, chi2 / n_pix, kl

    return optimizer, run, evaluate


def evaluate_set(evaluate, params, key, x, s, psfs, log_fs, batch: int) -> dict[str, float]:
    """Mean validation metrics, in fixed-size (padded) batches to compile once
    (``psfs``: each stamp's PSF, or None)."""
    n = x.shape[0]
    pad = (-n) % batch
    xp, sp, pp = (
        None if a is None else np.concatenate([a, np.repeat(a[:1], pad, 0)]) for a in (x, s, psfs)
    )
    outs = [
        evaluate(
            params,
            jax.random.fold_in(key, i),
            xp[i : i + batch],
            sp[i : i + batch],
            None if pp is None else pp[i : i + batch],
            log_fs,
        )  # fmt: skip
        for i in range(0, n + pad, batch)
    ]
    elbo, chi2, kl = (np.concatenate([np.asarray(o[j]) for o in outs])[:n] for j in range(3))
    return {"val_elbo": float(elbo.mean()), "val_chi2_per_pix": float(chi2.mean()),
            "val_kl": float(kl.mean())}  # fmt: skip


class TrainResult(NamedTuple):
    """What :func:`train` returns: the model directory, final metrics and history."""

    workdir: Path
    epochs_done: int
    history: list[dict[str, float]]


ProgressFn = Callable[[int, int, str], None]
EpochFn = Callable[[dict[str, float]], None]

_RUN_FILES = ("checkpoint.npz", "model.json", "weights.npz", "metrics.jsonl", "config.toml")
_FLOW_FILES = ("flow.json", "flow.npz", "flow_report.json")


def check_workdir(workdir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an unusable run directory before any work: no side effects.

    The folder may not exist yet (it and missing parents are created), but neither
    it nor its nearest existing parent may be a file. Without ``resume`` or
    ``overwrite`` it must not hold a run; with ``resume`` it must hold a checkpoint.
    """
    workdir = Path(workdir)
    if workdir.exists() or workdir.parent.is_dir():
        check_output_dir(workdir)
    else:
        parent = next((p for p in workdir.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise LensgenError(f"cannot create folder {workdir}: {parent} is a file")
    figures = workdir / "figures"
    if figures.exists() and not figures.is_dir():
        raise LensgenError(f"{figures} is a file; train-vae writes its figures into that folder")
    if resume:
        if not (workdir / "checkpoint.npz").is_file():
            raise LensgenError(f"--resume: no checkpoint.npz in {workdir}")
    elif any((workdir / f).exists() for f in _RUN_FILES) and not overwrite:
        raise LensgenError(f"{workdir} already holds a training run; pass --resume or --overwrite")


def _prepare_workdir(workdir: Path) -> None:
    """Create a new run's folder; drop the flow and figures of a run it replaces."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LensgenError(f"cannot create folder {workdir}: {exc.strerror or exc}") from None
    for name in _FLOW_FILES:  # a flow fitted to an older VAE would be meaningless
        (workdir / name).unlink(missing_ok=True)
    shutil.rmtree(workdir / "figures", ignore_errors=True)


def _save(workdir, cfg, arch, data, state, key, epoch, history) -> None:

    header = {"epoch": epoch, "step": int(state.step), "history": history, "version": __version__}
    tree = {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "key_data": jax.random.key_data(key)}  # fmt: skip
    save_tree(workdir / "checkpoint.npz", tree, header=header)
    entry = save_tree(workdir / "weights.npz", state.params)
    write_model_header(workdir, arch, data.pixel_scale, data.flux_scale, data.psf is not None,
                       entry, {"epoch": epoch, "dataset": str(cfg.data.path)})  # fmt: skip
    lines = "".join(json.dumps(h, sort_keys=True) + "\n" for h in history)
    atomic_write_text(workdir / "metrics.jsonl", lines, overwrite=True)


def train(
    cfg: TrainConfig,
    workdir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    on_epoch: EpochFn | None = None,
    figures: bool = True,
) -> TrainResult:
    """Train the VAE of ``cfg`` into ``workdir`` (see the module docstring).

    A checkpoint (``checkpoint.npz``: params, optimizer state, step, key data,
    history) and the model (``weights.npz`` + ``model.json``) are rewritten
    atomically after every epoch (and once before the first), so Ctrl-C or a
    non-finite loss leaves the last good epoch on disk. Ctrl-C takes effect
    between jitted chunks (:mod:`lensgen.io.interrupt`), never between the
    files of one epoch. ``resume=True`` continues from it exactly.
    ``progress(done, total, status)`` is called after every jitted chunk of steps,
    ``on_epoch(metrics)`` after each epoch's checkpoint.
    """
    workdir = Path(workdir)
    check_workdir(workdir, resume, overwrite)
    data = prepare_data(cfg)  # before any file is written: a bad dataset changes nothing
    with deferred_interrupt():
        check_interrupt()
        return _train(cfg, workdir, data, resume, progress, on_epoch, figures)


def _train(cfg, workdir, data, resume, progress, on_epoch, figures) -> TrainResult:
    t = cfg.train
    arch = Architecture(data.x_train.shape[1:], cfg.model.latent_dim, cfg.model.channels,
                        cfg.model.dense, cfg.model.activation)  # fmt: skip
    steps_per_epoch = data.x_train.shape[0] // t.batch_size
    mesh = local_mesh(divides=t.batch_size)  # data-parallel over the local devices
    optimizer, run, evaluate = make_steps(arch, cfg, steps_per_epoch, data.psf is not None, mesh)
    log_fs = jnp.float32(math.log(data.flux_scale))
    key = jax.random.key(t.seed)
    k_init, k_perm, k_step, k_val = jax.random.split(key, 4)
    history: list[dict[str, float]] = []
    if resume:
        # Shapes only (no initialisation to compile): the checkpoint fills them.
        shapes = vae.param_shapes(arch)
        like = {"params": shapes, "opt_state": jax.eval_shape(optimizer.init, shapes),
                "step": jax.ShapeDtypeStruct((), jnp.int32),
                "key_data": jax.random.key_data(key)}  # fmt: skip
        tree, header = load_tree(workdir / "checkpoint.npz", like)
        if not np.array_equal(tree["key_data"], np.asarray(jax.random.key_data(key))):
            raise LensgenError(f"{workdir}/checkpoint.npz: key data differ from train.seed")
        state = TrainState(tree["params"], tree["opt_state"], jnp.asarray(tree["step"]))
        history, start = list(header["history"]), int(header["epoch"])
    else:
        params = vae.init_params(k_init, arch)
        state = TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32))
        check_interrupt()  # the last moment at which the run directory is untouched
        _prepare_workdir(workdir)
        atomic_write_text(workdir / "config.toml", dumps_toml(to_dict(cfg)), overwrite=True)
        _save(workdir, cfg, arch, data, state, key, 0, history)
        start = 0
    X, S = jnp.asarray(data.x_train), jnp.asarray(data.s_train)
    psf = None if data.psf is None else jnp.asarray(data.psf)
    PI = jnp.asarray(data.p_train)
    state, X, S, psf, PI = replicate((state, X, S, psf, PI), mesh)
    total = t.epochs * steps_per_epoch
    per_call = min(t.steps_per_call, steps_per_epoch)
    try:
        for epoch in range(start + 1, t.epochs + 1):
            t0 = time.perf_counter()
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_perm, epoch), X.shape[0]))
            idx = perm[: steps_per_epoch * t.batch_size].reshape(steps_per_epoch, t.batch_size)
            sums = np.zeros(4)
            for c in range(0, steps_per_epoch, per_call):
                check_interrupt()
                chunk = idx[c : c + per_call]
                n = len(chunk)
                chunk = np.concatenate([chunk, np.zeros((per_call - n, t.batch_size), chunk.dtype)])
                new, out = run(state, k_step, X, S, psf, PI, log_fs, jnp.asarray(chunk), n)
                out = np.asarray(out[:, :n].T, np.float64)
                if not np.all(np.isfinite(out)):
                    raise LensgenError(
                        f"non-finite loss at epoch {epoch}, step {int(state.step) + 1}: training "
                        f"stopped; {workdir / 'checkpoint.npz'} keeps epoch {epoch - 1} (lower "
                        f"train.lr or train.clip_norm, or check the dataset)"
                    )
                state = new
                sums += out.sum(axis=0)
                if progress is not None:
                    done = (epoch - 1) * steps_per_epoch + c + out.shape[0]
                    progress(done, total, f"epoch {epoch}/{t.epochs} loss {out[-1, 0]:.4f}")
            dt = time.perf_counter() - t0
            m = sums / steps_per_epoch
            row = {"epoch": epoch, "step": int(state.step), "loss": m[0], "train_elbo": m[1],
                   "train_chi2_per_pix": m[2], "train_kl": m[3],
                   "images_per_s": steps_per_epoch * t.batch_size / dt}  # fmt: skip
            row.update(evaluate_set(evaluate, state.params, k_val, data.x_val, data.s_val,
                                    data.val_psfs(), log_fs, t.batch_size))  # fmt: skip
            if not all(math.isfinite(v) for v in row.values()):
                raise LensgenError(
                    f"non-finite validation metrics after epoch {epoch}: training stopped; "
                    f"{workdir / 'checkpoint.npz'} keeps epoch {epoch - 1}"
                )
            history.append({k: float(v) if isinstance(v, float) else v for k, v in row.items()})
            _save(workdir, cfg, arch, data, state, key, epoch, history)
            if on_epoch is not None:
                on_epoch(history[-1])
        check_interrupt()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"training interrupted; {workdir} holds the checkpoint of the last finished epoch "
            "(continue with --resume)"
        ) from None
    if figures:
        training_figures(workdir, arch, state.params, data, history, jax.random.fold_in(key, 7))
    return TrainResult(workdir, len(history), history)
