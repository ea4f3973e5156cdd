"""Numbers in the printed summaries: never rounded below what the posterior resolves."""

from __future__ import annotations

import math

import pytest

from lensgen.infer.report import with_sd_digits


@pytest.mark.parametrize(
    ("value", "sd", "text"),
    [
        (2.29990123, 1.17e-4, "2.29990"),  # θ_E: the old "2.3" hid the whole posterior
        (4.25e-4, 5.8e-4, "0.00042"),
        (50.2, 0.14, "50.20"),
        (1234.5, 12.0, "1234"),
        (7.0, 0.0, "7"),
        (math.nan, 1.0, "nan"),
    ],
)
def test_values_keep_the_digits_their_sd_resolves(value, sd, text):
    assert with_sd_digits(value, sd) == text
