"""Beyond one prompt pair: mean-difference (CAA) vectors, the injection offset and `align`,
coefficients in residual-norm units, and pairs kept as notes — on tiny random models, exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import hook_count, tiny_lm, tiny_threads

from actadd_notes.errors import SpecError, SteeringError, VaultError
from actadd_notes.experiments.additions import Additions, ResidualNorms, push_norm
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.results import SEARCH, Setting
from actadd_notes.experiments.spec import parse_spec
from actadd_notes.steering.contrast import pair_differences
from actadd_notes.steering.hooks import recording_block_inputs
from actadd_notes.steering.vectors import ActAdd, SteeringVector
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.pairs import parse_pairs, read_pairs

PAIRS = [("I love you", "I hate you"), ("Happy people sing", "Sad people cry"), ("Love and peace", "hate and war")]


@pytest.fixture(scope="module")
def llama():
    return tiny_lm("llama")


def spec_of(**properties):
    base = {"prompts": ["I hate you because", "The weather today is nice and"], "samples": 2, "max_new_tokens": 4,
            "metrics": ["sentiment"], "layer": 1, "coeff": 2}  # fmt: skip
    spec, _ = parse_spec(base | properties)
    return spec


@torch.no_grad()
def _input_at(lm, layer: int, ids: list[int]) -> torch.Tensor:
    """The residual stream at the input of block `layer` for one unpadded prompt, [T, d]."""
    probe = copy.deepcopy(lm.model)
    out = probe(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    return out.hidden_states[layer][0]


# ------------------------------------------------------------------ mean difference
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("pair_position", ["last", "mean"])
def test_a_mean_difference_vector_is_the_mean_of_per_pair_differences(family, pair_position):
    lm = tiny_lm(family)
    first = 1 if lm.prepend_bos else 0
    expected = []
    for add, sub in PAIRS:  # recorded one prompt at a time, no padding, by hidden states
        sides = []
        for text in (add, sub):
            ids = list(lm.encode(text).ids)
            states = _input_at(lm, 2, ids)
            sides.append(states[-1] if pair_position == "last" else states[first:].mean(dim=0))
        expected.append(sides[0] - sides[1])
    differences = pair_differences(lm, PAIRS, pair_position=pair_position)
    vector = differences.vector(2)
    assert vector.vector.shape == (1, lm.model.config.hidden_size if family != "gpt2" else lm.model.config.n_embd)
    torch.testing.assert_close(vector.vector[0], torch.stack(expected).mean(dim=0), atol=2e-5, rtol=1e-5)
    cosines = torch.nn.functional.cosine_similarity(torch.stack(expected), torch.stack(expected).mean(0, True), dim=-1)
    assert differences.agreement(2) == pytest.approx(float(cosines.mean()), abs=1e-5)
    assert vector.provenance["pairs"] == "3" and vector.provenance["pair_position"] == pair_position


def test_mean_difference_steers_every_position_with_the_one_vector(llama):
    spec = spec_of(method="mean_difference", pairs=[{"add": a, "sub": s} for a, s in PAIRS])
    assert spec.position == "all" and spec.pairs == tuple(PAIRS)
    additions = Additions(spec, llama)
    (main,) = additions.for_row(Setting(1, 2.0), 0)
    assert isinstance(main, SteeringVector) and main.coeff == 2.0
    encoded = list(llama.encode(spec.prompts[0]).ids)
    with torch.no_grad(), recording_block_inputs(llama.blocks, [1]) as clean:
        llama.model(input_ids=torch.tensor([encoded]))
    with torch.no_grad(), llama.steering(main, position="all"), recording_block_inputs(llama.blocks, [1]) as steered:
        llama.model(input_ids=torch.tensor([encoded]))
    delta = steered[1][0] - clean[1][0]
    torch.testing.assert_close(delta, (2.0 * main.vector[0]).expand_as(delta), atol=1e-5, rtol=1e-5)
    assert hook_count(llama.model) == 0


def test_a_mean_difference_run_says_its_method_and_pairs(llama):
    pairs = [{"add": a, "sub": s} for a, s in PAIRS]
    result = run_experiment(spec_of(method="mean_difference", pairs=pairs, max_perplexity_ratio=1000), llama)
    diagnostics = [d for d in result.diagnostics if d["kind"] == "steering"]
    assert diagnostics[0]["pairs"] == 3 and -1 <= diagnostics[0]["pair_agreement"] <= 1
    assert result.to_dict()["spec"]["method"] == "mean_difference"
    assert result.confirmation is not None and result.vectors["control"].vector.shape == (1, 32)


@pytest.mark.parametrize(
    ("properties", "key", "message"),
    [
        ({"method": "mean_difference"}, "pairs", "missing"),
        ({"method": "mean_difference", "pairs": []}, "pairs", "empty list"),
        ({"method": "mean_difference", "pairs": [{"add": "a"}]}, "pairs", "item 1"),
        ({"method": "mean_difference", "pairs": [{"add": "a", "sub": "a"}]}, "pairs", "would be zero"),
        ({"method": "mean_difference", "pairs": [{"add": "a", "sub": "b"}], "position": "front"}, "position", "all"),
        ({"method": "mean_difference", "pairs": "[[Pairs/x]]"}, "pairs", "needs a vault"),
        ({"method": "caa"}, "method", "expected one of actadd, mean_difference, vector"),
        ({"offset": -1}, "offset", "whole number ≥ 0"),
        ({"offset": 1, "align": "I hate"}, "align", "not both"),
        ({"align": "I", "position": "all"}, "align", "position: all"),
        ({"coeff_unit": "percent"}, "coeff_unit", "expected absolute or residual_norm"),
    ],
)
def test_bad_method_keys_are_refused_naming_the_key(properties, key, message):
    base = {"prompt_add": "Love", "prompt_sub": "Hate"} if "method" not in properties else {}
    with pytest.raises(SpecError) as caught:
        spec_of(**base, **properties)
    assert caught.value.key == key and message in str(caught.value), str(caught.value)


# ------------------------------------------------------------------ offset and align
def _front_delta(lm, addition: ActAdd, prompts: list[str]) -> list[torch.Tensor]:
    """What a front addition adds to each row's block input, one row at a time and batched."""
    return [d for d in _batched_delta(lm, addition, prompts)]


