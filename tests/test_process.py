"""The process's start and end (`process`), the GPU warm-up around a model load (`steering.warmup`) and the
run's background imports (`experiments.preload`), with real processes, threads and imports."""

from __future__ import annotations

import gc
import importlib.util
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from actadd_notes.experiments.preload import METRIC_BACKENDS, PLOTS, SAMPLER_KERNELS, import_in_background, modules_for
from actadd_notes.experiments.spec import parse_spec
from actadd_notes.process import collector_paused, exit_status
from actadd_notes.steering.warmup import gpu_warm_up

SPEC = {
    "type": "actadd-experiment",
    "prompt_add": "Love",
    "prompt_sub": "Hate",
    "layer": [2],
    "coeff": [4],
    "prompts": ["I hate you because"],
    "metrics": ["sentiment", "profanity", "fluency"],
}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_the_collector_is_off_inside_and_as_it_was_after():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause leaves the outer one in force
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a failed load")
    assert gc.isenabled()


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), ("bad input", 1)])
def test_exit_status_is_that_of_sys_exit(code, status, capsys):
    assert exit_status(code) == status
    assert capsys.readouterr().err == ("bad input\n" if isinstance(code, str) else "")


def test_the_fast_exit_keeps_the_status_the_exit_handlers_and_unflushed_output():
    done = run_python(
        """
        import atexit, sys
        from actadd_notes.process import exit_process
        atexit.register(lambda: print("handler ran", file=sys.stderr))
        sys.stdout.write("no newline, still buffered")
        exit_process(7)
        print("never")
        """
    )
    assert done.returncode == 7
    assert done.stdout == "no newline, still buffered"
    assert "handler ran" in done.stderr


def test_the_fast_exit_waits_like_sys_exit_while_a_thread_still_works():
    done = run_python(
        """
        import threading, time
        from actadd_notes.process import exit_process
        def work():
            time.sleep(0.5)
            print("thread finished", flush=True)
        threading.Thread(target=work).start()
        exit_process(4)
        """
    )
    assert (done.returncode, done.stdout) == (4, "thread finished\n")


def test_the_console_script_exits_with_click_statuses_and_messages():
    version = run_python(
        "from actadd_notes.cli import main; import sys; sys.argv = ['actadd-notes', '--version']; main()"
    )
    assert version.returncode == 0 and "actadd-notes" in version.stdout
    unknown = run_python("from actadd_notes.cli import main; import sys; sys.argv = ['actadd-notes', 'nope']; main()")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr


def test_no_warm_up_thread_off_cuda():
    before = threading.active_count()
    with gpu_warm_up(torch.device("cpu"), torch.float32):
        assert threading.active_count() == before


def test_nothing_is_preloaded_off_cuda():
    assert modules_for(parse_spec(SPEC, note="n.md")[0], torch.device("cpu")) == []


def test_a_cuda_run_preloads_the_sampler_its_metrics_back_ends_and_the_plots():
    spec, _ = parse_spec(SPEC, note="n.md")
    assert modules_for(spec, torch.device("cuda")) == [
        SAMPLER_KERNELS,
        METRIC_BACKENDS["sentiment"],
        METRIC_BACKENDS["profanity"],
        *PLOTS,
    ]
    classified, _ = parse_spec({**SPEC, "metrics": ["sentiment"], "classifier": "some/model"}, note="n.md")
    assert METRIC_BACKENDS["sentiment"] not in modules_for(classified, torch.device("cuda"))  # no VADER then


@pytest.mark.parametrize("module", [SAMPLER_KERNELS, *METRIC_BACKENDS.values(), *PLOTS])
def test_every_preloaded_module_exists(module):
    assert importlib.util.find_spec(module) is not None


def test_the_metrics_import_what_preload_names_for_them():
    from actadd_notes.experiments.metrics import ProfanityMetric, SentimentMetric

    SentimentMetric().score(["p"], ["a lovely day"])
    ProfanityMetric().score(["p"], ["a lovely day"])
    assert METRIC_BACKENDS["sentiment"] in sys.modules and METRIC_BACKENDS["profanity"] in sys.modules


def test_background_imports_import_in_order_and_leave_failures_to_the_main_thread(tmp_path, monkeypatch):
    (tmp_path / "preload_first.py").write_text("import time\ntime.sleep(0.2)\n")
    (tmp_path / "preload_broken.py").write_text("raise ImportError('broken on purpose')\n")
    (tmp_path / "preload_last.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["preload_first", "preload_broken", "preload_last"]
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    thread = import_in_background(names)
    assert thread is not None and thread.daemon
    thread.join(timeout=30)
    assert "preload_first" in sys.modules and "preload_last" in sys.modules
    assert "preload_broken" not in sys.modules
    with pytest.raises(ImportError, match="broken on purpose"):
        importlib.import_module("preload_broken")
    assert import_in_background([]) is None
