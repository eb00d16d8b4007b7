#!/usr/bin/env bash
# Real clients through lastevent, in one command: the unit tests of
# clients/lastevent.js, then headless Chromium (Debian's chromium, driven by
# playwright-core; no browser download) and the npm eventsource package
# against the lastevent binary, a scripted upstream and a relay that cuts
# connections at seeded random points; and the demo page with the helper.
#
#   bash test/browser/run.sh                  # everything (under a minute, Go build cache warm)
#   SEED=123 bash test/browser/run.sh         # the same cut points again
#   bash test/browser/run.sh cuts demo        # only test/browser/{cuts,demo}.test.mjs
#   CONCURRENCY=1 bash test/browser/run.sh    # one test file at a time (default 2)
#
# Needs go, node >= 20 with npm, and /usr/bin/chromium (apt-get install -y
# --no-install-recommends chromium fonts-dejavu-core); CHROMIUM=path uses
# another binary. Screenshots land in test/artifacts/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

chromium="${CHROMIUM:-/usr/bin/chromium}"
missing=""
command -v go >/dev/null || missing+=" go"
command -v node >/dev/null || missing+=" node"
command -v npm >/dev/null || missing+=" npm"
[ -x "$chromium" ] || missing+=" $chromium (apt-get install -y --no-install-recommends chromium fonts-dejavu-core)"
if [ -n "$missing" ]; then
  echo "test/browser/run.sh: missing:$missing" >&2
  exit 1
fi

export SEED="${SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000000 ))}"
echo "== browser tests: SEED=$SEED (repeat the cut points with SEED=$SEED bash test/browser/run.sh)"
started=$(date +%s)

bin="$(mktemp -d /tmp/lastevent-browser.XXXXXX)"
trap 'rm -rf "$bin"' EXIT
echo "== build (lastevent, scripted upstream, relay, demo)"
go build -o "$bin/" . ./test/browser/upstream ./test/browser/relay ./test/cmd/demo # lastevent upstream relay demo
export BIN_DIR="$bin" CHROMIUM="$chromium"

echo "== npm ci (test/browser)"
(cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefer-offline --no-audit --no-fund --loglevel=error)

echo "== unit tests of clients/lastevent.js"
(cd "$root/clients" && node --test --test-reporter=spec test/*.test.mjs)

files=()
if [ $# -gt 0 ]; then
  for name in "$@"; do files+=("$here/$name.test.mjs"); done
else
  files=("$here"/*.test.mjs)
fi
mkdir -p "$root/test/artifacts"
echo "== ${files[*]##*/}"
status=0
timeout -k 10 300 node --test --test-reporter=spec --test-concurrency="${CONCURRENCY:-2}" --test-timeout=120000 "${files[@]}" || status=$?
echo "== browser tests took $(( $(date +%s) - started )) s; screenshots in test/artifacts/"
if [ "$status" -ne 0 ]; then
  echo "== FAILED (status $status), SEED=$SEED: rerun with SEED=$SEED bash test/browser/run.sh" >&2
fi
exit "$status"
