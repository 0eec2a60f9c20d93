"""What is in a dataset: the summary, the sample grid and the label-frequency chart."""

from __future__ import annotations

import os
from pathlib import Path

from . import figures, io
from .config import DataConfig
from .data.dataset import ImageDataset, data_config, dataset_from_scan, scan_dataset
from .data.fingerprint import duplicate_counts
from .data.scan import ScanReport, display_path
from .data.split import SPLITS
from .errors import DataError


def inspect(data=None, output: str | os.PathLike | None = None, config: DataConfig | None = None, *,
            image_size: int = 160, progress: bool = True, k: int = 3, **options) -> dict:
    """Scan and summarise a dataset without stopping at its first problem.

    The summary (see :func:`describe`) lists every problem found under ``problems``; when no
    model can be trained on the data, ``error`` says why (and there are no splits, figures or
    ``summary.json``).
    A folder that cannot be read at all still raises :class:`~imgclf.errors.DataError`.
    ``config`` or ``options`` (fields of :class:`~imgclf.config.DataConfig`) as for
    :func:`~imgclf.data.load_dataset`.
    """
    cfg = data_config(data, config, **options)
    source, report, review = scan_dataset(cfg, progress=progress)
    try:
        ds = dataset_from_scan(source, report, cfg, review=review, image_size=image_size, progress=progress)
    except DataError as e:
        summary = _report_summary(report)
        summary["error"] = str(e)
        return summary
    summary = describe(ds, output, k=k)
    summary["error"] = None
    return summary


def _problems(report: ScanReport) -> list[str]:
    """Every problem of a scan, one sentence each: what was skipped or left out, then bad files."""
    return list(report.warnings) + [f"{display_path(r.path)}: {r.warning}" for r in report.renamed] + [
        r.message() for r in report.bad]


def _report_summary(report: ScanReport) -> dict:
    """What :func:`describe` gives, from the scan alone (data that cannot be split)."""
    counts = report.counts()
    return {
        "root": str(report.root), "layout": report.layout, "class_names": report.class_names,
        "counts": {"total": counts}, "total": len(report.valid), "bad_files": len(report.bad),
        "majority_class": report.baseline()[0], "baseline_accuracy": report.baseline()[1],
        "baseline_split": "all images", **_scan_details(report),
    }


def _scan_details(report: ScanReport) -> dict:
    return {
        "bad": [{"path": r.path, "reason": r.reason, "detail": r.detail, "message": r.message()} for r in report.bad],
        "ignored": report.ignored,
        "clutter": len(report.clutter),
        "warnings": list(report.warnings),
        "renamed": [{"path": r.path, "warning": r.warning} for r in report.renamed],
        "problems": _problems(report),
        "formats": report.formats(),
        "sizes": report.size_summary(),
    }


def describe(ds: ImageDataset, output: str | os.PathLike | None = None, *, k: int = 3) -> dict:
    """Summarise ``ds``; with ``output``, write ``summary.json`` and the two figures there."""
    summary = ds.summary()
    report = ds.report
    summary.update(_scan_details(report))
    summary["duplicates"] = duplicate_counts(report.records, {r.path: s for s in SPLITS for r in ds.splits[s]})
    summary["review"] = ds.review.to_dict() if ds.review else None
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


def format_summary(summary: dict, max_problems: int = 50) -> str:
    """The summary as the text ``imgclf inspect`` prints: the whole report, then every problem."""
    lines = []
    counts = summary["counts"]
    names = summary["class_names"]
    total_bad = len(summary["bad"])
    lines.append(f"data      {display_path(summary['root'])} ({summary['layout'].replace('_', ' ')})")
    lines.append(f"classes   {len(names)}: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
    ignored = len(summary["ignored"]) + summary.get("clutter", 0)
    lines.append(f"images    {summary['total']:,} valid, {total_bad:,} bad, {ignored:,} ignored"
                 + (f" ({summary['clutter']:,} system or hidden files)" if summary.get("clutter") else ""))
    lines.append("formats   " + ", ".join(f"{k} {v:,}" for k, v in summary["formats"].items()))
    sizes = summary["sizes"]
    for name in names[:10]:
        s = sizes.get(name)
        if s:
            lines.append(f"sizes     {name}: width {s['min_w']}-{s['max_w']} (median {s['median_w']}), "
                         f"height {s['min_h']}-{s['max_h']} (median {s['median_h']})")
    if names:
        lines.append("")
        columns = [s for s in SPLITS if s in counts] or list(counts)
        width = max(5, *(len(n) for n in names))
        lines.append(f"{'class':<{width}}  " + "  ".join(f"{s:>10}" for s in columns)
                     + (f"  {'total':>7}" if len(columns) > 1 else ""))
        for name in names:
            row = [counts[s][name] for s in columns]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>10,}" for v in row)
                         + (f"  {sum(row):>7,}" if len(columns) > 1 else ""))
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
    if summary.get("figures"):
        lines.append("")
        for name, path in summary["figures"].items():
            lines.append(f"figure    {display_path(path)}")
    problems = summary.get("problems", [b["message"] for b in summary["bad"]])
    if problems:
        lines.append(f"\n{len(problems)} problem(s) (bad files are left out of training; nothing was moved or deleted):")
        for p in problems[:max_problems]:
            lines.append(f"  {p}")
        if len(problems) > max_problems:
            lines.append(f"  ... and {len(problems) - max_problems} more (see summary.json)")
    return "\n".join(lines)
