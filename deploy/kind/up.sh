#!/usr/bin/env bash
# Creates a kind cluster running weft (run through `make kind-up`).
#   deploy/kind/up.sh check   only checks that Docker, kind and kubectl are usable
#   deploy/kind/up.sh         creates the cluster (or reuses it), loads the image, applies weft
# Environment: KIND (kind binary), KIND_CLUSTER (name, default weft),
# IMAGE_TAR (default bin/weft-image.tar, built by make image), KUBECTL.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kind=${KIND:-kind}
cluster=${KIND_CLUSTER:-weft}
archive=${IMAGE_TAR:-$root/bin/weft-image.tar}

fail() { echo "kind-up: $*" >&2; exit 1; }
command -v docker >/dev/null 2>&1 ||
  fail "docker not found: kind runs its nodes as Docker containers (install Docker; without it, use the netns lab: make demo)"
docker info >/dev/null 2>&1 ||
  fail "docker is installed but the Docker engine is not reachable (is dockerd running? may this user use it?)"
command -v "$kind" >/dev/null 2>&1 ||
  fail "kind not found (go install sigs.k8s.io/kind@v0.33.0, or make kind-up KIND=/path/to/kind)"
kubectl=${KUBECTL:-kubectl}
if ! command -v "$kubectl" >/dev/null 2>&1; then kubectl="$root/.cache/k8s/v1.37.2/kubectl"; fi
[ -x "$(command -v "$kubectl")" ] || fail "kubectl not found (install it, or run make k8s)"
[ "${1:-}" = check ] && exit 0
[ -f "$archive" ] || fail "image archive $archive missing (make image)"

if "$kind" get clusters | grep -qx "$cluster"; then
  echo "kind-up: cluster $cluster exists; loading the image and applying weft again" >&2
else
  "$kind" create cluster --name "$cluster" --config "$here/kind-config.yaml"
fi
"$kind" load image-archive "$archive" --name "$cluster"
ctx="kind-$cluster"
"$kubectl" --context "$ctx" apply -f "$root/deploy/weft.yaml"
"$kubectl" --context "$ctx" -n kube-system rollout status daemonset/weft-agent --timeout=5m
"$kubectl" --context "$ctx" wait --for=condition=Ready nodes --all --timeout=5m
"$kubectl" --context "$ctx" get nodes -o wide
