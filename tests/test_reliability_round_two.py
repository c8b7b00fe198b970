"""Hostile vaults, round two (issue 22): the classes fixed so far, each with a test that failed before
its fix, on real files, a real watcher process and a real full file system.

- one number (400 digits) or one over-long link in a spec killed the watcher, and again on every restart;
  properties never closed by `---` were ignored without a word;
- a run too large for `max_generations` was refused only after the model had loaded; an 8,000-token
  `prompt_add` and a 3,000-row pairs note ran forward passes (one unbatched) before any check;
- `compare` rewrote `Results/Sweep comparison.md` whole, dropping the user's notes and any note of that name;
- a full disk while writing a job's claim killed the watcher with a raw OSError;
- a user saving the spec every few tens of milliseconds made a progress write give up and end the run;
- an escaped pipe in a pairs table, `temperature: 1e-300` (empty completions), and a link into
  `.obsidian/` ("refusing to write" for a read).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_watcher_e2e import WatchProcess, watch_processes
from tiny import tiny_lm
from vaults import example_vault, idle_vault, props, spec_text, tiny_model_dir, write_spec

from actadd_notes.errors import ActaddError, SpecError, VaultError
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.spec import MAX_PAIRS, parse_spec
from actadd_notes.jobs import DONE, FAILED, JobRunner, ModelSlot
from actadd_notes.steering.contrast import PAIR_BATCH, pair_differences
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.pairs import read_pairs
from actadd_notes.watcher.lock import JobClaims

pytestmark = pytest.mark.timeout(300)

CORPUS = Path(__file__).parent / "data" / "hostile-specs"
# what each corpus note's error names: the key it broke
KEYS = {
    "huge-coeff.md": "coeff", "huge-temperature.md": "temperature", "huge-top_p.md": "top_p",
    "huge-freq_penalty.md": "freq_penalty", "huge-max_perplexity_ratio.md": "max_perplexity_ratio",
    "huge-samples.md": "samples", "huge-seed.md": "seed", "huge-extra-coeff.md": "extra_additions",
    "long-pairs-link.md": "pairs", "samples-billion.md": "max_generations",
}  # fmt: skip


UNCLOSED = "unclosed-properties.md"  # no line --- closes its properties: passed over, said in its body


def test_the_corpus_is_what_the_test_expects():
    assert sorted(p.name for p in CORPUS.glob("*.md")) == sorted([*KEYS, UNCLOSED])


def test_no_note_of_the_hostile_corpus_stops_a_real_watcher(idle_vault, tiny_model_dir, watch_processes):
    experiments = idle_vault / "Experiments"
    for note in CORPUS.glob("*.md"):
        shutil.copy(note, experiments / note.name)
    good = write_spec(idle_vault, "zz-good", tiny_model_dir)  # queued after every hostile note
    watcher = watch_processes(idle_vault)
    watcher.wait_for_output("done Experiments/zz-good.md", timeout=240)
    assert watcher.process.poll() is None, watcher.output()  # still watching
    assert watcher.stop() == 0
    assert props(good)["status"] == DONE
    for name, key in KEYS.items():
        p = props(experiments / name)
        assert p["status"] == FAILED, (name, p)
        assert p["error"].startswith(f"Experiments/{name}: {key}: "), p["error"]
        assert len(p["error"]) < 600, p["error"]  # a huge value is not quoted whole
    assert "Traceback" not in watcher.output()
    assert f"Experiments/{UNCLOSED}: its properties open with --- but no line --- closes them" in watcher.output()
    unclosed = (experiments / UNCLOSED).read_text()
    assert unclosed.startswith((CORPUS / UNCLOSED).read_text())  # the user's text stays, byte for byte
    assert "> [!error] actadd-notes cannot read this note's properties" in unclosed


def _never_load(name, **options):
    raise AssertionError("the model was loaded for a spec that could not run")


def test_a_run_over_max_generations_is_refused_before_the_model_loads(example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "huge", tiny_model_dir, samples=10**9)
    outcome = JobRunner(VaultConfig.load(example_vault), models=ModelSlot(_never_load)).run(spec)
    assert outcome.status == FAILED and outcome.error.startswith("Experiments/huge.md: max_generations: ")


NUMBERS = st.one_of(
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-(10**40), max_value=10**40), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
KEYS_WITH_VALUES = (
    "coeff", "layer", "samples", "max_new_tokens", "seed", "temperature", "top_p", "top_k", "freq_penalty",
    "max_perplexity_ratio", "confirm_samples", "prompt_tokens", "max_generations", "offset", "trials", "batch_size",
    "prompt_baseline", "confirm_prompts", "prompts", "pairs", "extra_additions", "prompt_add", "align",
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS_WITH_VALUES), value=NUMBERS, bayes=st.booleans())
def test_parsing_any_value_either_succeeds_or_says_what_is_wrong(key, value, bayes):
    properties = {"prompt_add": "Love", "prompt_sub": "Hate", "layer": 1, "coeff": 1, "prompts": ["I hate you"]}
    properties["search"] = "bayes" if bayes else "grid"
    properties[key] = value
    try:
        parse_spec(properties)
    except ActaddError as error:
        assert str(error) and len(str(error)) < 2_000


# --- compare keeps the user's words ------------------------------------------------------------


def _compare(vault: Path) -> subprocess.CompletedProcess[str]:
    import sys

    command = [sys.executable, "-c", "from actadd_notes.cli import main; main()", "compare", "--vault", str(vault)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_compare_keeps_the_users_notes_and_never_replaces_a_note_it_did_not_write(example_vault):
    first = _compare(example_vault)
    assert first.returncode == 0, first.stderr
    note = example_vault / "Results" / "Sweep comparison.md"
    text = note.read_text()
    assert "%% begin notes %%\n\n%% end notes %%" in text
    note.write_text(text.replace("%% begin notes %%\n", "%% begin notes %%\nWhy L6 keeps winning: see [[Lit]].\n"))
    assert _compare(example_vault).returncode == 0
    assert "%% begin notes %%\nWhy L6 keeps winning: see [[Lit]].\n%% end notes %%" in note.read_text()

    mine = "---\ntags: [planning]\n---\nMy own comparison of sweeps, written by hand.\n"
    note.write_text(mine)
    refused = _compare(example_vault)
    assert refused.returncode != 0
    assert "Sweep comparison.md is a note the tool did not write" in refused.stderr
    assert note.read_text() == mine


# --- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A real tmpfs of `size` mounted on `folder` for the block (skips where mounting is not allowed)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write into `folder` until the file system has no byte left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 1024):  # unbuffered: the write that finds no room raises here
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.fixture
def full_vault(tmp_path):
    """A vault on a real 64 KiB tmpfs, filled to the last byte."""
    with tmpfs(tmp_path / "full", "64k") as vault:
        (vault / ".actadd-notes" / "jobs").mkdir(parents=True)
        fill(vault)
        yield vault


def test_a_claim_on_a_full_disk_is_a_vault_error_and_leaves_no_file(full_vault):
    claims = JobClaims(full_vault)
    with pytest.raises(VaultError, match="cannot write .*No space left on device"):
        claims.claim(full_vault / "Experiments" / "love.md", "watcher")
    assert list((full_vault / ".actadd-notes" / "jobs").iterdir()) == []
    (full_vault / "filler").unlink()  # room again: the same claim goes through
    assert claims.claim(full_vault / "Experiments" / "love.md", "watcher")
    claims.close()


def test_spec_errors_name_only_the_key(tmp_path):
    with pytest.raises(SpecError, match=r"^coeff: a number of about 401 digits is too large for a number$"):
        parse_spec({"prompt_add": "a", "prompt_sub": "b", "layer": 1, "coeff": 10**400, "prompts": ["x"]})
    assert json.dumps(KEYS)


# --- a note the user keeps saving during the run -------------------------------------------------

APPENDER = """
import sys, time
path, stop = sys.argv[1], sys.argv[2]
n = 0
while True:
    try:
        open(stop).close()
        break
    except FileNotFoundError:
        pass
    with open(path, "a", encoding="utf-8") as note:
        note.write(f"typing {n}\\n")
    n += 1
    time.sleep(0.05)
