#!/usr/bin/env bash
# README's first command: builds svcnet and runs `svcnet demo` — the embedded API server,
# svcnet-controller, a 2-node cluster made of network namespaces with one svcnet-proxy per
# node, the example Services (examples/services.yaml), and a report of what happened.
#
# As root (the full demo): installs nftables, iproute2, conntrack, dig and nsd (the demo's fake
# upstream DNS server) when missing.
# Without root: runs the control-plane half and prints the ruleset instead of sending traffic.
# Extra arguments go to `svcnet demo` (e.g. --json). Exits non-zero when a demo step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  missing=()
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
  command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
  command -v nsd >/dev/null 2>&1 || missing+=(nsd)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/demo.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
else
  echo "scripts/demo.sh: not root — the demo will run the control plane only (no network namespaces, no traffic)" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/demo.sh: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi

echo "scripts/demo.sh: building svcnet, svcnet-controller, svcnet-proxy, svcnet-dns, svcnet-echo (release)" >&2
cargo build --release --locked \
  -p svcnet-cli --bin svcnet -p svcnet-testkit --bin svcnet-echo \
  -p svcnet-controllers --bin svcnet-controller \
  -p svcnet-dataplane --bin svcnet-proxy \
  -p svcnet-dns --bin svcnet-dns

exec target/release/svcnet demo "$@"
