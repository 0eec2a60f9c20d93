"""The Data health section as the page shows it."""

from __future__ import annotations

from imgclf.report.health import markdown, render


def _results(**health):
    checks = {"near_duplicates": {"ran": True, "count": 2, "threshold": "hash within 16 bits", "note": None},
              "label": {"ran": True, "count": 5, "threshold": "cleanlab", "note": None},
              "blurry": {"ran": True, "count": 1, "threshold": "sharpness < 0.05", "note": None}}
    counts = {"duplicate_groups": 3, "exact_groups": 1, "near_groups": 2, "conflicting_label_groups": 1,
              "leak_groups": 1, "leaked_validation_images": 0, "leaked_test_images": 2, "label_issues": 5}
    base = {"counts": counts, "checks": checks, "review": {}, "features": True, "weights_note": None,
            "files": {"issues": "audit/issues.csv", "duplicates": "audit/figures/duplicates.png"}, "seconds": 4.0}
    base.update(health)
    return {"data_health": base}


def test_counts_thresholds_and_the_review_are_on_the_page():
    page = render(_results(review={"excluded": 3, "relabelled": 1, "exclude": "reviewed.csv", "relabel": None}),
                  lambda rel, alt, caption=None, cls="": f'<img src="{rel}" alt="{alt}">' if rel else "")
    assert "Data health" in page and "2 test images seen in training" in page
    assert "sharpness &lt; 0.05" in page and '<img src="audit/figures/duplicates.png"' in page
    assert "3 file(s) excluded (reviewed.csv), 1 relabelled" in page


def test_without_weights_the_page_says_which_checks_did_not_run():
    page = render(_results(features=False, weights_note="weights file x.h5 does not exist"), lambda *a, **k: "")
    assert "Not run without backbone weights" in page and "x.h5 does not exist" in page
    assert render({}, lambda *a, **k: "") == ""


def test_the_markdown_report_has_the_counts_too():
    lines = markdown(_results())
    assert lines[0] == "### Data health" and "1 across classes, 1 across splits" in lines[2]
    assert "- blurry: 1 (sharpness < 0.05)" in lines and "![duplicate groups](audit/figures/duplicates.png)" in lines
