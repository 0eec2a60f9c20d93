"""The blog's augmentation previews: one image, eight random augmentations, a 3x3 grid each
for flipping, rotating and the whole stack."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np

from . import figures
from .models import AugmentConfig, build_augmentation


def augment_preview(ds, output: str | os.PathLike, *, augment="flip=horizontal,rotation=0.2",
                    seed: int = 42, split: str = "train") -> list[Path]:
    """Write ``augment_flip.png``, ``augment_rotation.png`` and ``augment_stack.png``."""
    cfg = augment if isinstance(augment, AugmentConfig) else AugmentConfig.parse(augment or "none")
    records = ds.records(split)
    pick = random.Random(seed).randrange(len(records))
    image = np.asarray(ds.decoded()[ds.indices(split)[pick]])
    off = {f.name: (None if f.name == "flip" else 0.0) for f in dataclasses.fields(AugmentConfig)}
    variants = [("flip", AugmentConfig(**{**off, "flip": cfg.flip or "horizontal"})),
                ("rotation", AugmentConfig(**{**off, "rotation": cfg.rotation or 0.2})),
                ("stack", cfg)]
    out = Path(output)
    paths = []
    for name, variant in variants:
        layer = build_augmentation(variant, seed=seed)
        batch = np.repeat(image[None].astype(np.float32), 8, axis=0)
        augmented = np.asarray(layer(batch, training=True)) if layer is not None else batch
        images = [image] + [np.clip(a, 0, 255).astype(np.uint8) for a in augmented]
        fig = figures.augmentation_grid(images, title=f"augmentation: {name} ({variant})")
        paths.append(figures.save(fig, out / f"augment_{name}.png"))
    return paths
