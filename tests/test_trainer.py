"""train.trainer and train.config: the seed's figures on real MNIST, determinism, recipes."""

from __future__ import annotations

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


def test_same_seed_gives_bit_identical_weights(mnist):
    cfg = make_config(recipe="seed", iterations=150)
    m1, r1, _ = train_model(cfg, mnist, progress=False)
    m2, r2, _ = train_model(cfg, mnist, progress=False)
    for a, b in zip(m1.weights, m2.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # bit-identical, no tolerance
    assert r1.history == r2.history
    m3, _, _ = train_model(make_config(recipe="best", iterations=150, seed=1), mnist,
                           progress=False)
    m4, _, _ = train_model(make_config(recipe="best", iterations=150, seed=2), mnist,
                           progress=False)
    assert not np.array_equal(m3.weights[0].numpy(), m4.weights[0].numpy())


def test_best_recipe_beats_the_seed(mnist):
    _, res, _ = train_model(make_config(recipe="best"), mnist, progress=False)
    assert res.test_accuracy >= 0.927  # issue target: the best a linear model reaches
    assert res.iterations == 5500  # 10 epochs of 550 batches of 100


def test_mlp_and_cnn_train_a_few_steps(mnist):
    for model in ("mlp", "cnn"):
        cfg = make_config(model=model, iterations=60, eval_every=30)
        _net, res, extras = train_model(cfg, mnist, progress=False)
        assert res.test_accuracy > 0.6, model  # 60 Adam steps already learn the digits
        assert extras["layout"] == ("nhwc" if model == "cnn" else "flat")


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
        ({"batch_size": 0}, "--batch-size 0; expected a positive integer"),
        ({"learning_rate": -1.0}, "--learning-rate -1.0; expected a positive number"),
        ({"model": "rnn"}, "--model 'rnn'; expected one of softmax, mlp, cnn"),
        ({"recipe": "fast"}, "--recipe 'fast' for --model softmax; expected one of seed, best"),
        ({"split": (0.5, 0.5, 0.5)}, "expected three fractions summing to 1"),
    ],
)
def test_bad_options_name_the_flag(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(**kwargs)


def test_recipe_values_yield_to_flags():
    cfg = make_config(recipe="best", iterations=100)
    assert (cfg.iterations, cfg.epochs, cfg.optimizer) == (100, None, "adam")
    assert make_config(epochs=2).iterations is None


def test_mlp_and_cnn_learn_mnist_briefly(mnist):
    # The full recipes reach >= 98 % (mlp) and >= 99.2 % (cnn) in minutes (see the recipe
    # comments in train/config.py); a fraction of them already shows the models learn.
    _, mlp, _ = train_model(make_config(model="mlp", epochs=1), mnist, progress=False)
    assert mlp.test_accuracy >= 0.95 and mlp.iterations == 430  # 95.8 % with seed 0
    _, cnn, _ = train_model(make_config(model="cnn", iterations=300), mnist, progress=False)
    assert cnn.test_accuracy >= 0.97


def test_stream_path_matches_in_memory_training(mnist):
    # --stream feeds the batches through tf.data (seeded shuffle) instead of the
    # in-memory index permutations: other batches, the same training. 300 Adam steps of
    # the MLP land within 1 point (100 of 10,000 test images) of each other; the stream
    # itself is seeded, so it repeats exactly.
    cfg = make_config(model="mlp", iterations=300, eval_every=150)
    _, mem, _ = train_model(cfg, mnist, progress=False)
    streamed = make_config(model="mlp", iterations=300, eval_every=150, stream=True)
    _, s1, _ = train_model(streamed, mnist, progress=False)
    _, s2, _ = train_model(streamed, mnist, progress=False)
    assert s1.iterations == mem.iterations == 300
    assert s1.test_accuracy == pytest.approx(mem.test_accuracy, abs=0.01)
    assert s1.history == s2.history
