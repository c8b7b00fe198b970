"""Tiny builders for engine tests: a byte-level BPE tokenizer trained in memory and 3-layer
randomly initialised causal LMs of twelve families. Nothing is downloaded; everything is
seeded, float32 and in eval mode, so two builds of the same family are bit-identical."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import pytest
import torch

from actadd_notes.steering.lm import SteerableLM

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SYSTEM_PROMPT = "You are a tiny test assistant."
CHAT_TEMPLATE = (
    "{{ bos_token }}<|system|>" + SYSTEM_PROMPT + "<|end|>\n"
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "I hate you because you are mean.",
    "I love you because you are kind.",
    "Love and peace, not hate and war.",
    "The weather today is nice and the sun is out.",
    "Happy people sing; sad people cry.",
    "Hi there, how are you? I am fine, thank you.",
    "She went to the market and bought apples, bread and milk.",
    "When I think about weddings, I think about flowers.",
    "Anger is a feeling. Calm is a feeling too.",
]

FAMILIES = (
    "gpt2",
    "gptj",
    "gpt_neox",
    "opt",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi3",
    "gemma3_text",
)

# where find_blocks must find each family's decoder blocks
BLOCK_PATH = {
    "gpt2": "transformer.h",
    "gptj": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "phi3": "model.layers",
    "gemma3_text": "model.layers",
}

N_LAYERS = 3
INIT = 0.2


@lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def tiny_tokenizer():
    """A fresh `PreTrainedTokenizerFast` (ids: <pad>=0, <bos>=1, <eos>=2); ' ' is one token."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def vocab_size() -> int:
    return len(tiny_tokenizer())


def tiny_config(family: str):
    import transformers as t

    # initializer_range 0.2 (not the usual 0.02) gives logits with a spread like a trained model's
    # (std ≈ 1), so greedy choices are not near-ties and steering visibly moves them
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    init = {"initializer_range": INIT}
    v, n = vocab_size(), N_LAYERS
    llama_like = {
        "vocab_size": v,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": n,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        **ids,
        **init,
    }
    if family == "gpt2":
        return t.GPT2Config(vocab_size=v, n_embd=32, n_layer=n, n_head=4, n_positions=256, **ids, **init)
    if family == "gptj":
        return t.GPTJConfig(vocab_size=v, n_embd=32, n_layer=n, n_head=4, rotary_dim=4, n_positions=256, **ids, **init)
    if family == "gpt_neox":
        return t.GPTNeoXConfig(
            vocab_size=v,
            hidden_size=32,
            num_hidden_layers=n,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=256,
            **ids,
            **init,
        )
    if family == "opt":
        return t.OPTConfig(
            vocab_size=v,
            hidden_size=32,
            num_hidden_layers=n,
            num_attention_heads=4,
            ffn_dim=64,
            word_embed_proj_dim=32,
            max_position_embeddings=256,
            init_std=INIT,
            **ids,
        )
    if family == "llama":
        return t.LlamaConfig(**llama_like)
    if family == "mistral":
        return t.MistralConfig(**llama_like, sliding_window=256)
    if family == "qwen2":
        return t.Qwen2Config(**llama_like)
    if family == "qwen3":
        return t.Qwen3Config(**llama_like, head_dim=8)
    if family == "gemma":
        return t.GemmaConfig(**llama_like, head_dim=8)
    if family == "gemma2":
        return t.Gemma2Config(**llama_like, head_dim=8, sliding_window=256)
    if family == "phi3":
        return t.Phi3Config(**llama_like)
    return _later_family_config(family)


def _later_family_config(family: str):
    """Families added after the first eleven (their branches would make `tiny_config` too long); Gemma 3
    goes by its text model's `model_type`, as the decode loop's family list does."""
    if family == "gemma3_text":
        return gemma3_config(sliding_window=256)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def tiny_model(family: str = "llama", *, seed: int = 0):
    """A 3-layer randomly initialised causal LM of `family` (float32, eval mode)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def tiny_lm(family: str = "llama", prepend_bos: bool | None = None, *, seed: int = 0) -> SteerableLM:
    return SteerableLM(tiny_model(family, seed=seed), tiny_tokenizer(), name=f"tiny-{family}", prepend_bos=prepend_bos)


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def tiny_mpt(*, seed: int = 0):
    """An MPT model: its blocks live at `transformer.blocks`, a path `find_blocks` does not know."""
    import transformers as t

    config = t.MptConfig(
        d_model=32,
        n_heads=4,
        n_layers=N_LAYERS,
        vocab_size=vocab_size(),
        max_seq_len=256,
        initializer_range=INIT,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return t.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@contextmanager
def one_torch_thread():
    """Run tiny models on one CPU thread: on small VMs, waking a second intra-op thread costs
    ~20 ms per matmul, a hundred times the matmul itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def tiny_threads():
    """Import into a test module (`from tiny import tiny_threads`) to run it on one thread."""
    with one_torch_thread():
        yield


def tiny_chat_tokenizer():
    """`tiny_tokenizer` that knows the chat template's `<|end|>` as a special token (id `vocab_size()`),
    as instruction-tuned tokenizers know `<end_of_turn>` or `<|eot_id|>`; models need one more row."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    return tokenizer


def gemma3_config(*, sliding_window: int, layers: int = N_LAYERS):
    """A tiny Gemma 3 text model: sliding-window layers around a global one (`layer_types`), query-key
    norms, four norms per block, tied embeddings scaled by √hidden, and separate rope bases per kind."""
    import transformers as t

    kinds = ["sliding_attention", "full_attention"]
    return t.Gemma3TextConfig(
        vocab_size=vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        sliding_window=sliding_window,
        layer_types=[kinds[layer % 2] for layer in range(layers)],
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=INIT,
    )
