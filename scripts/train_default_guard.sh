#!/usr/bin/env bash
# Reproduce the shipped default guard (models/guardsite-guard-270m) with the project's own commands.
#
#   bash scripts/train_default_guard.sh                 # GPU machine: the full recipe (SFT -> GRPO [-> DPO])
#   PROFILE=cpu bash scripts/train_default_guard.sh     # SFT only, sized for 2 CPU cores
#   SMOKE=1 bash scripts/train_default_guard.sh         # the GPU profile end to end on a CPU in minutes: tiny model,
#                                                       # 2 steps per stage, a few records per file, card to $OUT/card
#
# Data (the shipped default's choice, explained in the model card): both corpora, every licence (LICENCES=all),
# because the targets are measured on ToxicChat (CC-BY-NC) and most human response-harm labels are BeaverTails /
# PKU-SafeRLHF copies (CC-BY-NC): the adapter is then for NON-COMMERCIAL use, and the card says so.
# LICENCES=permissive trains the same recipe on MIT / Apache-2.0 / CC-BY / CDLA-Permissive data only.
# The mix (trainer/mix.py): prompt 50% / response 25% / refusal 25%, each task 50/50 positive, no source above 25%;
# chat traffic (ToxicChat, OpenAI Moderation) weighted x2, profanity-heavy Davidson and templated HarmfulQA and the
# long-taxonomy AART/CatQA x0.5.
#
# 1. deterministic splits + generated refusal/compliance data (scripts/build_guard_data.py)
# 2. reasoning SFT cold start (composed rationales; a teacher through GUARD_OPENAI_BASE_URL if set)
# 3. GPU profile: GRPO with the rule-based rewards of trainer/rewards.py from the SFT adapter; DPO=1 adds
#    hard-sample DPO
# 4. calibrate: thresholds fitted on training-split records the runs did not train on (manage.py calibrate)
# 5. evaluate the base and the trained adapter (before and after calibration) on the held-out split
# 6. the latent heads of the new backbone (manage.py fit_heads, measured by bench/heads.py; FIT_HEADS=0 skips them)
# 7. package the adapter, its heads, the model card, the training record and the reports (scripts/write_model_card.py)
#
# Every command run is also written to $OUT/commands.txt, which the model card quotes.
#
# Time budgets (a device session has ~9 minutes for training and evaluation): SFT_MINUTES / GRPO_MINUTES stop a
# stage at that wall-clock budget (manage.py train --max-minutes), whatever its step count; STOP_AFTER_TRAINING=1
# ends the script after the training stages, and a second run on the same $OUT keeps them and goes on
# (scripts/gpu_session.sh splits a device session that way).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-var/default-guard}
PROFILE=${PROFILE:-gpu}
SMOKE=${SMOKE:-0}
BASE=${BASE:-embedded}
DATA_DIR=${DATA_DIR:-var/data}
CARD_OUT=${CARD_OUT:-models/guardsite-guard-270m}
LICENCES=${LICENCES:-all}
DEFAULT_MIX=source.toxicchat_train=2,source.toxicchat_train_extra=2,source.openai_moderation_train=2,source.davidson_hate_offensive=0.5,source.harmfulqa=0.5,source.aart=0.5,source.catqa=0.5
PREVIOUS=${PREVIOUS:-models/guardsite-guard-270m}
# EVAL_BASE=0 skips evaluating the untrained base (its reports then come from an earlier run, if any).
EVAL_BASE=${EVAL_BASE:-1}
FIT_HEADS=${FIT_HEADS:-1}
# Epochs of tuning a copy of layers 12-14 as the prompt head (guard/layer_tuning.py; seconds on a GPU, about
# 3 minutes each on 2 CPU cores); 0 keeps the prompt head on the frozen taps.
TUNE_EPOCHS=${TUNE_EPOCHS:-6}
TUNE_COPIES=${TUNE_COPIES:-2}  # orders tuned and averaged (a soup; docs/guard.md)
HEADS_LATENCY_ITEMS=${HEADS_LATENCY_ITEMS:-30}
HELDOUT=$DATA_DIR/heldout
if [ "$SMOKE" = 1 ]; then
  # Every stage of the chosen profile, in minutes on a CPU: the tiny random model, 2 steps each.
  BASE=$($PY -c 'import os, django; os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardsite.settings"); django.setup(); from guard.testing import tiny_model_dir; print(tiny_model_dir())')
  STEPS_SFT=2; STEPS_GRPO=2; EXAMPLES=${EXAMPLES:-200}; BATCH=${BATCH:-2}; GENERATIONS=2; COMPLETION_TOKENS=16
  CARD_OUT=${SMOKE_CARD_OUT:-$OUT/card}; PREVIOUS=""
  export GUARD_DEVICE=${GUARD_DEVICE:-cpu}
