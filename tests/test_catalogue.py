"""Catalogue runs (issue 16): many lenses in one `lensgen infer`, resumable, one table.

Toy size: 24 × 24 Sérsic-source lenses fitted by MAP with few steps, so that the
catalogue machinery (listing, one problem per group, per-lens keys, records, resume,
failures, the table, two processes) is what is tested; the inference itself is
tested elsewhere.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import assert_refused, run_cli, snapshot

from lensgen.errors import LensgenError
from lensgen.infer import catalogue
from lensgen.infer.problem import InferConfig, build_problem
from lensgen.infer.report import bestfit_values
from lensgen.infer.run import run_inference
from lensgen.io.fits import read_observations

CONFIG = InferConfig(method="map", source="SERSIC_ELLIPSE", lens=("SIE", "SHEAR"),
                     map_steps=150, map_restarts=1)  # fmt: skip
FLAGS = ["--method", "map", "--source", "sersic", "--lens", "SIE,SHEAR", "--map-steps", "150",
         "--map-restarts", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder with a cube of three lenses and one file that cannot be read."""
    folder = tmp_path_factory.mktemp("lenses")
    res = run_cli("simulate", "--rein", "1.0", "--source", "sersic", "--npix", "24",
                  "--pixel-scale", "0.1", "--n", "3", "--seed", "5", "--out", folder / "cube.fits")  # fmt: skip
    assert res.exit_code == 0, res.output
    fits.PrimaryHDU(np.ones((24, 24), np.float32)).writeto(folder / "broken.fits")  # no scale
    return folder


@pytest.fixture(scope="module")
def first_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("catalogue")
    run = catalogue.run_catalogue(CONFIG, [inputs], out, seed=3)
    return out, run


def test_entries_cover_cubes_folders_and_patterns(inputs):
    entries = catalogue.find_entries([inputs])
    assert [e.id for e in entries] == ["broken", "cube_0", "cube_1", "cube_2"]
    assert [e.index for e in entries] == [None, 0, 1, 2]
    assert [e.id for e in catalogue.find_entries([str(inputs / "cu*.fits")])] == [
        "cube_0", "cube_1", "cube_2"]  # fmt: skip
    with pytest.raises(LensgenError, match="no file matches the pattern"):
        catalogue.find_entries([str(inputs / "nothing*.fits")])
    with pytest.raises(LensgenError, match="observation file not found: .*absent.fits"):
        catalogue.find_entries([inputs / "absent.fits"])


def test_files_that_are_not_fits_fail_alone(tmp_path):
    """A corrupt or truncated file in a folder is one failed row with its reason, not the
    end of the run (nothing is compiled: no lens of the folder can be read)."""
    folder = tmp_path / "lenses"
    folder.mkdir()
    (folder / "notes.fits").write_text("not a FITS file")
    (folder / "truncated.fits").write_bytes(b"")
    entries = catalogue.find_entries([folder])
    assert [(e.id, e.index) for e in entries] == [("notes", None), ("truncated", None)]
    run = catalogue.run_catalogue(CONFIG, [folder], tmp_path / "out", seed=0)
    assert (run.done, run.failed) == (0, 2)
    table = Table.read(tmp_path / "out" / "catalogue.csv", format="ascii.csv")
    assert list(table["status"]) == ["failed", "failed"]
    assert all("not a readable FITS file" in r for r in table["reason"])
    # Through the CLI: the summary names the first failure, and a run that inferred
    # nothing exits non-zero.
    res = run_cli("infer", folder, *FLAGS, "-o", tmp_path / "cli")
    assert res.exit_code == 1, res.output
    assert "0 lenses inferred, 2 failed" in res.output
    line = " ".join(res.output.split())  # the console wraps long lines
    assert "first failure notes: " in line and "not a readable FITS file" in line


def test_ids_that_collide_are_refused(inputs, tmp_path):
    other = tmp_path / "cube.fits"
    other.write_bytes((inputs / "cube.fits").read_bytes())
    with pytest.raises(LensgenError, match="two inputs give the lens id 'cube_0'"):
        catalogue.find_entries([inputs / "cube.fits", other])


def test_table_has_one_row_per_lens_and_records_the_failure(first_run, inputs):
    out, run = first_run
    assert (run.done, run.failed, run.skipped) == (3, 1, 0)
    table = Table.read(out / "catalogue.fits")
    assert list(table["id"]) == ["broken", "cube_0", "cube_1", "cube_2"]
    assert list(table["status"]) == ["failed", "done", "done", "done"]
    assert "broken.fits" in table["reason"][0] and "pixel scale" in table["reason"][0]
    assert np.isnan(np.ma.filled(table["lens.0.theta_E.mean"], np.nan)[0])  # missing, not 0
    done = table[table["status"] == "done"]
    truth = done["lens.0.theta_E.truth"]
    assert np.all(np.abs(done["lens.0.theta_E.mean"] - truth) < 0.05)
    assert np.all(done["chi2"] < 1.5) and np.all(done["time_s"] > 0)
    csv = Table.read(out / "catalogue.csv", format="ascii.csv")
    assert list(csv["id"]) == list(table["id"])


