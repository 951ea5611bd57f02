#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this): prepares the
# machine, checks formatting and lints, checks the pcap fixtures with tshark,
# then builds and runs every test under cargo-nextest (one process per test,
# because DPDK's EAL initialises once per process), and finally runs the
# OVN scenarios of tests/ovn-scenarios through petreld + petrel-ovn against
# ovn-trace (scripts/ovn-diff.sh) and the multi-node Geneve overlay
# (scripts/overlay-test.sh).
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
rc=0
cargo nextest run --workspace --no-fail-fast "$@" || rc=$?
echo "== ovn-diff: tests/ovn-scenarios, packet by packet against ovn-trace"
cargo build --quiet --bins -p petrel-dataplane -p petrel-control
scripts/ovn-diff.sh tests/ovn-scenarios || rc=$?
echo "== overlay: Petrel chassis over Geneve under one OVN Southbound"
scripts/overlay-test.sh || rc=$?
exit "$rc"
