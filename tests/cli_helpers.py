"""Shared helpers for tests that run the CLI as a user would and check nothing was touched."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lensgen.cli.app import app

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
