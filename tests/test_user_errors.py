"""User errors (issue 15): one type for what users get wrong, printed as one line with exit 2 by the tools
(``--debug``: with the traceback); anything else is a bug and raises with its traceback. The free-form
config sections are checked against the signatures they are passed to, before a run folder exists."""
import os
import subprocess
import sys

import pytest
import torch

from pointmap.config import ConfigError, load_config
from pointmap.engine import NonFiniteLossError, build_task
from pointmap.errors import UserError, UserFileNotFoundError, one_line
from pointmap.models import CheckpointError, read_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
DEMO = os.path.join(REPO, "cfgs", "map_demo.yaml")
FINETUNE = os.path.join(REPO, "cfgs", "finetune_demo.yaml")


def _common():
    sys.path.insert(0, TOOLS)
    try:
        import _common
    finally:
        sys.path.remove(TOOLS)
    return _common


def rejected(overrides, cfg=DEMO) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_task(load_config(cfg, overrides))
    message = str(info.value)
    assert "\n" not in message
    return info.value


def test_model_args_typo_names_the_key_and_the_nearest_name():
    e = rejected(["model.args.embed_dimm=128"])
    assert str(e) == "model.args: unknown argument 'embed_dimm' of hybridnet_s (did you mean 'embed_dim'?)"
    # the names come from the whole chain: preset -> build_model -> HybridEncoder -> TokenEncoder
    build_task(load_config(DEMO, ["model.args={embed_dim: 16, num_group: 4, qkv_bias: true, head_dropout: 0.1}"]))
    assert "lnp_k" in str(rejected(["model.name=map3d_official", "model.args={lnp_kk: 3}"]))
    assert "'patch_size'" in str(rejected(["model.name=hybridnet_image_s", "model.args={patch_sizes: 8}"]))


def test_data_options_are_checked_against_the_data_set():
    e = rejected(["data.name=meshes", "data.root=/nonexistent"])  # the demo's data.options has size
    assert "data.options" in str(e) and "'size'" in str(e) and "'meshes'" in str(e)
    assert "data.root" in str(rejected(["data.options.root=/tmp"]))


def test_task_args_objective_args_and_transform_options_are_checked():
    e = rejected(["task_args.label_smoothingg=0.1"], FINETUNE)
    assert str(e).startswith("task_args: unknown argument 'label_smoothingg' of task 'classification'")
    assert "did you mean 'label_smoothing'" in str(e)
    e = rejected(["objective.decoder_mlp_ratioo=2"])
    assert "unknown config key 'objective.decoder_mlp_ratioo'; did you mean 'objective.decoder_mlp_ratio'?" in str(e)
    assert "unknown config key 'objective.args'" in str(rejected(["objective.args={embed_dim: 16}"]))  # gone in 0.2
    e = rejected(["data.train_transforms=[{name: sample, num_pointz: 3}]"])
    assert str(e) == ("data.train_transforms[0]: unknown argument 'num_pointz' of transform 'sample' "
                      "(did you mean 'num_points'?)")


def test_hook_arguments_are_checked_and_the_spellings_removed_in_0_2_are_errors():
    e = rejected(["hooks=[{name: vis, evry: 10}]"])
    assert str(e) == "hooks: unknown argument 'evry' of hook 'vis' (did you mean 'every'?)"
    assert "'every'" in str(rejected(["hooks=[{name: checkpoint, every_n_epochs: 2}]"]))
    assert "'every'" in str(rejected(["hooks=[{name: vis, every_n_epochs: 3}]"]))
    assert "unknown config key 'train.eval_every'" in str(rejected(["train.eval_every=4"]))
    cfg = load_config(DEMO, ["hooks=[{name: evaluate, every: 4}]"])
    from pointmap.engine.hooks import DEFAULT_HOOKS, build_hooks

    assert build_hooks(cfg.hooks, DEFAULT_HOOKS)[0].every == 4


def test_a_config_saved_by_0_1_still_loads():
    """0.1 wrote train.eval_every: null and objective.args: {} into every saved config (runs, checkpoints)."""
    from pointmap.config import config_from_dict, config_to_dict

    saved = config_to_dict(load_config(DEMO))
    saved["train"]["eval_every"], saved["objective"]["args"] = None, {}
    assert config_to_dict(config_from_dict(saved)) == config_to_dict(load_config(DEMO))
    saved["train"]["eval_every"] = 4
    with pytest.raises(ConfigError, match="unknown config key 'train.eval_every'"):
        config_from_dict(saved)


def test_a_bad_task_args_value_keeps_its_cause():
    with pytest.raises(ConfigError) as info:  # a value the task cannot take: the TypeError is the cause
        build_task(load_config(FINETUNE, ["task_args.vote_scale=3"]))
    assert isinstance(info.value.__cause__, TypeError) and "task 'classification': bad task_args" in str(info.value)
    assert "\n" not in str(info.value)


