#!/bin/sh
# third-party-licenses.sh OUTPUT: write the licence texts of everything
# linked into the handoff binary (the Go standard library and every
# module it imports) to OUTPUT, for the release archives and the .deb:
# the BSD and MIT licences of several dependencies require their notices
# to travel with binaries. Fails if a module has no licence file.
set -eu
out=${1:?usage: third-party-licenses.sh OUTPUT}
cd "$(dirname "$0")/.."
mkdir -p "$(dirname "$out")"
tmp=$out.tmp
{
	printf 'Licences of the software linked into handoff.\n\n'
	printf '==> Go standard library and runtime (%s): LICENSE\n\n' "$(go env GOVERSION)"
	cat "$(go env GOROOT)/LICENSE"
	printf '\n'
} > "$tmp"
GOOS=linux CGO_ENABLED=0 go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}}@{{.Version}} {{.Dir}}{{end}}{{end}}' . |
	sort -u | while read -r mod dir; do
		found=
		for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE*; do
			[ -f "$f" ] || continue
			printf '==> %s: %s\n\n' "$mod" "$(basename "$f")" >> "$tmp"
			cat "$f" >> "$tmp"
			printf '\n' >> "$tmp"
			found=1
		done
		if [ -z "$found" ]; then
			echo "third-party-licenses: no licence file in $mod ($dir)" >&2
			exit 1
		fi
	done
mv "$tmp" "$out"
