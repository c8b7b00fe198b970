"""The `actadd-notes` command: thin click commands over the library.

torch and transformers are imported only inside the commands that need a model, so
`--help`, `new` and `lit` start instantly. Library errors (ActaddError) become click errors
at one boundary, `_Group.invoke`, which also takes the terminal's input away from every command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from actadd_notes import __version__
from actadd_notes.errors import ActaddError

if TYPE_CHECKING:
    from actadd_notes.jobs import JobOutcome, JobRunner
    from actadd_notes.scaleout.executor import RayExecutor
    from actadd_notes.steering.lm import SteerableLM
    from actadd_notes.steering.vectors import SteeringVector
    from actadd_notes.vault.config import VaultConfig

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1  # a job failed or was cancelled; click uses 2 for usage errors
LOCAL_RAY = "local"  # `--ray` with no address


def vault_option(function: F) -> F:
    return click.option(
        "--vault",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="ACTADD_NOTES_VAULT",
        help="Vault root (the folder holding .obsidian/); default: found from the note or the current folder. "
        "Env: ACTADD_NOTES_VAULT.",
    )(function)


def model_options(function: F) -> F:
    function = click.option(
        "--dtype",
        default="auto",
        show_default=True,
        envvar="ACTADD_NOTES_DTYPE",
        help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16.",
    )(function)
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        envvar="ACTADD_NOTES_DEVICE",
        help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps.",
    )(function)


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")(function)


def _config(vault: Path | None, start: Path | None = None) -> VaultConfig:
    from actadd_notes.vault.config import VaultConfig, find_vault_root

    root = vault if vault is not None else find_vault_root((start or Path.cwd()).resolve())
    return VaultConfig.load(root.resolve())


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _check_device(device: str, dtype: str) -> None:
    """Refuse --device/--dtype this machine cannot use before any model loads or note changes.
    The defaults are always usable, and checking anything needs torch and transformers (1.5–2 s of
    `watch`'s start-up on a 2-core machine), so they pass unchecked."""
    if device in ("auto", "cpu") and dtype == "auto":
        return
    from actadd_notes.process import collector_paused

    with collector_paused():
        import torch

        from actadd_notes.steering.models import resolve_device, resolve_dtype

    target = resolve_device(device)
    resolve_dtype(dtype, target)
    mps = getattr(torch.backends, "mps", None)
    present = {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available())}
    if not present.get(target.type, True):
        raise click.ClickException(
            f"--device {device}: this machine has no {target.type} device (torch {torch.__version__}); use auto or cpu"
        )


def _runner(config: VaultConfig, device: str, dtype: str, executor: RayExecutor | None = None) -> JobRunner:
    from actadd_notes.jobs import JobRunner, ModelSlot

    _check_device(device, dtype)
    announce = lambda line: click.echo(line, err=True)
    models = ModelSlot(_load_quietly, announce=announce, device=device, dtype=dtype)
    return JobRunner(config, models=models, executor=executor)


@contextlib.contextmanager
def _executor(config: VaultConfig, dtype: str, address: str | None, actors: int | None) -> Iterator[RayExecutor | None]:
    """The Ray executor that `--ray` or the vault's `executor: ray` asks for (None: this process),
    stopped on the way out. `--ray` without an address is the config's address, else a local instance."""
    if address is None and config.executor != "ray":
        yield None
        return
    from actadd_notes.scaleout.executor import RayExecutor, RaySettings

    settings = RaySettings(
        address=config.ray_address if address in (None, LOCAL_RAY) else address,
        actors=actors or config.ray_actors,
        gpus_per_actor=config.ray_gpus_per_actor,
        dtype=dtype,
    )
    click.echo(f"starting Ray ({settings.address or 'a local instance'})…", err=True)
    with RayExecutor(settings) as executor:
        click.echo(f"Ray: {executor.describe()}", err=True)
        yield executor


