"""export.thresholds: the README's table is rendered from the module, the calibrated bound."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from edgeport.export.formats import Precision
from edgeport.export.thresholds import (
    APP_THRESHOLDS,
    FLOAT16_CALIBRATION_K,
    README_BEGIN,
    README_END,
    THRESHOLDS,
    ThresholdsError,
    calibrated_bound,
    markdown_thresholds,
    readme_with_thresholds,
)

REPO = Path(__file__).resolve().parents[1]
D = "\u2013"  # the en dash of a figure that is not gated


def test_readme_holds_exactly_the_rendered_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index(README_BEGIN) + len(README_BEGIN): text.index(README_END)]
    lines = [line.strip() for line in block.strip().splitlines()]
    assert "\n".join(lines) + "\n" == markdown_thresholds(), "run `make thresholds-table`"
    assert readme_with_thresholds(text) == text  # the generator would change nothing


def test_rendering_follows_the_table_and_keeps_the_why_column():
    md = markdown_thresholds()
    rows = md.splitlines()
    assert rows[0].endswith("| why |")
    assert len(rows) == 2 + len(THRESHOLDS) + len(APP_THRESHOLDS)
    assert f"| float32 (TFLite, ONNX) | 1e-5 | 100 % | {D} |" in md
    assert f"| float16 | 1e-3, or {FLOAT16_CALIBRATION_K:g} x the model's float16 simulation" in md
    assert f"| int8 | {D} | ≥ 99 % | ≤ 0.5 |" in md
    assert f"| app int8 | {D} | ≥ 98.5 % | ≤ 1.5 |" in md
    # A changed tolerance changes the rendering: one source.
    table = dict(THRESHOLDS)
    table[Precision.INT8] = table[Precision.INT8].__class__(0.97, None, 0.01, 0.004)
    assert f"| int8 | {D} | ≥ 97 % | ≤ 1 |" in markdown_thresholds(table)


def test_readme_markers_missing_say_the_fix():
    with pytest.raises(ThresholdsError, match="markers") as e:
        readme_with_thresholds("# no table here\n")
    assert e.value.exit_code == 2


def test_module_prints_the_table():
    out = subprocess.run([sys.executable, "-W", "ignore", "-m", "edgeport.export.thresholds",
                          "--markdown"], capture_output=True, text=True, check=True).stdout
    assert out == markdown_thresholds()


def test_calibrated_bound_never_goes_under_the_table():
    assert calibrated_bound(1e-3, None) == (1e-3, "table")
    assert calibrated_bound(1e-3, 1e-4) == (1e-3, "table")  # 4e-4: the table is the floor
    bound, source = calibrated_bound(1e-3, 5.7e-3)
    assert bound == pytest.approx(FLOAT16_CALIBRATION_K * 5.7e-3)
    assert source == f"{FLOAT16_CALIBRATION_K:g} x float16 simulation 5.7e-03"
    assert calibrated_bound(1e-3, math.nan) == (1e-3, "table")  # a NaN never widens it
    assert calibrated_bound(None, 5.7e-3) == (None, "not gated")
