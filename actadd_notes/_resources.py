"""Where the files shipped beside the code live: inside the wheel, or in a source checkout."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_dir(name: str) -> Path:
    """The shipped folder `name` (`templates`, `vault_example`).

    A wheel force-includes it inside the package; an editable install or a source
    checkout has it at the repository root, next to the package.
    """
    inside = Path(str(files("actadd_notes") / name))
    if inside.is_dir():
        return inside
    return Path(__file__).resolve().parent.parent / name