fi
mkdir -p "$OUT/reports"
: > "$OUT/commands.txt"

run() {
  echo "$*" | sed "s#^$PY #python #" >> "$OUT/commands.txt"
  "$@"
}

# A training stage whose adapter is already there (an interrupted run started again) is recorded, not rerun.
train_stage() {
  local out=$1; shift
  if [ -f "$out/adapter/adapter_config.json" ] && [ -f "$out/train_metrics.json" ]; then
    echo "$*" | sed "s#^$PY #python #" >> "$OUT/commands.txt"
    echo "kept $out (already trained)"
    return
  fi
  run "$@"
}

if [ "$PROFILE" = cpu ]; then
  # Sized for about 75 minutes of training on 2 idle cores (about 7 s per step): LoRA on the top 8 layers,
  # batch 4, a stage of 400 steps and a second of 200 from it on a new draw (2,400 sequences seen).
  STEPS_SFT=${STEPS_SFT:-400}; STEPS_SFT2=${STEPS_SFT2:-200}; EXAMPLES=${EXAMPLES:-1600}; BATCH=${BATCH:-4}
  LAYERS=${LAYERS:-8}; LR=${LR:-2e-4}
  # With ~2,400 sequences the 8% + 4% policy-following share of the default mix is ~300 examples: 12% + 6% here.
  MIX=${MIX:-$DEFAULT_MIX,policy_following=0.12,policy_flip=0.06}
  TEXT_TOKENS=160
  # Evaluation samples (records per file; ToxicChat, OpenAI Moderation), base model on the smaller one.
  FAST_LIMITS="--limit 20 --limit-for toxicchat_train=120 --limit-for openai_moderation_train=80"
  CALIBRATION_LIMITS="--limit 30 --limit-for toxicchat_train=160 --limit-for openai_moderation_train=120"
  # Reason mode's labels are fast mode's by construction (label-first answer), so policy following is scored once.
  REASON_LIMITS="--limit 8 --limit-for toxicchat_train=32 --limit-for openai_moderation_train=32 --no-policy-following"
  BASE_LIMITS=$REASON_LIMITS
  export GUARD_DEVICE=cpu
else
  # Sized for a 15-minute device session (about 9 minutes of training and evaluation): 1,500 SFT steps at
  # batch 16 (24,000 sequences, 1.5 passes over 16,000 mixed examples), then 100 GRPO steps.
  STEPS_SFT=${STEPS_SFT:-1500}; EXAMPLES=${EXAMPLES:-16000}; BATCH=${BATCH:-16}; LAYERS=${LAYERS:-0}; LR=${LR:-2e-4}
  TEXT_TOKENS=256
  STEPS_GRPO=${STEPS_GRPO:-100}
  FAST_LIMITS="--limit 200 --limit-for toxicchat_train=all --limit-for openai_moderation_train=all"
  # Reason mode gives the labels of fast mode (label-first answer): its sample is for the explanations.
  REASON_LIMITS="--limit 24 --no-policy-following"
  BASE_LIMITS="--limit 100"
  CALIBRATION_LIMITS="--limit 300 --limit-for toxicchat_train=all --limit-for openai_moderation_train=all"
  export GUARD_DEVICE=${GUARD_DEVICE:-auto}
fi
MIX=${MIX:-$DEFAULT_MIX}
# Verdicts per evaluation batch: 16 on a CPU; on a GPU a batch of 64 is several times faster per verdict.
EVAL_BATCH=${EVAL_BATCH:-16}; [ "$PROFILE" = gpu ] && [ "$SMOKE" != 1 ] && EVAL_BATCH=${EVAL_BATCH_GPU:-64}
if [ "$SMOKE" = 1 ]; then
  FAST_LIMITS="--limit 2 --policy-following-pairs 4"; REASON_LIMITS="--limit 1 --policy-following-pairs 2"
  BASE_LIMITS=$REASON_LIMITS; CALIBRATION_LIMITS="--limit 4"; HEADS_LATENCY_ITEMS=3
