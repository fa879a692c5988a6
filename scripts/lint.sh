#!/usr/bin/env bash
# scripts/lint.sh — static checks: gofmt, go vet, golangci-lint (.golangci.yml), and the
# layout rules of the house style (no non-test file in worker/ over 400 lines).
# golangci-lint is installed from the Go module proxy at the pinned version when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
GOLANGCI_VERSION=v2.15.0
bin="$(go env GOPATH)/bin/golangci-lint"

echo "== gofmt"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
	echo "gofmt: these files need formatting (run gofmt -w on them):" >&2
	echo "$unformatted" >&2
	exit 1
fi

echo "== go vet"
go vet ./...

echo "== layout"
long=""
for f in worker/*.go; do
	[[ "$f" == *_test.go ]] && continue
	n=$(wc -l <"$f")
	if ((n > 400)); then long+="$f: $n lines"$'\n'; fi
done
if [[ -n "$long" ]]; then
	printf 'files in worker/ over 400 lines (split them):\n%s' "$long" >&2
	exit 1
fi

echo "== golangci-lint $GOLANGCI_VERSION"
if ! [[ -x "$bin" ]] || ! "$bin" version 2>/dev/null | grep -q "${GOLANGCI_VERSION#v}"; then
	echo "installing golangci-lint $GOLANGCI_VERSION from the Go module proxy"
	GOBIN="$(go env GOPATH)/bin" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_VERSION"
fi
"$bin" run --allow-serial-runners ./...
