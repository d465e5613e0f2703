#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Machines: StartMachine runs systemd-nspawn on a tiny busybox image with the
caller's fds as stdio; ListMachines, StopMachine, KillMachine, the Machine
object, ephemeral runs, image locking, refusals, an interactive shell through
tmux. The boot of a real system is in test-machine-boot.py (slow suite)."""

import json
import os
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

import stamptest
from stamptest import (ACCESS_DENIED, MANAGER_IFACE, MANAGER_PATH, PYTHON, STAMP_ERROR, USER,
                       GLib, Gio, bus_label_escape, make_image, rule_for, store_state,
                       tree_listing)

MACHINE_IFACE = 'io.stamp.Stamp1.Machine'
MACHINE_PREFIX = '/io/stamp/Stamp1/machine'
NO_SUCH_IMAGE = STAMP_ERROR + 'NoSuchImage'
NO_SUCH_MACHINE = STAMP_ERROR + 'NoSuchMachine'
MACHINE_EXISTS = STAMP_ERROR + 'MachineExists'
IMAGE_BUSY = STAMP_ERROR + 'ImageBusy'
IMAGE_READ_ONLY = STAMP_ERROR + 'ImageReadOnly'
INVALID_NAME = STAMP_ERROR + 'InvalidName'
INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
LIMITS_EXCEEDED = 'org.freedesktop.DBus.Error.LimitsExceeded'

OPTION_TYPES = {'name': 's', 'command': 'as', 'boot': 'b', 'ephemeral': 'b', 'read_only': 'b',
                'private_users': 'b', 'private_network': 'b'}
APPLETS = ('sleep', 'cat', 'ls', 'touch', 'rm', 'true')

# What an unprivileged caller (or a terminal) runs: StartMachine with its own
# fds 0, 1, 2 as the machine's stdio, then it waits for MachineRemoved and
# writes the outcome as JSON.
CLIENT = r'''
import json, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib

image, options, output = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
types = %(types)r
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
loop = GLib.MainLoop()
result = {}

def on_removed(conn, sender, path, iface, member, params):
    name, obj, status = params.unpack()
    if obj == result.get('path'):
        result['exit_status'] = status
        loop.quit()

bus.signal_subscribe('io.stamp.Stamp1', 'io.stamp.Stamp1.Manager', 'MachineRemoved',
                     '/io/stamp/Stamp1', None, Gio.DBusSignalFlags.NONE, on_removed)
fds = Gio.UnixFDList.new()
variants = {k: GLib.Variant(types[k], v) for k, v in options.items()}
for fd, key in enumerate(('stdin', 'stdout', 'stderr')):
    variants[key] = GLib.Variant('h', fds.append(fd))
try:
    reply, _ = bus.call_with_unix_fd_list_sync(
        'io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', 'StartMachine',
        GLib.Variant('(sa{sv})', (image, variants)), GLib.VariantType('(o)'),
        Gio.DBusCallFlags.NONE, 60000, fds, None)
    result['path'] = reply.unpack()[0]
    loop.run()
except GLib.Error as e:
    result['error'] = Gio.DBusError.get_remote_error(e)
    result['message'] = e.message
with open(output, 'w') as f:
    json.dump(result, f)
sys.exit(101 if 'error' in result else result['exit_status'])
''' % {'types': OPTION_TYPES}


def machine_path(name):
    return MACHINE_PREFIX + '/' + bus_label_escape(name)


def add_applets(root):
    """Links for busybox applets, and what nspawn mounts over in a read-only tree."""
    for d in ('dev', 'proc', 'sys', 'run', 'var'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for f in ('etc/resolv.conf', 'etc/localtime'):
        open(os.path.join(root, f), 'a').close()
    for applet in APPLETS:
        link = os.path.join(root, 'bin', applet)
        if not os.path.lexists(link):
            os.symlink('busybox', link)


def make_template(store, name):
    """A read-only image that nspawn can run."""
    path = make_image(store, name)
    add_applets(path)
    stamptest.run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'])
    return path


def hidden_entries(store):
    return sorted(n for n in os.listdir(store) if n.startswith('.') and n != stamptest.STORE_META)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def parent_pid(pid):
    with open('/proc/%d/stat' % pid) as f:
        return int(f.read().rsplit(')', 1)[1].split()[1])


def nspids(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('NSpid:'):
                return [int(x) for x in line.split()[1:]]
    return []


class MachineTestCase(stamptest.TestCase):
    """A daemon on its own pool with one busybox image, base."""

    def setUp(self):
        super().setUp()
        self.addCleanup(self.assert_no_process_left)  # runs after the daemon was stopped
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        self.base = make_image(self.store, 'base')
        add_applets(self.base)
        self.new = self.signals('MachineNew')
        self.removed = self.signals('MachineRemoved')

    def processes_in_store(self):
        found = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    if self.store.encode() + b'/' in f.read():
                        found.append(int(pid))
            except OSError:
                pass
        return found

    def assert_no_process_left(self):
        """Whatever ended the machines, no nspawn or container process of this test may remain."""
        if not getattr(self, 'store', None):
            return
        try:
            stamptest.wait_for(lambda: not self.processes_in_store(), 'no process left in the store',
                               interval=0.05)
        except AssertionError:
            left = self.processes_in_store()
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            self.fail('processes left behind: %r' % left)

    def signals(self, member):
        seen, unsubscribe = self.env.subscribe(MANAGER_IFACE, member, MANAGER_PATH)
        self.addCleanup(unsubscribe)
        return seen

    def options(self, fds=None, **options):
        """a{sv} of StartMachine; fds maps stdin/stdout/stderr to our fds."""
        fd_list = Gio.UnixFDList.new()
        variants = {k: GLib.Variant(OPTION_TYPES[k], v) for k, v in options.items()}
        for key, fd in (fds or {}).items():
            variants[key] = GLib.Variant('h', fd_list.append(fd))
        return variants, fd_list

    def start(self, image='base', fds=None, **options):
        variants, fd_list = self.options(fds, **options)
        path = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'StartMachine', image, variants,
                              fd_list=fd_list)
        name = options.get('name', image)
        self.assertEqual(path, machine_path(name))
        self.addCleanup(self.kill_quietly, name)
        return path

    def kill_quietly(self, name):
        if self.daemon.running():
            try:
                self.root.manager('KillMachine', name, signal.SIGKILL)
            except stamptest.DBusError:
                pass

    def wait_removed(self, name, timeout=stamptest.TIMEOUT):
        """The exit status MachineRemoved carries for name."""
        stamptest.spin_until(lambda: any(n == name for n, _, _ in self.removed),
                             'MachineRemoved(%s)' % name, timeout)
        return [status for n, _, status in self.removed if n == name][-1]

    def props(self, name):
        return self.root.get_all(machine_path(name), MACHINE_IFACE)

    def wait_running(self, name):
        stamptest.wait_for(lambda: self.props(name)['State'] == 'running',
                           'machine %s to be running' % name)
        return self.props(name)

    def sleeper(self, image='base', **options):
        """A machine that runs until told otherwise; returns its properties once running."""
        self.start(image, command=['/bin/sleep', '1000'], **options)
        return self.wait_running(options.get('name', image))

    def list_machines(self):
        return {row[0]: tuple(row[1:]) for row in self.root.manager('ListMachines')}

    def output_file(self):
        fd, path = tempfile.mkstemp(dir=self.dir)
        os.close(fd)
        return path

    def run_command(self, command, image='base', **options):
        """Run command in a machine with stdout and stderr to a file: (exit status, output)."""
        out = self.output_file()
        with open(out, 'w') as f:
            self.start(image, command=command, fds={'stdout': f.fileno(), 'stderr': f.fileno()},
                       **options)
        status = self.wait_removed(options.get('name', image))
        with open(out) as f:
            return status, f.read()

    def write_client(self):
        path = os.path.join(self.dir, 'machine-client.py')
        with open(path, 'w') as f:
            f.write(CLIENT)
        os.chmod(path, 0o755)
        return path


class CommandTest(MachineTestCase):

    def test_command_output_and_exit_status(self):
        r, w = os.pipe()
        try:
            path = self.start(command=['/bin/sh', '-c', 'echo hello from $(cat /etc/hostname); exit 7'],
                              fds={'stdout': w})
        finally:
            os.close(w)  # the daemon holds its own copy, handed to the container
        with os.fdopen(r) as f:
            self.assertEqual(f.read(), 'hello from base\n')
        self.assertEqual(self.wait_removed('base'), 7)
        self.assertIn(('base', path), self.new)
        self.assertEqual(self.removed, [('base', path, 7)])
        self.assertEqual(self.list_machines(), {})
        self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject', self.props, 'base')

    def test_stdin_is_the_callers(self):
        data = os.path.join(self.dir, 'input')
        with open(data, 'w') as f:
            f.write('line one\nline two\n')
        out = self.output_file()
        with open(data) as fin, open(out, 'w') as fout:
            self.start(command=['/bin/sh', '-c', 'cat; echo done'],
                       fds={'stdin': fin.fileno(), 'stdout': fout.fileno()})
        self.assertEqual(self.wait_removed('base'), 0)
        with open(out) as f:
            self.assertEqual(f.read(), 'line one\nline two\ndone\n')

    def test_stdin_given_stderr_not(self):
        """Of the caller's fds only stdin and stdout: stderr is /dev/null, writable,
        and never a copy of the stdin the caller gave."""
        data = os.path.join(self.dir, 'input')
        with open(data, 'w') as f:
            f.write('in\n')
        out = self.output_file()
        with open(data) as fin, open(out, 'w') as fout:
            self.start(command=['/bin/sh', '-c', 'cat; echo to-err >&2 && echo err-ok'],
                       fds={'stdin': fin.fileno(), 'stdout': fout.fileno()})
        self.assertEqual(self.wait_removed('base'), 0)
        with open(out) as f:
            self.assertEqual(f.read(), 'in\nerr-ok\n')
        with open(data) as f:
            self.assertEqual(f.read(), 'in\n')

    def test_stderr_separate(self):
        out, err = self.output_file(), self.output_file()
        with open(out, 'w') as fo, open(err, 'w') as fe:
            self.start(command=['/bin/sh', '-c', 'echo to-out; echo to-err >&2'],
                       fds={'stdout': fo.fileno(), 'stderr': fe.fileno()})
        self.assertEqual(self.wait_removed('base'), 0)
        with open(out) as f:
            self.assertEqual(f.read(), 'to-out\n')
        with open(err) as f:
            self.assertEqual(f.read(), 'to-err\n')

    def test_runs_inside_the_image(self):
        status, output = self.run_command(['/bin/sh', '-c', 'cat /srv/marker /etc/os-release; echo pid=$$'])
        self.assertEqual(status, 0)
        self.assertIn('base\n', output)
        self.assertIn('ID=stamptest', output)
        self.assertNotIn('pid=1\n', output, 'the payload must not be PID 1 (nspawn --as-pid2)')

    def test_root_allows_suid_inside_though_the_pool_does_not(self):
        """The pool is nosuid,nodev on the host; the machine's root is not."""
        status, output = self.run_command(['/bin/cat', '/proc/self/mountinfo'])
        self.assertEqual(status, 0, output)
        root = [line.split() for line in output.splitlines() if line.split()[4:5] == ['/']]
        self.assertTrue(root, output)
        self.assertNotIn('nosuid', root[-1][5].split(','), root[-1])
        self.assertNotIn('nodev', root[-1][5].split(','), root[-1])
        with open('/proc/self/mountinfo') as f:
            pool = [line.split() for line in f if line.split()[4] == self.store]
        self.assertIn('nosuid', pool[-1][5].split(','))

    def test_no_fds_given(self):
        self.start(command=['/bin/sh', '-c', 'echo nobody sees this; exit 3'])
        self.assertEqual(self.wait_removed('base'), 3)

    def test_missing_program(self):
        status, _ = self.run_command(['/bin/no-such-program'])
        self.assertNotEqual(status, 0)

    def test_machine_name_option(self):
        status, output = self.run_command(['/bin/cat', '/proc/sys/kernel/hostname'], name='other-name')
        self.assertEqual((status, output), (0, 'other-name\n'))

    def test_private_network(self):
        status, output = self.run_command(['/bin/ls', '/sys/class/net'], private_network=True)
        self.assertEqual((status, output.split()), (0, ['lo']))

    def test_private_users(self):
        owner = os.stat(os.path.join(self.base, 'srv/marker')).st_uid
        status, output = self.run_command(['/bin/cat', '/proc/self/uid_map'], private_users=True)
        self.assertEqual(status, 0, output)
        inside, outside, count = (int(x) for x in output.split())
        self.assertEqual(inside, 0)
        self.assertNotEqual(outside, 0, 'root in the machine is not root outside')
        self.assertEqual(os.stat(os.path.join(self.base, 'srv/marker')).st_uid, owner)

    def test_read_only(self):
        status, output = self.run_command(
            ['/bin/sh', '-c', 'touch /srv/new 2>&1 || echo refused'], read_only=True)
        self.assertEqual(status, 0)
        self.assertIn('refused', output)
        self.assertFalse(os.path.exists(os.path.join(self.base, 'srv/new')))

    def test_writable_run_changes_the_image(self):
        status, _ = self.run_command(['/bin/sh', '-c', 'echo kept > /srv/kept'])
        self.assertEqual(status, 0)
        with open(os.path.join(self.base, 'srv/kept')) as f:
            self.assertEqual(f.read(), 'kept\n')


