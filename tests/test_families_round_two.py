"""Real checkpoints of other families (issue 21): every stop token, a user's GGUF file, float16 overflow,
Gemma 3 on the fast decode path, llama.cpp's architecture names, and the vault's git commit.

Every model is a tiny random one from `tiny.py`; every file is real (a git repository, a `.gguf` written
by the `gguf` package)."""

from __future__ import annotations

import subprocess

import pytest
import torch
from tiny import hook_count, tiny_lm, tiny_threads
from transformers import AutoModelForCausalLM

from actadd_notes.steering import ActAdd, SteerableLM
from actadd_notes.steering.decode import cut_at_stop
from actadd_notes.vault.git import vault_commit

PROMPTS = ["I hate you because you are mean.", "Hi there", "The weather today is nice and", "Anger is"]
SEEDS = [11, 5, 7, 42]
STEER = [[ActAdd("Love", "Hate", layer=1, coeff=4.0)], None, [ActAdd("Happy people", "Sad", layer=2, coeff=-2.0)], None]
PAPER = {"temperature": 1.0, "top_p": 0.3, "freq_penalty": 1.0}
# chat prompts hold `<|end|>` twice, and a frequency penalty counts the prompt: it would hide the token
CHAT_SAMPLING = {"temperature": 1.0, "top_p": 0.5}
DECODES = ("eager", "static", "compiled")


def tokens(completions) -> list[tuple[int, ...]]:
    return [c.token_ids for c in completions]


def compiling_cheaply(lm: SteerableLM) -> SteerableLM:
    """`decode="compiled"` traced whole by aot_eager: the compiled path's graph, without generating kernels."""
    lm.compile_backend = "aot_eager"
    return lm


# ------------------------------------------------------------------ the vault's git commit
def git(root, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_vault_repository_without_commits_records_no_commit(tmp_path):
    git(tmp_path, "init", "-q")
    assert vault_commit(tmp_path) is None  # not "HEAD", which `git rev-parse HEAD` prints as it fails
    (tmp_path / "note.md").write_text("hi\n")
    git(tmp_path, "add", "note.md")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    assert vault_commit(tmp_path) == git(tmp_path, "rev-parse", "HEAD")
    assert len(vault_commit(tmp_path) or "") == 40


def test_a_folder_that_is_no_repository_records_no_commit(tmp_path):
    assert vault_commit(tmp_path) is None


# ------------------------------------------------------------------ every stop token
def _stop_candidates(unstopped: list[tuple[int, ...]], eos: int) -> tuple[int, int]:
    """Two tokens that each end a different row first: the first tokens that are new in row 0 and in
    the first row which the first candidate does not cut short."""
    first = next(t for i, t in enumerate(unstopped[0]) if i >= 3 and t not in unstopped[0][:i] and t != eos)
    for row in unstopped[1:]:
        kept = cut_at_stop(list(row), [first, eos])
        if len(kept) > 4:
            return first, next(t for i, t in enumerate(kept) if i >= 2 and t not in kept[:i])
    raise AssertionError("no second row to stop")


def test_rows_stop_at_every_id_the_generation_config_lists_in_every_decode_path():
    lm = compiling_cheaply(tiny_lm("llama", prepend_bos=True))
    eos = lm.tokenizer.eos_token_id
    unstopped = tokens(lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=24, decode="eager", **PAPER))
    first, second = _stop_candidates(unstopped, eos)
    lm.model.generation_config.eos_token_id = [first, second]
    assert lm.stop_ids() == (eos, first, second)
    expected = [tuple(cut_at_stop(list(row), [eos, first, second])) for row in unstopped]
    ended_by = {row[len(cut)] for row, cut in zip(unstopped, expected) if len(cut) < len(row)}
    assert {first, second} <= ended_by  # each listed id ends some row
    for decode in DECODES:
        stopped = lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=24, decode=decode, **PAPER)
        assert lm.last_generation.decode == decode, lm.last_generation.reason
        assert tokens(stopped) == expected, decode
        record = lm.last_generation.to_record()["generation_stop_ids"]
        names = [lm.tokenizer.convert_ids_to_tokens(i) for i in (eos, first, second)]
        assert record == ", ".join(f"{i} {name}" for i, name in zip((eos, first, second), names))
    assert hook_count(lm.model) == 0