fi

run $PY scripts/build_guard_data.py --out "$DATA_DIR"
train_stage "$OUT/sft" $PY manage.py train --recipe sft --data "$DATA_DIR/train" --base "$BASE" --out "$OUT/sft" \
  --max-steps "$STEPS_SFT" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" \
  --lora-rank 16 --lora-layers "$LAYERS" --max-text-tokens "$TEXT_TOKENS" --save-steps 250 --learning-rate "$LR" \
  --mix "$MIX" --licences "$LICENCES" --max-minutes "${SFT_MINUTES:-0}"
FINAL="$OUT/sft"
RUNS=("$FINAL")
if [ "$PROFILE" = cpu ]; then
  # A second SFT stage from the first, on a new balanced draw (seed 1).
  train_stage "$OUT/sft2" $PY manage.py train --recipe sft --data "$DATA_DIR/train" --base "$BASE" --init "$FINAL/adapter" --out "$OUT/sft2" \
    --max-steps "${STEPS_SFT2:-$STEPS_SFT}" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" \
    --max-text-tokens "$TEXT_TOKENS" --save-steps 25 --learning-rate "$LR" --seed 1 --mix "$MIX" --licences "$LICENCES"
  FINAL="$OUT/sft2"; RUNS+=("$FINAL")
else
  train_stage "$OUT/grpo" $PY manage.py train --recipe grpo --data "$DATA_DIR/train" --base "$BASE" --init "$FINAL/adapter" --out "$OUT/grpo" \
    --max-steps "$STEPS_GRPO" --max-examples "$EXAMPLES" --holdout-percent 0 --batch-size "$BATCH" \
    --num-generations "${GENERATIONS:-8}" --max-completion-length "${COMPLETION_TOKENS:-96}" \
    --max-text-tokens "$TEXT_TOKENS" --save-steps 50 --seed 2 --mix "$MIX" --licences "$LICENCES" \
    --max-minutes "${GRPO_MINUTES:-0}"
  FINAL="$OUT/grpo"; RUNS+=("$FINAL")
  if [ "${DPO:-0}" = "1" ]; then
    train_stage "$OUT/dpo" $PY manage.py train --recipe dpo --data "$DATA_DIR/train" --base "$BASE" --init "$FINAL/adapter" --out "$OUT/dpo" \
      --max-steps 100 --holdout-percent 0 --dpo-prompts 512 --dpo-samples 4 --mix "$MIX" --licences "$LICENCES"
    FINAL="$OUT/dpo"; RUNS+=("$FINAL")
  fi
fi

if [ "${STOP_AFTER_TRAINING:-0}" = 1 ]; then
  echo "trained: ${RUNS[*]} (STOP_AFTER_TRAINING=1; run again with the same OUT to calibrate, evaluate and package)"
  exit 0
fi

# The held-out files with labels the targets compare against (aart/catqa are left out: their 66-70
# category taxonomies make every prompt ~5x longer). ToxicChat and OpenAI Moderation are evaluated
# whole; the others by a label-stratified sample. Prompt: chat traffic, toxic statements, attack-style
# requests, benign look-alikes and degenerate input; response: human labels (DICES, BeaverTails,
# PKU-SafeRLHF, RBR gold) and JBB judgements; refusal: RBR gold (human) and the synthetic refusals.
FILES=(toxicchat_train toxicchat_train_extra openai_moderation_train toxigen_statements davidson_hate_offensive
       jbb_behaviors advbench strongreject ailuminate_demo generated_lookalike generated_degenerate coconot
       jbb_artifacts dices gr_beavertails_test gr_saferlhf_test rbr_gold synthetic_refusal)
