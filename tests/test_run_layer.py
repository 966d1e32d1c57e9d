"""The run layer: run folders (refuse / resume / overwrite, meta.json, failed starts), SIGINT mid-epoch and
--resume equal to an uninterrupted run, --eval reproducing a finetuning run's test accuracy, the loop's
reads of the device, and the package's shape (no import cycle, no module over 400 lines)."""
import ast
import functools
import json
import os
import shlex
import signal
import sys

import pytest
import torch

from pointmap.engine import Hook, RunDir, RunInterrupted, Trainer, load_file, register_hook

from .test_engine import TinyCls, TinyPretrain, tiny_cfg
from .test_tools import CFGS, TINY_FINETUNE, TINY_PRETRAIN, assert_meta, pretrained, tool  # noqa: F401

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pointmap")


# ----------------------------------------------------------------------------- interruption
@register_hook("test_sigint")
class SendSigint(Hook):
    """Sends this process a real SIGINT right after global step ``at``."""

    def __init__(self, at: int):
        self.at = at

    def after_step(self, trainer, logs):
        if trainer.state.global_step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_mid_epoch_then_resume_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    args = ["--cfg", os.path.join(CFGS, "map_demo.yaml"), "--device", "cpu", *TINY_PRETRAIN,
            "data.options={size: 32, num_points: 64}", "optim.epochs=2", f"train.output_dir={tmp_path}"]
    code, out, err = tool("pretrain.py", *args, "--exp-name", "full", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    # 4 steps an epoch: the signal arrives after step 2 of epoch 2
    code, out, err = tool("pretrain.py", *args, "--exp-name", "cut", "hooks=[{name: test_sigint, at: 6}]",
                          monkeypatch=monkeypatch, capsys=capsys)
    line = err.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in err and line.startswith("interrupted at epoch 2 step 2; continue with: ")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    cut = tmp_path / "map_demo" / "cut"
    ckpt = load_file(str(cut / "ckpt-last.pth"))
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (1, 2, 6)
    assert_meta(cut, "pretrain.py", status="interrupted")
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[0] == "python" and os.path.basename(command[1]) == "pretrain.py" and command[-1] == "--resume"
    torch.manual_seed(99)  # a resumed process starts from another RNG state
    code, out, err = tool("pretrain.py", *command[2:], monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    full, resumed = load_file(str(tmp_path / "map_demo" / "full" / "ckpt-last.pth")), load_file(str(cut / "ckpt-last.pth"))
    assert resumed["global_step"] == full["global_step"] == 8
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert [h["train"] for h in full["history"]] == [h["train"] for h in resumed["history"]]
    meta = assert_meta(cut, "pretrain.py")
    assert meta["resumed"] and [s["status"] for s in meta["sessions"]] == ["interrupted"]


@pytest.mark.parametrize("at", [6, 9])  # 6 steps an epoch: at the boundary (epoch 2, step 0), mid-epoch 2
def test_trainer_interrupted_by_sigint_resumes_exactly(tmp_path, at):
    cfg = tiny_cfg(optim={"epochs": 3}, train={"log_every": 4, "progress": False})
    Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path / "full"), device="cpu").fit()
    with pytest.raises(RunInterrupted, match=f"interrupted at epoch 2 step {at - 6}; continue with: python .* --resume"):
        Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path / "cut"), device="cpu", hooks=[SendSigint(at)]).fit()
    torch.manual_seed(5)
    Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path / "cut"), device="cpu", resume=True).fit()
    full, cut = (load_file(str(tmp_path / d / "ckpt-last.pth")) for d in ("full", "cut"))
    assert all(torch.equal(v, cut["model"][k]) for k, v in full["model"].items())
    assert [h["train"] for h in full["history"]] == [h["train"] for h in cut["history"]]
    assert [h["lr"] for h in full["history"]] == [h["lr"] for h in cut["history"]]  # the record says the same lr