def test_a_single_integer_in_the_generation_config_stops_too():
    lm = tiny_lm("gpt2", prepend_bos=True)
    unstopped = tokens(lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=16, decode="eager", **PAPER))
    stop = unstopped[0][5]
    lm.model.generation_config.eos_token_id = stop
    for decode in ("eager", "static"):
        stopped = lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=16, decode=decode, **PAPER)
        assert tokens(stopped) == [tuple(cut_at_stop(list(row), [stop, 2])) for row in unstopped]
    assert len(stopped[0].token_ids) <= 5


def chat_lm() -> tuple[SteerableLM, int]:
    """A tiny Llama whose tokenizer knows the template's `<|end|>` as a special token, and whose model
    prefers `<|end|>` wherever it would have said its most frequent chat token (its output row is
    that token's, scaled up): its chat completions end a turn as an instruction-tuned model's do."""
    from tiny import tiny_chat_tokenizer, tiny_config

    tokenizer = tiny_chat_tokenizer()
    config = tiny_config("llama")
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    lm = compiling_cheaply(SteerableLM(model, tokenizer, name="tiny-chat", prepend_bos=True))
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    with torch.no_grad():
        model.lm_head.weight[end] = 0
        sampled = lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=20, decode="eager", chat=True, **CHAT_SAMPLING)
        common = int(torch.bincount(torch.tensor([t for c in sampled for t in c.token_ids])).argmax())
        model.lm_head.weight[end] = model.lm_head.weight[common] * 1.2
    return lm, end


def test_chat_rows_stop_at_the_templates_end_of_turn_token_in_every_decode_path(monkeypatch):
    lm, end = chat_lm()
    eos = lm.tokenizer.eos_token_id
    assert lm.stop_ids(chat=True) == (eos, end) and lm.stop_ids(chat=False) == (eos,)
    with monkeypatch.context() as patch:  # the same rows as they run on when only EOS stops them
        patch.setattr(lm, "stop_ids", lambda chat=False: (eos,))
        unstopped = tokens(
            lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=20, chat=True, decode="eager", **CHAT_SAMPLING)
        )
    expected = [tuple(cut_at_stop(list(row), [eos, end])) for row in unstopped]
    assert any(row[len(cut) :][:1] == (end,) for row, cut in zip(unstopped, expected)), "no row said <|end|>"
    for decode in DECODES:
        stopped = lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=20, chat=True, decode=decode, **CHAT_SAMPLING)
        assert lm.last_generation.decode == decode, lm.last_generation.reason
        assert tokens(stopped) == expected, decode
        assert lm.last_generation.to_record()["generation_stop_ids"] == f"{eos} <eos>, {end} <|end|>"


# the shapes of Gemma's, Llama 3's and ChatML's (Qwen, SmolLM2) chat templates, trimmed to their turns
REAL_TEMPLATES = {
    "<end_of_turn>": (
        "{{ bos_token }}{% for message in messages %}<start_of_turn>"
        "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n{{ message['content'] | trim }}"
        "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
        ["<start_of_turn>", "<end_of_turn>"],
    ),
    "<|eot_id|>": (
        "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
        "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    ),
    "<|im_end|>": (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        ["<|im_start|>", "<|im_end|>"],
    ),
}


@pytest.mark.parametrize("end_of_turn", sorted(REAL_TEMPLATES))
def test_the_end_of_turn_token_is_found_in_real_chat_templates(end_of_turn):
    from tiny import tiny_tokenizer

    template, specials = REAL_TEMPLATES[end_of_turn]
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.chat_template = template
    lm = SteerableLM(tiny_lm("llama").model, tokenizer, name="tiny-chat")
    end = tokenizer.convert_tokens_to_ids(end_of_turn)
    assert lm.stop_ids(chat=True) == (tokenizer.eos_token_id, end)
    assert lm.stop_ids(chat=False) == (tokenizer.eos_token_id,)


def test_templates_without_a_special_end_of_turn_add_no_stop():
    lm = tiny_lm("llama")  # its template's `<|end|>` is ordinary text for this tokenizer
    assert lm.stop_ids(chat=True) == lm.stop_ids(chat=False) == (lm.tokenizer.eos_token_id,)


# ------------------------------------------------------------------ float16 overflow
def overflowing_lm(dtype: torch.dtype) -> SteerableLM:
    """A tiny Llama whose block 1 MLP is scaled 30× per matrix: its output reaches ~1e5, past float16's 65,504,
    while every weight stays well inside float16's range."""
    from tiny import tiny_model, tiny_tokenizer

    model = tiny_model("llama")
    with torch.no_grad():
        mlp = model.model.layers[1].mlp
        for linear in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            linear.weight *= 30
    return SteerableLM(model.to(dtype), tiny_tokenizer(), name="tiny-overflow", prepend_bos=True)


OVERFLOW = (
    r"tiny-overflow in float16: the activations are inf or NaN from layer 1 on .*`dtype: bfloat16`.*`dtype: float32`"
)


def test_float16_overflow_is_an_error_naming_the_layer_in_every_call():
    from actadd_notes.errors import ModelError

    healthy = overflowing_lm(torch.float32)
    completions = healthy.complete(PROMPTS, seeds=SEEDS, max_new_tokens=8, **PAPER)
    assert all(c.token_ids for c in completions)
    assert all(torch.isfinite(torch.tensor(healthy.perplexities(completions))))
    assert torch.isfinite(healthy.next_token_logits(PROMPTS)).all()
    lm = overflowing_lm(torch.float16)
    for decode in ("static", "eager"):
        with pytest.raises(ModelError, match=OVERFLOW):
            lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=8, decode=decode, **PAPER)
    with pytest.raises(ModelError, match=OVERFLOW):
        lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=8, **PAPER)  # at the vectors' forward
    with pytest.raises(ModelError, match=OVERFLOW):
        lm.perplexities(completions)
    with pytest.raises(ModelError, match=OVERFLOW):
        lm.next_token_logits(PROMPTS)
    assert hook_count(lm.model) == 0


