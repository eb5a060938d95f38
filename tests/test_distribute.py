"""train.distribute: two real workers on 127.0.0.1 train the model one process trains.

The two workers are separate ``python -m edgeport.train --strategy multi-worker``
processes, each with its own ``TF_CONFIG`` (the same cluster, its own task
index), exactly as on a cluster (see the docstring of train/distribute.py).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeport.train.config import ConfigError, make_config
from edgeport.train.distribute import is_chief, make_strategy
from edgeport.train.trainer import train_model

ITERATIONS = 100
TIMEOUT_S = 240  # the test itself takes ~30 s on 2 busy cores; this only bounds a hang


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_two_workers_train_what_one_process_trains(tmp_path, mnist):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    outs = [tmp_path / f"worker{i}" for i in range(2)]
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edgeport.train", "--strategy", "multi-worker",
             "--dataset", "mnist",
             "--iterations", str(ITERATIONS), "--out", str(outs[i]), "--quiet"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    deadline = time.monotonic() + TIMEOUT_S
    logs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            logs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for code, _, err in logs:
        assert code == 0, err[-3000:]

    # Only the chief (worker 0) writes a run; the other trains and writes nothing at all.
    assert (outs[0] / "metrics.json").is_file() and (outs[0] / "saved_model").is_dir()
    assert not outs[1].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker0"]  # no temp folders either
    m = json.loads((outs[0] / "metrics.json").read_text())
    assert m["config"]["strategy"] == "multi-worker" and m["iterations"] == ITERATIONS
    # Both workers report the same accuracies (they applied the same averaged updates).
    figures = [re.search(r"test accuracy [\d.]+%, validation [\d.]+%", out).group(0)
               for _, out, _ in logs]
    assert figures[0] == figures[1]

    single = train_model(make_config(recipe="seed", iterations=ITERATIONS), mnist,
                         progress=False).result
    # Each of the two replicas takes half of every batch of 100 and the gradients are
    # averaged, which for the softmax model (no dropout) is the gradient of the whole
    # batch: the same training up to float32 summation order. Rounding differences
    # that grow over 100 SGD steps at rate 0.5 move a handful of test images at most;
    # 0.3 points (30 of 10,000) bounds that with room to spare.
    assert m["test_accuracy"] == pytest.approx(single.test_accuracy, abs=0.003)
    hist = {h["iteration"]: h["test_accuracy"] for h in m["history"]}
    assert hist[0] == pytest.approx(0.098, abs=0)  # the same zero start


def test_mirrored_runs_on_cpu_as_one_replica(mnist):
    # Without a GPU MirroredStrategy holds one replica on the CPU: the same training as
    # the default strategy, except that the step is compiled per call (same arithmetic).
    cfg = make_config(recipe="seed", iterations=30)
    ref = train_model(cfg, mnist, progress=False).result
    mirrored = train_model(make_config(recipe="seed", iterations=30, strategy="mirrored"),
                           mnist, progress=False)
    m, res = mirrored.model, mirrored.result
    assert res.iterations == 30
    assert res.test_accuracy == pytest.approx(ref.test_accuracy, abs=0.002)  # 20 images
    assert np.isfinite(m.weights[0].numpy()).all()


def test_multi_worker_without_tf_config_says_how(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"needs TF_CONFIG, which is not set; expected JSON"):
        make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="is not valid"):
        make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 3}}))
    with pytest.raises(ConfigError, match="task index 3 is outside the 1 workers"):
        make_strategy("multi-worker")


@pytest.mark.parametrize(
    ("tf_config", "chief"),
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
          "task": {"type": "worker", "index": 0}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
          "task": {"type": "chief", "index": 0}}, True),
    ],
)
def test_only_the_chief_writes(monkeypatch, tf_config, chief):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert is_chief() is chief
