"""Which epoch of a stage the saved model comes from: the best on validation, or the last.

``keep="best"`` (the default, as Keras' ``restore_best_weights`` and Ultralytics' ``best.pt``)
ends each stage with the weights of its epoch of highest validation accuracy (lower
validation loss breaks a tie); ``keep="last"`` ends it with the last epoch's. The choice uses
the validation split only. A multi-worker run keeps the last epochs (every worker must hold
the same weights).

The best epoch so far of each stage survives a kill: its checkpoint is a second name (a
hard link, or a copy where links cannot be made) of that epoch's checkpoint, made before the
state that names it is written, so ``checkpoints/state.json`` never names a file that is not
there. ``state["best"]`` is ``{stage: {"epoch", "val_accuracy", "val_loss", "checkpoint"}}``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..io import TMP_PREFIX

KEEP = ("best", "last")
PREFIX = "best-"


def better(row: dict, best: dict | None) -> bool:
    """Whether an epoch's history ``row`` beats the stage's ``best`` so far on validation."""
    acc = row.get("val_accuracy")
    if acc is None:
        return False
    if best is None:
        return True
    if acc != best["val_accuracy"]:
        return acc > best["val_accuracy"]
    loss, best_loss = row.get("val_loss"), best.get("val_loss")
    return loss is not None and best_loss is not None and loss < best_loss


def best_of(rows: list[dict]) -> dict | None:
    """The history row of the best validation epoch among ``rows`` (by :func:`better`), or ``None``."""
    best = None
    for r in rows:
        if better(r, best):
            best = r
    return best


def remember(folder: Path, checkpoint: str, row: dict, stage: str, bests: dict) -> bool:
    """Record the epoch of ``row`` (whose checkpoint is ``folder / checkpoint``) as the best of
    ``stage`` in ``bests`` when it is; ``True`` if it was."""
    if not better(row, bests.get(stage)):
        return False
    name = f"{PREFIX}{stage}-{row['epoch']:04d}.keras"
    target = folder / name
    # linked again even when it exists: one a killed attempt at this epoch left is stale
    tmp = folder / f"{TMP_PREFIX}{name}"  # removed by io.remove_partial if a kill leaves it
    tmp.unlink(missing_ok=True)
    try:
        os.link(folder / checkpoint, tmp)
    except OSError:  # no hard links on this file system: a copy
        shutil.copyfile(folder / checkpoint, tmp)
    os.replace(tmp, target)
    bests[stage] = {"epoch": row["epoch"], "val_accuracy": row["val_accuracy"], "val_loss": row.get("val_loss"),
                    "checkpoint": name}
    return True


def forget_others(folder: Path, bests: dict) -> None:
    """Remove best checkpoints the state no longer names (after the state is written)."""
    named = {b["checkpoint"] for b in bests.values()}
    for old in folder.glob(f"{PREFIX}*.keras"):
        if old.name not in named:
            old.unlink(missing_ok=True)


def best_checkpoint(folder: Path, bests: dict, stage: str | None) -> Path | None:
    """The best checkpoint of ``stage``, if one was recorded and is there."""
    best = bests.get(stage) if stage else None
    if not best:
        return None
    path = folder / best["checkpoint"]
    return path if path.is_file() else None


def kept_epochs(rows: list[dict], bests: dict, keep: str) -> dict[str, int]:
    """``{stage: epoch}``: the epoch whose weights each stage ended with."""
    out: dict[str, int] = {}
    for r in rows:
        out[r["stage"]] = r["epoch"]  # the last epoch of each stage ...
    if keep == "best":
        for stage, best in bests.items():
            if stage in out:
                out[stage] = best["epoch"]  # ... unless an earlier one was better
    return out
