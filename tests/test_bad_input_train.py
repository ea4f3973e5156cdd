"""Bad input and Ctrl-C against `train-vae`, `fit-iaf` and `download-great3`, run as a user would.

A refused case exits non-zero with one `error:` line naming the problem, no
traceback, and every file that was there before byte-identical afterwards; the
checks come before any JAX work, so each takes well under a second. Ctrl-C is a
real SIGINT: to a `python -m lensgen` subprocess once it is working (it must end
with exit 130, not a crash, and leave the previous state intact), or raised in this
process at a chosen point of a run to test what is left on disk and how a run
resumes. The model directories here are built from zero weights (no training).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import assert_refused, run_cli, snapshot
from source_data import blob_dataset

import lensgen.source.train as train_mod
from lensgen.data import great3
from lensgen.data.great3 import parse_branch
from lensgen.data.synthetic import make_branch_tarball
from lensgen.io.dataset import StampDataset, make_catalog, read_dataset, write_dataset
from lensgen.io.modeldir import save_tree, write_json
from lensgen.source import flow as flowlib
from lensgen.source import vae
from lensgen.source.model import FLOW_FORMAT, load_source_model, load_vae_params, write_model_header

pytestmark = pytest.mark.float32  # as users run the command (32-bit JAX)

BRANCH = "control-ground-constant"
MICRO = """[model]
latent_dim = 2
channels = [4]
dense = 8

[train]
epochs = 2
batch_size = 16
steps_per_call = 2
warmup_steps = 2
kl_warmup_steps = 4
lr = 3e-3
"""
FLOW = "[flow]\nmax_epochs = 100000\npatience = 100000\n"


# `python -m lensgen`, with Python's own SIGINT handler even where this process was
# started with SIGINT ignored (a background job), which a child would inherit.
CHILD = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('lensgen', run_name='__main__', alter_sys=True)"
)


def interrupt(args, cwd: Path, marker: str, delay: float, timeout: float = 120.0):
    """Run ``python -m lensgen ARGS``; SIGINT it ``delay`` s after ``marker`` is printed.

    Returns (exit code, output).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
    reader.start()
    seen, deadline = [], time.monotonic() + timeout
    try:
        while not any(marker in x for x in seen):
            assert proc.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                pass
        time.sleep(delay)
        assert proc.poll() is None, "finished before Ctrl-C: " + "".join(seen)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    while not lines.empty():
        seen.append(lines.get())
    return code, "".join(seen)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, as in a terminal. A shell without job control starts
    background commands with SIGINT ignored, and Python then keeps it ignored, so a
    suite launched with ``&`` would otherwise see no Ctrl-C at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A micro dataset (8 × 8 stamps, no PSF) and a zero-weight model directory with a flow."""
    root = tmp_path_factory.mktemp("micro")
    data = root / "d.fits"
    blob_dataset(data, n=60, size=8, psf=False)
    arch = vae.Architecture((8, 8), 2, (4,), 8)
    model = root / "model"
    model.mkdir()
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), vae.param_shapes(arch))
    entry = save_tree(model / "weights.npz", zeros)
    write_model_header(model, arch, 0.2, 100.0, False, entry, {"epoch": 0, "dataset": str(data)})
    shapes = flowlib.param_shapes(2, 1, 4)
    fz = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    fentry = save_tree(model / "flow.npz", fz)
    write_json(model / "flow.json", {
        "format": FLOW_FORMAT, "format_version": flowlib.FORMAT_VERSION, "kind": flowlib.KIND,
        "latent_dim": 2, "n_layers": 1, "hidden": 4, "weights": fentry,
    })  # fmt: skip
    write_json(model / "flow_report.json", {"previous": True})
    (model / "figures").mkdir()
    (model / "figures" / "latents.png").write_bytes(b"previous figure")
    assert load_source_model(model).has_flow
    return root


@pytest.fixture
def work(micro, tmp_path):
    """The micro dataset, a config for it and a copy of the model, in this test's folder."""
    shutil.copy(micro / "d.fits", tmp_path / "d.fits")
    shutil.copytree(micro / "model", tmp_path / "model")
    (tmp_path / "micro.toml").write_text(f'[data]\npath = "{(tmp_path / "d.fits").as_posix()}"\n'
                                         + MICRO)  # fmt: skip
    (tmp_path / "flow.toml").write_text(FLOW)
    return tmp_path


