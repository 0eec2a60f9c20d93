"""``imgclf study``: a two-model study on a tiny tree, its outputs, and resuming a killed study."""

import json
import re

import pytest

from imgclf.errors import ConfigError
from imgclf.report.study import StudyResult, study

pytestmark = pytest.mark.slow  # left out of the fast loop (pytest -m 'not slow')

MODELS = ["cnn_aug_pre", "mobilenet_v2"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from tests.imagefactory import make_class_tree

    return make_class_tree(tmp_path_factory.mktemp("study-data") / "data", {"cats": 12, "dogs": 12}, size=(32, 32))


def _study(tree, out, **kw):
    opts = dict(models=MODELS, output=out, epochs=1, image_size=32, weights=None, validation=0.25, test=0.25,
                progress=False)
    opts.update(kw)
    return study(tree, **opts)


@pytest.fixture(scope="module")
def done(tree, tmp_path_factory):
    lines = []
    result = _study(tree, tmp_path_factory.mktemp("study") / "study", echo=lines.append)
    return result, lines


@pytest.mark.backend_neutral
def test_study_writes_every_output(done):
    result, lines = done
    assert isinstance(result, StudyResult)
    out = result.output
    for name in ("report.html", "report.md", "results.json", "summary.json", "splits/train.txt",
                 "splits/validation.txt", "splits/test.txt", "figures/samples.png", "figures/label_frequencies.png",
                 "figures/augment_flip.png", "figures/augment_rotation.png", "figures/augment_stack.png",
                 "figures/comparison.png"):
        assert (out / name).is_file(), name
    for m in MODELS:
        for name in ("model.keras", "history.csv", "metrics.json", "figures/history.png",
                     "figures/confusion_matrix_test.png"):
            assert (out / "runs" / m / name).is_file(), (m, name)
    assert result.html == out / "report.html" and result.markdown == out / "report.md"
    assert any("[1/2] cnn_aug_pre" in line for line in lines)


@pytest.mark.backend_neutral
def test_results_json_has_every_model(done):
    result, _ = done
    res = json.loads((result.output / "results.json").read_text())
    assert list(res["models"]) == MODELS
    for name, m in res["models"].items():
        assert m["status"] == "complete" and m["how"] == "trained"
        assert m["epochs"] == 1 and len(m["history"]["val_accuracy"]) == 1
        assert m["parameters"]["trainable"] > 0
        lo, hi = m["val_range_second_half"]
        assert 0 <= lo <= hi <= 1
        assert m["diagnosis"]["verdict"] == "inconclusive"  # one epoch is too few to judge
        assert m["test_count"] == len((result.output / "splits/test.txt").read_text().splitlines())
        assert m["evaluation"]["confusion_matrix"]
        assert m["layers"] and sum(r["parameters"] for r in m["layers"]) == m["parameters"]["total"]
        assert m["figures"]["history"] == f"runs/{name}/figures/history.png"
    transfer = res["models"]["mobilenet_v2"]
    assert transfer["parameters"]["frozen"] > 0 and transfer["kind"] == "transfer"
    comp = res["comparison"]
    assert [r["model"] for r in comp["rows"]] == MODELS
    assert comp["winner"]["model"] in MODELS and comp["winner"]["model"] == result.winner
    assert comp["figure"] == "figures/comparison.png"
    assert res["data"]["baseline"]["test_accuracy"] == pytest.approx(0.5)
    assert "wins" in comp["summary"] and "baseline" in comp["summary"]


def test_every_model_uses_the_study_splits(done):
    result, _ = done
    for split in ("train", "validation", "test"):
        mine = (result.output / "splits" / f"{split}.txt").read_text()
        for m in MODELS:
            assert (result.output / "runs" / m / "splits" / f"{split}.txt").read_text() == mine


def test_reports_are_self_contained(done):
    result, _ = done
    page = result.html.read_text()
    srcs = re.findall(r'<img[^>]*\bsrc="([^"]*)"', page)
    res = result.results
    expected = (len(res["data"]["figures"]) + len(res["augmentation"]["figures"]) + 1
                + sum(len(m["figures"]) for m in res["models"].values()))
    assert len(srcs) == expected >= 10  # 2 data + 3 augmentation + 2 x (history, confusion[, top losses]) + comparison
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page.replace("https://storage.googleapis.com", "")
    assert "<link" not in page and 'name="viewport"' in page
    assert 'id="comparison"' in page and '<table class="comparison">' in page
    md = result.markdown.read_text()
    assert "| model | test accuracy |" in md and "![validation accuracy per epoch" in md
    assert "## 3. cnn_aug_pre" in md and "## 4. mobilenet_v2" in md


def test_options_must_match_a_kept_study(done, tree):
    result, _ = done
    with pytest.raises(ConfigError, match="epochs=1.*epochs=2"):
        _study(tree, result.output, epochs=2)


def test_a_kept_study_refuses_images_fitted_otherwise(done, tree):
    result, _ = done
    with pytest.raises(ConfigError, match="fit='crop'.*fit='stretch'"):
        _study(tree, result.output, fit="stretch")


def test_a_killed_study_resumes_keeping_finished_models(done, tree, tmp_path):
    import shutil

    result, _ = done
    out = tmp_path / "study"
    shutil.copytree(result.output, out)  # the shared study stays as it was, for the other tests
    kept = out / "runs" / "mobilenet_v2" / "model.keras"
    before = kept.stat().st_mtime_ns
    # cnn_aug_pre was killed after its last epoch, before its model was saved
    cfg_file = out / "runs" / "cnn_aug_pre" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["complete"] = False
    cfg_file.write_text(json.dumps(cfg))
    (out / "runs" / "cnn_aug_pre" / "model.keras").unlink()
    (out / "report.html").unlink()

    lines = []
    again = _study(tree, out, echo=lines.append)
    assert kept.stat().st_mtime_ns == before  # the finished model was not retrained
    assert (out / "runs" / "cnn_aug_pre" / "model.keras").is_file()
    assert again.models["mobilenet_v2"]["how"] == "kept" and again.models["cnn_aug_pre"]["how"] == "resumed"
    assert any("resuming" in line for line in lines) and any("kept" in line for line in lines)
    assert again.html.is_file()
    res = json.loads(again.results_json.read_text())
    assert all(m["status"] == "complete" for m in res["models"].values())


def test_cli_study(tree, tmp_path, cli):
    code, out, err = cli("study", tree, "--models", "cnn", "--epochs", "1", "--image-size", "32",
                         "--validation", "0.25", "--test", "0.25", "-o", tmp_path / "s", "-q")
    assert code == 0, err
    assert "report" in out and str(tmp_path / "s" / "report.html") in out
    assert "cnn wins" in out
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    assert list(res["models"]) == ["cnn"] and res["options"]["epochs"] == 1


def test_unknown_model_is_refused_before_any_work(tree, tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        study(tree, models="cnn,nope", output=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_each_model_says_what_calibration_and_tta_did(done):
    result, _ = done
    res = json.loads((result.output / "results.json").read_text())
    html = (result.output / "report.html").read_text()
    md = (result.output / "report.md").read_text()
    for name, m in res["models"].items():
        t = m["tta"]
        assert t["mode"] == "flip" and t["count"] == 6 and t["accuracy_without"] == pytest.approx(m["validation_accuracy"])
        # six validation images are too few for a temperature: the report says so
        assert m["calibration"]["applied"] is False and "too few to fit a temperature" in m["calibration"]["note"]
    assert html.count("Can the probabilities be trusted?") == len(MODELS)
    assert "Test-time augmentation</strong> (the image and its mirror, averaged)" in html
    assert "too few to fit a temperature" in md and "Grad-CAM" in html
def test_the_report_has_a_data_health_section(done):
    result, _ = done
    res = json.loads((result.output / "results.json").read_text())
    health = res["data_health"]
    assert health["features"] is False  # the study ran with weights=None
    assert set(health["counts"]) >= {"duplicate_groups", "leak_groups", "conflicting_label_groups", "label_issues"}
    assert (result.output / health["files"]["issues"]).is_file()
    page = result.html.read_text()
    assert 'id="data-health"' in page and "Data health" in page
    assert "Not run without backbone weights: suspected mislabels, feature outliers" in page
