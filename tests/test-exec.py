#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Commands in running machines: ExecMachine and Machine.Exec run a command
inside a machine (its namespaces, its cgroup, its root, a user of its own
/etc/passwd) with the caller's fds, and ExecExited tells the caller alone how
it ended; stampctl exec and stampctl shell on a running machine; the
authorization (io.stamp.Stamp1.login, or manage-own-machines for whoever
started the machine, whose machines run in a user namespace); refusals."""

import errno
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


def host_pid(inner, leader):
    """The host pid of the process that is pid inner in the PID namespace of leader, or None."""
    with open('/proc/%d/status' % leader) as f:
        depth = len([line.split()[1:] for line in f if line.startswith('NSpid:')][0])
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/status' % pid) as f:
                ids = [line.split()[1:] for line in f if line.startswith('NSpid:')][0]
            if len(ids) == depth and int(ids[-1]) == inner and \
                    os.readlink('/proc/%s/ns/pid' % pid) == os.readlink('/proc/%d/ns/pid' % leader):
                return int(pid)
        except (OSError, IndexError):
            continue
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


    def test_stdin_reaches_the_command(self):
        data = os.path.join(self.dir, 'input')
        with open(data, 'w') as f:
            f.write('line one\nline two\n')
        with open(data) as fin:
            result, status, out, err, _ = self.run_exec(['/bin/sh', '-c', 'cat; echo done'],
                                                        stdin=fin.fileno())
        self.assertEqual((result, status, out, err), ('exited', 0, b'line one\nline two\ndone\n', b''))

    def test_binary_payload_round_trips(self):
        payload = bytes(range(256)) * 64 + os.urandom(200000) + b'\0\r\n\x1b[0m'
        data = os.path.join(self.dir, 'payload')
        with open(data, 'wb') as f:
            f.write(payload)
        with open(data, 'rb') as fin:
            result, status, out, err, _ = self.run_exec(['/bin/cat'], stdin=fin.fileno())
        self.assertEqual((result, status, err), ('exited', 0, b''))
        self.assertEqual(len(out), len(payload))
        self.assertTrue(out == payload, 'the bytes differ')

    def test_through_a_pipe(self):
        """Pipes as the caller's fds: what the caller writes, the command reads; what it
        writes, the caller reads, until the command ends."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            exec_id = self.exec_call(['/bin/sh', '-c', 'read line; echo "got $line"'],
                                     fds={'stdin': in_r, 'stdout': out_w})
        finally:
            os.close(in_r)
            os.close(out_w)
        os.write(in_w, b'hello\n')
        os.close(in_w)
        with os.fdopen(out_r, 'rb') as f:
            self.assertEqual(f.read(), b'got hello\n')
        self.assertEqual(self.wait_exited(exec_id), ('exited', 0, ''))

    def test_exit_statuses(self):
        for code in (0, 3, 255):
            with self.subTest(code=code):
                result, status, _, _, _ = self.run_exec(['/bin/sh', '-c', 'exit %d' % code])
                self.assertEqual((result, status), ('exited', code))

    def test_killed_by_a_signal(self):
        result, status, _, _, _ = self.run_exec(['/bin/sh', '-c', 'kill -TERM $$'])
        self.assertEqual((result, status), ('killed', signal.SIGTERM))
        result, status, _, _, _ = self.run_exec(['/bin/sh', '-c', 'kill -KILL $$'])
        self.assertEqual((result, status), ('killed', signal.SIGKILL))

    def test_killed_from_outside(self):
        """A command killed from the host is reported killed, with the signal."""
        r, w = os.pipe()
        try:
            exec_id = self.exec_call(['/bin/sh', '-c', 'echo $$; exec sleep 100000'], fds={'stdout': w})
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            inner = int(f.readline())
        pid = host_pid(inner, self.props('base')['Leader'])
        self.assertIsNotNone(pid)
        os.kill(pid, signal.SIGUSR1)
        self.assertEqual(self.wait_exited(exec_id), ('killed', signal.SIGUSR1, ''))

    def test_environment_user_and_directory(self):
        result, status, out, err, _ = self.run_exec(
            ['/bin/sh', '-c', 'id -u; id -g; id -G; pwd; echo "$HOME $USER $LOGNAME $SHELL"; echo "$GREETING"; '
             'echo "$PATH"'])
        self.assertEqual((result, status, err), ('exited', 0, b''))
        self.assertEqual(out.decode().splitlines(),
                         ['0', '0', '0', '/root', '/root root root /bin/sh', '',
                          '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'])
        result, status, out, err, _ = self.run_exec(
            ['/bin/sh', '-c', 'id -u; id -g; id -G; pwd; echo "$HOME $USER"; echo "$GREETING"; echo "$PATH"'],
            user='alice', environment=['GREETING=hello there', 'PATH=/bin'])
        self.assertEqual((result, status, err), ('exited', 0, b''))
        self.assertEqual(out.decode().splitlines(),
                         ['1000', '1000', '1000 10', '/home/alice', '/home/alice alice', 'hello there', '/bin'])
        result, status, out, err, _ = self.run_exec(['/bin/sh', '-c', 'id -u; pwd'], user='4321',
                                                    working_directory='/srv')
        self.assertEqual((result, status, out), ('exited', 0, b'4321\n/srv\n'))

    def test_program_found_on_the_machines_path(self):
        result, status, out, _, _ = self.run_exec(['echo', 'found'])
        self.assertEqual((result, status, out), ('exited', 0, b'found\n'))

    def test_machine_method(self):
        out = self.output_file()
        with open(out, 'w') as f:
            exec_id = self.exec_call(['/bin/echo', 'on the object'], fds={'stdout': f.fileno()},
                                     on_machine=True)
        self.assertEqual(self.wait_exited(exec_id), ('exited', 0, ''))
        with open(out) as f:
            self.assertEqual(f.read(), 'on the object\n')

    def test_ids_differ_and_signal_names_the_machine(self):
        a = self.exec_call(['/bin/true'])
        b = self.exec_call(['/bin/true'])
        self.assertNotEqual(a, b)
        self.wait_exited(a)
        self.wait_exited(b)
        self.assertEqual({e[1] for e in self.exited}, {'base'})

    def test_failures_to_run(self):
        """What cannot be run at all is 'failed', with a message naming it; the
        caller's streams stay clean."""
        stamptest.write_file(os.path.join(self.base, 'srv/not-executable'), '#!/bin/sh\n', mode=0o644)
        cases = [
            (['/bin/no-such-program'], {}, 'exec-failed', errno.ENOENT, 'no-such-program'),
            (['no-such-program'], {}, 'exec-failed', errno.ENOENT, 'no-such-program'),
            (['/srv/not-executable'], {}, 'exec-failed', errno.EACCES, 'not-executable'),
            (['/bin/true'], {'user': 'nobody-here'}, 'failed', errno.ESRCH, 'nobody-here'),
            (['/bin/true'], {'working_directory': '/no/such/dir'}, 'failed', errno.ENOENT, '/no/such/dir'),
        ]
        for argv, options, want, error, named in cases:
            with self.subTest(argv=argv, options=options):
                result, status, out, err, message = self.run_exec(argv, **options)
                self.assertEqual((result, status), (want, error), message)
                self.assertIn(named, message)
                self.assertIn('machine base', message)
                self.assertEqual((out, err), (b'', b''))



