#!/usr/bin/env bash
# Install everything netoken needs to build, test and run its demo on Debian 12, as root:
# the BPF toolchain and libbpf, packet tools, and the npm dependencies.
#
# Usage: bash scripts/install-deps.sh [--build-only]
#   --build-only  only what scripts/build.sh needs (the Dockerfile's build stage): none of the
#                 packages that only the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=0
case "${1:-}" in
  "") ;;
  --build-only) build_only=1 ;;
  -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
  *) echo "install-deps: unknown argument '$1' (want --build-only)" >&2; exit 2 ;;
esac

APT_PACKAGES=(clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool tcpdump ethtool iproute2 linux-libc-dev
              pkg-config cmake make g++ openssl git ca-certificates)
# The tests' single-node Kubernetes (test/k8s/node.ts) and the image they build from the
# Dockerfile: the container runtime and its CNI plugins, the iptables that the kubelet and
# kube-proxy program, buildah to build the image without a Docker daemon, and debootstrap to
# make its Debian base image without a registry (test/k8s/build-tools.sh); gcc and the static
# C library for the pod sandbox (pause) image.
# faketime: the clock-skew test runs a marker whose wall clock is off (libfaketime).
TEST_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack buildah debootstrap util-linux gcc libc6-dev
               faketime)
((build_only)) || APT_PACKAGES+=("${TEST_PACKAGES[@]}")

# Node.js 20+ with npm is a prerequisite (Debian 12's own nodejs is 18: too old).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install-deps: Node.js >= 20.17 with npm is required (node and npm not found on PATH)" >&2
  exit 1
fi
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=17)?0:1)' || {
  echo "install-deps: Node.js >= 20.17 is required, found $(node --version)" >&2; exit 1; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> apt-get install ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "install-deps: run as root to install packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "==> system packages present"
fi

# The addon is a Node-API module (native/package.json): cmake-js compiles it against the
# node-api-headers package from node_modules, so no Node headers are needed or downloaded.
export npm_config_nodedir=/usr

echo "==> npm ci"
npm ci --no-audit --no-fund --loglevel=error
# npm can crash without a failing exit status ("Exit handler never called!", e.g. when TLS to the
# registry fails): check that it installed the lock file's packages.
if [[ ! -f node_modules/.package-lock.json ]]; then
  echo "install-deps: npm ci did not install node_modules (see npm's output above; behind a TLS-intercepting proxy, npm needs its CA: NODE_EXTRA_CA_CERTS)" >&2
  exit 1
fi
