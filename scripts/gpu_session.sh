#!/usr/bin/env bash
# The main calls of a GPU device session: train the shipped guard's GPU profile within a time budget, then
# calibrate, evaluate, package and benchmark it, and bring everything back through $OUT.
#
# After `bash ../shared/gpu/stage.sh` and its staging calls (the model pieces), on the device, back to back:
#
#   run carry=[".stage/main"] command: source .stage/main/setup.sh && bash scripts/gpu_session.sh train
#   run carry=[".stage/main"] command: source .stage/main/setup.sh && bash scripts/gpu_session.sh finish
#
# Why two calls: a call runs at most 10 minutes, and setup (~2 min) + training + evaluation do not fit one.
# The second call finds the first one's run in /tmp on the still-warm machine (train_default_guard.sh keeps
# trained stages) and also refits the latent heads for the new weights (fit_heads: the fit sample's features on
# the GPU, the heads fitted on the device's CPUs) and measures them (bench/heads.py, heads alone).
# Budget of a 15-minute session: start ~2.5 min, staging ~1.5 min (7 calls), setup ~2 min, then
# SFT_MINUTES + GRPO_MINUTES of training (3.5 by default, + ~1 min of loading), then ~4.5 min for the second call
# (the heads' ~1.5-2 min there is an estimate: they have not run on a device yet).
#
# What comes back in $OUT (at most 8 files of 16 MiB): <phase>.log, card.tar.gz (the packaged guard without its
# weights: card, calibration, heads/, training record, reports with heads-bench.json), adapter_model.safetensors,
# throughput.txt/.json.
# Ship it with:  rm -rf models/guardsite-guard-270m/heads && mkdir -p models/guardsite-guard-270m \
#                && tar -xzf card.tar.gz -C models/guardsite-guard-270m && cp adapter_model.safetensors models/guardsite-guard-270m/
#
# Off the device (CI, a laptop): SMOKE=1 OUT=/tmp/results bash scripts/gpu_session.sh all  runs the same steps
# with the tiny model and 2 training steps on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:-all}  # train | finish | all
RESULTS=${OUT:?set OUT to the folder that comes back (the device sets it)}
RUN=${RUN:-/tmp/gvar/guard-gpu}
mkdir -p "$RESULTS" "$RUN"
export PROFILE=gpu EVAL_BASE=${EVAL_BASE:-0} CARD_OUT=$RUN/card SMOKE_CARD_OUT=$RUN/card
export SFT_MINUTES=${SFT_MINUTES:-2.5} GRPO_MINUTES=${GRPO_MINUTES:-1.0}  # 1.5 min fewer than before the heads
[ "$PHASE" = train ] && export STOP_AFTER_TRAINING=1
PY=.venv/bin/python

started=$(date +%s)
OUT=$RUN bash scripts/train_default_guard.sh > "$RESULTS/$PHASE.log" 2>&1
status=$?
echo "train_default_guard.sh ($PHASE) exited $status after $(( $(date +%s) - started )) s" | tee -a "$RESULTS/$PHASE.log"
tail -n 25 "$RESULTS/$PHASE.log"
[ "$status" = 0 ] || exit "$status"
[ "$PHASE" = train ] && exit 0

# The packaged guard: weights on their own (~15 MB for LoRA r16 on every layer), the rest in one archive.
cp "$RUN/card/adapter_model.safetensors" "$RESULTS/"
tar -czf "$RESULTS/card.tar.gz" -C "$RUN/card" --exclude adapter_model.safetensors .
ls -l "$RESULTS"

# Throughput of the trained guard on this device (progress on stderr; cut off rather than eat the budget).
DEVICE=cuda; MODEL=$RUN/card
# Op counts and FLOPs rerun every row under the profiler (minutes, and ~10 GB of host memory for a reason row):
# off unless BENCH_PROFILE=1, so the items/s table is sure to come back within the budget.
SIZES=(--batch-sizes "${BENCH_BATCHES:-16,64,256}" --reason-batch-sizes "${BENCH_REASON_BATCHES:-64}")
[ "${BENCH_PROFILE:-0}" = 1 ] || SIZES+=(--no-profile)
if [ "${SMOKE:-0}" = 1 ]; then DEVICE=cpu; MODEL=tiny18; SIZES=(--batch-sizes 16 --reason-batch-sizes 4 --items 16 --no-profile); fi
timeout "${BENCH_SECONDS:-75}" $PY bench/guard_throughput.py --model "$MODEL" --device "$DEVICE" "${SIZES[@]}" \
  --json "$RESULTS/throughput.json" > "$RESULTS/throughput.txt" 2>&1
echo "bench exited $? after $(( $(date +%s) - started )) s in all"
cat "$RESULTS/throughput.txt" | grep -v '\.\.\.$' | tail -n 12
exit 0