def test_user_facing_types_are_user_errors():
    from pointmap.data.io import missing

    assert issubclass(ConfigError, UserError) and issubclass(CheckpointError, UserError)
    assert issubclass(NonFiniteLossError, UserError) and issubclass(NonFiniteLossError, FloatingPointError)
    assert isinstance(missing("/nope/x.h5"), FileNotFoundError) and isinstance(missing("/x"), UserError)
    assert issubclass(UserFileNotFoundError, FileNotFoundError) and issubclass(UserError, ValueError)


def test_main_prints_user_errors_as_one_line_and_raises_bugs(capsys):
    common = _common()

    def fail(e):
        def run():
            raise e
        return run

    with pytest.raises(ValueError, match="a bug"):  # not a user error: its traceback propagates
        common.main(fail(ValueError("a bug")), debug=False)
    with pytest.raises(KeyError):
        common.main(fail(KeyError("x")), debug=False)
    with pytest.raises(SystemExit) as info:
        common.main(fail(ConfigError("bad\n  key")), debug=False)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err == "error: bad key\n"
    try:
        raise TypeError("the cause")
    except TypeError as cause:
        chained = ConfigError("bad key")
        chained.__cause__ = cause
    with pytest.raises(SystemExit) as info:
        common.main(fail(chained), debug=True)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" in err and "TypeError: the cause" in err
    assert err.strip().splitlines()[-1] == "error: bad key"


def test_truncated_checkpoint_is_one_complete_line(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(str(path))
    message = str(info.value)
    assert "\n" not in message and message.endswith(")") and "..." not in message.replace("[... cut]", "")
    assert isinstance(info.value.__cause__, Exception)
    text = "First sentence here. Second, longer sentence that goes on and on"
    assert one_line(text, 40) == "First sentence here. [... cut]"
    assert one_line("a  b\n c") == "a b c"


@pytest.mark.slow
def test_tools_reject_typos_before_writing_and_show_tracebacks_with_debug(tmp_path):
    """Subprocesses: the pretrain tool on a model.args typo (one line, exit 2, nothing under the output
    folder), the same with --debug (traceback, still exit 2), and visualize.py on a text --ckpt."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    out = tmp_path / "exp"
    argv = [sys.executable, os.path.join(TOOLS, "pretrain.py"), "--cfg", DEMO, "--device", "cpu",
            f"train.output_dir={out}", "model.args.embed_dimm=128"]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: model.args: unknown argument 'embed_dimm' of hybridnet_s (did you mean 'embed_dim'?)"], r.stderr
    assert not out.exists()
    r = subprocess.run(argv + ["--debug"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 2 and "Traceback (most recent call last)" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: model.args: unknown argument 'embed_dimm'")
    (tmp_path / "notes.pth").write_text("not weights\n")
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "visualize.py"), "--ckpt", str(tmp_path / "notes.pth"),
                        "--out", str(tmp_path / "x.png")], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "is not a readable torch checkpoint" in lines[0], r.stderr


@pytest.mark.parametrize("override,key", [
    ("data.batch_size=0", "data.batch_size"), ("data.batch_size=-4", "data.batch_size"),
    ("optim.epochs=0", "optim.epochs"), ("optim.lr=-1e-3", "optim.lr"), ("optim.lr=0", "optim.lr"),
    ("eval.val_fraction=1.5", "eval.val_fraction"), ("data.label_fraction=0", "data.label_fraction"),
    ("objective.mask_ratio=1.0", "objective.mask_ratio"), ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
    ("optim.grad_clip=0", "optim.grad_clip"), ("data.num_workers=-1", "data.num_workers"),
    ("data.train_transforms=[{name: sample, num_points: 0}]", "data.train_transforms[0]"),
])
def test_values_the_loaders_would_reject_are_config_errors(override, key):
    """Checked with the config (one line naming the key), before any data, model or run folder."""
    with pytest.raises(ConfigError) as info:
        build_task(load_config(DEMO, [override]))
    assert key in str(info.value) and "\n" not in str(info.value)


def test_a_bad_value_on_the_command_line_writes_no_run_folder(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "pretrain.py"), "--cfg", DEMO, "data.batch_size=0",
                        f"train.output_dir={tmp_path / 'runs'}"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {DEMO}: config key 'data.batch_size' must be in [1, inf), got 0"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,said", [
    (["--cfg", FINETUNE, "--ckpt", "/no/such/file"], "pretrained weights /no/such/file: no such file or folder"),
    (["--cfg", os.path.join(REPO, "cfgs", "finetune_modelnet.yaml"), "data.root=/no/such/dir"],
     "data root not found: /no/such/dir"),
    (["--cfg", FINETUNE, "--ckpt", "/no/such/file", "--seeds", "0", "1"], "pretrained weights /no/such/file"),
])
def test_paths_on_the_command_line_are_checked_before_a_run_folder(tmp_path, args, said):
    """One line, said once (not also as the run's 'run failed' log line), exit 2, nothing written."""
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "finetune_modelnet.py"), *args[:2],
                        f"train.output_dir={tmp_path / 'runs'}", *args[2:]], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    said_lines = [ln for ln in (r.stdout + r.stderr).splitlines() if said in ln]
    assert len(said_lines) == 1 and said_lines[0].startswith("error: ") and r.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_a_user_error_after_the_run_folder_is_said_once_and_kept_in_the_log(tmp_path):
    """Found only while the run starts (a data file that does not parse): the run folder says failed, log.txt has
    the error, the console has it once, from the tool."""
    (tmp_path / "meshes" / "a").mkdir(parents=True)
    (tmp_path / "meshes" / "a" / "x.obj").write_text("this is not a mesh\n")
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "pretrain.py"), "--cfg",
                        os.path.join(REPO, "cfgs", "map_meshes.yaml"), f"data.root={tmp_path / 'meshes'}",
                        f"train.output_dir={tmp_path / 'runs'}", "data.batch_size=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    out = r.stdout + r.stderr
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and out.count(error[len("error: "):]) == 1
    logs = list((tmp_path / "runs").rglob("log.txt"))
    assert logs and "run failed: " in logs[0].read_text()


