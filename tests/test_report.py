"""export.report's parity views: row counts, images, bounds and what is not gated.

Built from hand-made rows (the figures of a real app-model run), so these checks
cost nothing; tests/test_parity.py renders real reports.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from edgeport.export.formats import ArtifactFormat, Precision
from edgeport.export.parity import ParityReport, ParityResult
from edgeport.export.report import format_parity_table, to_markdown, write_junit


def _row(artifact: str, precision: Precision, runtime: str, *, images: int = 10_000,
         bound: float | None = None, source: str = "not gated", passed: bool = True,
         max_diff: float = 9.7e-1) -> ParityResult:
    return ParityResult(
        artifact=artifact, format=ArtifactFormat.TFLITE, precision=precision,
        runtime=runtime, accuracy=0.9076, reference_accuracy=0.9075, agreement=0.9982,
        max_abs_diff=max_diff, mean_abs_diff=1e-3, passed=passed,
        failures=() if passed else ("agreement 98.00% < 99.00%",), bytes=95_000,
        images=images, max_abs_diff_bound=bound, bound_source=source)


REPORT = ParityReport(passed=False, results=(
    _row("model_float16.tflite", Precision.FLOAT16, "litert", bound=2.3e-2,
         source="4 x float16 simulation 5.7e-03", max_diff=3.8e-3),
    _row("model_app_float32.tflite", Precision.FLOAT32, "litert", source="not gated"),
    _row("model_app_float32.tflite", Precision.FLOAT32, "mediapipe"),
    _row("model_app_float32.tflite", Precision.FLOAT32, "litert.js (chromium)", images=1000,
         bound=1e-5, source="table", max_diff=2e-6),
    _row("model_app_int8.tflite", Precision.INT8, "litert", passed=False),
))


def test_headline_counts_files_and_rows():
    text = format_parity_table(REPORT)
    assert "parity FAIL: 3 files, 5 rows: 4 passed, 1 failed" in text
    ok = ParityReport(passed=True, results=REPORT.results[:1])
    assert "parity PASS: 1 file, 1 row: 1 passed" in format_parity_table(ok)


def test_rows_show_images_bounds_and_what_is_not_gated():
    lines = format_parity_table(REPORT).splitlines()
    assert "images" in lines[0] and "max |Δp| bound" in lines[0]
    f16 = next(line for line in lines if line.startswith("model_float16"))
    assert "10,000" in f16 and "3.8e-03" in f16
    assert "2.3e-02 (4 x float16 simulation 5.7e-03)" in f16
    browser = next(line for line in lines if "litert.js (chromium)" in line)
    assert " 1,000 " in browser and "1.0e-05 (table)" in browser  # the browser's sample
    app = [line for line in lines if line.startswith("model_app_")]
    assert all("9.7e-01 (not gated)" in line for line in app if "chromium" not in line)
    assert any(line.startswith("agreement is gated on every row") for line in lines)
    md = to_markdown(REPORT)
    assert "| 1,000 |" in md and "9.7e-01 (not gated)" in md and "_agreement is gated" in md


def test_json_and_junit_carry_images_and_bounds(tmp_path):
    d = REPORT.to_dict()
    assert d["results"][0]["images"] == 10_000
    assert d["results"][0]["max_abs_diff_bound"] == REPORT.results[0].max_abs_diff_bound
    assert d["results"][0]["bound_source"] == "4 x float16 simulation 5.7e-03"
    assert d["results"][1]["max_abs_diff_bound"] is None
    assert ParityReport.from_dict(json.loads(json.dumps(d))) == REPORT
    root = ET.parse(write_junit(REPORT, tmp_path / "p.xml")).getroot()
    out = root.find(".//testcase[@name='model_float16.tflite']/system-out").text
    assert "images = 10000" in out and "bound_source = 4 x float16 simulation" in out


def test_a_refused_folder_reads_as_such():
    refused = ParityReport(passed=False, results=(), problems=(
        "export/extra.onnx: extra file, not listed in manifest.json; fix: move it out",))
    text = format_parity_table(refused)
    assert "parity FAIL: export folder refused (1 problem(s) below); no file was run" in text
    assert "- export/extra.onnx: extra file, not listed in manifest.json; fix: " in text
    assert "- export/extra.onnx" in to_markdown(refused)
    assert ParityReport.from_dict(refused.to_dict()) == refused
