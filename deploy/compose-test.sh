#!/usr/bin/env bash
# Offline end-to-end test of docker-compose.yml.
#
# Builds every image with no registry (deploy/build-images.sh), starts the
# stack with deploy/compose.offline.yml, then checks delivery from TCP
# senders through the ingest load balancer to WebSocket receivers through
# the fanout load balancer:
#   1. before scaling      (2 ingest, 2 fanout), plus the fixed :7070 listener,
#      and a durable channel (JetStream, R3): `relay send --ack --session`
#      is told every message is stored, receivers get them all, and (once
#      relay watch has --last) a watcher connecting afterwards replays them
#   2. after scaling fanout to 3 (the LB must use the new replica)
#   3. after SIGKILL of the NATS node serving the most fanout connections
#      (a stream through the kill itself is reported, not judged: core NATS
#      is at-most-once and relay closes receivers that may have missed data
#      with 1012), once every relay process is back on the surviving nodes;
#      then the durable channel again (the R3 stream on the 2 survivors)
# and tears everything down on exit, whatever happened. Ends with
# "compose-test: N passed, M failed".
#
# A check passes when every receiver got every message exactly once and in
# each sender connection's order; each prints "NAME: sent N received N lost 0".
#
# Works with `docker compose` (v2) and Debian's docker-compose (v1): v2 when
# the docker CLI has it, else v1; COMPOSE_CMD="docker-compose" or
# COMPOSE_CMD="docker compose" picks one.
# Only the load balancers publish ports, on 127.0.0.1 with ports the kernel
# picks, so parallel runs do not collide. All traffic stays on loopback and
# the Docker bridge.
#
# Needs: go, docker, curl, haproxy and busybox-static (deploy/ci.sh installs them).
# Environment:
#   MSGS=1000    messages per check, spread over SENDERS connections
#   SENDERS=4    sender connections per check
#   WAIT=60      seconds any single wait may take
#   RELAY_BIN    use this static relay binary instead of building ./cmd/relay
#   KEEP_IMAGES=1  keep the built images afterwards
#   COMPOSE_CMD    the compose command to use (see above)
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MSGS=${MSGS:-1000}
SENDERS=${SENDERS:-4}
WAIT=${WAIT:-60}
KEEP_IMAGES=${KEEP_IMAGES:-0}

run_id=$$
project=relayct$run_id
export OFFLINE_RELAY_IMAGE=relay-offline/relay:ct$run_id
export OFFLINE_NATS_IMAGE=relay-offline/nats:ct$run_id
export OFFLINE_HAPROXY_IMAGE=relay-offline/haproxy:ct$run_id
# "127.0.0.1:" + ":7070" = loopback only, host port chosen by the kernel.
export INGEST_PORT=127.0.0.1: HANDSHAKE_PORT=127.0.0.1: FANOUT_PORT=127.0.0.1:
export RELAY_LOG_LEVEL=${RELAY_LOG_LEVEL:-info}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/relay-compose-test.XXXXXX")
start=$SECONDS
results=()
passed=0
failed=0
watchers=()

log() { printf '%s compose-test: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
	log "FAIL: $*"
	failed=$((failed + 1))
	exit 1
}

if [[ -n ${COMPOSE_CMD:-} ]]; then
	read -r -a COMPOSE <<<"$COMPOSE_CMD"
elif docker compose version >/dev/null 2>&1; then
	COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
	COMPOSE=(docker-compose)
else
	die "neither 'docker compose' nor 'docker-compose' is installed"
fi
for tool in go docker curl; do
	command -v "$tool" >/dev/null || die "$tool not found"
done

# dc runs compose on this run's project, every call bounded in time.
dc() {
	timeout "${DC_TIMEOUT:-240}" "${COMPOSE[@]}" -p "$project" \
		-f docker-compose.yml -f deploy/compose.offline.yml "$@"
}

