"""Ray-tracing through a sum of mass components: deflection, lens equation, Jacobian.

A lens model is a static tuple of lenstronomy model names, e.g. ``("SIE", "SHEAR")``;
its parameters are a matching sequence of dicts (a pytree). Keys left out take the
profile's defaults (:data:`lensgen.lensing.mass.MASS_PROFILES`). All functions are
pure and jit/vmap/grad safe; :func:`validate_lens` is the user-facing check, run once
on concrete values at the edge (configs, CLI), never inside traced code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import wraps

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from lensgen.errors import LensgenError, did_you_mean
from lensgen.lensing.mass import MASS_PROFILES, MassProfile
from lensgen.lensing.substructure import check_subhalos

__all__ = [
    "convergence",
    "deflection",
    "hessian",
    "magnification",
    "ray_shoot",
    "validate_lens",
]

LensParams = Sequence[Mapping[str, ArrayLike]]


def _jit_static_model(fn):
    """Jit ``fn(model, params, x, y)`` with the model names static (compiled once per
    model and input shapes/dtypes); lists of names are accepted and made hashable."""
    jitted = jax.jit(fn, static_argnums=0)

    @wraps(fn)
    def wrapper(model, params, x, y):
        if isinstance(model, str):
            raise LensgenError(f"lens model must be a sequence of names, got the string {model!r}")
        return jitted(tuple(model), params, x, y)

    return wrapper


def _profile(name: str) -> MassProfile:
    try:
        return MASS_PROFILES[name]
    except (KeyError, TypeError):
        known = ", ".join(MASS_PROFILES)
        raise LensgenError(
            f"unknown lens model {name!r}{did_you_mean(name, MASS_PROFILES)}; known: {known}"
        ) from None


def _check_lengths(model: Sequence[str], params: LensParams) -> None:
    if isinstance(model, str):
        raise LensgenError(f"lens model must be a sequence of names, got the string {model!r}")
    if len(model) != len(params):
        raise LensgenError(
            f"lens model has {len(model)} component(s) {tuple(model)} but "
            f"{len(params)} parameter dict(s) were given"
        )


@_jit_static_model
def deflection(model: tuple[str, ...], params: LensParams, x: ArrayLike, y: ArrayLike):
    """Total deflection of a sum of mass components (arcsec).

    Parameters
    ----------
    model : sequence of str
        Lenstronomy model names, one per component (static under jit).
    params : sequence of dict
        Parameters of each component (lenstronomy names).
    x, y : array_like
        Image-plane coordinates (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Summed deflection, broadcast shape of ``x, y`` and the parameters.
    """
    _check_lengths(model, params)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    ax = jnp.zeros_like(x + y)
    ay = jnp.zeros_like(x + y)
    for name, p in zip(model, params, strict=True):
        prof = _profile(name)
        dax, day = prof.deflection(x, y, **{**prof.defaults, **p})
        ax = ax + dax
        ay = ay + day
    return ax, ay


@_jit_static_model
def convergence(model: tuple[str, ...], params: LensParams, x: ArrayLike, y: ArrayLike) -> Array:
    """Total convergence ``kappa`` of a sum of mass components (analytic per profile)."""
    _check_lengths(model, params)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    kappa = jnp.zeros_like(x + y)
    for name, p in zip(model, params, strict=True):
        prof = _profile(name)
        kappa = kappa + prof.convergence(x, y, **{**prof.defaults, **p})
    return kappa


@_jit_static_model
def ray_shoot(model: tuple[str, ...], params: LensParams, x: ArrayLike, y: ArrayLike):
    """Map image-plane positions to the source plane, ``beta = theta - alpha(theta)``."""
    ax, ay = deflection(model, params, x, y)
    return jnp.asarray(x) - ax, jnp.asarray(y) - ay


@_jit_static_model
def hessian(model: tuple[str, ...], params: LensParams, x: ArrayLike, y: ArrayLike):
    """Second derivatives of the lensing potential from autodiff of the deflection.

    Returns ``(f_xx, f_xy, f_yx, f_yy)`` with ``f_xy = d alpha_x / d y`` and
    ``f_yx = d alpha_y / d x`` (lenstronomy's order), each with the broadcast shape
    of ``x`` and ``y``. Computed with ``jax.jacfwd`` per point, vmapped over points.
    """
    x, y = jnp.broadcast_arrays(jnp.asarray(x), jnp.asarray(y))
    shape = x.shape

    def alpha(pos):
        ax, ay = deflection(model, params, pos[0], pos[1])
        return jnp.stack([ax, ay])

    pts = jnp.stack([x.reshape(-1), y.reshape(-1)], axis=-1)
    jac = jax.vmap(jax.jacfwd(alpha))(pts)
    return tuple(jac[:, i, j].reshape(shape) for i in range(2) for j in range(2))


@_jit_static_model
def magnification(model: tuple[str, ...], params: LensParams, x: ArrayLike, y: ArrayLike) -> Array:
    """Signed magnification ``1 / det(d beta / d theta)`` at image-plane positions.

    The Jacobian of the lens equation is ``A = I - H`` with ``H`` from :func:`hessian`;
    negative values are parity-flipped images, ``inf`` lies on critical curves.
    """
    f_xx, f_xy, f_yx, f_yy = hessian(model, params, x, y)
    return 1.0 / ((1.0 - f_xx) * (1.0 - f_yy) - f_xy * f_yx)


# Parameters that must be strictly positive, and the other range checks.
_POSITIVE = ("theta_E", "Rs", "alpha_Rs", "r_trunc")


def _check_component(i: int, name: str, prof: MassProfile, p: Mapping) -> None:
    where = f"lens component {i} ({name})"
    if not isinstance(p, Mapping):
        raise LensgenError(f"{where}: parameters must be a dict, got {type(p).__name__}")
    for key in p:
        if key not in prof.params:
            raise LensgenError(
                f"{where}: unknown parameter {key!r}{did_you_mean(key, prof.params)}"
            )
    missing = [k for k in prof.params if k not in p and k not in prof.defaults]
    if missing:
        raise LensgenError(f"{where}: missing parameter(s) {', '.join(map(repr, missing))}")
    values = {}
    for key, value in p.items():
        if isinstance(value, jax.core.Tracer):
            return  # traced values cannot be range-checked; validate before tracing
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise LensgenError(f"{where}: {key} must be a number, got {value!r}") from None
        if not np.all(np.isfinite(arr)):
            raise LensgenError(f"{where}: {key} must be finite, got {_fmt(arr, 'nonfinite')}")
        values[key] = arr
    if name == "SUBHALOS":
        check_subhalos(values, where)  # padding entries (alpha_Rs = 0) are allowed
        return
    for key in _POSITIVE:
        if key in values and np.any(values[key] <= 0):
            raise LensgenError(f"{where}: {key} must be > 0, got {_fmt(values[key], 'min')}")
    if "e1" in prof.params:
        e = np.hypot(values.get("e1", 0.0), values.get("e2", 0.0))
        if np.any(e >= 1):
            raise LensgenError(
                f"{where}: ellipticity |e| = sqrt(e1^2 + e2^2) must be < 1, got {_fmt(e, 'max')}"
            )
    if "gamma" in values and np.any((values["gamma"] <= 1) | (values["gamma"] >= 3)):
        g = values["gamma"]
        bad = g[(g <= 1) | (g >= 3)] if g.ndim else g
        raise LensgenError(f"{where}: gamma must be in (1, 3), got {_fmt(bad)}")


def _fmt(arr: np.ndarray, pick: str = "first") -> str:
    """Format a (possibly batched) offending value for a one-line message."""
    if arr.ndim == 0:
        return repr(float(arr))
    flat = arr.ravel()
    if pick == "min":
        value = flat.min()
    elif pick == "max":
        value = flat.max()
    elif pick == "nonfinite":
        value = flat[~np.isfinite(flat)][0]
    else:
        value = flat[0]
    return f"{float(value)!r} (in a batch of {flat.size})"


def validate_lens(model: Sequence[str], params: LensParams) -> None:
    """Check a lens model and its parameters; raise :class:`LensgenError` if invalid.

    Checks: known model names, one parameter dict per component, no unknown or
    missing keys, finite numbers, ``theta_E``, ``Rs``, ``alpha_Rs``, ``r_trunc`` > 0,
    ``|e| < 1`` and ``1 < gamma < 3``. Batched (array) values are checked elementwise.
    """
    if isinstance(model, str) or not isinstance(model, Sequence):
        raise LensgenError(f"lens model must be a sequence of names, got {model!r}")
    if isinstance(params, Mapping) or not isinstance(params, Sequence):
        raise LensgenError(
            f"lens parameters must be a list of dicts (one per component), got "
            f"{type(params).__name__}"
        )
    for name in model:
        _profile(name)
    _check_lengths(model, params)
    for i, (name, p) in enumerate(zip(model, params, strict=True)):
        _check_component(i, name, MASS_PROFILES[name], p)
