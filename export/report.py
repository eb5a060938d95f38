"""Human and CI views of the gate's results: terminal tables, JSON, JUnit XML and Markdown.

Usage::

    from edgeport.export.report import format_parity_table, write_junit, write_markdown
    print(format_parity_table(report))
    write_junit(report, "parity.xml")                 # one <testcase> per artifact
    write_markdown(report, os.environ["GITHUB_STEP_SUMMARY"])

One text-table and one Markdown-table renderer serve the export, parity,
verify and bench reports; every file is written atomically.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeport.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

from .bench import BenchReport
from .parity import ParityReport
from .verify import VerifyReport

if TYPE_CHECKING:
    from .exporter import ExportResult

__all__ = [
    "format_bench_table",
    "format_export_table",
    "format_parity_table",
    "format_verify_table",
    "markdown_table",
    "render_table",
    "to_markdown",
    "write_json",
    "write_junit",
    "write_markdown",
]

_NUMERIC = "r"
_TEXT = "l"


# --- generic renderers ----------------------------------------------------------------------


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, align: str | None = None
) -> str:
    """A plain-text table with a header rule, columns padded to their widest cell.

    Args:
        headers: the column titles.
        rows: the cells, already formatted as strings.
        align: one letter per column, ``l`` (left) or ``r`` (right); default all left.

    Returns:
        The table, lines joined by newlines, no trailing newline.
    """
    align = align or _TEXT * len(headers)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if a == _NUMERIC else c.ljust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, align: str | None = None
) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in cells is escaped.

    Args:
        headers: the column titles.
        rows: the cells, already formatted as strings.
        align: one letter per column, ``l`` or ``r``; default all left.

    Returns:
        The table, no trailing newline.
    """
    align = align or _TEXT * len(headers)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if a == _NUMERIC else "---" for a in align) + "|"
    return "\n".join([line(headers), rule, *map(line, rows)])


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def _pts(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.2f}"


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


# --- parity -----------------------------------------------------------------------------------

_PARITY_HEADERS = ("artifact", "format", "precision", "runtime", "size KB", "images",
                   "accuracy", "Δacc pts", "agreement", "max |Δp|", "max |Δp| bound", "result")
_PARITY_ALIGN = "llllrrrrrrll"
_NOT_GATED = "not gated"
_PARITY_NOTE = ("agreement is gated on every row; Δacc only where the thresholds table has an "
                "accuracy drop (int8, dynamic_int8, app models); max |Δp| where a bound is shown")


def _bound(r: Any) -> str:
    """The max |Δp| bound a row was gated by and its source, e.g. ``1.0e-03 (table)``."""
    if r.max_abs_diff_bound is None:  # the max |Δp| cell says "(not gated)"
        return "-"
    return f"{r.max_abs_diff_bound:.1e} ({r.bound_source or 'table'})"


def _max_diff(r: Any) -> str:
    gated = r.max_abs_diff_bound is not None or r.bound_source != _NOT_GATED
    cell = _sci(r.max_abs_diff)
    return cell if gated or r.max_abs_diff is None else f"{cell} ({_NOT_GATED})"


def _parity_rows(report: ParityReport) -> list[list[str]]:
    return [
        [r.artifact, r.format.value, r.precision.value, r.runtime or "-", _kb(r.bytes),
         _num(r.images, ","), _pct(r.accuracy), _pts(r.accuracy_change), _pct(r.agreement),
         _max_diff(r), _bound(r), r.verdict]
        for r in report.results
    ]


_VERDICT_ICONS = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "not GPU-ready": "⚪ not GPU-ready"}


def _gpu_notes(report: ParityReport) -> list[str]:
    """One line per "not GPU-ready" WebGPU row: the runtime's reason."""
    return [f"{r.artifact} [{r.runtime}]: {r.note}" for r in report.results
            if r.verdict == "not GPU-ready" and r.note]


def _not_produced_rows(report: ParityReport) -> list[list[str]]:
    return [[n["file"], n["format"], n["precision"], *["-"] * 8, "NOT PRODUCED"]
            for n in report.not_produced]


