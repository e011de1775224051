#!/usr/bin/env bash
# Renders the plain manifests in deploy/ from the Helm chart, so that `kubectl apply -f deploy/`
# and `helm install netoken charts/netoken` install the same objects, and copies crds/ into the
# chart (charts/netoken/crds/), so that the chart carries exactly the project's CRDs.
#
# Usage: bash scripts/render-deploy.sh [--check]
#   --check  change nothing; exit 1 and print the difference when deploy/ or the chart's CRDs
#            are not what this script would write (the drift test runs this).
# Environment:
#   NETOKEN_HELM  the helm binary; it defaults to helm on PATH, else the one that
#                 test/k8s/build-tools.sh builds.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "render-deploy: unknown argument '$1' (want --check)" >&2; exit 2 ;;
esac

# deploy/ installs into this namespace; `helm install -n` chooses any other.
NAMESPACE=netoken-system
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion); nothing rendered depends on
# it, but a helm built without a default Kubernetes version would refuse the chart otherwise.
KUBE_VERSION=v1.30.0

helm="${NETOKEN_HELM:-}"
if [[ -z "$helm" ]]; then
  if command -v helm >/dev/null; then
    helm=helm
  else
    # shellcheck source=../test/k8s/versions.env
    . test/k8s/versions.env
    helm="${NETOKEN_TOOLS_DIR:-$HOME/.cache/netoken-tools}/helm-$HELM_VERSION/helm"
    [[ -x "$helm" ]] || { echo "render-deploy: helm not found; install it or run: bash test/k8s/build-tools.sh helm" >&2; exit 1; }
  fi
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/deploy" "$out/chart-crds"
cp crds/*.yaml "$out/chart-crds/"

# The chart's crds/ must be current before helm reads it for --include-crds.
stage="$out/chart"
cp -r charts/netoken "$stage"
rm -rf "$stage/crds"
cp -r "$out/chart-crds" "$stage/crds"

{
  cat <<YAML
# Rendered from charts/netoken by scripts/render-deploy.sh: do not edit; change the chart and
# run the script. Install with: kubectl apply -f deploy/
# The agent needs host networking, host paths and capabilities: the namespace allows
# privileged pods (Pod Security Admission).
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    app.kubernetes.io/name: netoken
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/warn: privileged
    pod-security.kubernetes.io/audit: privileged
YAML
  "$helm" template netoken "$stage" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" --include-crds
} >"$out/deploy/netoken.yaml"

if ((check)); then
  rc=0
  diff -ru "$out/chart-crds" charts/netoken/crds || {
    echo "render-deploy: charts/netoken/crds/ differs from crds/; run: bash scripts/render-deploy.sh" >&2; rc=1; }
  diff -ru "$out/deploy" deploy || {
    echo "render-deploy: deploy/ is not what the chart renders; run: bash scripts/render-deploy.sh" >&2; rc=1; }
  exit $rc
fi

rm -rf charts/netoken/crds deploy
mkdir -p charts/netoken/crds deploy
cp "$out"/chart-crds/*.yaml charts/netoken/crds/
cp "$out"/deploy/*.yaml deploy/
echo "render-deploy: wrote charts/netoken/crds/ ($(ls charts/netoken/crds | wc -l) CRDs) and deploy/netoken.yaml ($(grep -c '^kind:' deploy/netoken.yaml) objects)"
