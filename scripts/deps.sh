#!/usr/bin/env bash
# Installs the Debian packages rnet's tests, demo and benchmark use.
# Idempotent; needs root. Nothing is downloaded outside Debian's archive.
set -euo pipefail
pkgs=(iproute2 nftables iptables podman golang-go golang-github-appc-cni-dev iputils-ping containernetworking-plugins busybox-static conntrack dnsperf dnsmasq-base aardvark-dns iperf3 time python3 util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
