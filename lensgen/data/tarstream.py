"""Streaming, safe extraction of the GREAT3 files a dataset needs.

The tar.gz is read strictly sequentially (``tarfile`` stream mode), so it is never
held in memory or on disk as a whole, and reading can stop as soon as enough
subfields are complete. Only expected regular files are written, under names built
here from the parsed subfield number (never from the member's path), into one
folder; absolute paths, ``..`` components, links and device files are refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from lensgen.errors import LensgenError

# image-SSS-E.fits, starfield_image-SSS-E.fits, epoch_dither-SSS-E.txt,
# galaxy_catalog-SSS.fits/.txt
_MEMBER = re.compile(
    r"^(?P<kind>image|starfield_image)-(?P<sub>\d{3})-(?P<epoch>\d+)\.fits$"
    r"|^(?P<dkind>epoch_dither)-(?P<dsub>\d{3})-(?P<depoch>\d+)\.txt$"
    r"|^(?P<ckind>galaxy_catalog)-(?P<csub>\d{3})\.(?P<ext>fits|txt)$"
)


class CorruptArchiveError(LensgenError):
    """The byte stream is not a readable tar.gz (truncated, damaged, not gzip)."""


@dataclass
class SubfieldFiles:
    """Local paths of one subfield's files: per epoch an image and a starfield (and,
    with several epochs, the dither), plus the galaxy catalogue."""

    subfield: int
    epochs: int = 1
    images: dict[int, Path] = field(default_factory=dict)
    starfields: dict[int, Path] = field(default_factory=dict)
    dithers: dict[int, Path] = field(default_factory=dict)
    catalog: Path | None = None
    checksums: dict[str, tuple[int, str]] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """Names of the files this subfield still lacks."""
        sub, every = f"{self.subfield:03d}", range(self.epochs)
        out = [] if self.catalog else [f"galaxy_catalog-{sub}.fits/.txt"]
        out += [f"image-{sub}-{e}.fits" for e in every if e not in self.images]
        out += [f"starfield_image-{sub}-{e}.fits" for e in every if e not in self.starfields]
        if self.epochs > 1:
            out += [f"epoch_dither-{sub}-{e}.txt" for e in every if e not in self.dithers]
        return out

    @property
    def complete(self) -> bool:
        return not self.missing()


def check_member(member: tarfile.TarInfo, source: str) -> None:
    """Refuse members that could write outside the destination or are not plain files."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise LensgenError(f"{source}: refusing member with an absolute path: {name!r}")
    if ".." in parts or ".." in name.split("\\"):
        raise LensgenError(f"{source}: refusing member with '..' in its path: {name!r}")
    if member.issym() or member.islnk():
        raise LensgenError(f"{source}: refusing link member {name!r} -> {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise LensgenError(f"{source}: refusing special member {name!r} (device, fifo, …)")


def classify(name: str) -> tuple[str, int, int] | None:
    """(kind, subfield, epoch) of an expected GREAT3 member, else None."""
    match = _MEMBER.match(PurePosixPath(name).name)
    if match is None:
        return None
    if match["kind"]:
        return match["kind"], int(match["sub"]), int(match["epoch"])
    if match["dkind"]:
        return "epoch_dither", int(match["dsub"]), int(match["depoch"])
    return f"galaxy_catalog.{match['ext']}", int(match["csub"]), 0


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> tuple[int, str]:
    """Copy a member to ``dest`` atomically; return its size and SHA-256."""
    src = tar.extractfile(member)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if size != member.size:
            raise tarfile.ReadError(f"member {member.name} is truncated")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def iter_subfields(
    fileobj: IO[bytes], dest: Path, source: str, epochs: int = 1
) -> Iterator[SubfieldFiles]:
    """Extract a GREAT3 branch stream, yielding each subfield once its files are in.

    A subfield needs ``galaxy_catalog-SSS.{fits,txt}`` and, for each epoch E <
    ``epochs``, ``image-SSS-E.fits`` and ``starfield_image-SSS-E.fits`` (plus
    ``epoch_dither-SSS-E.txt`` when ``epochs`` > 1); other members are skipped
    unread. Stop iterating to stop reading the stream. At the end of the archive a
    subfield with an image but missing files is an error naming them.

    Parameters
    ----------
    fileobj : binary file object
        The tar.gz byte stream (read sequentially).
    dest : Path
        Folder receiving the files (created).
    source : str
        Name of the stream for error messages (URL or path).
    """
    dest.mkdir(parents=True, exist_ok=True)
    pending: dict[int, SubfieldFiles] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for member in tar:
                check_member(member, source)
                kind = classify(member.name) if member.isfile() else None
                if kind is None or kind[2] >= epochs or (kind[0] == "epoch_dither" and epochs < 2):
                    continue
                what, sub, epoch = kind
                files = pending.setdefault(sub, SubfieldFiles(sub, epochs))
                if what == "galaxy_catalog.txt" and files.catalog is not None:
                    continue  # the FITS catalogue is preferred and already here
                local = dest / PurePosixPath(member.name).name
                files.checksums[local.name] = _write_member(tar, member, local)
                if what == "image":
                    files.images[epoch] = local
                elif what == "starfield_image":
                    files.starfields[epoch] = local
                elif what == "epoch_dither":
                    files.dithers[epoch] = local
                elif what == "galaxy_catalog.fits" or files.catalog is None:
                    files.catalog = local
                if files.complete:
                    yield pending.pop(sub)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise CorruptArchiveError(f"{source}: corrupt or truncated tar.gz ({exc})") from None
    except OSError as exc:
        if exc.errno is None:  # gzip.BadGzipFile and friends carry no errno
            raise CorruptArchiveError(f"{source}: corrupt tar.gz ({exc})") from None
        raise LensgenError(f"cannot extract {source} into {dest}: {exc.strerror}") from None
    for files in sorted(pending.values(), key=lambda f: f.subfield):
        if files.images:
            sub = f"{files.subfield:03d}"
            raise LensgenError(
                f"{source}: subfield {sub} lacks {', '.join(files.missing())} in the archive"
            )
