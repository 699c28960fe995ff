#!/usr/bin/env bash
# Wall time of the whole fedkr pipeline (Flower simulation engine, every stage) for 2, 4 and 8 sites
# on the same data and budgets; the audit gate is opened so every run releases and writes its
# metrics.json with per-stage seconds. Usage: benchmarks/scaling.sh [OUT] [DATA]
set -euo pipefail
out=${1:-scaling}
data=${2:-digits}
for n in 2 4 8; do
  if [ -e "$out/sites$n" ]; then echo "$out/sites$n exists: give a fresh OUT folder" >&2; exit 2; fi
done
mkdir -p "$out"
for n in 2 4 8; do
  start=$(date +%s.%N)
  fedkr simulate --data "$data" --sites "$n" --partition iid --rounds 1 --samples-per-class 30 --ipc 15 \
    --generator-steps 60 --teacher-epochs 15 --student-epochs 15 --no-hflip --out "$out/sites$n" \
    --audit-max-auc 1 --audit-max-tpr 1 --audit-max-distance-auc 1 > "$out/sites$n.log" 2>&1
  end=$(date +%s.%N)
  python - "$out"/sites$n/*/release/metrics.json "$n" "$start" "$end" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"sites": int(sys.argv[2]), "wall_seconds": round(float(sys.argv[4]) - float(sys.argv[3]), 1),
                  "pool_size": m["pool_size"], "stage_seconds": m["stage_seconds"]}))
PY
done | tee "$out/scaling.jsonl"
