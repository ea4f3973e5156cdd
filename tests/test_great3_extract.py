"""Safe streaming extraction and bad-input handling of GREAT3 tarballs."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from lensgen.data.build import Great3Config, build_great3_dataset
from lensgen.data.great3 import BRANCHES, parse_branch
from lensgen.data.tarstream import classify, iter_subfields
from lensgen.errors import LensgenError

BRANCH = "control-ground-constant"
PREFIX = "control/ground/constant/"


def tar_gz(members: list[tuple[str, bytes | tarfile.TarInfo]]) -> bytes:
    """A tar.gz from (name, data) pairs; a TarInfo instead of data is added as is."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fits_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(array).writeto(buf)
    return buf.getvalue()


def _subfield(sub: int = 0, grid: int = 2, image_shape=None, catalog=True) -> list:
    rng = np.random.default_rng(sub)
    shape = image_shape or (48 * grid, 48 * grid)
    image = rng.normal(size=shape).astype(np.float32)
    yy, xx = np.mgrid[:48, :48] - 24.0
    blob = 40.0 * np.exp(-(xx**2 + yy**2) / 8.0)  # a PSF-sized galaxy, S/N ≈ 50
    tiled = np.tile(blob, (-(-shape[0] // 48), -(-shape[1] // 48)))
    image += tiled[: shape[0], : shape[1]].astype(np.float32)
    star = np.zeros((144, 144), np.float32)
    star[23:26, 23:26] = [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    n = grid * grid
    jj, ii = np.divmod(np.arange(n), grid)
    text = "# x y ID\n" + "".join(
        f"{48 * i + 24} {48 * j + 24} {k}\n" for k, (i, j) in enumerate(zip(ii, jj, strict=True))
    )
    members = [
        (f"{PREFIX}image-{sub:03d}-0.fits", _fits_bytes(image)),
        (f"{PREFIX}starfield_image-{sub:03d}-0.fits", _fits_bytes(star)),
    ]
    if catalog:
        members.append((f"{PREFIX}galaxy_catalog-{sub:03d}.txt", text.encode()))
    return members


def _build(tmp_path: Path, data: bytes, **kw):
    src = tmp_path / "src" / f"{BRANCH}.tar.gz"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    cfg = Great3Config(
        branch=BRANCH,
        base_url=str(src.parent),
        cache_dir=str(tmp_path / "cache"),
        snr_min=1.0,
        snr_max=1e6,
        **kw,
    )
    return build_great3_dataset(cfg, tmp_path / "out" / "ds.fits")


@pytest.fixture(autouse=True)
def _out(tmp_path):
    (tmp_path / "out").mkdir()


def test_branch_names():
    assert len(BRANCHES) == 20 and "variable_psf-space-variable" in BRANCHES
    assert parse_branch("multiepoch-space-constant").pixel_scale == 0.1
    assert parse_branch("control-space-constant").stamp_size == 96
    with pytest.raises(LensgenError, match="unknown GREAT3 branch 'control-gound'.*full-space"):
        parse_branch("control-gound")


def test_member_classification():
    assert classify("a/b/image-012-0.fits") == ("image", 12, 0)
    assert classify("starfield_image-199-3.fits") == ("starfield_image", 199, 3)
    assert classify("galaxy_catalog-007.txt") == ("galaxy_catalog.txt", 7, 0)
    assert classify("deep_image-000-0.fits") is None and classify("image-1-0.fits") is None


def test_good_tarball_yields_subfield(tmp_path):
    data = tar_gz(_subfield(0) + _subfield(1))
    ds = _build(tmp_path, data)
    assert ds.sources[0]["size"] == len(data)
    assert ds.sources[0]["sha256"] == hashlib.sha256(data).hexdigest()
    # 8 stamps pass; validation takes whole subfields but only its 10 % share.
    assert len(ds) == 5 and ds.psf.shape == (2, 25, 25)
    split = ds.catalog["split"]
    assert len(set(ds.catalog["subfield"][split == "val"])) == 1 and (split == "val").sum() == 1
    assert set(ds.catalog["subfield"][split == "train"]).isdisjoint(
        ds.catalog["subfield"][split == "val"]
    )
    for k in ds.psf:
        assert k[12, 12] == k.max() and abs(k.sum() - 1) < 1e-6


@pytest.mark.parametrize(
    "member, message",
    [
        ("../evil-image-000-0.fits", "'..'"),
        (f"{PREFIX}../../image-000-0.fits", "'..'"),
        ("/tmp/image-000-0.fits", "absolute path"),
        ("link", "link member"),
        ("hard", "link member"),
        ("dev", "special member"),
    ],
)
def test_dangerous_members_refused(tmp_path, member, message):
    if member in ("link", "hard", "dev"):
        info = tarfile.TarInfo(f"{PREFIX}image-001-0.fits")
        info.type = {"link": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dev": tarfile.CHRTYPE}[
            member
        ]
        info.linkname = "../../../../etc/passwd"
        entries = [(info.name, info)]
    else:
        entries = [(member, b"SIMPLE  = T")]
    with pytest.raises(LensgenError, match=message):
        _build(tmp_path, tar_gz(_subfield(0, catalog=False) + entries))
    written = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        f"{BRANCH}.tar.gz",
        "image-000-0.fits",
        "manifest.json",
        "starfield_image-000-0.fits",
    ]
    assert not (tmp_path / "out" / "ds.fits").exists()


def test_truncated_gzip(tmp_path):
    data = tar_gz(_subfield(0, grid=4))
    with pytest.raises(LensgenError, match="corrupt or truncated"):
        _build(tmp_path, data[: len(data) // 2])
    with pytest.raises(LensgenError, match="corrupt"):
        _build(tmp_path, b"not a gzip file at all" * 100)
    assert not (tmp_path / "out" / "ds.fits").exists()


def test_missing_catalogue(tmp_path):
    with pytest.raises(LensgenError, match="subfield 000 lacks galaxy_catalog-000.fits/.txt"):
        _build(tmp_path, tar_gz(_subfield(0, catalog=False)))


def test_image_of_wrong_size(tmp_path):
    with pytest.raises(
        LensgenError, match=r"image-000-0.fits: image of size 100 × 96 is not a grid"
    ):
        _build(tmp_path, tar_gz(_subfield(0, image_shape=(96, 100))))


def test_stream_stops_early(tmp_path):
    data = tar_gz(_subfield(0, grid=6) + _subfield(1, grid=6) + _subfield(2, grid=6))
    stream = io.BytesIO(data)
    gen = iter_subfields(stream, tmp_path / "x", "mem")
    first = next(gen)
    gen.close()
    assert first.subfield == 0 and first.complete
    assert stream.tell() < 0.5 * len(data)
    assert not (tmp_path / "x" / "image-002-0.fits").exists()