class StateTest(MachineTestCase):

    def test_properties_and_list(self):
        t0 = time.time()
        props = self.sleeper()
        t1 = time.time()
        self.assertEqual(props['Name'], 'base')
        self.assertEqual(props['Image'], 'base')
        self.assertEqual(props['State'], 'running')
        self.assertEqual(props['ExitStatus'], -1)
        self.assertFalse(props['Boot'])
        self.assertFalse(props['Ephemeral'])
        # when it started, however long starting took (1 s of slack for clock granularity)
        self.assertTrue(t0 - 1 <= props['Timestamp'] / 1e6 <= t1 + 1, (t0, props['Timestamp'], t1))
        leader = props['Leader']
        self.assertGreater(leader, 0)
        self.assertEqual(nspids(leader)[-1], 1, 'Leader is the container\'s PID 1')
        self.assertEqual(self.list_machines(),
                         {'base': ('base', 'running', leader, machine_path('base'))})

    def test_machine_object_matches_xml(self):
        self.sleeper()
        xml = self.root.call(machine_path('base'), 'org.freedesktop.DBus.Introspectable',
                             'Introspect', sig='()')
        live = stamptest.parse_interfaces(xml)[MACHINE_IFACE]
        want = stamptest.INTERFACES[MACHINE_IFACE]
        for kind in ('methods', 'properties', 'signals'):
            self.assertEqual(live[kind], want[kind], kind)

    def test_machine_nodes_are_enumerable(self):
        self.sleeper()
        self.sleeper(name='second', ephemeral=True)
        xml = self.root.call(MACHINE_PREFIX, 'org.freedesktop.DBus.Introspectable', 'Introspect',
                             sig='()')
        nodes = {n.get('name') for n in ET.fromstring(xml).findall('node')}
        self.assertEqual(nodes, {'base', 'second'})
        objects = self.root.call(MANAGER_PATH, 'org.freedesktop.DBus.ObjectManager',
                                 'GetManagedObjects', sig='()')
        self.assertEqual(objects[machine_path('second')][MACHINE_IFACE]['Ephemeral'], True)

    def test_stop_ends_a_sleep(self):
        props = self.sleeper()
        self.root.manager('StopMachine', 'base')
        status = self.wait_removed('base')
        # The payload was asked (nspawn's stub init sends it SIGTERM: 128 + SIGTERM, as a shell says),
        # not killed after the daemon's stop timeout: a kill ends it with 128 + SIGKILL and says so in
        # the log. (Not timed here: a busy machine is slow.)
        self.assertEqual(status, 128 + signal.SIGTERM)
        self.assertNotIn('did not stop within', self.daemon.log())
        self.assertFalse(pid_alive(props['Leader']))
        self.assertEqual(self.list_machines(), {})

    def test_stop_through_the_object(self):
        self.sleeper()
        self.root.call(machine_path('base'), MACHINE_IFACE, 'Stop')
        self.assertEqual(self.wait_removed('base'), 128 + signal.SIGTERM)

    def test_stop_kills_what_ignores_it(self):
        r, w = os.pipe()
        try:
            self.start(command=['/bin/sh', '-c', 'trap "" TERM HUP; echo armed; while :; do sleep 1; done'],
                       fds={'stdout': w})
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            self.assertEqual(f.readline(), 'armed\n')  # asked before the trap is set, it would end at once
        props = self.wait_running('base')
        t0 = time.monotonic()
        self.root.manager('StopMachine', 'base')
        stamptest.wait_for(lambda: self.props('base')['State'] != 'running', 'state to change')
        self.assertEqual(self.wait_removed('base'), 128 + signal.SIGKILL)
        self.assertGreater(time.monotonic() - t0, 9, 'the daemon waits before it kills')
        self.assertFalse(pid_alive(props['Leader']))

    def test_kill(self):
        props = self.sleeper()
        self.root.manager('KillMachine', 'base', signal.SIGKILL)
        status = self.wait_removed('base')
        self.assertNotEqual(status, 0)
        self.assertFalse(pid_alive(props['Leader']))

    def test_kill_through_the_object(self):
        self.sleeper()
        self.root.call(machine_path('base'), MACHINE_IFACE, 'Kill', signal.SIGKILL)
        self.assertNotEqual(self.wait_removed('base'), 0)

    def test_daemon_stays_while_a_machine_runs(self):
        idle = 1
        self.stop_daemon(self.daemon)
        # Awake until the machine runs, however slow the start; then only the machine keeps it.
        with stamptest.KeepAwake(self.env.conn):
            self.daemon = self.start_daemon(self.store, args=['--idle-timeout', str(idle)])
            self.removed = self.signals('MachineRemoved')
            self.start(command=['/bin/sh', '-c', 'while [ ! -e /srv/go ]; do sleep 0.1; done'])
            self.wait_running('base')
        time.sleep(3 * idle)
        self.assertTrue(self.daemon.running(), 'stampd went idle with a machine running')
        with open(os.path.join(self.base, 'srv/go'), 'w'):
            pass
        self.assertEqual(self.wait_removed('base'), 0)
        stamptest.wait_for(lambda: not self.daemon.running(), 'stampd to exit when idle')

    def test_kill_while_starting(self):
        for i in range(8):
            self.start(name='m%d' % i, read_only=True, command=['/bin/sleep', '1000'])
            self.root.manager('KillMachine', 'm%d' % i, signal.SIGKILL)
        stamptest.spin_until(lambda: len(self.removed) == 8, 'all eight MachineRemoved')
        self.assertEqual(self.list_machines(), {})
        stamptest.wait_for(lambda: not self.processes_in_store(), 'no process left in the store')

    def test_daemon_stop_ends_machines(self):
        props = self.sleeper(ephemeral=True)
        self.stop_daemon(self.daemon)  # SIGTERM; must exit 0
        self.assertFalse(pid_alive(props['Leader']))
        self.assertEqual(hidden_entries(self.store), [])

    def test_daemon_death_takes_machines(self):
        props = self.sleeper(ephemeral=True)
        self.assertEqual(len(hidden_entries(self.store)), 1)
        nspawn = parent_pid(props['Leader'])
        with open('/proc/%d/comm' % nspawn) as f:
            self.assertEqual(f.read().strip(), 'systemd-nspawn')
        supervisor = parent_pid(nspawn)
        self.assertEqual(parent_pid(supervisor), self.daemon.pid)
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.proc.wait()
        for pid in (props['Leader'], nspawn, supervisor):
            stamptest.wait_for(lambda: not pid_alive(pid), 'pid %d to die with the daemon' % pid)
        self.start_daemon(self.store)
        self.assertEqual(hidden_entries(self.store), [],
                         'the next start removes the ephemeral snapshot')


