"""What is in a dataset: the summary, the sample grid and the label-frequency chart."""

from __future__ import annotations

import os
from pathlib import Path

from . import figures, io
from .data.dataset import ImageDataset
from .data.fingerprint import duplicate_counts
from .data.scan import display_path
from .data.split import SPLITS


def describe(ds: ImageDataset, output: str | os.PathLike | None = None, *, k: int = 3) -> dict:
    """Summarise ``ds``; with ``output``, write ``summary.json`` and the two figures there."""
    summary = ds.summary()
    report = ds.report
    summary.update({
        "bad": [{"path": r.path, "reason": r.reason, "detail": r.detail, "message": r.message()} for r in report.bad],
        "ignored": report.ignored,
        "formats": report.formats(),
        "sizes": report.size_summary(),
        "duplicates": duplicate_counts(report.records, {r.path: s for s in SPLITS for r in ds.splits[s]}),
        "review": ds.review.to_dict() if ds.review else None,
    })
    if output is not None:
        out = Path(output)
        samples = figures.sample_grid(ds.sample(k), title=f"{k} random training images per class")
        counts = {s: ds.counts(s) for s in SPLITS if ds.splits[s]}
        freq = figures.label_frequencies(counts, baseline=summary["baseline_accuracy"])
        summary["figures"] = {
            "samples": str(figures.save(samples, out / "figures" / "samples.png")),
            "label_frequencies": str(figures.save(freq, out / "figures" / "label_frequencies.png")),
        }
        io.write_json(out / "summary.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    """The summary as the text ``imgclf inspect`` prints."""
    lines = []
    counts = summary["counts"]
    names = summary["class_names"]
    total_bad = len(summary["bad"])
    lines.append(f"data      {display_path(summary['root'])} ({summary['layout'].replace('_', ' ')})")
    lines.append(f"classes   {len(names)}: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
    lines.append(f"images    {summary['total']:,} valid, {total_bad:,} bad, {len(summary['ignored']):,} ignored")
    lines.append("formats   " + ", ".join(f"{k} {v:,}" for k, v in summary["formats"].items()))
    sizes = summary["sizes"]
    for name in names[:10]:
        s = sizes.get(name)
        if s:
            lines.append(f"sizes     {name}: width {s['min_w']}-{s['max_w']} (median {s['median_w']}), "
                         f"height {s['min_h']}-{s['max_h']} (median {s['median_h']})")
    lines.append("")
    width = max(5, *(len(n) for n in names))
    header = f"{'class':<{width}}  " + "  ".join(f"{s:>10}" for s in SPLITS) + f"  {'total':>7}"
    lines.append(header)
    for name in names:
        row = [counts[s][name] for s in SPLITS]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>10,}" for v in row) + f"  {sum(row):>7,}")
    lines.append("")
    lines.append(f"majority baseline: {summary['baseline_accuracy']:.1%} on {summary.get('baseline_split', 'validation')} "
                 f"(always predicting {summary['majority_class']!r})")
    dup = summary.get("duplicates")
    if dup:
        lines.append(f"duplicates {dup['exact_groups']:,} exact and {dup['near_groups']:,} near group(s), "
                     f"{dup['conflicting_label_groups']:,} across classes, {dup['leak_groups']:,} across splits "
                     f"({dup['leaked_validation_images']:,} validation and {dup['leaked_test_images']:,} test images "
                     "training has seen)")
        lines.append("          by perceptual hash only; `imgclf audit` confirms them with backbone features and "
                     "looks for mislabels and outliers")
    if summary.get("review"):
        rv = summary["review"]
        lines.append(f"review    {rv['excluded']:,} file(s) excluded, {rv['relabelled']:,} relabelled "
                     "(by the reviewed lists given; the files are untouched)")
    if total_bad:
        lines.append(f"\n{total_bad} bad file(s), left out of training (nothing was moved or deleted):")
        for b in summary["bad"][:50]:
            lines.append(f"  {b['message']}")
        if total_bad > 50:
            lines.append(f"  ... and {total_bad - 50} more (see summary.json)")
    if summary.get("figures"):
        lines.append("")
        for name, path in summary["figures"].items():
            lines.append(f"figure    {display_path(path)}")
    return "\n".join(lines)
