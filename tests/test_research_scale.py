"""Research scale: prompts from a data file in the vault, the held-out design, the prompting baseline,
per-prompt effects, end to end through the job runner on a tiny local model, and the spec keys that
drive them. Bad prompt sources fail with the note and the key before any model loads."""

from __future__ import annotations

import csv
import io
import json

import pytest
from vaults import example_vault, props, result_notes, tiny_model_dir, write_spec

from actadd_notes.errors import SpecError
from actadd_notes.experiments.design import HELD_OUT, HELD_OUT_AUTO, SAME, split_prompts
from actadd_notes.experiments.spec import estimate_work, parse_spec
from actadd_notes.jobs import DONE, FAILED, QUEUED, JobRunner, ModelSlot
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note, update_note

pytestmark = pytest.mark.timeout(300)

PROMPTS = [
    f"I hate {thing} because"
    for thing in ["rain", "snow", "mud", "noise", "dust", "smoke", "fog", "heat", "ice", "wind", "mold", "rust"]
]
PROMPTS += [
    f"You are the worst {role} because"
    for role in ["cook", "driver", "singer", "boss", "friend", "pilot", "judge", "poet"]
]
PROMPTS += ["Nobody likes you because", "This is awful because", "Go away because", "Stop it because"]


def data_file(vault, name="prompts.csv", texts=PROMPTS):
    folder = vault / "Data"
    folder.mkdir(exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "text"])
    writer.writerows(enumerate(texts))
    (folder / name).write_text(buffer.getvalue(), encoding="utf-8")
    return folder / name


def runner_for(vault, loader=None):
    models = ModelSlot(loader) if loader else ModelSlot(device="cpu")
    return JobRunner(VaultConfig.load(vault), models=models)


def artifacts(vault, spec, note):
    return vault / "Results" / "artifacts" / f"{spec.stem} {note.properties['run_id']}"


