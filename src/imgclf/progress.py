"""Progress bars: live on a terminal, silent in logs and pipes."""

from __future__ import annotations

import sys


def bar(total: int | None, desc: str, enabled: bool = True, unit: str = "img"):
    from tqdm.auto import tqdm

    live = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not live, leave=False, unit_scale=unit == "B")
