"""The GPU's first-use costs, paid on a thread while the model loads.

The first matrix product, elementwise kernel and attention call of a process each took 0.08–0.15 s on
the lent H200, against well under a millisecond the second time: the CUDA runtime loads each kernel
when it is first launched, and cuBLAS starts with its first product (`benchmarks/gpu_first_use.py`).
Loading a model is mostly importing transformers, CPU work under the GIL, while those loads run with
the GIL released; so the same kernels run once on tiny tensors on a thread during the load, where
they cost nothing, and the model's first forward no longer waits for them. Only torch operations
run there (no imports, which could deadlock against the main thread's), and the load joins the thread
before it returns, so nothing of it is left running when a CUDA graph is captured later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

HEAD_DIMS = (64, 128)  # the attention head widths of the supported families' common sizes


@contextmanager
def gpu_warm_up(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Inside, a thread runs the first uses on `device` (on CUDA only: elsewhere nothing loads lazily);
    leaving waits for it."""
    if device.type != "cuda":
        yield
        return
    thread = threading.Thread(target=_first_uses, args=(device, dtype), name="actadd-gpu-warm-up", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _first_uses(device: torch.device, dtype: torch.dtype) -> None:
    """A product, the elementwise and reduction kernels of a norm and an activation, and attention with a
    causal mask (prefill) and with an additive one (decode), for each head width."""
    try:
        with torch.no_grad(), torch.cuda.device(device):
            x = torch.full((8, 256), 0.5, device=device, dtype=dtype)
            F.linear(x, x)
            F.silu(x) * (x.float().pow(2).mean(-1, keepdim=True) + 1e-6).rsqrt().to(dtype)
            for head_dim in HEAD_DIMS:
                q = torch.full((2, 4, 8, head_dim), 0.5, device=device, dtype=dtype)
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
                mask = torch.zeros(2, 1, 8, 8, device=device, dtype=dtype)
                F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
            torch.cuda.synchronize(device)
    except Exception as error:  # a warm-up only: the real first use will report what is wrong
        logger.debug("GPU warm-up stopped: %s", error)
