"""The README and the documentation pages: every Python block runs (a block that needs data, a network or a GPU
says so in its first line, ``# needs: ...``), and every tool and config file a command names exists."""
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def _blocks(lang):
    for page in PAGES:
        text = open(page, encoding="utf-8").read()
        for i, m in enumerate(re.finditer(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)):
            yield f"{os.path.relpath(page, REPO)}#{i}", m.group(1)


PYTHON = list(_blocks("python"))


@pytest.mark.parametrize("code", [c for _, c in PYTHON], ids=[n for n, _ in PYTHON])
def test_python_blocks_run(code, tmp_path, monkeypatch):
    first = code.strip().splitlines()[0]
    if first.startswith("# needs:"):
        pytest.skip(first[2:])
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})
    assert not [p for p in os.listdir(tmp_path) if os.path.getsize(tmp_path / p) > 1e6]  # no big file left behind


def test_there_are_python_blocks_to_run():
    assert len([c for _, c in PYTHON if not c.startswith("# needs:")]) >= 3


def test_commands_name_tools_and_configs_that_exist():
    text = "".join(open(p, encoding="utf-8").read() for p in PAGES)
    tools = set(re.findall(r"tools/([\w.]+\.(?:py|sh))", text))
    cfgs = set(re.findall(r"(cfgs/[\w/{},.-]+?\.yaml)", text))
    assert tools and cfgs
    assert sorted(t for t in tools if not os.path.isfile(os.path.join(REPO, "tools", t))) == []
    expanded = set()
    for c in cfgs:
        m = re.search(r"\{([^}]*)\}", c)
        expanded |= {c[:m.start()] + alt + c[m.end():] for alt in m.group(1).split(",")} if m else {c}
    assert sorted(c for c in expanded if not os.path.isfile(os.path.join(REPO, c))) == []
