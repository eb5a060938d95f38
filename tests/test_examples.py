"""examples/ and the READMEs' command blocks: what a user copies must run.

- ``examples/edgeport-parity.yml``: every ``run:`` step runs as written, in order, in a
  temporary folder (checkout and install are replaced by this venv; ``uses:`` steps are
  GitHub's), and what the upload steps upload exists afterwards.
- README.md and mobile_demo/README.md: every fenced ``bash`` block is either run by a test
  (an HTML comment ``<!-- tested: tests/FILE.py::TEST -->`` on the line before it, naming
  a test that exists) or marked ``<!-- not tested: WHY -->``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgeport.export.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "edgeport-parity.yml"
READMES = [REPO / "README.md", REPO / "mobile_demo" / "README.md"]
BIN = Path(sys.executable).parent
REPLACED = {"Install edgeport"}  # the test runs in the already-installed venv


def steps() -> list[dict]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    return [s for job in doc["jobs"].values() for s in job["steps"]]


def edgeport_commands() -> list[list[str]]:
    cmds = []
    for step in steps():
        script = str(step.get("run", "")).replace("\\\n", " ")
        for line in script.splitlines():
            line = line.replace('"${baseline[@]}"', "").replace("$GITHUB_STEP_SUMMARY",
                                                                  "summary.md")
            tokens = shlex.split(line)
            if tokens and tokens[0] == "edgeport":
                cmds.append(tokens[1:])
    return cmds


def test_workflow_is_valid_and_gates_on_parity():
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert set(doc["jobs"]) == {"parity"}
    names = [s.get("name", "") for s in doc["jobs"]["parity"]["steps"]]
    assert "Parity gate and release gate" in names and "Upload test report" in names


def test_every_edgeport_command_in_the_workflow_parses():
    cmds = edgeport_commands()
    assert [c[0] for c in cmds] == ["train", "export", "parity", "verify"]
    parser = build_parser()
    for cmd in cmds:
        args = parser.parse_args(cmd)  # exits (SystemExit) on an unknown command or flag
        assert args.command == cmd[0]
    parity = parser.parse_args(next(c for c in cmds if c[0] == "parity"))
    assert parity.junit and parity.markdown == "summary.md"
    assert not parity.junit.startswith("runs/ci/export/")  # reports stay out of the export


def test_install_step_installs_extras_that_exist():
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = re.findall(r"^(\w+) = \[", section, re.M)
    (install,) = [s["run"] for s in steps() if s.get("name") in REPLACED]
    wanted = re.search(r'pip install -e "\.\[([\w,]+)\]"', install)
    assert wanted, install
    for extra in wanted.group(1).split(","):
        assert extra in extras, f"{extra} is not an extra of pyproject.toml"
    assert {"tensorflow", "app"} <= set(wanted.group(1).split(","))


def _bash(script: str, cwd: Path, env: dict[str, str], timeout: int = 1200):
    # GitHub's default shell for `run:` on Linux
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GITHUB_STEP_SUMMARY"] = str(tmp_path / "summary.md")
    env.setdefault("EDGEPORT_DATA", str(REPO.parent / "shared" / "data"))
    return env


@pytest.mark.slow
def test_workflow_runs_step_by_step_as_written(exported_run, tmp_path):
    """The workflow in a fresh folder, with the last release (the seed run, gated) as the
    baseline the release-gate step finds."""
    from edgeport.export.parity import check_parity

    work = tmp_path / "repo"
    work.mkdir()
    check_parity(exported_run, progress=False)
    shutil.copytree(exported_run / "export", work / "baseline")  # what the release held
    env = _env(tmp_path)
    ran = []
    for step in steps():
        if "run" not in step or step.get("name") in REPLACED:
            continue
        res = _bash(step["run"], work, env)
        assert res.returncode == 0, (step.get("name"), res.stdout[-3000:], res.stderr[-3000:])
        ran.append((step["name"], res))
    assert [n for n, _ in ran] == ["Train", "Export", "Last release's models",
                                   "Parity gate and release gate", "Verify artifacts"]
    gate = dict(ran)["Parity gate and release gate"].stdout
    assert "parity PASS" in gate and "release gate: PASS" in gate
    assert "verify PASS" in dict(ran)["Verify artifacts"].stdout
    summary = (tmp_path / "summary.md").read_text()
    assert "model_app_int8.tflite" in summary and "### edgeport release gate: PASS" in summary
    for step in steps():  # every file an upload step names was written
        if str(step.get("uses", "")).startswith("actions/upload-artifact"):
            for path in str(step["with"]["path"]).split():
                assert (work / path).exists(), f"{step['name']}: {path} missing"


# ---- README blocks ----------------------------------------------------------------------------

_MARK = re.compile(r"<!--\s*(tested|not tested):\s*(.+?)\s*-->")


def readme_blocks(path: Path) -> list[tuple[int, str, str]]:
    """``(line, mark, code)`` for every fenced bash block; ``mark`` is the comment before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if re.fullmatch(r"```(bash|sh|shell)\s*", lines[i]):
            start = i
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            blocks.append((start + 1, before.strip(), "\n".join(lines[start + 1:j])))
            i = j
        i += 1
    return blocks


