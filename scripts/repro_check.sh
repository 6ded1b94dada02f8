#!/usr/bin/env bash
# Same seed, same machine, same bits: runs a tiny pretrain -> finetune -> evaluate chain on the
# built-in benchmark (random-init mini IFM, from video and from a feature store) and prints a
# sha256 of every checkpoint's tensors and of the evaluation numbers. Run it on two commits (e.g.
# in a `git worktree`) with the same DATADIR and diff the output: a restructure that changes no
# result prints the same lines. The videos are written once into DATADIR and shared, so both
# commits read the same bytes. Usage: scripts/repro_check.sh WORKDIR DATADIR  (uses the
# `advise` on PATH)
set -euo pipefail
work=${1:?usage: scripts/repro_check.sh WORKDIR DATADIR}
data=${2:?usage: scripts/repro_check.sh WORKDIR DATADIR}
mkdir -p "$work" "$data"
common=(--config demo --set ifm.random_init=true --set train.seed=3 --set data.num_workers=0
        --set train.log_every=1)  # evaluate repeats them: allowed, they equal the checkpoint's
[ -d "$data/spatial" ] || advise synth --out "$data/spatial" --task spatial --videos 40 --seed 0 >/dev/null
[ -d "$data/pool" ] || advise synth --out "$data/pool" --task pool --videos 24 --seed 0 >/dev/null
rm -rf "$work/store"
advise extract "${common[@]}" --set data.root="$data/spatial" --out "$work/store" --subset all >/dev/null 2>&1
rm -rf "$work/runs"
advise pretrain "${common[@]}" --set data.root="$data/pool" --set train.epochs=2 \
    --out "$work/runs/prp" >/dev/null 2>&1
advise finetune "${common[@]}" --set data.root="$data/spatial" --set train.epochs=2 \
    --init "$work/runs/prp/checkpoints/last.safetensors" --out "$work/runs/ft-video" >/dev/null 2>&1
advise finetune "${common[@]}" --set data.root="$data/spatial" --set train.epochs=3 \
    --set data.source="store:$work/store" --out "$work/runs/ft-store" >/dev/null 2>&1
advise evaluate "${common[@]}" --set data.root="$data/spatial" --views 2x1 \
    --ckpt "$work/runs/ft-video/checkpoints/last.safetensors" --out "$work/runs/eval-video" >/dev/null 2>&1
python - "$work" <<'PY'
import hashlib, json, sys
from pathlib import Path
from safetensors.torch import load_file
work = Path(sys.argv[1])
for name in ("prp", "ft-video", "ft-store"):
    tensors = load_file(work / "runs" / name / "checkpoints" / "last.safetensors")
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode()); digest.update(tensors[key].contiguous().numpy().tobytes())
    state = json.loads((work / "runs" / name / "checkpoints" / "last.json").read_text())["state"]
    history = [(h["epoch"], round(h.get("loss", h.get("train_loss")), 10), h.get("acc", h.get("train_acc")))
               for h in state["history"]]  # earlier versions named them train_loss, train_acc
    print(f"{name}: {len(tensors)} tensors sha256 {digest.hexdigest()[:16]} history {history}")
evaluation = work / "runs" / "eval-video"  # a folder (eval-2x1.json) since run folders v2
result = json.loads((evaluation / "eval-2x1.json" if evaluation.is_dir() else evaluation).read_text())
print("eval:", {k: result[k] for k in sorted(result) if k.startswith("top")})
PY
