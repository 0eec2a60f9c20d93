"""The requirements of imgclf on one Keras backend without TensorFlow, one a line (for .ci/run).

    python .ci/backend_deps.py jax|torch

imgclf's dependencies and the backend's extra from pyproject.toml, with tensorflow and what
needs it (tf2onnx, LiteRT) left out, plus the test tools that run without a browser.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

NEEDS_TENSORFLOW = ("tensorflow", "tf2onnx", "ai-edge-litert")


def name_of(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower()


def main(backend: str) -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras[backend], *extras["export"], *extras["serve"],
              *(r for r in extras["dev"] if name_of(r) != "playwright")]
    for requirement in wanted:
        if name_of(requirement) not in NEEDS_TENSORFLOW:
            print(requirement)


if __name__ == "__main__":
    main(sys.argv[1])
