#!/usr/bin/env bash
# Builds the Kubernetes binaries the lab runs (control plane, kubelet,
# kube-scheduler, kube-proxy, kubectl, agnhost) and Kubernetes' e2e suite
# (e2e.test and its runner ginkgo) into OUT (default: the
# git-ignored .cache/k8s/<version>/ at the repository root), only those that
# are missing. Usage: test/k8s/build.sh [OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=v1.37.2
out=${1:-$here/../../.cache/k8s/$version}
mkdir -p "$out"
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for kv in gitVersion=$version gitMajor=$major gitMinor=$minor gitTreeState=clean buildDate=2026-01-01T00:00:00Z; do
  ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done
cd "$here"
# The control plane and the node binaries, then agnhost (the e2e suite's
# test server, baked into the lab's images with CGO off).
for pkg in cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-proxy cmd/kubectl \
  cmd/kube-scheduler cmd/kubelet test/images/agnhost; do
  cmd=${pkg##*/}
  if [ -x "$out/$cmd" ]; then continue; fi
  echo "building $cmd $version into $out" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$cmd.tmp.$$" "k8s.io/kubernetes/$pkg"
  mv "$out/$cmd.tmp.$$" "$out/$cmd"
done
# Kubernetes' own e2e suite, as upstream builds it (go test -c of
# test/e2e), and the ginkgo runner at the version the suite uses.
if [ ! -x "$out/e2e.test" ]; then
  echo "building e2e.test $version into $out" >&2
  CGO_ENABLED=0 go test -c -trimpath -ldflags "$ldflags" -o "$out/e2e.test.tmp.$$" k8s.io/kubernetes/test/e2e
  mv "$out/e2e.test.tmp.$$" "$out/e2e.test"
fi
if [ ! -x "$out/ginkgo" ]; then
  echo "building ginkgo into $out" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/ginkgo.tmp.$$" github.com/onsi/ginkgo/v2/ginkgo
  mv "$out/ginkgo.tmp.$$" "$out/ginkgo"
fi
