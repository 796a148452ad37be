#!/usr/bin/env bash
# Gateway passthrough benchmark (docs/GATEWAY.md has the recorded figures).
#
#   bench/gateway.sh [RATE] [SECONDS] [STREAMS]     defaults: 1000 20 1000
#
# 1. A minimal fake OpenAI upstream, the moziplus gateway (one unlimited
#    provider) and, if it can be installed, LiteLLM's proxy, each in its own
#    process on loopback.
# 2. Open-loop load at RATE req/s for SECONDS: direct to the fake, through
#    the gateway, through LiteLLM. Added latency = percentile(through) -
#    percentile(direct). The gateway's RSS is read from /proc.
# 3. Translated surfaces (issue 11) at SURF_RATE req/s (default 500):
#    /v1/responses and /v1/messages through the gateway onto the chat-only
#    fake, against direct chat; then streaming time to the first content
#    event on /v1/responses and /v1/messages against chat passthrough.
#    With LiteLLM, its /v1/messages on the same upstream too.
#    SKIP_SURFACES=1 leaves this out; ONLY_SURFACES=1 runs only this.
# 4. STREAMS concurrent streaming responses through the gateway: every
#    stream must carry only its own chunks; peak RSS reported.
#
# LiteLLM is installed from PyPI into a throw-away venv here only (never in
# tests or CI). Set SKIP_LITELLM=1 to leave it out.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:-1000}
SECS=${2:-20}
STREAMS=${3:-1000}
SURF_RATE=${SURF_RATE:-500}
TTFE_RATE=${TTFE_RATE:-100}
TTFE_COUNT=${TTFE_COUNT:-1000}
FAKE_PORT=${FAKE_PORT:-18181}
GW_PORT=${GW_PORT:-18182}
LITELLM_PORT=${LITELLM_PORT:-18183}
VENV=${LITELLM_VENV:-/tmp/moziplus-litellm-venv}
OUT=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 8192 || true

