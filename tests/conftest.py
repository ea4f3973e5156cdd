"""Shared fixtures and helpers.

* Precision: every test runs with 64-bit JAX (physics is compared with lenstronomy to
  1e-8) unless it is marked ``float32``; then it runs in JAX's default 32-bit mode, as
  ``lensgen simulate`` and ``lensgen train-vae`` do for users. The setting is restored
  after each test, also when a command switched it.
* ``key``: an explicit PRNG key.
* CLI helpers (``from conftest import run_cli, snapshot, assert_refused``): run
  ``lensgen`` in-process as a user would and check that no file was touched.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from lensgen.cli.app import app  # noqa: E402

# Programs compiled by one test (or worker) are reused by the others: several modules
# fit the same toy problems. Every program is kept, however quick to compile: the two
# workers otherwise compile the same few thousand single operations twice (about 80 s
# of the suite's compile time; BENCHMARKS.md, "Test suite"). The cache lives in the
# pytest cache folder of the checkout; LENSGEN_TEST_JAX_CACHE names another folder, or
# turns it off when empty.
JAX_CACHE = os.environ.get(
    "LENSGEN_TEST_JAX_CACHE", str(Path(__file__).parents[1] / ".pytest_cache" / "jax")
)
if JAX_CACHE:
    jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
# `lensgen` run as a subprocess by a test uses the same cache, not the user's.
os.environ["LENSGEN_JAX_CACHE"] = JAX_CACHE


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "float32: run in JAX's default 32-bit mode (as simulate and train-vae run)"
    )


def _set_precision(request):
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", request.node.get_closest_marker("float32") is None)
    return before


@pytest.fixture(scope="module", autouse=True)
def module_precision(request):
    """The module's precision, set before its module-scoped fixtures are built."""
    before = _set_precision(request)
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(autouse=True)
def precision(request, module_precision):
    """64-bit JAX, or 32-bit for tests marked ``float32``; restored afterwards (a
    command under test may switch it)."""
    before = _set_precision(request)
    yield jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", before)


@pytest.fixture
def key():
    return jax.random.key(0)


runner = CliRunner()


def run_cli(*args):
    """``lensgen ARGS`` in-process; arguments are turned into strings."""
    return runner.invoke(app, [str(a) for a in args])


class Snapshot(dict):
    """Bytes of every file under ``folder`` (None for a sub-folder), to compare later."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        super().__init__(
            (p, p.read_bytes() if p.is_file() else None) for p in sorted(self.folder.rglob("*"))
        )

    def unchanged(self) -> bool:
        """True when the folder holds exactly the same files with the same bytes."""
        return Snapshot(self.folder) == self

    def kept(self) -> bool:
        """True when every file of the snapshot is still there with the same bytes
        (new files allowed)."""
        return all(
            p.exists() and (data is None or p.read_bytes() == data) for p, data in self.items()
        )


def snapshot(folder: Path) -> Snapshot:
    return Snapshot(folder)


def assert_refused(res, before: Snapshot, *needles: str) -> str:
    """Non-zero exit, one ``error:`` line holding every needle, no traceback, nothing changed.

    Returns the error line.
    """
    assert res.exit_code not in (0, None), res.output
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], (needle, res.output)
    assert before.unchanged(), "files changed in " + str(before.folder)
    return errors[0]
