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

SIMULATE = """
import sys
import jax
import numpy as np
from lensgen.simulate.scene import load_simulate_config
from lensgen.simulate.batch import simulate_batch
cfg = load_simulate_config(sys.argv[2])
batch = simulate_batch(cfg, jax.random.key(4), 6)  # 6 lenses on 4 devices: padded
np.savez(sys.argv[1], images=batch.images, models=batch.models, noise=batch.noise_maps,
         devices=len(jax.local_devices()))
"""

TRAIN = """
import sys
import jax
import numpy as np
sys.path.insert(0, sys.argv[4])
from source_data import blob_dataset
from lensgen.source.train import load_train_config, train
blob_dataset(sys.argv[2] + "/d.fits", n=80, size=16)
cfg = load_train_config(sys.argv[3], {"data.path": sys.argv[2] + "/d.fits", "train.epochs": 2,
                                      "train.batch_size": 16})
result = train(cfg, sys.argv[2] + "/run", figures=False)
weights = np.load(sys.argv[2] + "/run/weights.npz")
np.savez(sys.argv[1], devices=len(jax.local_devices()),
         loss=np.array([h["loss"] for h in result.history]),
         **{k: weights[k] for k in weights.files})
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


def test_simulate_n_on_four_devices_equals_one_device(tmp_path, scene):
    _run(SIMULATE, 1, tmp_path / "one.npz", scene)
    _run(SIMULATE, 4, tmp_path / "four.npz", scene)
    one, four = np.load(tmp_path / "one.npz"), np.load(tmp_path / "four.npz")
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    for name in ("models", "images", "noise"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-6, atol=1e-7 * one[name].max())


def test_train_vae_data_parallel_on_four_devices_equals_one_device(tmp_path):
    """Batch split over 4 devices, parameters replicated: the same training up to the
    order of the gradient's sum (float32)."""
    for n in (1, 4):
        (tmp_path / str(n)).mkdir()
        _run(TRAIN, n, tmp_path / f"{n}.npz", tmp_path / str(n), TINY, Path(__file__).parent)
    one, four = np.load(tmp_path / "1.npz"), np.load(tmp_path / "4.npz")
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-4)
    names = [k for k in one.files if k not in ("devices", "loss")]
    assert names
    for k in names:
        np.testing.assert_allclose(four[k], one[k], rtol=1e-3, atol=1e-5 * np.abs(one[k]).max())