stop_watchers() {
	local p
	for p in "${watchers[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${watchers[@]}"; do wait "$p" 2>/dev/null || true; done
	watchers=()
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	stop_watchers
	if ((rc != 0)); then
		log "state at failure:"
		dc ps
		dc logs --no-color --tail=40 2>&1 | tail -n 300
	fi
	log "tearing down project $project"
	DC_TIMEOUT=120 dc down -v --remove-orphans -t 10 >"$WORK/down.log" 2>&1 || cat "$WORK/down.log"
	if [[ $KEEP_IMAGES != 1 ]]; then
		docker rmi "$OFFLINE_RELAY_IMAGE" "$OFFLINE_NATS_IMAGE" "$OFFLINE_HAPROXY_IMAGE" >/dev/null 2>&1
	fi
	rm -rf "$WORK"
	log "took $((SECONDS - start))s"
	if ((rc != 0)); then
		failed=$((failed > 0 ? failed : 1))
		log "compose test FAILED"
	fi
	printf 'compose-test: %d passed, %d failed\n' "$passed" "$failed"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- images
RELAY=$WORK/relay
if [[ -n ${RELAY_BIN:-} ]]; then
	cp "$RELAY_BIN" "$RELAY"
else
	log "go build ./cmd/relay"
	version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
	revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
	CGO_ENABLED=0 go build -trimpath -ldflags="-X main.version=$version -X main.commit=$revision" -o "$RELAY" ./cmd/relay
fi
RELAY_BIN=$RELAY RELAY_IMAGE=$OFFLINE_RELAY_IMAGE NATS_IMAGE=$OFFLINE_NATS_IMAGE \
	HAPROXY_IMAGE=$OFFLINE_HAPROXY_IMAGE deploy/build-images.sh

log "image $OFFLINE_RELAY_IMAGE: $(timeout 60 docker run --rm "$OFFLINE_RELAY_IMAGE" version)"

# ---------------------------------------------------------------- stack
log "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"
log "starting project $project: 3 NATS, 2 ingest, 2 fanout, 2 load balancers"
dc up -d --no-build >"$WORK/up.log" 2>&1 || {
	cat "$WORK/up.log"
	die "compose up failed"
}

cid() { dc ps -q "$1" | head -n 1; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
host_port() { dc port "$1" "$2" | tail -n 1 | sed 's/.*://'; }

# await_healthy SERVICE: Docker's healthcheck status of its first container.
await_healthy() {
	local c status deadline=$((SECONDS + WAIT))
	c=$(cid "$1")
	while :; do
		status=$(docker inspect -f '{{.State.Health.Status}}' "$c" 2>/dev/null || echo gone)
		[[ $status == healthy ]] && return 0
		((SECONDS < deadline)) || die "$1 is $status after ${WAIT}s"
		sleep 1
	done
}
await_healthy ingest-lb
await_healthy fanout-lb

line_port=$(host_port ingest-lb 7070)
hs_port=$(host_port ingest-lb 7071)
ws_port=$(host_port fanout-lb 8080)
fanout_lb_ip=$(ip_of "$(cid fanout-lb)")
log "load balancers: ingest 127.0.0.1:$line_port (fixed) 127.0.0.1:$hs_port (handshake), fanout 127.0.0.1:$ws_port"

# lb_servers: "name=current_sessions" for each UP server of the fanout
# backend, from HAProxy's CSV stats on the LB's unpublished monitor port.
lb_servers() {
	curl -fsS --max-time 5 "http://$fanout_lb_ip:8404/stats;csv" |
		awk -F, '$1 == "fanout" && $2 != "BACKEND" && $18 == "UP" {printf "%s=%s ", $2, $5}'
}

# ---------------------------------------------------------------- checks

# start_watchers CHANNEL COUNT PREFIX: WebSocket receivers through the fanout LB.
start_watchers() {
	local i
	for ((i = 1; i <= $2; i++)); do
		"$RELAY" watch "ws://127.0.0.1:$ws_port/ws/$1" >"$WORK/$3.w$i" 2>"$WORK/$3.w$i.err" &
		watchers+=($!)
	done
}

# await_probe SEND_CMD FILES...: send "probe K" lines (one connection each)
# until every receiver has one, so the path is known to work before counting.
await_probe() {
	local send=$1 k=0 missing f deadline=$((SECONDS + WAIT))
	shift
	while :; do
		k=$((k + 1))
		printf 'probe %d\n' "$k" | $send >/dev/null 2>&1 || true
		missing=0
		for f in "$@"; do grep -q '^probe ' "$f" || missing=$((missing + 1)); done
		((missing == 0)) && return 0
		if ((SECONDS >= deadline)); then
			for f in "$@"; do [[ -s $f.err ]] && log "$(basename "$f"): $(tail -n 2 "$f.err")"; done
			die "$missing of $# receivers got no probe within ${WAIT}s"
		fi
		sleep 0.5
	done
}

send_handshake() { timeout 20 "$RELAY" send "127.0.0.1:$hs_port" "$1"; }
send_fixed() { timeout 20 bash -c 'cat >"/dev/tcp/127.0.0.1/$0"' "$line_port"; }

# await_batch TAG SENT FILES...: wait until every receiver has SENT messages.
await_batch() {
	local tag=$1 sent=$2 all f deadline=$((SECONDS + WAIT))
	shift 2
	while :; do
		all=1
		for f in "$@"; do
			(($(grep -c "^msg $tag " "$f" || true) >= sent)) || all=0
		done
		((all)) && return 0
		((SECONDS < deadline)) || return 0 # counted (and failed) by report
		sleep 0.5
	done
}

# report NAME TAG SENT DETAIL FILES...: count per receiver, print, judge.
report() {
	local name=$1 tag=$2 sent=$3 detail=$4 f got dup ooo min=-1 per="" bad=0
	shift 4
	for f in "$@"; do
		got=$(grep "^msg $tag " "$f" | sort -u | wc -l)
		dup=$(($(grep -c "^msg $tag " "$f" || true) - got))
		# Messages of one sender connection must arrive in the order sent.
		ooo=$(awk -v t="$tag" '$1 == "msg" && $2 == t { if ($4 <= last[$3]) n++; last[$3] = $4 } END { print n + 0 }' "$f")
		per+="$got "
		((min < 0 || got < min)) && min=$got
		((dup == 0 && ooo == 0)) || bad=1
		((dup == 0)) || log "$(basename "$f"): $dup duplicates"
		((ooo == 0)) || log "$(basename "$f"): $ooo out of order"
	done
	local line
	line=$(printf '%s: sent %d received %d lost %d' "$name" "$sent" "$min" "$((sent - min))")
	log "$line  [$# receivers, each received: ${per% }; $detail]"
	results+=("$line")
	if ((min == sent && bad == 0)); then
		passed=$((passed + 1))
	else
		die "$name: not every receiver got every message once and in order"
	fi
}

# check NAME RECEIVERS: handshake senders -> ingest LB -> NATS -> fanout LB -> receivers.
check() {
	local name=$1 receivers=$2 tag ch per sent s files=() pids=()
	tag=$(printf '%s' "$name" | tr -c 'A-Za-z0-9\n' '-')
	ch=ct.$run_id.$tag
	per=$((MSGS / SENDERS))
	sent=$((per * SENDERS))
	start_watchers "$ch" "$receivers" "$tag"
	for ((s = 1; s <= receivers; s++)); do files+=("$WORK/$tag.w$s"); done
	await_probe "send_handshake $ch" "${files[@]}"
	for ((s = 1; s <= SENDERS; s++)); do
		awk -v t="$tag" -v s="$s" -v n="$per" 'BEGIN { for (i = 1; i <= n; i++) printf "msg %s %d %d\n", t, s, i }' |
			send_handshake "$ch" >"$WORK/$tag.s$s.log" 2>&1 &
		pids+=($!)
	done
	for s in "${!pids[@]}"; do
		wait "${pids[$s]}" || die "$name: sender $((s + 1)) failed: $(tail -n 2 "$WORK/$tag.s$((s + 1)).log")"
	done
	await_batch "$tag" "$sent" "${files[@]}"
	CHECK_LB=$(lb_servers)
	report "$name" "$tag" "$sent" "$SENDERS sender connections, fanout LB servers: ${CHECK_LB% }" "${files[@]}"
	stop_watchers
}

# check_fixed: the fixed listener (:7070, channel "default", no handshake).
check_fixed() {
	local n=200 f=$WORK/fixed.w1
	start_watchers default 1 fixed
	await_probe send_fixed "$f"
	awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "msg fixed 1 %d\n", i }' | send_fixed ||
		die "fixed listener: send failed"
	await_batch fixed "$n" "$f"
	report "fixed listener :7070 (channel default)" fixed "$n" "1 sender connection, plain TCP" "$f"
	stop_watchers
}

# check_durable NAME NODE: a durable channel (RELAY_DURABLE_CHANNELS=durable.>,
# R3 stream): `relay send --ack --session` must exit 0 (every message
# acknowledged as stored), two receivers get every message once, in order,
# and NODE's /jsz shows the stream RELAY with 3 replicas, all current.
check_durable() {
	local name=$1 node=$2 tag ch n=$MSGS f1 f2 out jsz
	tag=$(printf '%s' "$name" | tr -c 'A-Za-z0-9\n' '-')
	ch=durable.ct$run_id.$tag f1=$WORK/$tag.w1 f2=$WORK/$tag.w2
	start_watchers "$ch" 2 "$tag"
	await_probe "send_handshake $ch" "$f1" "$f2"
	out=$(awk -v t="$tag" -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "msg %s 1 %d\n", t, i }' |
		timeout 120 "$RELAY" send --ack --session "ct$run_id-$tag" "127.0.0.1:$hs_port" "$ch" 2>&1) ||
		die "$name: relay send --ack did not see every message stored: $out"
	[[ -z $out ]] || log "$name: relay send said: $out"
	await_batch "$tag" "$n" "$f1" "$f2"
	report "$name" "$tag" "$n" "relay send --ack --session: all $n acknowledged as stored" "$f1" "$f2"
	stop_watchers
	# Replay, once the fanout side serves it (relay watch --last): a watcher
	# that connects after the send gets the channel's last N messages from
	# the stream (or the fanout's ring), in order, then exits (-n).
	if grep -q -- '-last' <<<"$("$RELAY" watch --help 2>&1 || true)"; then
		timeout "$WAIT" "$RELAY" watch --last "$n" -n "$n" "ws://127.0.0.1:$ws_port/ws/$ch" \
			>"$WORK/$tag.replay" 2>"$WORK/$tag.replay.err" ||
			die "$name: relay watch --last $n did not get $n messages: $(tail -n 2 "$WORK/$tag.replay.err")"
		report "$name, replayed" "$tag" "$n" "relay watch --last $n, connected after the send" "$WORK/$tag.replay"
	else
		log "$name: replay not checked (this relay watch has no --last yet)"
	fi
	jsz=$(curl -fsS --max-time 5 "http://$(ip_of "$(cid "$node")"):8222/jsz?accounts=true&streams=true&config=true" | tr -d ' \n')
	grep -q '"name":"RELAY"' <<<"$jsz" || die "$name: $node's /jsz shows no stream RELAY"
	grep -q '"num_replicas":3' <<<"$jsz" || die "$name: stream RELAY is not at 3 replicas: $(grep -o '"num_replicas":[0-9]*' <<<"$jsz")"
	line="$name: stream RELAY, num_replicas 3, leader $(grep -o '"leader":"[^"]*"' <<<"$jsz" | head -n 1 | cut -d'"' -f4)"
	log "$line"
	results+=("$line")
	passed=$((passed + 1))
}

log "check 1: before scaling"
check "before scaling" 2
check_fixed
check_durable "durable channel" nats-1

# client_ip SERVICE PATTERN: the client address in the last log line of
# SERVICE matching PATTERN (its remote=IP:PORT attribute).
client_ip() {
	dc logs --no-color "$1" 2>&1 | grep -- "$2" | grep -o 'remote=[^ ]*' | tail -n 1 | sed 's/^remote=//; s/:[0-9]*$//; s/^\[//; s/\]$//'
}

log "check: network controls"
# NATS runs with authorization: a client without credentials cannot read
# relay.ch.> (it cannot even connect). Spoken with busybox nc from a
# throwaway container on the compose network.
nats_reply=$(printf 'CONNECT {"verbose":false,"pedantic":false}\r\nSUB relay.ch.> 1\r\nPING\r\n' |
	timeout 30 docker run --rm -i --network "${project}_default" -v "${BUSYBOX_BIN:-/bin/busybox}:/nc:ro" \
		--entrypoint /nc "$OFFLINE_NATS_IMAGE" -w 3 nats-1 4222 2>&1 || true)
if grep -q "Authorization Violation" <<<"$nats_reply" && ! grep -q '^PONG' <<<"$nats_reply"; then
	line="NATS without credentials: SUB relay.ch.> refused (Authorization Violation)"
	log "$line"
	results+=("$line")
	passed=$((passed + 1))
else
	die "a NATS client without credentials was not refused: $(tr -d '\r' <<<"$nats_reply" | tail -n 3)"
fi
# The load balancers pass on who the clients are (PROXY v2 to ingest,
# X-Forwarded-For to fanout): relay's per-address limits and logs name the
# client, not the LB. A bad handshake makes ingest log the sender's address;
# the receivers of check 1 made fanout log theirs when they left.
printf 'bad channel!\n' | timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"; cat >&3; timeout 5 cat <&3' "$hs_port" >"$WORK/bad.reply" 2>&1 || true
grep -q '^-ERR' "$WORK/bad.reply" || die "bad handshake through the LB got no -ERR: $(cat "$WORK/bad.reply")"
ingest_lb_ip=$(ip_of "$(cid ingest-lb)")
deadline=$((SECONDS + WAIT))
until [[ -n $(client_ip ingest 'sender closed with error') ]]; do
	((SECONDS < deadline)) || die "no ingest log line for the bad handshake"
	sleep 1
done
sender_ip=$(client_ip ingest 'sender closed with error')
receiver_ip=$(client_ip fanout 'client disconnected')
[[ -n $sender_ip && $sender_ip != "$ingest_lb_ip" ]] || die "ingest logged the sender as $sender_ip (the ingest LB is $ingest_lb_ip)"
[[ -n $receiver_ip && $receiver_ip != "$fanout_lb_ip" ]] || die "fanout logged the receiver as '$receiver_ip' (the fanout LB is $fanout_lb_ip)"
line="client addresses through the LBs: ingest logs sender $sender_ip (LB $ingest_lb_ip), fanout logs receiver $receiver_ip (LB $fanout_lb_ip)"
log "$line"
results+=("$line")
passed=$((passed + 1))

log "check 2: scaling fanout to 3"
dc up -d --no-build --no-recreate --scale fanout=3 >"$WORK/scale.log" 2>&1 || {
	cat "$WORK/scale.log"
	die "compose up --scale fanout=3 failed"
}
deadline=$((SECONDS + WAIT))
until [[ $(lb_servers | wc -w) -ge 3 ]]; do
	((SECONDS < deadline)) || die "fanout LB does not see 3 UP replicas after ${WAIT}s: $(lb_servers)"
	sleep 1
done
log "fanout LB sees: $(lb_servers)"
check "after scaling fanout to 3" 6
# Each of the 3 replicas must have served receivers (leastconn spreads 6 over 3).
busy=$(printf '%s\n' $CHECK_LB | awk -F= '$2 > 0' | wc -l)
((busy >= 3)) || die "after scaling: receivers reached only $busy fanout replicas ($CHECK_LB)"
log "receivers were spread over $busy fanout replicas"

log "check 3: killing a NATS node"
# Which relay processes use which NATS node: /connz client IPs, mapped to
# the ingest and fanout containers. The victim is the node serving the most
# fanout connections (then ingest), so the kill really cuts receivers off.
declare -A role_of=()
relay_procs=0
for svc in ingest fanout; do
	for c in $(dc ps -q "$svc"); do
		role_of[$(ip_of "$c")]=$svc
		relay_procs=$((relay_procs + 1))
	done
done
# relay_conns NODE: "INGEST FANOUT" relay connections on that node.
relay_conns() {
	local ip ni=0 nf=0
	for ip in $(curl -fsS --max-time 5 "http://$(ip_of "$(cid "$1")"):8222/connz?limit=1000" |
		grep -o '"ip": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'); do
		case ${role_of[$ip]:-} in
		ingest) ni=$((ni + 1)) ;;
		fanout) nf=$((nf + 1)) ;;
		esac
	done
	echo "$ni $nf"
}
victim="" best=-1 victim_conns=""
for n in nats-1 nats-2 nats-3; do
	read -r ni nf < <(relay_conns "$n")
	log "$n: $ni ingest and $nf fanout connections"
	if ((nf * 100 + ni > best)); then
		best=$((nf * 100 + ni))
		victim=$n
		victim_conns="$ni ingest, $nf fanout"
	fi
