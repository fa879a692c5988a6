#!/usr/bin/env bash
# scripts/test.sh — the project's test command: makes sure RabbitMQ and Redis answer
# on localhost, then runs every package's tests with the race detector.
#
#   bash scripts/test.sh            # go test -race -count=1 -timeout 12m ./...
#   bash scripts/test.sh -short     # extra args go to `go test`, before the packages
#   bash scripts/test.sh -run TestX -v
#
# WARREN_TEST_PKGS overrides the package list (default ./... but internal/clustertest, which
# scripts/cluster-test.sh runs against a cluster of its own).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

bash scripts/services.sh up

race=(-race)
if [[ "$(go env CGO_ENABLED)" != 1 ]]; then
	echo "test.sh: cgo is disabled (no C compiler?), running without -race" >&2
	race=()
fi

# The Cluster tests need a cluster of their own: scripts/cluster-test.sh runs them.
pkgs="${WARREN_TEST_PKGS:-$(go list ./... | grep -v /internal/clustertest)}"
# shellcheck disable=SC2086 # pkgs is a space-separated package list
exec go test "${race[@]}" -count=1 -timeout 12m "$@" $pkgs
