"""Run an experiment spec on a `SteerableLM`: search, select, confirm, control, decide.

Scientific ground rules, enforced here rather than left to the user:
* every stage carries a sampling-matched baseline: the same prompts, seeds and sampling, no
  steering, so steered rows and their baseline share random numbers;
* every metric comes with a 95% CI and its difference to the baseline;
* a fluency guard rejects settings whose perplexity (under the unsteered model) exceeds
  `max_perplexity_ratio` × the baseline's: degenerate text cannot win;
* many settings tried means many tests: the search's p-values are Holm-adjusted over all of them;
* the search's winner is generated again on fresh seeds with a fresh baseline, a
  random-direction control and a prompting baseline — on prompts the search never saw when there
  are enough of them (design.py) — and the verdict (`verdict.decide`) rests on that confirmation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from actadd_notes.errors import note_context
from actadd_notes.experiments.additions import Additions, control_seed
from actadd_notes.experiments.confirmation import summarise_confirmation
from actadd_notes.experiments.design import PromptSplit, prompting_text, split_prompts
from actadd_notes.experiments.diagnostics import reproducibility, vector_diagnostics
from actadd_notes.experiments.evaluator import Evaluator, Progress, ProgressCallback, text_metrics
from actadd_notes.experiments.metrics import Metric, Objective
from actadd_notes.experiments.preload import import_in_background, modules_for
from actadd_notes.experiments.report import findings
from actadd_notes.experiments.results import CONFIRMATION, SEARCH, Confirmation, ExperimentResult, Setting, pick_best
from actadd_notes.experiments.rows import Executor, LocalExecutor
from actadd_notes.experiments.search import run_bayes, run_grid
from actadd_notes.experiments.spec import (
    ExperimentSpec,
    check_layers,
    check_lengths,
    check_steering_lengths,
    check_work,
    estimate_work,
    steering_texts,
)
from actadd_notes.experiments.stats import holm
from actadd_notes.experiments.verdict import decide
from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.vectors import ActAdd, SteeringVector


def run_experiment(
    spec: ExperimentSpec,
    lm: SteerableLM,
    *,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    provenance: dict[str, Any] | None = None,
    note: str | None = None,
    executor: Executor | None = None,
) -> ExperimentResult:
    """Run `spec` (grid or bayes) with its baselines and confirmation; `progress(done, total, stage)` follows it.

    `executor` generates the rows (default: `lm`, here); every other step runs in this process."""
    import_in_background(modules_for(spec, lm.device))  # ready when the generations are done
    spec = steerable_file_layers(spec, lm)
    check_layers(spec, lm.num_layers, lm.short_name, note=note)
    spec = first_tokens(spec, lm)
    context = _context_length(lm)
    texts = [(key, len(lm.encode(text).ids)) for key, text in steering_texts(spec)]
    check_steering_lengths(spec, texts, context, note=note)
    check_lengths(spec, [len(lm.encode(p, chat=spec.chat).ids) for p in spec.prompts], context, note=note)
    if spec.prompt_baseline:
        worded = [prompting_text(spec.prompt_baseline, p) for p in spec.prompts]
        lengths = [len(lm.encode(p, chat=spec.chat).ids) for p in worded]
        check_lengths(spec, lengths, context, note=note, key="prompt_baseline")
    split = split_prompts(len(spec.prompts), spec.seed, spec.confirm_prompts)
    estimate = estimate_work(spec)
    check_work(spec, estimate, note=note)
    started = time.perf_counter()
    objective = Objective(spec.objective, spec.direction)
    tracker = Progress(estimate.generations, progress, cancelled)
    metrics = text_metrics(spec)
    additions = Additions(spec, lm)
    with note_context(note) if note else nullcontext():
        additions.check_fits()
    rows = (executor or LocalExecutor()).runner(spec, lm, additions)
    search = Evaluator(
        spec, lm, objective, stage=SEARCH, progress=tracker, metrics=metrics, additions=additions,
        prompts=split.search, rows=rows,
    )  # fmt: skip
    trials: list[dict[str, Any]] = []
    trials_to_best, study = None, None
    if spec.search == "bayes":
        settings, trials, trials_to_best, study = run_bayes(spec, search, objective)
    else:
        settings = run_grid(spec, search)
    for setting, adjusted in zip(settings, holm([s.differences[objective.column].p_value for s in settings])):
        setting.p_holm = adjusted
    best = pick_best(settings, objective)
    confirmation, confirming = None, None
    confirming_since = time.perf_counter()
    if spec.confirm and best is not None:
        confirmation, confirming = _confirm(spec, lm, objective, best.setting, search, tracker, metrics, split)
    timing = {"confirmation_wall_time_s": round(time.perf_counter() - confirming_since, 2)} if confirmation else {}
    engine = {**search.record, **(confirming.record if confirming else {})}
    assert search.baseline is not None
    result = ExperimentResult(
        spec=spec,
        objective=objective,
        baseline=search.baseline,
        settings=settings,
        samples=search.samples + (confirming.samples if confirming else []),
        best=best,
        confirmation=confirmation,
        verdict=decide(objective, best, confirmation, settings_tested=len(settings)),
        vectors=_vectors(spec, additions, best.setting if best else None, split.confirmation[0]),
        trials=trials,
        trials_to_best=trials_to_best,
        study=study,
        split=split,
    )
    layers = sorted({s.setting.layer for s in settings if s.setting.layer is not None})
    result.diagnostics = vector_diagnostics(spec, lm, additions, layers, best.setting if best else None)
    extra = {**(provenance or {}), **engine, **timing}
    result.reproducibility = reproducibility(spec, lm, time.perf_counter() - started, extra)
    result.findings = findings(result)
    return result


def _confirm(
    spec: ExperimentSpec,
    lm: SteerableLM,
    objective: Objective,
    best: Setting,
    search: Evaluator,
    tracker: Progress,
    metrics: list[Metric],
    split: PromptSplit,
) -> tuple[Confirmation, Evaluator]:
    """The best setting, a fresh baseline, the random-direction control and the prompting baseline on
    seeds the search never used, and on the split's confirmation prompts."""
    stage = Evaluator(
        spec, lm, objective, stage=CONFIRMATION, first_sample=spec.samples, samples=spec.confirmation_samples,
        progress=tracker, metrics=metrics, additions=search.additions, prompts=split.confirmation, rows=search.rows,
    )  # fmt: skip
    if stage.seeds & search.seeds:  # impossible by construction (rows.row_seed): a bug if it happens
        raise AssertionError("confirmation seeds overlap the search's")
    assert best.layer is not None
    control = Setting(best.layer, best.coeff, control=True, offset=best.offset)
    arms = [best, control] + ([Setting(prompting=True)] if spec.prompt_baseline else [])
    confirmed = stage.evaluate(arms)
    assert stage.baseline is not None
    named = {"baseline": Setting(), "best": best, "control": control}
    if spec.prompt_baseline:
        named["prompting"] = arms[2]
    confirmation = summarise_confirmation(
        objective,
        baseline=stage.baseline,
        best=confirmed[0],
        control=confirmed[1],
        prompting=confirmed[2] if spec.prompt_baseline else None,
        scores={name: stage.scores_of(setting, objective.column) for name, setting in named.items()},
        prompts=split.confirmation,
        design=split.design,
        samples=stage.samples_per_prompt,
        control_seed=control_seed(spec.seed, best.layer, split.confirmation[0], spec.samples),
    )
    return confirmation, stage


