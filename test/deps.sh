#!/usr/bin/env bash
# Installs the Debian packages weft's tests, lab and benchmarks use, only those
# that are missing. Needs root (apt-get).
set -euo pipefail
pkgs=(iproute2 iptables ipset nftables iputils-ping iperf3 tcpdump conntrack
  etcd-server frr bird2 containernetworking-plugins curl bind9-dnsutils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The lab starts FRR and BIRD itself, inside namespaces; the packages' own
# services are not wanted in the root namespace.
for s in frr bird etcd; do
  systemctl disable --now "$s" >/dev/null 2>&1 || true
done
