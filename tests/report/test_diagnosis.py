"""The overfitting diagnosis on synthetic histories and on the blog's own four curves."""

import math

import numpy as np
import pytest

from imgclf.report.diagnosis import THRESHOLDS, VERDICTS, diagnose, second_half

# The blog's printed histories (cats vs dogs, 20 epochs, baseline 50%).
BLOG_1 = {  # "model 1 is overfitting"
    "accuracy": [.514, .559, .623, .656, .684, .7175, .735, .7465, .7645, .7885, .81, .8385, .854, .859, .8695,
                 .886, .876, .9055, .9005, .898],
    "val_accuracy": [.5272, .5322, .5297, .5161, .5532, .5606, .5532, .5767, .5545, .5743, .5792, .5681, .6139,
                     .5953, .5953, .5619, .6015, .5817, .5767, .6002],
    "loss": [3.33, .677, .630, .584, .561, .521, .486, .474, .443, .421, .405, .343, .323, .309, .292, .250, .281,
             .251, .247, .231],
    "val_loss": [.701, .702, .704, .749, .747, .830, .929, .891, .909, .967, 1.109, 1.054, 1.105, 1.149, 1.225,
                 1.346, 1.388, 1.452, 1.697, 1.597],
}
BLOG_3 = {  # preprocessing: "the overfitting problem is way more better", still rising
    "accuracy": [.5405, .585, .64, .662, .6845, .698, .7125, .7095, .7275, .7255, .7215, .754, .7375, .7535, .7635,
                 .7565, .7635, .7715, .787, .782],
    "val_accuracy": [.6002, .6399, .6287, .6609, .6708, .7054, .698, .6931, .6844, .7314, .7327, .7339, .7475,
                     .7525, .7512, .75, .7463, .7463, .771, .7686],
    "loss": [.698, .670, .624, .600, .588, .584, .553, .564, .541, .539, .532, .510, .510, .502, .494, .495, .478,
             .470, .456, .458],
    "val_loss": [.659, .644, .606, .578, .592, .568, .552, .584, .603, .535, .523, .553, .546, .497, .520, .516,
                 .510, .524, .473, .485],
}
BLOG_4 = {  # transfer: "no overfitting: training accuracy is always lower than validation"
    "accuracy": [.761, .883, .8925, .9125, .91, .914, .9115, .9195, .917, .9285, .9255, .9235, .9275, .933, .928,
                 .9365, .9275, .931, .9315, .9275],
    "val_accuracy": [.9666, .9703, .9765, .9777, .9827, .9802, .9827, .9864, .9802, .9827, .9802, .9851, .9814,
                     .9802, .9666, .9703, .9715, .9814, .9814, .9827],
    "loss": [1.375, .646, .578, .456, .446, .453, .419, .406, .421, .321, .340, .319, .357, .255, .328, .259, .290,
             .298, .264, .283],
    "val_loss": [.125, .103, .074, .064, .072, .062, .067, .058, .072, .065, .070, .051, .065, .090, .139, .087,
                 .084, .059, .050, .054],
}


