"""examples/edgeport-parity.yml: valid YAML whose edgeport commands exist with those flags."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from edgeport.export.cli import build_parser

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "edgeport-parity.yml"


def edgeport_commands() -> list[list[str]]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    steps = [s for job in doc["jobs"].values() for s in job["steps"]]
    cmds = []
    for step in steps:
        for line in str(step.get("run", "")).splitlines():
            tokens = shlex.split(line.replace("$GITHUB_STEP_SUMMARY", "summary.md"))
            if tokens and tokens[0] == "edgeport":
                cmds.append(tokens[1:])
    return cmds


def test_workflow_is_valid_and_gates_on_parity():
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert set(doc["jobs"]) == {"parity"}
    names = [s.get("name", "") for s in doc["jobs"]["parity"]["steps"]]
    assert "Parity gate" in names and "Upload test report" in names


def test_every_edgeport_command_in_the_workflow_parses():
    cmds = edgeport_commands()
    assert [c[0] for c in cmds] == ["train", "export", "parity", "verify"]
    parser = build_parser()
    for cmd in cmds:
        args = parser.parse_args(cmd)  # exits (SystemExit) on an unknown command or flag
        assert args.command == cmd[0]
    parity = parser.parse_args(next(c for c in cmds if c[0] == "parity"))
    assert parity.junit and parity.markdown == "summary.md"
