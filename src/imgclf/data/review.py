"""Reviewed lists: leave files out (``--exclude``) or give them another class (``--relabel``)
without touching them.

A list is either the ``issues.csv`` that ``imgclf audit`` writes, its ``action`` column filled
in by a person (``keep``, ``drop`` or ``relabel:CLASS``; empty means keep), or a plain text
file: one path per line for ``--exclude``, ``path<TAB>CLASS`` or ``path,CLASS`` per line for
``--relabel``. Paths are relative to the data root (as the audit writes them) or absolute
under it; lines starting with ``#`` are comments. The scan's records change in memory only; the run folder
keeps a copy of what was applied (:meth:`Review.save`).
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import io
from ..errors import ConfigError, DataError
from .scan import ScanReport

ACTIONS = ("keep", "drop", "relabel:CLASS")


@dataclass
class Review:
    """What a reviewed list changed: files left out, files given another class."""

    excluded: list[str] = field(default_factory=list)  # relative paths
    relabelled: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (from, to)
    sources: dict[str, str] = field(default_factory=dict)  # "exclude"/"relabel" -> the list given

    def __bool__(self) -> bool:
        return bool(self.excluded or self.relabelled or self.sources)

    def to_dict(self) -> dict:
        return {"exclude": self.sources.get("exclude"), "relabel": self.sources.get("relabel"),
                "excluded": len(self.excluded), "relabelled": len(self.relabelled)}

    def save(self, folder: str | os.PathLike) -> dict[str, str]:
        """Write what was applied to ``folder`` (``exclude.txt``, ``relabel.csv``), in the forms
        :func:`apply_review` reads back; returns ``{kind: path}``."""
        folder = Path(folder)
        out = {}
        if "exclude" in self.sources:
            out["exclude"] = str(io.write_text(folder / "exclude.txt", "".join(f"{p}\n" for p in self.excluded)))
        if "relabel" in self.sources:
            buf = _io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["path", "given_label", "action"])
            for p, (old, new) in self.relabelled.items():
                w.writerow([p, old, f"relabel:{new}"])
            out["relabel"] = str(io.write_text(folder / "relabel.csv", buf.getvalue()))
        return out


def _rows(path: Path, with_class: bool) -> tuple[bool, list[tuple[int, str, str | None]]]:
    """``(is a CSV, [(line number, path, action (CSV) or class (plain list)), ...])``."""
    if not path.is_file():
        raise ConfigError(f"reviewed list {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read reviewed list {path} ({e}); give a CSV or a text file of paths") from None
    lines = text.splitlines()
    first = lines[0].lower() if lines else ""
    if "path" in first.replace(" ", "").split(",") or first.startswith("path,"):
        reader = csv.DictReader(_io.StringIO(text))
        if "path" not in (reader.fieldnames or []):
            raise ConfigError(f"{path}: the CSV has no 'path' column")
        return True, [(n, (row.get("path") or "").strip(), (row.get("action") or "").strip() or None)
                      for n, row in enumerate(reader, 2) if (row.get("path") or "").strip()]
    out = []
    for n, line in enumerate(lines, 1):
        line = "" if line.lstrip().startswith("#") else line.strip()
        if not line:
            continue
        sep = ("\t" if "\t" in line else ("," if "," in line else None)) if with_class else None
        if sep:
            p, _, cls = line.rpartition(sep)
            out.append((n, p.strip(), cls.strip()))
        else:
            out.append((n, line, None))
    return False, out


def _relative(p: str, root: Path) -> str:
    if os.path.isabs(p):
        try:
            return Path(p).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return p
    return p.replace(os.sep, "/").removeprefix("./")


def apply_review(report: ScanReport, exclude=None, relabel=None) -> Review:
    """Mark the files ``exclude`` names as excluded and give those ``relabel`` names their new
    class, in ``report``'s records (in memory). Raises :class:`ConfigError` on a list naming
    an unknown file, an unknown class or an unknown action."""
    review = Review()
    if exclude is None and relabel is None:
        return review
    index = {r.path: i for i, r in enumerate(report.records)}
    classes = set(report.class_names)
    drop: dict[str, None] = {}
    moves: dict[str, str] = {}
    unread = 0  # rows naming files of class folders the scan did not read (--classes)
    for kind, given in (("exclude", exclude), ("relabel", relabel)):
        if given is None:
            continue
        path = Path(given)
        review.sources[kind] = str(path)
        is_csv, rows = _rows(path, kind == "relabel")
        for n, p, action in rows:
            rel = _relative(p, report.root)
            where = f"{path}:{n}"
            if rel not in index:
                if (report.root / rel).is_file():
                    unread += 1
                    continue
                raise ConfigError(f"{where} names {p!r}, which is not an image of {report.root}; "
                                  "paths are relative to the data folder, as `imgclf audit` writes them")
            if is_csv:
                if action is None or action in ("keep", "drop"):
                    target = None
                elif action.startswith("relabel:"):
                    target = action.split(":", 1)[1].strip()
                else:
                    raise ConfigError(f"{where}: unknown action {action!r}; use one of: {', '.join(ACTIONS)} "
                                      "(or leave it empty)")
                if kind == "exclude" and action == "drop":
                    drop[rel] = None
            else:
                target = action
                if kind == "exclude":
                    drop[rel] = None
                elif target is None:
                    raise ConfigError(f"{where}: no class for {p!r}; write 'path,CLASS' per line "
                                      "(or give the audit's issues.csv with relabel:CLASS actions)")
            if target is not None and target not in classes:
                raise ConfigError(f"{where}: unknown class {target!r}; the classes are: "
                                  f"{', '.join(report.class_names)}")
            if kind == "relabel" and target is not None:
                moves[rel] = target
    for rel in drop:
        i = index[rel]
        report.records[i] = dataclasses.replace(report.records[i], excluded=True)
    for rel, target in moves.items():
        i = index[rel]
        r = report.records[i]
        if r.label != target and not r.excluded:
            review.relabelled[rel] = (r.label, target)
            report.records[i] = dataclasses.replace(r, label=target)
    review.excluded = list(drop)
    if unread:
        report.warnings.append(f"{unread} row(s) of the reviewed lists name files of classes not read "
                               "(see --classes); they are left as they are")
    if review.excluded and not report.valid:
        raise DataError(f"the reviewed list {review.sources.get('exclude')} excludes every image of {report.root}")
    return review
