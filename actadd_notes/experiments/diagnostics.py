"""What a run records about its vectors and its machine: per-position norms of every vector used
against the residual stream's typical norm, and the reproducibility record."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

from actadd_notes.experiments.additions import Additions, ResidualNorms
from actadd_notes.experiments.results import Setting
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.vectors import ActAdd, SteeringVector


def vector_diagnostics(
    spec: ExperimentSpec, lm: SteerableLM, additions: Additions, layers: Sequence[int], best: Setting | None
) -> list[dict[str, Any]]:
    """Per-position norms of each vector used, against the residual norm typical at its layer.

    Models often carry huge activations at the first position and at lone pad tokens; those
    positions then dominate a vector, and a researcher has to see it. With mean_difference, each
    row also says how well the pairs agree (mean cosine of each pair's difference to the mean)."""
    norms = additions.norms()
    rows = [{**_norm_row(lm, additions.vector(layer), norms, layer), "kind": "steering"} for layer in layers]
    if spec.method == "mean_difference":
        for row, layer in zip(rows, layers, strict=True):
            row["pairs"] = len(spec.pairs)
            row["pair_agreement"] = round(additions.pairs().agreement(layer), 4)
    for addition in spec.extra_additions:
        extra = lm.steering_vector(ActAdd(addition.add, addition.sub, addition.layer, 1.0, spec.pad_token))
        rows.append({**_norm_row(lm, extra, norms, addition.layer), "kind": "extra"})
    if spec.confirm and best is not None and best.layer is not None:
        control = additions.control(best.layer, 0, 0, spec.samples)  # every row's direction has these norms
        rows.append({**_norm_row(lm, control, norms, best.layer), "kind": "control"})
    return rows


def _norm_row(lm: SteerableLM, vector: SteeringVector, norms: ResidualNorms, layer: int) -> dict[str, Any]:
    return {
        "prompt_add": vector.prompt_add,
        "prompt_sub": vector.prompt_sub,
        "layer": layer,
        "tokens_add": _readable_tokens(lm, vector.add_ids),
        "tokens_sub": _readable_tokens(lm, vector.sub_ids),
        "vector_norms": [round(float(x), 2) for x in vector.vector[vector.offset :].float().norm(dim=-1)],
        "residual_norm_first_position": round(norms.first[layer], 2),
        "residual_norm_typical": round(norms.typical[layer], 2),
    }


def _readable_tokens(lm: SteerableLM, ids: Sequence[int]) -> list[str]:
    """Each token as text, a space shown as ␣ (a lone pad token is otherwise invisible)."""
    return [lm.tokenizer.decode([i]).replace(" ", "␣") or repr(i) for i in ids]


def reproducibility(spec: ExperimentSpec, lm: SteerableLM, wall_time: float, extra: dict[str, Any]) -> dict[str, Any]:
    """What a re-run needs to reproduce the note's numbers: seeds, versions, device, model."""
    record = {
        "seed": spec.seed,
        "spec_hash": spec.spec_hash(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **lm.provenance(),
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "layers": lm.num_layers,
        "wall_time_s": round(wall_time, 2),
        **_prompt_record(spec),
        **extra,
    }
    return {key: value for key, value in record.items() if value not in ("", None)}


def _prompt_record(spec: ExperimentSpec) -> dict[str, Any]:
    """Which rows of which source the prompts are, and how they were split: what a re-run must read again."""
    record: dict[str, Any] = {"confirm_prompts": spec.confirm_prompts}
    source = spec.prompt_source
    if source is not None:
        record |= {
            "prompt_source": source.description,
            "prompt_source_hash": source.source_hash,
            "prompt_rows": id_ranges(source.row_ids),
        }
    return record


def id_ranges(ids: Sequence[int]) -> str:
    """Row ids as runs: `0–39` or `3, 7–9, 15` (sorted, as a draw keeps them)."""
    runs: list[list[int]] = []
    for row in ids:
        if runs and row == runs[-1][1] + 1:
            runs[-1][1] = row
        else:
            runs.append([row, row])
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in runs)