def test_a_spec_reads_its_prompts_from_a_vault_file_and_confirms_on_the_held_out_half(example_vault, tiny_model_dir):
    data_file(example_vault)
    spec = write_spec(example_vault, "data", tiny_model_dir, prompts='"[[Data/prompts.csv]]"', max_perplexity_ratio=100)
    outcome = runner_for(example_vault).run(spec)
    assert outcome.status == DONE, outcome.error
    note = Note.read(outcome.result_note)
    assert (note.properties["prompts"], note.properties["confirm_prompts"]) == (len(PROMPTS), HELD_OUT)
    assert note.properties["confirmation_prompts"] == len(PROMPTS) // 2
    assert note.properties["scope"] in ("these prompts", "held-out prompts")
    assert "Prompts: 24 from Data/prompts.csv" in note.body and "which the search never saw" in note.body
    folder = artifacts(example_vault, spec, note)
    results = json.loads((folder / "results.json").read_text())
    record = results["prompts"]
    assert not set(record["search"]) & set(record["confirmation"])
    assert sorted(record["search"] + record["confirmation"]) == list(range(len(PROMPTS)))
    assert record["source"]["row_ids"] == list(range(len(PROMPTS)))
    assert results["reproducibility"]["prompt_source_hash"] == record["source"]["source_hash"]
    confirmation = results["confirmation"]
    assert confirmation["prompting"]["label"] == "prompting" and confirmation["versus_prompting"] is not None
    assert [e["prompt_index"] for e in confirmation["prompt_effects"]] == record["confirmation"]
    with (folder / "completions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    searched = {row["prompt"] for row in rows if row["stage"] == "search"}
    assert searched == {PROMPTS[i] for i in record["search"]}  # the search never saw a held-out prompt
    prompting = [row for row in rows if row["setting"] == "prompting"]
    assert prompting and all(row["prompt"].startswith("Love ") for row in prompting)
    # the same spec run again reads the same rows and splits them the same way
    update_note(spec, lambda n: n.set("status", QUEUED), vault=example_vault)
    again = runner_for(example_vault).run(spec)
    repeated = json.loads((artifacts(example_vault, spec, Note.read(again.result_note)) / "results.json").read_text())
    assert repeated["prompts"] == record


def _never_load(name, **options):
    raise AssertionError("the model was loaded for a spec whose prompts are bad")


@pytest.mark.parametrize(
    ("setup", "prompts", "message"),
    [
        (lambda v: data_file(v, texts=[]), '"[[Data/prompts.csv]]"', "no prompts in"),
        (lambda v: data_file(v), '{source: "[[Data/prompts.csv]]", column: title}', "title"),
        (lambda v: data_file(v), '{source: "[[Data/prompts.csv]]", n: 500}', "500"),
        (lambda v: (v / "Data" / "latin.txt").write_bytes(b"caf\xe9 because\n"),
         '"[[Data/latin.txt]]"', "UTF-8"),
        (lambda v: (v.parent / "outside.csv").write_text("text\nhi\n"), '"[[../outside.csv]]"', "outside.csv"),
        (lambda v: None, "{source: nobody/no-such-dataset}", "not in the local Hugging Face cache"),
        (lambda v: data_file(v), '"[[Data/missing.csv]]"', "missing.csv"),
    ],
)  # fmt: skip
def test_a_bad_prompt_source_fails_naming_the_note_and_key_before_the_model_loads(
    example_vault, tiny_model_dir, setup, prompts, message
):
    setup(example_vault)
    spec = write_spec(example_vault, "bad", tiny_model_dir, prompts=prompts)
    outcome = runner_for(example_vault, _never_load).run(spec)
    assert outcome.status == FAILED
    assert outcome.error.startswith("Experiments/bad.md: prompts: "), outcome.error
    assert message in outcome.error
    assert props(spec)["status"] == FAILED and result_notes(example_vault) == []


def test_prompt_tokens_cuts_each_prompt_to_its_first_tokens(example_vault, tiny_model_dir):
    data_file(example_vault, texts=["I hate you because you never listen to anyone at all"] * 2)
    spec = write_spec(
        example_vault,
        "cut",
        tiny_model_dir,
        prompts='"[[Data/prompts.csv]]"',
        prompt_tokens=4,
        max_perplexity_ratio=100,
    )
    outcome = runner_for(example_vault).run(spec)
    assert outcome.status == DONE, outcome.error
    results = json.loads((artifacts(example_vault, spec, Note.read(outcome.result_note)) / "results.json").read_text())
    cut = results["spec"]["prompts"]
    assert cut[0] == cut[1] and "I hate you because you never listen".startswith(cut[0]) and len(cut[0]) < 30
    assert results["spec"]["prompt_tokens"] == 4


# ------------------------------------------------------------------ the spec keys
def spec(**changes):
    properties = {"prompt_add": "Love", "prompt_sub": "Hate", "layer": 2, "coeff": 4, "prompts": ["I hate you"]}
    return parse_spec({**properties, **changes})


def test_confirm_prompts_holds_out_from_twenty_prompts_on():
    assert spec(prompts=PROMPTS[: HELD_OUT_AUTO - 1])[0].confirm_prompts == SAME
    assert spec(prompts=PROMPTS[:HELD_OUT_AUTO])[0].confirm_prompts == HELD_OUT
    assert spec(prompts=PROMPTS[:HELD_OUT_AUTO], confirm_prompts="same")[0].confirm_prompts == SAME
    assert spec(prompts=PROMPTS[:4], confirm_prompts="held_out")[0].confirm_prompts == HELD_OUT
    with pytest.raises(SpecError, match="confirm_prompts: held_out needs at least 2 prompts"):
        spec(confirm_prompts="held_out")


def test_the_split_is_seeded_disjoint_and_counted_in_the_work():
    first, again, other = (split_prompts(24, seed, HELD_OUT) for seed in (0, 0, 1))
    assert first == again and first != other
    assert not set(first.search) & set(first.confirmation) and len(first.confirmation) == 12
    assert split_prompts(5, 0, SAME).search == split_prompts(5, 0, SAME).confirmation == tuple(range(5))
    held, _ = spec(prompts=PROMPTS, samples=2, confirm_samples=3)
    # the search: the baseline and one setting on 12 prompts; the confirmation: four arms on the other 12
    assert estimate_work(held).generations == 2 * 12 * 2 + 4 * 12 * 3


def test_the_prompting_baseline_is_p_plus_before_the_prompt_unless_the_spec_says_otherwise():
    assert spec()[0].prompt_baseline == "Love {prompt}"
    assert spec(prompt_baseline="Be loving. {prompt}")[0].prompt_baseline == "Be loving. {prompt}"
    assert spec(prompt_baseline=False)[0].prompt_baseline is None
    assert spec(confirm=False)[0].prompt_baseline is None
    with pytest.raises(SpecError, match=r"prompt_baseline: .* a template that adds words around \{prompt\}"):
        spec(prompt_baseline="Be loving.")
    with pytest.raises(SpecError, match="prompt_baseline: "):
        spec(prompt_baseline=3)
    pairs = {"method": "mean_difference", "pairs": [{"add": "Love", "sub": "Hate"}], "prompt_add": None}
    assert spec(**pairs)[0].prompt_baseline is None  # said in the result note
    with pytest.raises(SpecError, match="mean_difference has no single p\\+"):
        spec(**pairs, prompt_baseline=True)


def test_prompts_from_a_data_set_and_from_the_body_are_refused_together(tmp_path):
    with pytest.raises(SpecError, match="use one of them"):
        parse_spec(
            {"prompt_add": "Love", "prompt_sub": "Hate", "layer": 2, "coeff": 4, "prompts": "[[Data/x.csv]]"},
            "## Prompts\n- I hate you because\n",
            resolve_file=lambda link: tmp_path / "x.csv",
        )