# ---------------------------------------------------------------- train-vae


def test_train_vae_non_utf8_config(work):
    bad = work / "latin1.toml"
    bad.write_bytes("[train]\nepochs = 2  # caf\xe9\n".encode("latin-1"))
    before = snapshot(work)
    assert_refused(run_cli("train-vae", bad, "-o", work / "run"), before, "latin1.toml", "UTF-8")
    assert not (work / "run").exists()


@pytest.mark.parametrize("sub", ["file", "file/run"])
def test_train_vae_out_is_a_file(work, sub):
    (work / "file").write_text("not a folder\n")
    before = snapshot(work)
    assert_refused(run_cli("train-vae", work / "micro.toml", "-o", work / sub), before, "is a file")
    assert_refused(run_cli("train-vae", "-o", work / sub, "--resume"), before, "file")


def test_train_vae_figures_folder_is_a_file(work):
    (work / "run").mkdir()
    (work / "run" / "figures").write_text("a file where the figures go\n")
    before = snapshot(work)
    res = run_cli("train-vae", work / "micro.toml", "-o", work / "run", "--overwrite")
    assert_refused(res, before, "figures", "is a file")


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ("epochs = 2", "epochs = 0"), ("epochs = 2", "epochs = -3"),
        ("batch_size = 16", "batch_size = 0"), ("lr = 3e-3", "lr = nan"),
        ("lr = 3e-3", "lr = -1.0"), ("lr = 3e-3", "lr = inf"),
        ("lr = 3e-3", "lr = 3e-3\nclip_norm = nan"), ("lr = 3e-3", "lr = 3e-3\nbeta = nan"),
        ("lr = 3e-3", "lr = 3e-3\nfinal_lr_factor = 0.0"), ("lr = 3e-3", "lr = 3e-3\nseed = -1"),
        ("steps_per_call = 2", "steps_per_call = 0"), ("dense = 8", "dense = 0"),
    ],
    ids=lambda v: v.split("\n")[-1],
)  # fmt: skip
def test_train_vae_bad_numbers(work, edit, key):
    cfg = work / "bad.toml"
    cfg.write_text((work / "micro.toml").read_text().replace(edit, key))
    before = snapshot(work)
    name = key.split("\n")[-1].split(" =")[0]
    assert_refused(run_cli("train-vae", cfg, "-o", work / "run"), before, "bad.toml", name)
    assert not (work / "run").exists()


def test_train_vae_bad_epochs_flag(work):
    before = snapshot(work)
    res = run_cli("train-vae", work / "micro.toml", "-o", work / "run", "--epochs", 0)
    assert_refused(res, before, "epochs")
    assert not (work / "run").exists()


@pytest.mark.parametrize("case", ["empty", "no-train", "no-val", "too-few", "nan"])
def test_train_vae_unusable_dataset(work, case):
    n = {"empty": 0, "too-few": 10}.get(case, 20)
    split = {"no-train": "val", "no-val": "train"}.get(case)
    split = np.array([split] * n) if split else np.where(np.arange(n) < n - 4, "train", "val")
    stamps = np.ones((n, 8, 8), np.float32)
    if case == "nan":
        stamps[3, 2, 2] = np.nan
    write_dataset(work / "d.fits", StampDataset(stamps, make_catalog(n, split=split), 0.2),
                  overwrite=True)  # fmt: skip
    before = snapshot(work)
    err = assert_refused(
        run_cli("train-vae", work / "micro.toml", "-o", work / "run"), before, "d.fits"
    )
    words = {"empty": "no stamps", "no-train": "no training", "no-val": "no validation",
             "too-few": "batch_size", "nan": "NaN"}  # fmt: skip
    assert words[case] in err
    assert not (work / "run").exists()


