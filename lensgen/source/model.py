"""The model directory format and :class:`SourceModel`, what simulate/infer use.

A model directory (written by ``train-vae``, completed by ``fit-iaf``) holds:

* ``model.json``: format tag, architecture, pixel scale (arcsec/pixel), flux
  scale, whether the PSF was inside the likelihood, and the leaf list + SHA-256
  of ``weights.npz``;
* ``weights.npz``: VAE parameters, leaf by leaf (no pickle);
* ``flow.json`` + ``flow.npz`` (after ``fit-iaf``): the latent flow, same scheme;
* ``config.toml``, ``checkpoint.npz``, ``metrics.jsonl``, ``figures/``: training
  provenance, not needed by :func:`load_source_model`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from lensgen import __version__
from lensgen.errors import LensgenError
from lensgen.io.modeldir import load_tree, read_json, write_json
from lensgen.source import flow as flowlib
from lensgen.source import vae
from lensgen.source.vae import Architecture

MODEL_FORMAT = "lensgen-source-model"
FLOW_FORMAT = "lensgen-latent-flow"


def write_model_header(
    workdir: Path, arch: Architecture, pixel_scale: float, flux_scale: float,
    psf_in_likelihood: bool, weights: dict[str, Any], extra: dict[str, Any],
) -> None:  # fmt: skip
    """Write ``model.json`` describing ``weights.npz`` (see the module docstring)."""
    header = {
        "format": MODEL_FORMAT, "format_version": 1, "lensgen_version": __version__,
        "architecture": {"image_shape": list(arch.image_shape), "latent_dim": arch.latent_dim,
                         "channels": list(arch.channels), "dense": arch.dense},
        "pixel_scale": float(pixel_scale), "flux_scale": float(flux_scale),
        "psf_in_likelihood": bool(psf_in_likelihood), "weights": weights, **extra,
    }  # fmt: skip
    write_json(Path(workdir) / "model.json", header)


def read_model_header(path: Path) -> tuple[dict[str, Any], Architecture]:
    """``model.json`` of a model directory and the architecture it describes."""
    path = Path(path)
    if not path.is_dir():
        raise LensgenError(f"model directory not found: {path}")
    header = read_json(path / "model.json", "model header (model.json)")
    try:
        if header["format"] != MODEL_FORMAT:
            raise LensgenError(f"{path / 'model.json'}: not a lensgen source model")
        a = header["architecture"]
        arch = Architecture(
            (int(a["image_shape"][0]), int(a["image_shape"][1])),
            int(a["latent_dim"]), tuple(int(c) for c in a["channels"]), int(a["dense"]),
        )  # fmt: skip
        float(header["pixel_scale"]), float(header["flux_scale"]), header["weights"]["sha256"]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise LensgenError(f"{path / 'model.json'}: corrupt model header ({exc!r})") from None
    return header, arch


def load_vae_params(path: Path) -> tuple[dict[str, Any], Architecture, dict]:
    """Header, architecture and verified VAE parameters of a model directory."""
    header, arch = read_model_header(path)
    params, _ = load_tree(path / "weights.npz", vae.param_shapes(arch), header["weights"]["sha256"])
    return header, arch, params


def load_flow(path: Path, latent_dim: int) -> tuple[dict[str, Any], Any]:
    """Header and verified parameters of ``flow.npz`` in a model directory."""
    header = read_json(path / "flow.json", "flow header (flow.json)")
    try:
        if header["format"] != FLOW_FORMAT or int(header["latent_dim"]) != latent_dim:
            raise LensgenError(f"{path / 'flow.json'}: flow does not match the model")
        like = flowlib.param_shapes(latent_dim, int(header["n_layers"]), int(header["hidden"]))
        sha = header["weights"]["sha256"]
    except (KeyError, TypeError, ValueError) as exc:
        raise LensgenError(f"{path / 'flow.json'}: corrupt flow header ({exc!r})") from None
    params, _ = load_tree(path / "flow.npz", like, sha)
    return header, params


@struct.dataclass
class SourceModel:
    """A trained galaxy model: decoder + latent prior (flow or N(0, I)).

    A pytree (arrays are leaves, settings are static), so it can be passed
    through ``jax.jit``; every method is pure and jit/grad/vmap-safe. The decoder
    runs in float32 whatever the x64 setting.
    """

    decoder_params: Any
    flow_params: Any
    arch: Architecture = struct.field(pytree_node=False)
    pixel_scale: float = struct.field(pytree_node=False)
    flux_scale: float = struct.field(pytree_node=False)
    has_flow: bool = struct.field(pytree_node=False)

    @property
    def latent_dim(self) -> int:
        return self.arch.latent_dim

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.arch.image_shape

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        """(latent_dim,) → (H, W) galaxy before the PSF, flux/pixel of the training data."""
        return vae.decoder_apply(self.decoder_params, self.arch, z) * jnp.float32(self.flux_scale)

    def prior_log_prob(self, z: jnp.ndarray) -> jnp.ndarray:
        """log p(z): the flow density if present, else N(0, I); scalar for one z."""
        if self.has_flow:
            return flowlib.log_prob(self.flow_params, z)
        return flowlib.std_normal_log_prob(z)

    def from_normal(self, u: jnp.ndarray) -> jnp.ndarray:
        """z = T(u) with u ~ N(0, I) ↦ z ~ prior (identity without a flow)."""
        return flowlib.from_normal(self.flow_params, u) if self.has_flow else u

    def sample(self, key: jax.Array, n: int) -> jnp.ndarray:
        """(n, latent_dim) draws from the prior."""
        u = jax.random.normal(key, (n, self.latent_dim), jnp.float32)
        return jax.vmap(self.from_normal)(u)


def default_model_path() -> Path:
    """The model directory embedded in the package (``lensgen/assets/source_model``)."""
    return Path(str(resources.files("lensgen") / "assets" / "source_model"))


def load_source_model(path: str | Path | None = None, use_flow: bool | None = None) -> SourceModel:
    """Load a model directory (``None``: the embedded default) as a :class:`SourceModel`.

    ``use_flow``: ``None`` uses the flow when the directory has one; ``True``
    requires it (LensgenError otherwise); ``False`` uses N(0, I).
    """
    path = default_model_path() if path is None else Path(path)
    header, arch, params = load_vae_params(path)
    has = (path / "flow.json").is_file()
    if use_flow and not has:
        raise LensgenError(f"{path}: no latent flow (flow.json); run `lensgen fit-iaf {path}`")
    flow_params = None
    if has and use_flow is not False:
        _, flow_params = load_flow(path, arch.latent_dim)
    return SourceModel(
        jax.tree_util.tree_map(jnp.asarray, params["params"]["decoder"]),
        None if flow_params is None else jax.tree_util.tree_map(jnp.asarray, flow_params),
        arch, float(header["pixel_scale"]), float(header["flux_scale"]), flow_params is not None,
    )  # fmt: skip