def test_an_overflow_past_the_last_block_is_named_so():
    from actadd_notes.errors import ModelError

    lm = tiny_lm("llama")
    with torch.no_grad():
        lm.model.lm_head.weight[5] = float("inf")
    with pytest.raises(ModelError, match=r"tiny-llama in float32: .* after the last of its 3 blocks .*weights"):
        lm.next_token_logits(PROMPTS)


# ------------------------------------------------------------------ llama.cpp's architecture names
@pytest.mark.parametrize(
    ("family", "hint"),
    [
        ("llama", "llama"),
        ("mistral", "llama"),  # convert_hf_to_gguf.py converts MistralForCausalLM as LLM_ARCH_LLAMA
        ("qwen2", "qwen2"),
        ("gemma2", "gemma2"),
        ("gemma3_text", "gemma3"),
        ("gpt_neox", "gptneox"),
        ("phi3", "phi3"),
    ],
)
def test_the_control_vector_model_hint_is_llama_cpps_architecture_name(family, hint):
    import gguf

    from actadd_notes.steering.control_vectors import model_hint_of

    lm = tiny_lm(family)
    assert model_hint_of(lm) == hint
    assert hint in gguf.MODEL_ARCH_NAMES.values()  # the gguf package lists llama.cpp's names


def test_a_family_llama_cpp_does_not_know_keeps_its_model_type():
    from actadd_notes.steering.control_vectors import model_hint_of

    assert model_hint_of(tiny_lm("opt")) == "opt"


# ------------------------------------------------------------------ a user's GGUF file
QUANTIZED = "Q8_0"  # what 2-D weights are stored as, like a downloaded GGUF; norms stay F32