class EphemeralTest(MachineTestCase):

    def test_ephemeral_leaves_nothing(self):
        before_tree = tree_listing(self.base)
        before = store_state(self.store)
        status, output = self.run_command(
            ['/bin/sh', '-c', 'echo changed > /srv/marker; touch /srv/new; rm /etc/hostname; '
             'cat /srv/marker; ls /srv'], ephemeral=True)
        self.assertEqual(status, 0)
        self.assertEqual(output, 'changed\nmarker\nnew\n')
        self.assertEqual(tree_listing(self.base), before_tree)
        self.assertEqual(hidden_entries(self.store), [])
        after = store_state(self.store)
        del before['.'], after['.']  # the store directory held the snapshot for a while
        self.assertEqual(after, before)

    def test_ephemeral_runs_on_a_snapshot(self):
        props = self.sleeper(ephemeral=True)
        self.assertTrue(props['Ephemeral'])
        temps = hidden_entries(self.store)
        self.assertEqual(len(temps), 1)
        self.assertTrue(temps[0].startswith('.#stamp-base-'), temps)
        self.assertSnapshotOf(os.path.join(self.store, temps[0]), self.base)

    def test_ephemeral_killed_leaves_nothing(self):
        before_tree = tree_listing(self.base)
        self.start(command=['/bin/sh', '-c', 'echo x > /srv/marker; sleep 1000'], ephemeral=True)
        self.wait_running('base')
        self.root.manager('KillMachine', 'base', signal.SIGKILL)
        self.wait_removed('base')
        self.assertEqual(hidden_entries(self.store), [])
        self.assertEqual(tree_listing(self.base), before_tree)

    def test_ephemeral_stopped_leaves_nothing(self):
        self.sleeper(ephemeral=True)
        self.root.manager('StopMachine', 'base')
        self.wait_removed('base')
        self.assertEqual(hidden_entries(self.store), [])

    def test_template_runs_ephemeral(self):
        tmpl = make_template(self.store, 'tmpl')
        self.assertTrue(stamptest.subvolume_read_only(tmpl))
        status, output = self.run_command(['/bin/sh', '-c', 'echo w > /srv/w && cat /srv/w'],
                                          image='tmpl', ephemeral=True)
        self.assertEqual((status, output), (0, 'w\n'))
        self.assertFalse(os.path.exists(os.path.join(tmpl, 'srv/w')))
        self.assertEqual(hidden_entries(self.store), [])

    def test_template_runs_read_only(self):
        make_template(self.store, 'tmpl')
        status, output = self.run_command(['/bin/cat', '/srv/marker'], image='tmpl', read_only=True)
        self.assertEqual((status, output), (0, 'tmpl\n'))

    def test_several_ephemeral_runs_of_one_image(self):
        self.sleeper(name='one', ephemeral=True)
        self.sleeper(name='two', ephemeral=True)
        self.assertEqual(len(hidden_entries(self.store)), 2)
        self.assertEqual(sorted(self.list_machines()), ['one', 'two'])


