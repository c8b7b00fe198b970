"""How long the watcher takes to start on a big vault, and what it costs while idle.

Builds vaults of 1,000 / 10,000 / 50,000 notes in a temporary folder: ordinary notes with
Obsidian-style properties (tags, dates, aliases, a link) in 50 folders, 1% of them spec notes
(`status: draft`, so nothing runs), and a `.git` folder the scan must not enter. For each it
times, median of `--repeats` runs:

- `scan`: `vault.scan.spec_notes` alone (what start-up parses);
- `start-up`: `Watcher.serve()` until it logs "watching" (lock, claims, inotify watches, scan);
- `from launch`: a new `actadd-notes watch` process until it prints "watching" (imports included);
- `idle CPU`: the process's CPU time over `--idle` seconds of watching an unchanging vault.

    python benchmarks/watcher_startup.py [--sizes 1000 10000 50000] [--repeats 3] [--idle 10]

Prints a Markdown table and writes benchmarks/results/watcher_startup.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from actadd_notes.jobs import JobRunner
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.scan import spec_notes
from actadd_notes.watcher import Watcher

ORDINARY = """---
tags: [reading, project/{folder}]
created: 2025-0{month}-1{day}T10:2{day}:00
aliases:
  - Note {i}
status: {status}
related: "[[Note {j}]]"
---
# Note {i}

Some text of the user's, a [[Note {j}|link]] and a list:
- one
- two
"""
SPEC = """---
type: actadd-experiment
status: draft
model: embedded
prompt_add: Love
prompt_sub: Hate
layer: [2, 4, 6]
coeff: [1, 4]
prompts: [I hate you because]
---
An experiment.
"""


def build(root: Path, notes: int) -> None:
    (root / ".obsidian").mkdir(parents=True)
    (root / ".git" / "objects").mkdir(parents=True)
    for i in range(200):
        (root / ".git" / "objects" / f"{i:03d}.md").write_text("not a note")
    for i in range(notes):
        folder = root / f"Folder {i % 50}"
        folder.mkdir(exist_ok=True)
        text = (
            SPEC
            if i % 100 == 0
            else ORDINARY.format(folder=i % 50, month=1 + i % 9, day=i % 10, i=i, j=(i * 7) % notes, status="reading")
        )
        (folder / f"Note {i}.md").write_text(text, encoding="utf-8")


def startup_seconds(root: Path, idle_s: float) -> tuple[float, float]:
    """Seconds from `serve()` to "watching", and the process CPU share while idle after it."""
    log: list[str] = []
    stop = threading.Event()
    watcher = Watcher(JobRunner(VaultConfig.load(root)), stop_event=stop, log=log.append)
    start = time.perf_counter()
    thread = threading.Thread(target=watcher.serve)
    thread.start()
    while not any(line.startswith("watching ") for line in log):
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    time.sleep(1.0)  # let the observer settle
    cpu = time.process_time()
    time.sleep(idle_s)
    share = (time.process_time() - cpu) / idle_s
    stop.set()
    thread.join()
    return elapsed, share


def launch_seconds(root: Path) -> float:
    """Seconds from starting `actadd-notes watch` as a new process until it prints "watching" (what a user
    waits for: interpreter, imports, lock, scan)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", "from actadd_notes.cli import main; main()", "watch", str(root), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if " watching " in line:
                return time.perf_counter() - start
        raise RuntimeError(f"the watcher exited with {process.wait()} before watching")
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"actadd-bench-{size}-")) / "vault"
        try:
            build(root, size)
            config = VaultConfig.load(root)
            scans, startups, idles, launches = [], [], [], []
            for _ in range(args.repeats):
                launches.append(launch_seconds(root))
                start = time.perf_counter()
                found = spec_notes(config)
                scans.append(time.perf_counter() - start)
                seconds, share = startup_seconds(root, args.idle)
                startups.append(seconds)
                idles.append(share)
            assert len(found) == len(range(0, size, 100))
            rows.append(
                {
                    "notes": size,
                    "specs": len(found),
                    "scan_s": scans,
                    "startup_s": startups,
                    "launch_s": launches,
                    "idle_cpu_share": idles,
                }
            )
        finally:
            shutil.rmtree(root.parent)
    machine = f"{platform.processor() or platform.machine()}, {platform.system()} {platform.release()}"
    print(f"| notes | specs | scan (s) | start-up to watching (s) | from launch (s) | idle CPU |  — {machine}")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['notes']:,} | {row['specs']} | {statistics.median(row['scan_s']):.2f} "
            f"| {statistics.median(row['startup_s']):.2f} "
            f"({min(row['startup_s']):.2f}–{max(row['startup_s']):.2f}) "
            f"| {statistics.median(row['launch_s']):.2f} ({min(row['launch_s']):.2f}–{max(row['launch_s']):.2f}) "
            f"| {100 * statistics.median(row['idle_cpu_share']):.2f}% |"
        )
    out = Path(__file__).resolve().parent / "results" / "watcher_startup.json"
    out.write_text(json.dumps({"machine": machine, "python": platform.python_version(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
