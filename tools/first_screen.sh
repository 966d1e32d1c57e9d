#!/usr/bin/env bash
# The README's first screen as a new user meets it: a fresh clone of this checkout's HEAD, a fresh venv, the
# install lines, the demo commands (tools/demo_numbers.py, which writes docs/demo/numbers.json there) and the
# test command, each timed; the venv's size after each install. Writes docs/demo/first_screen.json (and
# numbers.json, the reconstruction picture) back into this checkout.
#   bash tools/first_screen.sh [WORKDIR]        # ~1 h on 2 CPU cores; WORKDIR default /tmp/pointmap-first-screen
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/pointmap-first-screen}"
rm -rf "$WORK" && mkdir -p "$WORK" && git clone -q "$REPO" "$WORK/pointmap" && cd "$WORK/pointmap"
PY="${PYTHON:-python3}"
$PY -m venv "$WORK/venv" && . "$WORK/venv/bin/activate"   # beside the clone: the checkout stays clean
mb() { du -sm "$WORK/venv" | cut -f1; }
declare -A T
s=$SECONDS; pip install -q torch torchvision; T[torch]=$((SECONDS - s)); T[torch_mb]=$(mb)
s=$SECONDS; pip install -q --no-build-isolation -e ".[dev,vis]"; T[pointmap]=$((SECONDS - s)); T[pointmap_mb]=$(mb)
python tools/demo_numbers.py
s=$SECONDS; python -m pytest -q -p no:cacheprovider | tail -1 > "$WORK/pytest_fast"; T[pytest]=$((SECONDS - s))
s=$SECONDS; python -m pytest -q -p no:cacheprovider -m slow | tail -1 > "$WORK/pytest_slow"; T[pytest_slow]=$((SECONDS - s))
python - "$WORK" "${T[torch]}" "${T[torch_mb]}" "${T[pointmap]}" "${T[pointmap_mb]}" "${T[pytest]}" "${T[pytest_slow]}" <<'PY'
import json, os, platform, subprocess, sys, time
work, t_torch, mb_torch, t_pm, mb_pm, t_fast, t_slow = sys.argv[1:]
doc = {"commit": subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip(),
       "python": platform.python_version(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
       "install": {"torch": {"command": "pip install torch torchvision", "wall_s": round(float(t_torch), 1),
                             "venv_mb": int(mb_torch)},
                   "pointmap": {"command": 'pip install --no-build-isolation -e ".[dev,vis]"',
                                "wall_s": round(float(t_pm), 1), "venv_mb": int(mb_pm)}},
       "tests": {"fast": {"command": "python -m pytest -q", "wall_s": round(float(t_fast), 1),
                          "result": open(os.path.join(work, "pytest_fast")).read().strip()},
                 "slow": {"command": "python -m pytest -q -m slow", "wall_s": round(float(t_slow), 1),
                          "result": open(os.path.join(work, "pytest_slow")).read().strip()}}}
open(os.path.join(work, "first_screen.json"), "w").write(json.dumps(doc, indent=2) + "\n")
PY
cp "$WORK/first_screen.json" docs/demo/numbers.json "$REPO/docs/demo/"
cp docs/map_demo_reconstruction.png "$REPO/docs/"
echo "wrote $REPO/docs/demo/first_screen.json and numbers.json"
