#!/usr/bin/env bash
# Reproduce the shipped default guard (models/guardsite-guard-270m) with the project's own commands.
#
#   bash scripts/train_default_guard.sh                 # GPU machine: the full recipe (SFT -> GRPO [-> DPO])
#   PROFILE=cpu bash scripts/train_default_guard.sh     # what was shipped: SFT only, sized for 2 CPU cores
#
# 1. deterministic splits + generated refusal/compliance data (scripts/build_guard_data.py)
# 2. reasoning SFT cold start (composed rationales; a teacher through GUARD_OPENAI_BASE_URL if set)
# 3. GPU profile: GRPO with the rule-based rewards of trainer/rewards.py from the SFT adapter; DPO=1 adds
#    hard-sample DPO
# 4. calibrate: thresholds fitted on training-split records the runs did not train on (manage.py calibrate)
# 5. evaluate the base and the trained adapter (before and after calibration) on the held-out split
# 6. package the adapter, the model card, the training record and the reports (scripts/write_model_card.py)
#
# Every command run is also written to $OUT/commands.txt, which the model card quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-var/default-guard}
PROFILE=${PROFILE:-gpu}
HELDOUT=var/data/heldout
mkdir -p "$OUT/reports"
: > "$OUT/commands.txt"

run() {
  echo "$*" | sed "s#^$PY #python #" >> "$OUT/commands.txt"
  "$@"
}

if [ "$PROFILE" = cpu ]; then
  # Sized for about 70 minutes of training on 2 cores: LoRA on the top 8 layers, batch 4, two stages of 100 steps.
  STEPS_SFT=${STEPS_SFT:-100}; EXAMPLES=${EXAMPLES:-1200}; BATCH=${BATCH:-4}; LAYERS=${LAYERS:-8}; LR=${LR:-2e-4}
  TEXT_TOKENS=160
  # Evaluation samples (records per file; ToxicChat, OpenAI Moderation), base model on the smaller one.
  FAST_LIMITS="--limit 20 --limit-for toxicchat_train=120 --limit-for openai_moderation_train=80"
  CALIBRATION_LIMITS="--limit 30 --limit-for toxicchat_train=160 --limit-for openai_moderation_train=120"
  REASON_LIMITS="--limit 8 --limit-for toxicchat_train=32 --limit-for openai_moderation_train=32"
  BASE_LIMITS=$REASON_LIMITS
  export GUARD_DEVICE=cpu
else
  STEPS_SFT=${STEPS_SFT:-600}; EXAMPLES=${EXAMPLES:-12000}; BATCH=${BATCH:-16}; LAYERS=${LAYERS:-0}; LR=${LR:-2e-4}
  TEXT_TOKENS=256
  STEPS_GRPO=${STEPS_GRPO:-200}
  FAST_LIMITS="--limit 300 --limit-for toxicchat_train=all --limit-for openai_moderation_train=all"
  REASON_LIMITS=$FAST_LIMITS
  BASE_LIMITS=$FAST_LIMITS
  CALIBRATION_LIMITS="--limit 400 --limit-for toxicchat_train=all --limit-for openai_moderation_train=all"
  export GUARD_DEVICE=${GUARD_DEVICE:-auto}
fi

run $PY scripts/build_guard_data.py --out var/data
run $PY manage.py train --recipe sft --data var/data/train --base embedded --out "$OUT/sft" \
  --max-steps "$STEPS_SFT" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" \
  --lora-rank 16 --lora-layers "$LAYERS" --max-text-tokens "$TEXT_TOKENS" --save-steps 25 --learning-rate "$LR"
FINAL="$OUT/sft"
RUNS=("$FINAL")
if [ "$PROFILE" = cpu ]; then
  # A second SFT stage from the first, on a new balanced draw (seed 1): 2 x 400 examples seen.
  run $PY manage.py train --recipe sft --data var/data/train --base embedded --init "$FINAL/adapter" --out "$OUT/sft2" \
    --max-steps "$STEPS_SFT" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" \
    --max-text-tokens "$TEXT_TOKENS" --save-steps 25 --learning-rate "$LR" --seed 1
  FINAL="$OUT/sft2"; RUNS+=("$FINAL")
else
  run $PY manage.py train --recipe grpo --data var/data/train --base embedded --init "$FINAL/adapter" --out "$OUT/grpo" \
    --max-steps "$STEPS_GRPO" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" --num-generations 8
  FINAL="$OUT/grpo"; RUNS+=("$FINAL")
  if [ "${DPO:-0}" = "1" ]; then
    run $PY manage.py train --recipe dpo --data var/data/train --base embedded --init "$FINAL/adapter" --out "$OUT/dpo" \
      --max-steps 100 --holdout-percent 0 --dpo-prompts 512 --dpo-samples 4
    FINAL="$OUT/dpo"; RUNS+=("$FINAL")
  fi
fi

# The held-out files with labels the targets compare against (aart/catqa are left out: their 66-70
# category taxonomies make every prompt ~5x longer). ToxicChat and OpenAI Moderation are evaluated
# whole; the others by a label-stratified sample.
FILES=(toxicchat_train openai_moderation_train jbb_behaviors jbb_artifacts synthetic_refusal advbench strongreject ailuminate_demo)
DATA=("${FILES[@]/#/$HELDOUT/}"); DATA=("${DATA[@]/%/.jsonl}")
# Calibration data: the same files' TRAINING split, less every record any stage trained on.
CALIBRATION=("${FILES[@]/#/var/data/train/}"); CALIBRATION=("${CALIBRATION[@]/%/.jsonl}")
EXCLUDE=(); for ids in "$OUT"/*/training_ids.txt; do EXCLUDE+=(--exclude-ids "$ids"); done
# shellcheck disable=SC2086 # the *_LIMITS are lists of options
run $PY manage.py evaluate --model "$FINAL/adapter" --mode fast --data "${DATA[@]}" $FAST_LIMITS --batch-size 16 --uncalibrated --out "$OUT/reports/uncalibrated-fast.json"
# shellcheck disable=SC2086
run $PY manage.py calibrate --model "$FINAL/adapter" --data "${CALIBRATION[@]}" "${EXCLUDE[@]}" $CALIBRATION_LIMITS
# shellcheck disable=SC2086
run $PY manage.py evaluate --model "$FINAL/adapter" --mode fast --data "${DATA[@]}" $FAST_LIMITS --batch-size 16 --out "$OUT/reports/adapter-fast.json"
run $PY manage.py evaluate --model "$FINAL/adapter" --mode reason --data "${DATA[@]}" $REASON_LIMITS --batch-size 16 --out "$OUT/reports/adapter-reason.json"
for MODE in fast reason; do
  run $PY manage.py evaluate --model embedded --mode $MODE --data "${DATA[@]}" $BASE_LIMITS --batch-size 16 --out "$OUT/reports/base-$MODE.json"
done

$PY scripts/write_model_card.py --run "${RUNS[@]}" --reports "$OUT/reports" --commands "$OUT/commands.txt" \
  --compute "${COMPUTE:-$PROFILE profile, see training.json for the device}" --out models/guardsite-guard-270m