"""


def test_a_spec_saved_every_50_ms_during_the_run_still_gets_its_final_status(example_vault, tiny_model_dir, tmp_path):
    import sys

    spec = write_spec(example_vault, "busy", tiny_model_dir, samples=6, max_new_tokens=12)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", APPENDER, str(spec), str(stop)])
    try:
        outcome = JobRunner(VaultConfig.load(example_vault), models=ModelSlot(device="cpu")).run(spec)
    finally:
        stop.touch()
        writer.wait(30)
    assert outcome.status == DONE, outcome.error
    text = spec.read_text()
    assert props(spec)["status"] == DONE
    typed = [int(line.split()[1]) for line in text.splitlines() if line.startswith("typing ")]
    assert typed == list(range(len(typed))) and len(typed) > 10  # every line the user typed is there, in order


# --- what a note may make the model compute, checked before the first forward pass ---------------


@contextlib.contextmanager
def forward_passes(model):
    """The batch size of every forward pass of `model` while inside."""
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        yield sizes
    finally:
        handle.remove()


def _spec(**changes):
    properties = {"prompt_add": "Love", "prompt_sub": "Hate", "layer": 1, "coeff": 1, "prompts": ["I hate you because"]}
    return parse_spec({**properties, "samples": 1, "max_new_tokens": 2, **changes})[0]


def test_a_steering_text_longer_than_the_context_is_refused_without_a_forward_pass():
    lm = tiny_lm("llama")
    with forward_passes(lm.model) as sizes, pytest.raises(SpecError, match=r"^prompt_add: a text of [\d,]+ tokens"):
        run_experiment(_spec(prompt_add="love " * 400), lm)
    assert sizes == []


def test_an_addition_wider_than_a_prompt_is_refused_without_a_forward_pass():
    lm = tiny_lm("llama")
    with forward_passes(lm.model) as sizes, pytest.raises(SpecError, match="has 4 token"):
        run_experiment(_spec(prompt_add="love " * 30), lm)
    assert sizes == []


def test_a_pairs_note_of_thousands_is_read_in_bounded_batches_and_capped():
    lm = tiny_lm("llama")
    pairs = [(f"I love {n}", f"I hate {n}") for n in range(100)]
    whole, _ = lm.activations([text for pair in pairs for text in pair])
    with forward_passes(lm.model) as sizes:
        batched = pair_differences(lm, pairs, pair_position="mean")
    assert max(sizes) <= PAIR_BATCH and sum(sizes) == 200
    assert torch.allclose(batched.vector(1).vector, _mean_difference(lm, whole, pairs, layer=1), atol=1e-5)
    too_many = [{"add": f"a {n}", "sub": f"b {n}"} for n in range(MAX_PAIRS + 1)]
    with pytest.raises(SpecError, match=f"^pairs: {MAX_PAIRS + 1:,} pairs — at most {MAX_PAIRS:,}"):
        _spec(method="mean_difference", pairs=too_many, prompt_add=None, prompt_sub=None)


def _mean_difference(lm, stacked, pairs, layer):
    """The mean over pairs of each prompt's mean activation (BOS excluded), from one unbatched pass."""
    first = 1 if lm.prepend_bos else 0
    texts = [text for pair in pairs for text in pair]
    means = [stacked[layer, i, first : len(lm.encode(t).ids)].float().mean(0) for i, t in enumerate(texts)]
    return (torch.stack(means[0::2]) - torch.stack(means[1::2])).mean(0, keepdim=True)


