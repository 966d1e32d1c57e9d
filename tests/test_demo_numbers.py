"""tools/demo_numbers.py's scheduling: every command once, and none that starts from the pretraining's
checkpoint before the pretraining has finished, one or two at a time."""
import os
import threading
import time

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


@pytest.fixture
def demo_numbers(monkeypatch):
    monkeypatch.syspath_prepend(TOOLS)
    import demo_numbers

    return demo_numbers


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_command_runs_once_and_the_checkpoint_comes_first(demo_numbers, monkeypatch, jobs):
    events, lock, running = [], threading.Lock(), [0]

    def fake_run_one(name):
        with lock:
            running[0] += 1
            assert running[0] <= jobs
            events.append(("start", name))
        time.sleep(0.05 if name == "pretrain" else 0.01)
        with lock:
            running[0] -= 1
            events.append(("end", name))
        return {"wall_s": 0.0, "printed": name}

    monkeypatch.setattr(demo_numbers, "run_one", fake_run_one)
    names = list(demo_numbers.COMMANDS)
    previous = {"scratch_seeds": {"wall_s": 750.0}, "finetune_seeds": {"wall_s": 718.0}}
    runs = demo_numbers._schedule(names, jobs, previous)
    assert sorted(runs) == sorted(names) and all(runs[n]["printed"] == n for n in names)
    assert sorted(n for kind, n in events if kind == "start") == sorted(names)
    pretrain_end = events.index(("end", "pretrain"))
    for name in names:
        if demo_numbers.CKPT in demo_numbers.COMMANDS[name][0]:
            assert events.index(("start", name)) > pretrain_end, name
    assert events[0] == ("start", "pretrain")
    if jobs == 2:  # the longest command that needs no checkpoint runs beside the pretraining
        assert events[1] == ("start", "scratch_seeds")
