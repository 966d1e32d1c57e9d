"""The process scope: a stop request (SIGTERM, SIGINT) is honoured wherever it arrives — in an epoch's hooks,
during the final test, in a probe's fit, between a driver's runs — and what a run changes in the process
(forced op backends, deterministic mode, logging, signal handlers) is given back when it ends."""
import json
import logging
import os
import shlex
import signal

import pytest
import torch

from pointmap.engine import Hook, ProcessScope, RunDir, RunInterrupted, Trainer, load_file, register_hook
from pointmap.engine.probe import SvmProbeTask
from pointmap.engine.scope import exit_code
from pointmap.ops import get_backend_override

from .test_engine import TinyCls, tiny_cfg
from .test_tools import CFGS, TINY, TINY_FINETUNE, assert_meta, tool


def sigterm_after_the_first_test_pass(monkeypatch):
    """Trainer.evaluate sends this process a real SIGTERM when it has scored the test split, once."""
    evaluate, sent = Trainer.evaluate, []

    def evaluate_then_signal(self, split, views=1, **kw):
        out = evaluate(self, split, views, **kw)
        if split == "test" and not sent:
            sent.append(split)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "evaluate", evaluate_then_signal)


def assert_stopped_before(second, err, code, where="during the final test"):
    """Exit 143 (SIGTERM's, as a shell reports it) with the line that says where and how to continue, the next
    run never started, the driver folder marked, the signal handlers given back; returns the command that
    continues."""
    line = err.strip().splitlines()[-1]
    assert code == 143 and "Traceback" not in err, err
    assert line.startswith(f"interrupted {where}; continue with: python ") and line.endswith("--resume"), line
    assert not second.exists()
    assert json.loads((second.parent / "meta.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    return shlex.split(line.split("continue with: ", 1)[1])


def assert_interrupted_with_its_checkpoint(run, script):
    assert_meta(run, script, status="interrupted")
    assert load_file(str(run / "ckpt-last.pth"))["epoch"] == 1  # the end of training: resuming runs the test
    assert "test" not in json.loads((run / "metrics.json").read_text())


def test_sigterm_during_the_final_test_stops_the_seeds_driver(tmp_path, monkeypatch, capsys):
    sigterm_after_the_first_test_pass(monkeypatch)
    args = ["--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--device", "cpu", *TINY_FINETUNE,
            f"train.output_dir={tmp_path}", "--seeds", "0", "1"]
    code, out, err = tool("finetune_modelnet.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    base = tmp_path / "finetune_demo" / "default"
    command = assert_stopped_before(base / "seed1", err, code)
    assert_interrupted_with_its_checkpoint(base / "seed0", "finetune_modelnet.py")
    assert command[2:] == args + ["--resume"]
    code, out, err = tool("finetune_modelnet.py", *command[2:], monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "2 seeds [0, 1]" in out, err
    assert_meta(base / "seed0", "finetune_modelnet.py")["resumed"]
    assert_meta(base / "seed1", "finetune_modelnet.py")


def test_sigterm_during_the_final_test_stops_the_fewshot_driver(tmp_path, monkeypatch, capsys):
    sigterm_after_the_first_test_pass(monkeypatch)
    code, out, err = tool("fewshot.py", "--way", "2", "--shot", "3", "--folds", "0-1", "--device", "cpu", *TINY,
                          "data.batch_size=2", "data.options={num_points: 64, num_query: 2}",
                          f"train.output_dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys)
    base = tmp_path / "fewshot_demo" / "default" / "2way_3shot"
    assert_stopped_before(base / "fold1", err, code)
    assert_interrupted_with_its_checkpoint(base / "fold0", "fewshot.py")
    assert not (base / "fewshot.json").exists()


@register_hook("test_sigterm")
class StopAt(Hook):
    """Sends this process a real SIGTERM at ``event`` of epoch ``epoch`` (0-based), or when the probe fits."""

    def __init__(self, event, epoch=0):
        self.event, self.epoch = event, epoch

    def after_epoch(self, trainer, entry):
        if self.event == "after_epoch" and trainer.state.epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)

    def after_train(self, trainer, results):
        if self.event == "after_train":
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_stop_in_the_last_epochs_hooks_keeps_the_test_for_the_resumed_run(tmp_path):
    cfg = tiny_cfg("classification", optim={"epochs": 2})
    full = Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path / "full"), device="cpu").fit()
    with pytest.raises(RunInterrupted, match="interrupted before the final test; continue with: python .* --resume"):
        Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path / "cut"), device="cpu", hooks=[StopAt("after_epoch", 1)]).fit()
    cut = RunDir(str(tmp_path / "cut"))
    assert cut.state == "started" and cut.read_json("meta.json")["status"] == "interrupted"
    assert (load_file(cut.ckpt_last)["epoch"], load_file(cut.ckpt_last)["step_in_epoch"]) == (2, 0)
    torch.manual_seed(3)
    resumed = Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path / "cut"), device="cpu", resume=True).fit()
    untimed = [[{k: v for k, v in e.items() if k != "time_s"} for e in r["history"]] for r in (full, resumed)]
    assert resumed["test"] == full["test"] and untimed[0] == untimed[1]


