#!/usr/bin/env bash
# Build every part: BPF objects (build/bpf ships; build/bpf-test is for tests only), the native
# addon (build/Release), TypeScript (dist), and the bundle that ships (dist/bundle).
# The container image runs exactly these steps (see Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."
export npm_config_nodedir=/usr

step() { printf '==> %s\n' "$*"; }

step "BPF objects"
make -s -C bpf
if [[ -f bpf/test/Makefile ]]; then make -s -C bpf/test; fi

step "native addon"
npm run -s build:native >/tmp/netoken-native-build.log 2>&1 || { tail -40 /tmp/netoken-native-build.log >&2; exit 1; }

step "TypeScript"
npx tsc -p tsconfig.json

step "bundle"
node scripts/bundle.mjs