class InsideTest(ExecTestCase):
    """The command runs where the machine's init runs."""

    NAMESPACES = ('pid', 'mnt', 'uts', 'ipc', 'net', 'cgroup', 'user')

    def leader_facts(self, leader):
        ns = {n: os.readlink('/proc/%d/ns/%s' % (leader, n)) for n in self.NAMESPACES}
        with open('/proc/%d/cgroup' % leader) as f:
            cgroup = f.read()
        with open('/proc/%d/status' % leader) as f:
            status = dict(line.rstrip('\n').split(':\t', 1) for line in f if ':\t' in line)
        return ns, cgroup, status

    def check_inside(self, name, **start):
        props = self.sleeper(name=name, **start) if name != 'base' else self.sleeper(**start)
        leader = props['Leader']
        ns, cgroup, leader_status = self.leader_facts(leader)
        script = ('for n in %s; do echo "ns $n $(readlink /proc/self/ns/$n)"; done; echo "hostname $(hostname)"; '
                  'echo "cgroups-equal $(cat /proc/self/cgroup | tr "\\n" " ")|$(cat /proc/1/cgroup | tr "\\n" " ")"; '
                  'echo "pid $$"; read x' % ' '.join(self.NAMESPACES))
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            exec_id = self.exec_call(['/bin/sh', '-c', script], name=name, fds={'stdout': out_w, 'stdin': in_r})
        finally:
            os.close(out_w)
            os.close(in_r)
        lines = {}
        with os.fdopen(out_r) as f:
            while True:
                line = f.readline()
                if not line:
                    break
                key, _, value = line.rstrip('\n').partition(' ')
                if key == 'ns':
                    n, _, value = value.partition(' ')
                    key = 'ns ' + n
                lines[key] = value
                if key == 'pid':
                    # Still running: look at it from the host.
                    host = host_pid(int(value), leader)
                    with open('/proc/%d/cgroup' % host) as c:
                        lines['host-cgroup'] = c.read()
                    with open('/proc/%d/status' % host) as st:
                        lines['host-status'] = dict(x.rstrip('\n').split(':\t', 1) for x in st if ':\t' in x)
                    os.write(in_w, b'\n')
                    os.close(in_w)
        self.assertEqual(self.wait_exited(exec_id), ('exited', 0, ''))
        for n in self.NAMESPACES:
            self.assertEqual(lines['ns ' + n], ns[n], 'the %s namespace is the machine\'s' % n)
        self.assertEqual(lines['hostname'], name)
        inner, init = lines['cgroups-equal'].split('|')
        self.assertEqual(inner, init, 'inside, the command\'s cgroups are those of the machine\'s PID 1')
        self.assertEqual(lines['host-cgroup'], cgroup, 'on the host, the command is in the leader\'s cgroups')
        self.assertEqual(lines['host-status']['CapBnd'], leader_status['CapBnd'],
                         'no capability the machine\'s init lacks')
        self.assertNotEqual(int(lines['pid']), 1)
        return leader_status, lines['host-status']

    def test_root_mapped_machine(self):
        leader_status, status = self.check_inside('base')
        self.assertEqual(status['Uid'].split()[0], '0')

    def test_machine_in_a_user_namespace(self):
        leader_status, status = self.check_inside('other', private_users=True, ephemeral=True)
        self.assertNotEqual(status['Uid'].split()[0], '0', 'root inside is not root of the host')
        self.assertEqual(status['Uid'], leader_status['Uid'], 'root inside is the machine\'s root')



