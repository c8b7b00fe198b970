"""What runs inside a Ray actor: one model, kept between shards and specs, generating shards of rows.

The class is plain Python (Ray wraps it in `executor.py`), so it has no Ray in it and runs in a
test as it runs in an actor. An actor holds one model at a time, as the watcher's `ModelSlot`
does, because GPU memory is the scarce thing; the `Additions` of recent specs are kept, so a
spec's steering vectors are computed once per actor, not once per shard.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from actadd_notes.errors import Cancelled
from actadd_notes.experiments.additions import Additions
from actadd_notes.experiments.rows import LocalRows, Row, RowsDone, Scored
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.steering.lm import Completion, SteerableLM

KEPT_SPECS = 4  # specs whose vectors an actor keeps (the watcher may interleave a few)


@dataclass(frozen=True)
class ModelKey:
    name: str
    dtype: str  # as `load_model` takes it ("auto", "float32", …)


@dataclass
class ShardDone:
    worker: str
    done: RowsDone


@dataclass
class ScoreDone:
    worker: str
    scored: Scored


class RowWorker:
    """Generates shards of rows for the driver; `cancel(run)` stops that run's shard at its next batch."""

    def __init__(self, name: str, *, device: str = "auto", device_map: str | None = None, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.name = name
        self._device = device
        self._device_map = device_map
        self._model: tuple[ModelKey, SteerableLM] | None = None
        self._rows: OrderedDict[tuple[ModelKey, str], LocalRows] = OrderedDict()
        self._cancelled: dict[str, float] = {}  # run → when the cancel arrived
        self._lock = threading.Lock()  # `cancel` runs on its own thread, beside a shard
        self._shards: list[dict[str, Any]] = []
        self._batches: list[tuple[str, float]] = []  # (run, when it ended)

    def identity(self) -> dict[str, Any]:
        """Where this worker runs, for the reproducibility record."""
        device = self._model[1].device if self._model else self._device
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(), "device": str(device)}

    def run_shard(self, run: str, model: ModelKey, spec: ExperimentSpec, digest: str, rows: list[Row]) -> ShardDone:
        """Generate and score `rows` of `spec` (whose digest names its cached vectors)."""
        started = time.time()

        def batch_done(done: int) -> None:
            self._batches.append((run, time.time()))
            self._check(run)

        self._check(run)
        runner = self._runner(model, spec, digest)
        done = runner.run(spec, rows, progress=batch_done)
        self._shards.append({"run": run, "rows": len(rows), "started": started, "ended": time.time()})
        return ShardDone(self.name, done)

    def score_shard(self, run: str, model: ModelKey, batches: list[tuple[Completion, ...]]) -> ScoreDone:
        """Perplexities of `batches`, each scored as one batch, exactly as the driver planned it."""
        started = time.time()
        self._check(run)
        lm = self._lm(model)
        values: list[float] = []
        records: list[dict[str, str]] = []
        for batch in batches:
            values.extend(lm.perplexities(batch, batch_size=len(batch)))
            records.append(lm.last_scoring.to_record() if lm.last_scoring else {})
            self._batches.append((run, time.time()))
            self._check(run)
        record = {key: records[0][key] for key in records[0]} if records else {}
        if "scoring_batches" in record:
            record["scoring_batches"] = " + ".join(r["scoring_batches"] for r in records)
        rows = sum(len(batch) for batch in batches)
        self._shards.append({"run": run, "rows": rows, "started": started, "ended": time.time(), "scoring": True})
        return ScoreDone(self.name, Scored(values, record))

    def cancel(self, run: str) -> None:
        with self._lock:
            self._cancelled.setdefault(run, time.time())

    def history(self) -> dict[str, Any]:
        """What this worker did, in epoch seconds: the shards it finished (run, rows, start, end),
        when each batch ended, and when each cancel arrived."""
        with self._lock:
            return {"shards": list(self._shards), "batches": list(self._batches), "cancelled": dict(self._cancelled)}

    def _check(self, run: str) -> None:
        with self._lock:
            if run in self._cancelled:
                raise Cancelled(f"{run}: cancelled")

    def _runner(self, model: ModelKey, spec: ExperimentSpec, digest: str) -> LocalRows:
        key = (model, digest)
        if key not in self._rows:
            lm = self._lm(model)
            self._rows[key] = LocalRows(lm, Additions(spec, lm))
            while len(self._rows) > KEPT_SPECS:
                self._rows.popitem(last=False)
        self._rows.move_to_end(key)
        return self._rows[key]

    def _lm(self, model: ModelKey) -> SteerableLM:
        if self._model is None or self._model[0] != model:
            from actadd_notes.steering.models import load_model

            self._model = None
            self._rows.clear()  # their vectors belong to the model being dropped
            self._model = (
                model,
                load_model(model.name, device=self._device, dtype=model.dtype, device_map=self._device_map),
            )
        return self._model[1]
