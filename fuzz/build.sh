#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Build the fuzz targets with clang's libFuzzer under ASan+UBSan.
#
#   fuzz/build.sh [BUILDDIR]        (default: build-fuzz)
#
# The daemon's static libraries are built by meson in BUILDDIR with clang, ASan+UBSan and libFuzzer's
# coverage instrumentation; each fuzz/fuzz-*.c is then linked with -fsanitize=fuzzer into
# BUILDDIR/fuzz/<target>. The same BUILDDIR also holds the replay binaries of the `fuzz` test suite
# and the unit tests, all under the sanitizers: `meson test -C build-fuzz --suite fuzz --suite unit`.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${1:-build-fuzz}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

if ! command -v clang >/dev/null; then
    echo "fuzz/build.sh: clang is needed (apt-get install clang)" >&2
    exit 1
fi

if [ ! -f "$B/meson-private/coredata.dat" ]; then
    CC=clang meson setup "$B" \
        -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
        -Dc_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
        -Dslow-tests=false
fi
ninja -C "$B" daemon/libstampd-core.a transfer/libstamp-transfer.a store/libstamp-store.a common/libstamp-common.a

deps="libsystemd glib-2.0 gio-2.0 polkit-gobject-1 libbtrfsutil libarchive libcurl libcrypt"
# shellcheck disable=SC2046 # word splitting of pkg-config output is intended
cflags=$(pkg-config --cflags $deps)
libs=$(pkg-config --libs $deps)

mkdir -p "$B/fuzz"
for src in fuzz/fuzz-*.c; do
    t=$(basename "$src" .c)
    echo "  FUZZ  $B/fuzz/$t"
    # shellcheck disable=SC2086
    clang -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer $SAN \
        -I"$B" -Idaemon -Itransfer -Istore -Icommon -Ifuzz $cflags \
        "$src" "$B/transfer/libstamp-transfer.a" "$B/daemon/libstampd-core.a" "$B/store/libstamp-store.a" "$B/common/libstamp-common.a" $libs -pthread \
        -o "$B/fuzz/$t"
done
