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
                         "channels": list(arch.channels), "dense": arch.dense,
                         "activation": arch.activation},
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
            str(a.get("activation", "relu")),  # headers before the field: ReLU
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
    """Header and verified parameters of ``flow.npz`` in a model directory.

    Only an inverse autoregressive flow (``kind`` :data:`flowlib.KIND`, format
    :data:`flowlib.FORMAT_VERSION`) of the decoder's latent dimension is accepted;
    the masked autoregressive flow of format 1 has the same weight shapes but the
    other direction, so it is refused rather than misread.
    """
    where = path / "flow.json"
    header = read_json(where, "flow header (flow.json)")
    try:
        if header["format"] != FLOW_FORMAT:
            raise LensgenError(f"{where}: not a lensgen latent flow (format {header['format']!r})")
        version, kind = int(header["format_version"]), header.get("kind")
        if (version, kind) != (flowlib.FORMAT_VERSION, flowlib.KIND):
            what = "masked autoregressive" if version == 1 else f"kind {kind!r}"
            raise LensgenError(
                f"{where}: flow format {version} ({what}) is not supported by this lensgen "
                f"(it reads format {flowlib.FORMAT_VERSION}, inverse autoregressive); "
                f"refit it with `lensgen fit-iaf {path} --overwrite`"
            )
        if int(header["latent_dim"]) != latent_dim:
            raise LensgenError(
                f"{where}: latent flow of dimension {int(header['latent_dim'])} does not match "
                f"the decoder's latent dimension {latent_dim}"
            )
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
        return _decode(self, z)

    def prior_log_prob(self, z: jnp.ndarray) -> jnp.ndarray:
        """log p(z): the flow density if present, else N(0, I); scalar for one z."""
        if self.has_flow:
            return flowlib.log_prob(self.flow_params, z)
        return flowlib.std_normal_log_prob(z)

    def from_normal(self, u: jnp.ndarray) -> jnp.ndarray:
        """z = T(u) with u ~ N(0, I) ↦ z ~ prior (identity without a flow)."""
        return _from_normal(self, u) if self.has_flow else u

    def sample(self, key: jax.Array, n: int) -> jnp.ndarray:
        """(n, latent_dim) draws from the prior."""
        u = jax.random.normal(key, (n, self.latent_dim), jnp.float32)
        return jax.vmap(self.from_normal)(u)


# Jitted once for all models of one architecture, so that code run outside ``jax.jit``
# (NumPyro's model tracing, previews, starts) runs one compiled program per call
# instead of compiling every operation of the network on its own.
@jax.jit
def _decode(model: SourceModel, z: jnp.ndarray) -> jnp.ndarray:
    return vae.decoder_apply(model.decoder_params, model.arch, z) * jnp.float32(model.flux_scale)


@jax.jit
def _from_normal(model: SourceModel, u: jnp.ndarray) -> jnp.ndarray:
    return flowlib.from_normal(model.flow_params, u)


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


SOURCE_PARAMS = ("flux", "center_x", "center_y", "size", "phi_G")
"""Parameters that place a decoded galaxy on the sky (besides its latent vector).

``flux`` the core flux (counts/s), ``center_x``/``center_y`` the core centroid
(arcsec), ``size`` the core radius of the light (arcsec) and ``phi_G`` a rotation
(radians); :func:`core_moments` defines the core flux, centroid and radius. They are defined
on the decoded *light*, not on the stamp's pixel grid, so a latent direction that
shifts, grows or brightens the decoded galaxy does not move, grow or brighten the
rendered source: those directions of z are left to the prior and the parameters
keep their meaning.
"""