class PlainStoreTest(MachineTestCase):
    """A store that is no btrfs: an ephemeral run works on a full copy."""

    def setUp(self):
        stamptest.TestCase.setUp(self)
        self.addCleanup(self.assert_no_process_left)
        self.daemon = self.start_daemon(kind='plain')
        self.store = self.daemon.store
        self.base = make_image(self.store, 'base', kind='directory')
        add_applets(self.base)
        self.new = self.signals('MachineNew')
        self.removed = self.signals('MachineRemoved')

    def test_ephemeral_on_a_copy(self):
        before_tree = tree_listing(self.base)
        status, output = self.run_command(['/bin/sh', '-c', 'echo x > /srv/marker; cat /srv/marker'],
                                          ephemeral=True)
        self.assertEqual((status, output), (0, 'x\n'))
        self.assertEqual(tree_listing(self.base), before_tree)
        self.assertEqual(hidden_entries(self.store), [])


    # An export of an image that cannot be snapshotted walks its tree on host paths, where root in
    # a machine running on it could swap a directory for a link to the host's /: never both at once.

    def export_to_pipe(self):
        """An uncompressed export of base into a pipe nobody reads: it stalls once the pipe is
        full, holding the image. Returns (job, read end)."""
        r, w = os.pipe()
        jobs = stamptest.JobWatch(self.env.conn)
        self.addCleanup(jobs.close)
        job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExportTar', 'base', 0, 'uncompressed',
                             fd_list=stamptest.fd_list(w))
        return jobs, job, r

    def test_export_refused_while_a_machine_runs_on_the_image(self):
        for options in ({}, {'read_only': True}):
            with self.subTest(**options):
                self.sleeper(name='runner', **options)
                before = store_state(self.store)
                r, w = os.pipe()
                e = self.assertDBusError(IMAGE_BUSY, self.root.call, MANAGER_PATH, MANAGER_IFACE,
                                         'ExportTar', 'base', 0, 'uncompressed',
                                         fd_list=stamptest.fd_list(w))
                self.assertIn('machine runner', e.message)
                os.close(r)
                self.assertEqual(self.root.manager('ListJobs'), [])
                self.assertUnchanged(self.store, before)
                self.root.manager('KillMachine', 'runner', signal.SIGKILL)
                self.wait_removed('runner')
                self.removed.clear()

    def test_no_machine_starts_while_exported_in_place(self):
        jobs, job, r = self.export_to_pipe()  # held from its answer on
        for options in ({}, {'read_only': True}):
            with self.subTest(**options):
                e = self.assertDBusError(IMAGE_BUSY, lambda: self.start(name='late', command=['/bin/true'],
                                                                         **options))
                self.assertIn('exported', e.message)
        self.assertNotIn('late', self.list_machines())
        # an ephemeral run works on a copy of its own: it may
        status, output = self.run_command(['/bin/cat', '/srv/marker'], name='copy', ephemeral=True)
        self.assertEqual((status, output), (0, 'base\n'))
        # the hold ends with the export
        os.close(r)
        self.assertEqual(jobs.wait(job)[0], 'failed')  # its reader went away
        status, _ = self.run_command(['/bin/true'])
        self.assertEqual(status, 0)


