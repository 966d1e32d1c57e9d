"""Every figure the README and the documentation pages quote comes from a file under docs/ that a named command
wrote: the first screen and the demo (docs/demo/first_screen.json, `bash tools/first_screen.sh`;
docs/demo/numbers.json, `python tools/demo_numbers.py`), the ablation tables (docs/ablation*/,
`python tools/ablate.py ...`), the benchmarks (docs/benchmarks/*.json, `python tools/benchmark.py ...`) and the
oldest torch (docs/min_torch.json, `bash tools/check_min_torch.sh`). This test reads those files and checks
that the pages say what they hold."""
import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")


def _readme() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def _page(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def _json(*parts):
    with open(os.path.join(DOCS, *parts), encoding="utf-8") as f:
        return json.load(f)


def duration(seconds: float) -> str:
    """How the README writes a wall time: ``2 min 42 s`` (``42 s`` under a minute)."""
    s = int(round(seconds))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    nxt = re.search(rf"^#{{1,{level}}} ", text[start + len(heading):], flags=re.M)
    return text[start:start + len(heading) + nxt.start()] if nxt else text[start:]


def front_page_values(numbers: dict, first: dict) -> dict:
    """The front page's figures, as it writes them, from docs/demo/numbers.json (python tools/demo_numbers.py)
    and docs/demo/first_screen.json (bash tools/first_screen.sh)."""
    r, inst, tests = numbers["runs"], first["install"], first["tests"]
    pre = r["pretrain"]
    acc = {k: f"{r[k]['test_acc']:.2f}" for k in ("finetune", "scratch", "linear_probe", "scratch_probe", "svm_probe")}
    seeds = {k: (f"{r[k]['acc_mean']:.2f}", f"{r[k]['acc_std']:.2f}") for k in ("finetune_seeds", "scratch_seeds")}
    return {
        "TORCH_TIME": duration(inst["torch"]["wall_s"]), "TORCH_GB": f"{inst['torch']['venv_mb'] / 1024:.1f}",
        "PM_TIME": duration(inst["pointmap"]["wall_s"]), "FAST_TIME": duration(tests["fast"]["wall_s"]),
        "SLOW_TIME": duration(tests["slow"]["wall_s"]), "FS_COMMIT": first["commit"][:7],
        "PRE_TIME": duration(pre["wall_s"]), "PRE_LOSS": f"{pre['train_loss']:.4f}",
        "PRE_PRINTED": pre["printed"].rsplit(" | ", 1)[0] + " | <run folder>",
        "FIN_ACC": acc["finetune"], "FIN_TIME": duration(r["finetune"]["wall_s"]),
        "SCR_ACC": acc["scratch"], "SCR_TIME": duration(r["scratch"]["wall_s"]),
        "FS_MEAN": seeds["finetune_seeds"][0], "FS_STD": seeds["finetune_seeds"][1],
        "FS_TIME": duration(r["finetune_seeds"]["wall_s"]),
        "SS_MEAN": seeds["scratch_seeds"][0], "SS_STD": seeds["scratch_seeds"][1],
        "SS_TIME": duration(r["scratch_seeds"]["wall_s"]),
        "LIN_ACC": acc["linear_probe"], "LIN_TIME": duration(r["linear_probe"]["wall_s"]),
        "SLIN_ACC": acc["scratch_probe"], "SLIN_TIME": duration(r["scratch_probe"]["wall_s"]),
        "SVM_ACC": acc["svm_probe"], "SVM_TIME": duration(r["svm_probe"]["wall_s"]),
        "SEG_C": f"{r['partseg']['cls_miou']:.2f}", "SEG_I": f"{r['partseg']['ins_miou']:.2f}",
        "SEG_TIME": duration(r["partseg"]["wall_s"]),
        "FEW_MEAN": f"{r['fewshot']['acc_mean']:.2f}", "FEW_STD": f"{r['fewshot']['acc_std']:.2f}",
        "FEW_TIME": duration(r["fewshot"]["wall_s"]),
        "VIS_CD": f"{r['visualize']['chamfer_l2']:.4g}", "VIS_TIME": duration(r["visualize"]["wall_s"]),
        "NUM_COMMIT": numbers["commit"][:7], "CKPT": "experiments/map_demo/default/ckpt-last.pth",
    }


def front_page_quotes(v: dict) -> list:
    """The README's sentences and table rows with figures in them, as they must read."""
    return [
        "# no GPU? instead of the next line: pip install torch torchvision --index-url "
        "https://download.pytorch.org/whl/cpu",  # the CPU-only line leads the first screen
        f"pip install torch torchvision                      # {v['TORCH_TIME']}, {v['TORCH_GB']} GB",
        "pip install --no-build-isolation -e \".[dev,vis]\"   # " + f"{v['PM_TIME']}: pointmap",
        f"python tools/pretrain.py --cfg cfgs/map_demo.yaml  # {v['PRE_TIME']}: the main job",
        f"python -m pytest -q                                # {v['FAST_TIME']}: the tests (the slow ones: -m slow, "
        f"{v['SLOW_TIME']})",
        f"clone (commit `{v['FS_COMMIT']}`)", f"The main job prints `{v['PRE_PRINTED']}`",
        f"| train Chamfer L2 {v['PRE_LOSS']} | {v['PRE_TIME']} |", f"| test acc {v['FIN_ACC']} % | {v['FIN_TIME']} |",
        f"| test acc {v['SCR_ACC']} % | {v['SCR_TIME']} |", f"| {v['FS_MEAN']} ± {v['FS_STD']} % | {v['FS_TIME']} |",
        f"| {v['SS_MEAN']} ± {v['SS_STD']} % | {v['SS_TIME']} |", f"| test acc {v['LIN_ACC']} % | {v['LIN_TIME']} |",
        f"| test acc {v['SLIN_ACC']} % | {v['SLIN_TIME']} |", f"| test acc {v['SVM_ACC']} % | {v['SVM_TIME']} |",
        f"| class / instance mIoU {v['SEG_C']} / {v['SEG_I']} | {v['SEG_TIME']} |",
        f"| {v['FEW_MEAN']} ± {v['FEW_STD']} % over 10 folds | {v['FEW_TIME']} |",
        f"| Chamfer L2 {v['VIS_CD']} | {v['VIS_TIME']} |", f"({v['LIN_ACC']} against\n{v['SLIN_ACC']} %)",
        f"at commit `{v['NUM_COMMIT']}`",
    ]


def test_the_front_page_says_what_docs_demo_holds():
    numbers, first = _json("demo", "numbers.json"), _json("demo", "first_screen.json")
    text = _readme()
    missing = [q for q in front_page_quotes(front_page_values(numbers, first)) if q not in text]
    assert not missing, f"the README does not say what docs/demo/*.json hold: {missing}"
    assert not numbers["dirty"]  # measured in a clean clone
    for name, run in numbers["runs"].items():  # each figure comes from the command the README shows beside it
        assert f"`{run['command']}`" in text, name
    for kind, run in first["tests"].items():  # the timed test runs passed whole in the fresh clone
        assert "passed" in run["result"] and "failed" not in run["result"] and not run["failed"], (kind, run)
    assert os.path.isfile(os.path.join(DOCS, "map_demo_reconstruction.png"))
    assert "--out docs/" not in text  # the documented commands write to experiments/, not over tracked files


def test_the_front_page_says_which_figures_repeat_where():
    """Same machine: seed 0 of the --seeds runs is the single run, to every digit (docs/demo/numbers.json); another
    CPU: the same commands at one commit on two CPU models (docs/demo/cpus/*.json, python tools/demo_numbers.py)."""
    r = _json("demo", "numbers.json")["runs"]
    assert r["finetune_seeds"]["acc_values"][0] == r["finetune"]["test_acc"]
    assert r["scratch_seeds"]["acc_values"][0] == r["scratch"]["test_acc"]
    text = " ".join(_readme().split())
    assert (f"seed 0 of `--seeds 0 1 2` is the single run, {r['finetune']['test_acc']:.2f} % from the checkpoint and "
            f"{r['scratch']['test_acc']:.2f} % from scratch") in text
    runs = {}
    for cpu in ("amd", "intel"):
        doc = _json("demo", "cpus", f"ba84e94_{cpu}.json")
        assert doc["commit"].startswith("ba84e94") and not doc["dirty"] and cpu in doc["machine"].lower()
        runs[cpu] = doc["runs"]
    assert [runs["amd"][k]["command"] for k in ("pretrain", "finetune", "linear_probe")] == \
        [runs["intel"][k]["command"] for k in ("pretrain", "finetune", "linear_probe")]
    amd, intel = (f"{x['pretrain']['train_loss']:.5f}, {x['finetune']['test_acc']:.2f} % and "
                  f"{x['linear_probe']['test_acc']:.2f} %" for x in (runs["amd"], runs["intel"]))
    assert f"gave {amd} on an AMD EPYC and {intel} on an Intel Xeon" in text


def _table_rows(text: str) -> list:
    return [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]


@pytest.mark.parametrize("table", ["ablation_v2/table.md", "ablation_v2/masking_table.md"])
def test_ablation_tables_are_quoted_whole(table):
    """The ablation page quotes the ablation's table rows as the tool wrote them."""
    with open(os.path.join(DOCS, table), encoding="utf-8") as f:
        rows = _table_rows(f.read())
    text = _page("ablation.md")
    assert rows and [r for r in rows if r not in text] == []


def _numbers(text: str) -> set:
    return set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text))


