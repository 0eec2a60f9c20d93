"""The study report's "Data health" section: the audit's counts, duplicate groups as
thumbnails, the top suspected mislabels as a grid, what was excluded or relabelled."""

from __future__ import annotations

import html
from pathlib import Path

from ..audit import audit
from ..errors import ImgclfError
from ..models import check_weights, get_spec


def data_health(ds, out: Path, *, model: str = "mobilenet_v2", weights="imagenet", alpha=None,
                download: bool = True, progress: bool = False) -> dict:
    """Audit ``ds`` into ``out/audit`` and return what the report shows (paths relative to ``out``)."""
    spec = get_spec(model)
    note = None
    try:
        weights_file = check_weights(spec, {"weights": weights, "alpha": alpha, "image_size": ds.image_size[0]},
                                     download)
    except ImgclfError as e:
        weights_file, note = None, str(e)
    result = audit(ds, model=model, weights=weights_file, alpha=alpha, progress=progress)
    files = result.save(out / "audit")
    rel = {k: Path(v).relative_to(out).as_posix() for k, v in files.items()}
    return {"counts": result.counts(), "checks": result.checks, "review": result.review,
            "label_issues": result.label_issues[:10], "groups": len(result.groups),
            "features": result.settings["features"], "weights_note": note, "files": rel,
            "seconds": round(result.seconds, 1)}


def render(results: dict, fig) -> str:
    """The section's HTML ('' when the study has no audit)."""
    h = results.get("data_health")
    if not h:
        return ""
    e = html.escape
    c = h["counts"]
    stats = [(c["duplicate_groups"], "duplicate groups", f"{c['exact_groups']} exact, {c['near_groups']} near"),
             (c["conflicting_label_groups"], "across classes", "the same image under two labels"),
             (c["leak_groups"], "across splits", f"{c['leaked_validation_images']} validation, "
                                                 f"{c['leaked_test_images']} test images seen in training"),
             (c["label_issues"], "suspected mislabels", "confident learning on out-of-fold predictions")]
    cards = "".join(f'<div class="stat"><span class="v">{v}</span><span class="k">{e(k)}</span>'
                    f'<span class="k">{e(d)}</span></div>' for v, k, d in stats)
    rows = "".join(
        f"<tr><td>{e(name.replace('_', ' '))}</td><td class=\"n\">{chk['count'] if chk['ran'] else '&ndash;'}</td>"
        f"<td>{e(chk['threshold'])}</td><td>{e(chk.get('note') or ('' if chk['ran'] else 'not run'))}</td></tr>"
        for name, chk in h["checks"].items())
    table = ('<div class="table-wrap"><table><thead><tr><th>check</th><th class="n">flagged</th><th>threshold</th>'
             f"<th>note</th></tr></thead><tbody>{rows}</tbody></table></div>")
    paras = [f"The audit looked at every image in {h['seconds']:.0f} s: duplicates by perceptual hash"
             + (", confirmed by backbone features" if h["features"] else " only (no backbone weights)")
             + "; mislabels and feature outliers need backbone features."]
    if not h["features"]:
        paras.append("Not run without backbone weights: suspected mislabels, feature outliers and the feature "
                     "check of near duplicates. " + (h.get("weights_note") or ""))
    rv = h.get("review") or {}
    if rv:
        paras.append(f"Applied before training: {rv.get('excluded', 0)} file(s) excluded"
                     f"{' (' + rv['exclude'] + ')' if rv.get('exclude') else ''}, {rv.get('relabelled', 0)} relabelled"
                     f"{' (' + rv['relabel'] + ')' if rv.get('relabel') else ''}. The files were not touched.")
    else:
        paras.append("Nothing was excluded or relabelled. Fill the <code>action</code> column of "
                     f"<code>{e(h['files'].get('issues', 'audit/issues.csv'))}</code> and pass it to "
                     "<code>--exclude</code> / <code>--relabel</code> to act on it.")
    body = "".join(f"<p>{p}</p>" for p in paras)
    figs = h["files"]
    grid = (fig(figs.get("duplicates"), "duplicate groups", "Duplicate groups: one row per group, each image with "
                "its class and split.") if figs.get("duplicates") else "")
    grid += (fig(figs.get("label_issues"), "suspected mislabels", "The most suspect labels: given and suggested "
                 "class over each image.") if figs.get("label_issues") else "")
    return (f'<section class="card" id="data-health"><h2><span class="num">&#10003;</span>Data health</h2>'
            f'<div class="stats">{cards}</div>{body}{table}<div class="grid">{grid}</div></section>')


def markdown(results: dict) -> list[str]:
    """The section as Markdown lines (none when the study has no audit)."""
    h = results.get("data_health")
    if not h:
        return []
    c = h["counts"]
    lines = ["### Data health", "",
             f"{c['duplicate_groups']} duplicate group(s) ({c['exact_groups']} exact, {c['near_groups']} near): "
             f"{c['conflicting_label_groups']} across classes, {c['leak_groups']} across splits "
             f"({c['leaked_validation_images']} validation and {c['leaked_test_images']} test images seen in "
             f"training); {c['label_issues']} suspected mislabel(s).", ""]
    lines += [f"- {name.replace('_', ' ')}: {chk['count'] if chk['ran'] else 'not run'} ({chk['threshold']})"
              for name, chk in h["checks"].items()]
    lines.append("")
    for key, alt in (("duplicates", "duplicate groups"), ("label_issues", "suspected mislabels")):
        if h["files"].get(key):
            lines += [f"![{alt}]({h['files'][key]})", ""]
    return lines
