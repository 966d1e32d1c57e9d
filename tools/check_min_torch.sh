#!/usr/bin/env bash
# The oldest torch pyproject.toml admits, checked: a fresh venv with that torch (and its torchvision), this
# checkout on PYTHONPATH (PyTorch paths, POINTMAP_NO_EXT=1), and the tests that import and run every model,
# op, config and engine path on it. Writes docs/min_torch.json (versions, command, pytest's last line).
#   bash tools/check_min_torch.sh                  # torch 2.4.0 / torchvision 0.19.0 (~3 GB download)
#   TORCH=2.5.1 TORCHVISION=0.20.1 bash tools/check_min_torch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${TORCH:-2.4.0}
TORCHVISION=${TORCHVISION:-0.19.0}
VENV=${VENV:-/tmp/pointmap-min-torch}
declared=$(python3 -c "import re; print(re.search(r'\"torch>=([0-9.]+)\"', open('pyproject.toml').read()).group(1))")
[ "${TORCH%.*}" = "$declared" ] || { echo "error: pyproject.toml declares torch>=$declared, this checks $TORCH" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "torch==$TORCH" "torchvision==$TORCHVISION" timm pyyaml h5py numpy tqdm trimesh \
    tensorboard scikit-learn scipy pytest matplotlib
TESTS="tests/test_import.py tests/test_models.py tests/test_layers.py tests/test_pretrainer.py \
tests/test_pretrainer_objectives.py tests/test_config.py tests/test_engine.py tests/test_ops_fps.py \
tests/test_ops_knn_group.py tests/test_ops_chamfer.py tests/test_ops_selective_scan.py tests/test_ops_serialize.py \
tests/test_peer_fidelity.py tests/test_weight_decay.py tests/test_lowdata.py"
set +e
out=$(PYTHONPATH="$PWD" POINTMAP_NO_EXT=1 OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider $TESTS 2>&1)
rc=$?
set -e
echo "$out" | tail -n 5
last=$(echo "$out" | tail -n 1)
"$VENV/bin/python" - "$rc" "$last" "$TESTS" <<'EOF'
import json, subprocess, sys, torch, torchvision
rc, last, tests = int(sys.argv[1]), sys.argv[2], sys.argv[3].split()
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
doc = {"torch": torch.__version__, "torchvision": torchvision.__version__, "commit": commit, "exit_code": rc,
       "pytest": last.strip("= "), "tests": tests, "command": "bash tools/check_min_torch.sh"}
with open("docs/min_torch.json", "w") as f:
    f.write(json.dumps(doc, indent=2) + "\n")
print("wrote docs/min_torch.json")
EOF
exit $rc
