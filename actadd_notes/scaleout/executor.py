"""The Ray executor: a pool of `RowWorker` actors, and the driver side of a sharded call.

Each call's rows are cut into content-addressed shards (`shards.py`), two per actor, and sent to
the actors; the driver puts the shards' completions back in row order, so the evaluator sees what
one process would have produced. Scoring runs on the actors too, in the batches the driver plans
as one process would (`rows.py` says why). An actor lost mid-shard (killed, out of memory, its
node gone) is replaced and its shards run again — rows are seeded per row, so the retry's tokens
are the ones the lost actor would have made — and the reproducibility record names every actor
and every retry. Cancelling tells every actor to stop that run at its next batch.

Several specs may run at once (the watcher's `concurrent_specs`): each job takes the executor's
*turn* for its driver-side work (vectors, metrics, notes) and gives it up while it waits for its
shards, so one job's generation overlaps another's scoring and writing, and the driver's model is
never used by two threads at once.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from actadd_notes.errors import ActaddError, ModelError, ScaleOutError
from actadd_notes.experiments.additions import Additions
from actadd_notes.experiments.rows import BatchDone, Row, RowsDone, Scored
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.scaleout.shards import (
    GPU_SHARD_FLOOR,
    SHARDS_PER_WORKER,
    Shard,
    cut,
    cut_batches,
    shard_size,
    spec_digest,
)
from actadd_notes.scaleout.worker import ModelKey, RowWorker
from actadd_notes.steering.lm import Completion, SteerableLM

INSTALL_HINT = "pip install 'actadd-notes[ray]'"
NAMESPACE = "actadd-notes"
POLL_S = 0.25  # how often the driver looks at cancellation while shards run
SHARD_TRIES = 3  # a shard lost with this many actors in a row fails the run
ACTOR_START_S = 300  # an actor the cluster cannot place (no free GPU, its node gone) fails the run by then
_LOST = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError")


def require_ray() -> Any:
    """The `ray` module, or a ScaleOutError saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ScaleOutError(
            f"Ray is not installed ({error}): install the extra with `{INSTALL_HINT}`, or run without Ray"
        ) from None
    return ray


@dataclass
class RaySettings:
    """Where and how wide to run. None means: decided from the cluster's resources."""

    address: str | None = None  # a running cluster ("auto", "host:6379", "ray://…"); None: a local instance
    actors: int | None = None  # default: one per `gpus_per_actor` GPUs, or 2 on a cluster without GPUs
    gpus_per_actor: float | None = None  # default: 1 where the cluster has GPUs; > 1 splits the model (device_map)
    cpus_per_actor: int | None = None  # torch threads of a CPU actor; default: the CPUs shared out
    shard_rows: int | None = None  # default: two shards per actor per call, on GPUs ≥ GPU_SHARD_FLOOR rows
    dtype: str = "auto"  # the driver's default precision; a spec's `dtype` overrides it, as in one process


@dataclass
class _Actor:
    handle: Any
    name: str
    in_flight: int = 0
    identity: dict[str, Any] = field(default_factory=dict)


