"""The one tolerance table: how close each exported precision must stay to the reference.

Usage::

    from edgeport.export.thresholds import THRESHOLDS, load_thresholds
    tol = THRESHOLDS[Precision.INT8]              # the defaults
    table = load_thresholds("thresholds.json")    # defaults, overridden from a file

The parity gate (:mod:`export.parity`), the golden-vector check
(:mod:`export.verify`) and the tests all read this table, so a tolerance is
changed in one place. Rows are keyed by :class:`~export.formats.Precision`;
the ONNX file is ``float32`` and shares that row with ``model_float32.tflite``.

Units: ``min_agreement`` and ``max_accuracy_drop`` are fractions of the test
set (``0.995`` = 99.5 %, ``0.003`` = 0.3 accuracy points); ``max_abs_diff``
and ``golden_atol`` are absolute differences of probabilities. ``None`` means
the figure is reported but not gated.

An override file holds ``{"<precision>": {"<field>": number | null, ...}, ...}``,
e.g. ``{"int8": {"min_agreement": 0.98}}``; fields not named keep their default.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgeport.errors import EdgeportError

from .formats import Precision

__all__ = [
    "APP_EMPTY_FRAMES",
    "APP_NONE_RATE",
    "APP_THRESHOLDS",
    "FLOAT16_CALIBRATION_K",
    "NO_DIGIT",
    "THRESHOLDS",
    "WEBGPU_SAMPLES",
    "Thresholds",
    "ThresholdsError",
    "Tolerance",
    "calibrated_bound",
    "load_thresholds",
    "markdown_thresholds",
    "none_failures",
    "readme_with_thresholds",
]

Thresholds = Mapping[Precision, "Tolerance"]
"""A complete table: one :class:`Tolerance` per precision."""


class ThresholdsError(EdgeportError, ValueError):
    """A thresholds file is unreadable, or names an unknown precision or field, or a bad value."""


@dataclass(frozen=True)
class Tolerance:
    """How far one precision may drift from the reference model.

    Attributes:
        min_agreement: smallest allowed fraction of test images whose top-1 class
            equals the reference's top-1 class.
        max_abs_diff: largest allowed ``max |p - p_ref|`` over all test images and
            classes; ``None`` to report without gating (quantized files).
        max_accuracy_drop: largest allowed ``reference_accuracy - accuracy``
            (a fraction, 0.003 = 0.3 points); ``None`` to report without gating.
        golden_atol: largest allowed ``|p - p_golden|`` when a file replays the
            ``golden.npz`` vectors recorded at export time (:mod:`export.verify`).
    """

    min_agreement: float
    max_abs_diff: float | None
    max_accuracy_drop: float | None
    golden_atol: float

    def to_dict(self) -> dict[str, float | None]:
        """The JSON form used by override files."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Tolerance))
_OPTIONAL = ("max_abs_diff", "max_accuracy_drop")  # may be null: report, do not gate

# The reference is float32 TensorFlow; the gate runs the files through LiteRT / ONNX Runtime.
# golden_atol: the replay of golden.npz is bit-exact on the exporting machine; the allowance
# is for another CPU's kernels (ARM NEON vs x86 AVX) running the same file.
THRESHOLDS: Thresholds = MappingProxyType(
    {
        # Same float32 math, other kernels: summation order only (seen 2e-6), so no flips.
        Precision.FLOAT32: Tolerance(
            min_agreement=1.0,
            max_abs_diff=1e-5,
            max_accuracy_drop=None,
            golden_atol=1e-5,  # a few float32 ulps of reordered sums
        ),
        # float16 weights (rel. error <= 4.9e-4), float32 compute: seen 4e-4; rare near-tie flips.
        Precision.FLOAT16: Tolerance(
            min_agreement=0.999,
            max_abs_diff=1e-3,
            max_accuracy_drop=None,
            golden_atol=1e-5,  # the weights are fixed in the file; compute is float32
        ),
        # int8 weights, activations quantized per sample at run time: gate decisions, not p.
        Precision.DYNAMIC_INT8: Tolerance(
            min_agreement=0.995,
            max_abs_diff=None,
            max_accuracy_drop=0.003,
            golden_atol=1e-4,  # float rescaling of int32 accumulators may round differently
        ),
        # Full integer, uint8 outputs of step 1/256 (seen 4e-2): gate decisions, not p.
        Precision.INT8: Tolerance(
            min_agreement=0.99,
            max_abs_diff=None,
            max_accuracy_drop=0.005,
            golden_atol=0.004,  # one output step (1/256): a requantization may round the other way
        ),
    }
)


