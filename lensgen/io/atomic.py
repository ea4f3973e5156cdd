"""Atomic output: write to a temporary name in the same folder, then rename.

A crash, a full disk or Ctrl-C therefore never leaves a half-written file at the
output path, and an existing file is only replaced once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from lensgen.errors import LensgenError


def check_output_path(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output without ``overwrite`` and an unwritable folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise LensgenError(f"{path} exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise LensgenError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise LensgenError(f"cannot write {path}: folder {parent} is not writable")
    return path


def refuse_input_outputs(
    paths: Iterable[str | Path], inputs: Iterable[str | Path | None], detail: str = ""
) -> None:
    """Refuse an output path that is one of the run's inputs (even with --overwrite)."""
    sources = {Path(p).resolve() for p in inputs if p}
    clash = [Path(p) for p in paths if Path(p).resolve() in sources]
    if clash:
        raise LensgenError(
            f"{clash[0]} is both an input and an output of this run{detail}; choose another --out"
        )


def check_outputs(paths: Sequence[str | Path], overwrite: bool) -> list[Path]:
    """Check every output of one run before anything is written.

    Refuses repeated paths (an output that would overwrite another output of the same
    run), an existing folder where a file goes, and, without ``overwrite``, any path
    that exists. The message names every offending path.
    """
    out = [Path(p) for p in paths]
    seen: dict[Path, Path] = {}
    for p in out:
        key = p.resolve()
        if key in seen:
            raise LensgenError(f"two outputs of this run would both be written to {p}")
        seen[key] = p
    folders = [p for p in out if p.is_dir()]
    if folders:
        raise LensgenError(f"{folders[0]} is a folder; an output file is written there")
    existing = [p for p in out if p.exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise LensgenError(
            f"{names} exist{'s' if len(existing) == 1 else ''}; pass --overwrite to replace"
        )
    for p in out:
        check_output_path(p, overwrite=True)
    return out


def check_output_dir(path: str | Path) -> Path:
    """An output folder may exist (its files are checked one by one) but not be a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LensgenError(f"{path} is a file, not a folder; choose another output folder")
    parent = path.parent if str(path.parent) else Path(".")
    if not path.exists() and not parent.is_dir():
        raise LensgenError(f"cannot create folder {path}: {parent} does not exist")
    return path


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | Path], overwrite: bool = False) -> Iterator[list[Path]]:
    """All-or-nothing output of several files: temporary paths, renamed together.

    Every path is checked first (:func:`check_outputs`). The body writes to the
    yielded temporary paths; only when it finishes are they renamed onto the outputs,
    so an error or Ctrl-C leaves none of the outputs changed.
    """
    targets = check_outputs(paths, overwrite)
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p, overwrite)) for p in targets]
        yield tmps


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = check_output_path(path, overwrite)
    # The temporary name keeps the output's suffix, so writers that pick a format
    # from the file name (matplotlib, astropy) see the same name as for the output.
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent or "."
        )
    except OSError as exc:  # a read-only or full file system, a quota
        raise _cannot_write(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        if path.exists() and not overwrite:
            raise LensgenError(f"{path} appeared while writing; pass --overwrite to replace it")
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _cannot_write(path, exc) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _cannot_write(path: Path, exc: OSError) -> LensgenError:
    return LensgenError(f"cannot write {path}: {exc.strerror or exc}")


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def user_cache_dir() -> Path:
    """lensgen's folder in the user cache: ``$XDG_CACHE_HOME/lensgen`` (``~/.cache/lensgen``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "lensgen"