def _not_produced_lines(report: ParityReport) -> list[str]:
    return [f"{n['file']} not produced: {n['reason']}" for n in report.not_produced]


def _parity_headline(report: ParityReport) -> str:
    n = len(report.results)
    ok = sum(r.passed for r in report.results)
    verdict = "PASS" if report.passed else "FAIL"
    if report.problems and not report.results:
        return (f"parity {verdict}: export folder refused ({len(report.problems)} "
                "problem(s) below); no file was run")
    # The first plain row's reference is the SavedModel's (browser rows compare with
    # Python's run of the same file).
    plain = [r for r in report.results if "(chromium)" not in (r.runtime or "")]
    ref = _pct(plain[0].reference_accuracy) if plain else "-"
    files = report.files
    counts = f"{ok} passed" + (f", {n - ok} failed" if n - ok else "")
    missing = (f"; {len(report.not_produced)} format(s) not produced, reasons below"
               if report.not_produced else "")
    return (f"parity {verdict}: {files} file{'s' * (files != 1)}, {n} row{'s' * (n != 1)}: "
            f"{counts} (reference accuracy {ref}){missing}")


def _terminal_view(table: str, headline: str, failures: Iterable[str]) -> str:
    """A table, a blank line, the verdict line, then one ``- reason`` line per failure."""
    return "\n".join([table, "", headline, *(f"- {f}" for f in failures)])


def format_parity_table(report: ParityReport) -> str:
    """The terminal view: one row per artifact, a verdict line, then one line per failure."""
    rows = _parity_rows(report) + _not_produced_rows(report)
    table = render_table(_PARITY_HEADERS, rows, align=_PARITY_ALIGN)
    if report.results:
        table += f"\n{_PARITY_NOTE}"
    view = _terminal_view(table, _parity_headline(report),
                          [*report.failures, *_not_produced_lines(report)])
    notes = _gpu_notes(report)
    return view + ("\n" + "\n".join(f"* {n}" for n in notes) if notes else "")


def _parity_markdown(report: ParityReport) -> str:
    icon = "✅" if report.passed else "❌"
    rows = _parity_rows(report)
    for row, r in zip(rows, report.results, strict=True):
        row[0] = f"`{r.artifact}`"
        row[-1] = _VERDICT_ICONS[r.verdict]
    parts = [f"### {icon} edgeport {_parity_headline(report)}", "",
             markdown_table(_PARITY_HEADERS, rows + _not_produced_rows(report),
                            align=_PARITY_ALIGN), "", f"_{_PARITY_NOTE}_"]
    if report.failures:
        parts += ["", "**Failures**", ""]
        parts += [f"- `{r.artifact}`: {f}" for r in report.results for f in r.failures]
        parts += [f"- {p}" for p in report.problems]
    if _gpu_notes(report):
        parts += ["", "**Not GPU-ready** (WebGPU in headless Chromium, SwiftShader)", ""]
        parts += [f"- {n}" for n in _gpu_notes(report)]
    if report.not_produced:
        parts += ["", "**Not produced**", ""]
        parts += [f"- `{n['file']}`: {n['reason']}" for n in report.not_produced]
    return "\n".join(parts) + "\n"