def _curve(start, end, n=20, noise=0.0, seed=0, rate=4.0):
    """A saturating learning curve from ``start`` to ``end`` (``rate`` 8: flat in the second half)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)
    return list(start + (end - start) * (1 - np.exp(-rate * t)) / (1 - math.exp(-rate)) + rng.normal(0, noise, n))


def test_clear_overfit():
    h = {"accuracy": _curve(.55, .99), "val_accuracy": _curve(.55, .70),
         "loss": _curve(.7, .05), "val_loss": [.7, .6, .55, .5] + list(np.linspace(.55, 1.4, 16))}
    d = diagnose(h, baseline=.5)
    assert d.verdict == "overfitting" and d.label == VERDICTS["overfitting"]
    assert d.evidence["gap"] > .2
    assert "overfitting" in d.text and "points above validation" in d.text
    assert "climbed" in d.text  # the rising validation loss is named
    assert d.advice


def test_blog_model_1_is_overfitting_as_the_blog_says():
    d = diagnose(BLOG_1, baseline=.5)
    assert d.verdict == "overfitting"
    lo, hi = d.evidence["val_range"]
    assert lo == pytest.approx(.5619) and hi == pytest.approx(.6139)
    assert d.evidence["val_loss_min_epoch"] == 1


def test_underfit():
    h = {"accuracy": _curve(.25, .38, noise=.005), "val_accuracy": _curve(.25, .36, noise=.005),
         "loss": _curve(1.4, 1.2), "val_loss": _curve(1.4, 1.25)}
    d = diagnose(h, num_classes=4)  # baseline 25%
    assert d.verdict == "underfitting"
    assert "underfitting" in d.text and "25.0%" in d.text
    assert abs(d.evidence["gap"]) < .05


def test_good_fit_levelled_off():
    h = {"accuracy": _curve(.6, .95, noise=.003, seed=1, rate=8),
         "val_accuracy": _curve(.6, .93, noise=.003, seed=2, rate=8),
         "loss": _curve(.7, .15), "val_loss": _curve(.7, .2)}
    d = diagnose(h, baseline=.5)
    assert d.verdict == "good_fit" and d.label == "good fit"
    assert "no sign of overfitting" in d.text
    assert "levelled off" in d.advice


def test_good_fit_still_improving_blog_model_3():
    d = diagnose(BLOG_3, baseline=.5)
    assert d.verdict == "good_fit"
    assert "still rising" in d.text


def test_validation_above_training_blog_model_4():
    d = diagnose(BLOG_4, baseline=.5)
    assert d.verdict == "good_fit"
    assert "above training" in d.text and "dropout" in d.text
    assert d.evidence["gap"] < 0


def test_noisy():
    rng = np.random.default_rng(3)
    val = list(.80 + rng.choice([-.09, .09], 20) + rng.normal(0, .01, 20))
    h = {"accuracy": _curve(.6, .86, noise=.003), "val_accuracy": val,
         "loss": _curve(.7, .35), "val_loss": _curve(.7, .4)}
    d = diagnose(h, baseline=.5, validation_size=40)
    assert d.verdict == "noisy"
    assert d.evidence["noise"] >= THRESHOLDS["noise"]
    assert "40 images" in d.advice


def test_noise_can_hide_a_gap():
    # a 10-point gap is not called overfitting when the curve scatters by more than 5 points
    rng = np.random.default_rng(4)
    val = list(.78 + rng.choice([-.12, .12], 20))
    h = {"accuracy": [.9] * 20, "val_accuracy": val}
    assert diagnose(h, baseline=.5).verdict == "noisy"


def test_too_short_and_missing_validation():
    d = diagnose({"accuracy": [.6], "val_accuracy": [.55]}, baseline=.5)
    assert d.verdict == "inconclusive" and "1 epoch" in d.text
    d = diagnose({"accuracy": [.6, .7], "val_accuracy": [.55, .6], "loss": [1, .8], "val_loss": [1, .9]})
    assert d.verdict == "inconclusive" and "2 epochs" in d.text
    d = diagnose({"accuracy": [.6, .7, .8], "val_accuracy": []})
    assert d.verdict == "inconclusive" and "No validation" in d.text
    d = diagnose({"accuracy": [.6, .7, .8], "val_accuracy": [None, None, None]})
    assert d.verdict == "inconclusive"


def test_accepts_a_run_history_and_serialises():
    h = dict(BLOG_1, epoch=list(range(1, 21)), stage=["train"] * 20, learning_rate=[1e-3] * 20)
    d = diagnose(h, baseline=.5)
    out = d.to_dict()
    assert out["verdict"] == "overfitting" and set(out) == {"verdict", "label", "text", "advice", "evidence"}
    assert d.sentence.startswith(d.text)
    with pytest.raises(ValueError):
        diagnose([0.1, 0.2])


def test_second_half():
    assert second_half([1]) == [1]
    assert second_half([1, 2]) == [2]
    assert second_half([1, 2, 3]) == [2, 3]
    assert second_half(list(range(20))) == list(range(10, 20))