def readme_block(path: Path, needle: str) -> str:
    """The one bash block of ``path`` that contains ``needle``."""
    (code,) = [c for _, _, c in readme_blocks(path) if needle in c]
    return code


def test_every_readme_bash_block_is_tested_or_says_why_not():
    unmarked = []
    for path in READMES:
        blocks = readme_blocks(path)
        assert blocks, path
        for line, before, _ in blocks:
            m = _MARK.fullmatch(before)
            where = f"{path.relative_to(REPO)}:{line}"
            if not m:
                unmarked.append(where)
                continue
            if m.group(1) == "tested":
                ref = m.group(2).split()[0]
                file, _, name = ref.partition("::")
                assert (REPO / file).is_file() and re.search(
                    rf"^def {re.escape(name)}\(", (REPO / file).read_text(), re.M), \
                    f"{where}: {ref} names no test"
    assert not unmarked, ("bash blocks neither run by a test nor marked "
                          f"`<!-- not tested: why -->`: {unmarked}")


@pytest.mark.slow
def test_readme_signing_block_runs(exported_run, tmp_path):
    """README.md's key generation, `edgeport sign` and `edgeport verify --key`, as written,
    on a copy of a run (RUN)."""
    code = readme_block(REPO / "README.md", "openssl ecparam")
    run = tmp_path / "RUN"
    run.mkdir()
    shutil.copytree(exported_run / "export", run / "export")
    res = _bash(code.replace("RUN/", f"{run}/"), tmp_path, _env(tmp_path), timeout=600)
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert (run / "export" / "model.sig").is_file()
    assert "verify PASS" in res.stdout and "guarantee: signed" in res.stdout


def test_device_runtimes_block_runs(device_python, tmp_path):
    """mobile_demo/README.md's runtime check, in the TensorFlow-free device venv (from an
    empty folder: the package the venv installed, not a checkout's `edgeport/` beside it)."""
    code = readme_block(REPO / "mobile_demo" / "README.md", "available_runtimes")
    res = _bash(code.replace(".venv-device/bin/python", device_python), tmp_path,
                dict(os.environ), timeout=120)
    assert res.returncode == 0, res.stderr
    assert "tflite-runtime" in res.stdout


def test_device_requirements_have_the_bounds_of_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    deps = text.split("\ndependencies = [")[1].split("]")[0]
    base = sorted(d.lower() for d in re.findall(r'"([^"]+)"', deps))
    req = (REPO / "mobile_demo" / "requirements-device.txt").read_text().splitlines()
    lines = sorted(r.strip().lower() for r in req if r.strip() and not r.startswith("#"))
    assert lines == base
