"""GREAT3 branches, where their tarballs live, and a resumable, verified byte stream.

A GREAT3 branch is ``<experiment>-<obs>-<shear>`` (20 names). Its tarball
``<branch>.tar.gz`` is looked up at a base URL (HTTP(S), ``file://`` or a local
folder): first directly, then in the base's directory listing and one level of
subfolders. :class:`SourceStream` reads the tarball as a file object for the
streaming tar reader: over HTTP it tees the bytes into a cached partial file, so an
interrupted or deliberately stopped download resumes from the cache with an HTTP
``Range`` request; dropped connections are retried with exponential back-off. The
size and SHA-256 of every fetched file are kept in a JSON manifest in the cache.
:func:`list_offers` lists the tarballs found in those same places, with their sizes
(``stat``, or an HTTP ``HEAD`` request), so ``download-great3 --list`` shows what a
mirror holds.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from lensgen import __version__
from lensgen.errors import LensgenError
from lensgen.io.atomic import atomic_write_text, user_cache_dir
from lensgen.io.interrupt import check_interrupt, interruptible

DEFAULT_BASE_URL = "https://cosmo.vera.psc.edu/Great3/public/"
EXPERIMENTS = ("control", "real_galaxy", "variable_psf", "multiepoch", "full")
OBS_TYPES = ("ground", "space")
SHEAR_TYPES = ("constant", "variable")
BRANCHES = tuple(f"{e}-{o}-{s}" for e in EXPERIMENTS for o in OBS_TYPES for s in SHEAR_TYPES)
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 16
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)


class Branch(NamedTuple):
    """A GREAT3 branch and its image geometry."""

    experiment: str
    obs: str
    shear: str

    @property
    def name(self) -> str:
        return f"{self.experiment}-{self.obs}-{self.shear}"

    @property
    def folder(self) -> str:
        """Folder the tarball unpacks to, ``experiment/obs/shear``."""
        return f"{self.experiment}/{self.obs}/{self.shear}"

    @property
    def stamp_size(self) -> int:
        """Postage-stamp side, pixels: 48 ground, 96 space single-epoch."""
        return 96 if self.obs == "space" and self.experiment not in ("multiepoch", "full") else 48

    @property
    def pixel_scale(self) -> float:
        """Pixel scale, arcsec: 0.2 ground, 0.05 space single-epoch, 0.1 space multi-epoch."""
        if self.obs == "ground":
            return 0.2
        return 0.1 if self.experiment in ("multiepoch", "full") else 0.05

    @property
    def has_pairs(self) -> bool:
        """Constant-shear branches hold 90°-rotated galaxy pairs."""
        return self.shear == "constant"

    @property
    def epochs(self) -> int:
        """Exposures per subfield: 6 for multi-epoch and full branches, else 1."""
        return 6 if self.experiment in ("multiepoch", "full") else 1

    @property
    def constant_psf(self) -> bool:
        """One PSF per subfield (variable_psf and full branches vary it over the field)."""
        return self.experiment not in ("variable_psf", "full")


def parse_branch(name: str) -> Branch:
    """The :class:`Branch` called ``name``; any other name is refused with the list."""
    if name not in BRANCHES:
        raise LensgenError(f"unknown GREAT3 branch {name!r}; choose one of: {', '.join(BRANCHES)}")
    experiment, obs, shear = name.split("-")
    return Branch(experiment, obs, shear)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lensgen/great3`` (``~/.cache/lensgen/great3``)."""
    return user_cache_dir() / "great3"