class LockTest(MachineTestCase):

    def test_writable_image_runs_once(self):
        self.sleeper(name='one')
        before = store_state(self.store)
        e = self.assertDBusError(IMAGE_BUSY, lambda: self.start(name='two', command=['/bin/true']))
        self.assertIn('base', e.message)
        self.assertIn('one', e.message)
        self.assertDBusError(IMAGE_BUSY, lambda: self.start(name='two', read_only=True))
        self.assertEqual(sorted(self.list_machines()), ['one'])
        self.assertUnchanged(self.store, before)

    def test_running_image_cannot_be_removed_or_renamed(self):
        self.sleeper()
        for call in (lambda: self.root.manager('RemoveImage', 'base'),
                     lambda: self.root.manager('RenameImage', 'base', 'moved'),
                     lambda: self.root.manager('MarkImageReadOnly', 'base', True)):
            e = self.assertDBusError(IMAGE_BUSY, call)
            self.assertIn('machine base', e.message)
        self.assertTrue(os.path.isdir(self.base))
        self.root.manager('StopMachine', 'base')
        self.wait_removed('base')
        self.root.manager('RemoveImage', 'base')
        self.assertFalse(os.path.exists(self.base))

    def test_read_only_runs_share_the_image(self):
        self.sleeper(name='one', read_only=True)
        self.sleeper(name='two', read_only=True)
        self.assertDBusError(IMAGE_BUSY, lambda: self.start(name='three', command=['/bin/true']))
        self.root.manager('KillMachine', 'one', signal.SIGKILL)
        self.wait_removed('one')
        self.assertDBusError(IMAGE_BUSY, self.root.manager, 'RemoveImage', 'base')
        self.root.manager('KillMachine', 'two', signal.SIGKILL)
        self.wait_removed('two')
        self.root.manager('RemoveImage', 'base')

    def test_ephemeral_run_holds_nothing(self):
        self.sleeper(name='eph', ephemeral=True)
        status, _ = self.run_command(['/bin/true'], name='writer')
        self.assertEqual(status, 0)


