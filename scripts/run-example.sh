#!/usr/bin/env bash
# scripts/run-example.sh — the main job: makes sure RabbitMQ and Redis answer on
# localhost, then runs the orders example, forwarding every argument to it.
#
#   bash scripts/run-example.sh [args for examples/orders...]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

bash scripts/services.sh up

exec go run ./examples/orders "$@"
