#!/usr/bin/env bash
# Bounded CPU runs of one config per model family, each followed by an evaluation on held-out data.
# Usage: bash benchmarks/bounded_runs.sh OUT_DIR [MINUTES] [CONFIG ...]
# Needs the corpora (MIMTEXT_DATA or ../shared/data). Prints one summary line per run at the end.
set -euo pipefail
out=${1:?usage: bounded_runs.sh OUT_DIR [MINUTES] [CONFIG ...]}
minutes=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  configs=(bowman_ptb bowman_ptb_inputless vani_attention vani_mi5 kruengkrai_ptb_avg_l5
           hsvae_yahoo_topic_32 matvae_yahoo_topic_32 vae_l1_yahoo_topic_32)
fi
mkdir -p "$out"
for name in "${configs[@]}"; do
  work="$out/$name"
  python -m launch.train --flagfile="launch/configs/$name.flags" --workdir="$work" \
    --config.max_minutes="$minutes" --config.log_every_steps=100 > "$work.train.log" 2>&1
  python -m launch.evaluate --workdir="$work" --step=latest --split=valid --max_sentences=500 \
    --num_z_samples=4 > "$work.eval.txt" 2> "$work.eval.log"
done
python - "$out" "${configs[@]}" <<'PY'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
print(f"{'config':<24}{'step':>6}{'rec':>9}{'KL':>9}{'ELBO NLL':>10}{'BLEU-1':>8}{'AU':>6}{'Hoyer':>7}")
for n in names:
  r = json.load(open(os.path.join(out, n, "eval_valid.json")))
  kl, elbo = (f"{r['kl']:>9.2f}", f"{r['elbo_nll']:>10.2f}") if "kl" in r else (
      f"{'-':>9}", f"{'(AE)':>10}")   # an AE reports reconstruction only, no bound
  print(f"{n:<24}{r['step']:>6}{r['rec']:>9.2f}{kl}{elbo}"
        f"{r['bleu1']:>8.3f}{r['active_units']:>6}{r['average_hoyer']:>7.3f}")
PY
