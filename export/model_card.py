"""``MODEL_CARD.md``: what an export is, for the people who receive the files.

Usage::

    from edgeport.export.model_card import render_model_card
    text = render_model_card(manifest, metrics)            # at export: model, data, contract
    fill_model_card(export_dir, results, thresholds)       # after parity: the figures

Ordering (docs/contracts.md): the card is listed in ``manifest.json["files"]`` with its
SHA-256, and ``parity.json`` records the manifest's SHA-256. So ``edgeport export`` writes
the card (model, data and split, labels, input contract, files and sizes) before the
manifest; the parity gate re-renders it with each file's accuracy, agreement, size and
batch-1 latency and the thresholds it passed, then rewrites the card's manifest entry, and
only then writes ``parity.json``. ``edgeport verify`` checks the card like any listed file.
The export-time card has no timings, so the same weights still give the same bytes.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeport.errors import EdgeportError
from edgeport.fileio import atomic_write_text

__all__ = ["MODEL_CARD_NAME", "fill_model_card", "render_model_card", "write_model_card"]

MODEL_CARD_NAME = "MODEL_CARD.md"

_ARCHITECTURE = {
    "softmax": "softmax regression, `logits = xW + b` (the TensorFlow MNIST tutorial's model)",
    "mlp": "multi-layer perceptron (dense layers, ReLU)",
    "cnn": "convolutional network (convolutions, pooling, dense head)",
}
_PREPROCESS = {
    "mnist": "the MNIST digit pipeline (`edgeport.mobile_demo.preprocess_digit`): grayscale, "
             "dark-on-light pictures inverted, paper noise removed, cropped to the ink, "
             "longest side scaled to 20 px, centre of mass at the middle of a 28 x 28 frame",
    "resize": "a plain resize of the whole picture to the model's size",
}


def render_model_card(
    manifest: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    figures: Sequence[Mapping[str, Any]] = (),
    thresholds: Sequence[Mapping[str, Any]] = (),
    latency: Mapping[str, float] | None = None,
    empty_frame: Mapping[str, tuple[str, float]] | None = None,
) -> str:
    """The card's Markdown.

    Args:
        manifest: the export's ``manifest.json`` document.
        metrics: the run's ``metrics.json`` document.
        figures: parity rows (``ParityResult.to_dict()``); empty before parity.
        thresholds: ``{"precision", "max_abs_diff", "min_agreement", "max_accuracy_drop"}``
            rows the figures were judged by.
        latency: batch-1 p50 in milliseconds per file, measured at parity time.
        empty_frame: per file, the (label, probability) it answers on an empty input.
    """
    labels = [str(n) for n in manifest.get("labels", [])]
    model = str(metrics.get("model", "?"))
    dataset = str(metrics.get("dataset", "?"))
    inp = dict(manifest.get("input") or metrics.get("input") or {})
    arts = [a for a in manifest.get("artifacts", []) if isinstance(a, Mapping)]
    out = [f"# Model card: {dataset} {model}", "",
           f"An edgeport {manifest.get('edgeport_version', '?')} export: {len(arts)} model "
           "files that compute the same classifier for phones, browsers and small devices, "
           "each checked against the reference TensorFlow model by the parity gate.", ""]
    out += ["## Model", "", *_model_lines(model, metrics), ""]
    out += ["## Data", "", *_data_lines(dataset, metrics), ""]
    out += ["## Labels", "",
            f"{len(labels)} classes, in output order: " + ", ".join(f"`{n}`" for n in labels)
            + " (`labels.txt`; also embedded in every file).", ""]
    out += ["## Input contract", "", *_input_lines(inp, arts), ""]
    out += ["## Files", "", *_file_lines(arts, figures, latency or {}), ""]
    out += ["## Thresholds", "", *_threshold_lines(figures, thresholds), ""]
    apps = [str(a.get("file")) for a in arts if a.get("family") == "app"]
    out += ["## Known limits", "", *_limit_lines(labels, inp, empty_frame or {}, apps), ""]
    out += ["## How to verify this folder", "",
            "```bash",
            "edgeport verify EXPORT_DIR                # hashes, golden vectors, this card",
            "edgeport verify EXPORT_DIR --key key.pub  # when model.sig is present",
            "```", "",
            "`verify` needs only the device install (no TensorFlow, no dataset); it checks "
            "every file listed in `manifest.json`, this card included, by size and SHA-256.",
            ""]
    return "\n".join(out)


def _model_lines(model: str, metrics: Mapping[str, Any]) -> list[str]:
    cfg = metrics.get("config") or {}
    arch = _ARCHITECTURE.get(model, f"`{model}`")
    lines = [f"- Architecture: {arch}."]
    if metrics.get("recipe") is not None:
        steps = (f"{cfg.get('epochs')} epochs" if cfg.get("epochs")
                 else f"{metrics.get('iterations', cfg.get('iterations'))} iterations")
        lines.append(f"- Training: recipe `{metrics.get('recipe')}`, {steps}, optimizer "
                     f"`{cfg.get('optimizer')}`, learning rate {cfg.get('learning_rate')}, "
                     f"batch {cfg.get('batch_size')}, seed {metrics.get('seed')}.")
    acc = metrics.get("test_accuracy")
    if isinstance(acc, (int, float)):
        lines.append(f"- Reference (TensorFlow SavedModel) test accuracy: {acc:.2%}.")
    return lines


def _data_lines(dataset: str, metrics: Mapping[str, Any]) -> list[str]:
    split = metrics.get("split") or {}
    lines = [f"- Dataset: `{dataset}`."]
    counts = ", ".join(f"{k} {split[k]:,}" for k in ("train", "validation", "test")
                       if isinstance(split.get(k), int))
    if counts:
        lines.append(f"- Split: {counts} images" +
                     (f" ({split['rule']})." if split.get("rule") else "."))
    lines.append("- The figures below are on the whole test split, which training never saw; "
                 "int8 calibration used training images only.")
    return lines


def _input_lines(inp: Mapping[str, Any], arts: Sequence[Mapping[str, Any]]) -> list[str]:
    shape = f"{inp.get('height')} x {inp.get('width')} x {inp.get('channels')}"
    lines = [f"- Plain files: input `{inp.get('name', 'image')}`, {inp.get('layout')} layout "
             f"({shape}), {inp.get('dtype')} pixels in {inp.get('range')} "
             f"(`{inp.get('normalization')}`); outputs `probabilities` [batch, K] then `logits`."]
    pre = _PREPROCESS.get(str(inp.get("preprocess")), f"`{inp.get('preprocess')}`")
    lines.append(f"- Preprocessing before a plain file: {pre}.")
    for a in arts:
        for t in a.get("inputs") or []:
            if t.get("scale") is not None and a.get("family") != "app":
                lines.append(f"- `{a['file']}`: {t.get('dtype')} input, scale {t['scale']:.6g}, "
                             f"zero point {t.get('zero_point')}: `q = round(x / scale) + zp`; "
                             "outputs dequantized with their own scale and zero point.")
    apps = [a for a in arts if a.get("family") == "app"]
    if apps:
        shape = (apps[0].get("inputs") or [{}])[0].get("shape")
        names = ", ".join(f"`{a['file']}`" for a in apps)
        lines.append(f"- App files ({names}): an RGB "
                     f"picture {shape}, 0-255, the preprocessing inside the graph; standard "
                     "TFLite metadata (MediaPipe Tasks, ML Kit, LiteRT.js).")
    return lines


def _file_lines(arts: Sequence[Mapping[str, Any]], figures: Sequence[Mapping[str, Any]],
                latency: Mapping[str, float]) -> list[str]:
    from .parity import row_verdict
    from .thresholds import NO_DIGIT

    if not figures:
        lines = ["| file | format | precision | size | sha256 |", "|---|---|---|---:|---|"]
        lines += [f"| {a['file']} | {a.get('format')} | {a.get('precision')} | "
                  f"{_kb(a.get('bytes'))} | `{str(a.get('sha256'))[:12]}` |" for a in arts]
        return [*lines, "", "Accuracy, agreement and latency are added by `edgeport parity`; "
                        "until then this export is not proven."]
    lines = ["| file | runtime | size | accuracy | top-1 agreement | batch-1 p50 | parity |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in figures:
        ms = latency.get(str(r["artifact"]))
        lines.append(
            f"| {r['artifact']} | {r.get('runtime') or '-'} | {_kb(r.get('bytes'))} | "
            f"{_pct(r.get('accuracy'))} | {_pct(r.get('agreement'))} | "
            f"{'-' if ms is None else f'{ms:.3f} ms'} | "
            f"{row_verdict(bool(r.get('passed')), r.get('gpu_ready'))} |"
        )
    none_rows = any(str(r.get("runtime") or "").endswith(NO_DIGIT) for r in figures)
    return [*lines, "", "Agreement: share of test images whose top-1 class equals the "
                    "reference model's. Latency: p50 of batch-1 calls on the machine that ran "
                    f"the gate ({platform.machine()}, {os.cpu_count()} cores), the runtime "
                    "`edgeport-demo` picks; a phone differs."
                    + (" On `(no digit)` rows, accuracy is the share of generated frames with "
                       "no digit answered `none`." if none_rows else "")]


def _threshold_lines(figures: Sequence[Mapping[str, Any]],
                     thresholds: Sequence[Mapping[str, Any]]) -> list[str]:
    if not figures:
        return ["Not judged yet: run `edgeport parity RUN`."]
    verdict = ("every file passed" if all(r.get("passed") for r in figures)
               else "NOT every file passed: " + "; ".join(
                   f"{r['artifact']}: {', '.join(r.get('failures') or [])}"
                   for r in figures if not r.get("passed")))
    lines = [f"Parity gate: {verdict}.", "",
             "| precision | max \\|Δp\\| | top-1 agreement | accuracy drop |",
             "|---|---:|---:|---:|"]
    for t in thresholds:
        mad, drop = t.get("max_abs_diff"), t.get("max_accuracy_drop")
        bound = "-" if mad is None else f"{mad:.1e}"
        if mad is not None and t.get("bound_source") not in (None, "", "table"):
            bound += f" ({t['bound_source']})"
        lines.append(f"| {t['precision']} | {bound} | "
                     f"≥ {_pct(t.get('min_agreement'))} | "
                     f"{'-' if drop is None else f'≤ {drop * 100:.1f} pts'} |")
    return lines


def _limit_lines(labels: Sequence[str], inp: Mapping[str, Any],
                 empty_frame: Mapping[str, tuple[str, float]], apps: Sequence[str]) -> list[str]:
    from .thresholds import APP_EMPTY_FRAMES, APP_NONE_RATE

    plain = (f"every input, an empty frame included, gets one of the {len(labels)} labels, "
             "at times with high confidence")
    if inp.get("preprocess") == "mnist" and apps:
        lines = [f"- The app models ({', '.join(f'`{a}`' for a in apps)}) answer `none` when "
                 "the frame holds no digit (`edgeport.mobile_demo.preprocess.DIGIT_RULE`, in "
                 "the graph): blank paper, gradients, shadows, specks, ruled lines, a finger at "
                 f"the edge. The gate requires `none` on at least {APP_NONE_RATE:.0%} of "
                 f"{APP_EMPTY_FRAMES:,} generated empty frames. The plain files have no `none` "
                 f"class: {plain}; run `find_digit` first (edgeport-demo does) or use an app "
                 "model."]
    else:
        lines = [f"- There is no \"no digit\" / \"unknown\" class: {plain}. An app must decide "
                 "itself when there is nothing to classify (e.g. too little ink in the frame)."]
    if empty_frame:
        lines.append("- Measured on an empty input (a blank plain input / a white picture): "
                     + "; ".join(f"`{f}` answers `{lab}` ({p:.0%})"
                                 for f, (lab, p) in empty_frame.items()) + ".")
    if inp.get("preprocess") == "mnist":
        lines.append("- Trained on centred, size-normalised handwritten digits: a plain file "
                     "needs the preprocessing above; photos of several digits, printed "
                     "fonts or strong perspective are outside what it was tested on.")
    lines.append("- int8 files: outputs move in steps of their output scale (1/256 for "
                 "probabilities); a top-1 class near a tie can differ from the float model.")
    lines.append("- The legacy tflite-runtime 2.14 cannot load files that use newer operator "
                 "versions (e.g. `model_dynamic_int8.tflite`'s FULLY_CONNECTED v12).")
    return lines


def _kb(n: Any) -> str:
    return "-" if not isinstance(n, int) else f"{n / 1024:.1f} KB"


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.2%}"


def write_model_card(export_dir: str | os.PathLike[str], manifest: Mapping[str, Any],
                     metrics: Mapping[str, Any]) -> Path:
    """Write the export-time card (no figures yet) into ``export_dir``; return its path."""
    path = Path(export_dir) / MODEL_CARD_NAME
    atomic_write_text(path, render_model_card(manifest, metrics))
    return path


def fill_model_card(export_dir: str | os.PathLike[str], metrics: Mapping[str, Any],
                    results: Sequence[Any], table: Mapping[Any, Any]) -> bool:
    """After parity: re-render the card with the figures, then rewrite its manifest entry.

    Only when ``manifest.json["files"]`` lists the card (an export that has one); the
    caller writes ``parity.json`` afterwards, so it names the updated manifest.

    Args:
        export_dir: the export folder.
        metrics: the run's ``metrics.json``.
        results: the gate's ``ParityResult`` rows.
        table: the tolerance table the plain rows were judged by (precision -> Tolerance).

    Returns:
        Whether the card was updated.
    """
    from .manifest import read_manifest, support_files_entry, write_manifest

    root = Path(export_dir)
    manifest = read_manifest(root)
    if MODEL_CARD_NAME not in (manifest.get("files") or {}):
        return False
    rows = [r.to_dict() for r in results]
    thresholds = _thresholds_used(rows, manifest, table)
    latency, empty = _measure(root, manifest)
    text = render_model_card(manifest, metrics, figures=rows, thresholds=thresholds,
                             latency=latency, empty_frame=empty)
    atomic_write_text(root / MODEL_CARD_NAME, text)
    files = dict(manifest["files"])
    files[MODEL_CARD_NAME] = support_files_entry(root)["files"][MODEL_CARD_NAME]
    write_manifest(root, {**manifest, "files": files})
    return True


def _thresholds_used(rows: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any],
                     table: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """One line per tolerance the gate applied: the row's own table (the app models' rows in
    LiteRT and MediaPipe by ``APP_THRESHOLDS``, as verify judges them) and the ``max |Δp|``
    bound the row was gated by (calibrated for float16), not the table's floor."""
    from .integrity import _row_table
    from .thresholds import NO_DIGIT

    app_files = {str(a.get("file")) for a in manifest.get("artifacts", [])
                 if a.get("family") == "app"}
    used: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if str(r.get("runtime") or "").endswith(NO_DIGIT):  # gated on the `none` rate
            continue
        own = _row_table(r, app_files, table)
        label = f"app {r['precision']}" if own is not table else str(r["precision"])
        line = used.setdefault((label, str(r.get("bound_source") or "")),
                               {"precision": label, **_tolerance(own, str(r["precision"]))})
        if r.get("max_abs_diff_bound") is not None:
            line["max_abs_diff"] = r["max_abs_diff_bound"]
            line["bound_source"] = r.get("bound_source") or "table"
    return list(used.values())


