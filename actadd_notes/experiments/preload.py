"""The libraries a run needs after its generations, imported on a thread while the GPU generates.

The plots need matplotlib (0.45 s to import on the CI machine, more where bytecode is not cached),
the text metrics their back-ends, and a CUDA run's sampler Triton; each is imported on first use.
Imports are CPU work under the GIL, and while the card prefills, decodes and scores, the main thread
mostly waits with the GIL released: imported on a thread started when the run starts, they are ready
by the time the main thread reaches them, which then waits at most for the import in progress.
Off CUDA nothing is preloaded: there the main thread's own work keeps every core busy. The thread only
imports (nothing on the device, where a CUDA graph may be capturing), and a module that fails to import
is left for the main thread's own import to report.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Sequence

import torch

from actadd_notes.experiments.spec import ExperimentSpec

logger = logging.getLogger(__name__)

# experiments.plots draws with pyplot on Agg: these are nearly all of its import, without pyplot's choice
# of a backend, which belongs to the main thread
PLOTS = ("matplotlib.figure", "matplotlib.backends.backend_agg")
METRIC_BACKENDS = {  # the module each text metric imports on first use (sentiment: VADER, unless a classifier)
    "sentiment": "vaderSentiment.vaderSentiment",
    "profanity": "profanity_check",
    "relevance": "sentence_transformers",
}
SAMPLER_KERNELS = "actadd_notes.steering.sampling_kernels"  # the CUDA sampler's Triton kernels


def modules_for(spec: ExperimentSpec, device: torch.device) -> list[str]:
    """What a run of `spec` on `device` will import after it starts generating."""
    if device.type != "cuda":
        return []
    metrics = [
        METRIC_BACKENDS[name]
        for name in spec.metrics
        if name in METRIC_BACKENDS and not (name == "sentiment" and spec.classifier.get("sentiment"))
    ]
    return [SAMPLER_KERNELS, *metrics, *PLOTS]


def import_in_background(modules: Sequence[str]) -> threading.Thread | None:
    """A started daemon thread importing `modules` in order (None when there are none)."""
    if not modules:
        return None
    thread = threading.Thread(target=_import_all, args=(list(modules),), name="actadd-preload", daemon=True)
    thread.start()
    return thread


def _import_all(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # the main thread's own import reports it, where it is needed
            logger.debug("preloading %s failed: %s", name, error)