done
survivors=()
for n in nats-1 nats-2 nats-3; do [[ $n == "$victim" ]] || survivors+=("$n"); done

# While a stream is flowing: informational. Core NATS is at-most-once:
# messages in flight through the dead node may be lost, and receivers of a
# fanout replica that lost its NATS connection are closed (1012) rather than
# left with a silent gap. The line says how it went.
fo_ch=ct.$run_id.failover fo_n=2000
start_watchers "$fo_ch" 4 failover
fo_files=("$WORK"/failover.w1 "$WORK"/failover.w2 "$WORK"/failover.w3 "$WORK"/failover.w4)
await_probe "send_handshake $fo_ch" "${fo_files[@]}"
(
	for ((b = 0; b < 40; b++)); do
		for ((i = 1; i <= 50; i++)); do printf 'msg failover 1 %d\n' $((b * 50 + i)); done
		sleep 0.1
	done
) | send_handshake "$fo_ch" >"$WORK/failover.s1.log" 2>&1 &
fo_sender=$!
sleep 1
timeout 60 docker kill -s KILL "$(cid "$victim")" >/dev/null
killed_at=$SECONDS
log "killed $victim (SIGKILL) while streaming; it served $victim_conns connections"
wait "$fo_sender" || log "failover sender: $(tail -n 2 "$WORK/failover.s1.log")"
# Wait until every receiver has everything, or nothing new arrived for 3s.
deadline=$((SECONDS + WAIT)) last=-1 still=0
while ((SECONDS < deadline)); do
	now=$(cat "${fo_files[@]}" | grep -c '^msg failover ' || true)
	((now >= 4 * fo_n)) && break
	if ((now == last)); then still=$((still + 1)); else still=0; fi
	((still >= 6)) && break
	last=$now
	sleep 0.5