def _load_quietly(name: str, **options: Any) -> SteerableLM:
    """`load_model` without transformers' progress bars and warnings (imported with the first model)."""
    from actadd_notes.process import collector_paused

    with collector_paused():
        from actadd_notes.steering.models import load_model

        _quiet_transformers()
        return load_model(name, **options)


class _ProgressBar:
    """A tqdm bar fed by the runner's (done, total, stage) callback."""

    def __init__(self, description: str):
        from tqdm.auto import tqdm

        # disable=None: no bar when stderr is no terminal (a log file, a script)
        self.bar = tqdm(total=0, desc=description, unit="gen", leave=False, file=sys.stderr, disable=None)

    def __call__(self, done: int, total: int, stage: str) -> None:
        self.bar.total = total
        self.bar.set_postfix_str(stage)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _stopped_by(*signals: signal.Signals) -> Iterator[threading.Event]:
    """An event the first of `signals` sets (the job stops at its next batch); the previous
    handlers are back on exit. Off the main thread Python installs no handler: nothing sets it."""
    stop = threading.Event()

    def stop_now(signum: int, frame: FrameType | None) -> None:
        click.echo("\nstopping after the current batch…", err=True)
        stop.set()

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop_now) for sig in signals} if main_thread else {}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_one(runner: JobRunner, note: Path) -> JobOutcome:
    """Run one note; Ctrl-C stops at the next batch and puts the note back to `queued`."""
    bar = _ProgressBar(note.stem)
    try:
        with _stopped_by(signal.SIGINT) as stop:
            return runner.run(note, progress=bar, interrupted=stop.is_set)
    finally:
        bar.close()


def _report(outcome: JobOutcome, config: VaultConfig, as_json: bool) -> None:

    result = config.relative(outcome.result_note) if outcome.result_note else None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "note": config.relative(outcome.note),
                    "status": outcome.status,
                    "result_note": result,
                    "error": outcome.error,
                    "summary": outcome.summary,
                }
            )
        )
        return
    if outcome.error:
        click.echo(f"{outcome.status}: {outcome.error}", err=True)
    else:
        click.echo(f"{outcome.status}: {outcome.summary}")
    if result:
        click.echo(f"result note: {config.root / result}")


@contextlib.contextmanager
def _no_terminal_input() -> Iterator[None]:
    """stdin is /dev/null while a command runs, file descriptor 0 included (C code, child
    processes): a job never reads the terminal. transformers asks there before it runs a
    model's custom code (`trust_remote_code`), and nothing typed or piped in may answer it."""
    try:
        saved: int | None = os.dup(0)
    except OSError:  # no stdin at all
        saved = None
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    previous, sys.stdin = sys.stdin, open(os.devnull, encoding="utf-8")  # noqa: SIM115  (closed below)
    try:
        yield
    finally:
        sys.stdin.close()
        sys.stdin = previous
        if saved is None:
            os.close(0)
        else:
            os.dup2(saved, 0)
            os.close(saved)


