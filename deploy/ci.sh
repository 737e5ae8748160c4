#!/usr/bin/env bash
# Deployment checks, called by .ci/run (and runnable by hand):
#   1. helm lint --strict and helm template of deploy/helm/relay
#   2. the manifest test module (deploy/manifests-test): strict decoding of
#      k8s/ and the rendered chart, invariants, values vs relay's config
#   3. deploy/compose-test.sh: the compose cluster, live and offline, once
#      with Debian's docker-compose (v1) and once with docker compose v2
#
#   deploy/ci.sh                  # everything
#   deploy/ci.sh helm manifests   # a subset; steps: helm manifests compose
#                                 # (= compose-v1 compose-v2)
#
# Works on a fresh Debian machine as root with only the Go module proxy and
# Debian's archive reachable, and a Docker engine that has no images: helm
# and compose v2 are built from their Go modules (pinned below) into a cache
# outside the work tree, haproxy, busybox-static, curl, ca-certificates (and
# docker-compose if missing) come from apt, every image is built locally.
# Exits non-zero if any step fails; every step runs regardless, so one CI
# run reports everything.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

HELM_VERSION=v3.22.0
# Compose v2 for the second compose run when the docker CLI lacks the plugin
# (Debian bookworm packages only v1): built from its Go module, installed as
# a CLI plugin in a private DOCKER_CONFIG so the machine's docker is untouched.
COMPOSE_V2_VERSION=v2.28.1
# The cluster version helm renders for (the chart needs >= 1.30).
KUBE_VERSION=1.31.0
TOOLS=${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/relay-deploy-tools}

steps=()
for s in "${@:-helm manifests compose}"; do
	for s in $s; do
		case $s in
		helm | manifests | compose-v1 | compose-v2) steps+=("$s") ;;
		compose) steps+=(compose-v1 compose-v2) ;;
		*)
			echo "usage: deploy/ci.sh [helm] [manifests] [compose | compose-v1 | compose-v2]" >&2
			exit 2
			;;
		esac
	done
done
want() { [[ " ${steps[*]} " == *" $1 "* ]]; }

log() { printf '%s deploy/ci: %s\n' "$(date +%H:%M:%S)" "$*"; }

# ------------------------------------------------------------ prerequisites
command -v go >/dev/null || {
	log "go not found"
	exit 1
}

apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	if ((EUID != 0)); then
		log "missing Debian packages: ${missing[*]} (run as root, or apt-get install them)"
		return 1
	fi
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	timeout 600 apt-get update -qq
	timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# helm from its Go module, cached per version outside the work tree.
HELM=$TOOLS/helm-$HELM_VERSION/helm
install_helm() {
	[[ -x $HELM ]] && return 0
	log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	mkdir -p "$(dirname "$HELM")"
	GOBIN=$(dirname "$HELM") GOFLAGS=-mod=mod timeout 1200 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

if want helm || want manifests; then
	install_helm
	export HELM
fi
# Compose v2 as a docker CLI plugin: the machine's own if it has one.
COMPOSE_V2_CONFIG=""
install_compose_v2() {
	docker compose version >/dev/null 2>&1 && return 0
	local dir=$TOOLS/compose-$COMPOSE_V2_VERSION
	if [[ ! -x $dir/docker-config/cli-plugins/docker-compose ]]; then
		log "go install github.com/docker/compose/v2/cmd@$COMPOSE_V2_VERSION"
		mkdir -p "$dir/bin" "$dir/docker-config/cli-plugins"
		GOBIN=$dir/bin GOFLAGS=-mod=mod timeout 1800 go install "github.com/docker/compose/v2/cmd@$COMPOSE_V2_VERSION" || return 1
		mv "$dir/bin/cmd" "$dir/docker-config/cli-plugins/docker-compose" || return 1
	fi
	COMPOSE_V2_CONFIG=$dir/docker-config
}

if want compose-v1 || want compose-v2; then
	apt_install haproxy busybox-static curl ca-certificates
	if want compose-v1 && ! command -v docker-compose >/dev/null; then apt_install docker-compose; fi
	command -v docker >/dev/null || {
		log "docker not found"
		exit 1
	}
	timeout 30 docker info >/dev/null || {
		log "the Docker engine is not reachable"
		exit 1
	}
fi

# ------------------------------------------------------------ steps
failed=()
passed=()
step() {
	local name=$1
	shift
	log "== $name"
	local t0=$SECONDS
	if "$@"; then
		passed+=("$name")
		log "== $name: ok ($((SECONDS - t0))s)"
	else
		failed+=("$name")
		log "== $name: FAILED ($((SECONDS - t0))s)"
	fi
}

helm_checks() {
	# auth.mode=jwt (the default) needs a key Secret and handshake-only (or
	# ;public) listeners: lint both ways.
	local jwt=(--set auth.existingSecret=relay-auth --set 'config.ingest.RELAY_INGEST_LISTENERS=:7071=*/line')
	"$HELM" lint --strict --kube-version "$KUBE_VERSION" deploy/helm/relay "${jwt[@]}" || return 1
	"$HELM" lint --strict --kube-version "$KUBE_VERSION" deploy/helm/relay --set auth.mode=off || return 1
	if "$HELM" template relay deploy/helm/relay --kube-version "$KUBE_VERSION" >/dev/null 2>&1; then
		log "helm template without an auth key rendered; it must refuse"
		return 1
	fi
	local out
	out=$(mktemp)
	"$HELM" template relay deploy/helm/relay --kube-version "$KUBE_VERSION" "${jwt[@]}" >"$out" || {
		rm -f "$out"
		return 1
	}
	log "helm template: $(grep -c '^kind:' "$out") objects: $(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}' | sed 's/, $//')"
	rm -f "$out"
}

manifest_tests() {
	(cd deploy/manifests-test && timeout 900 go test -count=1 -v ./...)
}

compose_v1() {
	COMPOSE_CMD=docker-compose timeout 1200 deploy/compose-test.sh
}

compose_v2() {
	install_compose_v2 || return 1
	if [[ -n $COMPOSE_V2_CONFIG ]]; then
		DOCKER_CONFIG=$COMPOSE_V2_CONFIG COMPOSE_CMD="docker compose" timeout 1200 deploy/compose-test.sh
	else
		COMPOSE_CMD="docker compose" timeout 1200 deploy/compose-test.sh
	fi
}

want helm && step "helm lint + template" helm_checks
want manifests && step "manifest tests" manifest_tests
want compose-v1 && step "compose test (docker-compose v1)" compose_v1
want compose-v2 && step "compose test (docker compose v2)" compose_v2

log "passed: ${passed[*]:-none}"
if ((${#failed[@]})); then
	log "FAILED: ${failed[*]}"
	exit 1
fi
log "all deployment checks passed"
