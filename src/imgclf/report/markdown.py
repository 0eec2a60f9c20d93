"""``report.md``: the study as Markdown (figures linked by relative path), and the sentences the
HTML report shares with it. Everything here reads only the results dict that ``study`` writes
to ``results.json``."""

from __future__ import annotations

from typing import Any

from .health import markdown as health_markdown
from .numbers import count, pct, points, seconds
from .trust import markdown_lines
from .tuned import tune_markdown

__all__ = ["render_markdown", "pct", "points", "seconds", "count", "data_sentences", "model_sentences",
           "KIND_LABEL"]

KIND_LABEL = {"cnn": "trained from scratch", "transfer": "transfer learning"}


# -- formatting shared with html.py ----------------------------------------------------------

def split_total(data: dict, split: str) -> int:
    return sum(data["counts"].get(split, {}).values())


def data_sentences(data: dict) -> list[str]:
    """What is in the data, in a few sentences."""
    names = data["class_names"]
    totals = {s: split_total(data, s) for s in ("train", "validation", "test")}
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    base = data["baseline"]
    out = [
        f"{count(data['total'])} usable images in {len(names)} classes ({shown}): "
        f"{count(totals['train'])} for training, {count(totals['validation'])} for validation and "
        f"{count(totals['test'])} for the final test. Every model below is trained and scored on exactly "
        f"these splits (the lists are in `{data.get('splits', 'splits')}/`).",
        f"Always guessing the most frequent training class, {base['majority_class']}, would be right "
        f"{pct(base['validation_accuracy'])} of the time on validation and {pct(base['test_accuracy'])} on "
        "test: the majority baseline a model has to beat.",
    ]
    bad = data.get("bad") or []
    if bad:
        out.append(f"{len(bad)} file{'s' if len(bad) != 1 else ''} could not be used and "
                   f"{'were' if len(bad) != 1 else 'was'} left out (nothing was moved or deleted).")
    else:
        out.append("Every image file decoded: no bad files were found.")
    notes = data.get("warnings") or []
    if notes:
        out.append(f"{len(notes)} warning{'s' if len(notes) != 1 else ''} about files or classes used or "
                   "skipped all the same (listed below).")
    return out


def model_sentences(m: dict, baseline_test: float | None) -> list[str]:
    """The blog's paragraph about one model: range, best epoch, test score, speed."""
    out = []
    rng, win = m.get("val_range_second_half"), m.get("second_half_epochs")
    if rng:
        where = (f"epoch {win[1]}" if win and win[0] == win[1] else f"epochs {win[0]}-{win[1]}") if win else ""
        span = (f"stayed at **{pct(rng[0])}**" if pct(rng[0]) == pct(rng[1])
                else f"stayed between **{pct(rng[0])} and {pct(rng[1])}**")
        out.append(f"Validation accuracy {span} over the second half of training ({where}); the best epoch was "
                   f"{m.get('best_epoch')} ({pct(m.get('best_val_accuracy'))})"
                   + (f"; the saved model is that of epoch {', '.join(str(e) for e in m['kept_epoch'].values())}"
                      if m.get("kept_epoch") else "") + ".")
    test = m.get("test_accuracy")
    if test is not None:
        base = m.get("test_baseline", baseline_test)
        over = "" if base is None else f", {points(test - base).replace('pts', 'points')} over the majority baseline of {pct(base)}"
        out.append(f"On the {count(m.get('test_count'))} test images the final model scores **{pct(test)}**{over}.")
    p = m.get("parameters") or {}
    cached = ("; the frozen backbone's features are computed once and cached, so an epoch trains only the "
              "head" if m.get("feature_cache") else "")
    out.append(f"{count(p.get('trainable'))} trainable and {count(p.get('frozen'))} frozen parameters; "
               f"{seconds(m.get('seconds_per_epoch'))} per epoch over {m.get('epochs')} epochs "
               f"({seconds(m.get('train_seconds'))} in all){cached}.")
    return out


# -- the Markdown report ---------------------------------------------------------------------

def _table(header: list[str], rows: list[list[Any]], align: str | None = None) -> list[str]:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return lines


def _img(path: str | None, alt: str) -> list[str]:
    return [f"![{alt}]({path})", ""] if path else []


