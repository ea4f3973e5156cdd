"""Bad input and interruptions against `lensgen simulate`, run through the CLI as a user would.

Every case asserts a non-zero exit, one line naming the problem, no traceback, and that
every file that was in the folder before is byte-identical afterwards.
"""

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import assert_refused, run_cli, snapshot

pytestmark = pytest.mark.float32  # as users run the command (32-bit JAX)

TINY = ["--npix", "16", "--pixel-scale", "0.3", "--supersample", "1", "--source", "sersic"]
EXAMPLE = Path(__file__).parents[1] / "examples" / "sim_sie_shear.toml"


@pytest.mark.parametrize(
    "existing, out",
    [
        ("scene.toml", "scene.fits"),  # the sidecar config would replace the user's config
        ("photo.png", "photo.fits"),  # the preview would replace the user's picture
        ("obs.fits", "obs.fits"),
    ],
)
def test_existing_sidecar_or_output_is_never_overwritten(tmp_path, existing, out):
    (tmp_path / existing).write_text("the user's own file\n")
    before = snapshot(tmp_path)
    res = run_cli("simulate", *TINY, "--out", tmp_path / out)
    assert_refused(res, before, existing, "--overwrite")


def test_the_scene_file_is_never_its_own_sidecar_even_with_overwrite(tmp_path):
    scene = tmp_path / "scene.toml"
    scene.write_text('[[lens]]\ntype = "SIS"\ntheta_E = 1.0\n[instrument]\nnpix = 16\n')
    before = snapshot(tmp_path)
    res = run_cli("simulate", "--config", scene, "--out", tmp_path / "scene.fits", "--overwrite")
    assert_refused(res, before, "scene.toml", "both an input and an output", "--out")


def test_a_shapelet_source_with_its_amplitude_vector_renders(tmp_path):
    scene = tmp_path / "shapelets.toml"
    scene.write_text('[[lens]]\ntype = "SIS"\ntheta_E = 1.0\n[[source]]\ntype = "SHAPELETS"\n'
                     'amp = [1.0, 0.2, -0.1]\nbeta = 0.2\n[instrument]\nnpix = 16\n'
                     'supersample = 1\n')  # fmt: skip
    res = run_cli("simulate", "--config", scene, "--out", tmp_path / "s.fits", "--no-preview")
    assert res.exit_code == 0, res.output
    resolved = (tmp_path / "s.toml").read_text()
    assert "amp = [1.0, 0.2, -0.1]" in resolved
    image = fits.getdata(tmp_path / "s.fits")
    assert np.all(np.isfinite(image)) and image.max() > 0


@pytest.mark.parametrize("out", ["res.toml", "res.png", "res.txt", "res"])
def test_output_that_is_not_fits_is_refused(tmp_path, out):
    (tmp_path / "res.toml").write_text("seed = 3\n")
    before = snapshot(tmp_path)
    res = run_cli("simulate", *TINY, "--out", tmp_path / out)
    assert_refused(res, before, out, ".fits")


def test_output_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "obs.fits").mkdir()
    before = snapshot(tmp_path)
    res = run_cli("simulate", *TINY, "--out", tmp_path / "obs.fits", "--overwrite")
    assert_refused(res, before, "is a folder")


def test_overwrite_replaces_all_outputs_together(tmp_path):
    out = tmp_path / "obs.fits"
    assert run_cli("simulate", *TINY, "--out", out, "--seed", 1).exit_code == 0
    first = snapshot(tmp_path)
    assert {p.name for p in first} == {"obs.fits", "obs.toml", "obs.png"}
    res = run_cli("simulate", *TINY, "--out", out, "--seed", 2, "--overwrite")
    assert res.exit_code == 0, res.output
    second = snapshot(tmp_path)
    assert set(second) == set(first) and all(second[p] != first[p] for p in first)


def test_interrupted_run_leaves_no_partial_outputs(tmp_path, monkeypatch):
    """Ctrl-C while the last sidecar is written: none of the outputs appears."""
    import lensgen.simulate.batch

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lensgen.simulate.batch, "simulation_preview", interrupt)
    (tmp_path / "keep.txt").write_text("unrelated\n")
    before = snapshot(tmp_path)
    res = run_cli("simulate", *TINY, "--out", tmp_path / "obs.fits")
    assert res.exit_code == 130
    assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # no temporary files either
    assert snapshot(tmp_path) == before
    # A rerun needs no --overwrite.
    monkeypatch.undo()
    assert run_cli("simulate", *TINY, "--out", tmp_path / "obs.fits").exit_code == 0


