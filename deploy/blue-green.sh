#!/usr/bin/env bash
# Blue-green deployment of semaflow's gateway on Kubernetes (the manifests in deploy/k8s/).
#
#   deploy/blue-green.sh deploy TAG   deploy the gateway image TAG on the idle track, wait for its
#                                     rollout, smoke-test it through its own Service, then switch
#                                     the live `gateway` Service to it. The previous track keeps
#                                     running for a rollback. A failed rollout or smoke test
#                                     deletes the new track and leaves the live one as it was (exit 1).
#   deploy/blue-green.sh rollback     switch the live Service back to the other track (kept by deploy).
#   deploy/blue-green.sh status       which track is live, and the gateway Deployments.
#   deploy/blue-green.sh render TRACK IMAGE   print a track's gateway Deployment, HorizontalPodAutoscaler
#                                     and PodDisruptionBudget (no cluster needed).
#
# Environment:
#   SEMAFLOW_SMOKE_API_KEY   a writer (or admin) key for the smoke test (required by deploy)
#   SEMAFLOW_NAMESPACE       namespace (default semaflow)
#   SEMAFLOW_GATEWAY_IMAGE   image repository of the gateway (default semaflow/gateway)
#   SEMAFLOW_ROLLOUT_TIMEOUT how long to wait for the rollout (default 300s)
#   SEMAFLOW_SMOKE_URL       reach the new track here instead of through `kubectl port-forward`;
#                            "{track}" is replaced by the track (e.g. http://gateway-{track}.semaflow:8080)
#   SEMAFLOW_SMOKE_PORT      local port for the port-forward (default 18080)
#   PYTHON                   the Python that runs deploy/smoke.py (default python3)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
namespace=${SEMAFLOW_NAMESPACE:-semaflow}
manifest=${SEMAFLOW_GATEWAY_MANIFEST:-$here/k8s/30-gateway.yaml}
repository=${SEMAFLOW_GATEWAY_IMAGE:-semaflow/gateway}
rollout_timeout=${SEMAFLOW_ROLLOUT_TIMEOUT:-300s}
smoke_port=${SEMAFLOW_SMOKE_PORT:-18080}
python=${PYTHON:-python3}

log() { printf 'blue-green: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}
kc() { kubectl --namespace "$namespace" "$@"; }

other() {
  case $1 in
    blue) echo green ;;
    green) echo blue ;;
    *) die "unknown track '$1' (blue or green)" ;;
  esac
}

live_track() {
  local track
  track=$(kc get service gateway -o 'jsonpath={.spec.selector.track}') || die "cannot read the gateway Service"
  [ -n "$track" ] || die "the gateway Service selects no track (apply deploy/k8s/ first)"
  other "$track" >/dev/null
  printf '%s\n' "$track"
}

# The blue manifest with the Deployment's name, its track label and its image replaced.
render() {
  local track=$1 image=$2
  other "$track" >/dev/null
  sed -e "s/gateway-blue/gateway-$track/g" \
    -e "s/track: blue/track: $track/g" \
    -e "s|image: semaflow/gateway:.*|image: $image|" \
    "$manifest"
}

switch_to() {
  kc patch service gateway --type merge -p "{\"spec\":{\"selector\":{\"track\":\"$1\"}}}" >/dev/null
}

# Run deploy/smoke.py against a track's own Service; its exit status is the smoke test's.
smoke() {
  local track=$1 key=${SEMAFLOW_SMOKE_API_KEY:?set SEMAFLOW_SMOKE_API_KEY to a writer key for the smoke test}
  if [ -n "${SEMAFLOW_SMOKE_URL:-}" ]; then
    "$python" "$here/smoke.py" "${SEMAFLOW_SMOKE_URL//\{track\}/$track}" "$key"
    return
  fi
  local forward_log status=0 forward
  forward_log=$(mktemp)
  # kubectl itself in the background (not through kc, whose subshell would be what $! names and
  # what kill stops, leaving the forward running).
  kubectl --namespace "$namespace" port-forward "service/gateway-$track" "$smoke_port:8080" >"$forward_log" 2>&1 &
  forward=$!
  # Wait for the forward to accept connections (or to die).
  for _ in $(seq 1 100); do
    if ! kill -0 "$forward" 2>/dev/null; then
      log "kubectl port-forward ended: $(cat "$forward_log")"
      rm -f "$forward_log"
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$smoke_port") 2>/dev/null; then break; fi
    sleep 0.2
  done
  "$python" "$here/smoke.py" "http://127.0.0.1:$smoke_port" "$key" || status=$?
  kill "$forward" 2>/dev/null || true
  wait "$forward" 2>/dev/null || true
  rm -f "$forward_log"
  return "$status"
}

# Remove a track that failed (its Deployment, autoscaler and disruption budget), leaving the live
# one alone, and fail.
abandon() {
  local track=$1 live=$2 why=$3
  log "$why: deleting gateway-$track; $live stays live"
  kc delete deployment,horizontalpodautoscaler,poddisruptionbudget "gateway-$track" --ignore-not-found >/dev/null
  exit 1
}

deploy() {
  local tag=$1 live idle image
  [ -n "$tag" ] || die "usage: $0 deploy TAG"
  : "${SEMAFLOW_SMOKE_API_KEY:?set SEMAFLOW_SMOKE_API_KEY to a writer key for the smoke test}"
  live=$(live_track)
  idle=$(other "$live")
  image="$repository:$tag"
  log "live: $live; deploying $image on $idle"
  render "$idle" "$image" | kc apply -f - >/dev/null
  kc rollout status "deployment/gateway-$idle" --timeout "$rollout_timeout" >&2 || abandon "$idle" "$live" "rollout failed"
  smoke "$idle" || abandon "$idle" "$live" "smoke test failed"
  switch_to "$idle"
  log "$idle is live ($image); $live is kept for rollback: $0 rollback"
}

rollback() {
  local live previous
  live=$(live_track)
  previous=$(other "$live")
  kc get deployment "gateway-$previous" >/dev/null 2>&1 || die "no gateway-$previous to roll back to"
  kc rollout status "deployment/gateway-$previous" --timeout "$rollout_timeout" >&2 \
    || die "gateway-$previous is not ready; $live stays live"
  switch_to "$previous"
  log "$previous is live again; $live is kept"
}

status() {
  printf 'live: %s\n' "$(live_track)"
  kc get deployments -l app.kubernetes.io/name=semaflow-gateway -L track
}

case ${1:-} in
  deploy) deploy "${2:-}" ;;
  rollback) rollback ;;
  status) status ;;
  render)
    [ $# -eq 3 ] || die "usage: $0 render TRACK IMAGE"
    render "$2" "$3"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
