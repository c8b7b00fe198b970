"""The cross-engine check: a control vector run through llama.cpp's `llama-completion` (plain
completion; `llama-cli` is a chat front-end now) and scored as `exports.check_vectors` scores our own
engine: the sentiment difference against unsteered llama.cpp rows on the same prompts and seeds,
and the perplexity ratio under our unsteered model.

The vector goes in as one token, `--control-vector-scaled FILE:SCALE` (the two-argument form is
gone). llama.cpp logs a file it refuses on an `E` line ("failed to load control vector file") and,
depending on the version, either stops or generates unsteered with exit status 0: either way it is
an error here, so an unsteered run is never reported as the vector's effect.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from actadd_notes.errors import SteeringError
from actadd_notes.experiments.exports import VectorCheck, measure
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.steering.lm import Completion, SteerableLM

BINARY = "llama-completion"
_ERROR_LINE = re.compile(r"^(?:[\d.]+ )?E (.*)$", re.MULTILINE)  # llama.cpp's log: [time] LEVEL message
_TIMEOUT_S = 300


def find_llama_completion() -> str | None:
    return shutil.which(BINARY)


def llama_cpp_check(
    lm: SteerableLM,
    binary: str,
    model_gguf: Path,
    vector_file: Path,
    prompts: Sequence[str],
    *,
    scale: float = 1.0,
    samples: int,
    max_new_tokens: int = 20,
    seed: int = 0,
) -> VectorCheck:
    """llama.cpp's rows with `vector_file` at `scale` against its rows without, on the same seeds."""
    rows = [prompt for prompt in prompts for _ in range(samples)]
    runs = {
        steered: [
            _complete(
                lm, binary, model_gguf, prompt, seed + row, max_new_tokens, (vector_file, scale) if steered else None
            )
            for row, prompt in enumerate(rows)
        ]
        for steered in (False, True)
    }
    return measure(lm, "llama.cpp (llama-completion)", scale, runs[False], runs[True])


def _complete(
    lm: SteerableLM,
    binary: str,
    model_gguf: Path,
    prompt: str,
    seed: int,
    max_new_tokens: int,
    vector: tuple[Path, float] | None,
) -> Completion:
    sampling = ExperimentSpec(prompts=(prompt,))  # the spec defaults' sampling, as our check uses
    command = [
        binary, "-m", str(model_gguf), "-p", prompt, "-n", str(max_new_tokens), "-s", str(seed), "-no-cnv",
        "--no-display-prompt", "--simple-io", "--no-warmup", "-t", "1",
        "--temp", str(sampling.temperature), "--top-p", str(sampling.top_p),
        "--frequency-penalty", str(sampling.freq_penalty),
    ]  # fmt: skip
    if vector is not None:
        command += ["--control-vector-scaled", f"{vector[0]}:{vector[1]:g}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SteeringError(f"{binary}: could not run ({error})") from None
    errors = _ERROR_LINE.findall(done.stderr)
    if vector is not None and errors:
        raise SteeringError(f"{vector[0]}: llama.cpp rejected the control vector: {errors[0].strip()}")
    if done.returncode != 0:
        last = (errors or done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SteeringError(f"{binary} exited with status {done.returncode}: {last.strip()}")
    text = done.stdout.rstrip("\n").removesuffix(" [end of text]")
    tokens = tuple(lm.tokenizer.encode(text, add_special_tokens=False))
    return Completion(prompt, text, lm.encode(prompt).ids, tokens, seed)
