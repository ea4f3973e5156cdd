"""Several local devices (issue 16 §4): faked on the CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` in fresh processes (the flag is
read when JAX starts), compared with the same work on one device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SCRIPT = """
import sys
import jax
import numpy as np
sys.path.insert(0, sys.argv[5])
from source_data import blob_dataset
from lensgen.simulate.batch import simulate_batch
from lensgen.simulate.scene import load_simulate_config
from lensgen.source.train import load_train_config, train
out, work, scene, tiny = sys.argv[1:5]
batch = simulate_batch(load_simulate_config(scene), jax.random.key(4), 6)  # 6 on 4: padded
blob_dataset(work + "/d.fits", n=64, size=16)
cfg = load_train_config(tiny, {"data.path": work + "/d.fits", "train.epochs": 2,
                               "train.batch_size": 16})
result = train(cfg, work + "/run", figures=False)
weights = np.load(work + "/run/weights.npz")
np.savez(out, devices=len(jax.local_devices()), images=batch.images, models=batch.models,
         noise=batch.noise_maps, loss=np.array([h["loss"] for h in result.history]),
         **{"w_" + k: weights[k] for k in weights.files})
"""
TINY = Path(__file__).parents[1] / "examples" / "vae_tiny.toml"


def _run(script: str, devices: int, *args) -> None:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.toml"
    path.write_text(
        '[[lens]]\ntype = "SIE"\ntheta_E = { uniform = [0.8, 1.2] }\ne1 = { normal = [0, 0.05] }\n'
        '[[source]]\ntype = "SERSIC_ELLIPSE"\namp = 5.0\nR_sersic = 0.2\nn_sersic = 1.5\n'
        'center_x = { uniform = [-0.1, 0.1] }\n[instrument]\nnpix = 20\npixel_scale = 0.1\n'
    )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scene) -> tuple:
    """The same simulation and training on one and on four devices."""
    tmp = tmp_path_factory.mktemp("devices")
    for n in (1, 4):
        (tmp / str(n)).mkdir()
        _run(SCRIPT, n, tmp / f"{n}.npz", tmp / str(n), scene, TINY, Path(__file__).parent)
    one, four = np.load(tmp / "1.npz"), np.load(tmp / "4.npz")
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    return one, four


def test_simulate_n_on_four_devices_equals_one_device(runs):
    one, four = runs
    for name in ("models", "images", "noise"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-6, atol=1e-7 * one[name].max())


def test_train_vae_data_parallel_on_four_devices_equals_one_device(runs):
    """Batch split over 4 devices, parameters replicated: the same training up to the
    order of the gradient's sum (float32)."""
    one, four = runs
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-4)
    names = [k for k in one.files if k.startswith("w_")]
    assert names
    for k in names:
        np.testing.assert_allclose(four[k], one[k], rtol=1e-3, atol=1e-5 * np.abs(one[k]).max())
