"""Bad input and interruptions against `lensgen infer` and `lensgen demo`, run as a user would.

Every refused case asserts a non-zero exit, one `error:` line naming the problem, no
traceback, and that every file that was in the folder before is byte-identical
afterwards. Validation happens before any inference is compiled, so each case takes
about a second; the cases that need a finished run replace the fit by a stub.
"""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import assert_refused, run_cli, snapshot

from lensgen.infer.outputs import METHODS
from lensgen.infer.problem import InferenceResult
from lensgen.io.fits import Observation, read_observation, write_observation

TINY = ["--npix", "24", "--pixel-scale", "0.2", "--supersample", "1", "--source", "sersic"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "obs.fits"
    res = run_cli("simulate", *TINY, "--no-preview", "--seed", 3, "--out", path)
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture
def obs(simulated, tmp_path):
    """A private copy of the simulated observation in the test's folder."""
    return Path(shutil.copy(simulated, tmp_path / "obs.fits"))


def refused(tmp_path, *args, needles=()):
    before = snapshot(tmp_path)
    return assert_refused(run_cli(*args), before, *needles)


def write_variant(obs: Path, name: str, **changes) -> Path:
    """``obs`` with some fields of its Observation replaced, written next to it."""
    data = read_observation(obs)
    return write_observation(obs.parent / name, dataclasses.replace(data, **changes))


# --- 1. outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["infer", "demo"])
def test_out_that_is_a_file_is_refused(obs, tmp_path, command):
    (tmp_path / "results").write_text("the user's notes\n")
    args = [command, obs] if command == "infer" else [command]
    refused(tmp_path, *args, "--out", tmp_path / "results", needles=["results", "is a file"])


@pytest.mark.parametrize(
    "existing", ["summary_map.csv", "config.toml", "theta_E.png", "bestfit.png", "posterior_map.nc"]
)
def test_infer_existing_output_is_refused_before_inference(obs, tmp_path, existing):
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_text("an earlier result\n")
    (out / "notes.txt").write_text("files of other runs do not block\n")
    refused(tmp_path, "infer", obs, "--method", "map", "--out", out,
            needles=[existing, "--overwrite"])  # fmt: skip


@pytest.mark.parametrize("existing", ["obs.fits", "posterior/bestfit.png", "posterior/elbo.png"])
def test_demo_existing_output_is_refused_before_the_simulation(tmp_path, existing):
    out = tmp_path / "demo"
    (out / existing).parent.mkdir(parents=True, exist_ok=True)
    (out / existing).write_text("an earlier result\n")
    refused(tmp_path, "demo", "--out", out, needles=[Path(existing).name, "--overwrite"])


def test_output_that_is_a_folder_is_refused_even_with_overwrite(obs, tmp_path):
    (tmp_path / "out" / "bestfit.png").mkdir(parents=True)
    refused(tmp_path, "infer", obs, "--method", "map", "--out", tmp_path / "out", "--overwrite",
            needles=["bestfit.png", "is a folder"])  # fmt: skip


def test_input_that_is_also_an_output_is_refused(obs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.toml").write_text('[priors]\nlens.0.theta_E = "Uniform(1, 3)"\n')
    refused(tmp_path, "infer", obs, "--priors", out / "config.toml", "--method", "map",
            "--out", out, "--overwrite", needles=["config.toml", "input and an output"])  # fmt: skip


@pytest.fixture
def stub_fit(simulated, monkeypatch):
    """Replace the fit by draws at the truth, and the best-fit and corner figures by a few bytes."""
    from lensgen.infer import demo, report, run

    truth = read_observation(simulated).truth

    def fit(key, problem, config, progress=None):
        free = [n for n, p in problem.priors.items() if not p.fixed]
        samples = {n: truth[n] + 1e-3 * np.arange(4.0)[None] for n in free}
        diagnostics = {"wall_time_s": 0.0, "timings": {}, "elbo": np.arange(3.0)}
        methods = METHODS[config.method]
        return [InferenceResult(m, samples, {}, {}, diagnostics) for m in methods]

    def figure(*args, **kwargs):
        next(a for a in args if isinstance(a, Path)).write_bytes(b"png")

    monkeypatch.setattr(run, "run_inference", fit)
    monkeypatch.setattr(demo, "run_inference", fit)
    monkeypatch.setattr(report, "bestfit_plot", figure)
    monkeypatch.setattr(report, "corner_plot", figure)
    return report


def test_interrupted_infer_leaves_nothing_and_a_rerun_needs_no_overwrite(
    obs, tmp_path, stub_fit, monkeypatch
):
    def interrupt(problem, obs, result, path, overwrite):
        path.write_bytes(b"half a figure")
        raise KeyboardInterrupt  # Ctrl-C while the outputs are being written

    with monkeypatch.context() as m:
        m.setattr(stub_fit, "bestfit_plot", interrupt)
        before = snapshot(tmp_path)
        res = run_cli("infer", obs, "--method", "map", "--out", tmp_path / "out")
        assert res.exit_code == 130 and "interrupted" in res.output, res.output
        assert "Traceback" not in res.output
        assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()
    res = run_cli("infer", obs, "--method", "map", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"posterior_map.nc", "summary_map.csv", "bestfit.png", "theta_E.png",
                     "config.toml", "bestfit_lenstronomy.json", "coolest.json",
                     "coolest_image.fits", "coolest_noise_map.fits", "coolest_psf.fits"}  # fmt: skip


def test_interrupted_demo_leaves_no_obs_fits(simulated, tmp_path, stub_fit, monkeypatch):
    from lensgen.infer import demo

    sersic = read_observation(simulated)
    monkeypatch.setattr(demo, "simulate_seed_case", lambda cfg, seed: sersic)

    def interrupt(problem, obs, result, path, overwrite):
        raise KeyboardInterrupt

    out = tmp_path / "demo"
    with monkeypatch.context() as m:
        m.setattr(stub_fit, "bestfit_plot", interrupt)
        res = run_cli("demo", "--out", out)
        assert res.exit_code == 130, res.output
        assert not out.exists(), sorted(tmp_path.rglob("*"))
    res = run_cli("demo", "--out", out)
    assert res.exit_code == 0, res.output
    assert (out / "obs.fits").is_file() and (out / "posterior" / "config.toml").is_file()
    assert read_observation(out / "obs.fits").truth == sersic.truth


# --- 2. damaged files and header cards ------------------------------------------------------


def test_truncated_fits_names_the_file(obs, tmp_path):
    data = obs.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[: len(data) // 2])
    refused(tmp_path, "infer", cut, "--out", tmp_path / "out", needles=["cut.fits", "truncated"])


def test_fits_cut_at_an_extension_boundary_names_the_file(obs, tmp_path):
    """A file cut exactly between two HDUs is still valid FITS; NEXTEND tells it is short."""
    with fits.open(obs) as hdul:
        boundary = hdul.fileinfo(len(hdul) - 1)["hdrLoc"]
    cut = tmp_path / "short.fits"
    cut.write_bytes(obs.read_bytes()[:boundary])
    with fits.open(cut) as hdul:  # astropy reads it without complaint
        assert len(hdul) >= 2
    refused(tmp_path, "infer", cut, "--out", tmp_path / "out", needles=["short.fits", "truncated"])


@pytest.mark.parametrize(
    "card, value",
    [
        ("PIXSCALE", "0.2 arcsec"),
        ("EXPTIME", "long"),
        ("SEED", "three"),
        ("HIERARCH TRUTH lens.0.theta_E", "2.3"),
        ("SUPERSMP", 2.5),
    ],
)
def test_header_card_of_the_wrong_type_is_named(obs, tmp_path, card, value):
    bad = tmp_path / "bad.fits"
    with fits.open(obs) as hdul:
        hdul[0].header[card] = value
        hdul.writeto(bad)
    name = card.removeprefix("HIERARCH ")
    refused(tmp_path, "infer", bad, "--out", tmp_path / "out", needles=["bad.fits", name])


@pytest.mark.parametrize(
    "card", ["HIERARCH SCENE lens.x", "HIERARCH SCENE lens", "HIERARCH SCENE lens.4"]
)
def test_malformed_scene_card_is_named(obs, tmp_path, card):
    bad = tmp_path / "bad.fits"
    with fits.open(obs) as hdul:
        hdul[0].header[card] = "SIE"
        hdul.writeto(bad)
    refused(tmp_path, "infer", bad, "--out", tmp_path / "out", needles=["bad.fits", "SCENE lens"])


# --- 3, 4, 6. option values, refused before anything runs --------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [
        ("--num-chains", 0),
        ("--num-samples", 0),
        ("--svi-steps", -1),
        ("--map-restarts", 0),
        ("--map-steps", 0),
        ("--num-warmup", -1),
        ("--target-ess", -1),
        ("--npix", 8),
        ("--rein", "nan"),
        ("--rein", -1),
    ],
)
def test_demo_option_out_of_range_is_refused_before_the_simulation(tmp_path, option, value):
    refused(tmp_path, "demo", "--out", tmp_path / "demo", option, value, needles=[option])


@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--num-chains", 0, "num_chains"),
        ("--num-samples", 0, "num_samples"),
        ("--svi-steps", -1, "svi_steps"),
        ("--map-restarts", 0, "map_restarts"),
        ("--num-warmup", -1, "num_warmup"),
        ("--svi-lr", -1, "svi_lr"),
        ("--svi-lr", "nan", "svi_lr"),
        ("--svi-lr", "inf", "svi_lr"),
        ("--exptime", -1, "exptime"),
        ("--background-rms", "nan", "background_rms"),
        ("--subhalos", -1, "--subhalos"),
        ("--subhalo-threshold", "nan", "--subhalo-threshold"),
    ],
)
def test_infer_option_out_of_range_is_refused(obs, tmp_path, option, value, needle):
    args = ["infer", obs, "--method", "svi", "--out", tmp_path / "out", option, value]
    refused(tmp_path, *args, needles=[needle, str(value)])


