#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Commands in running machines: ExecMachine and Machine.Exec run a command
inside a machine (its namespaces, its cgroup, its root, a user of its own
/etc/passwd) with the caller's fds, and ExecExited tells the caller alone how
it ended; stampctl exec and stampctl shell on a running machine; the
authorization (io.stamp.Stamp1.login, or manage-own-machines for whoever
started the machine, whose machines run in a user namespace); refusals."""

import json
import os
import signal
import subprocess
import tempfile

import stamptest
from stamptest import (ACCESS_DENIED, INTERACTIVE_REQUIRED, MANAGER_IFACE, MANAGER_PATH, PYTHON,
                       STAMP_ERROR, USER, USER2, GLib, Gio, bus_label_escape, make_image, rule_for,
                       store_state)

MACHINE_IFACE = 'io.stamp.Stamp1.Machine'
MACHINE_PREFIX = '/io/stamp/Stamp1/machine'
NO_SUCH_MACHINE = STAMP_ERROR + 'NoSuchMachine'
INVALID_NAME = STAMP_ERROR + 'InvalidName'
INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
APPLETS = ('sleep', 'cat', 'ls', 'touch', 'rm', 'true', 'echo', 'id', 'kill', 'head', 'od', 'readlink',
           'hostname', 'pwd', 'env', 'stat', 'tr', 'wc', 'printf')
START_TYPES = {'name': 's', 'command': 'as', 'read_only': 'b', 'ephemeral': 'b', 'private_users': 'b'}
EXEC_TYPES = {'user': 's', 'environment': 'as', 'working_directory': 's'}
PASSWD = 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n'
GROUP = 'root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n'

# What an unprivileged caller (or a terminal) runs: ExecMachine with its own
# fds 0, 1, 2, then it waits for ExecExited and writes the outcome as JSON.
EXEC_CLIENT = r'''
import json, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib

name, argv, options, output = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
types = %(types)r
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
loop = GLib.MainLoop()
result = {}
seen = []

def on_exited(conn, sender, path, iface, member, params):
    seen.append(params.unpack())
    if 'id' in result and any(s[0] == result['id'] for s in seen):
        loop.quit()

bus.signal_subscribe('io.stamp.Stamp1', 'io.stamp.Stamp1.Manager', 'ExecExited',
                     '/io/stamp/Stamp1', None, Gio.DBusSignalFlags.NONE, on_exited)
fds = Gio.UnixFDList.new()
variants = {k: GLib.Variant(types[k], v) for k, v in options.items()}
for fd, key in enumerate(('stdin', 'stdout', 'stderr')):
    variants[key] = GLib.Variant('h', fds.append(fd))
try:
    reply, _ = bus.call_with_unix_fd_list_sync(
        'io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', 'ExecMachine',
        GLib.Variant('(sasa{sv})', (name, argv, variants)), GLib.VariantType('(u)'),
        Gio.DBusCallFlags.NONE, 60000, fds, None)
    result['id'] = reply.unpack()[0]
    if not any(s[0] == result['id'] for s in seen):
        loop.run()
    s = [s for s in seen if s[0] == result['id']][0]
    result.update(machine=s[1], result=s[2], status=s[3], message=s[4])
except GLib.Error as e:
    result['error'] = Gio.DBusError.get_remote_error(e)
    result['message'] = e.message
with open(output, 'w') as f:
    json.dump(result, f)
''' % {'types': EXEC_TYPES}


def machine_path(name):
    return MACHINE_PREFIX + '/' + bus_label_escape(name)


def add_applets(root):
    for d in ('dev', 'proc', 'sys', 'run', 'var', 'home/alice', 'root'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chown(os.path.join(root, 'home/alice'), 1000, 1000)
    for f in ('etc/resolv.conf', 'etc/localtime'):
        open(os.path.join(root, f), 'a').close()
    stamptest.write_file(os.path.join(root, 'etc/passwd'), PASSWD)
    stamptest.write_file(os.path.join(root, 'etc/group'), GROUP)
    for applet in APPLETS:
        link = os.path.join(root, 'bin', applet)
        if not os.path.lexists(link):
            os.symlink('busybox', link)


def status_of(pid):
    """The Uid: line of /proc/PID/status, as the host sees it."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Uid:'):
                return [int(x) for x in line.split()[1:]]
    return None


