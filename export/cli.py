"""edgeport: train a TensorFlow classifier, export it for phones, and prove every file.

Usage::

    edgeport run    [train options] [--formats all] [--out RUN]  train -> export -> parity
    edgeport train  [--dataset mnist] [--model softmax] [--recipe seed|best] [--out RUN] ...
    edgeport import MODEL --dataset DATA --out RUN [--normalize 0-1|-1-1|imagenet|none] ...
    edgeport export RUN [--formats all|float32,float16,dynamic_int8,int8,onnx] [--opset 17]
                        [--calibration-samples 500] [--force] [--repair]
    edgeport explain RUN [--file model_int8.tflite] [--json FILE]   which layer, what fixes it
    edgeport parity RUN [--json FILE] [--junit FILE] [--markdown FILE] [--thresholds FILE]
                        [--browser [--browser-samples 1000] [--webgpu-samples 200]]
                        [--baseline OLD [--budget SPEC] [--baseline-key PUB]]
    edgeport bench  RUN [--runs 1000] [--batch 256] [--json FILE] [--markdown FILE] [--plot FILE]
                        [--browser] [--target litert|tflite-runtime|onnxruntime|browser]
                        [--data-dir DIR]
    edgeport verify RUN/export [--key PUBLIC_KEY | --chain CA_CERT]
    edgeport sign   RUN/export --key PRIVATE_KEY [--certificate CERT [--chain CA_CERT]]

Exit codes: 0 success, 1 a parity or verify check failed, 2 bad input or environment (one
line says what, what was expected, and the fix; ``--debug`` shows the traceback), 70 an
internal error (a bug: one line, the traceback with ``--debug``), 130 Ctrl-C, 143 SIGTERM.
TensorFlow is imported only by the commands that need it, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgeport.errors import run_cli
from edgeport.train.cli import add_train_arguments, run_train

from .thresholds import WEBGPU_SAMPLES

__all__ = ["build_parser", "main"]

PROG = "edgeport"


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export")
    g.add_argument("--formats", default="all",
                   help="all, or a comma list of float32,float16,dynamic_int8,int8,onnx")
    g.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    g.add_argument("--calibration-samples", type=int, default=500,
                   help="int8 calibration images, class-balanced from the training split")
    g.add_argument("--sign-key", default=None,
                   help="after a passing parity gate, sign RUN/export with this "
                        "private key (default: $EDGEPORT_SIGNING_KEY if set; export then "
                        "runs the gate too; see `edgeport sign`)")


def _add_parity_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("parity reports")
    g.add_argument("--json", dest="json_out", help="also write the parity JSON here")
    g.add_argument("--junit", help="write JUnit XML (one test case per artifact)")
    g.add_argument("--markdown", help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    g.add_argument("--thresholds", help="JSON file overriding the default thresholds")
    g = p.add_argument_group("release gate (export/baseline.py)")
    g.add_argument("--baseline", metavar="OLD",
                   help="also compare with an earlier run or export folder (e.g. the last "
                        "release): accuracy, agreement, size, batch-1 latency; exit 1 on a "
                        "broken budget")
    g.add_argument("--budget", help="budgets for --baseline: accuracy=0.1,size=5%%,latency=10%% "
                                    "(the defaults; points, %%) or a JSON file")
    g.add_argument("--baseline-key", metavar="PUBLIC_KEY",
                   help="verify a signed baseline (model.sig) with this public key first")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run `edgeport COMMAND --help` for a command's options.")
    p.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--debug", action="store_true", help="show tracebacks")
        sp.add_argument("--no-progress", action="store_true",
                        help="no progress output (without a terminal or with CI set, "
                             "progress is one plain line per step)")
        return sp

    add_train_arguments(command("train", "train a classifier and write a run directory"))

    from edgeport.train.importer import add_import_arguments

    add_import_arguments(command("import", "turn your own Keras/SavedModel image classifier "
                                           "into a run directory"))

    sp = command("export", "export RUN/saved_model to TFLite and ONNX in RUN/export")
    sp.add_argument("run", help="run directory written by `edgeport train`")
    _add_export_arguments(sp)
    sp.add_argument("--data-dir", help="dataset folder, if not where the run found it")
    sp.add_argument("--force", action="store_true", help="replace an existing RUN/export")
    sp.add_argument("--repair", action="store_true",
                    help="if model_int8.tflite misses its parity thresholds, keep the fewest "
                         "layers float that make it pass (see `edgeport explain`)")

    sp = command("explain", "per-layer error of each quantized file, and which layer to keep "
                            "float (RUN/explain/*.png)")
    sp.add_argument("run", help="run directory with an export/ folder")
    sp.add_argument("--file", help="only this file, e.g. model_int8.tflite")
    sp.add_argument("--json", dest="json_out", metavar="FILE",
                    help="also write the tables as JSON here")
    sp.add_argument("--samples", type=int, default=500,
                    help="class-balanced test images to measure on (default 500)")
    sp.add_argument("--data-dir", help="dataset folder, if not where the run found it")

    sp = command("parity", "check every exported file against the reference predictions")
    sp.add_argument("run", help="run directory with an export/ folder")
    _add_parity_arguments(sp)
    sp.add_argument("--data-dir", help="dataset folder, if not where the run found it")
    sp.add_argument("--browser", action="store_true",
                    help="also run the phone page in headless Chromium (LiteRT.js on WASM "
                    "and WebGPU, onnxruntime-web) on --browser-samples test images")
    sp.add_argument("--browser-samples", type=int, default=1000, metavar="N",
                    help="test images per browser row (default 1000; 10000: the full MNIST "
                    "test set)")
    sp.add_argument("--webgpu-samples", type=int, default=WEBGPU_SAMPLES, metavar="N",
                    help=f"of those, images per WebGPU row (default {WEBGPU_SAMPLES}: "
                    "SwiftShader emulates the GPU on the CPU, ~0.2-0.9 s an app-model "
                    "picture here)")

    sp = command("run", "train, export and check parity in one go (the Quickstart)")
    add_train_arguments(sp)
    _add_export_arguments(sp)
    _add_parity_arguments(sp)

    sp = command("bench", "size, accuracy, latency and throughput of every artifact")
    sp.add_argument("run", help="run directory with an export/ folder")
    sp.add_argument("--runs", type=int, default=1000, help="batch-1 timing runs (default 1000)")
    sp.add_argument("--batch", type=int, default=None,
                    help="throughput batch size (256, or the whole test split if smaller)")
    sp.add_argument("--json", dest="json_out", help="also write the JSON here")
    sp.add_argument("--markdown", help="write a Markdown table")
    sp.add_argument("--plot", help="write a PNG: latency against size")
    sp.add_argument("--browser", action="store_true",
                    help="also time the phone page's runtimes in headless Chromium")
    sp.add_argument("--target", default="litert",
                    choices=("litert", "tflite-runtime", "onnxruntime", "browser"),
                    help="the runtime you ship with: recommend only files that load there "
                         "(default litert)")
    sp.add_argument("--data-dir", help="dataset folder, if not where the run found it")

    sp = command("verify", "re-hash artifacts against manifest.json and replay golden vectors")
    sp.add_argument("export_dir", help="an export folder (RUN/export)")
    sp.add_argument("--key", help="public key (PEM): also check RUN/export/model.sig")
    sp.add_argument("--chain", action="append",
                    help="CA certificate (PEM): check a certificate signature instead of "
                         "--key (repeatable)")

    sp = command("sign", "sign every file of RUN/export (OpenSSF model-signing, model.sig)")
    sp.add_argument("export_dir", help="an export folder (RUN/export)")
    sp.add_argument("--key", required=True,
                    help="elliptic-curve private key (PEM; P-256, P-384 or P-521). Signs only "
                         "a folder that passes verify and its parity gate, and whose "
                         "existing model.sig (if any) verifies with this key")
    sp.add_argument("--certificate", help="the key's signing certificate (PEM)")
    sp.add_argument("--chain", action="append", default=[],
                    help="CA certificates: embedded, and what an existing certificate "
                         "signature is checked against (repeatable)")
    return p


_POSITIVE = {"iterations": "--iterations", "calibration_samples": "--calibration-samples",
             "runs": "--runs", "batch": "--batch", "batch_size": "--batch-size",
             "samples": "--samples", "browser_samples": "--browser-samples",
             "webgpu_samples": "--webgpu-samples"}


def _check_numbers(args: argparse.Namespace) -> None:
    """Every number on the command line in range (one line, exit 2), before any work."""
    from edgeport.errors import EdgeportError

    for attr, flag in _POSITIVE.items():
        value = getattr(args, attr, None)
        if value is not None and value < 1:
            raise EdgeportError(f"{flag} {value}; expected a positive integer")
    opset = getattr(args, "opset", None)
    if opset is not None and not 9 <= opset <= 21:
        raise EdgeportError(f"--opset {opset}; expected an ONNX opset from 9 to 21 (default 17)")
    for attr in ("json_out", "junit", "markdown", "plot"):
        value = getattr(args, attr, None)
        if value and Path(value).is_dir():
            flag = "--json" if attr == "json_out" else f"--{attr}"
            raise EdgeportError(f"{flag} {value} is a folder; expected a file name; "
                                f"fix: e.g. {flag} {Path(value) / 'report'}")


def _signing_key(args: argparse.Namespace) -> str | None:
    from edgeport.export.signing import SIGNING_KEY_ENV

    return getattr(args, "sign_key", None) or os.environ.get(SIGNING_KEY_ENV) or None


def _check_signable(export_dir: Path, key: str) -> None:
    """Before a gate that rewrites parity.json: an existing model.sig must verify with the
    key's public half (else the folder changed since it was signed: exit 1, never re-signed)."""
    from edgeport.export.signing import check_signable

    check_signable(export_dir, private_key=key)