def _is_http(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme in ("http", "https")


def local_path(url: str) -> Path | None:
    """The local path named by ``url`` (a path or ``file://`` URL), or None for HTTP(S)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme and len(parsed.scheme) > 1:
        raise LensgenError(f"unsupported base URL {url!r}: use http(s)://, file:// or a path")
    return Path(url)


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    hdrs = {"User-Agent": f"lensgen/{__version__}", **(headers or {})}
    return urllib.request.Request(url, method=method, headers=hdrs)


def _no_network(url: str, exc: BaseException) -> LensgenError:
    reason = getattr(exc, "reason", None) or exc
    return LensgenError(
        f"cannot reach {url} ({reason}); check the network, or pass --base-url with another "
        "mirror or a local folder / file:// URL holding the tarball"
    )


_HREF = re.compile(r"""href\s*=\s*["']([^"'#?]+)["']""", re.IGNORECASE)


def _listing(url: str, timeout: float) -> list[str]:
    """Absolute URLs linked from the HTML directory listing at ``url``."""
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as resp:
            text = resp.read(4 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError:
        return []
    except _NETWORK_ERRORS as exc:
        raise _no_network(url, exc) from None
    return [urllib.parse.urljoin(url, h) for h in _HREF.findall(text)]


def _http_exists(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(_request(url, "HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410, 403):
            return False
        if exc.code == 405:  # HEAD not allowed: ask for one byte instead
            try:
                req = _request(url, headers={"Range": "bytes=0-0"})
                with urllib.request.urlopen(req, timeout=timeout):
                    return True
            except urllib.error.HTTPError:
                return False
        raise LensgenError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except _NETWORK_ERRORS as exc:
        raise _no_network(url, exc) from None


def resolve_tarball(base_url: str, branch: Branch, timeout: float = 30.0) -> str:
    """Find ``<branch>.tar.gz`` at ``base_url``: directly, then one listing level down.

    Returns the tarball's URL (HTTP) or local path. Raises :class:`LensgenError`
    listing the tarballs and folders that were found when the branch is missing.
    """
    target = f"{branch.name}.tar.gz"
    path = local_path(base_url)
    if path is not None:
        if path.is_file():
            return str(path)
        if not path.is_dir():
            raise LensgenError(f"--base-url {base_url}: no such file or folder")
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
        for folder in [path, *subdirs]:
            if (folder / target).is_file():
                return str(folder / target)
        found = sorted(str(p.relative_to(path)) for p in path.glob("*.tar.gz"))
        found += sorted(f"{p.name}/{q.name}" for p in subdirs for q in p.glob("*.tar.gz"))
        raise LensgenError(
            f"{target} not found in {path} or its subfolders; found: "
            f"{', '.join(found) or 'no .tar.gz files'}"
        )
    base = base_url if base_url.endswith("/") else base_url + "/"
    direct = urllib.parse.urljoin(base, target)
    if _http_exists(direct, timeout):
        return direct
    links = _listing(base, timeout)
    found: list[str] = []
    folders = [u for u in links if u.endswith("/") and u.startswith(base) and u != base]
    for url in links:
        if url.endswith(target):
            return url
    for folder in folders[:64]:
        for url in _listing(folder, timeout):
            if url.endswith(target):
                return url
            if url.endswith(".tar.gz"):
                found.append(url[len(base) :])
    found = sorted({u[len(base) :] for u in links if u.endswith(".tar.gz")} | set(found))
    names = [f[len(base) :] for f in folders]
    raise LensgenError(
        f"{target} not found at {direct} nor in the listing of {base} (one level of "
        f"subfolders); tarballs found: {', '.join(found) or 'none'}; "
        f"folders: {', '.join(names) or 'none'}"
    )


class Offer(NamedTuple):
    """A tarball found at a mirror."""

    branch: str | None
    """GREAT3 branch name, or None when the file name is not ``<branch>.tar.gz``."""
    url: str
    """HTTP(S) URL or local path."""
    size: int | None
    """Bytes; None when the server does not say."""


def _basename(url: str) -> str:
    return urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1])


def _branch_of(url: str) -> str | None:
    stem = _basename(url).removesuffix(".tar.gz")
    return stem if stem in BRANCHES else None


def _http_size(url: str, timeout: float) -> int | None:
    """Content-Length from a HEAD request; None when refused, missing or unreachable."""
    try:
        with urllib.request.urlopen(_request(url, "HEAD"), timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
    except _NETWORK_ERRORS:  # one bad HEAD leaves that size unknown, not the whole list
        return None
    return int(length) if length and length.isdigit() else None


def list_offers(base_url: str, timeout: float = 30.0) -> list[Offer]:
    """Tarballs (``*.tar.gz``) at ``base_url`` and one folder level down, with sizes.

    Looks where :func:`resolve_tarball` looks: a local folder (or ``file://`` URL)
    and its subfolders, or the HTML directory listing of an HTTP(S) base and of the
    folders it links to; HTTP sizes come from one ``HEAD`` request per tarball.
    Sorted by branch name, other tarballs last. Raises :class:`LensgenError` when
    the base cannot be reached.
    """
    path = local_path(base_url)
    if path is not None:
        if path.is_file():
            files = [path]
        elif path.is_dir():
            subdirs = sorted(p for p in path.iterdir() if p.is_dir())
            files = [f for d in [path, *subdirs] for f in sorted(d.glob("*.tar.gz"))]
        else:
            raise LensgenError(f"--base-url {base_url}: no such file or folder")
        offers = {
            str(f): Offer(_branch_of(f.name), str(f), f.stat().st_size)
            for f in files
            if f.is_file()
        }
    else:
        base = base_url if base_url.endswith("/") else base_url + "/"
        links = _listing(base, timeout)
        folders = [u for u in links if u.endswith("/") and u.startswith(base) and u != base]
        for folder in list(dict.fromkeys(folders))[:64]:
            links += _listing(folder, timeout)
        offers = {
            url: Offer(_branch_of(url), url, _http_size(url, timeout))
            for url in dict.fromkeys(u for u in links if u.endswith(".tar.gz"))
        }
    return sorted(offers.values(), key=lambda o: (o.branch is None, o.branch or "", o.url))


def format_size(size: int | None) -> str:
    """``"812 B"``, ``"1.5 kB"``, ``"4.2 GB"`` (powers of 1000), or ``"size unknown"``."""
    if size is None:
        return "size unknown"
    if size < 1000:
        return f"{size} B"
    value, units = size / 1000, ["kB", "MB", "GB", "TB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{value:.1f} {units[0]}"


def _varies(branch: str | None) -> bool:
    return branch is not None and not parse_branch(branch).constant_psf


def offer_lines(offers: list[Offer], base_url: str) -> list[str]:
    """One line per tarball (branch or file name, size, URL), then the branch count.

    Raises :class:`LensgenError` naming ``base_url`` when no GREAT3 branch is among
    ``offers``.
    """
    n_branches = len({o.branch for o in offers if o.branch is not None})
    if n_branches == 0:
        others = ", ".join(o.url for o in offers) or "none"
        raise LensgenError(
            f"no GREAT3 branch tarball (<branch>.tar.gz) found at {base_url} or one folder "
            f"level down; other tarballs: {others}"
        )
    lines = [
        f"{o.branch or _basename(o.url):<28} {format_size(o.size):>12}  {o.url}"
        + ("  (not read: its PSF varies over the field)" if _varies(o.branch) else "")
        for o in offers
    ]
    return [*lines, f"{n_branches} of {len(BRANCHES)} GREAT3 branches found at {base_url}"]


class Manifest:
    """Size and SHA-256 of every fetched file, kept as JSON in the cache folder."""

    def __init__(self, cache_dir: Path):
        self.path = Path(cache_dir) / MANIFEST_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())["files"]
            except (ValueError, KeyError, TypeError):
                raise LensgenError(
                    f"{self.path}: corrupt manifest; delete it and the cached files next to it"
                ) from None

    def get(self, name: str) -> dict[str, Any] | None:
        return self.entries.get(name)

    def record(self, key: str, **info: Any) -> None:
        self.entries[key] = dict(info)

    def save(self) -> None:
        text = json.dumps({"files": self.entries}, indent=1, sort_keys=True)
        atomic_write_text(self.path, text + "\n", overwrite=True)


def sha256_file(path: Path) -> tuple[int, str]:
    """Size (bytes) and SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class SourceStream(io.RawIOBase):
    """Read a tarball sequentially from a local file or over HTTP with resume.

    Over HTTP the bytes already in ``cache_file`` are read first, then the rest is
    requested with ``Range: bytes=<offset>-`` and appended to the cache, so a later
    run continues where this one stopped. A dropped connection is re-opened at the
    current offset up to ``retries`` times with waits of ``retry_wait · 2^k`` s.
    The SHA-256 of every byte handed out is accumulated in :attr:`sha256`.

    Parameters
    ----------
    url : str
        HTTP(S) URL or local path of the tarball.
    cache_file : Path or None
        Partial-download cache (HTTP only).
    on_bytes : callable(done, total), optional
        Progress callback; ``total`` is None when the size is unknown.
    """

    def __init__(
        self,
        url: str,
        cache_file: Path | None = None,
        retries: int = 5,
        retry_wait: float = 1.0,
        timeout: float = 30.0,
        on_bytes: Callable[[int, int | None], None] | None = None,
        known_total: int | None = None,
    ):
        super().__init__()
        self.url = url
        self.retries = retries
        self.retry_wait = retry_wait
        self.timeout = timeout
        self.on_bytes = on_bytes
        self.position = 0
        self.total: int | None = known_total
        self.network_bytes = 0
        self._digest = hashlib.sha256()
        self._response = None
        self._local = None if _is_http(url) else open(local_path(url), "rb")  # noqa: SIM115
        self._cache_path = cache_file
        self._cache_read = None
        self._cache_write = None
        self.cached_bytes = 0
        if self._local is not None:
            self.total = os.fstat(self._local.fileno()).st_size
        elif cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            if cache_file.exists():
                self.cached_bytes = cache_file.stat().st_size
                self._cache_read = open(cache_file, "rb")  # noqa: SIM115

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        check_interrupt()  # between blocks: the cache holds whole blocks only
        view = memoryview(buffer).cast("B")
        if self._local is not None:
            n = self._local.readinto(view)
        elif self.total is not None and self.position >= self.total:
            n = 0
        elif self.position < self.cached_bytes:
            n = self._cache_read.readinto(view[: self.cached_bytes - self.position])
        else:
            n = self._read_network(view)
        if n:
            self._digest.update(view[:n])
            self.position += n
            if self.on_bytes is not None:
                self.on_bytes(self.position, self.total)
        return n

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.position}-"} if self.position else {}
        try:
            resp = urllib.request.urlopen(_request(self.url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and self.total in (None, self.position):
                self.total = self.position  # the cache already holds the whole file
                self._response = io.BytesIO(b"")
                return
            if exc.code >= 500:
                raise ConnectionError(f"HTTP {exc.code}") from None
            raise LensgenError(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
        skip = 0
        if resp.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != self.position:
                resp.close()
                raise LensgenError(f"{self.url}: server answered a bad Content-Range")
            if match.group(2) != "*":
                self.total = int(match.group(2))
        else:
            skip = self.position  # the server ignored Range: drop what we already have
            length = resp.headers.get("Content-Length")
            self.total = int(length) if length else None
        while skip:
            dropped = len(resp.read(min(skip, _CHUNK)))
            if not dropped:
                raise ConnectionError("connection closed while skipping cached bytes")
            skip -= dropped
        self._response = resp

    def _read_network(self, view: memoryview) -> int:
        attempt = 0
        while True:
            try:
                with interruptible():  # no JAX work here: Ctrl-C need not wait for the network
                    if self._response is None:
                        self._open()
                    n = self._response.readinto(view[:_CHUNK])
                if n == 0 and self.total is not None and self.position < self.total:
                    raise ConnectionError("connection closed early")
                break
            except _NETWORK_ERRORS as exc:
                self._drop_response()
                if attempt >= self.retries:
                    raise _no_network(self.url, exc) from None
                with interruptible():
                    time.sleep(self.retry_wait * 2**attempt)
                attempt += 1
        if n and self._cache_path is not None:
            if self._cache_write is None:
                self._cache_write = open(self._cache_path, "ab")  # noqa: SIM115
            self._cache_write.write(view[:n])
        self.network_bytes += n
        return n

    def _drop_response(self) -> None:
        if self._response is not None:
            try:
                self._response.close()
            except OSError:
                pass
        self._response = None

    @property
    def complete(self) -> bool:
        return self.total is not None and self.position >= self.total

    def close(self) -> None:
        self._drop_response()
        for fh in (self._local, self._cache_read, self._cache_write):
            if fh is not None:
                fh.close()
        super().close()