class ExecTestCase(stamptest.TestCase):
    """A daemon on its own pool with one busybox image, base, and a machine
    on it that sleeps."""

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        self.base = make_image(self.store, 'base')
        add_applets(self.base)
        self.exited, unsubscribe = self.env.subscribe(MANAGER_IFACE, 'ExecExited', MANAGER_PATH)
        self.addCleanup(unsubscribe)

    # -- machines

    def start(self, image='base', **options):
        variants = {k: GLib.Variant(START_TYPES[k], v) for k, v in options.items()}
        path = self.root.manager('StartMachine', image, variants)
        name = options.get('name', image)
        self.addCleanup(self.kill_quietly, name)
        return path

    def kill_quietly(self, name):
        if self.daemon.running():
            try:
                self.root.manager('KillMachine', name, signal.SIGKILL)
            except stamptest.DBusError:
                pass

    def props(self, name):
        return self.root.get_all(machine_path(name), MACHINE_IFACE)

    def sleeper(self, image='base', **options):
        """A machine that runs until told otherwise; returns its properties once running."""
        self.start(image, command=['/bin/sleep', '100000'], **options)
        name = options.get('name', image)
        stamptest.wait_for(lambda: self.props(name)['State'] == 'running', 'machine %s to run' % name)
        return self.props(name)

    # -- commands

    def exec_options(self, fds=None, **options):
        fd_list = Gio.UnixFDList.new()
        variants = {k: GLib.Variant(EXEC_TYPES[k], v) for k, v in options.items()}
        for key, fd in (fds or {}).items():
            variants[key] = GLib.Variant('h', fd_list.append(fd))
        return variants, fd_list

    def exec_call(self, argv, name='base', fds=None, on_machine=False, **options):
        variants, fd_list = self.exec_options(fds, **options)
        if on_machine:
            return self.root.call(machine_path(name), MACHINE_IFACE, 'Exec', argv, variants,
                                  fd_list=fd_list)
        return self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExecMachine', name, argv, variants,
                              fd_list=fd_list)

    def wait_exited(self, exec_id):
        """(result, status, message) of ExecExited for exec_id."""
        stamptest.spin_until(lambda: any(e[0] == exec_id for e in self.exited),
                             'ExecExited(%d)' % exec_id)
        e = [e for e in self.exited if e[0] == exec_id][-1]
        return e[2], e[3], e[4]

    def run_exec(self, argv, name='base', stdin=None, **options):
        """Run argv with stdout and stderr to files of their own: (result, status, out, err)."""
        out, err = self.output_file(), self.output_file()
        fds = {}
        with open(out, 'wb') as fo, open(err, 'wb') as fe:
            fds = {'stdout': fo.fileno(), 'stderr': fe.fileno()}
            if stdin is not None:
                fds['stdin'] = stdin
            exec_id = self.exec_call(argv, name, fds=fds, **options)
        result, status, message = self.wait_exited(exec_id)
        with open(out, 'rb') as fo, open(err, 'rb') as fe:
            return result, status, fo.read(), fe.read(), message

    def output_file(self):
        fd, path = tempfile.mkstemp(dir=self.dir)
        os.close(fd)
        return path

    def write_client(self):
        path = os.path.join(self.dir, 'exec-client.py')
        with open(path, 'w') as f:
            f.write(EXEC_CLIENT)
        os.chmod(path, 0o755)
        return path

    def user_exec(self, name, argv, options=None, user=USER, stdin=None):
        """ExecMachine by user through the client: (JSON outcome, stdout, stderr)."""
        client = self.write_client()
        result, out, err = os.path.join(self.dir, 'result.json'), self.output_file(), self.output_file()
        for p in (result, out, err):
            open(p, 'w').close()
            os.chown(p, self.env.users[user], self.env.users[user])
        cmd = self.env.as_user(user, [PYTHON, client, name, json.dumps(argv), json.dumps(options or {}),
                                      result])
        with open(out, 'w') as fo, open(err, 'w') as fe:
            subprocess.run(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=fo,
                           stderr=fe, timeout=stamptest.TIMEOUT)
        with open(result) as f, open(out) as fo, open(err) as fe:
            return json.load(f), fo.read(), fe.read()


class StreamsTest(ExecTestCase):

    def setUp(self):
        super().setUp()
        self.sleeper()

    def test_stdout_and_stderr_separate(self):
        result, status, out, err, _ = self.run_exec(
            ['/bin/sh', '-c', 'echo to-out; echo to-err >&2; printf "no newline"'])
        self.assertEqual((result, status), ('exited', 0))
        self.assertEqual(out, b'to-out\nno newline')
        self.assertEqual(err, b'to-err\n')


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