class RefusalTest(ExecTestCase):

    def setUp(self):
        super().setUp()
        self.sleeper()
        self.pwned = os.path.join(self.base, 'srv/pwned')

    def assertNothingRan(self):
        self.assertFalse(os.path.exists(self.pwned))
        self.assertEqual([e for e in self.exited], [])
        self.assertNotIn('Exec ', self.daemon.log())

    def test_no_such_machine(self):
        e = self.assertDBusError(NO_SUCH_MACHINE, lambda: self.exec_call(['/bin/touch', '/srv/pwned'], 'ghost'))
        self.assertIn('ghost', e.message)
        for name in ('a_b', '../base', '', 'x' * 65):
            with self.subTest(name=name):
                self.assertDBusError(INVALID_NAME, lambda: self.exec_call(['/bin/true'], name))
        self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject', self.root.call, machine_path('ghost'),
                             MACHINE_IFACE, 'Exec', ['/bin/true'], {})
        self.assertNothingRan()

    def test_machine_that_ended(self):
        self.root.manager('KillMachine', 'base', signal.SIGKILL)
        stamptest.wait_for(lambda: 'base' not in [m[0] for m in self.root.manager('ListMachines')],
                           'the machine to end')
        self.assertDBusError(NO_SUCH_MACHINE, self.exec_call, ['/bin/touch', '/srv/pwned'])
        self.assertFalse(os.path.exists(self.pwned))

    def test_bad_fds(self):
        path_fd = os.open(self.dir, os.O_PATH)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        ro = os.path.join(self.dir, 'ro')
        open(ro, 'w').close()
        ro_fd = os.open(ro, os.O_RDONLY)
        wo_fd = os.open(ro, os.O_WRONLY)
        try:
            for key, fd in (('stdin', path_fd), ('stdout', path_fd), ('stdin', dir_fd), ('stderr', dir_fd),
                            ('stdin', wo_fd), ('stdout', ro_fd), ('stderr', ro_fd)):
                with self.subTest(key=key, fd=fd):
                    e = self.assertDBusError(INVALID_ARGS, self.exec_call, ['/bin/touch', '/srv/pwned'],
                                             fds={key: fd})
                    self.assertIn(key, e.message)
        finally:
            for fd in (path_fd, dir_fd, ro_fd, wo_fd):
                os.close(fd)
        self.assertNothingRan()

    def test_bad_arguments(self):
        cases = [
            ([''], {}, 'empty program'),
            (['/bin/true'], {'environment': ['NOEQUALS']}, 'NOEQUALS'),
            (['/bin/true'], {'environment': ['=x']}, 'environment'),
            (['/bin/true'], {'environment': ['A B=x']}, 'A B=x'),
            (['/bin/true'], {'user': '../etc'}, '../etc'),
            (['/bin/true'], {'user': 'a:b'}, 'a:b'),
            (['/bin/true'], {'user': ''}, 'user'),
            (['/bin/true'], {'working_directory': 'relative'}, 'relative'),
            (['/bin/true'] + ['x'] * 1100, {}, 'too long'),
            (['/bin/true', 'x' * 300000], {}, 'too long'),
        ]
        for argv, options, named in cases:
            with self.subTest(options=options, argc=len(argv)):
                e = self.assertDBusError(INVALID_ARGS, self.exec_call, argv, **options)
                self.assertIn(named, e.message)
        e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'ExecMachine', 'base', ['/bin/true'],
                                 {'shell': GLib.Variant('b', True)})
        self.assertIn('shell', e.message)
        self.assertNothingRan()

    def test_unauthorized_user(self):
        """stamp-user on root's machine: the administrator's action, asked for."""
        before = store_state(self.store)
        argv = ['/bin/touch', '/srv/pwned']
        e = self.assertDBusError(INTERACTIVE_REQUIRED, self.user.manager, 'ExecMachine', 'base', argv, {})
        self.assertIn('io.stamp.Stamp1.login', e.message)
        self.assertIn('exec in machine base', e.message)
        self.assertDBusError(INTERACTIVE_REQUIRED, self.user.call, machine_path('base'), MACHINE_IFACE, 'Exec',
                             argv, {})
        e = self.assertDBusError(INTERACTIVE_REQUIRED, self.user.manager, 'ExecMachine', 'base', [], {})
        self.assertIn('shell in machine base', e.message)
        self.allow(USER, 'login', 'NO')
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'ExecMachine', 'base', argv, {}, interactive=True)
        # the -own- action is not the one for root's machine
        self.set_rules(rule_for(USER, 'manage-own-machines', 'YES'))
        self.assertDBusError(INTERACTIVE_REQUIRED, self.user.manager, 'ExecMachine', 'base', argv, {})
        self.assertNothingRan()
        self.assertUnchanged(self.store, before)

    def test_authorized_user(self):
        self.allow(USER, 'login')
        result, out, err = self.user_exec('base', ['/bin/sh', '-c', 'id -u; echo err >&2; exit 3'])
        self.assertEqual((result['result'], result['status'], result['machine']), ('exited', 3, 'base'), result)
        self.assertEqual((out, err), ('0\n', 'err\n'))

    def test_exited_goes_to_the_caller_only(self):
        """Another connection (root's, here, which could see any broadcast) hears nothing of
        a user's command."""
        self.allow(USER, 'login')
        result, _, _ = self.user_exec('base', ['/bin/true'])
        self.assertEqual(result['result'], 'exited', result)
        self.assertEqual(self.exited, [])


    def test_kill_exec(self):
        r, w = os.pipe()
        try:
            exec_id = self.exec_call(['/bin/sh', '-c', 'echo started; exec sleep 100000'], fds={'stdout': w})
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            self.assertEqual(f.readline(), 'started\n')
            e = self.assertDBusError(STAMP_ERROR + 'NoSuchExec', self.root.manager, 'KillExec', exec_id + 1000, 9)
            self.assertIn(str(exec_id + 1000), e.message)
            for signo in (0, -1, 65):
                self.assertDBusError(INVALID_ARGS, self.root.manager, 'KillExec', exec_id, signo)
            # someone else needs what would let them run a command there
            e = self.assertDBusError(INTERACTIVE_REQUIRED, self.user.manager, 'KillExec', exec_id, 9)
            self.assertIn('io.stamp.Stamp1.login', e.message)
            self.assertEqual(self.exited, [])
            self.root.manager('KillExec', exec_id, signal.SIGTERM)
            self.assertEqual(self.wait_exited(exec_id), ('killed', signal.SIGTERM, ''))
        self.assertDBusError(STAMP_ERROR + 'NoSuchExec', self.root.manager, 'KillExec', exec_id, 9)


    def test_hostile_passwd(self):
        """The machine's /etc/passwd is read inside the machine: a magic link to the host's
        is not followed, a FIFO is not waited on."""
        passwd = os.path.join(self.base, 'etc/passwd')
        os.unlink(passwd)
        os.symlink('/proc/1/root/etc/passwd', passwd)
        result, status, out, err, message = self.run_exec(['/bin/id'], user=USER)
        self.assertEqual((result, out, err), ('failed', b'', b''), message)
        self.assertIn('users of machine base', message)
        os.unlink(passwd)
        os.mkfifo(passwd)
        result, status, out, err, message = self.run_exec(['/bin/id'], user='alice')
        self.assertEqual((result, out, err), ('failed', b'', b''), message)
        # root needs no entry: uid 0, as nspawn would run it
        os.unlink(passwd)
        result, status, out, err, message = self.run_exec(['/bin/id', '-u'])
        self.assertEqual((result, status, out), ('exited', 0, b'0\n'), message)

    def test_command_ends_with_its_machine(self):
        r, w = os.pipe()
        try:
            exec_id = self.exec_call(['/bin/sh', '-c', 'echo started; exec sleep 100000'], fds={'stdout': w})
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            self.assertEqual(f.readline(), 'started\n')
        self.root.manager('KillMachine', 'base', signal.SIGKILL)
        self.assertEqual(self.wait_exited(exec_id), ('killed', signal.SIGKILL, ''))

    def test_limit_per_caller(self):
        ids = [self.exec_call(['/bin/sleep', '100000']) for _ in range(32)]
        e = self.assertDBusError(stamptest.LIMITS_EXCEEDED, self.exec_call, ['/bin/touch', '/srv/pwned'])
        self.assertIn('32', e.message)
        self.assertFalse(os.path.exists(self.pwned))
        # another caller is not held back by these
        self.allow(USER, 'login')
        result, _, _ = self.user_exec('base', ['/bin/true'])
        self.assertEqual(result.get('result'), 'exited', result)
        self.root.manager('KillExec', ids[0], signal.SIGKILL)
        self.assertEqual(self.wait_exited(ids[0]), ('killed', signal.SIGKILL, ''))
        self.exited.clear()
        exec_id = self.exec_call(['/bin/true'])
        self.assertEqual(self.wait_exited(exec_id), ('exited', 0, ''))


