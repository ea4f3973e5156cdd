"""The CLI keeps compiled programs between runs (JAX's persistent compilation cache).

Each run is a fresh process, as a user's is: the cache is set up before JAX is
imported, which an in-process CLI call (JAX already loaded) cannot show.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _simulate(tmp_path: Path, cache: str | None, name: str, npix: int = 24) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.pop("LENSGEN_JAX_CACHE", None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "home-cache")
    if cache is not None:
        env["LENSGEN_JAX_CACHE"] = cache
    cmd = [sys.executable, "-m", "lensgen", "simulate", "--source", "sersic", "--npix", str(npix),
           "--no-preview", "--out", str(tmp_path / name)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compilation cache" not in done.stdout + done.stderr  # no failed store


def test_a_second_run_compiles_nothing_new_and_the_cache_can_be_switched_off(tmp_path):
    default = tmp_path / "home-cache" / "lensgen" / "jax"  # $XDG_CACHE_HOME/lensgen/jax
    # An entry written by a process without the cache's size cap (no access-time stamp),
    # which would make JAX refuse to store anything new.
    default.mkdir(parents=True)
    (default / "jit_stray-0123abcd-cache").write_bytes(b"x")
    _simulate(tmp_path, None, "a.fits")
    first = sorted(p.name for p in default.iterdir())
    assert any(n.endswith("-cache") for n in first), "the first run stored no program"
    _simulate(tmp_path, None, "b.fits")
    assert sorted(p.name for p in default.iterdir()) == first  # all from the cache
    # LENSGEN_JAX_CACHE="" turns the cache off: another image size, which would have
    # compiled and stored new programs, leaves the folder as it was.
    _simulate(tmp_path, "", "c.fits", npix=28)
    assert sorted(p.name for p in default.iterdir()) == first


def test_unstamped_cache_entries_get_a_stamp(tmp_path):
    from lensgen.cli.app import date_unstamped_entries

    (tmp_path / "jit_a-11-cache").write_bytes(b"a")
    (tmp_path / "jit_b-22-cache").write_bytes(b"b")
    (tmp_path / "jit_b-22-atime").write_bytes((5).to_bytes(8, "little"))
    assert date_unstamped_entries(tmp_path) == 1
    stamp = int.from_bytes((tmp_path / "jit_a-11-atime").read_bytes(), "little")
    assert stamp == (tmp_path / "jit_a-11-cache").stat().st_mtime_ns
    assert int.from_bytes((tmp_path / "jit_b-22-atime").read_bytes(), "little") == 5
    assert date_unstamped_entries(tmp_path) == 0
    assert date_unstamped_entries(tmp_path / "missing") == 0