def write_junit(report: ParityReport | VerifyReport, path: str | os.PathLike[str]) -> Path:
    """Write JUnit XML: one ``<testcase>`` per artifact, a ``<failure>`` listing its reasons.

    Args:
        report: a parity (suite ``edgeport.parity``) or verify (``edgeport.verify``) report.
        path: the XML file to write (atomically).

    Returns:
        The path written.
    """
    suite_name = "edgeport.parity" if isinstance(report, ParityReport) else "edgeport.verify"
    results: Sequence[Any] = report.results
    failed = sum(not r.passed for r in results)
    problems = list(getattr(report, "problems", ()))
    not_produced = list(getattr(report, "not_produced", ()))
    tests = len(results) + (1 if problems else 0) + len(not_produced)
    failures = failed + (1 if problems else 0)
    root = ET.Element("testsuites", name="edgeport", tests=str(tests), failures=str(failures),
                      errors="0")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(tests),
                          failures=str(failures), errors="0", skipped=str(len(not_produced)))
    seen = [r.artifact for r in results]
    for r in results:
        # One file checked by several runtimes (e.g. model.onnx in the browser too).
        name = r.artifact if seen.count(r.artifact) == 1 else f"{r.artifact} [{r.runtime}]"
        case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{r.format.value}",
                             name=name)
        if not r.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(r.failures),
                                    type="ParityFailure" if suite_name.endswith("parity")
                                    else "VerifyFailure")
            failure.text = "\n".join(f"- {f}" for f in r.failures)
        ET.SubElement(case, "system-out").text = _junit_figures(r)
    for n in not_produced:  # an imported model's format that could not be converted
        case = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{n['format']}",
                             name=n["file"])
        ET.SubElement(case, "skipped", message=f"not produced: {n['reason']}")
    if problems:
        case = ET.SubElement(suite, "testcase", classname=suite_name, name="export folder")
        failure = ET.SubElement(case, "failure", message="; ".join(problems),
                                type="VerifyFailure")
        failure.text = "\n".join(f"- {p}" for p in problems)
    ET.indent(root)
    return atomic_write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _junit_figures(r: Any) -> str:
    d = r.to_dict()
    skip = {"artifact", "failures", "passed"}
    return "\n".join(f"{k} = {v}" for k, v in d.items() if k not in skip)


# --- verify -----------------------------------------------------------------------------------

_VERIFY_HEADERS = ("artifact", "format", "precision", "runtime", "sha256", "golden max |Δp|",
                   "atol", "result")
_VERIFY_ALIGN = "llllllrl"


def _verify_rows(report: VerifyReport) -> list[list[str]]:
    return [
        [r.artifact, r.format.value, r.precision.value, r.runtime or "-",
         "ok" if r.sha256_ok else "MISMATCH", _sci(r.max_abs_diff), _sci(r.atol),
         "PASS" if r.passed else "FAIL"]
        for r in report.results
    ]


def _verify_headline(report: VerifyReport) -> str:
    n = len(report.results)
    ok = sum(r.passed for r in report.results)
    verdict = "PASS" if report.passed else "FAIL"
    return (f"verify {verdict}: {ok}/{n} artifacts match manifest.json and replay "
            f"{report.golden_count} golden vectors")


def format_verify_table(report: VerifyReport) -> str:
    """The terminal view of :func:`export.verify.verify_export`'s report."""
    table = render_table(_VERIFY_HEADERS, _verify_rows(report), align=_VERIFY_ALIGN)
    view = _terminal_view(table, _verify_headline(report), report.failures)
    guarantee = getattr(report, "guarantee", "")
    return f"{view}\nguarantee: {guarantee}" if guarantee else view


def _verify_markdown(report: VerifyReport) -> str:
    icon = "✅" if report.passed else "❌"
    parts = [f"### {icon} edgeport {_verify_headline(report)}", "",
             markdown_table(_VERIFY_HEADERS, _verify_rows(report), align=_VERIFY_ALIGN)]
    if report.failures:
        parts += ["", "**Failures**", "", *(f"- {f}" for f in report.failures)]
    return "\n".join(parts) + "\n"


# --- bench ------------------------------------------------------------------------------------

_BENCH_HEADERS = ("artifact", "runtime", "size KB", "accuracy", "agreement", "parity",
                  "load ms", "first ms", "p50 ms", "p99 ms", "img/s", "peak RSS MB")
_BENCH_ALIGN = "llrrrlrrrrrr"


def _bench_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for r in report.rows:
        verdict = "baseline" if r.baseline else {True: "PASS", False: "FAIL", None: "-"}[
            r.parity_passed]
        if r.error is not None:  # its process failed: the other rows are still measured
            text = r.error if len(r.error) <= 150 else r.error[:149] + "…"
            verdict = f"error: {text}"  # the whole line is in bench.json
        rows.append([r.artifact, r.runtime, _kb(r.bytes), _pct(r.accuracy), _pct(r.agreement),
                     verdict, _num(r.load_ms, ".1f"), _num(r.first_inference_ms, ".2f"),
                     _num(r.latency_p50_ms, ".3f"), _num(r.latency_p99_ms, ".3f"),
                     _num(r.throughput_ips, ",.0f"), _num(r.peak_rss_mb, ".0f")])
    return rows