class OwnMachineTest(ExecTestCase):
    """The user who started a machine (on their own image, so in a user
    namespace) runs commands in it with manage-own-machines alone, and never
    as root of the host; nobody else does without the administrator."""

    def setUp(self):
        super().setUp()
        path = make_image(self.store, 'tmpl')
        add_applets(path)
        stamptest.run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'])
        own = ('manage-own-images', 'start-own-machine', 'manage-own-machines')
        self.set_rules(''.join(rule_for(u, a, 'YES') for u in (USER, USER2) for a in own))
        self.user.manager('CloneImage', 'tmpl', 'mine', False)
        self.user.manager('StartMachine', 'mine', {'command': GLib.Variant('as', ['/bin/sleep', '100000'])})
        self.addCleanup(self.kill_quietly, 'mine')
        stamptest.wait_for(lambda: self.props('mine')['State'] == 'running', 'the user\'s machine to run')

    def test_owner_execs_without_password(self):
        props = self.props('mine')
        self.assertTrue(props['UserNamespace'])
        result, out, err = self.user_exec('mine', ['/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; '
                                                   'cat /proc/self/status'])
        self.assertEqual((result['result'], result['status']), ('exited', 0), (result, err))
        lines = out.splitlines()
        self.assertEqual(lines[0], '0', 'root inside the machine')
        self.assertEqual([int(x) for x in lines[1].split()], [0, props['UIDShift'], 65536])
        # /proc/self/status inside shows the uids inside; the host's view of them:
        self.assertGreaterEqual(props['UIDShift'], 0x60000000)

    def test_command_is_not_host_root(self):
        r, w = os.pipe()
        result = {}
        client = self.write_client()
        out = os.path.join(self.dir, 'own.json')
        open(out, 'w').close()
        os.chown(out, self.env.users[USER], self.env.users[USER])
        proc = subprocess.Popen(self.env.as_user(USER, [PYTHON, client, 'mine', json.dumps(
            ['/bin/sh', '-c', 'echo $$; exec sleep 100000']), '{}', out]), stdin=subprocess.DEVNULL,
            stdout=w, stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            inner = int(f.readline())
        leader = self.props('mine')['Leader']
        pid = host_pid(inner, leader)
        self.assertIsNotNone(pid)
        self.assertEqual(status_of(pid), [self.props('mine')['UIDShift']] * 4, 'the host sees the machine\'s root')
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=stamptest.TIMEOUT)
        with open(out) as f:
            result = json.load(f)
        self.assertEqual((result['result'], result['status']), ('killed', signal.SIGKILL), result)

    def test_owner_with_stampctl(self):
        if not os.access(stamptest.STAMPCTL, os.X_OK):
            self.skipTest('stampctl is not built')
        shift = self.props('mine')['UIDShift']
        p = subprocess.run(self.env.as_user(USER, [stamptest.STAMPCTL, '--no-ask-password', 'exec', 'mine', '--',
                                                   '/bin/sh', '-c', 'id -u; cat /proc/self/uid_map; exit 3']),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 3, p.stderr)
        lines = p.stdout.decode().splitlines()
        self.assertEqual(lines[0], '0')
        self.assertEqual([int(x) for x in lines[1].split()], [0, shift, 65536])
        # and a shell on a terminal, with no password
        stamptest.write_file(os.path.join(self.store, 'mine/etc/profile'), 'PS1="own-$(id -u)# "\n')
        pane = self.run_in_terminal(USER, [stamptest.STAMPCTL, 'shell', 'mine'])
        stamptest.wait_for(lambda: 'own-0# ' in pane.capture() or pane.exited(), 'the shell prompt')
        pane.type_line('echo "map $(cat /proc/self/uid_map)"')
        stamptest.wait_for(lambda: 'map ' in pane.capture().replace('echo "map', ''), 'the uid map')
        self.assertRegex(pane.capture(), r'map\s+0\s+%d\s+65536' % shift)
        pane.type_line('exit')
        self.assertEqual(pane.wait_exit(), 0)

    def test_other_user_refused(self):
        argv = ['/bin/touch', '/srv/pwned']
        e = self.assertDBusError(INTERACTIVE_REQUIRED, self.user2.manager, 'ExecMachine', 'mine', argv, {})
        self.assertIn('io.stamp.Stamp1.login', e.message)
        self.assertFalse(os.path.exists(os.path.join(self.store, 'mine/srv/pwned')))
        self.assertEqual(self.exited, [])



