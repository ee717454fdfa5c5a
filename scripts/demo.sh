#!/usr/bin/env bash
# `make demo`: the embedded configuration on one machine with nothing but Python.
# SQLite + kombu's filesystem broker + one real Celery worker + the web server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${DEMO_HOST:-127.0.0.1}
PORT=${DEMO_PORT:-8000}
# DEBUG stays off, as in production: visitors see the app's own 404/500 pages and the API answers
# JSON errors; whitenoise serves the static files. DEMO_DEBUG=1 turns Django's debug pages on.
export DEBUG=${DEMO_DEBUG:-${DEBUG:-0}}
if [ -z "${ALLOWED_HOSTS:-}" ]; then
  case "$HOST" in
    127.0.0.1|localhost|::1) ;;
    0.0.0.0|::) export ALLOWED_HOSTS="*" ;;  # reachable on every interface: any Host header
    *) export ALLOWED_HOSTS="localhost,127.0.0.1,[::1],$HOST" ;;
  esac
fi
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
t0=$(date +%s)

step "migrate"
$PY manage.py migrate --noinput >/dev/null
step "prepare the embedded guard model (cached after the first run)"
$PY manage.py guard_model prepare
step "admin account, demo policy and demo items"
$PY manage.py demo_setup

step "start one Celery worker (queues default, gpu-infer, gpu-train) with its beat scheduler"
mkdir -p var/log
$PY -m celery -A guardsite worker -B -s var/celerybeat-schedule -Q default,gpu-infer,gpu-train -c 1 -l INFO \
  >var/log/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null || true' EXIT INT TERM

echo
echo "Guardsite is starting at http://$HOST:$PORT/  (set up in $(( $(date +%s) - t0 ))s; worker log: var/log/worker.log)"
echo "Sign in with the admin credentials printed above. Ctrl-C stops the server and the worker."
$PY -m gunicorn guardsite.wsgi --bind "$HOST:$PORT" --workers 2 --threads 4 --timeout 120 --access-logfile - 