def test_failed_start_is_marked_with_the_error_in_the_log_and_not_refused(tmp_path):
    cfg = tiny_cfg()
    task = TinyPretrain(cfg)

    def broken(model, batch):  # a bug in the first step, once the folder is made
        raise ValueError("no such layer: XYZ")

    task.train_step = broken
    with pytest.raises(ValueError, match="no such layer"):
        Trainer(cfg, task, work_dir=str(tmp_path), device="cpu").fit()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["status"] == "failed" and "no such layer: XYZ" in meta["error"]
    assert "run failed: ValueError: no such layer: XYZ" in (tmp_path / "log.txt").read_text()
    assert RunDir(str(tmp_path)).state == "empty"
    Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path), device="cpu").fit()  # the next start is not refused
    assert RunDir(str(tmp_path)).state == "finished"


def test_run_dir_refuses_resumes_overwrites(tmp_path):
    run = RunDir(str(tmp_path / "r")).open()
    run.write_json({"test": 1})
    run.close("finished")
    assert run.state == "finished" and json.loads((tmp_path / "r" / "meta.json").read_text())["status"] == "finished"
    with pytest.raises(ValueError, match="already holds a run"):
        RunDir(str(tmp_path / "r")).open()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        RunDir(str(tmp_path / "r"), resume=True).open()
    again = RunDir(str(tmp_path / "r"), overwrite=True).open()
    assert not os.path.exists(again.file("metrics.json")) and again.state == "empty"
    assert [s["status"] for s in again.meta["sessions"]] == ["finished"]
    again.close("finished")


def test_default_hooks_are_configured_from_the_config(tmp_path):
    cfg = tiny_cfg("classification", optim={"epochs": 3})
    cfg.hooks = [{"name": "evaluate", "every": 2}, {"name": "checkpoint", "save_best": False},
                 {"name": "best", "metric": "loss", "mode": "min"}]
    trainer = Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path), device="cpu")
    res = trainer.fit()
    assert [type(h).__name__ for h in trainer.hooks] == ["EvaluateHook", "BestHook", "LogHook", "CheckpointHook"]
    assert ["val" in h for h in res["history"]] == [False, True, True]  # every 2nd epoch and the last
    assert res["selection"] == {"split": "val", "metric": "loss", "mode": "min"}
    assert res["best"]["value"] == min(h["val"]["loss"] for h in res["history"] if "val" in h)
    assert not (tmp_path / "ckpt-best.pth").exists() and (tmp_path / "ckpt-last.pth").exists()
    assert res["tested_epoch"] == 3  # no ckpt-best.pth: the last weights are scored, and say so
    cfg.hooks = [{"name": "log", "enabled": False}]
    names = [type(h).__name__ for h in Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path / "b"), device="cpu").hooks]
    assert names == ["EvaluateHook", "BestHook", "CheckpointHook"]


