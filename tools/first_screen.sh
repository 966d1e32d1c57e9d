#!/usr/bin/env bash
# The README's first screen as a new user meets it: a fresh clone of this checkout's HEAD, a fresh venv, the
# install lines, the demo commands (tools/demo_numbers.py, which writes docs/demo/numbers.json there) and the
# test command, each timed; the venv's size after each install. Writes docs/demo/first_screen.json (and
# numbers.json, the reconstruction picture) back into this checkout.
#   bash tools/first_screen.sh [--no-demo] [WORKDIR]   # ~1 h on 2 CPU cores; WORKDIR default /tmp/pointmap-first-screen
# --no-demo: the install and the tests only (docs/demo/numbers.json stays as the checkout has it). The test that
# checks the README against docs/demo/first_screen.json is left out of the timed runs: this script writes that file.
set -euo pipefail
DEMO=1
if [ "${1:-}" = "--no-demo" ]; then DEMO=0; shift; fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/pointmap-first-screen}"
rm -rf "$WORK" && mkdir -p "$WORK" && git clone -q "$REPO" "$WORK/pointmap" && cd "$WORK/pointmap"
PY="${PYTHON:-python3}"
$PY -m venv "$WORK/venv" && . "$WORK/venv/bin/activate"   # beside the clone: the checkout stays clean
mb() { du -sm "$WORK/venv" | cut -f1; }
declare -A T
s=$SECONDS; pip install -q torch torchvision; T[torch]=$((SECONDS - s)); T[torch_mb]=$(mb)
s=$SECONDS; pip install -q --no-build-isolation -e ".[dev,vis]"; T[pointmap]=$((SECONDS - s)); T[pointmap_mb]=$(mb)
if [ "$DEMO" = 1 ]; then python tools/demo_numbers.py; fi
SKIP="--deselect tests/test_readme_numbers.py::test_the_front_page_says_what_docs_demo_holds"
# -rf: a failing test's name stays in the log and in first_screen.json, so a failure here can be chased
s=$SECONDS; { python -m pytest -q -rf -p no:cacheprovider $SKIP || true; } > "$WORK/pytest_fast.log"; T[pytest]=$((SECONDS - s))
s=$SECONDS; { python -m pytest -q -rf -p no:cacheprovider -m slow $SKIP || true; } > "$WORK/pytest_slow.log"; T[pytest_slow]=$((SECONDS - s))
python - "$WORK" "${T[torch]}" "${T[torch_mb]}" "${T[pointmap]}" "${T[pointmap_mb]}" "${T[pytest]}" "${T[pytest_slow]}" <<'PY'
import json, os, platform, subprocess, sys, time
work, t_torch, mb_torch, t_pm, mb_pm, t_fast, t_slow = sys.argv[1:]


def pytest_run(command, name, seconds):
    lines = open(os.path.join(work, f"pytest_{name}.log")).read().strip().splitlines()
    return {"command": command, "wall_s": round(float(seconds), 1), "result": lines[-1] if lines else "",
            "failed": [ln.split(" ", 1)[1] for ln in lines if ln.startswith("FAILED ") or ln.startswith("ERROR ")]}


doc = {"commit": subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip(),
       "python": platform.python_version(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
       "install": {"torch": {"command": "pip install torch torchvision", "wall_s": round(float(t_torch), 1),
                             "venv_mb": int(mb_torch)},
                   "pointmap": {"command": 'pip install --no-build-isolation -e ".[dev,vis]"',
                                "wall_s": round(float(t_pm), 1), "venv_mb": int(mb_pm)}},
       "tests": {"fast": pytest_run("python -m pytest -q", "fast", t_fast),
                 "slow": pytest_run("python -m pytest -q -m slow", "slow", t_slow)}}
open(os.path.join(work, "first_screen.json"), "w").write(json.dumps(doc, indent=2) + "\n")
PY
cp "$WORK/first_screen.json" "$REPO/docs/demo/"
if [ "$DEMO" = 1 ]; then cp docs/demo/numbers.json "$REPO/docs/demo/" && cp docs/map_demo_reconstruction.png "$REPO/docs/"; fi
echo "wrote $REPO/docs/demo/first_screen.json$([ "$DEMO" = 1 ] && echo ' and numbers.json')"
