"""Scale-out on Ray, with a real local Ray instance and a tiny real model: a sharded run gives
the single process's completions and statistics exactly (float32), survives a killed actor with
the same result, stops every actor within a batch when cancelled, and lets the watcher run two
specs at once, each exactly once. Shard cutting and the missing-Ray error need no cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray
from vaults import example_vault, idle_vault, result_notes, status, tiny_model_dir, vault, wait_for, write_spec

from actadd_notes.errors import Cancelled, ScaleOutError, VaultError
from actadd_notes.experiments.pipeline import run_experiment
from actadd_notes.experiments.results import Setting
from actadd_notes.experiments.rows import Row
from actadd_notes.experiments.spec import parse_spec
from actadd_notes.jobs import DONE, JobRunner, ModelSlot
from actadd_notes.scaleout import executor as executor_module
from actadd_notes.scaleout.executor import NAMESPACE, RayExecutor, RaySettings
from actadd_notes.scaleout.shards import cut, cut_batches, shard_size, spec_digest
from actadd_notes.steering.lm import Completion
from actadd_notes.vault.config import VaultConfig
from actadd_notes.watcher import Watcher

CLI = "from actadd_notes.cli import main; main()"
PROMPTS = ["I hate you because", "The weather today is", "My neighbour said that"]


def spec_of(model: Path, **overrides):
    properties = {
        "model": str(model),
        "dtype": "float32",
        "prompt_add": "Love",
        "prompt_sub": "Hate",
        "layer": [0, 1],
        "coeff": [1, 4],
        "prompts": PROMPTS,
        "samples": 4,
        "max_new_tokens": 8,
        "metrics": ["sentiment", "kl"],
        **overrides,
    }
    return parse_spec(properties)[0]


def comparable(result) -> str:
    """Everything a result says — settings, samples, confirmation, verdict, trials — but how it ran
    (the reproducibility record: executor, pids, timings). JSON, so NaN compares equal to NaN."""
    data = result.to_dict()
    data.pop("reproducibility")
    samples = [(s.stage, s.setting, s.prompt_index, s.sample, s.completion, s.scores) for s in result.samples]
    return json.dumps(data, sort_keys=True, default=str) + repr(samples)


# ------------------------------------------------------------------ no cluster needed
def test_shards_are_named_by_what_they_hold():
    rows = [Row(Setting(layer, 1.0), prompt, sample) for layer in (0, 1) for prompt in (0, 1) for sample in range(5)]
    assert shard_size(len(rows), workers=2) == 5  # two shards per worker
    assert shard_size(560, workers=2, floor=256) == 256 and shard_size(5600, workers=2, floor=256) == 1400
    assert shard_size(560, workers=2, fixed=100, floor=256) == 100  # the user's choice stands
    shards = cut(rows, 5, model="m|float32", spec="s")
    assert [s.start for s in shards] == [0, 5, 10, 15] and [r for s in shards for r in s.work] == rows
    again = cut(rows, 5, model="m|float32", spec="s")
    assert [s.key for s in shards] == [s.key for s in again]  # the same work has the same name
    assert len({s.key for s in shards}) == 4
    assert cut(rows, 5, model="m|float32", spec="other")[0].key != shards[0].key
    assert cut(rows, 5, model="m|bfloat16", spec="s")[0].key != shards[0].key


def test_scoring_shards_hold_whole_batches_of_the_plan():
    completions = [Completion("p", "t", (1, 2), (3, n), n) for n in range(10)]
    shards = cut_batches(completions, [3, 3, 3, 1], 4, model="m", spec="s")
    assert [[len(batch) for batch in shard.work] for shard in shards] == [[3, 3], [3, 1]]  # never part of one
    assert [c for shard in shards for batch in shard.work for c in batch] == completions
    assert [(s.start, s.size) for s in shards] == [(0, 6), (6, 4)]
    assert cut_batches(completions, [10], 4, model="m", spec="s")[0].size == 10  # one batch: one shard


def test_the_spec_digest_follows_what_decides_the_tokens(tiny_model_dir):
    spec = spec_of(tiny_model_dir)
    assert spec_digest(spec) == spec_digest(spec_of(tiny_model_dir))
    assert spec_digest(spec) != spec_digest(spec_of(tiny_model_dir, seed=1))


def test_asking_for_ray_without_it_is_a_clear_error(example_vault, tiny_model_dir):
    spec = write_spec(example_vault, "sharded", tiny_model_dir)
    script = "import sys; sys.modules['ray'] = None\n" + CLI  # as if the extra were not installed
    done = subprocess.run(
        [sys.executable, "-c", script, "run", str(spec), "--ray"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Ray is not installed" in done.stderr and "pip install 'actadd-notes[ray]'" in done.stderr
    assert status(spec) == "queued"  # refused before the note was touched


def test_vault_settings_for_ray_are_checked(vault):
    (vault / "actadd-notes.yaml").write_text("executor: slurm\n", encoding="utf-8")
    with pytest.raises(VaultError, match="executor: 'slurm': use local or ray"):
        VaultConfig.load(vault)
    (vault / "actadd-notes.yaml").write_text("concurrent_specs: 2\n", encoding="utf-8")
    with pytest.raises(VaultError, match="concurrent_specs: more than one spec at a time needs `executor: ray`"):
        VaultConfig.load(vault)
    (vault / "actadd-notes.yaml").write_text("executor: ray\nray_actors: 0\n", encoding="utf-8")
    with pytest.raises(VaultError, match="ray_actors: must be a whole number"):
        VaultConfig.load(vault)
    (vault / "actadd-notes.yaml").write_text(
        "executor: ray\nconcurrent_specs: 2\nray_address: auto\n", encoding="utf-8"
    )
    config = VaultConfig.load(vault)
    assert (config.executor, config.concurrent_specs, config.ray_address) == ("ray", 2, "auto")


# ------------------------------------------------------------------ a local Ray instance
@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (starting one takes seconds): 4 logical CPUs, so two
    one-thread actors and the driver fit even on a 2-core machine."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace=NAMESPACE)
    yield ray
    ray.shutdown()


@pytest.fixture
def executor(ray_instance):
    with RayExecutor(RaySettings(actors=2, cpus_per_actor=1)) as pool:
        yield pool


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from actadd_notes.steering.models import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.mark.ray
def test_an_actor_the_cluster_cannot_place_is_an_error_not_a_hang(ray_instance, monkeypatch):
    monkeypatch.setattr(executor_module, "ACTOR_START_S", 3)
    pool = RayExecutor(RaySettings(actors=1, gpus_per_actor=1))  # this cluster has no GPU
    try:
        with pytest.raises(ScaleOutError, match="could not start .* within 3 s: the cluster has no free resources"):
            pool.start()
    finally:
        pool.close()


@pytest.mark.ray
def test_a_sharded_run_gives_the_single_process_result(executor, lm, tiny_model_dir):
    spec = spec_of(tiny_model_dir)
    alone = run_experiment(spec, lm)
    sharded = run_experiment(spec, lm, executor=executor)
    assert comparable(sharded) == comparable(alone)
    record = sharded.reproducibility
    assert record["search_executor"].startswith("ray: 2 actor(s)")
    assert set(executor.actor_names) <= set(record["search_generation_shards"].split(", by ")[1].split(", "))
    assert record["search_generation_retries"] == record["search_scoring_retries"] == "none"
    assert "planned by the driver" in record["search_scoring_batch_plan"]
    assert "confirmation_generation_shards" in record  # the confirmation's arms ran sharded too


@pytest.mark.ray
def test_bayes_rounds_run_across_actors_and_match_one_process(executor, lm, tiny_model_dir):
    spec = spec_of(tiny_model_dir, search="bayes", layer=[0, 2], coeff=[0.5, 8], trials=6, samples=2)
    alone = run_experiment(spec, lm)
    sharded = run_experiment(spec, lm, executor=executor)
    assert comparable(sharded) == comparable(alone)  # two actors ask rounds of 4, as one process does
    assert len(sharded.trials) == 6


@pytest.mark.ray
def test_a_killed_actor_is_retried_and_the_result_is_identical(executor, lm, tiny_model_dir):
    spec = spec_of(tiny_model_dir, samples=8, max_new_tokens=24, batch_size=2, confirm=False)
    alone = run_experiment(spec, lm)
    victim = executor.actor_names[1]
    killed = []

    def kill_once(done: int, total: int, stage: str) -> None:
        if not killed:  # the first report: shards are queued at both actors
            ray.kill(ray.get_actor(victim, namespace=NAMESPACE))
            killed.append(victim)

    sharded = run_experiment(spec, lm, executor=executor, progress=kill_once)
    assert killed == [victim]
    assert comparable(sharded) == comparable(alone)
    retries = sharded.reproducibility["search_generation_retries"]
    assert f"on {victim}: " in retries and "ActorDiedError" in retries
    assert victim not in executor.actor_names  # replaced
    assert f"{victim}-r1" in sharded.reproducibility["search_executor"]


@pytest.mark.ray
def test_cancelling_stops_every_actor_within_one_batch(executor, lm, tiny_model_dir):
    spec = spec_of(tiny_model_dir, samples=8, max_new_tokens=24, batch_size=2, confirm=False)
    progress: list[int] = []
    with pytest.raises(Cancelled):
        run_experiment(
            spec, lm, executor=executor,
            progress=lambda done, total, stage: progress.append(done),
            cancelled=lambda: bool(progress) and progress[-1] > 0,  # once the first shard is in
        )  # fmt: skip
    handles = [ray.get_actor(name, namespace=NAMESPACE) for name in executor.actor_names]
    histories = ray.get([handle.history.remote() for handle in handles])
    runs = {run for history in histories for run, _ in history["batches"]}
    assert len(runs) == 1
    (run,) = runs
    rows = (len(spec.layers) * len(spec.coeffs) + 1) * len(PROMPTS) * spec.samples
    batches = sum(1 for history in histories for _ in history["batches"])
    assert batches < rows / spec.batch_size  # stopped well before the end
    for history in histories:
        if run in history["cancelled"]:
            told = history["cancelled"][run]
            assert sum(1 for r, ended in history["batches"] if r == run and ended > told) <= 1


@pytest.mark.ray
def test_the_watcher_runs_two_specs_at_once_and_each_once(ray_instance, idle_vault, tiny_model_dir):
    work = {"layer": [0, 1], "coeff": [1, 4], "samples": 6, "max_new_tokens": 16, "batch_size": 2}
    specs = [write_spec(idle_vault, name, tiny_model_dir, work=work) for name in ("first", "second")]
    config = VaultConfig.load(idle_vault)
    log: list[str] = []
    stop = threading.Event()
    with RayExecutor(RaySettings(actors=2, cpus_per_actor=1)) as pool:
        runner = JobRunner(config, models=ModelSlot(device="cpu"), executor=pool)
        watcher = Watcher(runner, debounce_ms=300, stop_event=stop, log=log.append, concurrent=2)
        thread = threading.Thread(target=watcher.serve, name="test-watcher")
        thread.start()
        try:
            wait_for(lambda: all(status(s) == DONE for s in specs), 300, f"both specs to finish: {log}")
        finally:
            stop.set()
            thread.join(120)
        handles = [ray.get_actor(name, namespace=NAMESPACE) for name in pool.actor_names]
        shards = [s for history in ray.get([h.history.remote() for h in handles]) for s in history["shards"]]
    assert not thread.is_alive()
    assert sorted(o.note.name for o in watcher.outcomes) == ["first.md", "second.md"]  # each ran once
    assert len(result_notes(idle_vault)) == 2
    spans = {}
    for shard in shards:
        start, end = spans.get(shard["run"], (shard["started"], shard["ended"]))
        spans[shard["run"]] = (min(start, shard["started"]), max(end, shard["ended"]))
    assert len(spans) == 2
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, "the two specs' shards did not overlap in time"


@pytest.mark.ray
def test_run_with_ray_writes_the_same_numbers_as_without(example_vault, tiny_model_dir):
    """The CLI end to end, in new processes: `run --ray` starts Ray (or joins the one running)."""
    work = {"layer": [0, 1], "coeff": [1, 4], "samples": 4, "max_new_tokens": 8, "dtype": "float32"}
    one = write_spec(example_vault, "one-process", tiny_model_dir, work=work)
    two = write_spec(example_vault, "on-ray", tiny_model_dir, work=work)
    outcomes = []
    for spec, extra in ((one, []), (two, ["--ray", "--actors", "2"])):
        command = [sys.executable, "-c", CLI, "run", str(spec), "--json", "--device", "cpu", *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=example_vault)
        assert done.returncode == 0, done.stderr[-3000:]
        outcomes.append(json.loads(done.stdout))
    results = []
    for outcome in outcomes:
        folder = next((example_vault / "Results" / "artifacts").glob(f"{Path(outcome['note']).stem} *"))
        results.append(json.loads((folder / "results.json").read_text(encoding="utf-8")))
    for data in results:
        data.pop("reproducibility")
        data.pop("spec")  # names the note
    assert results[0]["settings"] == results[1]["settings"]
    assert results[0]["verdict"] == results[1]["verdict"]


def test_the_slurm_recipe_is_valid_bash_and_its_settings_load(vault):
    recipe = Path(__file__).resolve().parent.parent / "examples" / "slurm" / "actadd-watch.sbatch"
    assert subprocess.run(["bash", "-n", str(recipe)], capture_output=True).returncode == 0
    lines = recipe.read_text(encoding="utf-8").splitlines()
    settings = [line.removeprefix("#     ") for line in lines if line.startswith("#     ") and ":" in line]
    (vault / "actadd-notes.yaml").write_text("\n".join(settings) + "\n", encoding="utf-8")
    config = VaultConfig.load(vault)
    assert (config.executor, config.ray_address) == ("ray", "auto")
    assert "exec actadd-notes watch" in recipe.read_text(encoding="utf-8")
