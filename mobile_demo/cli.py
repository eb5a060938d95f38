"""edgeport-demo MODEL IMAGE_OR_DIR... [--labels FILE] [--top-k 3] [--json] [--runtime NAME]

Run an exported edgeport model on pictures with an on-device runtime (LiteRT,
tflite-runtime or ONNX Runtime; TensorFlow only as the last resort).

    edgeport-demo RUN/export/model_int8.tflite seven.jpg photos/      # label + top-3 per picture
    edgeport-demo RUN/export/model_int8.tflite --eval samples/        # accuracy + confusion matrix
    edgeport-demo RUN/export/model_int8.tflite --bench --runs 200     # load, first run, p50/p99
    edgeport-demo --export-samples 100 samples/ [--data-dir D]        # MNIST test PNGs to try
    edgeport-demo serve RUN/export [--host 0.0.0.0] [--https]          # the phone page (serve.py)

Labels come from the model's embedded metadata, else ``manifest.json`` or
``labels.txt`` beside the model; ``--labels`` overrides them. ``--eval DIR``
reads the true label from the sub-folder (``DIR/7/x.png``) or the file name
up to the first underscore (``DIR/7_00012.png``). Errors print one line,
``edgeport-demo: error: ...``, and exit with code 2 (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeport.errors import ImageError, run_cli

from .demo import classify, evaluate, find_images, resolve_labels, time_model
from .runtime import RUNTIMES, load_model

__all__ = ["build_parser", "main"]

PROG = "edgeport-demo"
_PROGRESS_MIN = 20  # show a counter on a terminal from this many pictures


def build_parser() -> argparse.ArgumentParser:
    """The ``edgeport-demo`` argument parser."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run an exported edgeport model (.tflite/.onnx) on pictures, "
        "without TensorFlow.",
        epilog="Errors: one line on stderr and exit code 2.",
    )
    p.add_argument(
        "model", nargs="?", metavar="MODEL", help="a .tflite or .onnx file from `edgeport export`"
    )
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="pictures or folders")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--eval", metavar="DIR", help="labelled pictures (DIR/7/x.png or DIR/7_x.png)"
    )
    mode.add_argument("--bench", action="store_true", help="time load and batch-1 inference")
    mode.add_argument(
        "--export-samples",
        nargs=2,
        metavar=("N", "DIR"),
        help="write the first N MNIST test images to DIR as <label>_<index>.png",
    )
    p.add_argument("--labels", metavar="FILE", help="class names, one a line (overrides)")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="classes shown (3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto", help="runtime (auto)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="runtime CPU threads")
    p.add_argument(
        "--no-preprocess",
        action="store_true",
        help="skip the digit pipeline (pictures already MNIST-like): only convert and resize",
    )
    p.add_argument("--runs", type=int, default=200, metavar="N", help="--bench timed runs (200)")
    p.add_argument("--data-dir", metavar="D", help="MNIST IDX folder for --export-samples")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _progress(done: int, total: int) -> None:
    print(f"\r{done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _cmd_export_samples(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    if args.model is not None:
        p.error("--export-samples N DIR takes no MODEL or pictures")
    n_text, out_dir = args.export_samples
    try:
        n = int(n_text)
    except ValueError:
        p.error(f"--export-samples: N must be a whole number, got {n_text!r}")
    # Dataset tooling lives with the data code; train.data imports no TensorFlow.
    from edgeport.train.data import export_samples

    files = export_samples(n, out_dir, data_dir=args.data_dir)
    if args.json:
        _print_json({"count": len(files), "files": [str(f) for f in files]})
    else:
        print(f"wrote {len(files)} MNIST test images to {out_dir}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    r = time_model(args.model, runtime=args.runtime, runs=args.runs, num_threads=args.threads)
    if args.json:
        _print_json(r.to_dict())
    else:
        print(f"model               {r.model} ({r.runtime})")
        print(f"load                {r.load_ms:.2f} ms")
        print(f"first inference     {r.first_inference_ms:.3f} ms")
        print(
            f"batch-1 latency     p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms  "
            f"mean {r.mean_ms:.3f} ms  ({r.runs} runs after {r.warmup} warm-up)"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    model = load_model(args.model, runtime=args.runtime, num_threads=args.threads)
    labels = resolve_labels(model, args.labels)
    progress = _progress if sys.stderr.isatty() else None
    r = evaluate(
        model, args.eval, labels=labels, preprocess=not args.no_preprocess, progress=progress
    )
    if args.json:
        _print_json(r.to_dict())
    else:
        print(f"accuracy {r.accuracy:.4f} on {r.count} pictures ({model.path.name}, {r.runtime})")
        print("confusion matrix (rows: true label, columns: predicted)")
        print(r.confusion_text())
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    model = load_model(args.model, runtime=args.runtime, num_threads=args.threads)
    labels = resolve_labels(model, args.labels)
    files = find_images(args.inputs)
    progress = _progress if sys.stderr.isatty() and len(files) >= _PROGRESS_MIN else None

    def run(items: list[Path]) -> list[Any]:
        return classify(model, items, labels=labels, top_k=args.top_k,
                        preprocess=not args.no_preprocess, progress=progress)

    errors: list[ImageError] = []
    try:
        preds = run(files)
    except ImageError:  # one bad picture must not hide the others' answers: one by one
        if len(files) == 1:
            raise
        preds = []
        for f in files:
            try:
                preds += run([f])
            except ImageError as e:
                errors.append(e)
    if args.json:
        _print_json({
            "model": str(model.path),
            "runtime": model.runtime,
            "predictions": [p.to_dict() for p in preds],
            "errors": [str(e) for e in errors],
        })
    else:
        for pred in preds:
            top = ", ".join(f"{lab} {prob:.1%}" for lab, prob in pred.top_k)
            print(f"{pred.file}: {pred.label} ({pred.probability:.1%})  "
                  f"top-{len(pred.top_k)}: {top}")
    for e in errors:
        print(f"{PROG}: error: {e}", file=sys.stderr)
    return 2 if errors else 0


def _run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    if args.export_samples is not None:
        return _cmd_export_samples(args, p)
    if args.model is None:
        p.error("MODEL is required (or use --export-samples N DIR)")
    _check_not_a_folder(Path(args.model))
    if args.top_k < 1:
        p.error(f"--top-k must be at least 1, got {args.top_k}")
    if args.runs < 1:
        p.error(f"--runs must be at least 1, got {args.runs}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if args.bench or args.eval is not None:
        if args.inputs:
            p.error("--bench and --eval take no pictures after MODEL")
        return _cmd_bench(args) if args.bench else _cmd_eval(args)
    if not args.inputs:
        p.error("give pictures or folders after MODEL, or --eval DIR, or --bench")
    return _cmd_classify(args)


def _check_not_a_folder(model: Path) -> None:
    """A folder (e.g. RUN/export) as MODEL: name the models inside and the one to try."""
    if not model.is_dir():
        return
    from edgeport.errors import ModelFileError

    found = sorted(p.name for p in model.iterdir()
                   if p.suffix in (".tflite", ".onnx", ".ort") and p.is_file())
    if not found:
        raise ModelFileError(f"{model}: is a folder with no .tflite or .onnx model; expected a "
                             "model file; fix: run `edgeport export RUN` and pass "
                             "RUN/export/model_int8.tflite")
    pick = next((n for n in ("model_int8.tflite", "model_float32.tflite") if n in found),
                found[0])
    raise ModelFileError(f"{model}: is a folder; expected a model file; it holds "
                         f"{', '.join(found)}; fix: {PROG} {model / pick} IMAGE")


def _run_to_pipe(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """:func:`_run`, stopping quietly when the reader of stdout goes away (``| head -1``)."""
    try:
        code = _run(args, p)
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # As Unix tools do: exit 141 (128 + SIGPIPE), no traceback, no "internal error";
        # stdout goes to /dev/null so the interpreter's final flush cannot complain.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``edgeport-demo``; returns the exit code (0 ok, 2 error, 130 interrupted).

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from .serve import main as serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return run_cli(PROG, lambda: _run_to_pipe(args, parser), debug=args.debug)
    except SystemExit as e:  # --help (0) or a usage error (2): argparse printed it
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