@torch.no_grad()
def _batched_delta(lm, addition, prompts):
    encoded = [lm.encode(p) for p in prompts]
    ids, mask, pads = lm._left_pad([e.ids for e in encoded])
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    vector = lm.steering_vector(addition)
    with recording_block_inputs(lm.blocks, [addition.layer]) as clean:
        lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids)
    with (
        lm._applied([(vector,)] * len(prompts), encoded, pads, "front"),
        recording_block_inputs(lm.blocks, [addition.layer]) as steered,
    ):
        lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids)
    return [(steered[addition.layer] - clean[addition.layer])[row, pads[row] :] for row in range(len(prompts))]


def test_an_offset_moves_the_addition_later_at_absolute_positions_under_left_padding(llama):
    prompts = ["I hate you because you are mean", "Hi there, how are you"]
    plain = llama.steering_vector(ActAdd("Love", "Hate", 1, 1.0))
    moved = ActAdd("Love", "Hate", 1, 1.0, offset=2)
    batched = _batched_delta(llama, moved, prompts)
    start = 1 if llama.prepend_bos else 0
    for row, prompt in enumerate(prompts):
        alone = _batched_delta(llama, moved, [prompt])[0]
        torch.testing.assert_close(batched[row][: start + 2 + plain.positions], alone[: start + 2 + plain.positions])
        expected = torch.zeros_like(alone[: start + 2 + plain.positions])
        expected[start + 2 : start + 2 + plain.positions] = plain.vector
        torch.testing.assert_close(alone[: start + 2 + plain.positions], expected, atol=1e-5, rtol=1e-5)


def test_align_starts_the_addition_where_the_text_first_occurs(llama):
    prompt = "Honestly, I hate you because"
    offset = llama.token_offset(prompt, "I hate")
    ids = llama.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert ids[offset][0] <= prompt.index("I hate") < ids[offset][1] or prompt[ids[offset][0] :].lstrip().startswith(
        "I"
    )
    assert llama.token_offset(prompt, "Honestly") == 0
    spec = spec_of(prompt_add="Love", prompt_sub="Hate", prompts=[prompt, "I hate you because"], align="I hate")
    additions = Additions(spec, llama)
    assert (additions.start(0), additions.start(1)) == (offset, 0)
    first, second = (additions.for_row(Setting(1, 2.0), i)[0] for i in (0, 1))
    assert (first.offset, second.offset) == (offset, 0)
    with pytest.raises(ValueError):
        llama.token_offset(prompt, "Love")


def test_align_text_missing_from_a_prompt_is_a_clear_error_before_generating(llama):
    spec = spec_of(prompt_add="Love", prompt_sub="Hate", align="wedding")
    with pytest.raises(SpecError, match=r"align: 'wedding' does not occur in prompt 1"):
        run_experiment(spec, llama, cancelled=lambda: pytest.fail("generated"))


def test_an_offset_past_the_prompt_is_a_clear_error_before_generating(llama):
    spec = spec_of(prompt_add="Love", prompt_sub="Hate", offset=[0, 30])
    with pytest.raises(SpecError) as caught:
        run_experiment(spec, llama, cancelled=lambda: pytest.fail("generated"))
    assert caught.value.key == "offset" and "30" in str(caught.value)


def test_offsets_are_a_grid_dimension_and_label_the_settings(llama):
    result = run_experiment(
        spec_of(prompt_add="Love", prompt_sub="Hate", layer=[0, 2], coeff=[1], offset=[0, 1]), llama
    )
    assert [s.setting.label for s in result.settings] == ["L0 c1", "L0 c1 a1", "L2 c1", "L2 c1 a1"]
    search = [s for s in result.samples if s.stage == SEARCH]
    assert {s.setting.offset for s in search} == {0, 1}


