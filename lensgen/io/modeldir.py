"""Weights on disk: pytrees saved leaf by leaf to ``.npz`` plus a JSON header.

No pickle anywhere: every leaf is a plain numeric array stored under a name built
from its path in the pytree (``params/Decoder_0/Dense_0/kernel``), and the file is
always read with ``allow_pickle=False``. The JSON header that sits next to the
weights records the architecture (enough to rebuild the model), the leaf names,
shapes and dtypes, and the SHA-256 of the ``.npz`` file, so a truncated or
tampered file is reported as a :class:`~lensgen.errors.LensgenError` naming the
path instead of producing a silently wrong model.

Training checkpoints use the same leaf naming but carry their JSON header inside
the ``.npz`` (entry ``__header__``), so one atomic rename updates everything.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lensgen.errors import LensgenError
from lensgen.io.atomic import atomic_write_bytes, atomic_write_text

HEADER_ENTRY = "__header__"


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flatten_named(tree: Any) -> dict[str, np.ndarray]:
    """Pytree → ``{"a/b/c": array}`` with one entry per leaf, in tree order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out: dict[str, np.ndarray] = {}
    for path, leaf in leaves:
        name = "/".join(_key_name(p) for p in path) or "leaf"
        if name in out or name == HEADER_ENTRY:
            raise ValueError(f"duplicate or reserved leaf name {name!r}")
        out[name] = np.asarray(leaf)
    return out


def leaf_spec(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Shapes and dtypes of named leaves, as stored in headers."""
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_tree(path: str | Path, tree: Any, header: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``tree`` to ``path`` (.npz) atomically; return its header entry.

    With ``header`` given it is embedded as JSON under ``__header__`` (checkpoints).
    The returned dict holds the file name, SHA-256 and the leaf specification.
    """
    arrays = flatten_named(tree)
    payload = dict(arrays)
    if header is not None:
        text = json.dumps(header, sort_keys=True)
        payload[HEADER_ENTRY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    data = _npz_bytes(payload)
    atomic_write_bytes(path, data, overwrite=True)
    return {
        "file": Path(path).name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "leaves": leaf_spec(arrays),
    }


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise LensgenError(f"weights file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise LensgenError(f"{path}: corrupt weights file ({exc})") from None


def load_tree(path: str | Path, like: Any, sha256: str | None = None) -> tuple[Any, dict | None]:
    """Read a tree saved by :func:`save_tree` into the structure of ``like``.

    ``like`` is a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. from
    ``jax.eval_shape`` of the model's init) fixing names, shapes and dtypes.
    Returns ``(tree, embedded_header_or_None)``. Any mismatch (checksum, missing
    or extra leaf, shape, dtype, non-finite value) raises :class:`LensgenError`.
    """
    path = Path(path)
    if sha256 is not None and path.is_file() and sha256_file(path) != sha256:
        raise LensgenError(f"{path}: corrupt weights file (SHA-256 differs from the header)")
    arrays = _read_npz(path)
    header = None
    if HEADER_ENTRY in arrays:
        try:
            header = json.loads(arrays.pop(HEADER_ENTRY).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LensgenError(f"{path}: corrupt embedded header ({exc})") from None
    expected = flatten_named(jax.tree_util.tree_map(lambda s: np.zeros((), s.dtype), like))
    shapes = {
        k: tuple(v.shape) for k, v in zip(expected, jax.tree_util.tree_leaves(like), strict=True)
    }
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise LensgenError(
            f"{path}: weights do not match the model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    leaves = []
    for name, ref in expected.items():
        arr = arrays[name]
        if tuple(arr.shape) != shapes[name] or arr.dtype != ref.dtype:
            raise LensgenError(
                f"{path}: leaf '{name}' has shape {arr.shape} {arr.dtype}, "
                f"expected {shapes[name]} {ref.dtype}"
            )
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise LensgenError(f"{path}: leaf '{name}' holds non-finite values")
        leaves.append(arr)
    treedef = jax.tree_util.tree_structure(like)
    return jax.tree_util.tree_unflatten(treedef, leaves), header


def write_json(path: str | Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", overwrite=True)


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """Read a JSON header; missing or malformed files raise :class:`LensgenError`."""
    path = Path(path)
    if not path.is_file():
        raise LensgenError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LensgenError(f"{path}: corrupt {what} ({exc})") from None
    if not isinstance(obj, dict):
        raise LensgenError(f"{path}: corrupt {what} (not a JSON object)")
    return obj
