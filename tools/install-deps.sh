#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Install every Debian 12 package stamp builds, runs and tests with.
# Non-interactive and idempotent: run it again any time (as root).
set -euo pipefail

packages=(
    # build
    meson ninja-build pkg-config gcc clang clang-format
    libsystemd-dev libpolkit-gobject-1-dev libpolkit-agent-1-dev libglib2.0-dev
    libbtrfsutil-dev libarchive-dev libcurl4-openssl-dev libssl-dev libsmartcols-dev libcrypt-dev
    libjson-glib-dev zlib1g-dev libdeflate-dev
    scdoc
    # run: the bus, polkit, btrfs, loop devices, templates, containers
    dbus-daemon polkitd systemd systemd-container btrfs-progs debootstrap
    mmdebstrap
    # the image cache of online templates verifies the suite's InRelease
    gpgv
    util-linux mount e2fsprogs
    # published ports: addresses for a machine's veth pair
    iproute2
    # archives
    libarchive-tools xz-utils zstd bzip2
    # tests: Gio from Python, gdbus, terminals, passwords, file metadata, fixtures
    python3 python3-gi gir1.2-glib-2.0 libglib2.0-bin tmux openssl acl attr busybox-static
    # tests: a signed Debian mirror of the test's own (tests/localmirror.py)
    gpg gpg-agent
    # tests: stampctl -H against an sshd of the test's own; installed files
    openssh-server openssh-client libxml2-utils man-db
    # tests: an OCI registry on the loopback, and an independent client of it
    docker-registry skopeo apache2-utils
    # install: the completion directory from its pkg-config file
    bash-completion
    # the Debian package: tools/build-deb.sh, tests/test-deb.py
    git dpkg-dev debhelper lintian
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root (apt-get install)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -q -y --no-install-recommends "${packages[@]}"
