"""The report's account of a tuned model: the search that chose its options."""

from __future__ import annotations

import html
from typing import Any, Callable

from .numbers import pct, seconds


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def tune_sentence(t: dict) -> str:
    """One sentence: how many trials, on what, the best against the defaults."""
    text = (f"Its options were chosen by a search of {t.get('trials')} trials ({t.get('pruned') or 0} stopped early "
            f"by the median pruner) on the {t.get('mode') or 'cached features'}, {t.get('sampler')}, scored on the "
            f"validation split only: ")
    if t.get("best_trial") == 0:
        text += f"the defaults (trial 0) stayed best, at {pct(t.get('best_validation_accuracy'))}"
    else:
        text += f"trial {t.get('best_trial')} reached {pct(t.get('best_validation_accuracy'))}"
        if t.get("default_validation_accuracy") is not None:
            text += f" against {pct(t.get('default_validation_accuracy'))} for the defaults (trial 0)"
    if t.get("seconds") is not None:
        text += f"; the search took {seconds(t['seconds'])}"
    return text + "."


def tune_rows(t: dict) -> list[tuple[str, str, str]]:
    """(option, chosen value, importance) for each option of the best trial: the searched ones by
    importance ("n/a" until enough trials differ), then those the space fixed."""
    imp = t.get("importances") or {}
    params = t.get("best_params") or {}
    space = t.get("space") or {}

    def searched(k):
        return isinstance(space.get(k), dict) if space else k in imp

    order = sorted(params, key=lambda k: (not searched(k), -imp.get(k, -1.0)))
    return [(k, _value(params[k]), (pct(imp[k], 0) if k in imp else "n/a") if searched(k) else "fixed")
            for k in order]


def tune_html(t: dict | None, name: str, fig: Callable, table: Callable) -> str:
    if not t:
        return ""
    rows = [[f"<code>{html.escape(k)}</code>", html.escape(v), html.escape(i)] for k, v, i in tune_rows(t)]
    return ("<h3>The search</h3>" + f"<p>{html.escape(tune_sentence(t))}</p>"
            + '<div class="grid">'
            + fig(t.get("figure"), f"{name}: validation accuracy per trial and the options' importance",
                  "Validation accuracy per trial (pruned trials at the last epoch they reported); the dashed line "
                  "is the defaults' trial. Right: each option's share of the variation in validation accuracy.")
            + "<div>" + table([("option", ""), ("chosen", "n"), ("importance", "n")], rows, fit=True) + "</div></div>")


def tune_markdown(t: dict | None, name: str, img: Callable) -> list[str]:
    if not t:
        return []
    lines = ["### The search", "", tune_sentence(t), ""]
    lines += img(t.get("figure"), f"{name}: the search")
    lines += ["| option | chosen | importance |", "| --- | ---: | ---: |"]
    lines += [f"| `{k}` | {v} | {i} |" for k, v, i in tune_rows(t)]
    return lines + [""]
