"""Spreading a batch over this process's devices (``jax.sharding``).

A batch axis (lenses of ``lensgen simulate --n``, stamps of a ``train-vae`` step) is
split over a one-axis mesh of the local devices; everything else is replicated. XLA
then runs each device's share and gathers the results (Xu et al. 2021, GSPMD). On one
device every function here is the identity, so single-device runs compile and compute
exactly as before.

Fake several CPU devices to try it: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(set before JAX starts).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def local_mesh(divides: int | None = None) -> Mesh | None:
    """A one-axis mesh of the local devices, or None for one device.

    ``divides``: use the largest number of devices that divides it (a batch size), so
    that every device gets an equal share.
    """
    devices = jax.local_devices()
    n = len(devices)
    if divides is not None:
        while n > 1 and divides % n:
            n -= 1
    return None if n < 2 else Mesh(np.array(devices[:n]), (AXIS,))


def shard_leading(tree: Any, mesh: Mesh | None) -> Any:
    """``tree``'s arrays split along their first axis over ``mesh`` (unchanged without one)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(AXIS)))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree``'s arrays copied to every device of ``mesh`` (unchanged without one)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def constrain_leading(tree: Any, mesh: Mesh | None) -> Any:
    """Inside ``jit``: ask for ``tree`` split along its first axis over ``mesh``."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def map_sharded(fn, *trees: Any) -> Any:
    """``jit(fn)(*trees)`` with the trees' common first axis split over the local devices.

    The axis is padded (repeating its last entry) to a multiple of the device count and
    the padding cut from the result, so ``fn`` must treat entries independently (a
    ``vmap``). Works for any leaves that can be indexed, PRNG keys included.
    """
    mesh = local_mesh()
    if mesh is None:
        return fn(*trees)
    n = jax.tree_util.tree_leaves(trees)[0].shape[0]
    idx = np.minimum(np.arange(n + (-n) % mesh.devices.size), n - 1)
    padded = [shard_leading(jax.tree_util.tree_map(lambda a: a[idx], t), mesh) for t in trees]
    return jax.tree_util.tree_map(lambda a: a[:n], jax.jit(fn)(*padded))
