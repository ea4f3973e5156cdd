"""One vocabulary for model names in `simulate` and `infer`: lenstronomy's, any case."""

from __future__ import annotations

from typing import get_args, get_type_hints

import pytest
from conftest import assert_refused, run_cli, snapshot

from lensgen.cli.vocabulary import INFER_SOURCES, lens_names, mass_profiles, model_name
from lensgen.errors import LensgenError
from lensgen.infer.problem import InferConfig
from lensgen.io.fits import read_observation


def test_names_are_canonical_in_any_case():
    assert lens_names("sie, Shear") == ("SIE", "SHEAR")
    assert model_name("Sersic", INFER_SOURCES, "--source") == "SERSIC_ELLIPSE"
    assert model_name("VAE+Pixels", INFER_SOURCES, "--source") == "vae+pixels"
    assert "SUBHALOS" not in mass_profiles() and {"SIS", "SIE", "EPL", "NFW"} <= set(
        mass_profiles()
    )
    with pytest.raises(LensgenError, match="--lens 'sise': choose one of SIS, SIE, EPL"):
        lens_names("sise")
    # The infer vocabulary is InferConfig's, less "auto".
    assert set(INFER_SOURCES) == set(get_args(get_type_hints(InferConfig)["source"])) - {"auto"}


def test_simulate_and_infer_take_the_same_names(tmp_path):
    out = tmp_path / "obs.fits"
    res = run_cli("simulate", "--lens", "Sie", "--source", "SERSIC_ELLIPSE", "--npix", "16",
                  "--pixel-scale", "0.3", "--supersample", "1", "--no-preview", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    scene = read_observation(out).scene
    assert scene["lens"][0] == "SIE" and scene["source"] == ["SERSIC_ELLIPSE"]
    res = run_cli("infer", out, "--lens", "sie,SHEAR", "--source", "sersic", "--lens-light",
                  "None", "--show-priors")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "lens.1.gamma1" in res.output and "source.0.R_sersic" in res.output


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["simulate", "--lens", "sise"], ["--lens 'sise'", "SIS, SIE"]),
        (["simulate", "--source", "gauss"], ["--source 'gauss'", "SERSIC_ELLIPSE"]),
        (["infer", "obs.fits", "--source", "pixel"], ["--source 'pixel'", "vae+shapelets"]),
        (["infer", "obs.fits", "--lens", ","], ["--lens", "at least one mass profile"]),
    ],
)
def test_unknown_names_are_refused_with_the_choices(tmp_path, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "obs.fits").write_bytes(b"")
    before = snapshot(tmp_path)
    assert_refused(run_cli(*args), before, *needles)