def test_poisson_with_negative_or_zero_exposure_is_refused(obs, tmp_path):
    args = ["infer", obs, "--likelihood", "poisson", "--out", tmp_path / "out"]
    refused(tmp_path, *args, "--exptime", -1, needles=["exptime", "-1"])
    refused(tmp_path, *args, "--exptime", 0, needles=["obs.fits", "exposure time > 0"])


def test_negative_exptime_in_the_header_is_refused(obs, tmp_path):
    bad = write_variant(obs, "neg.fits", exptime=-100.0)
    refused(tmp_path, "infer", bad, "--out", tmp_path / "out",
            needles=["neg.fits", "EXPTIME", "-100"])  # fmt: skip


def test_all_zero_image_is_refused(obs, tmp_path):
    zero = write_variant(obs, "zero.fits", image=np.zeros((24, 24)))
    refused(tmp_path, "infer", zero, "--out", tmp_path / "out", needles=["zero.fits", "all zeros"])


def test_one_pixel_image_is_refused_with_the_minimum(obs, tmp_path):
    tiny = Observation(np.ones((1, 1)), 0.2, noise_map=np.ones((1, 1)))
    one = write_observation(tmp_path / "one.fits", tiny)
    refused(tmp_path, "infer", one, "--out", tmp_path / "out",
            needles=["one.fits", "1 × 1", "at least 8 × 8"])  # fmt: skip


