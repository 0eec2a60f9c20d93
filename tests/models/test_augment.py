import numpy as np
import pytest

from imgclf.errors import ConfigError
from imgclf.models import AugmentConfig, build_augmentation


def _images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_defaults_are_the_blogs():
    cfg = AugmentConfig()
    assert (cfg.flip, cfg.rotation) == ("horizontal", 0.2)
    assert not cfg.is_identity()


@pytest.mark.parametrize(
    "text",
    [
        "flip=horizontal,rotation=0.2,zoom=0.1",
        "flip=horizontal_and_vertical,translation=0.1,contrast=0.3,brightness=0.2",
        "rotation=0.05",
        "flip=vertical",
    ],
)
def test_parse_round_trips(text):
    cfg = AugmentConfig.parse(text)
    assert AugmentConfig.parse(cfg.to_string()) == cfg
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert not cfg.is_identity()


def test_parse_values_and_unset_keys_are_off():
    cfg = AugmentConfig.parse(" flip = horizontal , rotation=0.2,zoom=0.1 ")
    assert cfg == AugmentConfig(flip="horizontal", rotation=0.2, zoom=0.1)
    cfg = AugmentConfig.parse("zoom=0.1")
    assert cfg.flip is None and cfg.rotation == 0.0 and cfg.zoom == 0.1
    assert AugmentConfig.parse("flip") == AugmentConfig(flip="horizontal", rotation=0.0)


@pytest.mark.parametrize("text", ["none", "None", "off", ""])
def test_parse_none_is_identity(text):
    cfg = AugmentConfig.parse(text)
    assert cfg.is_identity()
    assert cfg.to_string() == "none"
    assert build_augmentation(cfg) is None


def test_parse_rejects_unknown_key_listing_valid_ones():
    with pytest.raises(ConfigError) as err:
        AugmentConfig.parse("flip=horizontal,shear=0.2")
    msg = str(err.value)
    assert "shear" in msg
    for key in ("flip", "rotation", "zoom", "translation", "contrast", "brightness"):
        assert key in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "text", ["flip=diagonal", "rotation=abc", "zoom=2", "rotation=-0.1", "rotation", "zoom=0.1,zoom=0.2"]
)
def test_parse_rejects_bad_values(text):
    with pytest.raises(ConfigError):
        AugmentConfig.parse(text)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="valid keys"):
        AugmentConfig.from_dict({"flip": None, "hue": 0.1})


def test_build_identity_and_none_give_no_block():
    assert build_augmentation(None) is None
    assert build_augmentation(AugmentConfig(flip=None, rotation=0.0)) is None


def test_build_layers_in_order_with_value_range():
    cfg = AugmentConfig("horizontal", 0.1, 0.1, 0.1, 0.2, 0.2)
    block = build_augmentation(cfg, seed=3)
    assert block.name == "augmentation"
    assert [type(layer).__name__ for layer in block.layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness"
    ]
    assert tuple(block.layers[-1].value_range) == (0.0, 255.0)
    assert [layer.seed for layer in block.layers] == [3, 4, 5, 6, 7, 8]
    block = build_augmentation(cfg, value_range=(-1, 1))
    assert tuple(block.layers[-1].value_range) == (-1.0, 1.0)


def test_inactive_at_inference_active_in_training_and_seeded():
    x = _images()
    cfg = AugmentConfig(flip="horizontal", rotation=0.3, zoom=0.2, brightness=0.3)
    block = build_augmentation(cfg, seed=7)
    np.testing.assert_array_equal(np.asarray(block(x, training=False)), x)
    a = np.asarray(block(x, training=True))
    assert a.shape == x.shape and a.dtype == np.float32
    assert not np.allclose(a, x)
    assert a.min() >= 0.0 and a.max() <= 255.0
    again = np.asarray(build_augmentation(cfg, seed=7)(x, training=True))
    np.testing.assert_allclose(again, a, rtol=0, atol=1e-4)
