"""The Bases view of every run: `Results/Steering runs.base`, a file of Obsidian's core Bases
plugin (https://help.obsidian.md/bases/syntax) listing every result note, `type: actadd-result`.

Its table groups the runs by spec and shows the verdict, the confirmed difference with its CI
and the fluency cost; its cards show each run's heatmap (the result note's `heatmap` property,
a wikilink to the PNG: the Cards view's "image property", help.obsidian.md/bases/views/cards).
View settings that the documentation describes but does not spell out in YAML (`sort`, and the
cards' `image`, `imageFit`, `imageAspectRatio`) are written the way Obsidian writes them.

The file is created once, when missing, with the vault layer's exclusive create (confined to the
vault, never in `.obsidian/`), and never rewritten: the user may have changed it. The example
vault ships the same text in `vault_example/Results/` (a test keeps the two equal), so the demo
run finds it there and leaves it alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from actadd_notes.errors import VaultError
from actadd_notes.vault.notes import create_note_if_missing

if TYPE_CHECKING:
    from actadd_notes.vault.config import VaultConfig

__all__ = ["RUNS_VIEW", "RUNS_VIEW_TEXT", "ensure_runs_view", "runs_view_embed", "runs_view_path"]

RUNS_VIEW = "Steering runs.base"

RUNS_VIEW_TEXT = """\
# Every steering run in this vault: one row per result note (type: actadd-result).
# actadd-notes writes this file only when it is missing and never rewrites it, so change
# the views here or in Obsidian as you like; delete the file to get this version back.
filters:
  and:
    - 'note.type == "actadd-result"'
formulas:
  # How much of the difference seen on the search seeds did not hold up on fresh seeds.
  shrinkage: >-
    if(note.confirmed_difference.isEmpty(), "", (note.search_difference - note.confirmed_difference).round(4))
properties:
  file.name:
    displayName: Run
  note.spec:
    displayName: Spec
  note.model:
    displayName: Model
  note.method:
    displayName: Method
  note.best_layer:
    displayName: Layer
  note.best_coeff:
    displayName: Coeff
  note.effect:
    displayName: Verdict
  note.scope:
    displayName: Scope
  note.prompts:
    displayName: Prompts
  note.versus_prompting:
    displayName: vs prompting
  note.confirmed_difference:
    displayName: Δ confirmed
  note.confirmed_ci_low:
    displayName: CI low
  note.confirmed_ci_high:
    displayName: CI high
  formula.shrinkage:
    displayName: Shrinkage
  note.perplexity_ratio:
    displayName: Perplexity ratio
  note.date:
    displayName: Date
  note.heatmap:
    displayName: Heatmap
views:
  - type: table
    name: Runs by spec
    groupBy:
      property: note.spec
      direction: ASC
    order:
      - file.name
      - note.spec
      - note.model
      - note.method
      - note.best_layer
      - note.best_coeff
      - note.effect
      - note.scope
      - note.prompts
      - note.confirmed_difference
      - note.confirmed_ci_low
      - note.confirmed_ci_high
      - formula.shrinkage
      - note.perplexity_ratio
      - note.versus_prompting
      - note.date
    sort:
      - property: note.date
        direction: DESC
  - type: cards
    name: Heatmaps
    image: note.heatmap
    imageFit: contain
    imageAspectRatio: 0.75
    order:
      - file.name
      - note.spec
      - note.effect
      - note.best_layer
      - note.best_coeff
      - note.confirmed_difference
    sort:
      - property: note.date
        direction: DESC
"""

_LINK_BREAKERS = re.compile(r"[\[\]|#^]")


def runs_view_path(config: VaultConfig) -> Path:
    """Where the view lives: `{results_folder}/Steering runs.base`."""
    return config.path(config.results_folder, RUNS_VIEW)


def ensure_runs_view(config: VaultConfig) -> Path:
    """Create the view if it is missing; an existing file, edited or not, is left as it is."""
    path = runs_view_path(config)
    create_note_if_missing(path, RUNS_VIEW_TEXT, vault=config.root, config_folder=config.config_folder)
    return path


def runs_view_embed(config: VaultConfig) -> str:
    """`![[Results/Steering runs.base]]`: the embed that shows the view's first view (the table)
    inside a note. VaultError if the results folder's name would break the link."""
    relative = runs_view_path(config).relative_to(config.root).as_posix()
    if _LINK_BREAKERS.search(relative):
        raise VaultError(f"{relative}: a folder name with [ ] | # or ^ cannot be embedded in a note", path=relative)
    return f"![[{relative}]]"
