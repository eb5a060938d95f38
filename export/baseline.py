"""The release gate: is this export worse, bigger or slower than the one we shipped?

Usage::

    edgeport parity RUN --baseline OLD [--budget accuracy=0.1,size=5%,latency=10%]
                        [--baseline-key OLD_PUBLIC_KEY]

    from edgeport.export.baseline import compare_baseline, parse_budget, resolve_baseline
    old = resolve_baseline("releases/v1/export")          # verified first when signed
    report = compare_baseline("runs/new/export", old, parity_report, parse_budget(None))
    print(report.passed, report.breaches)

OLD is an earlier run or its export folder (e.g. the last release's artifacts, with
their ``parity.json``). Before anything is compared, OLD is checked: a signed OLD
(``model.sig``) must verify with its public key (``export.signing.verify_signature``),
and every file must match its ``manifest.json`` and ``parity.json`` must belong to it.

Then, per file present in both exports and per parity runtime: accuracy and top-1
agreement (from the two ``parity.json`` verdicts), size in bytes (the manifests) and
batch-1 latency (measured now, old and new files interleaved in one process, several
repeats): new, old, the difference and the budget. Defaults: accuracy may drop at most
0.1 point, size may grow at most 5 %, latency at most 10 % -- or more when the machine
is noisier than that: each file's latency budget is at least three times the robust
relative spread (1.4826 x MAD / median) of its 7 repeat medians (old or new, whichever is
larger), measured in the same run, so a busy CI
runner does not fail a build on noise. A file the old export had and the new one lacks
is a breach; a new file has no baseline and is shown, not gated.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError

from .thresholds import NO_DIGIT

__all__ = [
    "BaselineError",
    "BaselineReport",
    "BaselineRow",
    "Budget",
    "Timing",
    "batch1_latency",
    "check_baseline_args",
    "compare_baseline",
    "format_baseline_markdown",
    "format_baseline_table",
    "parse_budget",
    "release_gate",
    "resolve_baseline",
]

_REPEATS = 7
_TARGET_NS = 15_000_000  # ~15 ms of calls per repeat and file: enough calls for a stable median


class BaselineError(EdgeportError, ValueError):
    """``--baseline`` or ``--budget`` is unusable: not an export, unverified, or malformed."""


@dataclass(frozen=True)
class Budget:
    """How much worse a new export may be than its baseline.

    Attributes:
        accuracy_points: largest accuracy drop, in percentage points.
        size_fraction: largest size growth (0.05 = 5 %).
        latency_fraction: largest batch-1 latency growth, before the noise floor.
        agreement_points: largest drop of top-1 agreement with the reference (points);
            ``None``: not gated (parity already gates agreement per file).
    """

    accuracy_points: float = 0.1
    size_fraction: float = 0.05
    latency_fraction: float = 0.10
    agreement_points: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy_points, "size": f"{self.size_fraction * 100:g}%",
                "latency": f"{self.latency_fraction * 100:g}%",
                "agreement": self.agreement_points}


_BUDGET_FIX = ("fix: e.g. --budget accuracy=0.1,size=5%,latency=10% (accuracy and agreement "
               "in points, size and latency in %), or a JSON file with those keys")


def parse_budget(spec: str | os.PathLike[str] | None) -> Budget:
    """``accuracy=0.1,size=5%,latency=10%[,agreement=0.5]``, a JSON file of the same keys, or
    ``None`` for the defaults; keys left out keep their default.

    Raises:
        BaselineError: an unknown key, a malformed or negative value, an unreadable file.
    """
    if spec is None:
        return Budget()
    text = str(spec)
    if text.endswith(".json") or Path(text).is_file():
        try:
            doc = json.loads(Path(text).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise BaselineError(f"--budget {text}: unreadable ({e}); expected a JSON object; "
                                f"{_BUDGET_FIX}") from None
        if not isinstance(doc, dict):
            raise BaselineError(f"--budget {text}: not a JSON object; expected one; {_BUDGET_FIX}")
        items = [(str(k), str(v)) for k, v in doc.items()]
    else:
        items = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise BaselineError(f"--budget {text}: {part!r} has no '='; expected KEY=VALUE; "
                                    f"{_BUDGET_FIX}")
            items.append((key.strip(), value.strip()))
    values: dict[str, float] = {}
    for key, value in items:
        if key not in ("accuracy", "agreement", "size", "latency"):
            raise BaselineError(f"--budget: unknown key {key!r}; expected accuracy, agreement, "
                                f"size or latency; {_BUDGET_FIX}")
        percent = key in ("size", "latency")
        m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|pts?|points?)?", value)
        if not m or (percent and m.group(2) != "%") or (not percent and m.group(2) == "%"):
            unit = "a percentage such as 5%" if percent else "points such as 0.1"
            raise BaselineError(f"--budget: {key}={value!r}; expected {unit}; {_BUDGET_FIX}")
        number = float(m.group(1))
        values[key] = number / 100 if percent else number
    return Budget(
        accuracy_points=values.get("accuracy", Budget.accuracy_points),
        size_fraction=values.get("size", Budget.size_fraction),
        latency_fraction=values.get("latency", Budget.latency_fraction),
        agreement_points=values.get("agreement"),
    )


@dataclass(frozen=True)
class Timing:
    """Batch-1 latency of one model: ``median`` ms (median of the repeat medians) and
    ``spread``, the repeat medians' robust relative standard deviation (1.4826 MAD / median)."""

    median: float
    spread: float
    repeats: tuple[float, ...] = ()