class RayExecutor:
    """Starts (or joins) a Ray cluster and keeps a pool of row workers across specs; `close` ends them."""

    def __init__(self, settings: RaySettings | None = None):
        self.settings = settings or RaySettings()
        self.ray: Any = None
        self._started_ray = False
        self._actors: list[_Actor] = []
        self._prefix = f"row-worker-{secrets.token_hex(3)}"
        self._replaced = 0
        self._spawn_options: dict[str, float] = {}
        self._pool_lock = threading.Lock()
        self._turn = threading.Lock()
        self._turn_holder: int | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> RayExecutor:
        """Connect (or start a local instance) and start the actors; they load a model on first use."""
        ray = self.ray = require_ray()
        settings = self.settings
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "namespace": NAMESPACE}
            if settings.address:
                options["address"] = settings.address
            try:
                ray.init(**options)
            except Exception as error:  # an unreachable address, a refused connection…
                where = settings.address or "a local instance"
                raise ScaleOutError(f"cannot start or reach Ray at {where}: {error}") from None
            self._started_ray = True
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        per_actor = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        count = settings.actors or (max(1, int(gpus // per_actor)) if per_actor else 2)
        cpus = settings.cpus_per_actor or (1 if per_actor else max(1, int(resources.get("CPU", 1)) // count))
        self._spawn_options = {"gpus": per_actor, "cpus": cpus}
        self._actors = [self._spawn(f"{self._prefix}-{number}") for number in range(count)]
        self.identify(self._actors)
        return self

    def close(self) -> None:
        """End the actors (and the local Ray instance this executor started)."""
        if self.ray is None:
            return
        for actor in self._actors:
            try:
                self.ray.kill(actor.handle)
            except Exception:  # already gone
                pass
        self._actors = []
        if self._started_ray:
            self.ray.shutdown()
        self.ray = None

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def parallelism(self) -> int:
        return max(1, len(self._actors))

    @property
    def shard_floor(self) -> int:
        """The fewest rows a shard should hold on these actors (`shards.GPU_SHARD_FLOOR` on GPUs)."""
        return GPU_SHARD_FLOOR if self._spawn_options.get("gpus") else 1

    @property
    def actors(self) -> list[_Actor]:
        return list(self._actors)

    @property
    def actor_names(self) -> list[str]:
        return [actor.name for actor in self._actors]

    # ------------------------------------------------------------ the turn
    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the driver for one job's own work (see the module docstring)."""
        with self._turn:
            self._turn_holder = threading.get_ident()
            try:
                yield
            finally:
                self._turn_holder = None

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Give the turn to another job while this thread waits for its shards."""
        if self._turn_holder != threading.get_ident():
            yield
            return
        self._turn_holder = None
        self._turn.release()
        try:
            yield
        finally:
            self._turn.acquire()
            self._turn_holder = threading.get_ident()

    # ------------------------------------------------------------ rows
    def runner(self, spec: ExperimentSpec, lm: SteerableLM, additions: Additions) -> RayRows:
        if self.ray is None:
            raise ScaleOutError("the Ray executor is not started")
        dtype = spec.dtype if spec.dtype != "auto" else self.settings.dtype
        return RayRows(self, ModelKey(spec.model, dtype), lm)

    def _spawn(self, name: str) -> _Actor:
        ray, options = self.ray, self._spawn_options
        gpus = options["gpus"]
        # `cancel` runs in its own concurrency group, beside a shard
        remote = ray.remote(concurrency_groups={"control": 1})(RowWorker).options(
            name=name,
            namespace=NAMESPACE,
            num_gpus=gpus,
            num_cpus=options["cpus"],
            max_restarts=0,  # a lost actor is replaced by the driver, which knows what it held
        )
        device = "cuda" if gpus else "cpu"
        handle = remote.remote(
            name, device=device, device_map="auto" if gpus > 1 else None, threads=None if gpus else options["cpus"]
        )
        return _Actor(handle, name)

    def identify(self, actors: Sequence[_Actor]) -> None:
        """Wait for `actors` to start and record where they run; ScaleOutError past `ACTOR_START_S`."""
        try:
            identities = self.ray.get([a.handle.identity.remote() for a in actors], timeout=ACTOR_START_S)
        except self.ray.exceptions.GetTimeoutError:
            names = ", ".join(actor.name for actor in actors)
            raise ScaleOutError(
                f"Ray could not start {names} within {ACTOR_START_S} s: the cluster has no free resources "
                f"for it ({self._spawn_options['gpus']:g} GPU(s), {self._spawn_options['cpus']:g} CPU(s) an actor)"
            ) from None
        for actor, identity in zip(actors, identities):
            actor.identity = identity

    def replace(self, lost: _Actor) -> _Actor:
        with self._pool_lock:
            if lost in self._actors:
                self._replaced += 1
                fresh = self._spawn(f"{lost.name}-r{self._replaced}")
                self._actors[self._actors.index(lost)] = fresh
                return fresh
            return next(a for a in self._actors if a.name.startswith(lost.name))

    def least_busy(self) -> _Actor:
        with self._pool_lock:
            return min(self._actors, key=lambda actor: actor.in_flight)

    def describe(self) -> str:
        """The actors as the reproducibility record lists them."""
        parts = []
        for actor in self._actors:
            ident = actor.identity
            where = f"pid {ident['pid']} on {ident['host']}, {ident['device']}" if ident else "not yet reported"
            parts.append(f"{actor.name} ({where})")
        return f"{len(self._actors)} actor(s): " + "; ".join(parts)


class RayRows:
    """One experiment's rows on the executor's actors (the `RowRunner` of `experiments/rows.py`)."""

    def __init__(self, executor: RayExecutor, model: ModelKey, lm: SteerableLM):
        self.executor = executor
        self.model = model
        self.lm = lm  # the driver's: it plans the scoring batches, as one process would
        self.run_id = secrets.token_hex(6)
        self._spec: tuple[str, Any] | None = None  # digest and object ref of the spec the actors read

    @property
    def parallelism(self) -> int:
        return self.executor.parallelism

    def run(self, spec: ExperimentSpec, rows: Sequence[Row], progress: BatchDone | None = None) -> RowsDone:
        digest, spec_ref = self._shared(spec)
        size = shard_size(len(rows), self.parallelism, self.executor.settings.shard_rows, self.executor.shard_floor)
        shards = cut(rows, size, model=self._model_name, spec=digest)
        submit = lambda actor, shard: actor.handle.run_shard.remote(
            self.run_id, self.model, spec_ref, digest, list(shard.work)
        )
        parts, retries = self._gather(shards, submit, progress)
        record = _merged([part.done.record for part in parts])
        record.update(self._where(shards, [part.worker for part in parts], retries, "generation"))
        return RowsDone([c for part in parts for c in part.done.completions], record)

    def score(
        self, spec: ExperimentSpec, completions: Sequence[Completion], progress: BatchDone | None = None
    ) -> Scored:
        digest, _ = self._shared(spec)
        plan = self.lm.scoring_batches(completions, batch_size=spec.batch_size)
        size = shard_size(
            len(completions), self.parallelism, self.executor.settings.shard_rows, self.executor.shard_floor
        )
        shards = cut_batches(completions, plan.sizes, size, model=self._model_name, spec=digest)
        submit = lambda actor, shard: actor.handle.score_shard.remote(self.run_id, self.model, list(shard.work))
        parts, retries = self._gather(shards, submit, progress)
        record = _merged([part.scored.record for part in parts])
        record["scoring_batch_plan"] = f"{plan.basis}, planned by the driver"
        record.update(self._where(shards, [part.worker for part in parts], retries, "scoring"))
        return Scored([value for part in parts for value in part.scored.perplexities], record)

    @property
    def _model_name(self) -> str:
        return f"{self.model.name}|{self.model.dtype}"

    def _shared(self, spec: ExperimentSpec) -> tuple[str, Any]:
        """The spec's digest, and the spec in Ray's object store (put once, read by every actor)."""
        digest = spec_digest(spec)
        if self._spec is None or self._spec[0] != digest:
            self._spec = (digest, self.executor.ray.put(spec))
        return self._spec

    def _gather(
        self, shards: Sequence[Shard], submit: Callable[[_Actor, Shard], Any], progress: BatchDone | None
    ) -> tuple[list[Any], list[str]]:
        """Each shard's result, in shard order, and the retries as the record lists them. The
        driver's turn is given up meanwhile (the module docstring)."""
        with self.executor.waiting():
            results, retries = self._collect(shards, submit, progress)
        return [results[shard.number] for shard in shards], retries

    def _collect(
        self, shards: Sequence[Shard], submit: Callable[[_Actor, Shard], Any], progress: BatchDone | None
    ) -> tuple[dict[int, Any], list[str]]:
        ray = self.executor.ray
        waiting: deque[Shard] = deque(shards)
        running: dict[Any, tuple[Shard, _Actor]] = {}
        tries = {shard.number: 0 for shard in shards}
        results: dict[int, Any] = {}
        retries: list[str] = []
        done = 0
        try:
            while waiting or running:
                while waiting and len(running) < self.parallelism * SHARDS_PER_WORKER:
                    shard = waiting.popleft()
                    actor = self.executor.least_busy()
                    actor.in_flight += 1
                    running[submit(actor, shard)] = (shard, actor)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    shard, actor = running.pop(ref)
                    actor.in_flight -= 1
                    try:
                        results[shard.number] = ray.get(ref)
                    except Exception as error:
                        if isinstance(error, ray.exceptions.RayTaskError) or not _lost(error):
                            raise _actor_error(actor.name, error) from None
                        tries[shard.number] += 1
                        if tries[shard.number] >= SHARD_TRIES:
                            raise ScaleOutError(
                                f"{shard.label} was lost with {SHARD_TRIES} actors in a row; last: {error}"
                            ) from None
                        fresh = self.executor.replace(actor)
                        retries.append(f"{shard.label} on {actor.name}: {type(error).__name__} → {fresh.name}")
                        self.executor.identify([fresh])
                        waiting.appendleft(shard)
                        continue
                    done += shard.size
                if progress is not None:
                    progress(done)  # raises Cancelled when the user stopped the run
        except BaseException:
            self._stop(running)
            raise
        return results, retries

    def _stop(self, running: dict[Any, tuple[Shard, _Actor]]) -> None:
        """Tell every actor this run is over: each stops it at its next batch."""
        for actor in self.executor.actors:
            try:
                actor.handle.cancel.options(concurrency_group="control").remote(self.run_id)
            except Exception:  # a dead actor has nothing to stop
                pass
        for _, actor in running.values():
            actor.in_flight = max(0, actor.in_flight - 1)

    def _where(self, shards: Sequence[Shard], workers: Sequence[str], retries: list[str], call: str) -> dict[str, str]:
        sizes = sorted({shard.size for shard in shards})
        return {
            "executor": f"ray: {self.executor.describe()}",
            f"{call}_shards": f"{len(shards)} of {'–'.join(map(str, sizes))} rows, by "
            + ", ".join(dict.fromkeys(workers)),
            f"{call}_retries": "; ".join(retries) or "none",
        }


def _merged(records: Sequence[dict[str, str]]) -> dict[str, str]:
    """The shards' records as one: batch sizes in shard order (`|` between shards), other values once each."""
    merged: dict[str, list[str]] = {}
    for record in records:
        for key, value in record.items():
            merged.setdefault(key, []).append(value)
    return {
        key: (" | ".join(values) if key.endswith("_batches") else "; ".join(dict.fromkeys(values)))
        for key, values in merged.items()
    }


def _lost(error: BaseException) -> bool:
    """Whether `error` means the actor (or its node) is gone, rather than the work being wrong."""
    return any(cls.__name__ in _LOST for cls in type(error).__mro__)


def _actor_error(worker: str, error: BaseException) -> ActaddError:
    cause = getattr(error, "cause", None)
    if isinstance(cause, ActaddError):
        return cause
    if isinstance(cause, Exception):
        return ModelError(f"{worker}: {type(cause).__name__}: {cause}")
    return ModelError(f"{worker}: {type(error).__name__}: {error}")