DATA=("${FILES[@]/#/$HELDOUT/}"); DATA=("${DATA[@]/%/.jsonl}")
# Calibration data: the same files' TRAINING split, less every record any stage trained on.
CALIBRATION=("${FILES[@]/#/$DATA_DIR/train/}"); CALIBRATION=("${CALIBRATION[@]/%/.jsonl}")
EXCLUDE=(); for ids in "$OUT"/*/training_ids.txt; do EXCLUDE+=(--exclude-ids "$ids"); done
# Heads left in the adapter by an interrupted earlier run would decide the fast verdicts below: those reports
# measure the label logits, and the heads are refitted (from cached features) and measured after them.
rm -rf "$FINAL/adapter/heads"
if [ "${EVAL_UNCALIBRATED:-1}" = 1 ]; then
  # shellcheck disable=SC2086 # the *_LIMITS are lists of options
  run $PY manage.py evaluate --model "$FINAL/adapter" --mode fast --data "${DATA[@]}" $FAST_LIMITS --batch-size "$EVAL_BATCH" --uncalibrated --out "$OUT/reports/uncalibrated-fast.json"
fi
# shellcheck disable=SC2086
run $PY manage.py calibrate --model "$FINAL/adapter" --data "${CALIBRATION[@]}" "${EXCLUDE[@]}" $CALIBRATION_LIMITS --batch-size "$EVAL_BATCH"
# shellcheck disable=SC2086
run $PY manage.py evaluate --model "$FINAL/adapter" --mode fast --data "${DATA[@]}" $FAST_LIMITS --batch-size "$EVAL_BATCH" --out "$OUT/reports/adapter-fast.json"
run $PY manage.py evaluate --model "$FINAL/adapter" --mode reason --data "${DATA[@]}" $REASON_LIMITS --batch-size "$EVAL_BATCH" --out "$OUT/reports/adapter-reason.json"
for MODE in fast reason; do
  if [ "$EVAL_BASE" = 1 ]; then
    # shellcheck disable=SC2086
    run $PY manage.py evaluate --model "$BASE" --mode $MODE --data "${DATA[@]}" $BASE_LIMITS --batch-size "$EVAL_BATCH" --out "$OUT/reports/base-$MODE.json"
  fi
  # The guard shipped before this run, on the same held-out records (the comparison the card shows), by its label
  # logits like the new adapter above (--no-heads: its heads are compared in step 6).
  if [ -n "$PREVIOUS" ] && [ -f "$PREVIOUS/adapter_config.json" ]; then
    LIMITS=$FAST_LIMITS; [ "$MODE" = reason ] && LIMITS=$REASON_LIMITS
    # shellcheck disable=SC2086
    run $PY manage.py evaluate --model "$PREVIOUS" --mode $MODE --data "${DATA[@]}" $LIMITS --batch-size "$EVAL_BATCH" --no-heads --out "$OUT/reports/previous-$MODE.json"
  fi
done

# 6. The latent heads of the new backbone: a model with heads gives its fast verdicts from them, and heads fitted
#    for other weights are refused, so the new adapter gets its own (manage.py fit_heads: the training split's fit
#    sample, chosen on its validation split), measured on the held-out sample by bench/heads.py (heads alone: the
#    logits' figures are the reports above). The card then carries heads/ and their section. FIT_HEADS=0 skips it.
if [ "$FIT_HEADS" = 1 ]; then
  run $PY manage.py fit_heads --model "$FINAL/adapter" --data "$DATA_DIR/train" --tune-epochs "$TUNE_EPOCHS" --tune-copies "$TUNE_COPIES"
  run $PY bench/heads.py --model "$FINAL/adapter" --data "$HELDOUT" --no-logits --latency-items "$HEADS_LATENCY_ITEMS" \
    --out "$OUT/heads-bench.json"
  # The shipped guard's heads on the same held-out records, for the card's comparison (read before the card is
  # written: CARD_OUT may be that very directory).
  rm -f "$OUT/previous-heads-bench.json"
  if [ -n "$PREVIOUS" ] && [ -f "$PREVIOUS/reports/heads-bench.json" ]; then
    cp "$PREVIOUS/reports/heads-bench.json" "$OUT/previous-heads-bench.json"
  fi
fi

run $PY scripts/write_model_card.py --run "${RUNS[@]}" --reports "$OUT/reports" --commands "$OUT/commands.txt" \
  --manifest "$DATA_DIR/train/MANIFEST.md" --profile "$PROFILE" \
  --compute "${COMPUTE:-$PROFILE profile, see training.json for the device}" --out "$CARD_OUT"
if [ "$FIT_HEADS" = 1 ]; then
  cp "$OUT/heads-bench.json" "$CARD_OUT/reports/heads-bench.json"
  PREVIOUS_BENCH=(); [ -f "$OUT/previous-heads-bench.json" ] && PREVIOUS_BENCH=(--previous-bench "$OUT/previous-heads-bench.json")
  run $PY scripts/heads_card.py --model "$CARD_OUT" --bench "$CARD_OUT/reports/heads-bench.json" "${PREVIOUS_BENCH[@]}"
fi