def batch1_latency(calls: Sequence[Callable[[], object]], *, repeats: int = _REPEATS,
                   runs: int | None = None) -> list[Timing]:
    """Time every call interleaved: repeat by repeat, each call ``runs`` times.

    Interleaving means a slow moment of the machine hits old and new alike. ``runs``
    ``None`` picks, per call, enough calls for about 15 ms per repeat (10 to 2,000).
    """
    from edgeport.mobile_demo.timing import time_calls

    counts = []
    for fn in calls:
        if runs is not None:
            counts.append(runs)
            continue
        one = float(np.median(time_calls(fn, runs=5, warmup=2)))
        counts.append(int(min(2000, max(10, _TARGET_NS // max(one, 1.0)))))
    medians: list[list[float]] = [[] for _ in calls]
    for rep in range(repeats):
        # the order flips every repeat, so neither old nor new always runs first
        order = range(len(calls)) if rep % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            fn = calls[i]
            ns = time_calls(fn, runs=counts[i], warmup=1)
            medians[i].append(float(np.median(ns)) / 1e6)
    out = []
    for m in medians:
        med = float(np.median(m))
        # a robust standard deviation (1.4826 x the median absolute deviation): a few
        # hiccups of a busy machine do not become the noise
        mad = float(np.median(np.abs(np.asarray(m) - med)))
        spread = 1.4826 * mad / med if med > 0 else 0.0
        out.append(Timing(median=med, spread=spread, repeats=tuple(m)))
    return out


def batch1_inputs(export_dir: Path, entry: Mapping[str, Any]) -> tuple[Any, np.ndarray,
                                                                           np.ndarray]:
    """(loaded model, one golden input, an empty input) for a manifest entry.

    The empty input is an all-zero plain input (what the digit pipeline makes of a blank
    frame) or a white picture for an app model (``Model.predict`` takes [0, 1]).
    """
    from edgeport.mobile_demo.runtime import load_model

    model = load_model(export_dir / str(entry["file"]))
    with np.load(export_dir / "golden.npz", allow_pickle=False) as g:
        if entry.get("family") == "app":
            x = g["app_pictures"][:1].astype(np.float32) / 255.0
            blank = np.ones_like(x)
        else:
            x = g["inputs"][:1].astype(np.float32)
            blank = np.zeros_like(x)
    return model, x, blank


def resolve_baseline(path: str | os.PathLike[str],
                     public_key: str | os.PathLike[str] | None = None) -> Path:
    """OLD's export folder, checked: signature (when signed), files, its parity verdict.

    Args:
        path: an earlier run (with ``export/``) or its export folder.
        public_key: the public key OLD's ``model.sig`` must verify with.

    Raises:
        BaselineError: not an export, no ``parity.json``, a signed baseline without a key,
            or any file that does not match.
    """
    from .integrity import SIGNATURE_NAME, folder_problems, manifest_sha256
    from .manifest import artifact_file_problems, read_manifest
    from .parity import read_parity

    p = Path(path)
    export = p if (p / "manifest.json").is_file() else p / "export"
    if not (export / "manifest.json").is_file():
        raise BaselineError(f"--baseline {p}: no manifest.json in it or in {p / 'export'}; "
                            "expected an earlier run or its export folder (e.g. the last "
                            "release's artifacts); fix: point --baseline at that folder")
    if (export / SIGNATURE_NAME).exists():
        if public_key is None:
            raise BaselineError(
                f"--baseline {export}: signed ({SIGNATURE_NAME}) but no key given; expected "
                "the release's public key; fix: add --baseline-key PUBLIC_KEY.pem")
        from .signing import verify_signature

        problems = verify_signature(export, public_key=public_key)
        if problems:
            raise BaselineError(f"--baseline {export}: signature check failed "
                                f"({'; '.join(problems)}); expected the release as signed; "
                                "fix: use the release's original artifacts")
    elif public_key is not None:
        raise BaselineError(f"--baseline-key given but {export} has no {SIGNATURE_NAME}; "
                            "expected a signed baseline; fix: drop --baseline-key or sign it")
    manifest = read_manifest(export)
    problems = folder_problems(export, manifest)
    for entry in manifest["artifacts"]:
        name = str(entry["file"])
        problems += [f"{name}: {p}" for p in artifact_file_problems(export / name, entry)]
    parity = read_parity(export)
    if parity is None:
        raise BaselineError(f"--baseline {export}: no parity.json; expected a gated export; "
                            f"fix: run `edgeport parity {export.parent}` on the baseline first")
    if parity.manifest_sha256 != manifest_sha256(export):
        problems.append("parity.json was made for another manifest.json")
    if problems:
        raise BaselineError(f"--baseline {export}: does not verify ({'; '.join(problems)}); "
                            "expected the files its manifest lists; fix: use the release's "
                            "original artifacts")
    return export


@dataclass(frozen=True)
class BaselineRow:
    """One (file, runtime) of the comparison; figures are ``None`` where a side lacks them."""

    artifact: str
    runtime: str | None
    accuracy: tuple[float | None, float | None]    # (new, old)
    agreement: tuple[float | None, float | None]
    bytes: tuple[int | None, int | None]
    latency_ms: tuple[float | None, float | None]
    latency_floor: float | None                    # 3 x the repeats' robust relative spread
    breaches: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "runtime": self.runtime,
                "accuracy": list(self.accuracy), "agreement": list(self.agreement),
                "bytes": list(self.bytes), "latency_ms": list(self.latency_ms),
                "latency_floor": self.latency_floor, "breaches": list(self.breaches)}


@dataclass(frozen=True)
class BaselineReport:
    """The comparison: ``passed`` when no budget is broken."""

    baseline: Path
    budget: Budget
    rows: tuple[BaselineRow, ...]
    breaches: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.breaches

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": str(self.baseline), "budget": self.budget.to_dict(),
                "passed": self.passed, "rows": [r.to_dict() for r in self.rows],
                "breaches": list(self.breaches)}


def compare_baseline(export_dir: str | os.PathLike[str], baseline: Path, report: Any,
                     budget: Budget, *, repeats: int = _REPEATS) -> BaselineReport:
    """Compare ``export_dir`` (judged by ``report``, a ``ParityReport``) with ``baseline``.

    Args:
        export_dir: the new export folder.
        baseline: OLD's export folder, from :func:`resolve_baseline`.
        report: the new export's parity verdict.
        budget: the budgets.
        repeats: interleaved latency repeats per file.
    """
    from .manifest import read_manifest
    from .parity import read_parity

    new_dir = Path(export_dir)
    new_m, old_m = read_manifest(new_dir), read_manifest(baseline)
    old_report = read_parity(baseline)
    new_entries = {str(e["file"]): e for e in new_m["artifacts"]}
    old_entries = {str(e["file"]): e for e in old_m["artifacts"]}
    both = [f for f in new_entries if f in old_entries]
    timings = _latencies(new_dir, baseline, [(new_entries[f], old_entries[f]) for f in both],
                         repeats)
    old_rows = {(r.artifact, r.runtime): r for r in old_report.results} if old_report else {}
    rows: list[BaselineRow] = []
    breaches: list[str] = []
    seen: set[str] = set()
    for r in report.results:
        old = old_rows.get((r.artifact, r.runtime))
        if old is None and not (r.runtime or "").endswith(NO_DIGIT):
            # e.g. an older runtime name: fall back to the file's first row (not for the
            # `none` rows on empty frames, whose accuracy is another measure)
            old = next((o for o in old_rows.values() if o.artifact == r.artifact), None)
        sizes = (r.bytes, old_entries[r.artifact]["bytes"] if r.artifact in old_entries
                 else None)
        lat = timings.get(r.artifact)
        first = r.artifact not in seen
        seen.add(r.artifact)
        row_breaches = _row_breaches(r, old, sizes if first else (None, None),
                                     lat if first else None, budget)
        rows.append(BaselineRow(
            artifact=r.artifact, runtime=r.runtime,
            accuracy=(r.accuracy, old.accuracy if old else None),
            agreement=(r.agreement, old.agreement if old else None),
            bytes=sizes, latency_ms=(lat[0].median, lat[1].median) if lat else (None, None),
            latency_floor=lat[2] if lat else None, breaches=tuple(row_breaches)))
        breaches += [f"{r.artifact} ({r.runtime or '-'}): {b}" for b in row_breaches]
    for f in old_entries:
        if f not in new_entries:
            breaches.append(f"{f}: in the baseline, missing from the new export")
    return BaselineReport(baseline=baseline, budget=budget, rows=tuple(rows),
                          breaches=tuple(breaches))


def _latencies(new_dir: Path, old_dir: Path, pairs: Sequence[tuple[Mapping, Mapping]],
               repeats: int) -> dict[str, tuple[Timing, Timing, float]]:
    """Per file in both: (new timing, old timing, latency budget fraction)."""
    calls: list[Callable[[], object]] = []
    names = []
    for new_e, old_e in pairs:
        try:
            new_model, new_x, _ = batch1_inputs(new_dir, new_e)
            old_model, old_x, _ = batch1_inputs(old_dir, old_e)
        except (EdgeportError, OSError, KeyError, ValueError):
            continue  # a file this machine cannot run (e.g. no runtime): no latency row
        calls += [lambda m=new_model, x=new_x: m.predict(x),
                  lambda m=old_model, x=old_x: m.predict(x)]
        names.append(str(new_e["file"]))
    if not calls:
        return {}
    t = batch1_latency(calls, repeats=repeats)
    out = {}
    for i, name in enumerate(names):
        new, old = t[2 * i], t[2 * i + 1]
        out[name] = (new, old, 3 * max(new.spread, old.spread))
    return out


def _row_breaches(r: Any, old: Any, sizes: tuple[int | None, int | None],
                  lat: tuple[Timing, Timing, float] | None, budget: Budget) -> list[str]:
    out = []
    if old is not None and r.accuracy is not None and old.accuracy is not None:
        drop = (old.accuracy - r.accuracy) * 100
        if not drop <= budget.accuracy_points + 1e-9:
            out.append(f"accuracy {r.accuracy:.2%} vs {old.accuracy:.2%}: dropped "
                       f"{drop:.2f} pts > budget {budget.accuracy_points:g} pts")
    elif old is not None and r.accuracy is None:
        out.append("accuracy: no figure in the new verdict (the file did not run)")
    if (budget.agreement_points is not None and old is not None
            and r.agreement is not None and old.agreement is not None):
        drop = (old.agreement - r.agreement) * 100
        if not drop <= budget.agreement_points + 1e-9:
            out.append(f"agreement {r.agreement:.2%} vs {old.agreement:.2%}: dropped "
                       f"{drop:.2f} pts > budget {budget.agreement_points:g} pts")
    new_b, old_b = sizes
    if new_b is not None and old_b:
        growth = new_b / old_b - 1
        if not growth <= budget.size_fraction + 1e-12:
            out.append(f"size {new_b:,} vs {old_b:,} bytes: grew {growth:.1%} > budget "
                       f"{budget.size_fraction:.0%}")
    if lat is not None:
        new, old, floor = lat
        allowed = max(budget.latency_fraction, floor)
        growth = new.median / old.median - 1 if old.median > 0 else 0.0
        if not (math.isfinite(growth) and growth <= allowed):
            out.append(f"batch-1 latency {new.median:.4f} vs {old.median:.4f} ms: grew "
                       f"{growth:.1%} > budget {allowed:.0%} (noise floor {floor:.0%})")
    return out


def _cells(row: BaselineRow) -> list[str]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"

    def dpts(new: float | None, old: float | None) -> str:
        return "-" if new is None or old is None else f"{(new - old) * 100:+.2f}"

    def size(v: int | None) -> str:
        return "-" if v is None else f"{v / 1024:.1f} KB"

    def rel(new: float | None, old: float | None) -> str:
        return "-" if new is None or not old else f"{new / old - 1:+.1%}"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    (an, ao), (gn, go), (bn, bo), (ln, lo) = row.accuracy, row.agreement, row.bytes, \
        row.latency_ms
    floor = "-" if row.latency_floor is None else f"{row.latency_floor:.0%}"
    return [row.artifact, row.runtime or "-", pct(an), pct(ao), dpts(an, ao), pct(gn), pct(go),
            dpts(gn, go), size(bn), size(bo), rel(bn, bo), ms(ln), ms(lo), rel(ln, lo), floor,
            "BREACH" if row.breaches else "ok"]


_HEADER = ["artifact", "runtime", "acc new", "acc old", "Δ pts", "agree new", "agree old",
           "Δ pts", "size new", "size old", "Δ size", "p50 ms new", "p50 ms old", "Δ latency",
           "noise floor", "budget"]


def _budget_line(report: BaselineReport) -> str:
    b = report.budget
    agreement = ("" if b.agreement_points is None
                 else f", agreement may drop ≤ {b.agreement_points:g} pts")
    return (f"baseline {report.baseline}: accuracy may drop ≤ {b.accuracy_points:g} pts, size "
            f"grow ≤ {b.size_fraction:.0%}, batch-1 latency grow ≤ {b.latency_fraction:.0%} "
            f"(or the noise floor: 3 x the robust spread of 7 interleaved repeats){agreement}")


def format_baseline_table(report: BaselineReport) -> str:
    """The comparison as a text table, the budgets, then one line per breach."""
    table = [_HEADER] + [_cells(r) for r in report.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", _budget_line(report)]
    if report.breaches:
        lines += [f"budget broken: {b}" for b in report.breaches]
        lines.append(f"release gate: FAIL ({len(report.breaches)} budget(s) broken)")
    else:
        lines.append("release gate: PASS (no budget broken)")
    return "\n".join(lines)


def format_baseline_markdown(report: BaselineReport) -> str:
    """The comparison as Markdown, for ``$GITHUB_STEP_SUMMARY``."""
    lines = ["### edgeport release gate: " + ("PASS" if report.passed else "FAIL"), "",
             "| " + " | ".join(_HEADER) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(_HEADER) - 3) + ["---"]) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in report.rows]
    lines += ["", _budget_line(report), ""]
    lines += [f"- budget broken: {b}" for b in report.breaches]
    return "\n".join(lines) + "\n"


def check_baseline_args(args: Any) -> None:
    """CLI: parse ``--budget`` and check ``--baseline`` (signature first) before any work;
    sets ``args.budget_parsed`` and ``args.baseline_export``."""
    if not getattr(args, "baseline", None):
        flag = "--budget" if getattr(args, "budget", None) else "--baseline-key"
        raise BaselineError(f"{flag} without --baseline; expected the earlier run or export "
                            "to compare with; fix: add --baseline OLD")
    args.budget_parsed = parse_budget(args.budget)
    args.baseline_export = resolve_baseline(args.baseline, getattr(args, "baseline_key", None))


def release_gate(export_dir: Path, baseline: Path, report: Any, budget: Budget, *,
                 markdown: str | None = None) -> int:
    """CLI: compare, print the table and the breaches, add both tables to the GitHub job
    summary (``$GITHUB_STEP_SUMMARY``, when set); return 1 when a budget is broken, else 0.

    Args:
        markdown: the parity ``--markdown`` file, if any: when it is the job summary the
            parity table is already there.
    """
    from edgeport.fileio import atomic_write_text

    result = compare_baseline(export_dir, baseline, report, budget)
    print()
    print(format_baseline_table(result))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        same = bool(markdown) and os.path.abspath(markdown) == os.path.abspath(summary)
        if not same:
            from .report import write_markdown

            write_markdown(report, summary, append=True)
        with open(summary, "a", encoding="utf-8") as f:
            f.write("\n" + format_baseline_markdown(result))
    elif markdown:
        path = Path(markdown)
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        atomic_write_text(path, old + "\n" + format_baseline_markdown(result))
    return 0 if result.passed else 1
