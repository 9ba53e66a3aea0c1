#!/usr/bin/env bash
# Every flagfile of launch/configs on its real corpus: a few train steps, a checkpoint, and
# launch.evaluate reading it (on a slice of the validation split). Shows that each row of the
# model table trains from its flagfile on this machine; not a quality measurement.
# Usage: bash benchmarks/every_config_smoke.sh OUT_DIR [STEPS]
set -uo pipefail
out=${1:?usage: every_config_smoke.sh OUT_DIR [STEPS]}
steps=${2:-3}
mkdir -p "$out"
printf "%-26s %6s %10s %10s %s\n" config steps rec kl status
for flagfile in launch/configs/*.flags; do
  name=$(basename "$flagfile" .flags)
  work="$out/$name"
  status=ok
  python -m launch.train --flagfile="$flagfile" --workdir="$work" --max_steps="$steps" \
      --config.eval_batch_size=20 --config.eval.max_valid_sentences=40 > "$work.train.log" 2>&1 || status="train failed"
  if [ "$status" = ok ]; then
    python -m launch.evaluate --workdir="$work" --step=latest --split=valid --max_sentences=40 \
        --num_z_samples=2 --batch_size=20 > "$work.eval.txt" 2> "$work.eval.log" \
        || status="evaluate failed"
  fi
  if [ "$status" = ok ]; then
    python - "$work/eval_valid.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
kl = f"{r['kl']:>10.2f}" if "kl" in r else f"{'(AE)':>10}"   # an AE reports no KL (no bound)
print(f"{sys.argv[2]:<26} {r['step']:>6} {r['rec']:>10.2f} {kl} ok")
PY
  else
    printf "%-26s %6s %10s %10s %s\n" "$name" - - - "$status"
  fi
done
