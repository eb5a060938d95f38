"""train.trainer and train.config: the seed's figures on real MNIST, determinism, recipes."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from edgeport.train.config import ConfigError, make_config
from edgeport.train.trainer import _batch_indices, _eval_points, train_model


def test_seed_recipe_reproduces_the_tutorial(seed_run):
    hist = {h["iteration"]: h["test_accuracy"] for h in seed_run.history}
    assert set(hist) >= {0, 1, 10, 1000}
    # Zero weights score every class 0: the prediction is class 0 for all images, and
    # 980 of the 10,000 test digits are zeros: exactly 9.8 %.
    assert hist[0] == pytest.approx(0.098, abs=0)
    assert hist[10] > hist[1] > hist[0]
    assert hist[1000] >= 0.91  # the tutorial reports ~92 %; SGD at step 0.5 wobbles by ~1 point
    assert seed_run.iterations == 1000


@pytest.mark.slow
def test_same_seed_gives_bit_identical_weights(mnist):
    cfg = make_config(recipe="seed", iterations=150)
    t1 = train_model(cfg, mnist, progress=False)
    t2 = train_model(cfg, mnist, progress=False)
    for a, b in zip(t1.model.weights, t2.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # bit-identical, no tolerance
    assert t1.result.history == t2.result.history
    t3 = train_model(make_config(recipe="best", iterations=150, seed=1), mnist, progress=False)
    t4 = train_model(make_config(recipe="best", iterations=150, seed=2), mnist, progress=False)
    assert not np.array_equal(t3.model.weights[0].numpy(), t4.model.weights[0].numpy())


@pytest.mark.slow
def test_best_recipe_beats_the_seed(mnist):
    res = train_model(make_config(recipe="best"), mnist, progress=False).result
    assert res.test_accuracy >= 0.927  # issue target: the best a linear model reaches
    assert res.iterations == 5500  # 10 epochs of 550 batches of 100


@pytest.mark.slow
def test_mlp_and_cnn_train_a_few_steps(mnist):
    for model in ("mlp", "cnn"):
        cfg = make_config(model=model, iterations=60, eval_every=30)
        trained = train_model(cfg, mnist, progress=False)
        assert trained.result.test_accuracy > 0.6, model  # 60 Adam steps learn the digits
        assert trained.layout == ("nhwc" if model == "cnn" else "flat")
        with pytest.raises(dataclasses.FrozenInstanceError):
            trained.layout = "flat"  # type: ignore[misc]


def test_batches_are_per_epoch_permutations():
    idx = _batch_indices(1000, 100, 25, seed=3)
    assert idx.shape == (25, 100)
    for e in range(2):
        epoch = idx[e * 10 : (e + 1) * 10].ravel()
        assert sorted(epoch.tolist()) == list(range(1000))  # each image once per epoch
    np.testing.assert_array_equal(idx, _batch_indices(1000, 100, 25, seed=3))


def test_eval_points_include_the_seeds_checkpoints():
    cfg = make_config(recipe="seed")
    pts = _eval_points(cfg, 1000, 550)
    assert {0, 1, 10, 1000} <= set(pts) and pts == sorted(set(pts))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0; expected a positive integer"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0; expected a positive number"),
        ({"model": "rnn"}, "model='rnn'; expected one of softmax, mlp, cnn"),
        ({"recipe": "fast"}, "recipe='fast' for model=softmax; expected one of seed, best"),
        ({"split": (0.5, 0.5, 0.5)}, "expected three fractions summing to 1"),
    ],
)
def test_bad_options_name_the_parameter(kwargs, message):
    # The library speaks in parameter names; the CLI says them as flags (test_errors.py).
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(**kwargs)


def test_recipe_values_yield_to_flags():
    cfg = make_config(recipe="best", iterations=100)
    assert (cfg.iterations, cfg.epochs, cfg.optimizer) == (100, None, "adam")
    assert make_config(epochs=2).iterations is None


def test_mlp_and_cnn_learn_mnist_briefly(mnist, cnn_run):
    # The full recipes reach >= 98 % (mlp) and >= 99.2 % (cnn) in minutes (see the recipe
    # comments in train/config.py); a fraction of them already shows the models learn.
    mlp = train_model(make_config(model="mlp", epochs=1), mnist, progress=False).result
    assert mlp.test_accuracy >= 0.95 and mlp.iterations == 430  # 95.8 % with seed 0
    # The session's `edgeport run --model cnn` (300 steps, shared with tests/test_app.py).
    cnn = json.loads((cnn_run / "metrics.json").read_text())
    assert cnn["iterations"] == 300 and cnn["test_accuracy"] >= 0.97


@pytest.mark.slow
def test_stream_path_matches_in_memory_training(mnist):
    # --stream feeds the batches through tf.data (seeded shuffle) instead of the
    # in-memory index permutations: other batches, the same training. 300 Adam steps of
    # the MLP land within 1 point (100 of 10,000 test images) of each other; the stream
    # itself is seeded, so it repeats exactly.
    cfg = make_config(model="mlp", iterations=300, eval_every=150)
    mem = train_model(cfg, mnist, progress=False).result
    streamed = make_config(model="mlp", iterations=300, eval_every=150, stream=True)
    s1 = train_model(streamed, mnist, progress=False).result
    s2 = train_model(streamed, mnist, progress=False).result
    assert s1.iterations == mem.iterations == 300
    assert s1.test_accuracy == pytest.approx(mem.test_accuracy, abs=0.01)
    assert s1.history == s2.history


def test_batch_indices_are_made_lazily_per_epoch():
    # Issue 18: --iterations 10**12 built every batch index up front (5 GB before the first
    # step). The indices now come one epoch's permutation at a time: 10**9 steps pass the
    # config, and the first batches of such a run hold only that epoch (60,000 indices).
    import tracemalloc

    from edgeport.train.trainer import _BatchIndices

    assert make_config(iterations=10**9).steps_for(55_000) == 10**9
    tracemalloc.start()
    indices = _BatchIndices(55_000, 100, seed=0)
    blocks = [indices.block(s, s + 10) for s in range(0, 2000, 10)]  # 3.6 epochs
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 << 20, peak  # one permutation (440 KB) and its int32 copy, not [steps, batch]
    whole = np.concatenate(blocks)
    np.testing.assert_array_equal(whole, _batch_indices(55_000, 100, 2000, seed=0))
    assert sorted(whole[550:1100].ravel().tolist()) == list(range(55_000))  # epoch 2 intact


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 10**12}, "iterations=1000000000000; expected at most 1e+09 (~12 days"),
        ({"epochs": 2e6}, "epochs=2000000.0; expected 0 < epochs <= 1e+06"),
        ({"batch_size": 10**9}, "batch_size=1000000000; expected at most 65536 (a batch is "
                                "held in memory"),
    ],
)
def test_run_length_and_batch_have_upper_limits(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 60_000}, "batch_size=60000 is larger than the training split (55000 "
                                 "images); expected at most 55000; fix: pass a smaller"),
        ({"epochs": 1e6, "batch_size": 1}, "is 55000000000 steps; expected at most 1e+09"),
        ({"iterations": 10**9, "eval_every": 1}, "is 1000000000 evaluations; expected at most "
                                                 "100000; fix: pass --eval-every 10000 or more"),
    ],
)
def test_limits_that_need_the_split_size_are_checked_before_training(mnist, kwargs, message):
    cfg = make_config(**kwargs)
    with pytest.raises(ConfigError, match=re.escape(message)):
        train_model(cfg, mnist, progress=False)  # refused before TensorFlow builds anything


def test_a_million_epochs_get_at_most_max_evaluations():
    from edgeport.train.config import MAX_EVALUATIONS

    cfg = make_config(model="mlp", epochs=1e6)
    total = cfg.check_fits(55_000)
    pts = _eval_points(cfg, total, 55_000 // cfg.batch_size)
    assert total == 429_687_500 and len(pts) <= MAX_EVALUATIONS + 6
