"""Several local devices (issue 16 §4): faked on the CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` in a fresh process (the flag is
read when JAX starts), compared with the same work on one device. Both run in 32-bit
JAX, as ``simulate`` and ``train-vae`` do for users."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from source_data import blob_dataset

from lensgen.simulate.batch import simulate_batch
from lensgen.simulate.scene import load_simulate_config
from lensgen.source.train import load_train_config, train

pytestmark = pytest.mark.float32

TESTS = Path(__file__).parent
TINY = TESTS.parent / "examples" / "vae_tiny.toml"


def simulate_and_train(out, work, scene, tiny) -> None:
    """Simulate a padded batch (6 lenses), train the tiny VAE for two epochs, and save
    the images, the loss curve and the weights with the device count to ``out``."""
    batch = simulate_batch(load_simulate_config(scene), jax.random.key(4), 6)  # 6 on 4: padded
    blob_dataset(f"{work}/d.fits", n=64, size=16)
    cfg = load_train_config(tiny, {"data.path": f"{work}/d.fits", "train.epochs": 2,
                                   "train.batch_size": 16})  # fmt: skip
    result = train(cfg, f"{work}/run", figures=False)
    weights = np.load(f"{work}/run/weights.npz")
    np.savez(out, devices=len(jax.local_devices()), images=batch.images, models=batch.models,
             noise=batch.noise_maps, loss=np.array([h["loss"] for h in result.history]),
             **{"w_" + k: weights[k] for k in weights.files})  # fmt: skip


SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from test_devices import simulate_and_train
simulate_and_train(*sys.argv[2:6])
"""


def _run(devices: int, *args) -> None:
    """:func:`simulate_and_train` in a fresh process that sees ``devices`` CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(TESTS), *map(str, args)],
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
    """The same simulation and training on one device (this test process, which the
    test configuration gives one CPU device) and on four (a fresh process)."""
    tmp = tmp_path_factory.mktemp("devices")
    for n in (1, 4):
        (tmp / str(n)).mkdir()
    simulate_and_train(tmp / "1.npz", tmp / "1", scene, TINY)
    _run(4, tmp / "4.npz", tmp / "4", scene, TINY)
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