def _signing_key_usable(key: str) -> None:
    """An unusable signing key (missing, RSA...) stops before any training or export."""
    from edgeport.export.signing import check_signing_key

    check_signing_key(key)


def _sign(export_dir: Path, key: str, code: int) -> int:
    """Sign after a passing gate only (``code`` 0); a failing gate leaves the folder unsigned."""
    from edgeport.export.signing import sign_export

    if code != 0:
        print(f"not signed: the parity gate failed on {export_dir} (a signature vouches for "
              "a passing gate only); fix the failures above, then run again with the key",
              file=sys.stderr)
        return code
    sig = sign_export(export_dir, private_key=key, previous_checked=True)
    print(f"signed {export_dir} -> {sig}", file=sys.stderr)
    return code


def _version() -> str:
    from edgeport import __version__

    return __version__


def _export(args: argparse.Namespace, run: Path, *, force: bool) -> None:
    from edgeport.export.exporter import export_model
    from edgeport.export.report import format_export_table

    res = export_model(run, formats=args.formats, opset=args.opset,
                       calibration_samples=args.calibration_samples, force=force,
                       data_dir=getattr(args, "data_dir", None),
                       progress=not getattr(args, "quiet", False),
                       repair=getattr(args, "repair", False))
    print(format_export_table(res))


