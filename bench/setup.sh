#!/usr/bin/env bash
# Installs what the bench (`go -C bench run .` from the repository root)
# needs besides Go and Node.js, idempotently:
#   wrk  (Debian package) for saturation runs,
#   pm2  (npm package, into bench/.npm, which git ignores) for the PM2 side.
# Safe to run again: it installs only what is missing. Needs root (or sudo)
# for apt-get when wrk is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pm2_version="${PM2_VERSION:-7.0.4}"

need() {
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "setup: $1 is required but not installed" >&2
		exit 1
	fi
}
need go
need node
need npm

if ! command -v wrk >/dev/null 2>&1; then
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
	echo "setup: installing wrk with apt-get" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi

# The version is read from pm2's package.json: running pm2 would start its
# daemon.
pm2_installed() {
	node -p 'require(process.argv[1]).version' "$here/.npm/lib/node_modules/pm2/package.json" 2>/dev/null || true
}
if [ ! -x "$here/.npm/bin/pm2" ] || [ "$(pm2_installed)" != "$pm2_version" ]; then
	echo "setup: installing pm2@$pm2_version into $here/.npm" >&2
	npm install --global --prefix "$here/.npm" --no-audit --no-fund --loglevel=error "pm2@$pm2_version" >/dev/null
fi

if ! command -v systemd-notify >/dev/null 2>&1; then
	echo "setup: note: systemd-notify is missing; the bench runs examples/node under handoff with --ready delay=… instead" >&2
fi

echo "setup: wrk $(wrk -v 2>&1 | head -n1 | awk '{print $2}'), pm2 $(pm2_installed), node $(node --version)" >&2
