#!/usr/bin/env bash
# One GPU check of the two throughput benchmarks, for a machine with NO network (e.g. the H200).
#
#   bash benchmarks/gpu_check.sh                  # from anywhere; it runs in the repository root
#
# What it does, in well under 10 minutes of wall clock (every step under `timeout`):
#   1. installs the Python packages mimtext needs that the machine lacks, from wheels carried in
#      the working tree ($WHEELS; never from a registry): pip --no-index --no-deps --target $SITE;
#   2. train_step_throughput.py on the GPU (--jax_platform ''), batch 20 and batch $BIG_BATCH,
#      JAX vs the PyTorch reference (packed and padded variants, --torch_device cuda) when a CUDA
#      torch is importable, else JAX only;
#   3. eval_throughput.py on the GPU: ELBO+MELBO (k=10), IW bound (K=500), greedy and beam-5;
#   4. prints one table (also $OUT/summary.txt) from the JSON files it wrote to $OUT.
# See benchmarks/README.md ("GPU check") for how to prepare the wheels and the data.
#
# Variables (all optional):
#   PY          python to use (default python3)
#   WHEELS      folder of .whl files to install first (default shared/wheels; skipped if absent)
#   SITE        where they are installed (default /tmp/mimtext-gpu-site; put first on PYTHONPATH)
#   OUT         where the JSON files and summary.txt go (default $TMPDIR/mimtext_gpu_check;
#               the device tool sets OUT, and what is written there comes back)
#   MIMTEXT_DATA  folder holding ptb/{train,valid,test}.txt (default shared/data; without it the
#               benchmarks use random sentences with PTB's length distribution, and say so)
#   BIG_BATCH   the larger training batch (default 256)
#   EVAL_SENTENCES  test sentences for the eval benchmark (default 1000; 0 = all 3,761)
#   EVAL_BATCH  eval batch size (default 500)
#   BUDGET_S    total wall-clock budget in seconds (default 560)
#   STEPS, WARMUP, ROUNDS  of the training benchmark (default 30, 5, 3)
#   IW_SAMPLES, IW_CHUNK   K and chunk of the IW bound (default 500, 50)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PY=${PY:-python3}
WHEELS=${WHEELS:-shared/wheels}
SITE=${SITE:-/tmp/mimtext-gpu-site}
OUT=${OUT:-${TMPDIR:-/tmp}/mimtext_gpu_check}
BIG_BATCH=${BIG_BATCH:-256}
EVAL_SENTENCES=${EVAL_SENTENCES:-1000}
EVAL_BATCH=${EVAL_BATCH:-500}
BUDGET_S=${BUDGET_S:-560}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-5}
ROUNDS=${ROUNDS:-3}
IW_SAMPLES=${IW_SAMPLES:-500}
IW_CHUNK=${IW_CHUNK:-50}
export MIMTEXT_DATA=${MIMTEXT_DATA:-shared/data}
export PYTHONUNBUFFERED=1
# JAX and torch share the GPU in one process: leave torch room (JAX would take 75% up front).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
mkdir -p "$OUT"
rm -f "$OUT"/train_b*.json "$OUT"/eval.json "$OUT"/summary.txt  # this script's own, from an earlier run
START=$(date +%s)

remaining() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# step_timeout WANTED: WANTED seconds, or less so that RESERVE (the later steps) still fits.
step_timeout() {
  local want=$1 reserve=${2:-0} left
  left=$(( $(remaining) - reserve ))
  if (( left < want )); then want=$left; fi
  if (( want < 10 )); then want=10; fi
  echo "$want"
}

echo "== gpu_check: $(date -u +%FT%TZ) in $PWD"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PY" --version

# ---------------------------------------------------------------- 1. packages from wheels
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "== installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE (no index)"
  timeout 120 "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || {
    echo "FAILED: pip install from $WHEELS"; exit 1; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "== no wheels in $WHEELS: using the installed packages only"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # mimtext and launch from the working tree

if ! "$PY" -c "import mimtext.train, mimtext.evaluation.bounds, mimtext.config" 2>"$OUT/import_error.txt"; then
  echo "FAILED: mimtext does not import; the last lines of the error:"
  tail -3 "$OUT/import_error.txt"
  echo "(carry the missing packages as wheels in $WHEELS: benchmarks/README.md, GPU check)"
  exit 1