def load_thresholds(
    path: str | os.PathLike[str] | None = None, *, base: Thresholds = THRESHOLDS
) -> Thresholds:
    """The tolerance table, with the rows and fields a JSON file names overridden.

    Args:
        path: a JSON file ``{"int8": {"min_agreement": 0.99, ...}, ...}``; ``None``
            returns ``base`` unchanged.
        base: the table to override (default :data:`THRESHOLDS`).

    Returns:
        A read-only mapping with one :class:`Tolerance` per precision.

    Raises:
        ThresholdsError: the file is missing or not JSON, names an unknown
            precision or field, or gives a value that is not a finite number in
            range (``min_agreement`` in [0, 1], the others >= 0).
    """
    if path is None:
        return base
    path = Path(path)
    precisions = ", ".join(p.value for p in Precision)
    example = 'e.g. {"int8": {"min_agreement": 0.99}}'
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdsError(
            f"{path}: thresholds file not found; expected a JSON file {example}; "
            "fix: check the --thresholds path"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ThresholdsError(
            f"{path}: not valid JSON ({_first_line(e)}); expected {example}; fix the file"
        ) from None
    if not isinstance(doc, dict):
        raise ThresholdsError(
            f"{path}: top level is {type(doc).__name__}, expected an object keyed by "
            f"precision ({precisions}); {example}"
        )
    table = dict(base)
    for key, row in doc.items():
        try:
            precision = Precision(key)
        except ValueError:
            raise ThresholdsError(
                f"{path}: unknown precision key {key!r}; allowed keys: {precisions}"
            ) from None
        if not isinstance(row, dict):
            raise ThresholdsError(
                f"{path}: {key!r} is {type(row).__name__}, expected an object with keys "
                f"{', '.join(_FIELDS)}"
            )
        changes: dict[str, float | None] = {}
        for name, value in row.items():
            if name not in _FIELDS:
                raise ThresholdsError(
                    f"{path}: unknown key {key}.{name}; allowed keys: {', '.join(_FIELDS)}"
                )
            changes[name] = _check_value(path, f"{key}.{name}", name, value)
        table[precision] = replace(table[precision], **changes)
    return MappingProxyType(table)


def _check_value(path: Path, where: str, name: str, value: Any) -> float | None:
    if value is None and name in _OPTIONAL:
        return None
    allowed = "a number or null" if name in _OPTIONAL else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ThresholdsError(
            f"{path}: {where} is {value!r}, expected {allowed}; fix the value in the file"
        )
    value = float(value)
    if name == "min_agreement" and not 0.0 <= value <= 1.0:
        raise ThresholdsError(
            f"{path}: {where} is {value!r}, expected a fraction in [0, 1] (0.99 = 99 %)"
        )
    if name != "min_agreement" and value < 0.0:
        raise ThresholdsError(f"{path}: {where} is {value!r}, expected a number >= 0")
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


ORACLE_ATOL = 1e-4
"""The parity gate re-runs the run's SavedModel on a sample of test images and
requires ``reference.npz`` to match within this: the same float32 graph on the
same CPU differs only by batch-size-dependent summation order (~1e-7); a
reference from another model differs by far more (:mod:`export.oracle`)."""

ORACLE_SAMPLE = 256
"""How many test images that re-run uses (the first ones: cheap, deterministic)."""

# App models (export.app) against the reference fed with mobile_demo.preprocess's numpy
# output for the same RGB picture. The graph repeats numpy's steps to Pillow's coefficients
# but estimates the noise floor on a 1-in-16 sample and rounds in float32, so a picture near
# a decision (a box size or a centring shift on a .5) can move a lot (seen max |dp| 0.97)
# while decisions agree on 99.8 %: gate agreement and accuracy, report max |dp|. The
# golden replay runs the same file: exact here. Seen on all 10,000 MNIST test pictures:
# softmax 99.79 % (float) / 99.41 % (int8), cnn (300 steps) 99.92 % / 99.92 %.
APP_THRESHOLDS: Thresholds = MappingProxyType(
    {
        Precision.FLOAT32: Tolerance(
            min_agreement=0.99,  # seen 99.79 % (softmax), 99.92 % (cnn)
            max_abs_diff=None,
            max_accuracy_drop=0.01,  # seen +0.01 (softmax), -0.04 pts (cnn)
            golden_atol=1e-4,  # float preprocessing: ROUND of a box size may flip on other CPUs
        ),
        # int8 classifier behind the float preprocessing: the float gap plus the int8
        # file's own drift (model_int8 agrees 99.5 % with the reference); seen 99.41 %.
        Precision.INT8: Tolerance(
            min_agreement=0.985,
            max_abs_diff=None,
            max_accuracy_drop=0.015,  # seen -0.14 pts (softmax)
            golden_atol=0.004,  # one int8 output step (1/256), as model_int8.tflite
        ),
    }
)


# The `none` answer of digit app models (mobile_demo.preprocess.DIGIT_RULE in the graph): the
# parity gate's "(no digit)" rows feed each app file APP_EMPTY_FRAMES generated frames of paper
# with no digit (export/frames.py: blank, gradients, texture, specks, shadows, ruled lines, a
# finger at the edge, vignettes) and require `none` on at least APP_NONE_RATE of them.
# Seen: 100 % (softmax and cnn, float and int8, LiteRT and MediaPipe) on 1,000 frames.
APP_NONE_RATE = 0.95
APP_EMPTY_FRAMES = 1000
NO_DIGIT = " (no digit)"  # the runtime suffix of those rows: "litert (no digit)"

# Test images per WebGPU row of `parity --browser` by default (`--webgpu-samples`): SwiftShader
# runs WebGPU's shaders on the CPU, one dispatch per op, and LiteRT's TOPK shader costs ~0.45 ms
# per k: the app graph's medians make it 0.2-0.9 s a picture here (a phone GPU is another
# matter).
WEBGPU_SAMPLES = 200


def none_failures(rate: float, n: int) -> list[str]:
    """The ``(no digit)`` rows' gate: ``none`` on at least :data:`APP_NONE_RATE` of the frames."""
    if rate >= APP_NONE_RATE:
        return []
    return [f"`none` on {rate:.2%} of {n} empty frames < {APP_NONE_RATE:.0%} "
            "(a camera app would show a digit on empty paper)"]


# --- calibrated bounds --------------------------------------------------------------------

FLOAT16_CALIBRATION_K = 4.0
"""float16 files are gated on ``max |Δp| <= max(table, K x simulated)``, where *simulated*
is the max |Δp| between the run's SavedModel and itself with every float32 weight rounded
to float16 (:func:`export.oracle.float16_simulation`). The file rounds other numbers (the
converter folds batch norm into the kernels first, then rounds once), so its max |Δp|
is the simulation's times a factor seen from 0.67 to 1.8 (file / simulation: 3.9e-4 /
3.9e-4 on the softmax regression, 3.8e-3 / 5.7e-3 and 3.2e-3 / 1.8e-3 on two residual
CNNs with batch norm). K = 4 is twice the worst seen factor; a wrong weight, a swapped
label order or a flipped bit moves probabilities by 1e-1 or more and still fails, and
agreement (99.9 %) is not loosened. The table value stays the floor: a model whose
simulation shows little noise keeps the tight bound."""


def calibrated_bound(floor: float | None, simulated: float | None,
                     *, k: float = FLOAT16_CALIBRATION_K) -> tuple[float | None, str]:
    """The max |Δp| bound a float16 row is gated by, and where it came from.

    Args:
        floor: the table's ``max_abs_diff`` for the row (``None``: not gated).
        simulated: the float16 simulation's max |Δp| (``None``: not calibrated).
        k: the multiple of the simulation allowed.

    Returns:
        ``(bound, source)``: e.g. ``(1e-3, "table")`` or
        ``(2.3e-2, "4 x float16 simulation 5.7e-03")``; ``(None, "not gated")``.
    """
    if floor is None:
        return None, "not gated"
    if simulated is None or not math.isfinite(simulated) or not k * simulated > floor:
        return floor, "table"
    return k * simulated, f"{k:g} x float16 simulation {simulated:.1e}"


# --- the README's table ----------------------------------------------------------------------

_WHY = {
    Precision.FLOAT32: "same math, only float summation order differs",
    Precision.FLOAT16: "weights rounded to 11 significant bits",
    Precision.DYNAMIC_INT8: "int8 weights, float activations",
    Precision.INT8: "everything 8-bit, output steps of 1/256",
}
_APP_WHY = {
    Precision.FLOAT32: "in-graph preprocessing vs numpy's: float32 rounding, a sampled "
                       "noise floor",
    Precision.INT8: "the same, plus the int8 classifier's own drift",
}
_LABEL = {Precision.FLOAT32: "float32 (TFLite, ONNX)"}


def _short(v: float) -> str:
    """1e-05 -> 1e-5, 0.001 -> 1e-3, 0.5 -> 0.5."""
    if v == 0 or v >= 0.01:
        return f"{v:g}"
    mant, exp = f"{v:.1e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def _pct_cell(v: float, sign: str = "") -> str:
    text = f"{v * 100:.2f}".rstrip("0").rstrip(".")
    return f"{sign}{text} %"


def markdown_thresholds(table: Thresholds = THRESHOLDS,
                        app_table: Thresholds = APP_THRESHOLDS) -> str:
    """The tolerance tables as the README's Markdown table (one source: this module).

    ``python -m edgeport.export.thresholds --markdown`` prints it; a test checks the
    README holds exactly this text.
    """
    rows = ["| precision | max \\|Δp\\| | top-1 agreement | accuracy drop | why |",
            "|---|---:|---:|---:|---|"]

    def row(label: str, tol: Tolerance, why: str, precision: Precision | None) -> str:
        if tol.max_abs_diff is None:
            diff = "\u2013"
        elif precision is Precision.FLOAT16:
            diff = (f"{_short(tol.max_abs_diff)}, or {FLOAT16_CALIBRATION_K:g} x the model's "
                    "float16 simulation if larger")
        else:
            diff = _short(tol.max_abs_diff)
        agree = ("100 %" if tol.min_agreement >= 1.0
                 else f"≥ {_pct_cell(tol.min_agreement)}")
        drop = "\u2013" if tol.max_accuracy_drop is None else f"≤ {tol.max_accuracy_drop * 100:g}"
        return f"| {label} | {diff} | {agree} | {drop} | {why} |"

    for p, tol in table.items():
        rows.append(row(_LABEL.get(p, p.value), tol, _WHY[p], p))
    for p, tol in app_table.items():
        rows.append(row(f"app {p.value}", tol, _APP_WHY[p], None))
    return "\n".join(rows) + "\n"


README_BEGIN = "<!-- thresholds table: generated by `make thresholds-table`, do not edit -->"
README_END = "<!-- end of thresholds table -->"


def readme_with_thresholds(text: str) -> str:
    """``text`` (a README) with the block between :data:`README_BEGIN` and
    :data:`README_END` replaced by :func:`markdown_thresholds`, indented as the markers are.

    Raises:
        ThresholdsError: the markers are missing.
    """
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ThresholdsError(
            f"README: no {README_BEGIN!r} ... {README_END!r} block; expected the markers "
            "around the thresholds table; fix: put them back around the table"
        )
    line_start = text.rfind("\n", 0, begin) + 1
    indent = text[line_start:begin]
    body = "".join(f"{indent}{line}\n" for line in markdown_thresholds().splitlines())
    return text[: begin + len(README_BEGIN)] + "\n" + body + indent + text[end:]


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edgeport.export.thresholds",
                                 description="print the parity tolerance table as Markdown")
    ap.add_argument("--markdown", action="store_true",
                    help="print the README's Markdown table (the default output)")
    ap.add_argument("--readme", metavar="FILE",
                    help="rewrite the table inside FILE's generated block instead of printing")
    args = ap.parse_args(argv)
    if args.readme:
        from edgeport.fileio import atomic_write_text

        path = Path(args.readme)
        atomic_write_text(path, readme_with_thresholds(path.read_text(encoding="utf-8")))
        return 0
    print(markdown_thresholds(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
