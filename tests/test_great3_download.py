"""Download path of ``lensgen download-great3`` against a bounded localhost HTTP mirror.

The mirror serves a small synthetic GREAT3-format branch and supports HEAD,
``Range``, directory listings and one deliberately dropped response body.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jax
import numpy as np
import pytest

from lensgen.data.build import Great3Config, build_great3_dataset
from lensgen.data.great3 import Manifest, SourceStream, parse_branch, resolve_tarball
from lensgen.data.synthetic import make_branch_tarball
from lensgen.errors import LensgenError
from lensgen.io.dataset import read_dataset

BRANCH = "control-ground-constant"


class MirrorServer:
    """Serve ``root`` on 127.0.0.1 with HEAD, Range, listings and one optional dropped body.

    ``requests`` logs (method, path, range start); ``drop_once`` names files whose
    first GET is cut off half-way through the body.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str, int]] = []
        self.drop_once: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                rel = self.path.split("?")[0].lstrip("/")
                target = server.root / rel
                match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                start = int(match.group(1)) if match else 0
                server.requests.append((self.command, "/" + rel, start))
                if target.is_dir():
                    links = "".join(
                        f'<a href="{p.name}{"/" if p.is_dir() else ""}">{p.name}</a>\n'
                        for p in sorted(target.iterdir())
                    )
                    data = f"<html><body>{links}</body></html>".encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if body:
                        self.wfile.write(data)
                    return
                if not target.is_file():
                    self.send_error(404)
                    return
                data = target.read_bytes()
                total = len(data)
                if match:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    self.send_response(200)
                part = data[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if not body:
                    return
                if rel in server.drop_once:
                    server.drop_once.discard(rel)
                    self.wfile.write(part[: len(part) // 2])
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(part)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory):
    """public/branches/<branch>.tar.gz: 4 synthetic subfields of 10 × 10 stamps."""
    root = tmp_path_factory.mktemp("mirror")
    folder = root / "public" / "branches"
    tarball, _ = make_branch_tarball(jax.random.key(3), folder, parse_branch(BRANCH), 4, grid=10)
    (root / "public" / "README.txt").write_text("GREAT3 public data\n")
    return root, tarball


def _config(url: str, cache: Path, **kw) -> Great3Config:
    defaults = dict(
        branch=BRANCH,
        base_url=url,
        cache_dir=str(cache),
        snr_min=5.0,
        snr_max=1000.0,
        val_fraction=0.0,  # the download path, not the split: one image is enough
        retry_wait=0.01,
        retries=3,
        timeout=5.0,
    )
    return Great3Config(**{**defaults, **kw})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_full_download_builds_dataset_and_manifest(mirror_root, tmp_path):
    root, tarball = mirror_root
    with MirrorServer(root) as server:
        url = server.url + "public/"
        # Not at the base: found through the listing, one subfolder down.
        assert resolve_tarball(url, parse_branch(BRANCH), 5.0) == url + f"branches/{BRANCH}.tar.gz"
        cfg = _config(url, tmp_path / "cache", val_fraction=0.25)
        ds = build_great3_dataset(cfg, tmp_path / "ds.fits")
    back = read_dataset(tmp_path / "ds.fits")
    assert len(back) == len(ds) > 200  # 4 images × 100 stamps, loose S/N cut
    assert back.stamps.shape[1:] == (48, 48) and back.pixel_scale == 0.2
    assert back.psf.shape == (4, 25, 25)  # one PSF per subfield, each of unit sum
    np.testing.assert_allclose(back.psf.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert set(np.unique(back.catalog["subfield"])) == {0, 1, 2, 3}
    val = back.catalog["split"] == "val"
    assert set(back.catalog["subfield"][val]).isdisjoint(back.catalog["subfield"][~val])
    entry = Manifest(tmp_path / "cache").get(f"{BRANCH}.tar.gz")
    assert entry["complete"] and entry["size"] == tarball.stat().st_size
    assert entry["sha256"] == _sha(tarball)
    assert back.sources[0]["sha256"] == _sha(tarball)
    image = tmp_path / "cache" / BRANCH / "image-002-0.fits"
    rec = Manifest(tmp_path / "cache").get(f"{BRANCH}/image-002-0.fits")
    assert rec["sha256"] == _sha(image) and rec["size"] == image.stat().st_size


def test_early_stop_then_resume_with_range(mirror_root, tmp_path):
    root, tarball = mirror_root
    cache = tmp_path / "cache"
    part = cache / f"{BRANCH}.tar.gz"
    with MirrorServer(root) as server:
        url = server.url + "public/"
        ds = build_great3_dataset(_config(url, cache, max_images=1), tmp_path / "a.fits")
        assert set(np.unique(ds.catalog["subfield"])) == {0}
        first = part.stat().st_size
        assert first < 0.4 * tarball.stat().st_size  # stopped after 1 of 4 subfields
        assert part.read_bytes() == tarball.read_bytes()[:first]
        ds = build_great3_dataset(_config(url, cache, max_images=3), tmp_path / "b.fits")
        ranges = [
            start
            for method, path, start in server.requests
            if method == "GET" and path.endswith(".tar.gz")
        ]
    assert set(np.unique(ds.catalog["subfield"])) == {0, 1, 2}
    assert ranges == [0, first]  # the second run asked only for the missing bytes
    assert part.read_bytes() == tarball.read_bytes()[: part.stat().st_size]
    assert Manifest(cache).get(f"{BRANCH}.tar.gz")["sha256"] == _sha(part)


def test_dropped_connection_is_resumed(mirror_root, tmp_path):
    root, tarball = mirror_root
    with MirrorServer(root) as server:
        server.drop_once.add(f"public/branches/{BRANCH}.tar.gz")
        build_great3_dataset(_config(server.url + "public/", tmp_path / "c"), tmp_path / "d.fits")
        starts = [s for m, p, s in server.requests if m == "GET" and p.endswith(".tar.gz")]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0
    assert Manifest(tmp_path / "c").get(f"{BRANCH}.tar.gz")["sha256"] == _sha(tarball)


def test_corrupted_cache_fails_checksum(mirror_root, tmp_path):
    root, _ = mirror_root
    cache = tmp_path / "cache"
    with MirrorServer(root) as server:
        url = server.url + "public/"
        build_great3_dataset(_config(url, cache, max_images=1), tmp_path / "a.fits")
        part = cache / f"{BRANCH}.tar.gz"
        data = bytearray(part.read_bytes())
        data[1000] ^= 0xFF
        part.write_bytes(bytes(data))
        with pytest.raises(LensgenError, match="does not match its manifest"):
            build_great3_dataset(_config(url, cache, max_images=2), tmp_path / "b.fits")
    assert not (tmp_path / "b.fits").exists()


def test_missing_branch_lists_what_was_found(mirror_root, tmp_path):
    root, _ = mirror_root
    with MirrorServer(root) as server:
        with pytest.raises(LensgenError) as err:
            resolve_tarball(server.url + "public/", parse_branch("full-space-variable"), 5.0)
    msg = str(err.value)
    assert "full-space-variable.tar.gz not found" in msg
    assert f"branches/{BRANCH}.tar.gz" in msg and "folders: branches/" in msg


def test_no_network_names_the_url(tmp_path):
    with MirrorServer(tmp_path) as server:
        url = server.url
    # The server is closed: nothing listens on that port any more.
    with pytest.raises(LensgenError, match=r"cannot reach http://127\.0\.0\.1.*--base-url"):
        build_great3_dataset(_config(url, tmp_path / "c"), tmp_path / "x.fits")


def test_stream_retries_give_up_with_clear_error(tmp_path):
    with MirrorServer(tmp_path) as server:
        url = server.url + "gone.tar.gz"
    stream = SourceStream(url, tmp_path / "p", retries=1, retry_wait=0.01, timeout=2.0)
    with pytest.raises(LensgenError, match="cannot reach"):
        stream.read(10)
    stream.close()


def test_local_folder_and_file_url(mirror_root, tmp_path):
    root, tarball = mirror_root
    local = tmp_path / "copy"
    shutil.copytree(root / "public", local)
    found = resolve_tarball(str(local), parse_branch(BRANCH))
    assert found == str(local / "branches" / f"{BRANCH}.tar.gz")
    ds = build_great3_dataset(
        _config(local.as_uri(), tmp_path / "c", max_images=2, n_stamps=50), tmp_path / "ds.fits"
    )
    assert len(ds) == 50 and ds.meta["NCAPPED"] > 0
    assert ds.sources[0]["sha256"] != _sha(tarball)  # only a prefix was read
    with pytest.raises(
        LensgenError,
        match="real_galaxy-space-constant.tar.gz not found.*found: "
        "branches/control-ground-constant.tar.gz",
    ):
        resolve_tarball(str(local), parse_branch("real_galaxy-space-constant"))