def render_markdown(results: dict) -> str:
    data = results["data"]
    comp = results.get("comparison") or {}
    base = data["baseline"]
    opts = results.get("options", {})
    L: list[str] = [f"# {results['title']}", ""]
    L.append(f"*imgclf {results.get('imgclf_version', '')} study, {results.get('created', '')}; "
             f"{opts.get('epochs')} epochs per model; data `{data['root']}`.*")
    L.append("")
    if comp.get("summary"):
        L += [f"**Result.** {comp['summary']}", ""]

    L += ["## 1. The data", ""]
    L += [" ".join(data_sentences(data)), ""]
    splits = [s for s in ("train", "validation", "test") if data["counts"].get(s)]
    rows = []
    for name in data["class_names"]:
        vals = [data["counts"][s].get(name, 0) for s in splits]
        rows.append([name] + [count(v) for v in vals] + [count(sum(vals))])
    rows.append(["**all**"] + [f"**{count(split_total(data, s))}**" for s in splits] + [f"**{count(data['total'])}**"])
    L += _table(["class"] + splits + ["total"], rows, "l" + "r" * (len(splits) + 1)) + [""]
    figs = data.get("figures", {})
    L += _img(figs.get("samples"), "sample images per class")
    L += _img(figs.get("label_frequencies"), "label frequencies")
    bad = data.get("bad") or []
    if bad:
        L += ["Bad files:", ""] + [f"- {b.get('message') or b.get('path')}" for b in bad[:50]]
        if len(bad) > 50:
            L.append(f"- ... and {len(bad) - 50} more (see summary.json)")
        L.append("")
    notes = data.get("warnings") or []
    if notes:
        L += ["Warnings:", ""] + [f"- {w}" for w in notes[:50]] + [""]
    L += health_markdown(results)

    aug = results.get("augmentation") or {}
    L += ["## 2. Data augmentation", "",
          f"Random flips and rotations make new training images from old ones; the models with `aug` in "
          f"their names apply `{aug.get('augment', '')}` while training. Each grid shows one image and "
          "eight random versions of it.", ""]
    for k, p in (aug.get("figures") or {}).items():
        L += _img(p, f"augmentation: {k}")

    for i, (name, m) in enumerate(results["models"].items(), 3):
        L += [f"## {i}. {name}", ""]
        if m.get("description"):
            L += [f"*{KIND_LABEL.get(m.get('kind'), m.get('kind', ''))}:* {m['description']}", ""]
        if m.get("status") != "complete":
            L += [f"> **{'Not trained' if m.get('status') == 'skipped' else 'Pending'}.** {m.get('note', '')}", ""]
            continue
        d = m["diagnosis"]
        L += [" ".join(model_sentences(m, base.get("test_accuracy"))), ""]
        L += [f"**Diagnosis: {d['label']}.** {d['text']} {d.get('advice', '')}".rstrip(), ""]
        figs = m.get("figures", {})
        L += _img(figs.get("history"), f"{name}: training history")
        L += tune_markdown(m.get("tune"), name, _img)
        per = (m.get("evaluation") or {}).get("per_class")
        if per:
            L += _table(["class", "precision", "recall", "F1", "test images"],
                        [[c, pct(v["precision"]), pct(v["recall"]), pct(v["f1"]), v["support"]] for c, v in per.items()],
                        "lrrrr") + [""]
        L += _img(figs.get("confusion_matrix"), f"{name}: confusion matrix")
        L += _img(figs.get("top_losses"), f"{name}: most confidently wrong test images, with Grad-CAM heatmaps")

        L += markdown_lines(m, _img, _table)
        layers = m.get("layers") or []
        if layers:
            L += ["<details><summary>Layers</summary>", ""]
            L += _table(["layer", "type", "output shape", "parameters", "trainable", "frozen"],
                        [[r["name"], r["type"], r["output_shape"], count(r["parameters"]), count(r["trainable"]),
                          count(r["frozen"])] for r in layers], "lllrrr")
            L += ["", "</details>", ""]

    L += [f"## {len(results['models']) + 3}. Comparison", ""]
    rows = []
    winner = (comp.get("winner") or {}).get("model")
    for r in comp.get("rows", []):
        name = f"**{r['model']}**" if r["model"] == winner else r["model"]
        if r.get("status") != "complete":
            rows.append([name, r.get("status"), "", "", "", "", "", ""])
            continue
        rng = r.get("val_range_second_half")
        rows.append([name, pct(r.get("test_accuracy")), points(r.get("over_baseline")),
                     f"{pct(r.get('best_val_accuracy'))} (epoch {r.get('best_epoch')})",
                     f"{pct(rng[0])}-{pct(rng[1])}" if rng else "n/a", r.get("diagnosis"),
                     f"{count(r.get('trainable'))} / {count(r.get('frozen'))}", seconds(r.get("seconds_per_epoch"))])
    L += _table(["model", "test accuracy", "vs baseline", "best validation", "validation range (2nd half)",
                 "diagnosis", "trainable / frozen parameters", "per epoch"], rows, "lrrrllrr") + [""]
    L += [f"Majority baseline: {pct(base['test_accuracy'])} on test, {pct(base['validation_accuracy'])} on "
          f"validation (always {base['majority_class']}).", ""]
    L += _img(comp.get("figure"), "validation accuracy per epoch, every model")
    if comp.get("summary"):
        L += [comp["summary"], ""]
    return "\n".join(L).rstrip() + "\n"
