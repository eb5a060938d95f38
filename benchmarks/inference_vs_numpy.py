"""Batch-1 inference latency of every exported file against a numpy floor and TensorFlow.

Usage::

    EDGEPORT_DATA=../shared/data .venv/bin/python benchmarks/inference_vs_numpy.py --run RUN \
        [--runs 5000] [--rounds 10] [--threads N] [--no-bench]

For each artifact of ``RUN/export`` it times one image (a real test image
from ``golden.npz``) through

* ``Model.predict``: :func:`mobile_demo.runtime.load_model`, the code the
  device demo runs (LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``), with
  its reshape, uint8 quantization of the pixels (int8 file) and dequantized
  float32 outputs;
* ``raw``: the bare runtime on an input already in the file's dtype:
  ``set_tensor`` + ``invoke`` + ``get_tensor("probabilities")`` on the LiteRT
  interpreter, ``session.run(["probabilities"])`` on ONNX Runtime; and
  ``invoke()`` alone;

against (a) the numpy floor ``softmax(x @ W + b)`` on the run's own weights,
read from ``RUN/saved_model/variables`` (a chain of dense layers with ReLU
for ``mlp``; no floor for ``cnn``), and (b) the TensorFlow SavedModel's
``serving_default`` signature call. Every figure is the p50 of ``--runs``
calls (``time.perf_counter_ns``) after a warm-up, all candidates interleaved
in ``--rounds`` rounds so that load from other jobs hits them alike; ratios
are against the numpy floor measured in the same rounds.

Then :func:`export.bench.benchmark` (``edgeport bench``) measures the same
files again, each in a fresh process, and its table (load, first inference,
p50/p99, throughput, memory) is printed too, unless ``--no-bench``; it also
writes ``RUN/bench.json`` and needs the test split (``EDGEPORT_DATA``).

Target (the issue): LiteRT batch-1 latency within 2x of the numpy floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Target,
    add_run_argument,
    finish,
    interleaved_ns,
    load_average,
    machine,
    read_manifest,
    table,
    us,
)

TARGET_RATIO = 2.0


def dense_weights(saved_model: Path) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The (kernel, bias) pairs of a softmax/mlp run, in layer order; ``None`` for a cnn.

    Read straight from the SavedModel's variables checkpoint, so the floor
    uses exactly the weights every exported file was converted from.
    """
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(saved_model / "variables" / "variables"))
    keys = [k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")]
    keys.sort(key=lambda k: int(k.split("/")[-3]) if k.split("/")[-3].isdigit() else -1)
    values = [reader.get_tensor(k) for k in keys]
    if len(values) % 2 or any(
        w.ndim != 2 or b.ndim != 1 or w.shape[1] != b.shape[0]
        for w, b in zip(values[::2], values[1::2], strict=True)
    ):
        return None
    return [(w.astype(np.float32), b.astype(np.float32))
            for w, b in zip(values[::2], values[1::2], strict=True)]


def numpy_floor(layers: list[tuple[np.ndarray, np.ndarray]]) -> Callable[[np.ndarray], np.ndarray]:
    """``softmax(x @ W + b)`` (ReLU between layers for an mlp), float32 throughout."""

    def predict(x: np.ndarray) -> np.ndarray:
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            if i < len(layers) - 1:
                x = np.maximum(x, 0)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return predict


def raw_tflite(path: Path, x: np.ndarray, threads: int | None) -> tuple[Any, Callable, Callable]:
    """A LiteRT interpreter with ``x`` set; ``(probabilities, set+invoke+get, invoke only)``."""
    from ai_edge_litert.interpreter import Interpreter

    kwargs: dict[str, Any] = {"model_path": str(path)}
    if threads is not None:
        kwargs["num_threads"] = threads
    it = Interpreter(**kwargs)
    it.allocate_tensors()
    d_in = it.get_input_details()[0]
    (d_out,) = [d for d in it.get_output_details() if d["name"] == "probabilities"]
    scale, zero_point = d_in["quantization"]
    if d_in["dtype"] != np.float32:  # the int8 file takes the raw pixel values as uint8
        xq = np.clip(np.rint(x / scale) + zero_point, 0, 255).astype(d_in["dtype"])
    else:
        xq = np.ascontiguousarray(x.reshape(d_in["shape"]), dtype=np.float32)
    i_in, i_out = d_in["index"], d_out["index"]

    def full() -> np.ndarray:
        it.set_tensor(i_in, xq)
        it.invoke()
        return it.get_tensor(i_out)

    out_scale, out_zp = d_out["quantization"]
    q = full()
    probs = (q.astype(np.float32) - out_zp) * out_scale if out_scale else q
    return probs, full, it.invoke


def raw_onnx(path: Path, x: np.ndarray, threads: int | None) -> tuple[Any, Callable]:
    """An ONNX Runtime session; ``(probabilities, session.run(["probabilities"]))``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(x, dtype=np.float32)}

    def run() -> Any:
        return sess.run(["probabilities"], feed)

    return run()[0], run


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--runs", type=int, default=5000, help="timed batch-1 calls per candidate")
    ap.add_argument("--rounds", type=int, default=10, help="interleaving rounds")
    ap.add_argument("--warmup", type=int, default=50, help="untimed calls per candidate and round")
    ap.add_argument("--threads", type=int, default=None,
                    help="runtime CPU threads (default: each runtime's own default)")
    ap.add_argument("--no-bench", action="store_true",
                    help="skip the fresh-process table of export.bench")
    ap.add_argument("--bench-runs", type=int, default=1000, help="export.bench batch-1 runs")
    return ap.parse_args()


class Candidates:
    """Every way of running one image: the timed callables and their answers."""

    def __init__(self) -> None:
        self.fns: dict[str, Callable[[], object]] = {}
        self.probs: dict[str, np.ndarray] = {}
        self.models: dict[str, Any] = {}
        self.layers: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.floor_check = ""

    def add(self, key: str, fn: Callable[[], object], probs: Any = None) -> None:
        self.fns[key] = fn
        if probs is not None:
            self.probs[key] = np.asarray(probs, dtype=np.float32)


def _reference_candidates(c: Candidates, run: Path, tf: Any, inputs: np.ndarray) -> None:
    """The SavedModel call and, for a chain of dense layers, the numpy floor."""
    x1 = np.ascontiguousarray(inputs[:1])
    sig = tf.saved_model.load(str(run / "saved_model")).signatures["serving_default"]
    c.add("tf", lambda: sig(image=tf.constant(x1))["probabilities"].numpy())
    c.probs["tf"] = np.asarray(c.fns["tf"]())
    c.layers = dense_weights(run / "saved_model")
    if c.layers is not None:
        floor = numpy_floor(c.layers)
        c.add("numpy", lambda: floor(x1), floor(x1))
        ref = sig(image=tf.constant(inputs))["probabilities"].numpy()
        diff = float(np.abs(floor(inputs) - ref).max())
        c.floor_check = (f"The numpy floor reproduces the SavedModel on the {len(inputs)} "
                         f"golden images to max |Δp| = {diff:.1e}.")


def _artifact_candidates(c: Candidates, export_dir: Path, artifacts: list[tuple[str, str, str]],
                         x1: np.ndarray, threads: int | None) -> None:
    """Each file through Model.predict and through its bare interpreter or session."""
    from edgeport.mobile_demo.runtime import dequantize, load_model, quantize

    for name, fmt, _ in artifacts:
        model = load_model(export_dir / name, num_threads=threads)
        c.models[name] = model
        c.add(f"predict:{name}", lambda m=model: m.predict(x1)["probabilities"],
              model.predict(x1)["probabilities"])
        if model.input.dtype == "uint8":  # the int8 file also takes camera bytes as they are
            u8 = np.rint(x1 * 255).astype(np.uint8)
            c.add(f"predict_u8:{name}", lambda m=model, u=u8: m.predict(u)["probabilities"],
                  model.predict(u8)["probabilities"])
        if fmt == "tflite":
            p, full, invoke = raw_tflite(export_dir / name, x1, threads)
            c.add(f"raw:{name}", full, p)
            c.add(f"invoke:{name}", invoke)
        else:
            p, run_ = raw_onnx(export_dir / name, x1, threads)
            c.add(f"raw:{name}", run_, p)
    # Where Model.predict's time goes for a quantized file: the pixel quantization and
    # the dequantization of its two outputs, timed on their own.
    int8 = next((m for m in c.models.values() if m.input.quantized), None)
    if int8 is not None:
        spec, outs = int8.input, int8.outputs
        c.add("quantize", lambda: quantize(x1, spec.scale, spec.zero_point, spec.dtype))
        q_out = [np.zeros(o.shape[1:], dtype=o.dtype)[None] for o in outs]
        c.add("dequantize", lambda: [dequantize(q, o.scale, o.zero_point)
                                     for q, o in zip(q_out, outs, strict=True)])


def _fresh_process_bench(run: Path, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """``export.bench.benchmark`` rows by artifact, and its Markdown table."""
    if args.no_bench:
        return {}, ""
    from edgeport.export.bench import benchmark
    from edgeport.export.report import to_markdown

    print("export.bench: one fresh process per file ...", file=sys.stderr)
    report = benchmark(run, runs=args.bench_runs, num_threads=args.threads,
                       runtimes=["litert", "onnxruntime"], progress=False)
    return ({r.artifact: r for r in report.rows},
            to_markdown(report).replace("### edgeport bench", "").strip())


def _rows(c: Candidates, artifacts: list[tuple[str, str, str]], p50: dict[str, float],
          p99: dict[str, float], bench_rows: dict[str, Any]) -> list[list[str]]:
    base = p50.get("numpy")

    def ratio(key: str) -> str:
        return "-" if base is None else f"{p50[key] / base:.1f}x"

    def bench_us(name: str) -> str:
        r = bench_rows.get(name)
        return "-" if r is None else f"{r.latency_p50_ms * 1e3:.1f}"

    def row(what: str, runtime: str, key: str, fresh: str = "-", digits: int = 1) -> list[str]:
        return [what, runtime, f"{p50[key]:.{digits}f}", f"{p99[key]:.{digits}f}", ratio(key),
                fresh]

    rows = []
    if base is not None:
        what = ("`softmax(x @ W + b)`" if c.layers is not None and len(c.layers) == 1 else
                "(dense layers with ReLU, then softmax)")
        rows.append([f"numpy floor {what}", "numpy", f"{base:.1f}",
                     f"{p99['numpy']:.1f}", "1.0x", "-"])
    rows.append(row("SavedModel `serving_default` call", "tensorflow", "tf",
                    bench_us("saved_model")))
    for name, fmt, _ in artifacts:
        rt = c.models[name].runtime
        rows.append(row(f"`{name}` Model.predict", rt, f"predict:{name}", bench_us(name)))
        if f"predict_u8:{name}" in p50:
            rows.append(row(f"`{name}` Model.predict, uint8 pixels", rt, f"predict_u8:{name}"))
        what = "set+invoke+get" if fmt == "tflite" else "session.run"
        rows.append(row(f"`{name}` raw {what}", rt, f"raw:{name}"))
        if f"invoke:{name}" in p50:
            rows.append(row(f"`{name}` invoke() alone", rt, f"invoke:{name}"))
    for key, what in (("quantize", "mobile_demo quantize() of the 784 pixels"),
                      ("dequantize", "mobile_demo dequantize() of both outputs")):
        if key in p50:
            rows.append(row(what, "numpy", key, digits=2))
    return rows


def main() -> None:
    args = _parse_args()
    export_dir, manifest = read_manifest(args.run)
    run = Path(args.run)
    from edgeport.train.tfenv import import_tensorflow

    tf = import_tensorflow()
    with np.load(export_dir / "golden.npz", allow_pickle=False) as z:
        inputs = z["inputs"].astype(np.float32)
    artifacts = [(str(e["file"]), str(e["format"]), str(e["precision"]))
                 for e in manifest["artifacts"]]
    c = Candidates()
    _reference_candidates(c, run, tf, inputs)
    _artifact_candidates(c, export_dir, artifacts, np.ascontiguousarray(inputs[:1]), args.threads)
    top = {k: int(np.argmax(v)) for k, v in c.probs.items()}
    if len(set(top.values())) != 1:
        print(f"warning: the candidates disagree on the test image's class: {top}",
              file=sys.stderr)

    print(f"timing {len(c.fns)} candidates x {args.runs} calls in {args.rounds} rounds ...",
          file=sys.stderr)
    ns = interleaved_ns(c.fns, runs=args.runs, warmup=args.warmup, rounds=args.rounds)
    p50 = {k: us(v) for k, v in ns.items()}
    p99 = {k: us(v, 99) for k, v in ns.items()}
    bench_rows, bench_md = _fresh_process_bench(run, args)

    threads = "default" if args.threads is None else str(args.threads)
    model_kind = manifest.get("input", {}).get("layout", "?")
    lines = [
        f"machine: {machine()}; load average {load_average()}; {time.strftime('%Y-%m-%d')}; "
        f"p50/p99 of {args.runs} batch-1 calls per row after warm-up, interleaved in "
        f"{args.rounds} rounds; runtime threads {threads}; input layout {model_kind}",
        "",
        table(["path", "runtime", "p50 μs", "p99 μs", "x numpy floor",
               "p50 μs, fresh process (export.bench)"], _rows(c, artifacts, p50, p99, bench_rows)),
    ]
    macs = sum(w.size for w, _ in c.layers) if c.layers is not None else 0
    if c.floor_check and c.layers is not None:
        params = sum(w.size + b.size for w, b in c.layers)
        lines += ["", f"{c.floor_check} The model is {params:,} parameters, {macs:,} "
                  "multiply-adds per image."]
    if bench_md:
        lines += ["", "Per-artifact bench (`export.bench.benchmark`, each file in its own "
                  "fresh process: cold load, first call, p50/p99 through Model.predict, "
                  "throughput at batch 256, peak memory):", "", bench_md]

    targets = []
    tfl = [n for n, f, _ in artifacts if f == "tflite"]
    base = p50.get("numpy")
    if base is not None and tfl:
        targets = [_verdict(tfl, p50, base, k, macs) for k in ("predict", "raw")]
    else:
        lines += ["", "No numpy floor for this model (not a chain of dense layers): the "
                  "2x target is defined for the softmax regression."]
    finish("\n".join(lines), targets, args.json)


def _verdict(
    files: list[str], p50: dict[str, float], base: float, kind: str, macs: int
) -> Target:
    ratios = {n: p50[f"{kind}:{n}"] / base for n in files}
    measured = ", ".join(f"{n.removeprefix('model_').removesuffix('.tflite')} "
                         f"{r:.1f}x" for n, r in ratios.items())
    met = all(r <= TARGET_RATIO for r in ratios.values())
    passing = [n for n, r in ratios.items() if r <= TARGET_RATIO]
    worst = max(ratios, key=ratios.__getitem__)
    over = p50[f"{kind}:{worst}"] - TARGET_RATIO * base
    if kind == "predict":
        goal = "LiteRT batch-1 latency through `Model.predict` within 2x of the numpy floor"
        extra = {n: p50[f"predict:{n}"] - p50[f"raw:{n}"] for n in files}
        plain = [v for n, v in extra.items() if "int8.tflite" not in n or "dynamic" in n]
        small = (", almost all of it the per-call overhead of its few small numpy operations"
                 if macs < 100_000 else "")
        why = (f"The numpy floor is {base:.1f} μs for {macs:,} multiply-adds{small}. "
               "`Model.predict` adds "
               f"{min(plain or [0]):.1f}-{max(plain or [0]):.1f} μs to the bare interpreter on "
               "the float-input files (input checks and reshape, a dtype conversion per output, "
               "the result dict).")
        q = next((n for n in files if n == "model_int8.tflite"), None)
        if q is not None and "quantize" in p50:
            why += (f" On `{q}` it adds {extra[q]:.1f} μs: the float pixels are quantized to "
                    f"uint8 ({p50['quantize']:.1f} μs: divide, round, clip and a NaN check "
                    f"over 784 values, a few numpy calls) and both uint8 outputs dequantized "
                    f"({p50['dequantize']:.1f} μs), the round trip the wrapper makes so that "
                    "every file takes and returns float32.")
            if f"predict_u8:{q}" in p50:
                why += (f" Given the uint8 pixels as they come from a camera, "
                        f"`Model.predict` on `{q}` takes {p50[f'predict_u8:{q}']:.1f} μs, "
                        f"{p50[f'predict_u8:{q}'] / base:.1f}x the floor; the bare "
                        f"interpreter, {p50[f'raw:{q}'] / base:.1f}x.")
    else:
        goal = ("LiteRT batch-1 latency of the bare interpreter (set_tensor + invoke + "
                "get_tensor) within 2x of the numpy floor")
        inv = [p50[f"invoke:{n}"] for n in files]
        why = (f"`invoke()` alone takes {min(inv):.1f}-{max(inv):.1f} μs; the rest is copying "
               "the input in and the output out through the Python binding. This is the "
               "figure an app pays when it keeps its pixels in the model's dtype, as the "
               "Android and iOS interpreter APIs do: copy a buffer in, invoke, copy it out.")
    if met:
        why = f"All {len(files)} .tflite files are within 2x. " + why
    else:
        ok = f" ({', '.join(passing)} within 2x)" if passing else ""
        why = (f"Missed by {over:.1f} μs per call on {worst} "
               f"({ratios[worst]:.1f}x instead of 2x){ok}. " + why)
    return Target(name=f"inference_{kind}", goal=goal, measured=measured, met=met, why=why)


if __name__ == "__main__":
    main()
