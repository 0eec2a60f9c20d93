"""The study report's "can these probabilities be trusted" part, per model: what calibration did
(temperature, ECE before and after, the reliability diagram) and what test-time augmentation
changes on the validation split. ``section`` gathers it for ``results.json``; the renderers
read only that dict."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..calibration import describe
from ..inference.tta import split_effect
from ..metrics import update_metrics

TTA_MODE = "flip"


def tta_on_validation(run, ds) -> dict | None:
    """Validation accuracy with and without flip TTA, kept in metrics.json (``tta.validation``)
    so that a study run again does not compute it again."""
    if not len(ds.indices("validation")):
        return None
    stored = run.metrics_record().tta.get("validation")
    if stored is not None and stored.mode == TTA_MODE and stored.count == len(ds.indices("validation")):
        return stored.to_dict()
    effect, _ = split_effect(run.model, ds, "validation", run.image_size, TTA_MODE)
    update_metrics(run.path, tta={"validation": effect})
    return effect


def section(run, ds, out: Path, rel: Callable[[Path, Path], str]) -> dict:
    """``{"calibration": ..., "tta": ..., "reliability_figure": ...}`` for one model of the study."""
    cal = run.metrics_record().calibration
    figure = run.figures_dir / "reliability.png"
    info = None
    if cal is not None:
        record = cal.to_dict()
        info = {k: record.get(k) for k in ("temperature", "applied", "skipped", "reason", "validation", "test")}
        info["note"] = describe(record)
    return {"calibration": info, "tta": tta_on_validation(run, ds),
            "reliability_figure": rel(figure, out) if figure.is_file() else None}


def sentences(m: dict) -> list[str]:
    """Plain sentences (with the markdown helpers' ``**bold**``) on calibration and TTA."""
    out = []
    cal = m.get("calibration")
    if cal:
        out.append(f"**Calibration.** {cal['note']}")
    else:
        out.append("**Calibration.** Not calibrated (trained with `--no-calibrate`, or by an older imgclf).")
    t = m.get("tta")
    if t and t.get("accuracy") is not None:
        delta = (t["accuracy"] - t["accuracy_without"]) * 100
        change = "leaves validation accuracy where it was" if abs(delta) < 0.05 else \
            f"{'raises' if delta > 0 else 'lowers'} validation accuracy by {abs(delta):.1f} points"
        out.append(f"**Test-time augmentation** (the image and its mirror, averaged) {change}: "
                   f"{t['accuracy_without']:.1%} → {t['accuracy']:.1%} on {t['count']} images, "
                   f"{t['changed']} answer{'s' if t['changed'] != 1 else ''} changed.")
    return out


def _ece_row(cal: dict, split: str) -> list[str] | None:
    s = cal.get(split)
    if not s:
        return None
    b, a = s["before"], s["after"]
    return [split] + [f"{max(v, 0.0):.3f}" for v in (b["ece"], a["ece"], b["nll"], a["nll"])]  # no "-0.000"


def table_rows(m: dict) -> list[list[str]]:
    cal = m.get("calibration") or {}
    if cal.get("skipped") or not cal.get("validation"):
        return []
    return [r for r in (_ece_row(cal, "validation"), _ece_row(cal, "test")) if r]


HEADER = ["split", "ECE before", "ECE after", "NLL before", "NLL after"]


def caption(m: dict) -> str:
    cal = m.get("calibration") or {}
    t = cal.get("temperature")
    return ("Reliability on the validation split: the accuracy of the images in each confidence bin (15 bins) "
            "against their mean confidence, before and after dividing the logits by the temperature"
            + (f" T = {t:.2f}" if t is not None else "") + ". Bars on the diagonal are calibrated; the "
            "hatched part is the gap. Under each, the share of the images per bin.")


def html_section(m: dict, fig, escape, inline, table) -> str:
    """The HTML block (``fig``, ``escape``, ``inline`` and ``table`` are html.py's helpers)."""
    name = m.get("name", "")
    paras = "".join(f"<p>{inline(s)}</p>" for s in sentences(m))
    rows = table_rows(m)
    tbl = table([(h, "" if i == 0 else "n") for i, h in enumerate(HEADER)],
                [[escape(c) for c in r] for r in rows], fit=True) if rows else ""
    diagram = fig(m.get("figures", {}).get("reliability"), f"{name}: reliability diagram", caption(m), cls="narrow")
    return f"<h3>Can the probabilities be trusted?</h3>{paras}{tbl}{diagram}"


def markdown_lines(m: dict, img, table) -> list[str]:
    """The Markdown lines (``img`` and ``table`` are markdown.py's helpers)."""
    name = m.get("name", "")
    lines = ["**Can the probabilities be trusted?**", ""]
    for s in sentences(m):
        lines += [s, ""]
    rows = table_rows(m)
    if rows:
        lines += table(HEADER, rows, "lrrrr") + [""]
    lines += img(m.get("figures", {}).get("reliability"), f"{name}: reliability diagram")
    return lines
