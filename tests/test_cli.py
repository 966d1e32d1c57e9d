"""The `pointmap` command: its subcommand table, the shipped configs by name, tools/*.py as thin scripts with
the same arguments; and (slow) a wheel built from this checkout, installed in a fresh venv, run from an empty
folder."""
import glob
import os
import subprocess
import sys
import zipfile

import pytest

from pointmap import cli
from pointmap.config import configs_dir, list_configs, load_config, resolve_config
from pointmap.errors import UserFileNotFoundError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves(table, prefix=""):
    for name, entry in table.items():
        if isinstance(entry, dict):
            yield from _leaves(entry, f"{prefix}{name} ")
        else:
            yield prefix + name, entry


def test_help_lists_every_subcommand_and_each_entry_runs_something(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    names = [name for name, _ in _leaves(cli.COMMANDS)]
    assert {"pretrain", "finetune modelnet", "finetune scanobjectnn", "finetune partseg", "finetune fewshot",
            "export", "visualize", "recipe", "prepare-data", "ablate", "benchmark", "env", "configs"} <= set(names)
    for name, (target, help_) in _leaves(cli.COMMANDS):
        assert f"  {name:26s} {help_}" in text
        module, function = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), target


def test_unknown_or_missing_subcommand_is_one_line_and_exit_2(capsys):
    assert cli.main(["finetun"]) == 2
    err = capsys.readouterr().err
    assert err == "error: pointmap: unknown command 'finetun' (did you mean 'finetune'?); pointmap --help lists them\n"
    assert cli.main(["finetune"]) == 2 and "modelnet" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.startswith("pointmap 0.")


def test_a_subcommand_gets_its_arguments_and_its_program_name(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["finetune", "scanobjectnn", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: pointmap finetune scanobjectnn") and "--variant" in out


def test_configs_lists_the_shipped_configs_by_name(capsys):
    cli.main(["configs"])
    names = capsys.readouterr().out.split()
    files = glob.glob(os.path.join(REPO, "cfgs", "**", "*.yaml"), recursive=True)
    want = sorted(os.path.relpath(f, os.path.join(REPO, "cfgs"))[:-5] for f in files if "_base_" not in f)
    assert names == want == list_configs() and "map_demo" in names and "point_mae/finetune_modelnet" in names
    assert os.path.samefile(configs_dir(), os.path.join(REPO, "cfgs"))  # a checkout reads cfgs/ in place


def test_a_config_by_name_by_path_and_the_error_for_neither(tmp_path, monkeypatch):
    shipped = os.path.join(REPO, "cfgs", "point_mae", "finetune_modelnet.yaml")
    for spec in ("point_mae/finetune_modelnet", "point_mae/finetune_modelnet.yaml", "cfgs/point_mae/finetune_modelnet"):
        monkeypatch.chdir(tmp_path)  # not a file here: the shipped config of that name
        assert os.path.samefile(resolve_config(spec), shipped)
    assert load_config("map_demo").name == "map_demo"  # its _base_ resolved beside the shipped file
    own = tmp_path / "mine.yaml"  # a file of the user's, with a _base_ of its own
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.123}\n")
    own.write_text("_base_: base.yaml\ntask: pretrain\n")
    assert resolve_config(str(own)) == str(own) and load_config(str(own)).optim.lr == 0.123
    with pytest.raises(UserFileNotFoundError, match=r"nor a shipped config of that name; did you mean 'map_demo'\?"):
        load_config("map_dem")


@pytest.mark.parametrize("tool, command", [("pretrain.py", ["pretrain"]),
                                           ("finetune_scanobjectnn.py", ["finetune", "scanobjectnn"]),
                                           ("fewshot.py", ["finetune", "fewshot"]), ("recipe.py", ["recipe"]),
                                           ("prepare_data.py", ["prepare-data"])])
def test_a_tool_script_takes_the_same_arguments_as_its_subcommand(tool, command):
    env = {**os.environ, "PYTHONPATH": REPO, "COLUMNS": "200"}

    def usage(argv):
        r = subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True, cwd=REPO, env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.split("\n\n", 1)[1]  # after the usage lines, which name the program

    assert usage([os.path.join("tools", tool)]) == usage(["-m", "pointmap", *command])


@pytest.mark.slow
def test_the_wheel_runs_anywhere(tmp_path):
    """A wheel of this checkout (pure Python: no torch at build time is the same as POINTMAP_NO_EXT=1), in a
    fresh venv beside the installed torch, from an empty folder: both commands, and the demo writes a
    checkpoint with a shipped config."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(wheels), REPO], capture_output=True, text=True, timeout=600,
                       env={**env, "POINTMAP_NO_EXT": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = glob.glob(str(wheels / "pointmap-*.whl"))
    assert wheel.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pointmap/cfgs/map_demo.yaml" in names and "pointmap/cfgs/_base_/demo_model.yaml" in names
    assert "pointmap/py.typed" in names and "pointmap/models/pretrained.yaml" in names
    assert not [n for n in names if n.endswith(".so")]
    assert any(n.endswith("entry_points.txt") for n in names) and any(n.endswith("licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py, exe = str(venv / "bin" / "python"), str(venv / "bin" / "pointmap")
    r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", wheel], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()

    def run(*argv, timeout=300):
        r = subprocess.run(list(argv), capture_output=True, text=True, cwd=empty, env=env, timeout=timeout)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r.stdout

    where = run(py, "-c", "import pointmap; print(pointmap.__file__)")
    assert where.startswith(str(venv)), where  # the wheel's copy, not a checkout's
    assert "finetune modelnet" in run(exe, "--help") and "prepare-data" in run(py, "-m", "pointmap", "--help")
    run(exe, "pretrain", "--cfg", "map_demo", "optim.epochs=1", "--device", "cpu", timeout=900)
    assert (empty / "experiments" / "map_demo" / "default" / "ckpt-last.pth").is_file()
