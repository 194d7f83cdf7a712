#!/usr/bin/env bash
# Builds the test control plane from Kubernetes' own Go modules into a cache outside the repository:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes),
#   etcd (go.etcd.io/etcd/server/v3), kwok and kwokctl (sigs.k8s.io/kwok), helm (helm.sh/helm/v4),
#   and with --keda the KEDA operator and its metrics API server (github.com/kedacore/keda/v2).
# A binary whose stamp matches its version is kept, so a second run is a no-op. Go's module and
# build caches are reused. Prints the bin folder on its last line.
#
# Usage: controlplane/build.sh [--keda] [--print-bin]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# versions.env holds the pins; a variable already set in the environment wins.
while IFS='=' read -r key value; do
  [[ $key =~ ^[A-Z_]+$ ]] || continue
  if [[ -z ${!key:-} ]]; then export "$key=$value"; fi
done <"$here/versions.env"

home=${CONTROLPLANE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/chatmodel-operator/controlplane}
bin=$home/bin
keda=0
for arg in "$@"; do
  case $arg in
    --keda) keda=1 ;;
    --print-bin) echo "$bin"; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (use --keda or --print-bin)" >&2; exit 2 ;;
  esac
done
mkdir -p "$bin" "$home/src"
command -v go >/dev/null || { echo "build.sh: Go is not installed (need Go >= 1.26)" >&2; exit 2; }

components=(etcd kwok kwokctl helm kubectl kube-scheduler kube-controller-manager kube-apiserver)
((keda)) && components+=(keda-operator keda-adapter)
total=${#components[@]}
step=0

version_of() {
  case $1 in
    etcd) echo "$ETCD_VERSION" ;;
    kwok | kwokctl) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    keda-*) echo "$KEDA_VERSION" ;;
    *) echo "$KUBERNETES_VERSION" ;;
  esac
}

# The version a go.mod requires of a module, on a `require` line or inside a `require (...)` block.
required() { # go.mod module
  awk -v m="$2" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' "$1"
}

# A copy of one of our modules under $home/src, rewritten when the pinned version is overridden.
module_dir() { # name
  local src=$home/src/$1
  mkdir -p "$src"
  cp "$here/$1/go.mod" "$here/$1/go.sum" "$src/"
  echo "$src"
}

kubernetes_module() {
  local dir pinned minor_patch
  dir=$(module_dir kubernetes)
  pinned=$(required "$dir/go.mod" k8s.io/kubernetes)
  if [[ $pinned != "$KUBERNETES_VERSION" ]]; then
    # Another release: require it and replace each of its staging modules at v0.<minor>.<patch>.
    minor_patch=${KUBERNETES_VERSION#v1.}
    (
      cd "$dir"
      go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" >/dev/null
      local gomod
      gomod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod
      go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
      go mod edit -json | python3 -c 'import json,sys; [print(r["Old"]["Path"]) for r in json.load(sys.stdin).get("Replace") or []]' |
        while read -r old; do go mod edit -dropreplace="$old"; done
      grep -oE '^\s+k8s.io/[a-z0-9-]+ => ./staging' "$gomod" | awk '{print $1}' |
        while read -r staged; do go mod edit -replace="$staged=$staged@v0.$minor_patch"; done
      go mod tidy
    ) >&2
  fi
  echo "$dir"
}

kube_ldflags() {
  local v=$KUBERNETES_VERSION major minor flags=""
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$flags"
}

build_one() { # component
  local c=$1 dir
  case $c in
    kube-* | kubectl)
      dir=$(kubernetes_module)
      (cd "$dir" && go build -ldflags "$(kube_ldflags)" -o "$bin/$c" "k8s.io/kubernetes/cmd/$c") ;;
    etcd)
      dir=$(module_dir etcd)
      if [[ $(required "$dir/go.mod" go.etcd.io/etcd/server/v3) != "$ETCD_VERSION" ]]; then
        (cd "$dir" && go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy) >&2
      fi
      (cd "$dir" && go build -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3) ;;
    kwok | kwokctl)
      GOBIN=$bin go install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
        "sigs.k8s.io/kwok/cmd/$c@$KWOK_VERSION" ;;
    helm)
      GOBIN=$bin go install -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" ;;
    keda-operator | keda-adapter)
      dir=$(module_dir keda)
      if [[ $(required "$dir/go.mod" github.com/kedacore/keda/v2) != "$KEDA_VERSION" ]]; then
        (cd "$dir" && go mod edit -require="github.com/kedacore/keda/v2@$KEDA_VERSION" && go mod tidy) >&2
      fi
      (cd "$dir" && go build -ldflags "-s -w" -o "$bin/$c" "github.com/kedacore/keda/v2/cmd/${c#keda-}") ;;
  esac
}

for c in "${components[@]}"; do
  step=$((step + 1))
  v=$(version_of "$c")
  if [[ -x $bin/$c && $(cat "$bin/.$c.version" 2>/dev/null) == "$v" ]]; then
    printf '[%d/%d] %-24s %-9s cached\n' "$step" "$total" "$c" "$v"
    continue
  fi
  printf '[%d/%d] %-24s %-9s building ...\n' "$step" "$total" "$c" "$v"
  start=$SECONDS
  rm -f "$bin/.$c.version"
  build_one "$c"
  echo "$v" >"$bin/.$c.version"
  printf '[%d/%d] %-24s %-9s built in %ds\n' "$step" "$total" "$c" "$v" $((SECONDS - start))
done
echo "$bin"
