"""How the `actadd-notes` process spends its start and its end, around the heap a model load builds.

Importing torch and transformers and building a model leaves about a million long-lived objects.
While that heap grows, Python's cyclic collector keeps running full passes over it that find next to
nothing (6 passes and 236 objects importing torch and transformers), and at exit the interpreter's
teardown walks it once more. On this project's 2-core CI machine the passes were 28% of loading a
small model (4.3 s, 3.1 s without them) and the teardown 1.1–1.3 s of every exit. A command-line
process needs neither: the collector is held off while a model loads and runs as usual afterwards,
and the process ends with `os._exit` once its exit handlers have run and its output is flushed.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside; reference counting still frees everything not in a cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def exit_status(code: object) -> int:
    """The status `sys.exit(code)` ends a process with; a message (not a number) is printed, as it prints it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_process(code: int) -> NoReturn:
    """End the process with status `code` after its exit handlers, without the interpreter's teardown.

    Where a thread that is no daemon still runs, the usual exit (which waits for it) is taken instead."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if any(thread.is_alive() for thread in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)