def test_a_stop_in_an_epochs_hooks_stops_before_the_next_epoch(tmp_path):
    cfg = tiny_cfg("classification", optim={"epochs": 3})
    cfg.hooks = [{"name": "checkpoint", "every": 5}]  # no checkpoint of epoch 1 but the stop's own
    with pytest.raises(RunInterrupted, match="interrupted at epoch 2 step 0"):
        Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path), device="cpu", hooks=[StopAt("after_epoch", 0)]).fit()
    assert load_file(str(tmp_path / "ckpt-last.pth"))["epoch"] == 1


def test_a_stop_during_the_probes_fit_interrupts_it(tmp_path, monkeypatch):
    solve = SvmProbeTask.solve

    def solve_then_signal(self, trainer):
        out = solve(self, trainer)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(SvmProbeTask, "solve", solve_then_signal)
    cfg = tiny_cfg("classification", train={"probe": "svm", "progress": False})
    task = SvmProbeTask(cfg)
    task.build_base, task.build_model = TinyCls(cfg).build_base, lambda datasets: _Features()
    with pytest.raises(RunInterrupted, match="interrupted after the probe's fit"):
        Trainer(cfg, task, work_dir=str(tmp_path), device="cpu").fit()
    assert RunDir(str(tmp_path)).read_json("meta.json")["status"] == "interrupted"
    assert not (tmp_path / "metrics.json").exists()


class _Features(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(3, 4)

    def forward_features(self, x):  # timm's shape: tokens (B, N, 4), pooled by forward_head
        return self.w(x)

    def forward_head(self, tokens, pre_logits=False):
        return tokens.max(1).values


def test_a_stop_after_a_finished_run_ends_the_driver_before_the_next(tmp_path, monkeypatch, capsys):
    code, out, err = tool("finetune_modelnet.py", "--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--device", "cpu",
                          *TINY_FINETUNE, f"train.output_dir={tmp_path}", "hooks=[{name: test_sigterm, event: after_train}]",
                          "--seeds", "0", "1", monkeypatch=monkeypatch, capsys=capsys)
    base = tmp_path / "finetune_demo" / "default"
    assert_stopped_before(base / "seed1", err, code, where=f"before {base / 'seed1'}")
    assert_meta(base / "seed0", "finetune_modelnet.py")  # it had finished: finished it stays


class Inside(Hook):
    """What the process looks like while the run trains."""

    def __init__(self, seen):
        self.seen = seen

    def before_train(self, trainer):
        self.seen.append((get_backend_override("fps"), torch.are_deterministic_algorithms_enabled(),
                          torch.get_num_threads()))


def test_a_runs_process_settings_do_not_reach_the_next_run(tmp_path):
    log = logging.getLogger("pointmap")
    before = (list(log.handlers), log.level, log.propagate, signal.getsignal(signal.SIGINT))
    seen = []
    threads = torch.get_num_threads()
    first = tiny_cfg("classification", optim={"epochs": 1},
                     train={"deterministic": True, "progress": False, "cpu_threads": threads + 1})
    first.ops = {"fps": "torch"}
    Trainer(first, TinyCls(first), work_dir=str(tmp_path / "a"), device="cpu", hooks=[Inside(seen)]).fit()
    assert get_backend_override("fps") is None and not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads  # train.cpu_threads held for the run only
    second = tiny_cfg("classification", optim={"epochs": 1})
    Trainer(second, TinyCls(second), work_dir=str(tmp_path / "b"), device="cpu", hooks=[Inside(seen)]).fit()
    assert seen == [("torch", True, threads + 1), (None, False, threads)]
    assert (list(log.handlers), log.level, log.propagate, signal.getsignal(signal.SIGINT)) == before


def test_scopes_nest_and_a_signal_outside_a_deferring_one_stops_at_once():
    with ProcessScope(defer_stop=False):
        with pytest.raises(KeyboardInterrupt) as info:
            os.kill(os.getpid(), signal.SIGTERM)
        assert exit_code(info.value) == 143  # a stop at once says which signal: 128 + its number
        with ProcessScope() as inner:
            os.kill(os.getpid(), signal.SIGTERM)  # deferred: a request
            assert inner.stop_requested == "SIGTERM"
            with pytest.raises(KeyboardInterrupt) as info:  # asked twice: at once
                os.kill(os.getpid(), signal.SIGINT)
            assert exit_code(info.value) == 130 and exit_code(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and ProcessScope().stop_requested is None


def test_a_signal_the_process_was_started_ignoring_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a shell's background job (the fixture gives it back)
    with ProcessScope() as scope:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # SIGTERM is still the scope's
        os.kill(os.getpid(), signal.SIGINT)  # ignored: no stop request
        assert scope.stop_requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert scope.stop_requested == "SIGTERM"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
