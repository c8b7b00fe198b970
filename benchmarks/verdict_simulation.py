"""The verdict's calibration, as `tests/test_verdict.py` checks it, run longer (5,000 grids a row).

Every row runs the production code after generation on simulated VADER-like scores (the test
module's simulators: `summarise_setting`, Holm, `pick_best`, `split_prompts`,
`summarise_confirmation`, `decide`) and counts how often a null experiment is called `detected`:

- `no effect`: steering does nothing on any prompt; `detected` should come at most at 2.5%
  (one side of a 95% interval), whatever the number of prompts;
- `heterogeneous null`: each prompt has its own effect (sd 0.3), the mean over all prompts is 0;
  the claim `held-out prompts` should come at most at 2.5%, while `these prompts` (the drawn
  prompts' own mean, which is not 0) may be made more often, correctly.

    .venv/bin/python benchmarks/verdict_simulation.py --runs 5000 --out benchmarks/results/verdict_simulation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_verdict import SENTIMENT, null_run, prompt_null_run

from actadd_notes.experiments.design import HELD_OUT, SAME
from actadd_notes.experiments.results import DETECTED, HELD_OUT_PROMPTS, NOT_SPECIFIC, THESE_PROMPTS
from actadd_notes.experiments.verdict import decide

ROWS = [
    ("no effect, 1 prompt (32 samples)", "grid", {"prompts": 1, "samples": 32}),
    ("no effect, 4 prompts (8 samples each)", "grid", {"prompts": 4, "samples": 8}),
    ("no effect, 6 prompts, same prompts", "prompts", {"prompts": 6, "samples": 4, "spread": 0.0, "design": SAME}),
    ("no effect, 24 prompts, held out", "prompts", {"prompts": 24, "samples": 4, "spread": 0.0, "design": HELD_OUT}),
    ("heterogeneous null, 24 prompts, held out", "prompts",
     {"prompts": 24, "samples": 4, "spread": 0.3, "design": HELD_OUT}),
    ("heterogeneous null, 40 prompts, held out", "prompts",
     {"prompts": 40, "samples": 3, "spread": 0.3, "design": HELD_OUT}),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for name, kind, options in ROWS:
        rng = np.random.default_rng(len(rows) + 11)  # a seed per row: the table reruns exactly
        counts = {"detected": 0, "these prompts": 0, "held-out prompts": 0, "not specific": 0}
        for _ in range(args.runs):
            if kind == "grid":
                best, confirmation, tested = null_run(rng, prompts=options["prompts"], samples=options["samples"])
                verdict = decide(SENTIMENT, best, confirmation, settings_tested=tested)
            else:
                verdict = prompt_null_run(rng, **options)
            counts["detected"] += verdict.effect == DETECTED
            counts["not specific"] += verdict.effect == NOT_SPECIFIC
            counts["these prompts"] += verdict.effect == DETECTED and verdict.scope == THESE_PROMPTS
            counts["held-out prompts"] += verdict.effect == DETECTED and verdict.scope == HELD_OUT_PROMPTS
        rows.append({"row": name, "runs": args.runs, **counts})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"python": platform.python_version(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
