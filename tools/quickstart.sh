#!/bin/bash
# From a fresh Debian 12 machine (as root) to a running clone: install what stamp needs, build and
# install it, make sure the system bus and polkit are there, then let stampd (started by D-Bus
# activation on the first call) make a template, clone it and run a command in the clone.
#
#   sudo tools/quickstart.sh            # template "bookworm-base" over the network (under a minute)
#   STAMP_DEMO_SUITE=trixie sudo tools/quickstart.sh
set -euo pipefail

cd "$(dirname "$0")/.."
suite=${STAMP_DEMO_SUITE:-bookworm}
template=${STAMP_DEMO_TEMPLATE:-${suite}-base}
clone=${STAMP_DEMO_CLONE:-demo}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "Run this as root (it installs packages and a system service)." >&2; exit 1; }

say "Installing build and run-time dependencies"
tools/install-deps.sh

say "Building and installing stamp into /usr"
wipe=; [ -d build-release ] && wipe=--wipe
meson setup build-release --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
        --buildtype=release $wipe >/dev/null
meson compile -C build-release
meson install -C build-release --quiet

say "Making sure the system bus and polkit run"
if [ -d /run/systemd/system ]; then
        # systemd is PID 1: the bus picks up the new policy itself; units are new, so reload.
        systemctl daemon-reload
        systemctl reload dbus.service 2>/dev/null || true
else
        # No systemd: run the system bus ourselves if nobody does; it activates polkitd and stampd
        # through its setuid launch helper, from the files just installed.
        if ! busctl --system status org.freedesktop.DBus >/dev/null 2>&1; then
                mkdir -p /run/dbus
                rm -f /run/dbus/system_bus_socket /run/dbus/pid
                dbus-daemon --system --fork
        else
                busctl --system call org.freedesktop.DBus /org/freedesktop/DBus \
                        org.freedesktop.DBus ReloadConfig >/dev/null
        fi
fi

# A stampd from an earlier install would go on serving with its old code: let the next call
# activate the one just installed.
if [ -d /run/systemd/system ]; then
        systemctl stop stampd.service 2>/dev/null || true
elif pid=$(pgrep -f "^/usr/libexec/stampd( |$)"); then
        kill -TERM $pid
        while kill -0 $pid 2>/dev/null; do sleep 0.1; done
fi

say "stampd answers (activated by this first call)"
stampctl status

if stampctl list --no-legend | awk '{print $1}' | grep -qx "$template"; then
        say "Template $template exists already"
else
        say "Creating template $template (mmdebstrap $suite minbase, bootable)"
        stampctl create-template "$template" --suite "$suite"
fi

say "Cloning $template to $clone"
stampctl remove "$clone" >/dev/null 2>&1 || true
stampctl clone "$template" "$clone"

say "Running a command in $clone"
stampctl start "$clone" -- /bin/sh -c '. /etc/os-release; echo "Hello from $PRETTY_NAME in $(hostname)"'

say "Images"
stampctl list --tree
