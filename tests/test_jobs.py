"""JobRunner: one spec note end to end, on a copy of the example vault with a tiny local model.

The model is the real `load_model` reading a tiny random Llama saved with `save_pretrained`;
the Zotero source is the vault's bundled Better BibTeX export. The clock is fixed, so the
journal note is `Journal/2025-03-04.md` whatever the day.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from tiny import tiny_threads
from vaults import (
    KONEN,
    QUICK,
    SLOW,
    TURNER,
    USER_TEXT,
    body,
    example_vault,
    experiment_lines,
    journal_lines,
    props,
    result_notes,
    tiny_model_dir,
    wait_for,
    write_spec,
)

from actadd_notes.errors import ModelError, SpecError, VaultError
from actadd_notes.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobRunner, ModelSlot
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note, update_note

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2025, 3, 4, 10, 30, 15)
JOURNAL = "Journal/2025-03-04.md"


@pytest.fixture
def runner(example_vault) -> JobRunner:
    return JobRunner(VaultConfig.load(example_vault), models=ModelSlot(device="cpu"), clock=lambda: NOW)


def test_a_run_goes_running_then_done_and_writes_its_properties(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir)
    before = Note.read(spec)
    seen = []

    def progress(done, total, stage):
        if not seen:
            seen.append(props(spec))

    outcome = runner.run(spec, progress=progress)

    assert outcome.status == DONE, outcome.error
    running = seen[0]
    assert running["status"] == RUNNING
    assert running["started"] == NOW
    assert running["progress"] == "0%"
    assert str(running["run_id"]).startswith("20250304-103015-")
    done = props(spec)
    assert done["status"] == DONE
    assert done["progress"] == "100%"
    assert done["run_id"] == running["run_id"]
    assert done["started"] == done["finished"] == NOW
    assert done["result"] == f"[[Results/love {done['run_id']}]]"
    assert done["best_layer"] in QUICK["layer"] and done["best_coeff"] in QUICK["coeff"]
    assert "error" not in done
    assert outcome.result_note == example_vault / "Results" / f"love {done['run_id']}.md"
    # the user's words and keys come back as written; the tool's own keys come after them
    assert body(spec) == before.body == USER_TEXT
    user_frontmatter = before.text().split("\n---\n")[0]
    assert spec.read_text().startswith(user_frontmatter.replace("status: queued", "status: done") + "\nrun_id: ")


def test_the_result_note_has_flat_properties_for_dataview(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir)
    outcome = runner.run(spec)

    result = Note.read(outcome.result_note)
    p = result.properties
    run_id = props(spec)["run_id"]
    assert p["type"] == "actadd-result"
    assert p["spec"] == "[[Experiments/love]]"
    assert p["model"] == str(tiny_model_dir)
    assert p["status"] == DONE and p["run_id"] == run_id
    assert (p["best_layer"], p["best_coeff"]) == (props(spec)["best_layer"], props(spec)["best_coeff"])
    assert p["effect"] in ("detected", "not specific", "not detected")
    assert p["method"] == "actadd" and p["settings_tested"] == len(QUICK["layer"]) * len(QUICK["coeff"])
    # typed for Bases: numbers are numbers, the date a datetime
    for key in (
        "baseline_value",
        "search_value",
        "search_difference",
        "confirmed_difference",
        "confirmed_ci_low",
        "confirmed_ci_high",
        "control_difference",
        "control_ci_low",
        "control_ci_high",
        "perplexity_ratio",
    ):
        assert isinstance(p[key], (int, float)) and not isinstance(p[key], bool), key
    assert p["date"] == NOW
    assert p["heatmap"] == f"[[Results/artifacts/love {run_id}/heatmap.png]]"
    assert (example_vault / p["heatmap"][2:-2]).is_file()
    assert list(p["layers"]) == QUICK["layer"] and list(p["coeffs"]) == [float(c) for c in QUICK["coeff"]]
    assert p["samples"] == QUICK["samples"]
    assert list(p["literature"]) == [f"[[@{TURNER}]]"]
    # plots embedded from the run's artifacts folder, which holds them
    folder = example_vault / "Results" / "artifacts" / f"love {run_id}"
    plots = [line[3:-2] for line in result.body.splitlines() if line.startswith("![[")]
    assert plots and all((example_vault / plot).is_file() and plot.endswith(".png") for plot in plots)
    assert {"results.json", "completions.csv", f"vector-L{p['best_layer']}.safetensors"} <= {
        f.name for f in folder.iterdir()
    }
    assert result.region("notes") == ""
    # the journal and the literature note link the run
    target = f"Results/love {run_id}"
    assert len(journal_lines(example_vault)) == 1 and f"[[{target}" in journal_lines(example_vault)[0]
    assert (example_vault / JOURNAL).is_file()
    assert [line for line in experiment_lines(example_vault) if target in line] == experiment_lines(example_vault)
    assert len(experiment_lines(example_vault)) == 1


def test_a_rerun_of_the_same_run_id_rewrites_its_outputs_without_duplicates(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir)
    first = runner.run(spec)
    run_id = props(spec)["run_id"]
    # the user writes into the result note's notes block
    update_note(
        first.result_note, lambda n: n.set_region("notes", "Layer 1 looks best; try c=8 next."), vault=example_vault
    )
    # as after a crash while publishing: the note still says running, with its run id
    update_note(spec, lambda n: n.set("status", RUNNING), vault=example_vault)
    started = props(spec)["started"]

    runner.clock = lambda: NOW + timedelta(hours=1)  # resumed later: the run keeps its start
    again = runner.run(spec)
    assert props(spec)["started"] == started

    assert again.status == DONE
    assert again.result_note == first.result_note
    assert props(spec)["run_id"] == run_id
    assert result_notes(example_vault) == [first.result_note]
    assert [f.name for f in (example_vault / "Results" / "artifacts").iterdir()] == [f"love {run_id}"]
    assert Note.read(first.result_note).region("notes") == "Layer 1 looks best; try c=8 next."
    assert len(journal_lines(example_vault)) == 1
    assert len(experiment_lines(example_vault)) == 1
    assert body(spec) == USER_TEXT


def test_a_run_queued_again_after_it_finished_gets_a_new_run_id(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir)
    runner.run(spec)
    first = props(spec)["run_id"]
    update_note(spec, lambda n: n.set("status", QUEUED), vault=example_vault)
    runner.run(spec)
    assert props(spec)["run_id"] != first
    assert len(result_notes(example_vault)) == 2
    assert len(journal_lines(example_vault)) == 2
    assert len(experiment_lines(example_vault)) == 2


def test_status_cancelled_written_during_the_run_stops_it(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir, work=SLOW)
    stopped = threading.Event()

    def user_cancels():  # another writer, as Obsidian would be
        wait_for(lambda: stopped.is_set() or props(spec).get("status") == RUNNING, 30, "status: running")
        update_note(spec, lambda n: n.set("status", CANCELLED), vault=example_vault)

    user = threading.Thread(target=user_cancels)
    user.start()
    try:
        outcome = runner.run(spec)
    finally:
        stopped.set()
        user.join()

    assert outcome.status == CANCELLED
    done = props(spec)
    assert done["status"] == CANCELLED
    assert done["finished"] == NOW
    assert "progress" not in done and "result" not in done
    assert result_notes(example_vault) == []
    assert journal_lines(example_vault) == []
    assert body(spec) == USER_TEXT


def test_an_interrupted_run_goes_back_to_the_queue(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "love", tiny_model_dir, work=SLOW)
    batches = []

    outcome = runner.run(spec, progress=lambda *args: batches.append(args), interrupted=lambda: len(batches) >= 2)

    assert outcome.status == QUEUED
    assert len(batches) == 2  # stopped at the next batch
    p = props(spec)
    assert p["status"] == QUEUED
    assert not {"run_id", "started", "progress", "finished", "result"} & set(p)
    assert result_notes(example_vault) == []
    assert body(spec) == USER_TEXT


def test_a_citekey_no_source_knows_is_a_warning_and_missing_notes_are_imported(runner, example_vault, tiny_model_dir):
    links = [f"[[@{TURNER}]]", "[[@nobodyKnowsThis2099]]", f"[[@{KONEN}]]"]
    spec = write_spec(example_vault, "love", tiny_model_dir, literature=links)

    outcome = runner.run(spec)

    assert outcome.status == DONE
    assert "nobodyKnowsThis2099" in outcome.summary
    assert not (example_vault / "Literature" / "@nobodyKnowsThis2099.md").exists()
    result = outcome.result_note.read_text()
    assert "⚠ literature nobodyKnowsThis2099" in result  # shown in the result note's outcome
    run_id = props(spec)["run_id"]
    for citekey in (TURNER, KONEN):  # imported from the Better BibTeX export when missing
        assert len(experiment_lines(example_vault, citekey)) == 1
        assert f"Results/love {run_id}" in experiment_lines(example_vault, citekey)[0]


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"samples": "ten"}, "samples", "'ten' is not a whole number"),
        ({"layer": 99}, "layer", "99 — tiny"),
        ({"prompt_add": '""'}, "prompt_add", "empty prompt"),
    ],
)
def test_a_malformed_spec_fails_with_the_note_and_key_in_the_error(
    runner, example_vault, tiny_model_dir, change, key, message
):
    spec = write_spec(example_vault, "bad", tiny_model_dir, **change)

    outcome = runner.run(spec)

    assert outcome.status == FAILED
    assert outcome.error.startswith(f"Experiments/bad.md: {key}: ")
    assert message in outcome.error
    p = props(spec)
    assert p["status"] == FAILED and p["error"] == outcome.error
    note = Note.read(spec)
    assert note.body.startswith(USER_TEXT)  # the user's text, then the tool's callout
    callout = note.region("actadd-error")
    assert callout.startswith("> [!error]") and f"{key}: " in callout
    assert result_notes(example_vault) == []


def test_a_fixed_spec_runs_and_clears_the_error(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "bad", tiny_model_dir, samples="ten")
    assert runner.run(spec).status == FAILED
    update_note(spec, lambda n: (n.set("samples", 2), n.set("status", QUEUED)), vault=example_vault)

    outcome = runner.run(spec)
    assert outcome.status == DONE, outcome.error
    assert "error" not in props(spec)
    assert Note.read(spec).region("actadd-error") == ""


def test_one_sample_gives_no_ci_and_still_finishes(runner, example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "one", tiny_model_dir, samples=1, max_perplexity_ratio=1000)
    outcome = runner.run(spec)
    assert outcome.status == DONE, outcome.error
    assert outcome.summary.startswith("not detected") and "(no CI)" in outcome.summary


def test_a_note_that_is_no_spec_is_refused_untouched(runner, example_vault):
    readme = example_vault / "README.md"
    before = readme.read_bytes()
    with pytest.raises(SpecError, match=r"README\.md: type: .*actadd-experiment"):
        runner.run(readme)
    assert readme.read_bytes() == before


def test_a_spec_with_invalid_yaml_is_never_rewritten(runner, example_vault):
    spec = example_vault / "Experiments" / "broken.md"
    spec.write_text("---\ntype: actadd-experiment\nstatus: queued\nlayer: [1, 2\n---\nMy text\n")
    before = spec.read_bytes()
    with pytest.raises(VaultError, match="invalid YAML"):
        runner.run(spec)
    assert spec.read_bytes() == before


def test_an_unexpected_error_fails_the_note_instead_of_leaving_it_running(example_vault, tiny_model_dir):
    def broken_loader(name, **options):
        raise RuntimeError("CUDA out of memory")

    runner = JobRunner(VaultConfig.load(example_vault), models=ModelSlot(broken_loader), clock=lambda: NOW)
    spec = write_spec(example_vault, "love", tiny_model_dir)
    outcome = runner.run(spec)
    assert outcome.status == FAILED
    assert "internal error (RuntimeError: CUDA out of memory)" in outcome.error
    assert props(spec)["status"] == FAILED


def test_a_missing_model_fails_the_job_with_a_model_error(runner, example_vault, tmp_path):
    spec = write_spec(example_vault, "love", tmp_path / "no-such-model")
    outcome = runner.run(spec)
    assert outcome.status == FAILED
    assert outcome.error.startswith("Experiments/love.md: model ")


def test_a_spec_dtype_loads_the_model_again_in_that_precision():
    loads = []
    slot = ModelSlot(lambda name, **options: loads.append((name, options)) or f"lm:{name}:{len(loads)}", dtype="auto")
    assert slot.get("a") == slot.get("a", "auto") == "lm:a:1"  # the slot's own precision, kept
    assert slot.get("a", "float32") == "lm:a:2"  # the spec's precision is another model
    assert loads == [("a", {"dtype": "auto"}), ("a", {"dtype": "float32"})]


def test_the_model_slot_reloads_after_a_failed_load():
    loads = []

    def loader(name, **options):
        loads.append((name, options))
        if name == "missing":
            raise ModelError("no such model")
        return f"lm:{name}"

    pool = ModelSlot(loader, device="cpu")
    assert pool.get("a") == "lm:a"
    assert pool.get("a") == "lm:a"  # kept
    with pytest.raises(ModelError):
        pool.get("missing")
    assert pool.get("a") == "lm:a"  # loaded again, not None
    assert loads == [("a", {"device": "cpu"}), ("missing", {"device": "cpu"}), ("a", {"device": "cpu"})]


def test_spec_notes_lists_specs_with_status_outside_results(example_vault, tiny_model_dir):
    from actadd_notes.vault.scan import spec_notes

    write_spec(example_vault, "draft", tiny_model_dir, status="draft")
    queued = write_spec(example_vault, "queued", tiny_model_dir)
    for folder in ("Results", "Results/artifacts/x", ".trash", ".obsidian"):  # never specs
        (example_vault / folder).mkdir(parents=True, exist_ok=True)
        (example_vault / folder / "copy.md").write_text(queued.read_text())
    found = {p.relative_to(example_vault).as_posix(): s for p, s in spec_notes(VaultConfig.load(example_vault))}
    assert found == {
        "Experiments/draft.md": "draft",
        "Experiments/love-hate-held-out.md": "queued",
        "Experiments/love-hate-sweep.md": "queued",
        "Experiments/queued.md": "queued",
    }


def test_a_mean_difference_spec_reads_its_pairs_note_and_says_so(runner, example_vault, tiny_model_dir):
    (example_vault / "Pairs").mkdir()
    (example_vault / "Pairs" / "sentiment.md").write_text(
        "Pairs for CAA.\n\n| add | sub |\n|---|---|\n| I love you | I hate you |\n| Happy people | Sad people |\n"
    )
    spec = write_spec(
        example_vault,
        "caa",
        tiny_model_dir,
        method="mean_difference",
        pairs='"[[sentiment]]"',
        max_perplexity_ratio=100,
    )
    outcome = runner.run(spec)
    assert outcome.status == DONE, outcome.error
    result = Note.read(outcome.result_note)
    assert result.properties["method"] == "mean_difference" and result.properties["pairs"] == 2
    assert "mean difference (CAA) of 2 contrast pair(s) from Pairs/sentiment.md" in result.body
    broken = write_spec(example_vault, "caa-missing", tiny_model_dir, method="mean_difference", pairs='"[[nowhere]]"')
    failed = runner.run(broken)
    assert failed.status == FAILED and "pairs: [[nowhere]]: no note named nowhere.md" in failed.error
