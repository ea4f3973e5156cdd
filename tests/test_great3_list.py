"""``lensgen download-great3 --list``: the tarballs a mirror offers, with their sizes.

The tarballs here are a few dummy bytes: listing reads names and sizes, never contents.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_refused, run_cli, snapshot
from test_great3_download import MirrorServer

from lensgen.data.great3 import Offer, format_size, list_offers, offer_lines
from lensgen.errors import LensgenError


def _local_mirror(root: Path) -> Path:
    """Two branches (top level, one subfolder down), an unrelated tarball, and a branch
    two levels down that the listing must not reach."""
    root.mkdir()
    (root / "control-ground-constant.tar.gz").write_bytes(b"a" * 1500)
    (root / "sub").mkdir()
    (root / "sub" / "real_galaxy-space-variable.tar.gz").write_bytes(b"b" * 812)
    (root / "sub" / "notes.tar.gz").write_bytes(b"c" * 7)
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "full-space-constant.tar.gz").write_bytes(b"d" * 5)
    (root / "README.txt").write_text("not a tarball\n")
    return root


def test_local_folder_lists_branches_and_sizes(tmp_path):
    root = _local_mirror(tmp_path / "mirror")
    expected = [
        Offer("control-ground-constant", str(root / "control-ground-constant.tar.gz"), 1500),
        Offer(
            "real_galaxy-space-variable", str(root / "sub/real_galaxy-space-variable.tar.gz"), 812
        ),
        Offer(None, str(root / "sub" / "notes.tar.gz"), 7),
    ]
    assert list_offers(str(root)) == expected
    assert list_offers(root.as_uri()) == expected
    lines = offer_lines(expected, str(root))
    assert [line.split()[:3] for line in lines[:3]] == [
        ["control-ground-constant", "1.5", "kB"],
        ["real_galaxy-space-variable", "812", "B"],
        ["notes.tar.gz", "7", "B"],
    ]
    assert lines[3] == f"2 of 20 GREAT3 branches found at {root}"


def test_http_mirror_sizes_from_head(tmp_path):
    folder = tmp_path / "public" / "branches"
    folder.mkdir(parents=True)
    (folder / "control-space-variable.tar.gz").write_bytes(b"x" * 2345)
    (tmp_path / "public" / "README.txt").write_text("GREAT3 public data\n")
    with MirrorServer(tmp_path) as server:
        url = server.url + "public/"
        tarball = url + "branches/control-space-variable.tar.gz"
        assert list_offers(url, 5.0) == [Offer("control-space-variable", tarball, 2345)]
        on_tarball = [(m, s) for m, p, s in server.requests if p.endswith(".tar.gz")]
        assert on_tarball == [("HEAD", 0)]  # sized by HEAD; the body is never fetched
        # A server that refuses HEAD leaves the size unknown; the listing still works.
        server.httpd.RequestHandlerClass.do_HEAD = lambda self: self.send_error(405)
        offers = list_offers(url, 5.0)
    assert offers == [Offer("control-space-variable", tarball, None)]
    assert offer_lines(offers, url)[0].split() == [
        "control-space-variable", "size", "unknown", tarball
    ]  # fmt: skip


def test_unreachable_mirror_names_the_url(tmp_path):
    with MirrorServer(tmp_path) as server:
        url = server.url
    with pytest.raises(LensgenError, match=r"cannot reach http://127\.0\.0\.1.*--base-url"):
        list_offers(url, 5.0)


def test_format_size():
    assert [format_size(n) for n in (None, 0, 999, 1500, 2_345_678, 4_200_000_000)] == [
        "size unknown", "0 B", "999 B", "1.5 kB", "2.3 MB", "4.2 GB"
    ]  # fmt: skip


def test_cli_list_prints_offers_and_writes_nothing(tmp_path, monkeypatch):
    root = _local_mirror(tmp_path / "mirror")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = snapshot(tmp_path)
    res = run_cli("download-great3", "--list", "--base-url", root)
    assert res.exit_code == 0, res.output
    assert [line.split() for line in res.output.splitlines()] == [
        ["control-ground-constant", "1.5", "kB", str(root / "control-ground-constant.tar.gz")],
        ["real_galaxy-space-variable", "812", "B",
         str(root / "sub" / "real_galaxy-space-variable.tar.gz")],
        ["notes.tar.gz", "7", "B", str(root / "sub" / "notes.tar.gz")],
        ["2", "of", "20", "GREAT3", "branches", "found", "at", str(root)],
    ]  # fmt: skip
    assert before.unchanged()  # no cache folder, no great3.fits in the working folder
    assert not (tmp_path / "xdg").exists() and not (work / "great3.fits").exists()


@pytest.mark.parametrize("others", [[], ["notes.tar.gz"]], ids=["empty", "no-branch"])
def test_cli_list_without_branches_is_refused(tmp_path, monkeypatch, others):
    base = tmp_path / "mirror"
    base.mkdir()
    for name in others:
        (base / name).write_bytes(b"z")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    res = run_cli("download-great3", "--list", "--base-url", base)
    line = assert_refused(res, before, "no GREAT3 branch tarball", f"found at {base} ")
    assert res.exit_code == 1, line
    assert line.endswith("other tarballs: " + (str(base / others[0]) if others else "none"))


def test_refused_branches_are_marked_in_the_listing():
    offers = [
        Offer("control-ground-constant", "m/control-ground-constant.tar.gz", 10),
        Offer("full-space-constant", "m/full-space-constant.tar.gz", 20),
    ]
    first, second, last = offer_lines(offers, "m")
    assert "not read" not in first
    assert second.endswith("(not read: its PSF varies over the field)")
    assert last == "2 of 20 GREAT3 branches found at m"
