"""Hostile vaults, round two (issue 22): the classes fixed so far, each with a test that failed before
its fix, on real files, a real watcher process and a real full file system.

- one number (400 digits) or one over-long link in a spec killed the watcher, and again on every restart;
- a run too large for `max_generations` was refused only after the model had loaded;
- `compare` rewrote `Results/Sweep comparison.md` whole, dropping the user's notes and any note of that name;
- a full disk while writing a job's claim killed the watcher with a raw OSError.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_watcher_e2e import WatchProcess, watch_processes
from vaults import example_vault, idle_vault, props, spec_text, tiny_model_dir, write_spec

from actadd_notes.errors import ActaddError, SpecError, VaultError
from actadd_notes.experiments.spec import parse_spec
from actadd_notes.jobs import DONE, FAILED, JobRunner, ModelSlot
from actadd_notes.vault.config import VaultConfig
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


def test_the_corpus_is_what_the_test_expects():
    assert sorted(p.name for p in CORPUS.glob("*.md")) == sorted(KEYS)


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


@pytest.fixture
def full_vault(tmp_path):
    """A vault on a real 64 KiB tmpfs, filled to the last byte (needs the right to mount)."""
    vault = tmp_path / "full"
    vault.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(vault)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        (vault / ".actadd-notes" / "jobs").mkdir(parents=True)
        fd = os.open(vault / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 1024):  # unbuffered: the write that finds no room raises here
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield vault
    finally:
        subprocess.run(["umount", str(vault)], check=False)


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