def _parity(args: argparse.Namespace, run: Path) -> int:
    from edgeport.export.explain import parity_hints
    from edgeport.export.parity import check_parity
    from edgeport.export.report import format_parity_table, write_junit, write_markdown
    from edgeport.export.thresholds import load_thresholds
    from edgeport.fileio import atomic_write_json

    thresholds = load_thresholds(args.thresholds) if args.thresholds else None
    report = check_parity(run, thresholds=thresholds, data_dir=getattr(args, "data_dir", None),
                          progress=not getattr(args, "quiet", False),
                          browser=getattr(args, "browser", False),
                          browser_samples=getattr(args, "browser_samples", 1000),
                          webgpu_samples=getattr(args, "webgpu_samples", WEBGPU_SAMPLES))
    print(format_parity_table(report))
    hints = parity_hints(run, report)  # repaired files; failing quantized rows: layer + fix
    if hints:
        print("\n".join(hints))
    code = 0 if report.passed else 1
    if args.json_out:
        atomic_write_json(args.json_out, report.to_dict())
    if args.junit:
        write_junit(report, args.junit)
    if args.markdown:
        # GitHub's job summary collects every step's Markdown: add to it, never replace it.
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        append = bool(summary) and os.path.abspath(summary) == os.path.abspath(args.markdown)
        write_markdown(report, args.markdown, append=append, notes=hints)
    if getattr(args, "baseline_export", None) is not None:
        from edgeport.export.baseline import release_gate

        code = max(code, release_gate(run / "export", args.baseline_export, report,
                                      args.budget_parsed, markdown=args.markdown))
    return code


