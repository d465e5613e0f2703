#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Make one D-Bus call on the system bus and print its outcome as JSON.

The harness runs this under `setpriv --reuid=U …` so that the call comes from
an unprivileged peer. Unlike busctl it keeps AccessDenied and
InteractiveAuthorizationRequired apart, and it can set the message's
ALLOW_INTERACTIVE_AUTHORIZATION flag.

    callas.py [--interactive] [--timeout SEC] [--output FILE] DEST PATH IFACE METHOD [SIGNATURE ARGS]

SIGNATURE is the tuple type of the arguments, e.g. "(ssb)", and ARGS their
GVariant text, e.g. "('base', 'web', false)". Prints one line:
{"reply": "<GVariant text of the reply tuple>"} or
{"error": "<D-Bus error name>", "message": "<text>"}. Exit status 0 either
way; 2 for a usage error.
"""

import argparse
import json
import re
import sys

import gi

gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument('--interactive', action='store_true')
    p.add_argument('--timeout', type=float, default=120)
    p.add_argument('--output', help='write the JSON line here instead of stdout')
    p.add_argument('dest')
    p.add_argument('path')
    p.add_argument('iface')
    p.add_argument('method')
    p.add_argument('signature', nargs='?')
    p.add_argument('args', nargs='?')
    return p.parse_args()


def call(a):
    params = None
    if a.signature:
        params = GLib.Variant.parse(GLib.VariantType.new(a.signature), a.args, None, None)
    flags = Gio.DBusCallFlags.NONE
    if a.interactive:
        flags |= Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION
    bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
    try:
        reply = bus.call_sync(a.dest, a.path, a.iface, a.method, params, None, flags,
                              int(a.timeout * 1000), None)
    except GLib.Error as e:
        name = Gio.DBusError.get_remote_error(e) or 'local:' + str(e.code)
        return {'error': name, 'message': re.sub(r'^GDBus\.Error:\S+: ', '', e.message)}
    return {'reply': reply.print_(True)}


def main():
    a = parse_args()
    line = json.dumps(call(a))
    if a.output:
        with open(a.output, 'w') as f:
            f.write(line + '\n')
    else:
        print(line, flush=True)


if __name__ == '__main__':
    sys.exit(main())