def test_resolved_config_reproduces_the_observation_bit_for_bit(tmp_path):
    """Distributions are resolved to the drawn values (and the latent, and the seed)."""
    first = tmp_path / "g.fits"
    res = run_cli("simulate", "--config", EXAMPLE, "--npix", 24, "--seed", 7, "--out", first)
    assert res.exit_code == 0, res.output
    resolved = (tmp_path / "g.toml").read_text()
    assert "uniform" not in resolved and "normal" not in resolved and "seed = 7" in resolved
    again = tmp_path / "r.fits"
    res = run_cli("simulate", "--config", tmp_path / "g.toml", "--out", again, "--no-preview")
    assert res.exit_code == 0, res.output
    assert first.read_bytes() == again.read_bytes()


def test_resolved_config_of_a_cube_keeps_its_distributions(tmp_path):
    cube = tmp_path / "cube.fits"
    args = ["--npix", 16, "--supersample", 1, "--n", 3, "--seed", 4]
    res = run_cli("simulate", "--config", EXAMPLE, *args, "--out", cube)
    assert res.exit_code == 0, res.output
    assert "theta_E = { uniform = [" in (tmp_path / "cube.toml").read_text()
    res = run_cli(
        "simulate", "--config", tmp_path / "cube.toml", "--n", 3, "--out", tmp_path / "c2.fits"
    )
    assert res.exit_code == 0, res.output
    assert np.array_equal(fits.getdata(cube), fits.getdata(tmp_path / "c2.fits"))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--exptime", "nan"], ["exptime", "nan"]),
        (["--exptime", "inf"], ["exptime", "inf"]),
        (["--background-rms", "nan"], ["background_rms", "nan"]),
        (["--background-rms", "inf"], ["background_rms", "inf"]),
        (["--pixel-scale", "inf"], ["pixel_scale", "inf"]),
        (["--psf-fwhm", "nan"], ["psf_fwhm", "nan"]),
        (["--npix", "100000"], ["npix=100000", "GiB", "available"]),
        (["--supersample", "100000"], ["supersample=100000", "available"]),
        (["--npix", "1"], ["npix must be >= 8", "1"]),
        (["--n", "0"], ["--n", "0"]),
        (["--seed", "99999999999999999999999"], ["--seed"]),
        (["--seed", "-1"], ["--seed"]),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, args, needles):
    before = snapshot(tmp_path)
    res = run_cli("simulate", *TINY, *args, "--out", tmp_path / "obs.fits")
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)
    for needle in needles:
        assert needle in res.output, (needle, res.output)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "text, needles",
    [
        ("[noise]\nexptime = nan\n", ["[noise]", "exptime", "nan"]),
        ("[noise]\nbackground_rms = inf\n", ["[noise]", "background_rms", "inf"]),
        ('[[lens]]\ntype = "SIS"\ntheta_E = inf\n', ["theta_E", "finite"]),
        ('[[lens]]\ntype = "SIS"\ntheta_E = { uniform = [nan, 2.0] }\n', ["theta_E", "finite"]),
        ("seed = -4\n", ["seed", "-4"]),
        (
            '[[source]]\ntype = "SERSIC_ELLIPSE"\namp = 5.0\nR_sersic = -1.0\nn_sersic = 1.0\n',
            ["SERSIC_ELLIPSE", "R_sersic must be > 0", "-1"],
        ),
        (
            '[[source]]\ntype = "SERSIC_ELLIPSE"\namp = 5.0\nR_sersic = 0.3\nn_sersic = 0\n',
            ["n_sersic must be > 0", "0"],
        ),
        (
            '[[source]]\ntype = "GAUSSIAN"\namp = -5.0\nsigma = 0.3\n',
            ["GAUSSIAN", "amp must be >= 0", "-5"],
        ),
        (
            '[[source]]\ntype = "SERSIC_ELLIPSE"\namp = 5.0\nR_sersic = 0.3\nn_sersic = 1.0\n'
            "e1 = 0.9\ne2 = 0.9\n",
            ["|e|", "< 1"],
        ),
        ('[[source]]\ntype = "VAE"\nflux = -50.0\n', ["VAE", "flux must be > 0", "-50"]),
        ('[[source]]\ntype = "VAE"\nsize = 0.0\n', ["VAE", "size must be > 0"]),
        ('[[source]]\ntype = "VAE"\nscale = 0.03\n', ["scale", "size"]),
    ],
)
def test_bad_config_values_are_one_line_errors(tmp_path, text, needles):
    cfg = tmp_path / "scene.toml"
    cfg.write_text(text)
    before = snapshot(tmp_path)
    res = run_cli(
        "simulate", "--config", cfg, "--npix", 16, "--supersample", 1, "--out", tmp_path / "o.fits"
    )
    assert_refused(res, before, *needles)


def test_config_that_is_not_utf8_is_one_line_error(tmp_path):
    cfg = tmp_path / "scene.toml"
    cfg.write_bytes("[noise]\nexptime = 100.0 # \u00e9\n".encode("latin-1"))
    before = snapshot(tmp_path)
    res = run_cli("simulate", "--config", cfg, *TINY, "--out", tmp_path / "o.fits")
    assert_refused(res, before, "scene.toml", "UTF-8")