def _dispatch(args: argparse.Namespace) -> int:
    from edgeport.quiet import quiet_native_stderr

    with quiet_native_stderr():
        return _dispatch_command(args)


def _dispatch_command(args: argparse.Namespace) -> int:
    from edgeport.train.tfenv import import_tensorflow

    if args.command == "train":
        run_train(args)
        return 0
    _check_numbers(args)
    if any(getattr(args, a, None) for a in ("baseline", "budget", "baseline_key")):
        from edgeport.export.baseline import check_baseline_args

        check_baseline_args(args)  # before any work: a bad OLD or budget is one line, exit 2
    if args.command == "verify":
        from edgeport.export.report import format_verify_table
        from edgeport.export.verify import verify_export

        rep = verify_export(args.export_dir, public_key=args.key,
                            certificate_chain=tuple(args.chain) if args.chain else None)
        print(format_verify_table(rep))
        return 0 if rep.passed else 1
    if args.command == "sign":
        from edgeport.export.signing import sign_export

        sig = sign_export(args.export_dir, private_key=args.key, certificate=args.certificate,
                          chain=tuple(args.chain))
        print(f"signed every file of {args.export_dir} -> {sig}")
        return 0
    if args.command == "bench":  # TensorFlow only if the gate must re-run: data is checked first
        return _bench(args)
    if args.command == "import":  # a picture given as MODEL is refused before TensorFlow loads
        from edgeport.train.importer import check_model_path

        check_model_path(args.model, image_size=args.image_size)
    key = _signing_key(args)
    if key and args.command in ("export", "run"):  # an unusable key stops before the work
        _signing_key_usable(key)
    if key and args.command == "parity":  # before the gate rewrites parity.json
        _check_signable(Path(args.run) / "export", key)
    import_tensorflow()
    if args.command == "import":
        from edgeport.train.importer import run_import

        run_import(args)
        return 0
    if args.command == "explain":
        from edgeport.export.explain import explain, format_explanation
        from edgeport.fileio import atomic_write_json

        result = explain(args.run, file=args.file, samples=args.samples,
                         data_dir=args.data_dir)
        print(format_explanation(result))
        if args.json_out:
            atomic_write_json(args.json_out, result.to_dict())
        return 0
    if args.command == "export":
        _export(args, Path(args.run), force=args.force)
        if key:  # a signature follows a passing gate: export, gate, then sign
            gate = argparse.Namespace(**{"json_out": None, "junit": None, "markdown": None,
                                         "thresholds": None, **vars(args)})
            return _sign(Path(args.run) / "export", key, _parity(gate, Path(args.run)))
        return 0
    if args.command == "parity":
        export_dir = Path(args.run) / "export"
        code = _parity(args, Path(args.run))
        return _sign(export_dir, key, code) if key else code
    if args.command == "run":
        res = run_train(args)
        _export(args, res.run_dir, force=True)
        code = _parity(args, res.run_dir)
        # after parity, so the verdict is signed too
        return _sign(res.run_dir / "export", key, code) if key else code
    raise AssertionError(args.command)


def _bench(args: argparse.Namespace) -> int:
    from edgeport.export.bench import benchmark
    from edgeport.export.report import format_bench_table

    rep = benchmark(args.run, runs=args.runs, batch=args.batch, target=args.target,
                    data_dir=args.data_dir, json_path=args.json_out,
                    markdown_path=args.markdown, plot_path=args.plot)
    print(format_bench_table(rep))
    if args.browser:
        from edgeport.export.browser import browser_bench_report

        print()
        print(browser_bench_report(args.run, runs=args.runs, json_path=args.json_out,
                                   markdown_path=args.markdown))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgeport`` console script."""
    args = build_parser().parse_args(argv)
    if args.debug:
        os.environ["EDGEPORT_DEBUG"] = "1"
    if args.no_progress:
        from edgeport.progress import NO_PROGRESS_ENV

        os.environ[NO_PROGRESS_ENV] = "1"
    return run_cli(PROG, lambda: _dispatch(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