# ------------------------------------------------------------------ residual-norm units
def test_residual_norm_units_apply_c_times_the_typical_norm_over_the_vector_norm(llama):
    spec = spec_of(prompt_add="Love", prompt_sub="Hate", layer=[0, 2], coeff=[0.5], coeff_unit="residual_norm")
    additions = Additions(spec, llama)
    norms = ResidualNorms.measure(llama, spec)
    for layer in (0, 2):
        vector = llama.steering_vector(ActAdd("Love", "Hate", layer))
        expected = 0.5 * norms.typical[layer] / float(vector.vector.norm(dim=-1).mean())
        assert additions.applied_coeff(layer, 0.5) == pytest.approx(expected, rel=1e-6)
        assert push_norm(vector, "front") * additions.applied_coeff(layer, 0.5) == pytest.approx(
            0.5 * norms.typical[layer], rel=1e-6
        )  # the push is half the typical norm at every layer
    result = run_experiment(spec, llama)
    for setting in result.settings:
        assert setting.applied_coeff == pytest.approx(additions.applied_coeff(setting.setting.layer, 0.5))
    assert result.to_dict()["settings"][0]["applied_coeff"] == pytest.approx(result.settings[0].applied_coeff)


def test_absolute_units_apply_the_coefficient_as_written(llama):
    result = run_experiment(spec_of(prompt_add="Love", prompt_sub="Hate", coeff=[3]), llama)
    assert result.settings[0].applied_coeff == 3.0


# ------------------------------------------------------------------ pairs notes
def test_a_pairs_note_is_a_table_or_a_list(tmp_path):
    body = (
        "Sentiment pairs for CAA.\n\n| add | sub |\n|---|:---:|\n| I love this | I hate this |\n"
        "| `Kind` | 'Cruel' |\n\n"
        "- Wonderful | Terrible\n- a plain list item is not a pair\n"
    )
    assert parse_pairs(body, "Pairs/s.md") == [
        ("I love this", "I hate this"),
        ("Kind", "Cruel"),
        ("Wonderful", "Terrible"),
    ]
    with pytest.raises(VaultError, match=r"Pairs/s.md: line 2: .* a pair is two texts"):
        parse_pairs("| a | b |\n| a | b | c |\n", "Pairs/s.md")


def test_a_spec_reads_its_pairs_from_a_linked_note(tmp_path, llama):
    (tmp_path / ".obsidian").mkdir()
    (tmp_path / "Pairs").mkdir()
    (tmp_path / "Pairs" / "sentiment.md").write_text("| add | sub |\n|---|---|\n| Love | Hate |\n| Joy | Grief |\n")
    config = VaultConfig.load(tmp_path)
    path, pairs = read_pairs(config, "[[sentiment]]")
    assert path == tmp_path / "Pairs" / "sentiment.md" and pairs == [("Love", "Hate"), ("Joy", "Grief")]
    spec, _ = parse_spec(
        {
            "method": "mean_difference",
            "pairs": "[[Pairs/sentiment|my pairs]]",
            "prompts": ["Hi"],
            "layer": 1,
            "coeff": 1,
        },
        resolve_pairs=lambda link: ("Pairs/sentiment.md", read_pairs(config, link)[1]),
    )
    assert spec.pairs == (("Love", "Hate"), ("Joy", "Grief")) and spec.pairs_source == "Pairs/sentiment.md"
    (tmp_path / "Pairs" / "empty.md").write_text("no pairs here\n")
    cases = (
        ("[[empty]]", "no pairs in the note"),
        ("[[missing]]", "no note named missing.md"),
        ("[[*]]", r"no note named \*\.md"),
    )
    for link, message in cases:
        with pytest.raises(VaultError, match=message):
            read_pairs(config, link)


def test_an_empty_pair_text_is_an_engine_error_too(llama):
    with pytest.raises(SteeringError, match="empty"):
        pair_differences(llama, [])


def test_every_control_row_gets_its_own_random_direction_of_the_same_norms(llama):
    spec = spec_of(prompt_add="Love", prompt_sub="Hate", layer=2, coeff=3)
    additions = Additions(spec, llama)
    control = Setting(2, 3.0, control=True)
    rows = [additions.for_row(control, i, k)[0] for i in (0, 1) for k in (5, 6, 7)]
    vector = llama.steering_vector(ActAdd("Love", "Hate", 2))
    for row in rows:
        assert row.coeff == 3.0
        torch.testing.assert_close(row.vector.norm(dim=-1), vector.vector.norm(dim=-1), rtol=1e-5, atol=1e-5)
    directions = torch.stack([row.vector.flatten() for row in rows])
    cosines = torch.nn.functional.cosine_similarity(directions[:, None], directions[None], dim=-1)
    assert (cosines - torch.eye(len(rows))).abs().max() < 0.9  # six different directions
    again = Additions(spec, llama).for_row(control, 1, 6)[0]
    assert torch.equal(again.vector, rows[4].vector)  # seeded: a re-run draws the same ones
