"""edgeport.errors: one-line errors, parameter names in the library, flags on the command line."""

from __future__ import annotations

import pytest

from edgeport.errors import DatasetError, EdgeportError, in_flags, run_cli
from edgeport.train.config import ConfigError, make_config


@pytest.mark.parametrize(
    ("library", "cli"),
    [
        ("batch_size=0; expected an integer", "--batch-size 0; expected an integer"),
        ("choose another out_dir, or pass force=True", "choose another --out, or pass --force"),
        ("recipe='x' for model='mlp'", "--recipe 'x' for --model 'mlp'"),
        ("check data_dir or EDGEPORT_DATA", "check --data-dir or EDGEPORT_DATA"),
        ("use runtime=onnxruntime or auto", "use --runtime onnxruntime or auto"),
        # Names that are not flags, or only part of a word or a path, stay as they are.
        ("max_abs_diff=0.1; calibration_samples=0", "max_abs_diff=0.1; calibration_samples=0"),
        ("runs/model=x.tflite", "runs/model=x.tflite"),
    ],
)
def test_cli_says_parameters_as_flags(library: str, cli: str) -> None:
    assert in_flags(library) == cli


def test_library_error_names_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"^batch_size=0; expected a positive integer$"):
        make_config(batch_size=0)


def test_run_cli_prints_one_line_in_flags(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise DatasetError("dataset='x': not a known dataset; pass data_dir=DIR")

    assert run_cli("edgeport", body) == 2
    err = capsys.readouterr().err
    assert err == "edgeport: error: --dataset 'x': not a known dataset; pass --data-dir DIR\n"
    assert issubclass(DatasetError, EdgeportError)
