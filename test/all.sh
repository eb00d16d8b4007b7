#!/usr/bin/env bash
# Every test, in one command (README.md and .ci/run call this):
#   gofmt and go vet; unit and end-to-end tests with -race (the e2e tests run
#   the real binary, itself built with -race, against a fake legacy upstream,
#   a fault-injecting TCP proxy and a real redis-server); bounded fuzz runs;
#   real clients (headless Chromium and Node's eventsource); the Helm chart.
# It installs what is missing first: Debian packages (chromium, redis-server)
# when run as root, npm modules with `npm ci`, and the helm CLI into a cache.
#   FUZZTIME=1000x bash test/all.sh  # shorter fuzz runs
#   SKIP_BROWSER=1 SKIP_HELM=1 ...   # leave those out (not in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
started=$SECONDS

need=()
[ -n "${SKIP_BROWSER:-}" ] || [ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "== missing ${need[*]} (apt-get install -y ${need[*]}); the tests that need them will say so" >&2
  fi
fi
command -v redis-server >/dev/null && export TEST_REQUIRE_REDIS=1

helm_log=$(mktemp)
if [ -z "${SKIP_HELM:-}" ]; then
  # The chart tests build helm on first use (minutes on a cold cache): run
  # them beside the Go tests and collect them at the end.
  bash test/helm/run.sh >"$helm_log" 2>&1 &
  helm_pid=$!
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/helm/*'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 -timeout 20m ./...
# The allocation pins are built only without -race (the race detector
# allocates): run them on their own.
echo "== allocation pins"
go test -count=1 -run 'Allocs|TestAllocations' ./frame ./replay ./proxy
# Fuzz budgets are execution counts, not durations: with a duration, Go
# 1.26's fuzz coordinator can report a spurious "context deadline exceeded"
# at the end of the window on a loaded machine (go.dev/issue/75804, fixed in
# Go 1.27). Each is about 20 s here; FUZZTIME overrides them all (e.g. 5s).
echo "== fuzz"
for target in "./frame FuzzParser 200000x" "./replay FuzzParseID 600000x" "./proxy FuzzLastEventID 2500x"; do
  set -- $target
  go test -run '^$' -fuzz "^$2\$" -fuzztime "${FUZZTIME:-$3}" "$1"
done
if [ -z "${SKIP_BROWSER:-}" ]; then
  echo "== real clients"
  bash test/browser/run.sh
fi
if [ -z "${SKIP_HELM:-}" ]; then
  echo "== helm chart (ran in the background)"
  if ! wait "$helm_pid"; then cat "$helm_log"; echo "helm chart tests failed"; exit 1; fi
  tail -n 3 "$helm_log"
fi
rm -f "$helm_log"
echo "== all tests passed in $((SECONDS - started)) s"
