"""imgclf.calibration: ECE, the temperature fit, building it into a model, the reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest

from imgclf import calibration
from imgclf.calibration import CalibrationError


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _overconfident(n=2000, classes=3, sharpen=3.0, seed=0):
    """Labels drawn from softmax(z), and the probabilities of a model that says softmax(3 z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    labels = np.array([rng.choice(classes, p=p) for p in _softmax(z)])
    return _softmax(sharpen * z).astype(np.float32), labels


def test_ece_of_known_cases():
    # every image at confidence 0.8 and 80% right: calibrated, ECE 0
    probs = np.tile([[0.8, 0.2]], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # confidence 0.9, half right: a gap of 0.4 everywhere
    probs = np.tile([[0.9, 0.1]], (10, 1))
    labels = np.array([0] * 5 + [1] * 5)
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.4)
    bins = calibration.reliability(probs, labels)
    assert len(bins["count"]) == 15 and bins["count"].sum() == 10 and bins["count"][13] == 10


def test_temperature_fixes_an_overconfident_model_and_keeps_every_answer():
    val_p, val_y = _overconfident(seed=0)
    test_p, test_y = _overconfident(seed=1)
    result = calibration.calibrate(val_p, val_y, test_p, test_y)
    assert result["applied"] and result["temperature"] == pytest.approx(3.0, rel=0.15)
    for split in ("validation", "test"):
        before, after = result[split]["before"], result[split]["after"]
        assert after["ece"] <= before["ece"] / 2 or after["ece"] <= 0.02
        assert after["nll"] < before["nll"]
        assert after["accuracy"] == before["accuracy"]
    scaled = calibration.scale(test_p, result["temperature"])
    np.testing.assert_array_equal(scaled.argmax(1), test_p.argmax(1))
    np.testing.assert_allclose(scaled.sum(1), 1.0, atol=1e-5)
    assert "over-confident" in calibration.describe(result)


def test_a_temperature_that_would_raise_ece_is_not_applied():
    # one confidence bin, calibrated on average (ECE 0) but with confident mistakes: the NLL
    # wants a softer model, which moves the bin off the diagonal
    probs = np.array([[0.94, 0.06]] * 50 + [[0.99, 0.01]] * 50)
    labels = np.array([0] * 50 + [0] * 46 + [1] * 4)
    result = calibration.calibrate(probs, labels)
    assert result["temperature"] > 1 and not result["applied"]
    assert "uncalibrated model is kept" in result["reason"]
    assert "not kept" in calibration.describe(result)


def test_too_few_validation_images_is_a_clear_error():
    probs, labels = _overconfident(n=10)
    with pytest.raises(CalibrationError, match="10 images, too few to fit a temperature"):
        calibration.fit_temperature(probs, labels)


def _tiny_softmax_model():
    import keras

    inp = keras.Input((4,))
    out = keras.layers.Dense(3, activation="softmax", name="classifier")(keras.layers.Dense(8, activation="relu")(inp))
    model = keras.Model(inp, out)
    dense = model.layers[-1]
    dense.set_weights([w * 6.0 for w in dense.get_weights()])  # confident
    return model


def test_temper_model_divides_the_logits(tmp_path):
    import keras

    model = _tiny_softmax_model()
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    before = np.asarray(model(x))
    calibration.temper_model(model, 2.5)
    after = np.asarray(model(x))
    np.testing.assert_allclose(after, calibration.scale(before, 2.5), atol=1e-5)
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))
    # plain Keras reads it back in safe mode, with the temperature inside
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(again(x)), after, atol=1e-6)


def test_calibrate_model_changes_only_what_it_keeps(tmp_path):
    import keras

    model = _tiny_softmax_model()
    weights = [w.copy() for w in model.get_weights()]
    probs = np.array([[0.94, 0.06, 0.0]] * 50 + [[0.99, 0.01, 0.0]] * 50)
    labels = np.array([0] * 96 + [1] * 4)
    result = calibration.calibrate_model(model, {"validation": (probs, labels)}, figure=tmp_path / "r.png")
    assert not result["applied"] and (tmp_path / "r.png").stat().st_size > 1000
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    small = calibration.calibrate_model(model, {"validation": (probs[:5], labels[:5])})
    assert small["applied"] is False and "too few" in small["skipped"]
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert "Dense softmax" in calibration.calibrate_model(flat, {"validation": (probs, labels)})["skipped"]
