#!/usr/bin/env bash
# Builds what the lab's real nodes run besides Kubernetes into OUT (default:
# the git-ignored .cache/runtime/ at the repository root), only what is
# missing: containerd v2 with its runc shim and ctr, and CoreDNS, static (no
# cgo) from this module; runc and containerd 1.6 from Debian's packages,
# unpacked into OUT without installing them on the host.
# Usage: test/runtime/build.sh [OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../.cache/runtime}
mkdir -p "$out"
cd "$here"
ver() { go list -m -f '{{.Version}}' "$1"; }
ctrd=$(ver github.com/containerd/containerd/v2)
coredns=$(ver github.com/coredns/coredns)
build() { # name package ldflags [tags]
  [ -x "$out/$1" ] && return 0
  echo "building $1 into $out" >&2
  CGO_ENABLED=0 go build -trimpath -tags "${4:-}" -ldflags "-s -w $3" -o "$out/$1.tmp.$$" "$2"
  mv "$out/$1.tmp.$$" "$out/$1"
}
cv="-X github.com/containerd/containerd/v2/version.Version=$ctrd"
build containerd github.com/containerd/containerd/v2/cmd/containerd "$cv" "no_btrfs no_devmapper no_zfs"
build containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 "$cv"
build ctr github.com/containerd/containerd/v2/cmd/ctr "$cv" "no_btrfs no_devmapper no_zfs"
build coredns github.com/coredns/coredns "-X github.com/coredns/coredns/coremain.GitCommit=$coredns"

# Debian's runc (every node), containerd 1.6 (the runtime of many kubeadm
# nodes; the lab can run it instead of v2) and the busybox and netcat the
# test images are made of: unpacked, never installed.
debs=(runc containerd busybox-static netcat-openbsd)
if [ ! -x "$out/deb/usr/sbin/runc" ] || [ ! -x "$out/deb/usr/bin/containerd" ] || [ ! -x "$out/deb/bin/busybox" ] || [ ! -x "$out/deb/bin/nc.openbsd" ]; then
  echo "unpacking Debian packages ${debs[*]} into $out/deb" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  ( cd "$tmp" && { apt-get download "${debs[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "${debs[@]}" >/dev/null; }; } )
  rm -rf "$out/deb"
  for f in "$tmp"/*.deb; do dpkg-deb -x "$f" "$out/deb"; done
fi
