#!/usr/bin/env bash
# Installs the servers that the framework tests run under handoff
# (frameworks_test.go, sharedstate_test.go), idempotently:
#
#   Debian packages  gunicorn python3-flask python3-uvicorn puma ruby-sd-notify
#                    lighttpd redis-server   (only those missing; apt-get update first)
#   npm              express and fastify into examples/node/node_modules
#                    (npm ci from package-lock.json, again only when it changed)
#
# Run as root (or with sudo available) on Debian 12 or later. A second run
# installs nothing and takes well under a second. Tests whose runtime is
# still missing skip and say which package to install.
#
# The Debian packages of lighttpd and redis-server start system services on
# installation (ports 80 and 6379). The tests start their own servers on
# free ports, so for the install this script stops that, with a
# policy-rc.d that refuses service starts when the machine has none.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
packages=(gunicorn python3-flask python3-uvicorn puma ruby-sd-notify lighttpd redis-server)

missing=()
for p in "${packages[@]}"; do
	if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -gt 0 ]; then
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# added by handoff examples/install-runtimes.sh for one install\nexit 101\n' | $sudo tee "$policy" >/dev/null
		$sudo chmod 0755 "$policy"
		trap '$sudo rm -f "$policy"' EXIT
	fi
	echo "install-runtimes: apt-get install ${missing[*]}" >&2
	# Quiet unless it fails: then show what apt said.
	if ! out="$($sudo apt-get update -qq 2>&1 &&
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1)"; then
		printf '%s\n' "$out" >&2
		echo "install-runtimes: apt-get failed" >&2
		exit 1
	fi
fi

if command -v npm >/dev/null 2>&1; then
	lock="$here/node/package-lock.json"
	stamp="$here/node/node_modules/.installed-from-lock"
	want="$(sha256sum "$lock" | cut -d' ' -f1)"
	if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
		echo "install-runtimes: npm ci in examples/node" >&2
		if ! out="$(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error 2>&1)"; then
			printf '%s\n' "$out" >&2
			echo "install-runtimes: npm ci failed" >&2
			exit 1
		fi
		echo "$want" >"$stamp"
	fi
else
	echo "install-runtimes: npm not found; the Express and Fastify tests will skip" >&2
fi
