"""The data audit: duplicates (and the conflicting labels and leaks they reveal), suspected
mislabels, outliers and image quality, from the scan's fingerprints and the frozen features.

    ds = imgclf.load_dataset("photos", image_size=224)
    a = ds.audit(weights="mobilenet_v2.h5")    # or imgclf.audit.audit(ds, ...)
    a.groups, a.label_issues, a.outliers      # plain lists of dicts
    a.to_csv("issues.csv"); a.plot("labels")  # a CSV to review, a matplotlib Figure

Nothing here decodes an image a second time: the pixel checks read the scan's fingerprints,
the feature checks the backbone features of the decoded images (computed once, cached).
"""

from __future__ import annotations

import csv
import io as _io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import figures, io
from ..data.split import SPLITS
from ..errors import ConfigError, ImgclfError
from ..models import build_model, get_spec
from ..training.features import extract_features
from .duplicates import find_groups, leak_counts
from .labels import FOLDS, label_issues
from .quality import THRESHOLDS, feature_outliers, pixel_checks

# A file flagged several times is one row of issues.csv, under its most telling issue.
ORDER = ("conflicting_labels", "leak", "label", "redundant", "outlier", "low_information", "tiny",
         "extreme_aspect", "blurry", "dark", "bright")
NEEDS_WEIGHTS = ("label", "outlier")
CSV_COLUMNS = ("path", "issue", "score", "class", "suggested_label", "split", "group", "details", "action")