class RefusalTest(MachineTestCase):

    def test_missing_image(self):
        before = store_state(self.store)
        e = self.assertDBusError(NO_SUCH_IMAGE, lambda: self.start('ghost'))
        self.assertIn('ghost', e.message)
        self.assertUnchanged(self.store, before)

    def test_name_taken(self):
        self.sleeper(ephemeral=True)
        e = self.assertDBusError(MACHINE_EXISTS, self.start, ephemeral=True,
                                 command=['/bin/true'])
        self.assertIn('base', e.message)
        self.assertEqual(self.removed, [])

    def test_read_only_image_started_writable(self):
        make_template(self.store, 'tmpl')
        e = self.assertDBusError(IMAGE_READ_ONLY, lambda: self.start('tmpl', command=['/bin/true']))
        self.assertIn('tmpl', e.message)
        self.assertIn('ephemeral', e.message)
        self.assertEqual(self.list_machines(), {})

    def test_bad_option_types(self):
        for options in ({'boot': GLib.Variant('s', 'yes')},
                        {'command': GLib.Variant('s', '/bin/true')},
                        {'name': GLib.Variant('b', True)},
                        {'stdout': GLib.Variant('i', 1)},
                        {'no_such_option': GLib.Variant('b', True)}):
            with self.subTest(options=options):
                e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'StartMachine', 'base',
                                         options)
                self.assertIn(list(options)[0], e.message)
        self.assertEqual(self.new, [])

    def test_bad_fds(self):
        path_fd = os.open(self.dir, os.O_PATH)
        ro_fd = os.open(os.path.join(self.base, 'srv/marker'), os.O_RDONLY)
        wo_fd = os.open(self.output_file(), os.O_WRONLY)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for key, fd in (('stdin', path_fd), ('stdout', ro_fd), ('stderr', ro_fd),
                            ('stdin', wo_fd), ('stdout', dir_fd)):
                with self.subTest(key=key, fd=fd):
                    e = self.assertDBusError(INVALID_ARGS, self.start, fds={key: fd},
                                             command=['/bin/true'])
                    self.assertIn(key, e.message)
        finally:
            for fd in (path_fd, ro_fd, wo_fd, dir_fd):
                os.close(fd)
        self.assertEqual(self.new, [])

    def test_boot_and_command_exclude_each_other(self):
        self.assertDBusError(INVALID_ARGS, lambda: self.start(boot=True, command=['/bin/true']))

    def test_invalid_names(self):
        for name in ('a_b', 'x.', '../x', '', 'a..b', 'a' * 65):
            with self.subTest(name=name):
                self.assertDBusError(INVALID_NAME, lambda: self.start(name=name, command=['/bin/true']))
        add_applets(make_image(self.store, 'my_image'))
        e = self.assertDBusError(INVALID_NAME, lambda: self.start('my_image', command=['/bin/true']))
        self.assertIn('name', e.message)
        status, _ = self.run_command(['/bin/true'], image='my_image', name='my-image')
        self.assertEqual(status, 0)

    def test_bad_signal_numbers(self):
        self.sleeper()
        for signo in (0, -1, 65, 1000):
            with self.subTest(signal=signo):
                e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'KillMachine', 'base', signo)
                self.assertIn(str(signo), e.message)
                self.assertDBusError(INVALID_ARGS, self.root.call, machine_path('base'),
                                     MACHINE_IFACE, 'Kill', signo)
        self.assertEqual(self.props('base')['State'], 'running')

    def test_unknown_machine(self):
        e = self.assertDBusError(NO_SUCH_MACHINE, self.root.manager, 'StopMachine', 'ghost')
        self.assertIn('ghost', e.message)
        self.assertDBusError(NO_SUCH_MACHINE, self.root.manager, 'KillMachine', 'ghost', 15)
        self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject', self.root.call,
                             machine_path('ghost'), MACHINE_IFACE, 'Stop')

    def test_limit_per_caller(self):
        for i in range(16):
            self.start(name='m%d' % i, read_only=True, command=['/bin/sleep', '1000'])
        e = self.assertDBusError(LIMITS_EXCEEDED, lambda: self.start(
            name='m16', read_only=True, command=['/bin/true']))
        self.assertIn('16', e.message)
        self.assertEqual(len(self.list_machines()), 16)

    def test_limit_per_user_across_connections(self):
        """A user's machines count together, whichever connection started
        them: each call here comes from a process (a connection) of its own."""
        self.allow(USER, 'start-machine')

        def user_start(name):
            self.addCleanup(self.kill_quietly, name)
            return self.user.manager('StartMachine', 'base', {
                'name': GLib.Variant('s', name), 'read_only': GLib.Variant('b', True),
                'command': GLib.Variant('as', ['/bin/sleep', '1000'])})
        for i in range(16):
            user_start('u%d' % i)
        e = self.assertDBusError(LIMITS_EXCEEDED, user_start, 'u16')
        self.assertIn('per user', e.message)
        self.assertIn('16', e.message)
        self.assertEqual(len(self.list_machines()), 16)
        # root is not held back by the user's machines
        self.start(name='r0', read_only=True, command=['/bin/sleep', '1000'])
        self.assertEqual(len(self.list_machines()), 17)


