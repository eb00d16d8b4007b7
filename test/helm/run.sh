#!/usr/bin/env bash
# Chart tests (helm/lastevent and helm/examples/my-app), offline, no cluster:
# helm lint --strict and helm template for every values file, every manifest
# decoded strictly into k8s.io/api types, and the deployment rules checked.
#
# Installs the helm CLI with `go install` into a cache directory the first
# time (several minutes on a cold Go module cache; cache that directory and
# the Go module/build caches in CI), then runs the Go tests of this module.
#   bash test/helm/run.sh            # from anywhere
#   HELM_TEST_CACHE=/ci/cache bash test/helm/run.sh
set -euo pipefail
cd "$(dirname "$0")"
export PATH="/usr/local/go/bin:$PATH"

HELM_VERSION=v4.3.2
cache=${HELM_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lastevent-helm}
bin="$cache/$HELM_VERSION/bin"
if [ ! -x "$bin/helm" ]; then
  echo "== installing helm $HELM_VERSION into $bin (go install; takes a few minutes on a cold cache)"
  start=$SECONDS
  mkdir -p "$bin"
  # Outside any module, so that nothing here or in the root go.mod changes.
  (cd "$cache" && GOBIN="$bin" GOFLAGS= go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION")
  echo "== helm installed in $((SECONDS - start))s"
fi
export PATH="$bin:$PATH"
export HELM="$bin/helm"
helm version

echo "== gofmt, vet (test/helm)"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
go vet ./...
echo "== chart tests"
go test -count=1 -v ./... 2>&1 | grep -Ev '^=== (RUN|PAUSE|CONT)' 
echo "== chart tests passed"
