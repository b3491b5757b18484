#!/usr/bin/env bash
# Bounded fuzzing of every parser (issue #10): builds the cargo-fuzz targets
# in fuzz/ and runs each for RNET_FUZZ_SECONDS (default 20) from its committed
# seed corpus (fuzz/corpus/<target>, read-only: new inputs go to a scratch
# directory). Fails on any crash, panic, failed invariant or timeout, and
# names the reproducer. Needs the nightly toolchain (libFuzzer's
# instrumentation) and cargo-fuzz; installs either when missing. No root
# needed; the targets touch no network. About 4 minutes on 2 cores with the
# default 20 s per target (the build takes 2-3 of them when cold).
#
#   scripts/fuzz.sh                 every target
#   scripts/fuzz.sh dns_wire ...    only these
#
# Environment: RNET_FUZZ_SECONDS (per target), RNET_FUZZ_JOBS (targets run at
# once, default: number of CPUs), RNET_FUZZ_TARGET_DIR (build directory,
# default fuzz/target), RNET_FUZZ_KEEP (keep the scratch corpora and logs),
# RNET_FUZZ_SEED (libFuzzer's -seed, default 1; 0 = random).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${RNET_FUZZ_SECONDS:-20}"
# A fixed seed by default, so a CI run explores (nearly) what the last one did
# and a failure can be replayed; RNET_FUZZ_SEED=0 asks libFuzzer for a random
# one (exploratory runs).
seed="${RNET_FUZZ_SEED:-1}"
jobs="${RNET_FUZZ_JOBS:-$(nproc)}"
target_dir="${RNET_FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
toolchain="${RNET_FUZZ_TOOLCHAIN:-nightly}"

if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: installing the $toolchain toolchain" >&2
  rustup toolchain install "$toolchain" --profile minimal || {
    echo "scripts/fuzz.sh: the $toolchain toolchain is missing and could not be installed" >&2
    exit 1
  }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cd fuzz
mapfile -t all < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^rnet-fuzz$')
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

# Safe Rust: panics are the bugs sought, so no sanitizer (more executions per
# second); debug assertions and overflow checks stay on (cargo-fuzz default).
echo "== building ${#targets[@]} fuzz target(s)"
build_args=()
if [ "${#targets[@]}" -eq 1 ]; then build_args=("${targets[0]}"); fi
cargo "+$toolchain" fuzz build --sanitizer none --target-dir "$target_dir" "${build_args[@]}"
triple="$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"

# On tmpfs when there is one: ipam_lease_store writes files on every input.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm="${TMPDIR:-/tmp}"
scratch="$(mktemp -d "$shm/rnet-fuzz.XXXXXX")"
export RNET_FUZZ_SCRATCH="$scratch"
if [ -z "${RNET_FUZZ_KEEP:-}" ]; then trap 'rm -rf "$scratch"' EXIT; fi
mkdir -p artifacts

run_one() {
  local t="$1"
  mkdir -p "$scratch/$t" "artifacts/$t" "corpus/$t"
  # -timeout: one input taking longer than 10 s is a hang (a bug, too).
  # -rss_limit_mb: unbounded memory growth is a bug as well.
  "$bin_dir/$t" "$scratch/$t" "corpus/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -seed="$seed" \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
    >"$scratch/$t.log" 2>&1
}

failed=()
summary=()
pids=()
names=()
wait_one() {
  local pid="$1" t="$2"
  if wait "$pid"; then
    local execs
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -1)"
    local cov
    cov="$(grep -o 'cov: [0-9]*' "$scratch/$t.log" | tail -1 | cut -d' ' -f2)"
    summary+=("$(printf '%-18s %10s execs  cov %s' "$t" "${execs:-?}" "${cov:-?}")")
  else
    failed+=("$t")
    echo "== $t FAILED; log:" >&2
    grep -v '^#[0-9]' "$scratch/$t.log" | tail -60 >&2
    ls -1 "artifacts/$t" | sed "s|^|   reproducer: fuzz/artifacts/$t/|" >&2
    echo "   replay: cd fuzz && cargo +$toolchain fuzz run --sanitizer none $t artifacts/$t/<file>" >&2
  fi
}

echo "== running each target for ${seconds}s, $jobs at a time"
for t in "${targets[@]}"; do
  if [ ! -x "$bin_dir/$t" ]; then
    echo "scripts/fuzz.sh: unknown target $t (known: ${all[*]})" >&2
    exit 2
  fi
  run_one "$t" &
  pids+=("$!")
  names+=("$t")
  if [ "${#pids[@]}" -ge "$jobs" ]; then
    wait_one "${pids[0]}" "${names[0]}"
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
while [ "${#pids[@]}" -gt 0 ]; do
  wait_one "${pids[0]}" "${names[0]}"
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
done

printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "scripts/fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "== fuzzing: ${#targets[@]} targets, no crash"
