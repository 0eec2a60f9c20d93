"""``report.html``: the study as one self-contained page.

Figures are inlined as base64 PNG data URIs, the CSS and the few lines of script (click a
figure to see it full size) live in the page itself, so the file opens from disk, offline,
on a phone or a laptop, and can be mailed as it is. Text comes from the results dict only.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import string
from importlib import resources
from pathlib import Path
from typing import Any

from . import health
from .markdown import KIND_LABEL, data_sentences, model_sentences, split_total
from .numbers import count, pct, points, seconds
from .trust import html_section
from .tuned import tune_html

__all__ = ["render_html", "TEMPLATE"]

TEMPLATE = "template.html"


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _md_inline(text: str) -> str:
    """Escape, then turn the markdown helpers' **bold** and `code` into HTML."""
    out = _e(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _slug(name: str) -> str:
    return "model-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def _template() -> string.Template:
    return string.Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))


class _Figures:
    """Inline figures from the study folder as data URIs."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def __call__(self, rel: str | None, alt: str, caption: str | None = None, cls: str = "") -> str:
        if not rel:
            return ""
        path = Path(rel)
        if not path.is_absolute():
            path = self.folder / path
        cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
        try:
            data = path.read_bytes()
        except OSError:
            return f'<figure class="{cls}"><div class="missing">figure {_e(rel)} is missing</div>{cap}</figure>'
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        b64 = base64.b64encode(data).decode("ascii")
        return f'<figure class="{cls}"><img src="data:{mime};base64,{b64}" alt="{_e(alt)}">{cap}</figure>'


def _table(header: list[tuple[str, str]], rows: list[list[str]], row_classes: list[str] | None = None,
           cls: str = "", fit: bool = False) -> str:
    """``header``: (label, "n" for numbers or ""); cells are HTML already."""
    head = "".join(f'<th class="{a}" scope="col">{_e(h)}</th>' for h, a in header)
    body = []
    for i, r in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{rc}>" + "".join(f'<td class="{a}">{c}</td>' for c, (_, a) in zip(r, header)) + "</tr>")
    return (f'<div class="table-wrap{" fit" if fit else ""}"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _badge(text: str, cls: str) -> str:
    return f'<span class="badge {cls}">{_e(text)}</span>'


def _kpi(value: str, key: str, detail: str = "", cls: str = "") -> str:
    d = f'<span class="d {cls}">{detail}</span>' if detail else ""
    return f'<div class="kpi"><span class="v">{value}</span><span class="k">{_e(key)}</span>{d}</div>'


def _bar(value: float | None, baseline: float | None) -> str:
    if value is None:
        return ""
    mark = f'<i style="left:{baseline * 100:.1f}%" title="majority baseline"></i>' if baseline is not None else ""
    return f'<div class="bar"><span style="width:{value * 100:.1f}%"></span>{mark}</div>'


# -- sections ---------------------------------------------------------------------------------

def _hero(results: dict) -> str:
    data, comp = results["data"], results.get("comparison") or {}
    base = data["baseline"]
    w = comp.get("winner")
    stats = [(count(data["total"]), "images"), (str(len(data["class_names"])), "classes"),
             (pct(base["test_accuracy"]), "majority baseline (test)")]
    if w and w.get("test_accuracy") is not None:
        stats.append((pct(w.get("test_accuracy")), f"best test accuracy ({w['model']})"))
    elif w:
        stats.append((pct(w.get("validation_accuracy")), f"best validation accuracy ({w['model']})"))
    done = sum(1 for m in results["models"].values() if m.get("status") == "complete")
    stats.append((f"{done}/{len(results['models'])}", "models trained"))
    cards = "".join(f'<div class="stat"><span class="v">{_e(v)}</span><span class="k">{_e(k)}</span></div>'
                    for v, k in stats)
    if w and w.get("test_accuracy") is None:
        lede = (f"<strong>{_e(w['model'])}</strong> wins: {_e(pct(w.get('validation_accuracy')))} validation "
                f"accuracy against a majority baseline of {_e(pct(base['validation_accuracy']))}.")
    elif w:
        lede = (f"<strong>{_e(w['model'])}</strong> wins: {_e(pct(w.get('test_accuracy')))} on the test set, "
                f"{_e(points(w.get('over_baseline')).replace('pts', 'points'))} over always guessing "
                f"<em>{_e(base['majority_class'])}</em>.")
        if w.get("runner_up"):
            lede += (f" Runner-up {_e(w['runner_up'])} at {_e(pct(w.get('runner_up_test_accuracy')))}.")
    else:
        lede = "No model has finished training yet."
    opts = results.get("options", {})
    meta = (f"imgclf {_e(results.get('imgclf_version', ''))} &middot; {_e(results.get('created', ''))} &middot; "
            f"{_e(opts.get('epochs'))} epochs per model &middot; data <code>{_e(data['root'])}</code>")
    return (f'<header class="hero"><div class="wrap"><p class="eyebrow">imgclf study</p>'
            f'<h1>{_e(results["title"])}</h1><p class="lede">{lede}</p><div class="stats">{cards}</div>'
            f'<p class="meta">{meta}</p></div></header>')


def _nav(results: dict) -> str:
    links = [("data", "Data")] + ([("data-health", "Data health")] if results.get("data_health") else [])
    links += [("augmentation", "Augmentation")]
    links += [(_slug(n), n) for n in results["models"]]
    links.append(("comparison", "Comparison"))
    items = "".join(f'<li><a href="#{_e(a)}">{_e(t)}</a></li>' for a, t in links)
    return f'<nav class="toc" aria-label="sections"><ul>{items}</ul></nav>'


def _data(results: dict, fig: _Figures) -> str:
    data = results["data"]
    splits = [s for s in ("train", "validation", "test") if data["counts"].get(s)]
    rows = []
    for name in data["class_names"]:
        vals = [data["counts"][s].get(name, 0) for s in splits]
        rows.append([_e(name)] + [count(v) for v in vals] + [count(sum(vals))])
    rows.append(["all"] + [count(split_total(data, s)) for s in splits] + [count(data["total"])])
    table = _table([("class", "")] + [(s, "n") for s in splits] + [("total", "n")], rows,
                   [""] * (len(rows) - 1) + ["total"], fit=True)
    paras = "".join(f"<p>{_md_inline(s)}</p>" for s in data_sentences(data))
    figs = data.get("figures", {})
    bad = data.get("bad") or []
    bad_html = ""
    if bad:
        items = "".join(f"<li>{_e(b.get('message') or b.get('path'))}</li>" for b in bad[:200])
        more = f"<li>... and {len(bad) - 200} more (see summary.json)</li>" if len(bad) > 200 else ""
        bad_html = (f'<details{" open" if len(bad) <= 10 else ""}><summary>{len(bad)} bad '
                    f'file{"s" if len(bad) != 1 else ""}</summary><ul class="bad">{items}{more}</ul></details>')
    notes = data.get("warnings") or []
    if notes:  # what was used or skipped all the same
        bad_html += (f'<details open><summary>{len(notes)} warning{"s" if len(notes) != 1 else ""}</summary>'
                     f'<ul class="bad">{"".join(f"<li>{_e(w)}</li>" for w in notes[:200])}</ul></details>')
    return (f'<section class="card" id="data"><h2><span class="num">1</span>The data</h2>{paras}{table}{bad_html}'
            + '<div class="grid">'
            + fig(figs.get("samples"), "sample training images, a row per class",
                  "Random training images, a row per class: what the models get to see.")
            + fig(figs.get("label_frequencies"), "images per class and split",
                  "Images per class and split, with the majority baseline.")
            + "</div></section>")


def _augmentation(results: dict, fig: _Figures) -> str:
    aug = results.get("augmentation") or {}
    figs = aug.get("figures") or {}
    captions = {"flip": "Random horizontal flips.", "rotation": "Random rotations.",
                "stack": "Both together, as the augmenting models use them."}
    grid = "".join(fig(p, f"augmentation preview: {k}", captions.get(k, k)) for k, p in figs.items())
    return (f'<section class="card" id="augmentation"><h2><span class="num">2</span>Data augmentation</h2>'
            f"<p>Random flips and rotations make new training images out of old ones, so a model cannot simply "
            f"memorise its training set. The models with <code>aug</code> in their names apply "
            f"<code>{_e(aug.get('augment', ''))}</code> while training (and never at test time). Each grid shows "
            f"one training image and eight random versions of it.</p><div class=\"grid\">{grid}</div></section>")


def _model(i: int, name: str, m: dict, results: dict, fig: _Figures) -> str:
    kind = KIND_LABEL.get(m.get("kind"), m.get("kind") or "")
    status = m.get("status")
    head = f'<div class="heading"><h2><span class="num">{i + 2}</span>{_e(name)}</h2>'
    if kind:
        head += _badge(kind, "kind")
    if status != "complete":
        label = "not trained" if status == "skipped" else "pending"
        head += _badge(label, f"v-{status}") + "</div>"
        desc = f'<p class="sub">{_e(m.get("description"))}</p>' if m.get("description") else ""
        what = ("This model was not trained, so it has no results here." if status == "skipped"
                else "This model has not been trained yet.")
        return (f'<section class="card model" id="{_slug(name)}">{head}{desc}<div class="callout v-{status}">'
                f'<p><span class="label">{_e(what)}</span></p><p>{_e(m.get("note"))}</p></div></section>')

    d = m["diagnosis"]
    winner = ((results.get("comparison") or {}).get("winner") or {}).get("model")
    head += _badge(d["label"], f"v-{d['verdict']}")
    if name == winner:
        head += _badge("best model", "best")
    head += "</div>"
    base = m.get("test_baseline")
    test = m.get("test_accuracy")
    over = None if test is None or base is None else test - base
    rng = m.get("val_range_second_half")
    p = m.get("parameters") or {}
    kpis = "".join([
        _kpi(_e(pct(test)), "test accuracy",
             f"{_e(points(over))} vs baseline {_e(pct(base))}" if over is not None else "",
             "up" if (over or 0) > 0 else "down"),
        _kpi(_e(pct(m.get("best_val_accuracy"))), "best validation accuracy", f"epoch {_e(m.get('best_epoch'))}"
             + (f"; saved model: epoch {_e(', '.join(str(e) for e in m['kept_epoch'].values()))}"
                if m.get("kept_epoch") else "")),
        _kpi(_e(f"{pct(rng[0], 0)}–{pct(rng[1], 0)}") if rng else "n/a", "validation range, 2nd half",
             _e(f"epochs {m['second_half_epochs'][0]}–{m['second_half_epochs'][1]}") if m.get("second_half_epochs") else ""),
        _kpi(_e(seconds(m.get("seconds_per_epoch"))), "per epoch",
             f"{_e(m.get('epochs'))} epochs, {_e(seconds(m.get('train_seconds')))}"),
        _kpi(_e(count(p.get("trainable"))), "trainable parameters", f"{_e(count(p.get('frozen')))} frozen"),
    ])
    diag = (f'<div class="callout v-{_e(d["verdict"])}"><p><span class="label">Diagnosis: {_e(d["label"])}.</span> '
            f'{_e(d["text"])}</p>' + (f"<p>{_e(d['advice'])}</p>" if d.get("advice") else "") + "</div>")
    story = "".join(f"<p>{_md_inline(s)}</p>" for s in model_sentences(m, base))
    lf = (m.get("evaluation") or {}).get("leak_free") or {}
    if lf.get("leaked"):
        story += (f"<p>Leak-free test accuracy: <strong>{_e(pct(lf.get('accuracy')))}</strong> on the "
                  f"{_e(count(lf.get('count')))} test images with no duplicate in another split "
                  f"({_e(count(lf['leaked']))} left out; see Data health).</p>")
    figs = m.get("figures", {})
    fine = (f" The shaded part is fine-tuning, from epoch {m['fine_tune_epoch']}." if m.get("fine_tune_epoch") else "")
    history = fig(figs.get("history"), f"{name}: accuracy and loss per epoch",
                  "Accuracy and loss per epoch, training (solid) against validation (dashed); the star marks the "
                  "best validation epoch." + fine)
    ev = m.get("evaluation") or {}
    per = ev.get("per_class") or {}
    per_table = ""
    if per:
        rows = [[_e(c), pct(v["precision"]), pct(v["recall"]), pct(v["f1"]), count(v["support"])] for c, v in per.items()]
        per_table = ("<h3>Per class (test set)</h3>" + _table(
            [("class", ""), ("precision", "n"), ("recall", "n"), ("F1", "n"), ("images", "n")], rows, fit=True))
    cm = fig(figs.get("confusion_matrix"), f"{name}: confusion matrix on the test set",
             "Confusion matrix on the test set: rows are the true classes, columns the predictions.")
    eval_block = f'<div class="grid">{cm}<div>{per_table}</div></div>' if (cm or per_table) else ""
    n_wrong = len(ev.get("top_losses") or [])
    tl = fig(figs.get("top_losses"), f"{name}: the most confidently wrong test images",
             f"The {n_wrong} test image{'s' if n_wrong != 1 else ''} the model got wrong with the most confidence, "
             "each under its Grad-CAM heatmap for the predicted class (red: what pushed the model to its answer).",
             cls="narrow")
    if not tl and ev.get("per_class"):
        tl = "<p>No test image was misclassified.</p>"

    trust = html_section(m, fig, _e, _md_inline, _table)
    layers = m.get("layers") or []
    layer_html = ""
    if layers:
        rows = [[f"<code>{_e(r['name'])}</code>", _e(r["type"]), f"<code>{_e(r['output_shape'])}</code>",
                 count(r["parameters"]), count(r["trainable"]), count(r["frozen"])] for r in layers]
        rows.append(["all", "", "", count(p.get("total")), count(p.get("trainable")), count(p.get("frozen"))])
        layer_html = (f"<details><summary>Layers ({len(layers)}) and parameters</summary>"
                      + _table([("layer", ""), ("type", ""), ("output shape", ""), ("parameters", "n"),
                                ("trainable", "n"), ("frozen", "n")], rows, [""] * len(layers) + ["total"])
                      + "</details>")
    extra = []
    if m.get("preprocessing"):
        extra.append(f"input: {_e(m['preprocessing'])}")
    if m.get("weights"):
        extra.append(f"weights: <code>{_e(Path(m['weights']).name)}</code>")
    if m.get("image_size"):
        extra.append(f"{_e(m['image_size'])}×{_e(m['image_size'])} pixels")
    extra_html = f'<p class="sub">{" &middot; ".join(extra)}</p>' if extra else ""
    return (f'<section class="card model" id="{_slug(name)}">{head}'
            f'<p class="sub">{_e(m.get("description"))}</p>{extra_html}<div class="kpis">{kpis}</div>'
            f"{diag}{history}{story}{tune_html(m.get('tune'), name, fig, _table)}{eval_block}{tl}{trust}{layer_html}</section>")


def _comparison(results: dict, fig: _Figures) -> str:
    comp = results.get("comparison") or {}
    base = comp.get("baseline") or results["data"]["baseline"]
    winner = (comp.get("winner") or {}).get("model")
    rows, classes = [], []
    for r in comp.get("rows", []):
        name = f'<a href="#{_slug(r["model"])}">{_e(r["model"])}</a>'
        if r["model"] == winner:
            name += " " + _badge("best", "best")
        if r.get("status") != "complete":
            label = "not trained" if r.get("status") == "skipped" else "pending"
            rows.append([name, _badge(label, f"v-{r.get('status')}"), "", "", "", "", ""])
            classes.append("")
            continue
        rng = r.get("val_range_second_half")
        rows.append([
            name + f'<span class="small">{_e(KIND_LABEL.get(r.get("kind"), r.get("kind") or ""))}</span>',
            f"{_e(pct(r.get('test_accuracy')))}<span class=\"small\">{_e(points(r.get('over_baseline')))}</span>"
            f"{_bar(r.get('test_accuracy'), base.get('test_accuracy'))}",
            f"{_e(pct(r.get('best_val_accuracy')))}<span class=\"small\">epoch {_e(r.get('best_epoch'))}</span>",
            _e(f"{pct(rng[0], 0)}–{pct(rng[1], 0)}") if rng else "n/a",
            _badge(r.get("diagnosis") or "", f"v-{r.get('verdict')}"),
            f"{_e(count(r.get('trainable')))}<span class=\"small\">{_e(count(r.get('frozen')))} frozen</span>",
            _e(seconds(r.get("seconds_per_epoch"))),
        ])
        classes.append("win" if r["model"] == winner else "")
    table = _table([("model", ""), ("test accuracy", "n"), ("best validation", "n"), ("validation, 2nd half", "n"),
                    ("diagnosis", ""), ("trainable params", "n"), ("time per epoch", "n")], rows, classes,
                   cls="comparison")
    summary = (f'<div class="callout winner"><p>{_e(comp["summary"])}</p>'
               f"<p>The winner is chosen on validation accuracy and reported on the test set, which no model "
               f"saw while it was being trained or chosen.</p></div>") if comp.get("summary") else ""
    return (f'<section class="card" id="comparison"><h2><span class="num">{len(results["models"]) + 3}</span>'
            f'Comparison</h2>'
            f"<p>Every model, trained on the same splits. The bar under each test accuracy runs from 0 to 100%; "
            f"the tick marks the majority baseline ({_e(pct(base.get('test_accuracy')))}: always "
            f"{_e(base.get('majority_class'))}).</p>{table}"
            + fig(comp.get("figure"), "validation accuracy per epoch, every model",
                  "Validation accuracy per epoch for every model; the dashed line is the majority baseline.")
            + f"{summary}</section>")


def _footer(results: dict) -> str:
    opts = dict(results.get("options", {}))
    flat = {**{k: v for k, v in opts.items() if k not in ("models", "data_options", "train_options")},
            **(opts.get("data_options") or {}), **(opts.get("train_options") or {})}
    items = ", ".join(f"{k}={v}" for k, v in flat.items() if v not in (None, {}, [], ""))
    trained = [m.get("train_seconds") or 0 for m in results["models"].values() if m.get("status") == "complete"]
    took = f" Training took {seconds(sum(trained))} in all." if trained else ""
    return (f'<footer><div class="wrap"><p>Made by imgclf {_e(results.get("imgclf_version", ""))} '
            f"on {_e(results.get('created', ''))}.{_e(took)} Options: {_e(items)}. Every model's run folder (model, "
            f"history, metrics, figures) is under <code>runs/</code> beside this page; the numbers are in "
            f"<code>results.json</code>.</p></div></footer>")


def render_html(results: dict, folder: str | Path) -> str:
    """The report page for ``results`` (figure paths relative to ``folder``)."""
    fig = _Figures(Path(folder))
    models = "".join(_model(i, n, m, results, fig) for i, (n, m) in enumerate(results["models"].items(), 1))
    body = (_hero(results) + _nav(results) + '<main><div class="wrap">' + _data(results, fig)
            + health.render(results, fig) + _augmentation(results, fig) + models + _comparison(results, fig) + "</div></main>" + _footer(results))
    return _template().substitute(title=_e(results["title"]), version=_e(results.get("imgclf_version", "")), body=body)
