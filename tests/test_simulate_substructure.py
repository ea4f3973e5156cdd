"""`lensgen simulate` with subhalos: [substructure] section, CLI flags, SUBHALOS table."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import run_cli

from lensgen.io.fits import read_observation
from lensgen.lensing.render import Scene, make_renderer
from lensgen.simulate.scene import load_simulate_config

pytestmark = pytest.mark.float32  # as users run the command (32-bit JAX)

SMALL = ["--npix", "40", "--pixel-scale", "0.15", "--supersample", "1", "--source", "sersic"]
BASE = (
    '[[lens]]\ntype = "SIS"\ntheta_E = 2.0\ncenter_x = 0.1\ncenter_y = -0.1\n'
    '[[source]]\ntype = "SERSIC_ELLIPSE"\namp = 8.0\nR_sersic = 0.3\nn_sersic = 1.0\n'
    "e1 = 0.0\ne2 = 0.0\ncenter_x = 0.05\ncenter_y = 0.0\n"
)
SUB = (
    "[substructure]\nm_min = 1e8\nm_max = 1e10\nn_mean = 3.0\nwidth = 0.2\n"
    "inject_mass = [3e10]\ninject_x = [2.05]\ninject_y = [0.0]\n"
)


def test_substructure_section_writes_table_and_changes_image(tmp_path):
    (tmp_path / "in_with.toml").write_text(BASE + SUB)
    (tmp_path / "in_without.toml").write_text(BASE)
    for name in ("with", "without"):
        res = run_cli("simulate", "-c", tmp_path / f"in_{name}.toml", *SMALL[:6], "--seed", 3,
                   "--out", tmp_path / f"{name}.fits", "--no-preview")  # fmt: skip
        assert res.exit_code == 0, res.output
    obs = read_observation(tmp_path / "with.fits")
    ref = read_observation(tmp_path / "without.fits")
    assert obs.scene["lens"] == ["SIS", "SUBHALOS"] and "SUBHALOS" not in ref.tables
    table = Table.read(tmp_path / "with.fits", hdu="SUBHALOS")
    assert table.meta["NSUB"] == len(table) >= 1 and table.meta["COSMO"] == "Planck18"
    assert str(table["mass"].unit) == "solMass" and str(table["x"].unit) == "arcsec"
    # Random subhalos lie in the annulus around the lens centre; the injected one is last.
    rnd = table[~table["injected"]]
    assert np.all((rnd["mass"] >= 1e8) & (rnd["mass"] <= 1e10))
    r = np.hypot(rnd["x"] - 0.1, rnd["y"] + 0.1)
    assert np.all((r >= 1.8 - 1e-5) & (r <= 2.2 + 1e-5))
    assert table["injected"][-1] and table["mass"][-1] == pytest.approx(3e10)
    # Same seed: the other truths are unchanged, the image is not.
    assert obs.truth == ref.truth
    diff = np.abs(obs.model - ref.model)
    assert diff.max() > 0.05 * ref.model.max()
    # The table holds what was rendered: re-render with one TNFW per row.
    lens = [{"theta_E": 2.0, "center_x": 0.1, "center_y": -0.1}]
    lens += [{"Rs": float(row["Rs"]), "alpha_Rs": float(row["alpha_Rs"]),
              "r_trunc": float(row["r_trunc"]), "center_x": float(row["x"]),
              "center_y": float(row["y"])} for row in table]  # fmt: skip
    src = {k.split(".")[-1]: v for k, v in obs.truth.items() if k.startswith("source.0.")}
    scene = Scene(lens=("SIS",) + ("TNFW",) * len(table), source=("SERSIC_ELLIPSE",),
                  shape=(40, 40), pixel_scale=0.15)  # fmt: skip
    model = make_renderer(scene, obs.psf)({"lens": lens, "source": [src], "lens_light": []})
    np.testing.assert_allclose(np.asarray(model), obs.model, rtol=1e-4, atol=1e-4 * obs.model.max())
    # The resolved config written next to the file reloads to the same population.
    cfg = load_simulate_config(tmp_path / "in_with.toml")
    assert load_simulate_config(tmp_path / "with.toml").substructure == cfg.substructure
    assert cfg.substructure.inject_mass == (3e10,) and cfg.substructure.n_mean == 3.0


def test_cli_flags_inject_one_subhalo_and_preview(tmp_path):
    out = tmp_path / "one.fits"
    res = run_cli("simulate", *SMALL, "--n-subhalos", 2, "--subhalo-mass", "1e9", "--subhalo-x", 1.7,
               "--subhalo-y", -1.2, "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    table = Table.read(out, hdu="SUBHALOS")
    assert len(table) == 3 and list(table["injected"]) == [False, False, True]
    assert table["mass"][2] == pytest.approx(1e9)
    assert (table["x"][2], table["y"][2]) == pytest.approx((1.7, -1.2))
    assert (tmp_path / "one.png").stat().st_size > 10_000  # critical curves with subhalos
    assert "inject_mass = [1000000000.0]" in (tmp_path / "one.toml").read_text()


def test_batch_with_subhalos_has_vector_columns(tmp_path):
    (tmp_path / "sim.toml").write_text(BASE + SUB)
    out = tmp_path / "cube.fits"
    res = run_cli("simulate", "-c", tmp_path / "sim.toml", *SMALL[:6], "--n", 3, "--out", out)
    assert res.exit_code == 0, res.output
    with fits.open(out) as hdul:
        params = hdul["PARAMS"].data
        mass, mask = params["subhalos.mass"], params["subhalos.mask"]
        assert mass.shape[0] == 3 and mass.shape == mask.shape
        assert np.all(mass[mask] > 0) and np.all(mass[~mask] == 0)
        assert np.all(mass[:, -1] == pytest.approx(3e10))
        cube = hdul[0].data
    assert not np.array_equal(cube[0], cube[1])


@pytest.mark.parametrize(
    "section, message",
    [
        ("m_min = 1e10\nm_max = 1e8\n", "mass bounds reversed or non-positive"),
        ("m_min = -5.0\n", "mass bounds reversed or non-positive"),
        ("z_lens = 1.0\nz_source = 0.8\n", "z_source must be greater than z_lens"),
        ('cosmology = "Planck2018"\n', "unknown cosmology 'Planck2018'; choose one of"),
        ("m_mn = 1e7\n", "did you mean 'm_min'"),
    ],
)
def test_bad_substructure_is_a_one_line_error(tmp_path, section, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(BASE + "[substructure]\n" + section)
    res = run_cli("simulate", "-c", cfg, *SMALL, "--out", tmp_path / "o.fits")
    assert res.exit_code == 1, res.output
    assert message in res.output and "bad.toml" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.fits").exists()


def test_incomplete_subhalo_flags_are_errors(tmp_path):
    res = run_cli("simulate", *SMALL, "--subhalo-mass", "1e9", "--out", tmp_path / "o.fits")
    assert res.exit_code == 1 and "--subhalo-x and --subhalo-y" in res.output
    res = run_cli("simulate", *SMALL, "--subhalo-x", "1", "--out", tmp_path / "o.fits")
    assert res.exit_code == 1 and "need --subhalo-mass" in res.output
    res = run_cli("simulate", *SMALL, "--subhalo-mass", "-1e9", "--subhalo-x", "1", "--subhalo-y", "0",
               "--out", tmp_path / "o.fits")  # fmt: skip
    assert res.exit_code == 1 and "inject_mass must be > 0" in res.output