def test_ablation_v1_figures_come_from_its_tables():
    """Every decimal figure of the ablation page's v1 tables is in one of docs/ablation/*.md."""
    text = _section(_page("ablation.md"), "## Ablation v1")
    docs = "".join(open(os.path.join(DOCS, "ablation", f), encoding="utf-8").read()
                   for f in os.listdir(os.path.join(DOCS, "ablation")) if f.endswith(".md"))
    quoted = set().union(*(_numbers(r) for r in _table_rows(text)))
    assert quoted and sorted(quoted - _numbers(docs)) == []


def _rounds_to(value: str, candidates) -> bool:
    digits = len(value.split(".")[1]) if "." in value else 0
    return any(round(c, digits) == float(value) for c in candidates)


def _json_numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _json_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _json_numbers(v)


def test_benchmark_tables_come_from_their_json():
    """The milliseconds of the ops page's CPU benchmark tables are numbers of docs/benchmarks/*.json."""
    values = [v for f in os.listdir(os.path.join(DOCS, "benchmarks")) if f.endswith(".json")
              for v in _json_numbers(_json("benchmarks", f))]
    text = _page("ops.md")
    ms = [m for row in _table_rows(text) for m in re.findall(r"(\d+(?:\.\d+)?) ms", row)]
    steps = [m for row in _table_rows(text) if row.startswith("| float32") or row.startswith("| bf16")
             for m in re.findall(r"\| (\d+(?:\.\d+)?) \|", row)]
    assert len(ms) >= 10 and len(steps) == 4
    assert [m for m in ms + steps if not _rounds_to(m, values) and not _rounds_to(m, [v * 1e3 for v in values])] == []


