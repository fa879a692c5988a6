#!/usr/bin/env bash
# scripts/chromium.sh — make sure a headless-capable Chromium is installed for the
# console's browser tests (chromedp drives /usr/bin/chromium). Idempotent: does nothing
# when it is there. Installs Debian's `chromium` package as root; otherwise says what to do.
#
#   bash scripts/chromium.sh
#
# WARREN_CHROMIUM overrides the browser's path (default /usr/bin/chromium).
set -euo pipefail

BIN="${WARREN_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$BIN" ]]; then
	echo "chromium: $("$BIN" --version 2>/dev/null || echo "$BIN")"
	exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
	echo "chromium: installing Debian's chromium package"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
	echo "chromium: $("$BIN" --version)"
	exit 0
fi
echo "chromium: $BIN is missing; install Chromium (Debian: sudo apt-get install chromium) or set WARREN_CHROMIUM" >&2
exit 1