echo "== building the harness (release profile)"
BIN=$(cargo bench --bench gateway_load --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*gateway_load[^"]*"' | tail -1 | cut -d'"' -f4)
[ -x "$BIN" ] || { echo "harness binary not found"; exit 1; }

wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

"$BIN" fake "$FAKE_PORT" & PIDS+=($!)
wait_port "$FAKE_PORT"
"$BIN" gateway "$GW_PORT" "http://127.0.0.1:$FAKE_PORT/v1" & GW_PID=$!; PIDS+=($GW_PID)
wait_port "$GW_PORT"
echo "gateway pid $GW_PID, idle RSS $(rss_kb $GW_PID) kB"
IDLE_RSS=$(rss_kb $GW_PID)

# 0. The budget check (issue 25): a second gateway whose hooks keep a budget
#    for every call (the daemon's BudgetBook: task, agent day, project day
#    and month, home day), at RATE req/s for SECS. Its own histogram
#    moziplus_gateway_budget_check_seconds (prompt counted, worst case
#    reserved) gives the share of checks under 50 µs; the latency against
#    the plain gateway is shown too. SKIP_BUDGET=1 leaves it out;
#    ONLY_BUDGET=1 runs only this.
BUDGET_PORT=${BUDGET_PORT:-18184}
if [ "${SKIP_BUDGET:-0}" != 1 ]; then
  "$BIN" gateway-budget "$BUDGET_PORT" "http://127.0.0.1:$FAKE_PORT/v1" & PIDS+=($!)
  wait_port "$BUDGET_PORT"
  echo "== budget check: $RATE req/s for $SECS s, plain gateway then budgeted gateway"
  "$BIN" load "http://127.0.0.1:$GW_PORT" fake/echo "$RATE" "$SECS" | tee "$OUT/b_plain.json"
  "$BIN" load "http://127.0.0.1:$BUDGET_PORT" fake/echo "$RATE" "$SECS" | tee "$OUT/b_budget.json"
  curl -s "http://127.0.0.1:$BUDGET_PORT/metrics" > "$OUT/b_metrics.txt"
  python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
plain = json.load(open(f"{out}/b_plain.json"))
budget = json.load(open(f"{out}/b_budget.json"))
buckets, count = {}, 0
for line in open(f"{out}/b_metrics.txt"):
    m = re.match(r'moziplus_gateway_budget_check_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
    if m and m.group(1) != "+Inf":
        buckets[float(m.group(1))] = float(m.group(2))
    m = re.match(r'moziplus_gateway_budget_check_seconds_count (\S+)', line)
    if m:
        count = float(m.group(1))
under50 = buckets.get(0.00005, 0) / count if count else 0
p99 = next((le for le, n in sorted(buckets.items()) if count and n / count >= 0.99), None)
print(f"budget checks: {int(count)}; under 50 us: {under50 * 100:.2f}%; p99 bucket <= {p99 * 1e6 if p99 else float('nan'):.0f} us")
print(f"end-to-end p50 {budget['p50_ms'] - plain['p50_ms']:+.3f} ms, p99 {budget['p99_ms'] - plain['p99_ms']:+.3f} ms (budgeted - plain; errors {budget['errors']}, {budget['achieved_rps']} req/s)")
PY
  if [ "${ONLY_BUDGET:-0}" = 1 ]; then exit 0; fi
fi

surfaces() {
  echo "== translated surfaces: $SURF_RATE req/s for $SECS s each (direct chat, gateway chat, /v1/responses, /v1/messages)"
  "$BIN" load "http://127.0.0.1:$FAKE_PORT" fake/echo "$SURF_RATE" "$SECS" chat | tee "$OUT/s_direct.json"
  "$BIN" load "http://127.0.0.1:$GW_PORT" fake/echo "$SURF_RATE" "$SECS" chat | tee "$OUT/s_chat.json"
  "$BIN" load "http://127.0.0.1:$GW_PORT" fake/echo "$SURF_RATE" "$SECS" responses | tee "$OUT/s_responses.json"
  "$BIN" load "http://127.0.0.1:$GW_PORT" fake/echo "$SURF_RATE" "$SECS" messages | tee "$OUT/s_messages.json"
  echo "== streaming time to first content event: $TTFE_COUNT streams at $TTFE_RATE/s per surface"
  for s in chat responses messages; do
    "$BIN" ttfe "http://127.0.0.1:$GW_PORT" fake/echo "$s" "$TTFE_RATE" "$TTFE_COUNT" | tee "$OUT/t_$s.json"
  done
}
if [ "${SKIP_SURFACES:-0}" != 1 ]; then surfaces; fi
if [ "${ONLY_SURFACES:-0}" = 1 ]; then
  python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
r = lambda n: json.load(open(os.path.join(out, n)))
d = r("s_direct.json")
for s in ("chat", "responses", "messages"):
    v = r(f"s_{s}.json")
    print(f"{s:9}: {v}  added over direct chat p50 {v['p50_ms'] - d['p50_ms']:+.3f} ms, p99 {v['p99_ms'] - d['p99_ms']:+.3f} ms")
c = r("t_chat.json")
for s in ("chat", "responses", "messages"):
    v = r(f"t_{s}.json")
    print(f"ttfe {s:9}: {v}  vs chat passthrough p50 {v['p50_ms'] - c['p50_ms']:+.3f} ms, p99 {v['p99_ms'] - c['p99_ms']:+.3f} ms")
EOF
  exit 0
fi

echo "== direct to the fake upstream: $RATE req/s for $SECS s"
"$BIN" load "http://127.0.0.1:$FAKE_PORT" fake/echo "$RATE" "$SECS" | tee "$OUT/direct.json"
echo "== through the moziplus gateway"
"$BIN" load "http://127.0.0.1:$GW_PORT" fake/echo "$RATE" "$SECS" | tee "$OUT/gateway.json"
LOAD_HWM=$(hwm_kb $GW_PID)
echo "gateway peak RSS so far (VmHWM) $LOAD_HWM kB"

LITELLM_NOTE=""
if [ "${SKIP_LITELLM:-0}" != 1 ]; then
  echo "== LiteLLM proxy (PyPI, throw-away venv $VENV)"
  if { [ -x "$VENV/bin/litellm" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'litellm[proxy]'; }; } >"$OUT/litellm-install.log" 2>&1; then
    cat > "$OUT/litellm.yaml" <<EOF
model_list:
  - model_name: fake/echo
    litellm_params:
      model: openai/echo
      api_base: http://127.0.0.1:$FAKE_PORT/v1
      api_key: sk-fake
litellm_settings:
  drop_params: true
  telemetry: false
  # Without this LiteLLM sends /v1/messages for openai/ models to the
  # upstream's /v1/responses, which a chat-only provider answers 404.
  use_chat_completions_url_for_anthropic_messages: true
general_settings:
  master_key: sk-bench-master-key-0123456789
EOF
    LITELLM_TELEMETRY=False "$VENV/bin/litellm" --config "$OUT/litellm.yaml" --port "$LITELLM_PORT" \
      >"$OUT/litellm.log" 2>&1 & LITELLM_PID=$!; PIDS+=($LITELLM_PID)
    if wait_port "$LITELLM_PORT"; then
      sleep 2
      echo "== through LiteLLM: $RATE req/s for $SECS s"
      "$BIN" load "http://127.0.0.1:$LITELLM_PORT" fake/echo "$RATE" "$SECS" | tee "$OUT/litellm.json"
      echo "== at 100 req/s, gateway and LiteLLM"
      "$BIN" load "http://127.0.0.1:$FAKE_PORT" fake/echo 100 "$SECS" | tee "$OUT/direct100.json"
      "$BIN" load "http://127.0.0.1:$GW_PORT" fake/echo 100 "$SECS" | tee "$OUT/gateway100.json"
      "$BIN" load "http://127.0.0.1:$LITELLM_PORT" fake/echo 100 "$SECS" | tee "$OUT/litellm100.json"
      if [ "${SKIP_SURFACES:-0}" != 1 ]; then
        echo "== LiteLLM /v1/messages (Anthropic -> chat translation) at $SURF_RATE req/s"
        "$BIN" load "http://127.0.0.1:$LITELLM_PORT" fake/echo "$SURF_RATE" "$SECS" messages | tee "$OUT/litellm_messages.json"
      fi
      echo "LiteLLM RSS $(rss_kb $LITELLM_PID) kB (main process only)"
    else
      LITELLM_NOTE="LiteLLM did not start: $(tail -5 "$OUT/litellm.log")"
    fi
  else
    LITELLM_NOTE="LiteLLM could not be installed: $(tail -5 "$OUT/litellm-install.log")"
  fi
  [ -n "$LITELLM_NOTE" ] && echo "$LITELLM_NOTE"
fi

echo "== $STREAMS concurrent streams through the gateway"
"$BIN" streams "http://127.0.0.1:$GW_PORT" fake/echo "$STREAMS" | tee "$OUT/streams.json"
STREAM_HWM=$(hwm_kb $GW_PID)

echo "== summary"
python3 - "$OUT" "$IDLE_RSS" "$LOAD_HWM" "$STREAM_HWM" <<'EOF'
import json, os, sys
out, idle, load_hwm, stream_hwm = sys.argv[1], *map(int, sys.argv[2:5])
def read(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
def overhead(via, direct):
    return {k: round(via[k] - direct[k], 3) for k in ("p50_ms", "p99_ms")}
d, g, l = read("direct.json"), read("gateway.json"), read("litellm.json")
print(f"direct  : {d}")
print(f"gateway : {g}  added {overhead(g, d)}")
if l:
    print(f"litellm : {l}  added {overhead(l, d)}")
    og, ol = overhead(g, d), overhead(l, d)
    print("ratio litellm/gateway added latency:", {k: round(ol[k] / og[k], 1) if og[k] > 0 else None for k in og})
d1, g1, l1 = read("direct100.json"), read("gateway100.json"), read("litellm100.json")
if d1 and g1 and l1:
    og, ol = overhead(g1, d1), overhead(l1, d1)
    print(f"@100rps gateway added {og}, litellm added {ol}",
          {k: round(ol[k] / og[k], 1) if og[k] > 0 else None for k in og})
sd = read("s_direct.json")
if sd:
    for s in ("chat", "responses", "messages"):
        v = read(f"s_{s}.json")
        print(f"@{v['achieved_rps']}rps {s:9}: added over direct chat {overhead(v, sd)}")
    lm = read("litellm_messages.json")
    if lm:
        gm = overhead(read("s_messages.json"), sd)
        olm = overhead(lm, sd)
        print(f"litellm /v1/messages added {olm}; ratio litellm/gateway",
              {k: round(olm[k] / gm[k], 1) if gm[k] > 0 else None for k in gm})
    tc = read("t_chat.json")
    for s in ("chat", "responses", "messages"):
        v = read(f"t_{s}.json")
        print(f"ttfe {s:9}: p50 {v['p50_ms']:.3f} ms p99 {v['p99_ms']:.3f} ms; vs chat passthrough p50 {v['p50_ms'] - tc['p50_ms']:+.3f} p99 {v['p99_ms'] - tc['p99_ms']:+.3f}")
print(f"gateway RSS: idle {idle} kB, peak under load {load_hwm} kB, peak after {read('streams.json')['streams']} streams {stream_hwm} kB")
print(f"streams: {read('streams.json')}")
EOF