def test_declared_minimum_torch_was_checked():
    """pyproject.toml's torch>=X.Y is the torch that `bash tools/check_min_torch.sh` ran the tests on."""
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as f:
        declared = re.search(r'"torch>=([0-9.]+)"', f.read()).group(1)
    record = _json("min_torch.json")
    assert record["torch"].split("+")[0].rsplit(".", 1)[0] == declared
    assert record["exit_code"] == 0 and " passed" in record["pytest"] and "failed" not in record["pytest"]
    text = _page("development.md")
    assert f"torch {record['torch'].split('+')[0]}" in text
    assert f"(last run: {record['pytest'].split(' in ')[0]})" in text


ONNX_PRESETS = ("hybridnet_s", "pointmae", "pointmamba")


def onnx_rows(bench: dict) -> list:
    """The ops page's ONNX table rows, as they must read, from docs/benchmarks/onnx_cpu_<preset>.json
    (python tools/benchmark.py --onnx --presets <preset> --json docs/benchmarks/onnx_cpu_<preset>.json)."""
    return [f"| `{r['preset']}` | {r['points']} | {r['eager_ms']:.1f} ms | {r['onnxruntime_ms']:.1f} ms | "
            f"{r['onnx_x_vs_eager']:.2f}x | {r['export_s']:.0f} s | {r['max_abs_diff']:.1e} |" for r in bench["onnx"]]


@pytest.mark.parametrize("preset", ONNX_PRESETS)
def test_onnx_table_is_the_benchmark_s(preset):
    bench = _json("benchmarks", f"onnx_cpu_{preset}.json")
    text = _page("ops.md")
    assert [r["preset"] for r in bench["onnx"]] == [preset]
    assert [r for r in onnx_rows(bench) if r not in text] == [] and f"`{bench['command']}`" in text