class UserTest(MachineTestCase):

    def user_start(self, options, stdout):
        """StartMachine by USER through the client; returns its JSON outcome."""
        client = self.write_client()
        result = os.path.join(self.dir, 'result.json')
        open(result, 'w').close()
        os.chown(result, self.env.users[USER], self.env.users[USER])
        cmd = self.env.as_user(USER, [PYTHON, client, 'base', json.dumps(options), result])
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stdout,
                       timeout=stamptest.TIMEOUT)
        with open(result) as f:
            return json.load(f)

    def test_unauthorized_user_is_refused(self):
        self.allow(USER, 'start-machine', 'NO')
        before = store_state(self.store)
        out = self.output_file()
        with open(out, 'w') as f:
            result = self.user_start({'command': ['/bin/sh', '-c', 'touch /srv/pwned']}, f)
        self.assertEqual(result.get('error'), ACCESS_DENIED, result)
        self.assertEqual(self.new, [])
        self.assertEqual(self.list_machines(), {})
        self.assertFalse(os.path.exists(os.path.join(self.base, 'srv/pwned')))
        self.assertUnchanged(self.store, before)

    def test_authorized_user_runs_a_command(self):
        self.allow(USER, 'start-machine')
        out = self.output_file()
        os.chown(out, self.env.users[USER], self.env.users[USER])
        with open(out, 'w') as f:
            result = self.user_start({'command': ['/bin/sh', '-c', 'echo as-user; exit 4']}, f)
        self.assertEqual(result, {'path': machine_path('base'), 'exit_status': 4})
        with open(out) as f:
            self.assertEqual(f.read(), 'as-user\n')

    def test_stop_and_kill_need_their_own_authorization(self):
        self.set_rules(rule_for(USER, 'start-machine', 'YES') + rule_for(USER, 'manage-machines', 'NO'))
        self.sleeper()
        for call in (lambda: self.user.manager('StopMachine', 'base'),
                     lambda: self.user.manager('KillMachine', 'base', 9),
                     lambda: self.user.call(machine_path('base'), MACHINE_IFACE, 'Stop')):
            self.assertDBusError(ACCESS_DENIED, call)
        self.assertEqual(self.props('base')['State'], 'running')
        self.allow(USER, 'manage-machines')
        self.user.manager('StopMachine', 'base')
        self.assertEqual(self.wait_removed('base'), 128 + signal.SIGTERM)