class _Group(click.Group):
    """The one boundary where library errors become click errors (exit status 1), and where
    commands lose the terminal's input (`_no_terminal_input`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _no_terminal_input():
                return super().invoke(ctx)
        except ActaddError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="actadd-notes")
def cli() -> None:
    """Activation-addition (ActAdd) steering experiments from an Obsidian vault.

    \b
    Examples:
      actadd-notes demo                          # example vault + embedded model, end to end
      actadd-notes new "love hate sweep"         # scaffold a spec note
      actadd-notes run Experiments/love-hate-sweep.md
      actadd-notes watch ~/vault                 # run every spec note set to `status: queued`
      actadd-notes lit turnerActivationAdditionSteering2024
    """


@cli.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@vault_option
@model_options
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value=LOCAL_RAY,
    default=None,
    metavar="[ADDRESS]",
    help="Generate on Ray actors (the `ray` extra): a cluster's address, or none for the vault's or a local one.",
)
@click.option(
    "--actors", type=click.IntRange(min=1), default=None, help="With --ray: how many actors (default: one per GPU)."
)
@json_option
def run(
    spec: Path, vault: Path | None, device: str, dtype: str, ray_address: str | None, actors: int | None, as_json: bool
) -> None:
    """Run the experiment spec note SPEC now and write its results into the vault.

    \b
    Example:
      actadd-notes run Experiments/love-hate-sweep.md --device cuda
      actadd-notes run Experiments/love-hate-sweep.md --ray            # a local Ray instance
      actadd-notes run Experiments/love-hate-sweep.md --ray head:6379  # a running cluster
    """
    from actadd_notes.jobs import DONE
    from actadd_notes.watcher.lock import JobClaims

    config = _config(vault, spec.resolve().parent)
    if actors is not None and ray_address is None and config.executor != "ray":
        raise click.UsageError("--actors needs --ray (or `executor: ray` in the vault's actadd-notes.yaml)")
    with _executor(config, dtype, ray_address, actors) as executor, JobClaims(config.root) as claims:
        runner = _runner(config, device, dtype, executor)
        if not claims.claim(spec.resolve(), "cli"):
            raise click.ClickException(f"{spec}: another process (a watcher?) is running this experiment")
        outcome = _run_one(runner, spec.resolve())
    _report(outcome, config, as_json)
    if outcome.status != DONE:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument(
    "vault", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path), envvar="ACTADD_NOTES_VAULT"
)
@click.option("--poll", is_flag=True, help="Poll for changes (synced or network drives) instead of OS events.")
@click.option(
    "--debounce-ms",
    default=1600,
    show_default=True,
    type=click.IntRange(min=1),
    help="Wait this long for a note to settle after a save.",
)
@model_options
def watch(vault: Path | None, poll: bool, debounce_ms: int, device: str, dtype: str) -> None:
    """Watch VAULT and run every spec note whose status is `queued`, one at a time.

    Set `status: queued` in a spec note to run it; set `status: cancelled` to stop it.
    Ctrl-C or SIGTERM stops at the next batch and puts the current job back in the queue.

    \b
    Example:
      actadd-notes watch ~/Documents/vault --poll
    """
    from actadd_notes.watcher import Watcher

    config = _config(vault)
    with _stopped_by(signal.SIGINT, signal.SIGTERM) as stop, _executor(config, dtype, None, None) as executor:
        watcher = Watcher(
            _runner(config, device, dtype, executor),
            debounce_ms=debounce_ms,
            force_polling=poll,
            stop_event=stop,
            log=lambda line: click.echo(f"{datetime.now():%H:%M:%S} {line}", err=True),
            concurrent=config.concurrent_specs,
        )
        with warnings.catch_warnings():
            # watchdog warns, at length, when a new folder tree (a run's artifacts) gets a watch
            # twice; harmless, and not the user's business
            warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
            watcher.serve()


@cli.command()
@click.argument("name")
@vault_option
@click.option("--model", default="embedded", show_default=True, help="Model the spec steers.")
@click.option(
    "--cite",
    "citekeys",
    multiple=True,
    metavar="CITEKEY",
    help="Cite this paper (its literature note is imported from Zotero if missing); repeat for several.",
)
def new(name: str, vault: Path | None, model: str, citekeys: tuple[str, ...]) -> None:
    """Scaffold a new experiment spec note NAME in the experiments folder.

    The note starts as `status: draft`; set it to `queued` when it is ready. With --cite, the
    spec cites the paper, lists the open questions of its literature note (its notes' bullets
    that end in "?") as a checklist, and the literature note lists the spec as planned.

    \b
    Example:
      actadd-notes new "wedding topic" --model meta-llama/Meta-Llama-3-8B
      actadd-notes new "bayes vs grid" --cite turnerActivationAdditionSteering2024
    """
    from actadd_notes.vault.planning import scaffold_spec

    config = _config(vault)
    planned = scaffold_spec(config, name, model=model, cite=citekeys, now=datetime.now())
    for paper in planned.papers:
        imported = " (imported from Zotero)" if paper.imported else ""
        count = len(paper.questions)
        click.echo(
            f"cites {paper.link}: {paper.note}{imported}, {count} open question{'' if count == 1 else 's'}", err=True
        )
    for warning in planned.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(planned.path)


@cli.command()
@click.argument("citekeys", nargs=-1, required=True)
@vault_option
@click.option(
    "--refresh", is_flag=True, help="Re-import notes that exist (your notes block and extra properties are kept)."
)
@click.option("--force", is_flag=True, help="With --refresh: drop lines typed outside the persist blocks.")
@json_option
def lit(citekeys: tuple[str, ...], vault: Path | None, refresh: bool, force: bool, as_json: bool) -> None:
    """Create (or --refresh) literature notes @CITEKEY.md from Zotero.

    Sources are tried in the vault's configured order: the Zotero 7 local API, the web API
    (ZOTERO_LIBRARY_ID / ZOTERO_API_KEY), Better BibTeX exports. A refresh that would drop
    text typed outside the Notes block (or data Zotero no longer has) lists those lines and
    writes nothing, unless --force.

    \b
    Example:
      actadd-notes lit turnerActivationAdditionSteering2024 konenStyleVectorsSteering2024
    """
    from actadd_notes.vault.literature import citekeys_from_links, ensure_literature_notes, refresh_literature_notes
    from actadd_notes.vault.templates import TemplateRenderer
    from actadd_notes.zotero import sources_from_config

    config = _config(vault)
    renderer = TemplateRenderer.for_vault(config)
    sources = sources_from_config(config)
    keys = citekeys_from_links(list(citekeys))
    if refresh:
        outcomes = refresh_literature_notes(config, renderer, keys, sources, force=force)
    else:
        outcomes = ensure_literature_notes(config, renderer, keys, sources)
    failed = {k: str(v) for k, v in outcomes.items() if isinstance(v, Exception)}
    written = {k: str(v) for k, v in outcomes.items() if not isinstance(v, Exception)}
    if as_json:
        click.echo(json.dumps({"written": written, "failed": failed}))
    else:
        for key, path in written.items():
            click.echo(f"{key}: {path}")
        for key, error in failed.items():
            click.echo(f"{key}: {error}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--add", "prompt_add", help="p+, the prompt steered towards.")
@click.option("--sub", "prompt_sub", help="p−, the prompt steered away from.")
@click.option(
    "--from-pairs",
    "pairs_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A pairs note (`| add | sub |` rows or `- add | sub` lines): the mean difference at each pair's last "
    "token instead of --add/--sub; the recommended export for llama.cpp.",
)
@click.option(
    "--layer",
    "layers",
    type=int,
    multiple=True,
    help="Block whose input (resid_pre) is steered; repeat for several layers (gguf only).",
)
@click.option("--coeff", type=float, help="Coefficient stored with a .safetensors vector (default 1).")
@click.option(
    "--strength",
    type=float,
    help="gguf: the stored direction's norm in residual norms of its layer (default 0.25; negative flips it), "
    "so that scale 1 is fluent.",
)
@click.option("--model", default="embedded", show_default=True, help="`embedded`, a Hugging Face id or a local path.")
@click.option("--pad-token", default=" ", show_default=True, help="Pads the shorter prompt (one token).")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["safetensors", "gguf"]),
    default="safetensors",
    show_default=True,
    help="safetensors: the per-position vector and its provenance. gguf: a llama.cpp control vector: per layer, "
    "the mean over the content positions at --strength; layers ≥ 2.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The file to write.")
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    help="A prompt the residual norm is measured on and --check generates from; repeat for several.",
)
@click.option("--check", is_flag=True, help="gguf: measure the file in position: all mode (and llama.cpp's).")
@click.option("--samples", type=click.IntRange(2), default=20, show_default=True, help="--check: samples per prompt.")
@click.option(
    "--llama-model",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="--check: the model as GGUF for llama-completion (default: the embedded model's own).",
)
@click.option(
    "--import",
    "import_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Print what a .gguf or .safetensors vector file holds and whether it fits --model; writes nothing.",
)
@model_options
def vector(
    prompt_add: str | None,
    prompt_sub: str | None,
    pairs_file: Path | None,
    layers: tuple[int, ...],
    coeff: float | None,
    strength: float | None,
    model: str,
    pad_token: str,
    file_format: str,
    out: Path | None,
    prompts: tuple[str, ...],
    check: bool,
    samples: int,
    llama_model: Path | None,
    import_file: Path | None,
    device: str,
    dtype: str,
) -> None:
    """Extract a steering vector and save it with its provenance, or (--import) describe a vector file.

    --format gguf writes a llama.cpp control vector: our layer l (the input of block l) is
    llama.cpp's direction.(l−1), added to the output of block l−1 at every token, so layers 0
    and 1 cannot be exported. It holds one row per layer: the mean over the positions where both
    prompts have a real token (rows of padding carry massive activations that would drown the
    direction), or the mean difference over --from-pairs, stored at --strength residual norms.

    \b
    Example:
      actadd-notes vector --add Love --sub Hate --layer 6 --coeff 4 --out love-hate-L6.safetensors
      actadd-notes vector --from-pairs pairs.md --layer 6 --format gguf --out love-hate.gguf --check
      actadd-notes vector --import love-hate.gguf
    """
    if import_file is not None:
        _describe_vector_file(import_file, model, prompts, device, dtype)
        return
    _check_vector_options(prompt_add, prompt_sub, pairs_file, layers, file_format, out, coeff, strength, check)
    assert out is not None
    _check_device(device, dtype)
    lm = _load_quietly(model, device=device, dtype=dtype)
    sources = _vector_sources(lm, prompt_add, prompt_sub, pairs_file, layers, coeff, pad_token)
    if file_format == "gguf":
        _export_gguf(lm, sources, out, strength, prompts, samples if check else 0)
        if check:
            _check_with_llama_cpp(lm, out, prompts, samples, llama_model, model)
        return
    [steering] = sources
    steering.save(out)
    norms = ", ".join(f"{n:.1f}" for n in steering.vector.float().norm(dim=-1).tolist())
    click.echo(
        f"{out}: {steering.positions} position(s) × {steering.vector.shape[-1]}, layer {layers[0]}, norms {norms}"
    )


def _check_vector_options(
    prompt_add: str | None,
    prompt_sub: str | None,
    pairs_file: Path | None,
    layers: tuple[int, ...],
    file_format: str,
    out: Path | None,
    coeff: float | None,
    strength: float | None,
    check: bool,
) -> None:
    """Refuse a combination of options that cannot work, before a model loads."""
    from actadd_notes.steering.control_vectors import direction_index

    if pairs_file is not None and (prompt_add is not None or prompt_sub is not None):
        raise click.UsageError("--from-pairs replaces --add and --sub: give one or the other")
    needed = [("--add", prompt_add), ("--sub", prompt_sub)] if pairs_file is None else []
    for name, value in [*needed, ("--layer", layers), ("--out", out)]:
        if not value:
            raise click.UsageError(f"Missing option '{name}' (--import FILE describes a file instead)")
    if file_format == "safetensors":
        if len(set(layers)) > 1:
            raise click.UsageError(
                "--layer: a .safetensors vector holds one layer; give one --layer, or --format gguf for several"
            )
        if strength is not None or check:
            raise click.UsageError("--strength and --check are for --format gguf")
        return
    if coeff is not None:
        raise click.UsageError("--coeff: a gguf export is stored at --strength residual norms; give --strength")
    for layer in layers:
        direction_index(layer)  # layers 0 and 1 fail here, before a model loads


def _vector_sources(
    lm: SteerableLM,
    prompt_add: str | None,
    prompt_sub: str | None,
    pairs_file: Path | None,
    layers: tuple[int, ...],
    coeff: float | None,
    pad_token: str,
) -> list[SteeringVector]:
    """The ActAdd vector, or the mean difference over the pairs note, at each layer."""
    from actadd_notes.steering.contrast import pair_differences
    from actadd_notes.steering.vectors import ActAdd
    from actadd_notes.vault.notes import Note
    from actadd_notes.vault.pairs import parse_pairs

    layers = tuple(dict.fromkeys(layers))
    if pairs_file is None:
        assert prompt_add is not None and prompt_sub is not None
        return [lm.steering_vector(ActAdd(prompt_add, prompt_sub, layer, coeff or 1.0, pad_token)) for layer in layers]
    for layer in layers:
        lm.check_layer(layer)
    pairs = parse_pairs(Note.read(pairs_file).body, pairs_file.name)
    if not pairs:
        raise click.ClickException(f"{pairs_file}: no pairs — write a table `| add | sub |` or lines `- add | sub`")
    differences = pair_differences(lm, pairs, pad_token=pad_token)
    return [differences.vector(layer).with_coeff(coeff or 1.0) for layer in layers]


def _describe_vector_file(path: Path, model: str, prompts: tuple[str, ...], device: str, dtype: str) -> None:
    """`--import`: the file is read and checked before the model loads."""
    from actadd_notes.experiments.exports import DEFAULT_PROMPTS, describe_file
    from actadd_notes.steering.vector_files import VectorFile

    read = VectorFile.read(path)
    _check_device(device, dtype)
    lm = _load_quietly(model, device=device, dtype=dtype)
    for line in describe_file(read, lm, prompts or DEFAULT_PROMPTS):
        click.echo(line)


def _export_gguf(
    lm: SteerableLM,
    sources: list[SteeringVector],
    out: Path,
    strength: float | None,
    prompts: tuple[str, ...],
    samples: int,
) -> None:
    """Write the control vector, say what it holds and at what strength, and (samples > 0) measure it."""
    from actadd_notes.experiments.exports import (
        DEFAULT_PROMPTS,
        DEFAULT_STRENGTH,
        SCALE_RANGE,
        check_vectors,
        export_vectors,
    )
    from actadd_notes.steering.control_vectors import direction_index, model_hint_of, save_control_vector

    used = prompts or DEFAULT_PROMPTS
    export = export_vectors(lm, sources, strength=DEFAULT_STRENGTH if strength is None else strength, prompts=used)
    save_control_vector(out, export.vectors, model_hint=model_hint_of(lm), units=export.units)
    parts = ", ".join(
        f"layer {v.layer} → direction.{direction_index(v.layer)} ({export.units['positions'][str(v.layer)]})"
        for v in export.vectors
    )
    width = export.vectors[0].vector.shape[-1]
    click.echo(f"{out}: llama.cpp control vector, {len(export.vectors)} direction(s) × {width}: {parts}")
    click.echo(
        f"  stored at {export.units['strength']:g} residual norms of each layer (norm "
        + ", ".join(f"{float(v.vector.norm()):.1f}" for v in export.vectors)
        + f"); scale 1 is that strength, try {SCALE_RANGE[0]:g}–{SCALE_RANGE[1]:g}"
    )
    click.echo(f"  run it with: llama-completion -m MODEL.gguf --control-vector-scaled {out}:1 -p PROMPT")
    if samples:
        click.echo("  " + check_vectors(lm, export.vectors, used, samples=samples).line())


def _check_with_llama_cpp(
    lm: SteerableLM, out: Path, prompts: tuple[str, ...], samples: int, llama_model: Path | None, model: str
) -> None:
    """The same measurement through llama.cpp, where `llama-completion` is on PATH."""
    from actadd_notes.experiments.exports import DEFAULT_PROMPTS
    from actadd_notes.experiments.llama_cpp import BINARY, find_llama_completion, llama_cpp_check
    from actadd_notes.steering.models import embedded_gguf

    binary = find_llama_completion()
    if binary is None:
        click.echo(f"  llama.cpp: no {BINARY} on PATH — the cross-engine check is skipped")
        return
    if llama_model is None and model != "embedded":
        click.echo("  llama.cpp: give --llama-model MODEL.gguf for the cross-engine check")
        return
    gguf_model = llama_model or embedded_gguf()
    click.echo("  " + llama_cpp_check(lm, binary, gguf_model, out, prompts or DEFAULT_PROMPTS, samples=samples).line())


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@model_options
@json_option
def demo(directory: Path | None, device: str, dtype: str, as_json: bool) -> None:
    """Copy the example vault to DIRECTORY (default: a new temp folder) and run its experiment.

    Uses the embedded SmolLM2-135M-Instruct; on a 2-core CPU the example sweep and its
    confirmation take a few minutes. Open DIRECTORY in Obsidian afterwards: result note, plots, journal, literature.
    DIRECTORY must be new or empty.

    \b
    Example:
      actadd-notes demo ~/actadd-demo --json
    """
    from actadd_notes._resources import shipped_dir
    from actadd_notes.jobs import DONE, QUEUED
    from actadd_notes.vault.config import VaultConfig
    from actadd_notes.vault.scan import spec_notes

    target = directory or Path(tempfile.mkdtemp(prefix="actadd-demo-")) / "vault"
    if target.exists() and any(target.iterdir()):
        raise click.ClickException(f"{target} is not empty: give a new folder")
    shutil.copytree(shipped_dir("vault_example"), target, dirs_exist_ok=True)
    config = VaultConfig.load(target.resolve())
    runner = _runner(config, device, dtype)
    outcomes = [_run_one(runner, note) for note, status in spec_notes(config) if status == QUEUED]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "vault": str(target),
                    "runs": [
                        {
                            "note": str(o.note),
                            "status": o.status,
                            "result_note": str(o.result_note) if o.result_note else None,
                            "summary": o.summary,
                            "error": o.error,
                        }
                        for o in outcomes
                    ],
                }
            )
        )
    else:
        for outcome in outcomes:
            _report(outcome, config, as_json=False)
        click.echo(f"vault: {target}  (open it in Obsidian: Open folder as vault)")
    if not outcomes or any(o.status != DONE for o in outcomes):
        sys.exit(EXIT_FAILED)


@cli.command()
@vault_option
@json_option
def compare(vault: Path | None, as_json: bool) -> None:
    """Write a note comparing the best setting of every run in the results folder.

    \b
    Example:
      actadd-notes compare --vault ~/Documents/vault
    """
    from actadd_notes.comparison import write_comparison

    config = _config(vault)
    path, runs = write_comparison(config)
    if as_json:
        click.echo(json.dumps({"note": str(path), "runs": runs}))
    else:
        click.echo(f"{path} ({runs} run{'s' if runs != 1 else ''})")


@cli.command()
@vault_option
@json_option
def doctor(vault: Path | None, as_json: bool) -> None:
    """Check what actadd-notes needs: torch and GPU, model cache, embedded model, vault, Zotero.

    Exit status 1 when a required check fails (optional ones, such as Zotero, only warn).

    \b
    Example:
      actadd-notes doctor --vault ~/Documents/vault --json
    """
    from actadd_notes.doctor import checks

    results = checks(vault)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results]))
    else:
        for r in results:
            click.echo(f"{'ok ' if r.ok else '!! '} {r.name}: {r.detail}")
    if not all(r.ok or not r.required for r in results):
        sys.exit(EXIT_FAILED)


def main() -> None:
    """The console script: the commands, then an exit without the interpreter's teardown (`process`)."""
    from actadd_notes.process import exit_process, exit_status

    try:
        cli(prog_name="actadd-notes")
    except SystemExit as exit_:
        exit_process(exit_status(exit_.code))
