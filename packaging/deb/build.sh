#!/usr/bin/env bash
# Builds the agent's Debian package: the release binaries amphora-agent,
# amphora-vrrp-check and amphora-health-checker (keepalived runs it for
# SCTP health monitors, as upstream's LVS template writes; stripped by the
# release profile), the systemd units
# and the default configuration of this directory, and the metadata under
# [package.metadata.deb] in crates/amphora-agent/Cargo.toml. Prints the
# path of the .deb (under the cargo target directory, deb/). Needs cargo,
# jq and dpkg-deb.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."

for tool in cargo jq dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is needed" >&2; exit 1; }
done

cargo build --release --locked -p amphora-agent --bin amphora-agent --bin amphora-vrrp-check --bin amphora-health-checker >&2

meta="$(cargo metadata --format-version 1 --no-deps --locked)"
target="$(jq -r .target_directory <<<"$meta")"
pkg="$(jq -c '.packages[] | select(.name == "amphora-agent")' <<<"$meta")"
field() { jq -r "$1 // empty" <<<"$pkg"; }
name="$(field '.metadata.deb.name')"
version="$(field .version)"
arch="$(dpkg --print-architecture)"
for f in name version; do
    [ -n "${!f}" ] || { echo "build.sh: no $f in crates/amphora-agent/Cargo.toml" >&2; exit 1; }
done

root="$(mktemp -d "$target/deb-root.XXXXXX")"
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$target/release/amphora-agent" "$root/usr/bin/amphora-agent"
install -D -m 0755 "$target/release/amphora-vrrp-check" "$root/usr/bin/amphora-vrrp-check"
install -D -m 0755 "$target/release/amphora-health-checker" "$root/usr/bin/amphora-health-checker"
install -D -m 0644 "$here/amphora-agent.service" "$root/lib/systemd/system/amphora-agent.service"
install -D -m 0644 "$here/amphora-netns.service" "$root/lib/systemd/system/amphora-netns.service"
install -D -m 0644 "$here/amphora-agent.conf" "$root/etc/octavia/amphora-agent.conf"
install -d -m 0755 "$root/etc/octavia/certs" "$root/var/lib/octavia"
install -d -m 0755 "$root/DEBIAN"
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$root/DEBIAN/"
field '.metadata.deb["conf-files"][]?' > "$root/DEBIAN/conffiles"

# The extended description: each line indented by one space, as
# deb-control(5) wants.
description="$(field .description)"
extended="$(field '.metadata.deb["extended-description"]' | fold -s -w 72 | sed 's/ *$//; s/^/ /')"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
{
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $(field .metadata.deb.maintainer)"
    echo "Installed-Size: $size"
    echo "Depends: $(field .metadata.deb.depends)"
    echo "Section: $(field .metadata.deb.section)"
    echo "Priority: $(field .metadata.deb.priority)"
    echo "Homepage: https://docs.openstack.org/octavia/"
    echo "Description: $description"
    [ -z "$extended" ] || echo "$extended"
} > "$root/DEBIAN/control"

mkdir -p "$target/deb"
out="$target/deb/${name}_${version}_${arch}.deb"
# Built beside and renamed into place: a reader never sees half a package.
trap 'rm -rf "$root"; rm -f "$out.$$.tmp"' EXIT
dpkg-deb --build --root-owner-group "$root" "$out.$$.tmp" >&2
mv -f "$out.$$.tmp" "$out"
echo "$out"