done
# Receivers whose fanout lost NATS are closed with 1012 by design
# (RELAY_FANOUT_CLOSE_ON_NATS_LOSS), so they know they may have missed
# messages; the others should have seen the whole stream.
fo_kept="" fo_closed="" fo_codes="" fo_min=$fo_n nkept=0 nclosed=0
for f in "${fo_files[@]}"; do
	got=$(grep '^msg failover ' "$f" | sort -u | wc -l)
	if grep -q 'closed by server' "$f.err" 2>/dev/null; then
		nclosed=$((nclosed + 1))
		fo_closed+="$got, "
		fo_codes+="$(grep -o 'closed by server: [0-9]*' "$f.err" | head -n 1 | awk '{print $4}') "
	else
		nkept=$((nkept + 1))
		fo_kept+="$got "
		((got < fo_min)) && fo_min=$got
	fi
done
if ((nkept > 0)); then
	fo_line=$(printf 'during NATS node kill (informational): sent %d, %d receivers stayed connected: received %d lost %d' "$fo_n" "$nkept" "$fo_min" "$((fo_n - fo_min))")
else
	fo_line=$(printf 'during NATS node kill (informational): sent %d, no receiver stayed connected' "$fo_n")
fi
((nclosed == 0)) || fo_line+=$(printf '; %d closed by relay (code %s) after %s messages' "$nclosed" \
	"$(printf '%s\n' $fo_codes | sort -u | paste -sd/)" "${fo_closed%, }")
log "$fo_line  [stayed connected, each received: ${fo_kept% }]"
results+=("$fo_line")
stop_watchers

# Every relay process must be back on a surviving node.
deadline=$((SECONDS + WAIT))
while :; do
	total=0
	for n in "${survivors[@]}"; do
		read -r ni nf < <(relay_conns "$n")
		total=$((total + ni + nf))
	done
	((total >= relay_procs)) && break
	((SECONDS < deadline)) || die "only $total of $relay_procs relay processes reconnected to ${survivors[*]}"
	sleep 1
done
log "all $relay_procs relay processes are connected to ${survivors[*]} ($((SECONDS - killed_at))s after the kill)"
check "after NATS node kill" 4
check_durable "durable channel after NATS node kill" "${survivors[0]}"

log "RESULTS (${COMPOSE[*]}):"
for r in "${results[@]}"; do log "  $r"; done
log "PASS"