def steerable_file_layers(spec: ExperimentSpec, lm: SteerableLM) -> ExperimentSpec:
    """A vector file's grid without the layer past the model's last block: llama.cpp's cvector-generator
    writes a direction for the last block's output, which reaches no block input of ours."""
    if spec.vector_file is None or spec.search != "grid" or lm.num_layers not in spec.layers:
        return spec
    kept = tuple(layer for layer in spec.layers if layer != lm.num_layers)
    return replace(spec, layers=kept) if kept else spec


def first_tokens(spec: ExperimentSpec, lm: SteerableLM) -> ExperimentSpec:
    """The spec with each prompt cut to its first `prompt_tokens` tokens (how the paper made prompts of
    reviews); unchanged without the key."""
    if spec.prompt_tokens is None:
        return spec
    cut = []
    for prompt in spec.prompts:
        ids = lm.tokenizer.encode(prompt, add_special_tokens=False)
        cut.append(lm.tokenizer.decode(ids[: spec.prompt_tokens]) if len(ids) > spec.prompt_tokens else prompt)
    return replace(spec, prompts=tuple(cut))


def _vectors(
    spec: ExperimentSpec, additions: Additions, best: Setting | None, first_confirmed: int
) -> dict[str, SteeringVector]:
    """The unscaled vectors of the best setting, its control and the extra additions, on the CPU
    (with `align`, the placement of the first confirmation prompt)."""
    if best is None or best.layer is None:
        return {}
    offset = additions.start(first_confirmed) + best.offset
    vectors = {f"vector-L{best.layer}": additions.vector(best.layer, offset)}
    if spec.confirm:  # the first control row's
        vectors["control"] = additions.control(best.layer, offset, first_confirmed, spec.samples)
    for number, addition in enumerate(spec.extra_additions, 1):
        extra = ActAdd(addition.add, addition.sub, addition.layer, 1.0, spec.pad_token)
        vectors[f"vector-extra{number}-L{addition.layer}"] = additions.lm.steering_vector(extra)
    return {name: replace(vector, vector=vector.vector.detach().to("cpu")) for name, vector in vectors.items()}


def _context_length(lm: SteerableLM) -> int | None:
    """The longest sequence the model was built for, where its config says so."""
    config = lm.model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