def _bench_setting(report: BenchReport) -> str:
    env = report.environment
    threads = "default" if report.num_threads is None else str(report.num_threads)
    text = (f"{report.runs} batch-1 runs after {report.warmup} warm-up; throughput: median of "
            f"{report.repeats} calls at batch {report.batch}; threads {threads}; "
            f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} CPUs); each row in a fresh "
            "process")
    return text


def _bench_skipped(report: BenchReport) -> list[str]:
    """The ``skipped`` section: one line per file and runtime not measured, with the reason."""
    if not report.skipped:
        return []
    return ["skipped (file, runtime: reason):",
            *(f"  {s.file}, {s.runtime}: {s.reason}" for s in report.skipped)]


def format_bench_table(report: BenchReport) -> str:
    """The terminal view of a benchmark: the table, settings, skipped and recommendation."""
    return "\n".join([render_table(_BENCH_HEADERS, _bench_rows(report), align=_BENCH_ALIGN), "",
                      _bench_setting(report), *_bench_skipped(report), report.recommendation])


def _bench_markdown(report: BenchReport) -> str:
    rows = _bench_rows(report)
    for row in rows:
        row[0] = f"`{row[0]}`"
    return "\n".join([
        "### edgeport bench", "",
        markdown_table(_BENCH_HEADERS, rows, align=_BENCH_ALIGN), "",
        f"_{_bench_setting(report)}_", "",
        *(["skipped (file, runtime: reason):", ""] if report.skipped else []),
        *(f"- {line.strip()}" for line in _bench_skipped(report)[1:]),
        *([""] if report.skipped else []),
        f"**{report.recommendation}**",
    ]) + "\n"


# --- export -----------------------------------------------------------------------------------


def format_export_table(result: ExportResult) -> str:
    """The terminal view of :func:`export.exporter.export_model`'s result."""
    rows = [[a.file, a.format.value, a.precision.value, _kb(a.bytes), a.sha256[:12],
             f"{a.seconds:.2f}"] for a in result.artifacts]
    table = render_table(("file", "format", "precision", "size KB", "sha256", "seconds"), rows,
                         align="lllrlr")
    lines = [f"{table}\n\nexported {len(rows)} files to {result.export_dir} in "
             f"{result.seconds:.1f} s"]
    lines += [f"- {n['file']} not produced: {n['reason']}" for n in result.not_produced]
    return "\n".join(lines)


# --- files ------------------------------------------------------------------------------------


def to_markdown(report: ParityReport | VerifyReport | BenchReport) -> str:
    """A report as Markdown: a headline, a table with one row per artifact, the failures."""
    if isinstance(report, ParityReport):
        return _parity_markdown(report)
    if isinstance(report, VerifyReport):
        return _verify_markdown(report)
    if isinstance(report, BenchReport):
        return _bench_markdown(report)
    raise TypeError(f"report is {type(report).__name__}; expected a parity, verify or bench report")


def write_markdown(
    report: ParityReport | VerifyReport | BenchReport,
    path: str | os.PathLike[str],
    *,
    append: bool = False,
    notes: Sequence[str] = (),
) -> Path:
    """Write :func:`to_markdown` to ``path``, in one write.

    Args:
        report: the report to render.
        path: the Markdown file.
        append: add to the end of ``path`` instead of replacing it atomically, as
            GitHub expects for ``$GITHUB_STEP_SUMMARY`` when other steps wrote to it.
        notes: lines added as a list after the report (e.g. ``explain``'s hints).

    Returns:
        The path written.
    """
    text = to_markdown(report)
    if notes:
        text += "\n" + "".join(f"- {note}\n" for note in notes)
    if not append:
        return atomic_write_text(path, text)
    path = Path(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return path


def write_json(
    report: ParityReport | VerifyReport | BenchReport, path: str | os.PathLike[str]
) -> Path:
    """Write ``report.to_dict()`` as indented JSON, atomically."""
    return atomic_write_json(path, report.to_dict())
