#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build stamp's Debian package from a clean clone of this checkout's HEAD (uncommitted changes are
# not in it), with dpkg-buildpackage -us -uc -b, and put the .deb, .buildinfo and .changes into
# OUTDIR (default: build-deb/ in the checkout). Needs the build dependencies (tools/install-deps.sh,
# or `apt-get build-dep ./`) and dpkg-dev, debhelper; --lintian also runs lintian on the result.
#
#   tools/build-deb.sh [--lintian] [OUTDIR]
#   DEB_BUILD_OPTIONS=nocheck tools/build-deb.sh     # without the unit tests
set -euo pipefail

lintian=no
if [ "${1:-}" = --lintian ]; then
    lintian=yes
    shift
fi
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build-deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
    echo "build-deb.sh: uncommitted changes are not in the package (it is built from HEAD)" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# dpkg-buildpackage writes its results next to the source directory.
git clone --quiet --no-hardlinks "$src" "$work/stamp"
(cd "$work/stamp" && dpkg-buildpackage -us -uc -b)

version=$(dpkg-parsechangelog -l "$work/stamp/debian/changelog" -S Version)
changes=$(ls "$work"/stamp_"${version}"_*.changes)
cp "$work"/*.deb "$work"/*.buildinfo "$changes" "$out"/
echo "build-deb.sh: $(cd "$out" && ls stamp_"${version}"_*.deb) in $out"
if [ "$lintian" = yes ]; then
    lintian --fail-on error,warning "$out/$(basename "$changes")"
fi