def test_a_lens_equals_its_single_lens_run_with_the_same_key(first_run, inputs):
    out, _ = first_run
    obs = read_observations(inputs / "cube.fits")[1]
    problem = build_problem(CONFIG, obs)
    (result,) = run_inference(catalogue.lens_key(3, "cube_1"), problem, CONFIG)
    record = catalogue.read_record(out, catalogue.Entry("cube_1", inputs / "cube.fits", 1))
    for name, value in bestfit_values(problem, result).items():
        if np.ndim(value) == 0:
            assert record["params"][name]["mean"] == pytest.approx(float(value), abs=1e-8)


def test_a_rerun_skips_finished_lenses_and_retries_failed_ones(first_run, inputs):
    out, _ = first_run
    records = sorted((out / catalogue.RECORDS).glob("cube_*.json"))
    before = {p: p.read_bytes() for p in records}
    run = catalogue.run_catalogue(CONFIG, [inputs], out, seed=3)
    assert (run.done, run.failed, run.skipped) == (0, 1, 3)
    assert all(p.read_bytes() == data for p, data in before.items())


def test_other_settings_into_the_same_folder_are_refused(first_run, inputs):
    out, _ = first_run
    other = dataclasses.replace(CONFIG, map_steps=151)
    with pytest.raises(LensgenError, match="holds a catalogue run with other settings"):
        catalogue.run_catalogue(other, [inputs], out, seed=3)


def test_a_run_killed_halfway_resumes_without_redoing_lenses(inputs, tmp_path, monkeypatch):
    calls = []
    real = catalogue.run_inference

    def interrupted(key, problem, config):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(key, problem, config)

    monkeypatch.setattr(catalogue, "run_inference", interrupted)
    with pytest.raises(KeyboardInterrupt):
        catalogue.run_catalogue(CONFIG, [inputs / "cube.fits"], tmp_path, seed=3)
    assert [p.name for p in (tmp_path / catalogue.RECORDS).glob("*.json")] == ["cube_0.json"]
    assert not (tmp_path / "catalogue.fits").exists()
    calls.clear()
    monkeypatch.setattr(catalogue, "run_inference", real)
    run = catalogue.run_catalogue(CONFIG, [inputs / "cube.fits"], tmp_path, seed=3)
    assert (run.done, run.skipped) == (2, 1)
    assert len(Table.read(tmp_path / "catalogue.fits")) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_a_catalogue_into_one_table(first_run, inputs, tmp_path):
    """Two `jax.distributed` processes on localhost: each infers its share, process 0
    writes one table, equal to the one-process run's."""
    out = tmp_path / "two"
    port = _free_port()
    env = {**os.environ, "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "lensgen", "infer", str(inputs / "cube.fits"), "--out", str(out),
           *FLAGS, "--seed", "3", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]  # fmt: skip
    procs = [subprocess.Popen([*cmd, "--process-id", str(k)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in (0, 1)]  # fmt: skip
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "catalogue: 2 lenses inferred" in logs[0] and "catalogue: 1 lens inferred" in logs[1]
    two = Table.read(out / "catalogue.fits")
    one = Table.read(first_run[0] / "catalogue.fits")
    one = one[one["file"] == str(inputs / "cube.fits")]
    assert list(two["id"]) == list(one["id"]) and set(two["status"]) == {"done"}
    np.testing.assert_allclose(two["lens.0.theta_E.mean"], one["lens.0.theta_E.mean"], rtol=1e-7)


def test_catalogue_flags_are_checked_before_any_work(inputs, tmp_path):
    before = snapshot(tmp_path)
    res = run_cli("infer", inputs / "cube.fits", "--out", tmp_path / "o", "--coordinator",
                  "127.0.0.1:1234")  # fmt: skip
    assert_refused(res, before, "--coordinator, --num-processes and --process-id go together")
    res = run_cli("infer", inputs, "--out", tmp_path / "o", "--subhalos", "1")
    assert_refused(res, before, "--subhalos fits one observation")
    res = run_cli("infer", str(tmp_path / "none*.fits"), "--out", tmp_path / "o")
    assert_refused(res, before, "no file matches the pattern")


def test_calibration_benchmark_runs_at_toy_size(tmp_path, monkeypatch, capsys):
    """benchmarks/calibration.py (a wrapper over the catalogue) at K = 2, 16 × 16 px."""
    import runpy

    script = Path(__file__).parents[1] / "benchmarks" / "calibration.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--k", "2", "--method", "svi", "--source",
                                      "sersic", "--npix", "16", "--out", str(tmp_path / "c")])  # fmt: skip
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "K = 2 (2 inferred)" in out
    for name in ("lens.0.theta_E", "lens.0.center_x", "lens.0.center_y", "source.0.R_sersic"):
        assert f"{name}: coverage 68%" in out
    assert out.index("lens.0.theta_E: coverage") < out.index("source.0.R_sersic: coverage")
    assert "(mean − truth)/sd: mean" in out
    assert len(Table.read(tmp_path / "c" / "catalogue.fits")) == 2


def test_an_input_named_like_an_output_is_refused(inputs, tmp_path):
    cube = tmp_path / "catalogue.fits"
    cube.write_bytes((inputs / "cube.fits").read_bytes())
    before = snapshot(tmp_path)
    res = run_cli("infer", cube, "--out", tmp_path)
    assert_refused(res, before, "catalogue.fits is both an input and an output")
