#!/usr/bin/env bash
# Real data for the dashboard screenshot (docs/dashboard.png): relay in split
# mode (a nats-server, one ingest, two fanouts) under load from relay bench,
# scraped every 5 s by a real Prometheus that also evaluates
# deploy/helm/relay/files/alerts.yaml, through a sequence of faults. Then
# tools/dashrender draws the dashboard's panels from that Prometheus.
#
#   bash tools/dashrender/scenario.sh            # ~13 minutes; ports 28000-28999
#
# Needs: go, Debian's prometheus and chromium, nc. Every process it starts
# is stopped at the end (by PID). Alert states are saved next to the image.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=${WORKDIR:-$(mktemp -d /tmp/relay-scenario.XXXXXX)}
OUT=${OUT:-$ROOT/docs/dashboard.png}
P=${PORT_BASE:-28000}
NATS=$((P + 422)) INGEST_HTTP=$((P + 81)) HS=$((P + 71)) FIXED=$((P + 70))
FAN_A=$((P + 80)) FAN_B=$((P + 82)) PROM=$((P + 90))
log() { printf '%s scenario: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
pids=()
cleanup() {
	for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# A signal interrupts wait at once (a foreground sleep would delay the cleanup).
pause() {
	sleep "$1" &
	wait $!
}

cd "$ROOT"
go build -o "$W/relay" ./cmd/relay
go build -o "$W/nats-server" github.com/nats-io/nats-server/v2
(cd tools/dashrender && go build -o "$W/dashrender" .)

start_nats() {
	"$W/nats-server" -a 127.0.0.1 -p "$NATS" >>"$W/nats.log" 2>&1 &
	NATS_PID=$!
	pids+=("$NATS_PID")
}
start_nats
pause 1
export RELAY_NATS_URL=nats://127.0.0.1:$NATS RELAY_LOG_LEVEL=info
RELAY_INGEST_LISTENERS="127.0.0.1:$FIXED=default/line,127.0.0.1:$HS=*/line" RELAY_INGEST_HTTP_ADDR=127.0.0.1:$INGEST_HTTP \
	RELAY_INGEST_MAX_CONNECTIONS=60 "$W/relay" ingest >>"$W/ingest.log" 2>&1 &
pids+=($!)
RELAY_FANOUT_ADDR=127.0.0.1:$FAN_A "$W/relay" fanout >>"$W/fanout-a.log" 2>&1 &
pids+=($!)
# Fanout B: a small connection limit and NATS pending limit, so that the
# faults below reach them.
RELAY_FANOUT_ADDR=127.0.0.1:$FAN_B RELAY_FANOUT_MAX_CONNECTIONS=300 RELAY_FANOUT_SUB_PENDING_MSGS=2000 \
	"$W/relay" fanout >>"$W/fanout-b.log" 2>&1 &
pids+=($!)

cat >"$W/prometheus.yml" <<EOF
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ["$ROOT/deploy/helm/relay/files/alerts.yaml"]
scrape_configs:
  - job_name: relay-ingest
    static_configs: [{targets: ["127.0.0.1:$INGEST_HTTP"]}]
  - job_name: relay-fanout
    static_configs: [{targets: ["127.0.0.1:$FAN_A", "127.0.0.1:$FAN_B"]}]
EOF
prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/prom-data" \
	--web.listen-address=127.0.0.1:$PROM >>"$W/prometheus.log" 2>&1 &
pids+=($!)
START=$(date -u +%s)
log "workdir $W; prometheus http://127.0.0.1:$PROM"

# Steady load, restarted every 2 minutes so receivers closed by a fault come back.
load() { # name fanout-port receivers rate [extra flags]
	local name=$1 port=$2 r=$3 rate=$4
	shift 4
	while :; do
		"$W/relay" bench --quiet --ingest 127.0.0.1:$HS --fanout 127.0.0.1:$port --senders 2 --channels 4 \
			--receivers "$r" --rate "$rate" --warmup 0s --duration 120s "$@" >>"$W/bench-$name.log" 2>&1 || sleep 2
	done
}
load a $FAN_A 160 800 &
pids+=($!)
load b $FAN_B 120 400 &
pids+=($!)
pause 150

log "fault: nats-server killed (SIGKILL) for 75 s"
kill -KILL "$NATS_PID"
pause 75
start_nats
pause 100

log "fault: senders with bad handshakes, and more sender connections than RELAY_INGEST_MAX_CONNECTIONS"
for _ in $(seq 600); do printf 'bad channel!\n' | timeout 2 nc -q1 127.0.0.1 $HS >/dev/null 2>&1 || true; sleep 0.2; done &
pids+=($!)
for i in $(seq 70); do (printf 'idle.%d\n' "$i"; sleep 150) | nc -q1 127.0.0.1 $HS >/dev/null 2>&1 & pids+=($!); done
pause 150

log "fault: receivers that stop reading and a burst (fanout A), more receivers than fanout B allows"
"$W/relay" bench --quiet --ingest 127.0.0.1:$HS --fanout 127.0.0.1:$FAN_A --receivers 100 --slow 0.3 --rate 2000 \
	--warmup 0s --duration 60s >>"$W/bench-slow.log" 2>&1 &
pids+=($!)
for i in 1 2 3 4; do "$W/relay" watch "ws://127.0.0.1:$FAN_A/ws/burst" >/dev/null 2>&1 & pids+=($!); done
"$W/relay" bench --quiet --ingest 127.0.0.1:$HS --fanout 127.0.0.1:$FAN_B --idle --receivers 250 >>"$W/bench-limit.log" 2>&1 &
pids+=($!)
pause 5
seq 1 400000 | "$W/relay" send 127.0.0.1:$HS burst >/dev/null 2>&1 || true
pause 110

log "fault: nats-server frozen (SIGSTOP) for 30 s"
kill -STOP "$NATS_PID"
pause 30
kill -CONT "$NATS_PID"
pause 150

END=$(date -u +%s)
log "rendering $(((END - START) / 60)) minutes"
"$W/dashrender" -dashboard deploy/grafana/relay-dashboard.json -prometheus http://127.0.0.1:$PROM \
	-range "$((END - START))s" -out "$W/dashboard.html" -png "$OUT" \
	-note "tools/dashrender/scenario.sh: nats-server, 1 ingest, 2 fanouts, relay bench; NATS killed 75 s, bad senders, ingest at its connection limit, slow receivers + a burst, NATS frozen 30 s"
curl -s "http://127.0.0.1:$PROM/api/v1/query_range" --data-urlencode 'query=ALERTS{alertstate="firing"}' \
	--data-urlencode "start=$START" --data-urlencode "end=$END" --data-urlencode step=15 >"$W/alerts.json"
log "screenshot $OUT; alerts that fired: $W/alerts.json"
