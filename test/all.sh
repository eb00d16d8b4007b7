#!/usr/bin/env bash
# The whole test suite: formatting, vet, unit and end-to-end tests with the
# race detector, and bounded fuzz runs. README.md and .ci/run call this.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 -timeout 20m ./...
echo "== fuzz ($FUZZTIME each)"
for target in "./frame FuzzParser" "./replay FuzzParseID"; do
  set -- $target
  go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1"
done
echo "== all tests passed"
