"""edgeport.progress: tqdm in a terminal, whole lines elsewhere, nothing with --no-progress."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from edgeport.progress import NO_PROGRESS_ENV, LineProgress, line_mode, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(NO_PROGRESS_ENV, raising=False)


def test_named_steps_print_one_line_each_without_carriage_returns():
    out = io.StringIO()
    bar = progress_bar(total=8, desc="export", unit="file", file=out)
    assert isinstance(bar, LineProgress)
    for name in ("model_float32.tflite", "model_float16.tflite", "model_dynamic_int8.tflite",
                 "model_int8.tflite"):
        bar.set_description(f"export {name}")
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines() == [
        "export: model_float32.tflite (1/8)", "export: model_float16.tflite (2/8)",
        "export: model_dynamic_int8.tflite (3/8)", "export: model_int8.tflite (4/8)"]
    assert "\r" not in out.getvalue()


def test_counting_bars_print_each_tenth_and_iterables_pass_through():
    out = io.StringIO()
    items = list(progress_bar(range(1000), desc="train mlp", unit="it", file=out))
    assert items == list(range(1000))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "train mlp: 100/1000 it (10%)"
    assert lines[-1] == "train mlp: 1000/1000 it (100%)"


def test_ci_forces_lines_even_in_a_terminal_and_no_progress_silences(monkeypatch):
    term = _Terminal()
    assert not line_mode(term)
    tqdm_bar = progress_bar(total=3, file=_Terminal())
    assert not isinstance(tqdm_bar, LineProgress)  # tqdm's own bar in a terminal
    tqdm_bar.close()
    monkeypatch.setenv("CI", "true")
    assert line_mode(term)
    monkeypatch.setenv(NO_PROGRESS_ENV, "1")
    bar = progress_bar(range(3), desc="parity", file=term)
    assert list(bar) == [0, 1, 2]
    bar.set_description("parity model.onnx")
    bar.close()
    assert term.getvalue() == ""


@pytest.mark.slow
def test_cli_export_progress_is_lines_in_a_log(exported_run: Path, tmp_path: Path):
    """`edgeport export` with stderr in a file: one line per file, 9 steps, no \\r frames."""
    from _runs import copy_run

    run = copy_run(exported_run, tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "edgeport", "export", str(run), "--force",
                           "--formats", "float32,int8"], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    steps = [line for line in proc.stderr.splitlines() if line.startswith("export: ")]
    assert steps == ["export: model_float32.tflite (1/3)", "export: model_int8.tflite (2/3)",
                     "export: golden.npz, manifest.json (3/3)"]
    quiet = subprocess.run([sys.executable, "-m", "edgeport", "export", str(run), "--force",
                            "--formats", "float32", "--no-progress"], capture_output=True,
                           text=True, timeout=600, check=False)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("export: ")]
