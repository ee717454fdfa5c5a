#!/usr/bin/env bash
# Reproduce the shipped default guard with the project's own commands only.
#
#   bash scripts/train_default_guard.sh            # GPU machine (the intended place)
#   DEVICE=cpu STEPS_SFT=60 bash scripts/train_default_guard.sh   # a (very) small CPU run
#
# 1. deterministic splits + synthetic refusal/compliance data (scripts/build_guard_data.py)
# 2. reasoning SFT cold start (composed rationales; a teacher through GUARD_OPENAI_BASE_URL if set)
# 3. GRPO with the rule-based rewards of trainer/rewards.py, from the SFT adapter
# 4. optional hard-sample DPO (DPO=1)
# 5. evaluate base and trained adapter on the held-out splits, fast and reason modes
# 6. copy the adapter to models/guardsite-guard-270m/ (the model card is written by hand from the reports)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-var/default-guard}
STEPS_SFT=${STEPS_SFT:-600}
STEPS_GRPO=${STEPS_GRPO:-200}
EXAMPLES=${EXAMPLES:-12000}
EVAL_LIMIT=${EVAL_LIMIT:-300}
BATCH=${BATCH:-16}
export GUARD_DEVICE=${DEVICE:-auto}

$PY scripts/build_guard_data.py --out var/data
TRAIN=(var/data/train/*.jsonl)
HELDOUT=var/data/heldout

$PY manage.py train --recipe sft --data "${TRAIN[@]}" --base embedded --out "$OUT/sft" \
  --max-steps "$STEPS_SFT" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" --lora-rank 16
$PY manage.py train --recipe grpo --data "${TRAIN[@]}" --base embedded --init "$OUT/sft/adapter" --out "$OUT/grpo" \
  --max-steps "$STEPS_GRPO" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" --num-generations 8
FINAL="$OUT/grpo/adapter"
if [ "${DPO:-0}" = "1" ]; then
  $PY manage.py train --recipe dpo --data "${TRAIN[@]}" --base embedded --init "$FINAL" --out "$OUT/dpo" \
    --max-steps 100 --holdout-percent 0 --dpo-prompts 512 --dpo-samples 4
  FINAL="$OUT/dpo/adapter"
fi

mkdir -p "$OUT/reports"
for MODEL in embedded "$FINAL"; do
  NAME=$(basename "$(dirname "$MODEL")"); [ "$MODEL" = embedded ] && NAME=base
  for MODE in fast reason; do
    $PY manage.py evaluate --data "$HELDOUT" --model "$MODEL" --mode "$MODE" --limit "$EVAL_LIMIT" \
      --batch-size "$BATCH" --out "$OUT/reports/$NAME-$MODE.json"
  done
done
mkdir -p models/guardsite-guard-270m
cp "$FINAL"/adapter_config.json "$FINAL"/adapter_model.safetensors models/guardsite-guard-270m/
cp "$OUT"/reports/*.json models/guardsite-guard-270m/ 2>/dev/null || true
echo "adapter and reports in models/guardsite-guard-270m/; write MODEL_CARD.md from the reports"