def stamp_coordinates(decoded: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(u, v) of every pixel of an (H, W) stamp, in pixels from its centre.

    Pixel (row i, column j) sits at u = j − (W − 1)/2, v = i − (H − 1)/2 (the INTERPOL
    convention of :func:`lensgen.lensing.light.interpol`).
    """
    h, w = decoded.shape
    v, u = jnp.meshgrid(
        jnp.arange(h, dtype=decoded.dtype) - (h - 1) / 2,
        jnp.arange(w, dtype=decoded.dtype) - (w - 1) / 2,
        indexing="ij",
    )
    return u, v


def light_moments(
    decoded: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Total, centroid (u, v) and RMS radius of a decoded stamp, in decoded pixels.

    Pixels sit at :func:`stamp_coordinates`. The RMS radius is that of INTERPOL's
    bilinear interpolant of the stamp: the pixel moment Σ d [(u − ū)² + (v − v̄)²] / Σ d
    plus 1/3 pixel², the second moment of the unit tent kernel in two dimensions (the
    interpolant keeps the total and centroid).
    """
    u, v = stamp_coordinates(decoded)
    total = jnp.sum(decoded)
    u_bar = jnp.sum(decoded * u) / total
    v_bar = jnp.sum(decoded * v) / total
    r2 = jnp.sum(decoded * ((u - u_bar) ** 2 + (v - v_bar) ** 2)) / total
    return total, u_bar, v_bar, jnp.sqrt(jnp.maximum(r2, 0.0) + 1.0 / 3.0)


def core_moments(
    decoded: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Core flux, core centroid (u, v) and core radius of a decoded stamp, in decoded pixels.

    The centroid is weighted by d^(3/2) (negative pixels count as zero). With r
    measured from it and m = 2 Σ d² r² / Σ d², the core flux is 2π m Σ d² / Σ d and
    the core radius r_c = √(m + 1/3) (the 1/3 pixel² is the bilinear interpolant's
    tent, as in :func:`light_moments`). Weighting by the light's own brightness makes
    all three follow the bright core that a lensed image constrains, not the faint
    wings it does not: on the seed case's decoded galaxies 48 % of the RMS radius's
    second moment comes from the outer 10 % of the light. For a Gaussian galaxy they
    are exactly its centre, total flux and RMS radius.

    With the total and RMS radius as the placement, every latent direction that
    changed the wings moved the rendered core, and size and flux had to follow: a
    curved ridge along which NUTS mixed size 10× more slowly than θ_E. With the plain
    light centroid (weight d), latents that move faint asymmetric light still moved the
    core, and on under-resolved rings the source centre mixed 7× more slowly than θ_E;
    weight d² made the lens centre stop mixing on the seed case (BENCHMARKS.md, "Core
    placement of the learned source" and "Why the learned-source calibration is slow").
    """
    total = jnp.sum(decoded)
    u, v = stamp_coordinates(decoded)
    # d^(3/2) with its derivatives taken as 0 where d ≤ 0: a ReLU decoder gives exact
    # zeros, where the second derivative of d^(3/2) is infinite (the MAP's Hessian).
    lit = decoded > 0
    bright = jnp.where(lit, jnp.where(lit, decoded, 1.0) ** 1.5, 0.0)
    norm = jnp.sum(bright)
    u_bar, v_bar = jnp.sum(bright * u) / norm, jnp.sum(bright * v) / norm
    weight = decoded**2
    power = jnp.sum(weight)
    r2 = jnp.maximum(2.0 * jnp.sum(weight * ((u - u_bar) ** 2 + (v - v_bar) ** 2)) / power, 0.0)
    return 2.0 * jnp.pi * r2 * power / total, u_bar, v_bar, jnp.sqrt(r2 + 1.0 / 3.0)


@jax.jit
def interpol_params(decoded, flux, center_x, center_y, size, phi_G=0.0) -> dict[str, Any]:
    """INTERPOL parameters that render ``decoded`` with the given core flux, core
    centroid and core radius (:func:`core_moments`).

    The stamp's pixel scale is s = ``size`` / r_c (arcsec per decoded pixel) and its
    grid centre is put at the requested centroid minus the stamp's own centroid
    offset, turned by ``phi_G`` as INTERPOL turns the grid; the surface brightness is
    ``flux`` · d / (F_c · s²) (counts/s/arcsec²) with F_c the stamp's core flux, so the
    source integrates to ``flux`` · Σd / F_c (``flux`` for a Gaussian galaxy). Used by
    ``lensgen simulate`` and by the inference model alike.
    """
    decoded = jnp.asarray(decoded)
    core, u_bar, v_bar, r_core = core_moments(decoded)
    scale = size / r_core
    cos_phi, sin_phi = jnp.cos(phi_G), jnp.sin(phi_G)
    # Sky offset of pixel (ū, v̄) from the grid centre: the inverse of INTERPOL's rotation.
    dx = scale * (cos_phi * u_bar - sin_phi * v_bar)
    dy = scale * (sin_phi * u_bar + cos_phi * v_bar)
    return {
        "image": flux * decoded / (core * scale**2),
        "amp": jnp.ones_like(scale),
        "center_x": center_x - dx,
        "center_y": center_y - dy,
        "phi_G": phi_G + jnp.zeros_like(scale),
        "scale": scale,
    }
