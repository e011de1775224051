#!/usr/bin/env bash
# npm run demo: build what is needed, then run the demo (two namespaces, the agent, real connections).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then echo "demo: run as root (it loads BPF programs and makes network namespaces)" >&2; exit 1; fi
bash scripts/build.sh >/dev/null
exec node bin/netoken.js demo "$@"
