#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this): prepares the
# machine, checks formatting and lints, checks the pcap fixtures with tshark,
# then builds and runs every test under cargo-nextest (one process per test,
# because DPDK's EAL initialises once per process).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== fixtures: tshark dissects them as the manifest says"
pcap-fixtures/check.sh
echo "== clippy (workspace lints, -D warnings)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
cargo nextest run --workspace --no-fail-fast "$@"
