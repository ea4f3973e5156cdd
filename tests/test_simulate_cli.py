"""`lensgen simulate` through the real CLI: outputs, reproducibility, batches, errors."""

import numpy as np
import pytest
from astropy.io import fits
from conftest import run_cli

from lensgen.io.fits import read_observation

pytestmark = pytest.mark.float32  # as users run the command (32-bit JAX)

SMALL = ["--npix", "40", "--pixel-scale", "0.15", "--supersample", "1"]


def test_simulate_default_writes_fits_png_and_config(tmp_path):
    out = tmp_path / "obs.fits"
    res = run_cli("simulate", "--rein", 2.3, *SMALL, "--out", out, "--seed", 1)
    assert res.exit_code == 0, res.output
    obs = read_observation(out)
    assert obs.truth["lens.0.theta_E"] == 2.3 and obs.scene["lens"] == ["SIS"]
    assert obs.image.shape == (40, 40) and obs.pixel_scale == pytest.approx(0.15)
    assert obs.psf is not None and obs.noise_map is not None and obs.model is not None
    assert obs.seed == 1 and obs.header["LGVERS"]
    # The ring is where the Einstein radius says: the brightest annulus is at ~θ_E.
    y, x = (np.indices(obs.model.shape) - 19.5) * 0.15
    r = np.hypot(x, y)
    ring = [obs.model[(r >= a) & (r < a + 0.3)].mean() for a in np.arange(0.0, 2.9, 0.3)]
    assert abs(np.argmax(ring) * 0.3 + 0.15 - 2.3) <= 0.45
    # Noise is consistent with the noise map: normalised residuals have unit scatter.
    chi = (obs.image - obs.model) / obs.noise_map
    assert 0.85 < chi.std() < 1.15
    assert (tmp_path / "obs.png").stat().st_size > 10_000
    assert "[[lens]]" in (tmp_path / "obs.toml").read_text()


def test_same_seed_same_file_and_different_seed_differs(tmp_path):
    a, b, c = (tmp_path / f"{n}.fits" for n in "abc")
    for path, seed in ((a, 5), (b, 5), (c, 6)):
        res = run_cli("simulate", *SMALL, "--seed", seed, "--out", path, "--no-preview")
        assert res.exit_code == 0, res.output
    assert a.read_bytes() == b.read_bytes()
    assert not np.array_equal(fits.getdata(a), fits.getdata(c))


def test_batch_cube_with_parameter_table(tmp_path):
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        '[[lens]]\ntype = "SIE"\ntheta_E = { uniform = [1.0, 2.0] }\n'
        "e1 = { normal = [0.0, 0.05] }\ne2 = 0.0\n"
        '[[lens]]\ntype = "SHEAR"\ngamma1 = 0.01\ngamma2 = 0.0\n'
        '[[source]]\ntype = "SERSIC_ELLIPSE"\namp = 5.0\nR_sersic = 0.3\nn_sersic = 1.0\n'
        "e1 = 0.0\ne2 = 0.0\ncenter_x = 0.0\ncenter_y = 0.0\n"
    )
    out = tmp_path / "cube.fits"
    res = run_cli("simulate", "--config", cfg, *SMALL, "--n", 6, "--out", out, "--seed", 2)
    assert res.exit_code == 0, res.output
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == (6, 40, 40)
        table = hdul["PARAMS"].data
        theta = table["lens.0.theta_E"]
        assert len(theta) == 6 and np.all((theta >= 1.0) & (theta <= 2.0)) and np.ptp(theta) > 0
        assert np.all(table["lens.1.gamma1"] == 0.01)
        models = hdul["MODEL"].data
    # Each cube slice is the single-lens render of its own parameters (vmap == loop).
    single = tmp_path / "one_config.toml"  # not one.toml: that is one.fits's own sidecar
    single.write_text(
        cfg.read_text()
        .replace("{ uniform = [1.0, 2.0] }", repr(float(theta[3])))
        .replace("{ normal = [0.0, 0.05] }", repr(float(table["lens.0.e1"][3])))
    )
    res = run_cli(
        "simulate", "--config", single, *SMALL, "--out", tmp_path / "one.fits", "--no-preview"
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(
        fits.getdata(tmp_path / "one.fits", "MODEL"), models[3], rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rein", "-1"], "theta_E must be > 0"),
        (["--npix", "0"], "npix must be >= 8"),
        (["--exptime", "-3"], "exptime must be a finite number >= 0"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "bad.fits"
    res = run_cli("simulate", *args, "--out", out)
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "o.fits"
    assert run_cli("simulate", *SMALL, "--out", out, "--no-preview").exit_code == 0
    before = out.read_bytes()
    res = run_cli("simulate", *SMALL, "--out", out, "--seed", 9, "--no-preview")
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert out.read_bytes() == before
    assert (
        run_cli(
            "simulate", *SMALL, "--out", out, "--seed", 9, "--overwrite", "--no-preview"
        ).exit_code
        == 0
    )
    assert out.read_bytes() != before


def test_config_errors_name_key_and_file(tmp_path):
    cfg = tmp_path / "sim.toml"
    cfg.write_text('[[lens]]\ntype = "SIE"\ntheta_E = 1.0\ne3 = 0.1\n')
    res = run_cli("simulate", "--config", cfg, "--out", tmp_path / "o.fits")
    assert res.exit_code == 1 and "e3" in res.output
    cfg.write_text('[instrument]\npsf = "pixel"\npsf_file = "missing_psf.fits"\n')
    res = run_cli("simulate", "--config", cfg, "--out", tmp_path / "o.fits")
    assert res.exit_code == 1 and "missing_psf.fits" in res.output
    cfg.write_text('[[lens]]\ntype = "SIE"\ntheta_E = 1.0\ne1 = 0.99\ne2 = 0.5\n')
    res = run_cli("simulate", "--config", cfg, "--out", tmp_path / "o.fits")
    assert res.exit_code == 1 and "ellipticity |e|" in res.output


def test_version_and_help():
    res = run_cli("--version")
    assert res.exit_code == 0 and res.output.startswith("lensgen ")
    res = run_cli("simulate", "--help")
    assert res.exit_code == 0 and "--rein" in res.output


def test_simulate_is_tested_in_32_bit_as_users_run_it(precision):
    import jax

    from lensgen.simulate import PARAMETRIC_SOURCE, InstrumentConfig, SimulateConfig
    from lensgen.simulate.batch import simulate_batch

    assert precision is False and not jax.config.jax_enable_x64
    cfg = SimulateConfig(source=(PARAMETRIC_SOURCE,), instrument=InstrumentConfig(npix=16))
    batch = simulate_batch(cfg, jax.random.key(0), 2)
    assert batch.images.dtype == np.float32 and np.all(np.isfinite(batch.images))
