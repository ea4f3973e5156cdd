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


def _summary_table():
    import pandas as pd

    from lensgen.infer.report import SUMMARY_COLUMNS

    rows = {
        "lens.0.theta_E": [2.29990123, 1.17e-4, 2.29967, 2.30012, 1.0041, 409.5, 438.1],
        "source.0.center_x": [4.25e-4, 5.8e-4, -7.4e-4, 1.45e-3, 1.0139, 122.2, 293.0],
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=SUMMARY_COLUMNS)


@pytest.mark.parametrize("width", [60, 80, 200])
def test_summary_tables_drop_columns_instead_of_cutting_numbers(width):
    from rich.console import Console

    from lensgen.infer.report import print_summary

    console = Console(width=width, record=True, color_system=None)
    print_summary(_summary_table(), "nuts", {"lens.0.theta_E": 2.3}, console)
    text = console.export_text()
    assert "…" not in text
    assert "2.29990" in text and "0.00042" in text  # the means, whole
    assert all(len(line) <= width for line in text.splitlines() if "│" in line)
    if width == 200:
        assert "ess_tail" in text and "left out" not in text
    else:
        assert "left out to fit" in text and "summary_nuts.csv" in text
