#!/usr/bin/env bash
# Release build of every rnet executable, statically linked, into ./bin.
#
# - The CNI plugins (executed once per container and command, so their start
#   is on every runtime's critical path) are linked against musl when the
#   Rust target x86_64-unknown-linux-musl (or the host's musl equivalent) is
#   installed or can be added with rustup: a plugin starts in about half the
#   time of the glibc build. glibc's start-up probes the CPU's caches and
#   features with dozens of `cpuid` instructions, each a trap to the
#   hypervisor on a VM, and Rust's runtime reads /proc/self/maps; musl does
#   neither (BENCHMARKS.md, section 1). Set RNET_PLUGIN_LIBC=gnu to opt out.
# - The long-running or interactive programs (rnet, rnet-dns, rnet-bench) stay
#   on glibc (static-pie): glibc's allocator serves rnet-dns's many threads
#   better than musl's.
#
# Both are static-pie: no dynamic loader at start (a dynamically linked plugin
# starts about 0.25 ms slower) and the binaries run on any Linux of the same
# architecture. The executables are copied into bin/, one directory, so that
# each finds the others beside itself.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
# The plugins' packages and their executables.
plugin_pkgs=(rnet-none rnet-host rnet-bridge rnet-ipam-plugin rnet-portmap rnet-dnsname rnet-firewall rnet-tuning)
plugin_bins=(rnet-none rnet-host rnet-bridge rnet-ipam rnet-portmap rnet-dnsname rnet-firewall rnet-tuning)

# With an explicit --target, RUSTFLAGS reach only the target's artifacts, not
# build scripts and proc macros (which must stay dynamic).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --target "$host" --workspace --bins
gnu_out="target/$host/release"

musl=${host/-gnu/-musl}
plugin_out="$gnu_out"
if [ "${RNET_PLUGIN_LIBC:-musl}" = musl ] && [ "$musl" != "$host" ]; then
  if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    echo "build.sh: adding the Rust target $musl for the plugins" >&2
    timeout 300 rustup target add "$musl" >&2 || true
  fi
  if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    args=()
    for p in "${plugin_pkgs[@]}"; do args+=(-p "$p"); done
    cargo build --release --target "$musl" "${args[@]}" --bins
    plugin_out="target/$musl/release"
  else
    echo "build.sh: the Rust target $musl is not available (no rustup, or offline):" \
      "the plugins are built against glibc and start about 0.3 ms slower" >&2
  fi
fi

mkdir -p bin
# Copies, not links: a program finds its siblings beside its resolved path.
install_bin() {
  local f=$1
  [ -f "$f" ] && [ -x "$f" ] || return 0
  local dst
  dst="bin/$(basename "$f")"
  rm -f "$dst"
  cp "$f" "$dst.tmp.$$" && mv "$dst.tmp.$$" "$dst"
}
for f in "$gnu_out"/*; do install_bin "$f"; done
if [ "$plugin_out" != "$gnu_out" ]; then
  for b in "${plugin_bins[@]}"; do install_bin "$plugin_out/$b"; done
fi
echo "built into $gnu_out (plugins: $plugin_out); copied into bin/"
