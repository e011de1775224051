#!/usr/bin/env bash
# Install everything netoken needs to build, test and run its demo on Debian 12, as root:
# the BPF toolchain and libbpf, packet tools, and the npm dependencies (offline node headers).
set -euo pipefail
cd "$(dirname "$0")/.."

# faketime: the clock-skew test runs a marker whose wall clock is off (libfaketime).
APT_PACKAGES=(clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool tcpdump ethtool iproute2 linux-libc-dev
              pkg-config cmake make g++ openssl git ca-certificates faketime)

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

# Node headers come from Debian's nodejs package; cmake-js must never download them.
export npm_config_nodedir=/usr
if [[ ! -d /usr/include/node ]]; then
  echo "install-deps: /usr/include/node is missing (Debian's nodejs package provides it; apt-get install nodejs)" >&2
  exit 1
fi

echo "==> npm ci"
npm ci --no-audit --no-fund --loglevel=error
