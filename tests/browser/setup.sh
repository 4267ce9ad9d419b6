#!/usr/bin/env bash
# setup.sh - what the browser tests need: Debian's chromium (never a browser
# download), coturn, and from npm playwright-core (drives chromium) and
# axe-core (the accessibility check run in the page), installed when missing.
set -e
cd "$(dirname "$0")"
# make test runs several test files at once, and more than one drives the
# browser: one installs, the others wait for it.
exec 9>.setup.lock
flock -w 600 9
if ! command -v chromium >/dev/null 2>&1; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v turnserver >/dev/null 2>&1; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null
fi
if ! command -v npm >/dev/null 2>&1; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/axe-core ]; then
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