def _tolerance(table: Mapping[Any, Any], precision: str) -> dict[str, Any]:
    from .formats import Precision

    tol = table.get(Precision(precision))
    if tol is None:
        return {"max_abs_diff": None, "min_agreement": None, "max_accuracy_drop": None}
    return {"max_abs_diff": tol.max_abs_diff, "min_agreement": tol.min_agreement,
            "max_accuracy_drop": tol.max_accuracy_drop}


def _measure(root: Path, manifest: Mapping[str, Any]
             ) -> tuple[dict[str, float], dict[str, tuple[str, float]]]:
    """Batch-1 p50 (ms) and the answer on an empty input, per file (a file that cannot
    be measured here is left out: the gate has already judged it)."""
    from .baseline import batch1_inputs, batch1_latency

    labels = [str(n) for n in manifest.get("labels", [])]
    latency: dict[str, float] = {}
    empty: dict[str, tuple[str, float]] = {}
    for entry in manifest.get("artifacts", []):
        name = str(entry.get("file"))
        names = [str(n) for n in entry.get("labels") or labels]
        try:
            model, x, blank = batch1_inputs(root, entry)
            latency[name] = float(batch1_latency([lambda m=model, x=x: m.predict(x)],
                                                 repeats=3, runs=30)[0].median)
            p = model.predict(blank)["probabilities"][0]
        except (EdgeportError, OSError, KeyError, ValueError, RuntimeError):
            # measuring is a courtesy: the gate has already judged the file
            continue
        k = int(p.argmax())
        empty[name] = (names[k] if k < len(names) else str(k), float(p[k]))
    return latency, empty
