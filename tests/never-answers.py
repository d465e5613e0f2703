#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A user who walked away from the password prompt, many times over.

Registers a polkit authentication agent for this very process that never
answers a prompt, then opens CONNECTIONS bus connections and makes CALLS
interactive CloneImage calls of image "base" on each, all at once. Prints one
JSON line per event: {"event": "agent"} once registered, {"event": "prompt"}
for each prompt polkit begins, {"event": "reply", "name": ..., "ok": true} or
{"event": "reply", "name": ..., "error": NAME, "message": TEXT} per call.
Runs until killed.

    never-answers.py CONNECTIONS CALLS
"""

import json
import os
import sys

import gi

gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

AGENT_XML = '''<node><interface name="org.freedesktop.PolicyKit1.AuthenticationAgent">
<method name="BeginAuthentication">
  <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="s" direction="in"/>
  <arg type="a{ss}" direction="in"/><arg type="s" direction="in"/><arg type="a(sa{sv})" direction="in"/>
</method>
<method name="CancelAuthentication"><arg type="s" direction="in"/></method>
</interface></node>'''

held = []  # the prompts, never answered


def emit(**kw):
    print(json.dumps(kw), flush=True)


def on_agent_call(conn, sender, path, iface, method, params, invocation):
    if method == 'BeginAuthentication':
        held.append(invocation)
        emit(event='prompt')
    else:
        invocation.return_value(None)


def connect():
    return Gio.DBusConnection.new_for_address_sync(
        os.environ['DBUS_SYSTEM_BUS_ADDRESS'], Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)


def register_agent(conn):
    conn.register_object('/stamptest/agent', Gio.DBusNodeInfo.new_for_xml(AGENT_XML).interfaces[0],
                         on_agent_call, None, None)
    # polkit finds the agent of a caller without a login session by the caller's process
    with open('/proc/self/stat') as f:
        start_time = int(f.read().rsplit(')', 1)[1].split()[19])
    subject = ('unix-process', {'pid': GLib.Variant('u', os.getpid()),
                                'start-time': GLib.Variant('t', start_time),
                                'uid': GLib.Variant('i', os.getuid())})
    conn.call_sync('org.freedesktop.PolicyKit1', '/org/freedesktop/PolicyKit1/Authority',
                   'org.freedesktop.PolicyKit1.Authority', 'RegisterAuthenticationAgent',
                   GLib.Variant('((sa{sv})ss)', (subject, 'C', '/stamptest/agent')), None,
                   Gio.DBusCallFlags.NONE, 10000, None)


def on_reply(conn, res, name):
    try:
        conn.call_finish(res)
        emit(event='reply', name=name, ok=True)
    except GLib.Error as e:
        emit(event='reply', name=name, error=Gio.DBusError.get_remote_error(e),
             message=e.message)


def main():
    n_connections, n_calls = int(sys.argv[1]), int(sys.argv[2])
    agent = connect()
    register_agent(agent)
    emit(event='agent')
    conns = [connect() for _ in range(n_connections)]
    for i, conn in enumerate(conns):
        for j in range(n_calls):
            name = 'never-%d-%d' % (i, j)
            conn.call('io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', 'CloneImage',
                      GLib.Variant('(ssb)', ('base', name, False)), None,
                      Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION, 3600 * 1000, None,
                      on_reply, name)
    GLib.MainLoop().run()


if __name__ == '__main__':
    sys.exit(main())