def test_svi_steps_zero_warns_that_nothing_is_fitted(obs, tmp_path, monkeypatch):
    from lensgen.infer import run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_inference", interrupt)
    before = snapshot(tmp_path)
    res = run_cli("infer", obs, "--method", "svi", "--svi-steps", 0, "--out", tmp_path / "out")
    assert res.exit_code == 130, res.output
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--svi-steps 0" in warnings[0] and "fits nothing" in warnings[0]
    assert snapshot(tmp_path) == before


# --- 5. priors outside the parameter's domain ---------------------------------------------------


@pytest.mark.parametrize(
    "name, prior, domain",
    [
        ("lens.0.theta_E", "Uniform(-2, -1)", "theta_E > 0"),
        ("lens.0.theta_E", "Fixed(-2)", "theta_E > 0"),
        ("lens.0.theta_E", "Uniform(-1, 3)", "theta_E > 0"),
        ("lens.0.theta_E", "Normal(-1, 0.5)", "theta_E > 0"),
        ("source.0.e1", "Fixed(1.5)", "e1 < 1"),
        ("source.0.R_sersic", "TruncatedNormal(0.2, 0.1, -0.1, 0.5)", "R_sersic > 0"),
        ("source.0.amp", "Uniform(-5, 5)", "amp >= 0"),
    ],
)
def test_prior_outside_the_domain_is_refused(obs, tmp_path, name, prior, domain):
    priors = tmp_path / "priors.toml"
    priors.write_text(f'[priors]\n{name} = "{prior}"\n')
    refused(tmp_path, "infer", obs, "--priors", priors, "--out", tmp_path / "out",
            needles=["priors.toml", name, prior, domain])  # fmt: skip


