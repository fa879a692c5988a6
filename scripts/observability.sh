#!/usr/bin/env bash
# Checks what operators import from observability/: the Prometheus alerting
# rules with promtool (Debian's prometheus package, installed when missing)
# and the Grafana dashboard's JSON. That both use only metric names
# warren exports is checked by a Go test (worker: TestLagMetrics).
#
#   bash scripts/observability.sh          # install promtool if needed, check
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

install_promtool() {
	if command -v promtool >/dev/null 2>&1; then
		return
	fi
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
		echo "observability.sh: promtool is missing; install Debian's prometheus package (apt-get install prometheus)" >&2
		exit 1
	fi
	echo "== installing promtool (Debian package prometheus)"
	# The package's service is not wanted here: keep maintainer scripts
	# from starting it.
	local policy=/usr/sbin/policy-rc.d created=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		created=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null ||
		{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
	[[ -n $created ]] && rm -f "$policy"
	command -v promtool >/dev/null
}

install_promtool
echo "== promtool check rules"
promtool check rules observability/alerts.yml
# The dashboard's JSON is parsed, and its metric names checked, by
# worker's TestLagMetrics; here only when python3 is at hand.
if command -v python3 >/dev/null 2>&1; then
	echo "== dashboard JSON"
	python3 -m json.tool observability/grafana-dashboard.json >/dev/null
fi
echo "observability.sh: ok"