fi
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" || exit 1

TORCH_ARGS=(--only jax)
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  TORCH_ARGS=(--only both --torch_device cuda --torch_padded)
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
else
  echo "== no CUDA torch: JAX side only"
fi
if [ ! -f "$MIMTEXT_DATA/ptb/train.txt" ]; then
  echo "== no $MIMTEXT_DATA/ptb/train.txt: RANDOM sentences with PTB's lengths"
fi
THREADS=$(nproc 2>/dev/null || echo 4)

# ---------------------------------------------------------------- 2. training step
run_train() {  # batch, timeout
  local batch=$1 limit=$2
  echo "== train_step_throughput.py --batch_size $batch (timeout ${limit}s)"
  timeout "$limit" "$PY" benchmarks/train_step_throughput.py --jax_platform '' \
      "${TORCH_ARGS[@]}" --batch_size "$batch" --steps "$STEPS" --warmup "$WARMUP" \
      --rounds "$ROUNDS" --threads "$THREADS" --json_out "$OUT/train_b$batch.json" 2>&1 \
      | tee "$OUT/train_b$batch.log" | grep -E "^(machine|batches|parameters|warmup|round|summary|  )"
  local status=${PIPESTATUS[0]}
  (( status == 0 )) || echo "   (train batch $batch did not finish: status $status; 124 = timeout)"
}
run_train 20 "$(step_timeout 150 330)"
run_train "$BIG_BATCH" "$(step_timeout 150 190)"

# ---------------------------------------------------------------- 3. evaluation
LIMIT=$(step_timeout 240 15)
echo "== eval_throughput.py ($EVAL_SENTENCES sentences, batch $EVAL_BATCH; timeout ${LIMIT}s)"
timeout "$LIMIT" "$PY" benchmarks/eval_throughput.py --jax_platform '' \
    --max_sentences "$EVAL_SENTENCES" --batch_size "$EVAL_BATCH" --num_z_samples 10 \
    --iw_samples "$IW_SAMPLES" --iw_chunk "$IW_CHUNK" --beam_width 5 --threads "$THREADS" \
    --json_out "$OUT/eval.json" 2>&1 | tee "$OUT/eval.log" | grep -E "^(data|sentences|compile|  )"
STATUS=${PIPESTATUS[0]}
(( STATUS == 0 )) || echo "   (eval did not finish: status $STATUS; 124 = timeout)"

# ---------------------------------------------------------------- 4. one table
"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
rows = []
for name in sorted(os.listdir(out), key=lambda n: (not n.startswith("train_"), n)):
  path = os.path.join(out, name)
  if not name.endswith(".json"):
    continue
  with open(path) as f:
    d = json.load(f)
  if name.startswith("train_"):
    b = d["options"]["batch_size"]
    for fw in ("jax", "torch", "torch_padded"):
      if fw in d:
        r = d[fw]
        rows.append((f"train b{b} {fw}", f"{r['median_tokens_per_s']:.0f} tok/s",
                     f"{r['median_ms_per_step']:.1f} ms/step", f"{r['compile_s_total']:.1f}",
                     f"pad {d['padding_fraction']:.3f}, RSS {d['peak_rss_mib']:.0f} MiB"))
    for key in ("ratio_median", "ratio_median_padded"):
      if key in d:
        rows.append((f"train b{b} JAX/{'torch' if key == 'ratio_median' else 'torch_padded'}",
                     f"{d[key]:.2f}x", "", "", "median ratio"))
  elif name == "eval.json":
    for m, r in d["results"].items():
      rows.append((f"eval {r['label']}", f"{r['sentences_per_s']:.1f} sent/s",
                   f"{r['timed_pass_s']:.2f} s pass", f"{r['compile_s']:.1f}",
                   f"{d['sentences']} sentences, RSS {d['peak_rss_mib']:.0f} MiB"))
print(f"{'measure':44s} {'rate':>16s} {'time':>16s} {'compile s':>10s}  notes")
for r in rows:
  print(f"{r[0]:44s} {r[1]:>16s} {r[2]:>16s} {r[3]:>10s}  {r[4]}")
if not rows:
  print("(no results: see the logs in " + out + ")")
EOF
echo "== done in $(( $(date +%s) - START ))s; files in $OUT"