def test_prior_inside_the_domain_is_accepted(obs, tmp_path):
    priors = tmp_path / "priors.toml"
    priors.write_text('[priors]\nlens.0.theta_E = "Uniform(0, 3)"\nsource.0.amp = "Fixed(0.5)"\n')
    res = run_cli("infer", obs, "--priors", priors, "--show-priors")
    assert res.exit_code == 0, res.output
    assert 'lens.0.theta_E    = "Uniform(0, 3)"' in res.output


# --- 7. what is wrong with the pixels ----------------------------------------------------------


def test_noise_map_of_zeros_is_named(tmp_path):
    sim = tmp_path / "noiseless.fits"
    res = run_cli("simulate", *TINY, "--no-preview", "--exptime", 0, "--background-rms", 0,
               "--out", sim)  # fmt: skip
    assert res.exit_code == 0, res.output
    refused(tmp_path, "infer", sim, "--out", tmp_path / "out",
            needles=["noiseless.fits", "NOISE extension", "all σ are 0"])  # fmt: skip


def test_infinite_pixels_are_named_as_such(obs, tmp_path, monkeypatch):
    image = read_observation(obs).image.copy()
    image[:] = np.inf
    inf = write_variant(obs, "inf.fits", image=image)
    message = refused(
        tmp_path, "infer", inf, "--out", tmp_path / "out", needles=["inf.fits", "576 ±inf"]
    )
    assert "576 NaN" not in message
    # One +inf pixel is left out with a warning that calls it what it is.
    from lensgen.infer import run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_inference", interrupt)
    image = read_observation(obs).image.copy()
    image[3, 4] = np.inf
    one = write_variant(obs, "one_inf.fits", image=image)
    res = run_cli("infer", one, "--out", tmp_path / "out")
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert any("1 pixel(s) at ±inf" in w and "NaN" not in w for w in warnings), res.output


def test_mask_of_zeros_is_named(obs, tmp_path):
    mask = tmp_path / "mask.fits"
    fits.PrimaryHDU(np.zeros((24, 24), np.int16)).writeto(mask)
    refused(tmp_path, "infer", obs, "--mask", mask, "--out", tmp_path / "out",
            needles=["mask selects no pixel"])  # fmt: skip


# --- 8. third-party noise -------------------------------------------------------------------


def test_one_chain_summary_logs_no_arviz_shape_warning(capfd):
    from lensgen.infer.report import summary

    result = InferenceResult("map", {"lens.0.theta_E": np.full((1, 1), 2.3)}, {}, {}, {})
    table = summary(result)
    assert table.loc["lens.0.theta_E", "mean"] == 2.3
    captured = capfd.readouterr()
    assert "Shape validation" not in captured.err + captured.out