def _modelnet_with_wrong_shape_names(root):
    """A ModelNet40 text layout whose modelnet40_shape_names.txt does not name the classes its split lists use."""
    text = root / "ModelNet" / "modelnet40_normal_resampled"
    (text / "airplane").mkdir(parents=True)
    (text / "modelnet40_shape_names.txt").write_text("chair\ntable\n")
    for split in ("train", "test"):
        (text / f"modelnet40_{split}.txt").write_text("airplane_0001\n")
    (text / "airplane" / "airplane_0001.txt").write_text("0,0,0,0,0,1\n" * 8)
    return root


def test_inputs_that_are_not_what_they_should_be_write_no_run_folder(tmp_path, monkeypatch, capsys):
    """Issue 29: an empty config, a --ckpt that is no checkpoint (a text file, an empty or truncated .pth), a
    data root that is empty or holds the wrong files: one error line, exit 2, before any run folder."""
    from .test_tools import tool

    readme = os.path.join(REPO, "README.md")
    (tmp_path / "empty.yaml").write_text("# nothing but a comment\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"model": {"w": torch.zeros(1000)}}, tmp_path / "cut.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:300])
    (tmp_path / "no_data").mkdir()
    modelnet = os.path.join(REPO, "cfgs", "finetune_modelnet.yaml")
    cases = [
        (["--cfg", str(tmp_path / "empty.yaml")], f"config {tmp_path / 'empty.yaml'} is empty"),
        (["--cfg", FINETUNE, *TINY_ARGS, "--ckpt", readme], f"{readme} is not a readable torch checkpoint"),
        (["--cfg", FINETUNE, *TINY_ARGS, "--ckpt", str(tmp_path / "empty.pth")], "empty.pth"),
        (["--cfg", FINETUNE, *TINY_ARGS, "--ckpt", str(tmp_path / "cut.pth")], "cut.pth"),
        (["--cfg", FINETUNE, *TINY_ARGS, "--eval", "--ckpt", readme], "is not a readable torch checkpoint"),
        (["--cfg", modelnet, f"data.root={tmp_path / 'no_data'}"], "modelnet40_train.txt"),
        (["--cfg", modelnet, f"data.root={_modelnet_with_wrong_shape_names(tmp_path / 'mn')}"],
         "names class 'airplane', not in the shape names file"),
        (["--cfg", modelnet, f"data.root={tmp_path / 'mn'}", "--seeds", "0", "1"], "not in the shape names file"),
    ]
    for args, said in cases:
        out = tmp_path / "runs"
        code, _, err = tool("finetune_modelnet.py", *args, "--device", "cpu", f"train.output_dir={out}",
                            monkeypatch=monkeypatch, capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], err
        assert not out.exists(), args


TINY_ARGS = ["model.args={embed_dim: 16, layout: MT, num_heads: 2, num_group: 4, group_size: 8}",
             "data.options={num_points: 64, samples_per_class: 2}"]


def test_an_empty_config_is_an_error_naming_the_file(tmp_path):
    for text in ("", "\n# a comment\n"):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=f"config {tmp_path / 'c.yaml'} is empty"):
            load_config(str(tmp_path / "c.yaml"))
    (tmp_path / "child.yaml").write_text("_base_: c.yaml\n")  # an empty base is as empty
    with pytest.raises(ConfigError, match="is empty"):
        load_config(str(tmp_path / "child.yaml"))