class OwnMachineTest(MachineTestCase):
    """A user granted only the -own- actions starts machines on their own
    clone of a template: always in a user namespace of stampd's choosing,
    with the image 0-based on disk; nothing of anyone else's."""

    OWN = ('manage-own-images', 'start-own-machine', 'manage-own-machines')
    REFUSED = (ACCESS_DENIED, stamptest.INTERACTIVE_REQUIRED)

    def setUp(self):
        super().setUp()
        make_template(self.store, 'tmpl')
        self.set_rules(''.join(rule_for(u, a, 'YES') for u in (USER, stamptest.USER2) for a in self.OWN))
        self.user.manager('CloneImage', 'tmpl', 'mine', False)
        self.uid = self.env.users[USER]

    def user_start(self, image, options, user=USER):
        """StartMachine by @user with stdout to a file: (JSON outcome, output)."""
        client = self.write_client()
        result, out = os.path.join(self.dir, 'result.json'), self.output_file()
        for p in (result, out):
            open(p, 'w').close()
            os.chown(p, self.env.users[user], self.env.users[user])
        cmd = self.env.as_user(user, [PYTHON, client, image, json.dumps(options), result])
        with open(out, 'w') as f:
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=stamptest.TIMEOUT)
        with open(result) as f, open(out) as o:
            return json.load(f), o.read()

    def user_sleeper(self, image='mine'):
        client = self.write_client()
        result = os.path.join(self.dir, 'sleeper.json')
        open(result, 'w').close()
        os.chown(result, self.uid, self.uid)
        proc = subprocess.Popen(self.env.as_user(USER, [PYTHON, client, image,
                                                        json.dumps({'command': ['/bin/sleep', '1000']}),
                                                        result]),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait)
        self.addCleanup(self.kill_quietly, image)
        stamptest.wait_for(lambda: image in self.list_machines() and self.props(image)['State'] == 'running',
                           'the user\'s machine to run')
        return self.props(image)

    def test_runs_in_a_user_namespace(self):
        result, out = self.user_start('mine', {'command': [
            '/bin/sh', '-c', 'cat /proc/self/uid_map; touch /srv/made-inside; ls -ln /srv/marker']})
        self.assertEqual(result.get('exit_status'), 0, (result, out))
        inside, shift, size = (int(x) for x in out.splitlines()[0].split())
        self.assertEqual((inside, size), (0, 65536))
        self.assertGreaterEqual(shift, 0x60000000, 'root inside is an unprivileged host uid')
        self.assertIn(' 0 ', out.splitlines()[1], 'the image is shown 0-based inside')
        st = os.lstat(os.path.join(self.store, 'mine/srv/made-inside'))
        self.assertEqual((st.st_uid, st.st_gid), (0, 0), 'files land 0-based on disk')

    def test_seen_from_the_host(self):
        props = self.user_sleeper()
        self.assertTrue(props['UserNamespace'])
        self.assertEqual(props['Owner'], self.uid)
        with open('/proc/%d/uid_map' % props['Leader']) as f:
            inside, shift, size = (int(x) for x in f.read().split())
        self.assertEqual((inside, shift, size), (0, props['UIDShift'], 65536))
        st = os.stat('/proc/%d' % props['Leader'])
        self.assertEqual(st.st_uid, props['UIDShift'], 'the container\'s root is that host uid')
        lines = stamptest.run([stamptest.STAMPCTL, 'machines']).stdout.splitlines()
        self.assertEqual(lines[0].split(), ['NAME', 'IMAGE', 'STATE', 'LEADER', 'USERNS', 'OWNER'])
        row = [line.split() for line in lines[1:] if line.startswith('mine')][0]
        self.assertEqual(row[4:], ['yes', USER])
        # Only its starter (or an administrator) stops it.
        self.assertDBusError(stamptest.INTERACTIVE_REQUIRED, self.user2.manager, 'StopMachine', 'mine')
        self.assertDBusError(stamptest.INTERACTIVE_REQUIRED, self.user2.manager, 'KillMachine', 'mine', 9)
        self.user.manager('StopMachine', 'mine')
        self.assertEqual(self.wait_removed('mine'), 128 + signal.SIGTERM)

    def test_two_machines_get_different_ranges(self):
        self.user.manager('CloneImage', 'tmpl', 'mine2', False)
        one, two = self.user_sleeper('mine'), self.user_sleeper('mine2')
        self.assertNotEqual(one['UIDShift'], two['UIDShift'])
        self.assertGreaterEqual(abs(one['UIDShift'] - two['UIDShift']), 65536)

    def test_root_mapped_machine_refused(self):
        before = store_state(self.store)
        result, _ = self.user_start('mine', {'private_users': False, 'command': ['/bin/true']})
        self.assertIn(result.get('error'), self.REFUSED, result)
        self.assertIn('start-machine', result['message'], 'root mapping is the administrator\'s')
        self.assertEqual(self.list_machines(), {})
        self.assertUnchanged(self.store, before)

    def test_other_images_refused(self):
        self.user2.manager('CloneImage', 'tmpl', 'theirs', False)
        for image, options in (('theirs', {}), ('tmpl', {'ephemeral': True}), ('base', {})):
            with self.subTest(image=image):
                result, _ = self.user_start(image, dict(options, command=['/bin/true']))
                self.assertIn(result.get('error'), self.REFUSED, result)
        self.assertEqual(self.new, [])

    def test_setuid_file_made_inside_is_unreachable(self):
        result, out = self.user_start('mine', {'command': [
            '/bin/sh', '-c', 'cp /bin/busybox /srv/suid && chmod 4755 /srv/suid && ls -ln /srv/suid']})
        self.assertEqual(result.get('exit_status'), 0, (result, out))
        suid = os.path.join(self.store, 'mine/srv/suid')
        st = os.lstat(suid)
        self.assertEqual((st.st_uid, st.st_mode & 0o7777), (0, 0o4755), 'a setuid-root file on disk')
        for user in (USER, stamptest.USER2):
            p = stamptest.run(self.env.as_user(user, [suid, 'id', '-u']), check=False)
            self.assertNotEqual(p.returncode, 0, 'a host user ran it: %s' % p.stdout)
            self.assertIn('Permission denied', p.stderr)


class ShellTest(MachineTestCase):

    def shell_in_tmux(self, argv):
        pane = self.run_in_terminal(USER, argv)
        stamptest.wait_for(lambda: '# ' in pane.capture() or pane.exited(),
                           'the shell prompt in the container')
        self.assertFalse(pane.exited(), pane.capture())
        pane.type_line('echo hi-$((6*7)) in $(cat /etc/hostname)')
        stamptest.wait_for(lambda: 'hi-42 in base' in pane.capture(), 'the command output')
        pane.type_line('exit 5')
        return pane

    def test_interactive_shell(self):
        self.allow(USER, 'start-machine')
        client = self.write_client()
        result = os.path.join(self.dir, 'result.json')
        open(result, 'w').close()
        os.chown(result, self.env.users[USER], self.env.users[USER])
        pane = self.shell_in_tmux([PYTHON, client, 'base', '{}', result])
        self.assertEqual(pane.wait_exit(), 5)
        with open(result) as f:
            self.assertEqual(json.load(f), {'path': machine_path('base'), 'exit_status': 5})
        self.assertEqual(self.wait_removed('base'), 5)

    def test_stampctl_shell(self):
        if not os.access(stamptest.STAMPCTL, os.X_OK):
            self.skipTest('stampctl is not built')
        self.allow(USER, 'start-machine')
        pane = self.shell_in_tmux([stamptest.STAMPCTL, 'shell', 'base'])
        self.assertEqual(pane.wait_exit(), 5)
        self.assertEqual(self.wait_removed('base'), 5)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