def _llama_cpp_permute(weight, heads: int):
    """convert_hf_to_gguf.py's reordering of Llama's query and key rows (transformers' GGUF loader undoes it)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_gguf(model, tokenizer, path, *, architecture: str = "llama"):
    """`model` (a tiny Llama) and its byte-level BPE tokenizer as llama.cpp's converter writes them. Returns the
    model with the weights a reader gets back: each 2-D weight quantised to Q8_0 and dequantised."""
    import json

    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [token for token, _ in sorted(state["model"]["vocab"].items(), key=lambda item: item[1])]
    special = {added["content"] for added in state["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    kind = gguf.GGMLQuantizationType[QUANTIZED]
    read_back = {}
    for name, tensor in model.state_dict().items():
        data = tensor.detach().numpy()
        if name.endswith("q_proj.weight"):
            data = _llama_cpp_permute(data, config.num_attention_heads)
        if name.endswith("k_proj.weight"):
            data = _llama_cpp_permute(data, config.num_key_value_heads)
        stored = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if data.ndim == 2:
            packed = gguf.quants.quantize(data, kind)
            writer.add_tensor(stored, packed, raw_shape=packed.shape, raw_dtype=kind)
            # quantisation blocks run along rows, which the permutation only reorders
            read_back[name] = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(tensor.numpy(), kind), kind))
        else:
            writer.add_tensor(stored, data)
            read_back[name] = tensor
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    twin = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    twin.load_state_dict(read_back)
    return twin


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTADD_NOTES_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_gguf_file_loads_by_path_and_steers_as_its_safetensors_twin(tmp_path, own_cache):
    from tiny import tiny_model, tiny_tokenizer

    from actadd_notes.steering import load_model

    (tmp_path / "user").mkdir()
    gguf_path = tmp_path / "user" / "tiny-llama.Q8_0.gguf"
    twin = write_gguf(tiny_model("llama"), tiny_tokenizer(), gguf_path)
    twin.save_pretrained(tmp_path / "twin")
    tiny_tokenizer().save_pretrained(tmp_path / "twin")
    heard: list[str] = []
    lm = load_model(str(gguf_path), device="cpu", dtype="float32", prepend_bos=True, progress=heard.append)
    reference = load_model(str(tmp_path / "twin"), device="cpu", dtype="float32", prepend_bos=True)
    assert lm.short_name == gguf_path.name and lm.num_layers == reference.num_layers
    assert any("converting (llama, F32, Q8_0)" in message for message in heard), heard
    assert [lm.encode(p) for p in PROMPTS] == [reference.encode(p) for p in PROMPTS]
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(lm.model.state_dict()[name], tensor), name
    love = ActAdd("Love", "Hate", layer=1, coeff=4.0)
    assert torch.equal(lm.next_token_logits(PROMPTS, steer=love), reference.next_token_logits(PROMPTS, steer=love))
    for sampling in ({"temperature": 0}, PAPER):
        got = lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=12, **sampling)
        want = reference.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=12, **sampling)
        assert tokens(got) == tokens(want) and [c.text for c in got] == [c.text for c in want]
    assert tokens(got) != tokens(lm.complete(PROMPTS, seeds=SEEDS, max_new_tokens=12, **PAPER))  # it steered

    # cached by content: a second load, or the same file under another name, converts nothing
    (tmp_path / "renamed.gguf").write_bytes(gguf_path.read_bytes())
    heard.clear()
    again = load_model(
        str(tmp_path / "renamed.gguf"), device="cpu", dtype="float32", prepend_bos=True, progress=heard.append
    )
    assert not any("converting" in message for message in heard)
    assert len(list((own_cache / "gguf").iterdir())) == 1
    assert torch.equal(again.next_token_logits(PROMPTS), reference.next_token_logits(PROMPTS))


def test_a_folder_holding_one_gguf_loads_it_and_one_holding_two_asks_which(tmp_path, own_cache):
    from tiny import tiny_model, tiny_tokenizer

    from actadd_notes.errors import ModelError
    from actadd_notes.steering import load_model

    folder = tmp_path / "downloaded"
    folder.mkdir()
    twin = write_gguf(tiny_model("llama", seed=3), tiny_tokenizer(), folder / "model.gguf")
    lm = load_model(str(folder), device="cpu", dtype="float32", progress=lambda message: None)
    for name, tensor in twin.state_dict().items():
        assert torch.equal(lm.model.state_dict()[name], tensor), name
    (folder / "other.gguf").write_bytes((folder / "model.gguf").read_bytes())
    with pytest.raises(ModelError, match=r"several GGUF files \(model.gguf, other.gguf\); name one of them"):
        load_model(str(folder), device="cpu", progress=lambda message: None)


def test_a_gguf_that_cannot_be_converted_says_what_was_tried_and_what_loads(tmp_path, own_cache):
    from tiny import tiny_model, tiny_tokenizer

    from actadd_notes.errors import ModelError
    from actadd_notes.steering import load_model

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 100)
    with pytest.raises(ModelError, match=r"garbage.gguf': not a readable GGUF file .* What loads: a folder with"):
        load_model(str(garbage), device="cpu", progress=lambda message: None)
    foreign = tmp_path / "neox.gguf"  # an architecture llama.cpp has and transformers' GGUF loader lacks
    write_gguf(tiny_model("llama"), tiny_tokenizer(), foreign, architecture="gptneox")
    expected = (
        r"neox.gguf': tried to convert this GGUF file \(gptneox; tensors F32, Q8_0\) with transformers \S+, "
        r"which reads the architectures .*\bllama\b.*: .*gptneox.* What loads: .*safetensors.*Hugging Face id"
    )
    with pytest.raises(ModelError, match=expected):
        load_model(str(foreign), device="cpu", progress=lambda message: None)
    assert not (own_cache / "gguf").exists() or not list((own_cache / "gguf").iterdir())  # nothing half-written


# ------------------------------------------------------------------ Gemma 3 on the fast decode path
WINDOW = 6  # every prompt here plus its new tokens runs past it
SAMPLINGS = [PAPER, {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "freq_penalty": 0.5}, {"temperature": 0}]


def windowed_lm(family: str, window: int = WINDOW) -> SteerableLM:
    """A tiny 4-layer `family` model whose sliding-window layers (0 and 2) see only `window` positions."""
    from tiny import gemma3_config, tiny_config, tiny_tokenizer

    if family == "gemma3_text":
        config = gemma3_config(sliding_window=window, layers=4)
    else:
        config = tiny_config(family)
        config.sliding_window = window
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return compiling_cheaply(SteerableLM(model, tiny_tokenizer(), name=f"tiny-{family}", prepend_bos=True))


@pytest.mark.parametrize("family", ["gemma3_text", "gemma2"])
@pytest.mark.parametrize("position", ["front", "all"])
def test_sliding_window_layers_decode_on_the_static_path_token_for_token(family, position):
    from actadd_notes.steering.decode import decode_support

    lm = windowed_lm(family)
    positions = len(lm.encode(PROMPTS[0]).ids) + 12
    assert positions > 2 * WINDOW and decode_support(lm.model, positions) is None
    for sampling in SAMPLINGS:
        eager = lm.complete(
            PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=12, decode="eager", position=position, **sampling
        )
        for decode in ("static", "compiled"):
            fast = lm.complete(
                PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=12, decode=decode, position=position, **sampling
            )
            assert lm.last_generation.decode == decode, lm.last_generation.reason
            assert tokens(fast) == tokens(eager), (decode, sampling)
    assert hook_count(lm.model) == 0
    # the window matters: the same weights attending to every position give other tokens
    unwindowed = windowed_lm(family, window=256)
    assert unwindowed.model.state_dict().keys() == lm.model.state_dict().keys()
    wide = unwindowed.complete(
        PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=12, decode="eager", position=position, **PAPER
    )
    assert tokens(wide) != tokens(
        lm.complete(PROMPTS, seeds=SEEDS, steer=STEER, max_new_tokens=12, decode="eager", position=position, **PAPER)
    )


@pytest.mark.parametrize("window", [256, WINDOW])
def test_gemma3_steering_matches_the_independent_reference(window):
    """The engine's exactness checks of tests/test_engine_families.py, on Gemma 3: the vector, the steered
    logits and cached greedy decoding against `reference_actadd`, within and past the sliding window."""
    import reference_actadd as ref

    lm = windowed_lm("gemma3_text", window)
    twin = windowed_lm("gemma3_text", window).model  # same seed, same weights; the reference hooks this one
    assert lm.block_path == "model.layers" and lm.model.config.model_type == "gemma3_text"
    love = ActAdd("Love", "Hate", layer=1, coeff=4.0)
    vector = lm.steering_vector(love)
    expected = ref.actadd_vector(twin, lm.tokenizer, "Love", "Hate", love.layer, True)
    assert (vector.vector - expected).abs().max() <= 1e-5
    ids = lm.encode(PROMPTS[0]).ids
    steered = lm.next_token_logits([PROMPTS[0]], steer=love)[0]
    want = ref.steered_logits(twin, ids, [ref.Add(love.layer, love.coeff * expected, 1)])[-1]
    assert (steered - want).abs().max() <= 1e-4
    assert (steered - lm.next_token_logits([PROMPTS[0]])[0]).abs().max() > 1e-2
    for decode in ("static", "eager"):
        got = lm.complete([PROMPTS[0]], steer=love, temperature=0, max_new_tokens=8, decode=decode)[0]
        assert lm.last_generation.decode == decode, lm.last_generation.reason
        reference = ref.greedy(twin, ids, [ref.Add(love.layer, love.coeff * expected, 1)], 8, lm.tokenizer.eos_token_id)
        assert list(got.token_ids) == reference, decode
    assert hook_count(lm.model) == 0
