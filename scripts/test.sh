#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the root-only lab tests.
# Run as root (the lab tests build throwaway network namespaces; nothing touches
# the machine's own network). A lab test that cannot run fails; none is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the lab tests need root (network namespaces); run it as root" >&2
  exit 1
fi
scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The lab tests run the real plugin executables: build them first.
cargo build --workspace --bins
RNET_BIN_DIR="$PWD/target/debug" cargo test --workspace -- --test-threads=2
# The lab tests again against the release executables that README's first
# command installs into bin/ (plugins linked against musl when available):
# what users run is what is tested.
scripts/build.sh
RNET_BIN_DIR="$PWD/bin" cargo test -p rnet-integration -- --test-threads=2
# Bounded fuzzing of every parser (issue #10): 15 targets, RNET_FUZZ_SECONDS each.
scripts/fuzz.sh
