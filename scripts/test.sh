#!/usr/bin/env bash
# The whole test suite: build, lint, unit tests, BPF packet tests, network-namespace system
# tests and the real-Kubernetes tests. Needs root (BPF, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then echo "test: run as root (the tests load BPF programs and make network namespaces)" >&2; exit 1; fi
bash scripts/build.sh
echo "==> lint"
npx eslint --max-warnings=0 .
# The tree stays as `npm run format` leaves it.
npx prettier --check --log-level=warn src test bench fuzz scripts

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

if [[ -x test/k8s/build-tools.sh ]]; then
  echo "==> Kubernetes test binaries"
  bash test/k8s/build-tools.sh
fi

echo "==> tests"
# One test file at a time keeps network-namespace and BPF tests from competing for the 2 cores.
mapfile -t files < <(find dist/src dist/test dist/fuzz -name '*.test.js' | sort)
node --test --test-concurrency=1 "${files[@]}"