class StampctlTest(ExecTestCase):
    """stampctl exec and stampctl shell on a running machine."""

    def setUp(self):
        super().setUp()
        if not os.access(stamptest.STAMPCTL, os.X_OK):
            self.skipTest('stampctl is not built')
        self.sleeper()

    def stampctl(self, *args, stdin=subprocess.DEVNULL, user=None):
        argv = [stamptest.STAMPCTL] + list(args)
        if user:
            argv = self.env.as_user(user, argv)
        return subprocess.run(argv, stdin=stdin, capture_output=True, timeout=stamptest.TIMEOUT)

    def test_exit_status_and_streams(self):
        p = self.stampctl('exec', 'base', '--', '/bin/sh', '-c', 'echo out; echo err >&2; exit 3')
        self.assertEqual((p.returncode, p.stdout, p.stderr), (3, b'out\n', b'err\n'))
        p = self.stampctl('exec', 'base', '--', '/bin/true')
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, b'', b''))

    def test_no_block(self):
        out = self.output_file()
        with open(out, 'w') as f:
            p = subprocess.run([stamptest.STAMPCTL, '--no-block', 'exec', 'base', '--', '/bin/sh', '-c',
                                'echo from-the-command >&2'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=f, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.decode(), r'^\d+\n$')
        stamptest.wait_for(lambda: open(out).read() == 'from-the-command\n', 'the command to write')

    def test_killed_by_a_signal(self):
        p = self.stampctl('exec', 'base', '--', '/bin/sh', '-c', 'kill -KILL $$')
        self.assertEqual(p.returncode, 128 + signal.SIGKILL)
        p = self.stampctl('exec', 'base', '--', '/bin/sh', '-c', 'kill -TERM $$')
        self.assertEqual(p.returncode, 128 + signal.SIGTERM)

    def test_options(self):
        p = self.stampctl('exec', 'base', '--user', 'alice', '--env', 'A=b c', '--env', 'HOME=/tmp',
                          '--chdir', '/srv', '--', '/bin/sh', '-c', 'id -un; echo "$A"; echo "$HOME"; pwd')
        self.assertEqual((p.returncode, p.stdout.decode(), p.stderr), (0, 'alice\nb c\n/tmp\n/srv\n', b''))
        p = self.stampctl('exec', 'base', '--env', 'NOVALUE', '--', '/bin/true')
        self.assertEqual(p.returncode, 2)
        self.assertIn(b'NAME=VALUE', p.stderr)

    def test_stdin_binary_round_trip(self):
        payload = os.urandom(100000)
        data = os.path.join(self.dir, 'payload')
        with open(data, 'wb') as f:
            f.write(payload)
        with open(data, 'rb') as f:
            p = self.stampctl('exec', 'base', '--', '/bin/cat', stdin=f)
        self.assertEqual(p.returncode, 0)
        self.assertTrue(p.stdout == payload, 'the bytes differ')

    def test_cannot_run(self):
        p = self.stampctl('exec', 'base', '--', '/bin/no-such-program')
        self.assertEqual(p.returncode, 127)
        self.assertIn(b'no-such-program', p.stderr)
        p = self.stampctl('exec', 'base', '--user', 'nobody-here', '--', '/bin/true')
        self.assertEqual(p.returncode, 125)
        self.assertIn(b'nobody-here', p.stderr)
        p = self.stampctl('exec', 'ghost', '--', '/bin/true')
        self.assertEqual(p.returncode, 4)
        self.assertIn(b'ghost', p.stderr)
        p = self.stampctl('exec', 'base')
        self.assertEqual(p.returncode, 2)

    def test_interrupt_goes_to_the_command(self):
        """Ctrl-C (SIGINT) to stampctl reaches the command in the machine, whose
        end stampctl reports: 128 + SIGINT."""
        proc = subprocess.Popen([stamptest.STAMPCTL, 'exec', 'base', '--', '/bin/sh', '-c',
                                 'trap "echo got-int; exit 42" INT; echo started; while :; do sleep 1; done'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.assertEqual(proc.stdout.readline(), b'started\n')
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=stamptest.TIMEOUT)
        self.assertEqual((proc.returncode, out), (42, b'got-int\n'), err)

    def test_unauthorized_user(self):
        p = self.stampctl('--no-ask-password', 'exec', 'base', '--', '/bin/touch', '/srv/pwned', user=USER)
        self.assertEqual(p.returncode, 77, p.stderr)
        self.assertIn(b'login', p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.base, 'srv/pwned')))

    def shell_in_tmux(self, argv, prompt):
        pane = self.run_in_terminal(USER, argv)
        stamptest.wait_for(lambda: prompt in pane.capture() or pane.exited(), 'the shell prompt in the machine')
        self.assertFalse(pane.exited(), pane.capture())
        pane.type_line('echo hi-$((6*7)) as $(id -un) in $(hostname) on $(tty) TERM=$TERM')
        stamptest.wait_for(lambda: 'hi-42 as ' in pane.capture(), 'the command output')
        pane.type_line('exit 5')
        self.assertEqual(pane.wait_exit(), 5)
        return pane.capture()

    def test_shell_joins_the_running_machine(self):
        self.allow(USER, 'login')
        # the machine's root has a profile that sets a prompt of its own
        stamptest.write_file(os.path.join(self.base, 'etc/profile'), 'PS1="in-machine-$(id -un)# "\n')
        screen = self.shell_in_tmux([stamptest.STAMPCTL, 'shell', 'base'], 'in-machine-root# ')
        self.assertRegex(screen, r'hi-42 as root in base on /dev/pts/\d+ TERM=\S+')
        self.assertNotIn('TERM=vt220', screen, 'the terminal\'s own TERM')
        # still running: a shell joins, it does not start
        self.assertEqual(self.props('base')['State'], 'running')

    def test_shell_as_a_user(self):
        self.allow(USER, 'login')
        stamptest.write_file(os.path.join(self.base, 'etc/profile'), 'PS1="in-machine-$(id -un)$ "\n')
        screen = self.shell_in_tmux([stamptest.STAMPCTL, 'shell', 'base', '--user', 'alice'],
                                    'in-machine-alice$ ')
        self.assertRegex(screen, r'hi-42 as alice in base on /dev/pts/\d+')

    def test_exec_on_a_terminal(self):
        """On a terminal the command gets one of the machine's; its last words arrive, its
        status is exact, and the caller's terminal is as it was."""
        self.allow(USER, 'login')
        files = {k: os.path.join(self.dir, k) for k in ('before', 'after', 'rc')}
        for path in files.values():
            open(path, 'w').close()
            os.chown(path, self.env.users[USER], self.env.users[USER])
        script = ('stty -g > {before}; {stampctl} exec base -- /bin/sh -c '
                  '"test -t 0 && test -t 1 && tty; printf last-words; exit 4"; echo $? > {rc}; stty -g > {after}'
                  .format(stampctl=stamptest.STAMPCTL, **files))
        pane = self.run_in_terminal(USER, ['sh', '-c', script])
        self.assertEqual(pane.wait_exit(), 0)
        with open(files['rc']) as f:
            self.assertEqual(f.read(), '4\n')
        self.assertRegex(pane.capture(), r'/dev/pts/\d+\s+last-words')
        with open(files['before']) as b, open(files['after']) as a:
            self.assertEqual(a.read(), b.read(), 'the terminal\'s settings are back')

    def test_right_after_start(self):
        """A machine that is still starting is waited for, not refused."""
        self.start(name='fresh', command=['/bin/sleep', '100000'], ephemeral=True)
        p = self.stampctl('exec', 'fresh', '--', '/bin/cat', '/proc/sys/kernel/hostname')
        self.assertEqual((p.returncode, p.stdout, p.stderr.replace(b'Waiting for machine fresh to finish '
                                                                   b'starting...\n', b'')),
                         (0, b'fresh\n', b''))

    def test_shell_with_a_password(self):
        """No rule: the administrator's password, asked on the terminal."""
        stamptest.write_file(os.path.join(self.base, 'etc/profile'), 'PS1="in-machine-$(id -un)# "\n')
        pane = self.run_in_terminal(USER, [stamptest.STAMPCTL, 'shell', 'base'])
        pane.wait_for_password_prompt()
        pane.type_line(stamptest.ADMIN_PASSWORD)
        stamptest.wait_for(lambda: 'in-machine-root# ' in pane.capture() or pane.exited(),
                           'the shell prompt after the password')
        pane.type_line('exit 0')
        self.assertEqual(pane.wait_exit(), 0)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