# ----------------------------------------------------------------------------- --eval
def test_eval_reproduces_the_test_accuracy_of_a_finetuning_run(pretrained, tmp_path, monkeypatch, capsys):  # noqa: F811
    args = ["--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--device", "cpu", *TINY_FINETUNE,
            "optim.epochs=2", f"train.output_dir={tmp_path}"]
    code, out, err = tool("finetune_modelnet.py", *args, "--ckpt", pretrained, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    printed = out.split("| test ")[1].split(" | ")[0]  # "acc 40.00 macc 40.00 loss 2.68 count 30"
    code, out, err = tool("finetune_modelnet.py", *args, "--eval", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    run = tmp_path / "finetune_demo" / "default"
    log = (run / "eval" / "log.txt").read_text()
    assert "leave out" not in log and "steps/epoch" not in log and "no training: scores the test split" in log
    assert f"| epoch {load_file(str(run / 'ckpt-best.pth'))['epoch']} |" in log  # the scored weights' epoch
    assert "precision: fp32" in (run / "config.yaml").read_text()  # bf16 is for CUDA: a CPU run trains fp32
    assert out.split("| test ")[1].split(" | ")[0] == printed and f"evaluated {run / 'ckpt-best.pth'}" in out
    trained, scored = (json.loads((run / p / "metrics.json").read_text())["test"] for p in ("", "eval"))
    assert scored == trained
    assert_meta(run / "eval", "finetune_modelnet.py")
    bad = tool("finetune_modelnet.py", *args, "--eval", "--ckpt", str(tmp_path / "nope.pth"), monkeypatch=monkeypatch,
               capsys=capsys)
    assert bad[0] == 2 and "checkpoint not found" in bad[2]


# ----------------------------------------------------------------------------- reads of the device
SYNCS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")


def _from_pointmap():
    """Whether the call two frames up (the caller of the patched method) is pointmap's code; torch's own
    CPU-side reads (the sampler's permutation, the loader's seed) are not the loop's."""
    return sys._getframe(2).f_code.co_filename.startswith(PACKAGE + os.sep)


@pytest.mark.parametrize("make_task", [TinyPretrain, TinyCls])
def test_loop_reads_the_device_once_per_log_interval(tmp_path, monkeypatch, make_task):
    calls = []
    for name in SYNCS:
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, _name=name, **k):
            if _from_pointmap():
                calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    task_name = "pretrain" if make_task is TinyPretrain else "classification"
    cfg = tiny_cfg(task_name, optim={"epochs": 2}, train={"log_every": 2, "progress": False})
    trainer = Trainer(cfg, make_task(cfg), work_dir=str(tmp_path), device="cpu")
    per_epoch, train_one_epoch = [], trainer.train_one_epoch

    def counted_epoch():
        before = len(calls)
        out = train_one_epoch()
        per_epoch.append(calls[before:])
        return out

    trainer.train_one_epoch = counted_epoch
    trainer.fit()
    steps = trainer.steps_per_epoch
    assert per_epoch == [["tolist"] * -(-steps // 2)] * 2  # one read per 2 steps (and at the epoch's end)


def test_nonfinite_step_is_skipped_on_the_device(tmp_path):
    cfg = tiny_cfg(optim={"epochs": 1}, train={"log_every": 100, "progress": False})
    trainer = Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path), device="cpu")
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    loss = trainer.module(torch.randn(4, 32, 3)).loss * float("nan")
    finite, applied = trainer.optimizer_step(loss)
    assert not finite and not applied
    assert all(torch.equal(before[k], v) for k, v in trainer.module.state_dict().items())
    assert all(float(s["step"]) == 0 for s in trainer.optimizer.state.values())
    trainer.run.close("failed")


# ----------------------------------------------------------------------------- package shape
def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                yield (rel[: -len(".__init__")] if rel.endswith(".__init__") else rel), path


@functools.lru_cache(maxsize=None)
def _top_level_names(path):
    names = set()
    for node in ast.parse(open(path, encoding="utf-8").read()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _imports(name, path, known):
    """The pointmap modules ``name`` imports anywhere in its file (functions too)."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` pkg's __init__ (a name it
            # does not define, such as a compiled extension, is neither)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else
                       base if base in known and a.name in _top_level_names(known[base]) else None
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def test_no_import_cycle_and_imports_go_one_way():
    known = dict(_modules())
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    rank = {name: _layer(name) for name in graph}
    for name, deps in graph.items():
        for dep in deps:
            assert rank[dep] <= rank[name], (f"{name} imports {dep}: imports go "
                                             f"{' -> '.join('/'.join(p or 'pointmap' for p in layer) for layer in LAYERS)}")


# Every module of the package, bottom to top: a module imports only from its own layer or those below it.
LAYERS = [("errors", "atomic", "version", "registry", "objective", "config", "download", "hub"), ("ops",), ("layers", "data"),
          ("models",), ("engine",), ("vis",), ("experiments",), ("", "env"), ("cli", "__main__")]


def _layer(module: str) -> int:
    """The layer of ``pointmap.<part>...`` (``""``: the package's own ``__init__``); every module has one."""
    part = module.split(".")[1] if "." in module else ""
    found = [i for i, layer in enumerate(LAYERS) if part in layer]
    assert found, f"{module} is in no layer of LAYERS: add its package there"
    return found[0]


def test_no_module_over_400_lines():
    long = {name: n for name, path in _modules() if (n := len(open(path, encoding="utf-8").readlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