def test_a_pipe_escaped_in_a_pairs_table_is_text_as_obsidian_writes_it(example_vault):
    (example_vault / "Pairs").mkdir()
    (example_vault / "Pairs" / "pipes.md").write_text(
        "| add | sub |\n|---|---|\n| either \\| or | neither \\| nor |\n\n- one \\| two | three\n", encoding="utf-8"
    )
    _, pairs = read_pairs(VaultConfig.load(example_vault), "[[pipes]]")
    assert pairs == [("either | or", "neither | nor"), ("one | two", "three")]


def test_a_temperature_that_would_overflow_the_logits_is_refused():
    with pytest.raises(SpecError, match="^temperature: 1e-300 must be ≥ 0.001"):
        _spec(temperature=1e-300)


def test_a_link_into_the_config_folder_is_refused_as_a_read(example_vault):
    with pytest.raises(VaultError, match="refusing to read or write inside .obsidian/"):
        read_pairs(VaultConfig.load(example_vault), "[[.obsidian/app]]")


@pytest.fixture
def small_vault(tmp_path):
    """A vault on a real 200 KiB tmpfs."""
    with tmpfs(tmp_path / "small", "200k") as vault:
        (vault / ".obsidian").mkdir()
        yield vault


def test_run_on_a_nearly_full_disk_fails_the_note_with_a_callout_and_no_traceback(small_vault, tiny_model_dir):
    import sys

    spec = write_spec(small_vault, "love", tiny_model_dir, literature=[])
    room = os.statvfs(small_vault)
    fd = os.open(small_vault / "filler", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"\0" * max(0, room.f_bavail * room.f_frsize - 30_000))  # 30 KB left: the note, not the plots
    os.close(fd)
    command = [sys.executable, "-c", "from actadd_notes.cli import main; main()", "run", str(spec), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "No space left on device" in done.stdout + done.stderr
    p = props(spec)
    assert p["status"] == FAILED and "No space left on device" in p["error"]
    assert "> [!error] actadd-notes could not run this experiment" in spec.read_text()


def test_a_real_watcher_on_a_full_disk_logs_the_failed_claim_and_goes_on(small_vault, tiny_model_dir, watch_processes):
    spec = write_spec(small_vault, "love", tiny_model_dir, status="draft", literature=[])
    watcher = watch_processes(small_vault)
    watcher.wait_for_output("watching ", timeout=90)
    fill(small_vault)
    text = spec.read_text()
    with open(spec, "r+", encoding="utf-8") as note:  # in place: a full disk still takes an edit of a few bytes
        note.write(text.replace("status: draft", "status: queued", 1))
    watcher.wait_for_output("Experiments/love.md: cannot write", timeout=60)
    assert watcher.process.poll() is None, watcher.output()  # the watcher goes on
    assert "Traceback" not in watcher.output()
    assert not list((small_vault / ".actadd-notes" / "jobs").glob("*.json"))  # no half-written claim
    assert watcher.stop() == 0
