#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Receive every signal the system bus delivers to an ordinary peer, and print
each as one JSON line on stdout ({"sender", "path", "interface", "member",
"args"}, args as GVariant text); first a line {"ready": true} once the match
is in place. Ends on SIGTERM.

The harness runs this under `setpriv --reuid=U …`: it is what any local user
can see of what stampd broadcasts.

    listenas.py
"""

import json
import signal
import sys

import gi

gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402


def main():
    conn = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
    loop = GLib.MainLoop()

    def on_signal(conn, sender, path, iface, member, params):
        print(json.dumps({'sender': sender, 'path': path, 'interface': iface, 'member': member,
                          'args': params.print_(True)}), flush=True)

    conn.signal_subscribe(None, None, None, None, None, Gio.DBusSignalFlags.NONE, on_signal)
    # A round trip: the bus has the match once this returns.
    conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetId',
                   None, None, Gio.DBusCallFlags.NONE, 30000, None)
    print(json.dumps({'ready': True}), flush=True)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    loop.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