def test_train_vae_ctrl_c_keeps_the_last_epoch_and_resumes(work, monkeypatch, python_sigint):
    """A real SIGINT after epoch 1's checkpoint: exit 130, a consistent model of epoch 1,
    a rerun that points at --resume, and --resume that finishes the run."""
    before = snapshot(work)
    out = work / "run"
    save = train_mod._save

    def save_then_ctrl_c(workdir, cfg, arch, data, state, key, epoch, history):
        save(workdir, cfg, arch, data, state, key, epoch, history)
        if epoch == 1:  # only while train-vae defers Ctrl-C: never stop pytest itself
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train_mod, "_save", save_then_ctrl_c)
    res = run_cli("train-vae", work / "micro.toml", "-o", out)
    assert res.exit_code == 130 and "interrupted" in res.output, res.output
    assert "Traceback" not in res.output
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    assert before.kept()
    header, _, _ = load_vae_params(out)  # checksums of model.json agree with weights.npz
    assert header["epoch"] == 1
    metrics = [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [1]
    kept = snapshot(out)
    assert_refused(run_cli("train-vae", work / "micro.toml", "-o", out), kept, "--resume")
    res = run_cli("train-vae", "-o", out, "--resume")
    assert res.exit_code == 0, res.output
    metrics = [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [1, 2] and load_vae_params(out)[0]["epoch"] == 2


# ---------------------------------------------------------------- fit-iaf


def test_fit_iaf_non_utf8_config(work):
    bad = work / "latin1.toml"
    bad.write_bytes("[flow]\nlr = 1e-3  # caf\xe9\n".encode("latin-1"))
    before = snapshot(work)
    res = run_cli("fit-iaf", work / "model", "--config", bad, "--overwrite")
    assert_refused(res, before, "latin1.toml", "UTF-8")


@pytest.mark.parametrize(
    "line",
    ["lr = nan", "lr = inf", "lr = 0.0", "max_epochs = 0", "patience = -1", "batch_size = 0",
     "n_quality = 0", "draws = 0", "seed = -1", 'latents = "median"'],
)  # fmt: skip
def test_fit_iaf_bad_config_values(work, line):
    cfg = work / "bad.toml"
    cfg.write_text(f"[flow]\n{line}\n")
    before = snapshot(work)
    res = run_cli("fit-iaf", work / "model", "--config", cfg, "--overwrite")
    assert_refused(res, before, "bad.toml", line.split(" =")[0])


def test_fit_iaf_not_a_model(work):
    before = snapshot(work)
    assert_refused(run_cli("fit-iaf", work / "nothing"), before, "nothing", "not found")
    assert_refused(run_cli("fit-iaf", work / "d.fits"), before, "d.fits", "is a file")
    (work / "empty").mkdir()
    before = snapshot(work)
    assert_refused(run_cli("fit-iaf", work / "empty"), before, "model.json")
    (work / "model" / "model.json").write_text("{not json")
    before = snapshot(work)
    assert_refused(run_cli("fit-iaf", work / "model", "--overwrite"), before, "model.json")


def test_fit_iaf_existing_outputs(work):
    model = work / "model"
    before = snapshot(work)
    assert_refused(run_cli("fit-iaf", model), before, "already has a flow", "--overwrite")
    (model / "flow.json").unlink()  # a stray flow.npz is not replaced silently either
    before = snapshot(work)
    assert_refused(run_cli("fit-iaf", model), before, "flow.npz", "--overwrite")
    shutil.rmtree(model / "figures")
    (model / "figures").write_text("a file where the figures go\n")
    before = snapshot(work)
    assert_refused(run_cli("fit-iaf", model, "--overwrite"), before, "figures", "is a file")


@pytest.mark.parametrize("case", ["missing", "empty", "other-size"])
def test_fit_iaf_bad_dataset(work, case):
    ds = work / "other.fits"
    if case == "empty":
        write_dataset(ds, StampDataset(np.zeros((0, 8, 8), np.float32), make_catalog(0), 0.2))
    elif case == "other-size":
        blob_dataset(ds, n=20, size=16, psf=False)
    before = snapshot(work)
    res = run_cli("fit-iaf", work / "model", "--dataset", ds, "--overwrite")
    assert_refused(res, before, "other.fits")


def test_fit_iaf_ctrl_c_waits_for_jax_then_stops(work, monkeypatch, python_sigint):
    """Ctrl-C in the middle of JAX work is acted upon at the next safe point, not inside
    JAX: raised there, it abandoned compilations still running on XLA threads and the
    exit crashed (SIGSEGV), or a JAX gc callback swallowed it and the run went on."""
    done = []
    init_flow = flowlib.init_flow

    def ctrl_c_during_init(*args):
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        signal.raise_signal(signal.SIGINT)
        params = init_flow(*args)  # JAX work (compiled) after the Ctrl-C …
        done.append(jax.block_until_ready(params))  # … goes on to its end
        return params

    monkeypatch.setattr(flowlib, "init_flow", ctrl_c_during_init)
    (work / "small.toml").write_text("[flow]\nn_layers = 1\nhidden = 4\n")
    before = snapshot(work)
    res = run_cli("fit-iaf", work / "model", "--config", work / "small.toml", "--overwrite")
    assert res.exit_code == 130 and "interrupted" in res.output, res.output
    assert len(done) == 1
    assert snapshot(work) == before


def test_fit_iaf_ctrl_c_keeps_the_previous_flow(work):
    """SIGINT while the flow is being fitted (or compiled): exit 130, nothing changed."""
    before = snapshot(work)
    code, out = interrupt(["fit-iaf", "model", "--config", "flow.toml", "--overwrite"], work,
                          "fitting the flow", delay=0.5)  # fmt: skip
    assert code == 130, out
    assert "interrupted" in out and "Traceback" not in out
    assert snapshot(work) == before  # no staging folder left behind either
    assert load_source_model(work / "model").has_flow


# ---------------------------------------------------------------- download-great3


def test_download_cache_dir_is_a_file(work):
    (work / "cache").write_text("not a folder\n")
    before = snapshot(work)
    res = run_cli(
        "download-great3", "--synthetic", "--cache-dir", work / "cache", "-o", work / "o.fits"
    )
    assert_refused(res, before, "cache", "is a file")
    res = run_cli("download-great3", "--synthetic", "--cache-dir", work / "cache" / "sub",
               "-o", work / "o.fits")  # fmt: skip
    assert_refused(res, before, "cache", "is a file")
    assert not (work / "o.fits").exists()


def test_download_output_checked_first(work):
    before = snapshot(work)
    args = ("download-great3", "--synthetic", "--cache-dir", work / "cache")
    assert_refused(run_cli(*args, "-o", work / "d.fits"), before, "d.fits", "--overwrite")
    assert_refused(run_cli(*args, "-o", work / "model", "--overwrite"), before, "model", "folder")
    assert_refused(run_cli(*args, "-o", work / "no" / "o.fits"), before, "does not exist")
    assert not (work / "cache").exists()  # refused before the cache was made


@pytest.mark.parametrize(
    "flags",
    [["--snr-min", "50", "--snr-max", "15"], ["--snr-min", "nan"], ["--snr-max", "nan"],
     ["--snr-min", "-1"], ["--val-fraction", "1"], ["--val-fraction", "nan"],
     ["--synthetic-grid", "1"], ["--branch", "control-ground"]],
    ids=lambda f: "".join(f),
)  # fmt: skip
def test_download_bad_values(work, flags):
    before = snapshot(work)
    res = run_cli("download-great3", "--synthetic", "--cache-dir", work / "cache",
               "-o", work / "o.fits", *flags)  # fmt: skip
    assert_refused(res, before, flags[0].strip("-").split("-")[0])
    assert not (work / "cache").exists()


@pytest.mark.parametrize(
    "flags", [["--n-stamps", "0"], ["--max-images", "-1"], ["--retries", "-2"]]
)
def test_download_parser_refuses_out_of_range(work, flags):
    before = snapshot(work)
    res = run_cli("download-great3", "--synthetic", "--cache-dir", work / "cache",
               "-o", work / "o.fits", *flags)  # fmt: skip
    assert res.exit_code == 2 and flags[0] in res.output and "Traceback" not in res.output
    assert snapshot(work) == before


def test_download_synthetic_ctrl_c_exits_130_and_keeps_the_old_dataset(work):
    """SIGINT while a synthetic branch is generated: exit 130 (it used to crash with
    SIGSEGV), the existing dataset unchanged, no unfinished tarball in the cache."""
    before = snapshot(work)
    code, out = interrupt(["download-great3", "--synthetic", "--cache-dir", "cache",
                           "-o", "d.fits", "--overwrite"], work, "writing a synthetic",
                          delay=1.0)  # fmt: skip
    assert code == 130, out
    assert "interrupted" in out and "Traceback" not in out
    assert before.kept()
    left = [p.name for p in (work / "cache").rglob("*") if p.is_file()]
    assert not [n for n in left if n.endswith((".part", ".tar.gz"))], left


class _Mirror:
    """One tarball over HTTP on 127.0.0.1 with HEAD and ``Range``; logs (method, start)."""

    def __init__(self, tarball: Path):
        data, name, log = tarball.read_bytes(), "/" + tarball.name, []
        self.log = log

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._send(False)

            def do_GET(self):
                self._send(True)

            def _send(self, body):
                if self.path != name:
                    self.send_error(404)
                    return
                match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                start = int(match.group(1)) if match else 0
                log.append((self.command, start))
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(data[start:])
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_ctrl_c_then_rerun_resumes(tmp_path, monkeypatch, python_sigint):
    """A real SIGINT after the first downloaded block: exit 130 with no dataset written and
    the partial download in the cache; the rerun continues it with a Range request."""
    tarball, _ = make_branch_tarball(jax.random.key(5), tmp_path / "mirror", parse_branch(BRANCH),
                                     1, grid=10)  # fmt: skip
    mirror = _Mirror(tarball)
    read = great3.SourceStream._read_network

    def read_then_ctrl_c(self, view):
        n = read(self, view)
        if self.network_bytes == n:  # the first block from the network
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            signal.raise_signal(signal.SIGINT)
        return n

    args = ("download-great3", "--base-url", mirror.url, "--cache-dir", tmp_path / "cache",
            "-o", tmp_path / "d.fits", "--max-images", 1, "--snr-min", 0, "--snr-max", 1e9,
            "-b", BRANCH, "--val-fraction", 0)  # fmt: skip
    try:
        with monkeypatch.context() as m:
            m.setattr(great3.SourceStream, "_read_network", read_then_ctrl_c)
            res = run_cli(*args)
        assert res.exit_code == 130 and "interrupted" in res.output, res.output
        assert not (tmp_path / "d.fits").exists()
        cached = tmp_path / "cache" / f"{BRANCH}.tar.gz"
        size = cached.stat().st_size
        assert 0 < size < tarball.stat().st_size
        entry = json.loads((tmp_path / "cache" / "manifest.json").read_text())["files"]
        assert entry[f"{BRANCH}.tar.gz"]["size"] == size
        mirror.log.clear()
        res = run_cli(*args)
        assert res.exit_code == 0, res.output
    finally:
        mirror.close()
    assert ("GET", size) in mirror.log and ("GET", 0) not in mirror.log
    assert len(read_dataset(tmp_path / "d.fits")) > 0
