"""Every figure the README quotes comes from a file under docs/ that a named command wrote: the demo
numbers (docs/demo/numbers.json, `python tools/demo_numbers.py`), the ablation tables
(docs/ablation*/, `python tools/ablate.py ...`) and the benchmarks (docs/benchmarks/*.json,
`python tools/benchmark.py ...`). This test reads those files and checks that the README says what
they hold."""
import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")


def _readme() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
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
    nxt = re.search(r"^#{2,3} ", text[start + len(heading):], flags=re.M)
    return text[start:start + len(heading) + nxt.start()] if nxt else text[start:]


def demo_quotes(numbers: dict) -> list:
    """The README's sentences about the demos, as they must read for ``numbers`` (docs/demo/numbers.json)."""
    r = numbers["runs"]
    pre, fin, scr, seg, fs = r["pretrain"], r["finetune"], r["scratch"], r["partseg"], r["fewshot"]
    lin, svm, vis = r["linear_probe"], r["svm_probe"], r["visualize"]
    return [
        f"{pre['command']}                  # {duration(pre['wall_s'])} on 2 busy CPU cores, synthetic shapes",
        f"# {duration(fin['wall_s'])}; prints test acc ({fin['test_acc']:.2f}% here)",
        f"`{fin['printed'].rsplit(' | ', 1)[0]} | <run folder>`",
        f"pretraining {duration(pre['wall_s'])} to a train Chamfer L2 of {pre['train_loss']:.4f}",
        f"finetuning from it {duration(fin['wall_s'])} to **{fin['test_acc']:.2f} %** test accuracy",
        f"the same finetune from scratch {scr['test_acc']:.2f} %",
        f"# {duration(seg['wall_s'])}; test class / instance mIoU {seg['cls_miou']:.2f} / {seg['ins_miou']:.2f}",
        f"# {duration(fs['wall_s'])}; test acc {fs['acc_mean']:.2f} ± {fs['acc_std']:.2f} over {fs['folds']} folds",
        f"# linear {duration(lin['wall_s'])}: {lin['test_acc']:.2f} %; svm {duration(svm['wall_s'])}: "
        f"{svm['test_acc']:.2f} %",
        f"Chamfer distance (L2, over its masked patches; {vis['chamfer_l2']:.4g} in the picture above)",
        vis["command"].replace(" --out", " \\\n    --out"),
        f"(`{numbers['commit'][:7]}`)",
    ]


def test_demo_numbers_are_the_readme_numbers():
    numbers = _json("demo", "numbers.json")
    text = _readme()
    missing = [q for q in demo_quotes(numbers) if q not in text]
    assert not missing, f"the README does not say what docs/demo/numbers.json holds: {missing}"
    assert os.path.isfile(os.path.join(DOCS, "map_demo_reconstruction.png"))
    assert "--out docs/" not in text  # the documented commands write to experiments/, not over tracked files


def _table_rows(text: str) -> list:
    return [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]


@pytest.mark.parametrize("table", ["ablation_v2/table.md", "ablation_v2/masking_table.md"])
def test_ablation_tables_are_quoted_whole(table):
    """The README quotes the ablation's table rows as the tool wrote them."""
    with open(os.path.join(DOCS, table), encoding="utf-8") as f:
        rows = _table_rows(f.read())
    text = _readme()
    assert rows and [r for r in rows if r not in text] == []


def _numbers(text: str) -> set:
    return set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text))


def test_ablation_v1_figures_come_from_its_tables():
    """Every decimal figure of the README's v1 ablation tables is in one of docs/ablation/*.md."""
    text = _section(_readme(), "### Ablation v1")
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
    """The milliseconds of the README's CPU benchmark tables are numbers of docs/benchmarks/*.json."""
    values = [v for f in os.listdir(os.path.join(DOCS, "benchmarks")) if f.endswith(".json")
              for v in _json_numbers(_json("benchmarks", f))]
    text = _section(_readme(), "## Ops")
    ms = [m for row in _table_rows(text) for m in re.findall(r"(\d+(?:\.\d+)?) ms", row)]
    steps = [m for row in _table_rows(text) if row.startswith("| float32") or row.startswith("| bf16")
             for m in re.findall(r"\| (\d+(?:\.\d+)?) \|", row)]
    assert len(ms) >= 10 and len(steps) == 4
    assert [m for m in ms + steps if not _rounds_to(m, values) and not _rounds_to(m, [v * 1e3 for v in values])] == []


def test_declared_minimum_torch_was_checked():
    """setup.py's torch>=X.Y is the torch that `bash tools/check_min_torch.sh` ran the tests on."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        declared = re.search(r'"torch>=([0-9.]+)"', f.read()).group(1)
    record = _json("min_torch.json")
    assert record["torch"].split("+")[0].rsplit(".", 1)[0] == declared
    assert record["exit_code"] == 0 and " passed" in record["pytest"] and "failed" not in record["pytest"]
    text = _readme()
    assert f"torch {record['torch'].split('+')[0]}" in text
    assert f"(last run: {record['pytest'].split(' in ')[0]})" in text
