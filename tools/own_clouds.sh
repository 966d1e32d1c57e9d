#!/usr/bin/env bash
# docs/own_clouds/: what tools/predict.py and tools/embed.py print on meshes that ship inside pybullet's and
# pyvista's wheels (pip install pybullet pyvista), with the demo's finetuned classifier and part segmenter:
#   bash tools/own_clouds.sh
# Trains what it needs first, short and from scratch in experiments/own_clouds/ (a 15-class classifier of the
# demo's synthetic shapes and a part segmenter of its 7 part-labelled categories, 5 epochs each: minutes on
# 2 CPU cores), exports both, copies the meshes to experiments/own_clouds/meshes/ beside a broken .ply, and
# writes each command's stdout (.txt, its exit code last) and stderr (.err) under docs/own_clouds/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=docs/own_clouds
WORK=experiments/own_clouds
SHORT=(optim.epochs=5 optim.warmup_epochs=1 "train.output_dir=$WORK/runs")
mkdir -p "$OUT" "$WORK/meshes"
[ -f "$WORK/runs/finetune_demo/default/ckpt-best.pth" ] || $PY tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml "${SHORT[@]}"
[ -f "$WORK/runs/partseg_demo/default/ckpt-best.pth" ] || $PY tools/finetune_partseg.py --cfg cfgs/partseg_demo.yaml "${SHORT[@]}"
$PY tools/export.py --ckpt "$WORK/runs/finetune_demo/default" --out "$WORK/exports/finetune_demo" --overwrite
$PY tools/export.py --ckpt "$WORK/runs/partseg_demo/default" --out "$WORK/exports/partseg_demo" --overwrite
$PY - "$WORK/meshes" <<'PYEOF'
import os, shutil, sys
import pybullet_data, pyvista.examples
out = sys.argv[1]
for f in ("bunny.obj", "duck.obj", "teddy2_VHACD_CHs.obj"):
    shutil.copy(os.path.join(pybullet_data.getDataPath(), f), out)
for f in ("airplane.ply", "ant.ply"):
    shutil.copy(os.path.join(os.path.dirname(pyvista.examples.__file__), f), out)
with open(os.path.join(out, "broken.ply"), "wb") as f:  # a header that promises 90 vertices, then 2 bytes
    f.write(b"ply\nformat binary_little_endian 1.0\nelement vertex 90\nproperty float x\nend_header\n\x00\x01")
PYEOF
run() {  # run NAME CMD...: stdout to $OUT/NAME.txt, stderr to $OUT/NAME.err, the exit code appended to the .txt
    local name=$1; shift
    set +e
    "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"
    echo "exit $?" >> "$OUT/$name.txt"
    set -e
}
run predict $PY tools/predict.py --model $WORK/exports/finetune_demo "$WORK/meshes" --topk 3 --out "$OUT/predict.json"
run embed $PY tools/embed.py --model $WORK/exports/finetune_demo "$WORK/meshes" --out "$WORK/feats.npy"
run segment $PY tools/predict.py --model $WORK/exports/partseg_demo "$WORK/meshes/airplane.ply" --category airplane --out-dir "$WORK/parts"
cat "$OUT"/*.txt