@dataclass
class Audit:
    """What the audit found. ``groups``: duplicate groups; ``label_issues``: suspected
    mislabels, most suspect first; ``outliers``: quality and feature-space flags; ``checks``:
    per check, whether it ran, its threshold and its count."""

    root: str
    class_names: list[str]
    layout: str
    groups: list[dict] = field(default_factory=list)
    label_issues: list[dict] = field(default_factory=list)
    outliers: list[dict] = field(default_factory=list)
    checks: dict[str, dict] = field(default_factory=dict)
    leaks: dict[str, int] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    review: dict = field(default_factory=dict)
    seconds: float = 0.0
    figures: dict[str, str] = field(default_factory=dict)
    _dataset: object = field(default=None, repr=False)

    # -- numbers ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        kinds = {k: sum(k in g["kinds"] for g in self.groups) for k in ("conflicting_labels", "leak", "redundant")}
        exact = sum(g["exact"] for g in self.groups)
        out = {"duplicate_groups": len(self.groups), "exact_groups": exact, "near_groups": len(self.groups) - exact,
               "conflicting_label_groups": kinds["conflicting_labels"], "leak_groups": kinds["leak"],
               "redundant_groups": kinds["redundant"],
               "leaked_validation_images": self.leaks.get("validation", 0),
               "leaked_test_images": self.leaks.get("test", 0),
               "label_issues": len(self.label_issues)}
        for name in THRESHOLDS:
            out[name] = sum(o["issue"] == name for o in self.outliers)
        return out

    def to_dict(self) -> dict:
        return {"root": self.root, "layout": self.layout, "class_names": self.class_names, "counts": self.counts(),
                "checks": self.checks, "settings": self.settings, "review": self.review,
                "seconds": round(self.seconds, 2), "groups": self.groups, "label_issues": self.label_issues,
                "outliers": self.outliers, "figures": self.figures}

    def issues(self) -> list[dict]:
        """One row per flagged file (the rows of ``issues.csv``), most telling issue first."""
        split_of, label_of = {}, {}
        for g in self.groups:
            for f in g["files"]:
                split_of[f["path"]], label_of[f["path"]] = f["split"], f["class"]
        flags: dict[str, list[tuple[str, float | None, str, int | str]]] = {}
        for g in self.groups:
            score = 1.0 if g["exact"] else g["cosine"]
            for f in g["files"]:
                flags.setdefault(f["path"], []).append((g["kind"], score, "", g["id"]))
        for li in self.label_issues:
            flags.setdefault(li["path"], []).append(("label", li["score"], li["suggested"], ""))
            label_of.setdefault(li["path"], li["given"])
        for o in self.outliers:
            flags.setdefault(o["path"], []).append((o["issue"], o["score"], "", ""))
            label_of.setdefault(o["path"], o["class"])
        ds = self._dataset
        if ds is not None:
            for s in SPLITS:
                for r in ds.splits[s]:
                    split_of.setdefault(r.path, s)
        rows = []
        for path, fl in flags.items():
            fl.sort(key=lambda t: ORDER.index(t[0]))
            issue, score, suggested, group = fl[0]
            suggested = suggested or next((t[2] for t in fl if t[2]), "")
            group = group or next((t[3] for t in fl if t[3]), "")
            rows.append({"path": path, "issue": issue, "score": "" if score is None else score,
                         "class": label_of.get(path, ""), "suggested_label": suggested,
                         "split": split_of.get(path, ""), "group": group,
                         "details": "; ".join(f"{t[0]}={t[1]}" for t in fl), "action": ""})
        rows.sort(key=lambda r: (ORDER.index(r["issue"]), str(r["group"]).zfill(8), r["path"]))
        return rows

    # -- files -----------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """``issues.csv`` (to ``path`` if given, atomically); returns the text. Fill the
        ``action`` column with ``keep``, ``drop`` or ``relabel:CLASS`` and pass the file to
        ``--exclude`` / ``--relabel``."""
        buf = _io.StringIO()
        w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.issues())
        if path is not None:
            io.write_text(path, buf.getvalue())
        return buf.getvalue()

    def to_json(self, path: str | os.PathLike | None = None) -> dict:
        d = self.to_dict()
        if path is not None:
            io.write_json(path, d)
        return d

    def plot(self, what: str = "labels", k: int = 12):
        """A matplotlib Figure: ``"labels"`` (the top suspected mislabels, both labels on each
        image) or ``"duplicates"`` (duplicate groups as rows of thumbnails)."""
        ds = self._dataset
        if what not in ("labels", "duplicates"):
            raise ConfigError(f"unknown figure {what!r}; choose 'labels' or 'duplicates'")
        if ds is None:
            raise ConfigError("this audit was read back from disk; its figures are in its folder")
        row_of = {r.path: i for i, r in enumerate(ds._rows)}
        pixels = ds.decoded()
        if what == "labels":
            top = self.label_issues[:k]
            if not top:
                note = self.checks.get("label", {}).get("note") or "no suspected mislabels"
                return figures.message_figure(note, "suspected mislabels")
            return figures.top_losses([pixels[row_of[t["path"]]] for t in top], [t["given"] for t in top],
                                      [t["suggested"] for t in top], [t["confidence"] for t in top],
                                      paths=[t["path"] for t in top], names=("given", "suggested"),
                                      title="suspected mislabels (most suspect first)")
        order = sorted(self.groups, key=lambda g: (ORDER.index(g["kind"]), g["id"]))[:k]
        return figures.image_groups(
            [[pixels[row_of[f["path"]]] for f in g["files"]] for g in order],
            [[f"{f['class']} / {f['split']}\n{Path(f['path']).name}" for f in g["files"]] for g in order],
            [f"group {g['id']}: {', '.join(x.replace('_', ' ') for x in g['kinds'])}"
             f"{' (exact)' if g['exact'] else ''}" for g in order],
            title="duplicate groups" if order else None)

    def save(self, folder: str | os.PathLike) -> dict[str, str]:
        """Write ``audit.json``, ``issues.csv`` and ``figures/`` to ``folder``."""
        out = Path(folder)
        paths = {"issues": str(out / "issues.csv")}
        self.to_csv(out / "issues.csv")
        if self._dataset is not None:
            if self.label_issues or self.checks.get("label", {}).get("ran"):
                self.figures["label_issues"] = str(figures.save(self.plot("labels"), out / "figures" / "label_issues.png"))
            if self.groups:
                self.figures["duplicates"] = str(figures.save(self.plot("duplicates"), out / "figures" / "duplicates.png"))
        paths.update(self.figures)
        paths["audit"] = str(out / "audit.json")
        self.to_json(out / "audit.json")
        return paths

    def format(self) -> str:
        """The summary ``imgclf audit`` prints."""
        c = self.counts()
        lines = [f"audit     {self.root}: {self.settings.get('images', 0):,} images, {self.seconds:.1f} s"]
        lines.append(f"duplicates {c['duplicate_groups']} group(s): {c['exact_groups']} exact, {c['near_groups']} near "
                     f"({self.checks['near_duplicates']['threshold']})")
        lines.append(f"  conflicting labels {c['conflicting_label_groups']} group(s), leaks across splits "
                     f"{c['leak_groups']} group(s) ({c['leaked_validation_images']} validation and "
                     f"{c['leaked_test_images']} test images training has seen), redundant {c['redundant_groups']}")
        for name, chk in self.checks.items():
            if name == "near_duplicates":
                continue
            state = f"{chk['count']:>5} flagged" if chk["ran"] else "  not run"
            note = f"  ({chk['note']})" if chk.get("note") else ""
            lines.append(f"{name:<18}{state}   threshold: {chk['threshold']}{note}")
        skipped = [n for n in NEEDS_WEIGHTS if n in self.checks and not self.checks[n]["ran"]]
        if skipped or not self.settings.get("features"):
            lines.append("needed backbone weights: " + ", ".join(skipped + ["the feature check of near duplicates"]))
        if self.review:
            lines.append(f"applied   {self.review.get('excluded', 0)} excluded, {self.review.get('relabelled', 0)} relabelled")
        for li in self.label_issues[:10]:
            lines.append(f"  label?  {li['path']}: given {li['given']}, suggested {li['suggested']} "
                         f"({li['confidence']:.0%})")
        if len(self.label_issues) > 10:
            lines.append(f"  ... and {len(self.label_issues) - 10} more suspected mislabels (see issues.csv)")
        return "\n".join(lines)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Audit":
        """An audit written by :meth:`save` (its ``audit.json``), without figures to draw."""
        import json

        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(root=d["root"], class_names=d["class_names"], layout=d["layout"], groups=d["groups"],
                   label_issues=d["label_issues"], outliers=d["outliers"], checks=d["checks"],
                   leaks={"validation": d["counts"]["leaked_validation_images"],
                          "test": d["counts"]["leaked_test_images"]},
                   settings=d["settings"], review=d.get("review") or {}, seconds=d["seconds"],
                   figures=d.get("figures") or {})


def backbone_features(ds, model: str = "mobilenet_v2", *, weights="imagenet", alpha=None, progress: bool = True):
    """``(features of every row of ds.decoded(), weights file)``: pooled frozen-backbone
    features, computed once and cached in the imgclf cache."""
    spec = get_spec(model)
    if not spec.is_transfer:
        raise ConfigError(f"model {model!r} has no pretrained backbone; the audit needs a transfer model "
                          "(e.g. mobilenet_v2)")
    if weights is None:
        raise ConfigError("no backbone weights (--weights none): features of a random backbone say nothing")
    built = build_model(model, ds.num_classes, ds.image_size[0], weights=weights, alpha=alpha, augment=None)
    plain, _ = extract_features(built, ds, ds.image_size[0], views=1, seed=ds.seed,
                                folder=ds.cache / "features", progress=progress)
    return plain, built.weights_path


def audit(ds, *, model: str = "mobilenet_v2", weights="imagenet", alpha: float | None = None,
          folds: int = FOLDS, output: str | os.PathLike | None = None, progress: bool = True) -> Audit:
    """Audit ``ds`` (an :class:`~imgclf.data.ImageDataset`). Without usable weights, the
    checks on the scan's pixels still run and ``checks`` says which needed weights. With
    ``output``, write ``audit.json``, ``issues.csv`` and the figures there."""
    start = time.perf_counter()
    records = ds._rows
    split_of = {r.path: s for s in SPLITS for r in ds.splits[s]}
    rows = np.array(sorted(int(i) for s in SPLITS for i in ds.indices(s)), np.int64)
    result = Audit(root=str(ds.root), class_names=list(ds.class_names), layout=ds.source.layout, _dataset=ds,
                   review=ds.review.to_dict() if ds.review else {})
    features, why = None, None
    weights_file = None
    try:
        features, weights_file = backbone_features(ds, model, weights=weights, alpha=alpha, progress=progress)
    except ImgclfError as e:
        why = f"no features: {e}"
    decoded = ds.decoded() if features is not None else None

    groups, thr = find_groups(records, split_of, features, decoded)
    result.groups, result.leaks = groups, leak_counts(groups)
    near = sum(not g["exact"] for g in groups)
    near_threshold = (f"hash within {thr['candidate_bits']} bits and feature cosine >= {thr['cosine']} "
                      f"(>= {thr['close_hash']['cosine']} within {thr['close_hash']['bits']} bits)"
                      if features is not None else f"hash within {thr['candidate_bits']} bits (no features to confirm)")
    checks = {"near_duplicates": {"ran": True, "count": near, "threshold": near_threshold,
                                  "note": None if features is not None else
                                  "not confirmed by features: only the closest copies are found"}}
    paths = [records[i].path for i in rows]
    names = [records[i].label for i in rows]
    if features is not None:
        try:
            result.label_issues, info = label_issues(features[rows], ds.row_labels()[rows], paths, ds.class_names,
                                                     folds=folds, seed=ds.seed)
            checks["label"] = {"ran": True, "count": len(result.label_issues),
                               "threshold": "cleanlab confident learning, out-of-fold", "note": None, **info}
        except ConfigError as e:
            checks["label"] = {"ran": False, "count": 0, "threshold": "cleanlab confident learning, out-of-fold",
                               "note": str(e)}
        outliers, info = feature_outliers(features[rows], paths, names)
        checks["outlier"] = {"ran": True, "count": len(outliers), "threshold": THRESHOLDS["outlier"]
                             + (f" (score < {info['threshold']:.3g})" if info.get("threshold") is not None else ""), "note": None}
    else:
        outliers = []
        checks["label"] = {"ran": False, "count": 0, "threshold": "cleanlab confident learning, out-of-fold", "note": why}
        checks["outlier"] = {"ran": False, "count": 0, "threshold": THRESHOLDS["outlier"], "note": why}
    quality = pixel_checks([records[i] for i in rows])
    for name in ("low_information", "dark", "bright", "blurry", "extreme_aspect", "tiny"):
        checks[name] = {"ran": True, "count": sum(q["issue"] == name for q in quality),
                        "threshold": THRESHOLDS[name], "note": None}
    result.outliers = outliers + quality
    result.checks = checks
    result.settings = {"model": model, "weights": weights_file, "alpha": alpha, "folds": folds,
                       "image_size": list(ds.image_size), "images": int(len(rows)), "features": features is not None}
    result.seconds = time.perf_counter() - start
    if output is not None:
        result.save(output)
    return result


__all__ = ["Audit", "audit", "backbone_features"]
