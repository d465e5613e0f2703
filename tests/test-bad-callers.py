#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bad callers: callers that leave while a polkit prompt waits for them,
callers that flood the daemon with calls, option dictionaries with unknown
keys and wrong types, file descriptors of the wrong kind, pipes closed
early, and callers that leave while their job runs.

Each refusal is checked with "nothing changed on disk"; each test ends with
the daemon still answering; the daemon's fd count and memory are compared
before and after the repeated cases."""

import json
import os
import socket
import subprocess
import time

import stamptest
from stamptest import MANAGER_IFACE, MANAGER_PATH, USER, USER2, GLib, make_image, rule_for, store_state
from reliabilitytest import (INVALID_ARGS, LIMITS_EXCEEDED, daemon_fds, make_tree, rss_is_meaningful,
                             settled_resources, skip_if_not_supported, spin, temporaries, tree_digest)
from stamptest import JobWatch, fd_list

PARKED_ROUNDS = int(os.environ.get('STAMP_PARKED_ROUNDS', '50'))

# Run as an unprivileged user: registers itself as its own polkit
# authentication agent (as pkttyagent --process $$ does), one that never
# answers, then makes an interactive call. It writes "asked" to the file
# argv[1] once polkit has asked it for a password, and then waits forever:
# the call stays parked in stampd until this process is killed.
HANGING_AGENT = r'''
import os, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib

out, method, sig, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
AGENT_XML = """<node><interface name="org.freedesktop.PolicyKit1.AuthenticationAgent">
<method name="BeginAuthentication"><arg type="s" direction="in"/><arg type="s" direction="in"/>
<arg type="s" direction="in"/><arg type="a{ss}" direction="in"/><arg type="s" direction="in"/>
<arg type="a(sa{sv})" direction="in"/></method>
<method name="CancelAuthentication"><arg type="s" direction="in"/></method></interface></node>"""
held = []

def note(text):
    with open(out, 'a') as f:
        f.write(text + '\n')

def on_call(conn, sender, path, iface, name, params, invocation):
    if name == 'BeginAuthentication':
        held.append(invocation)  # never answered
        note('asked')
    else:
        invocation.return_value(None)

bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
node = Gio.DBusNodeInfo.new_for_xml(AGENT_XML)
bus.register_object('/io/stamp/test/agent', node.interfaces[0], on_call, None, None)
with open('/proc/self/stat') as f:
    start_time = int(f.read().rsplit(')', 1)[1].split()[19])
subject = ('unix-process', {'pid': GLib.Variant('u', os.getpid()),
                            'start-time': GLib.Variant('t', start_time),
                            'uid': GLib.Variant('i', os.getuid())})
bus.call_sync('org.freedesktop.PolicyKit1', '/org/freedesktop/PolicyKit1/Authority',
              'org.freedesktop.PolicyKit1.Authority', 'RegisterAuthenticationAgent',
              GLib.Variant('((sa{sv})ss)', (subject, 'C', '/io/stamp/test/agent')),
              None, Gio.DBusCallFlags.NONE, 30000, None)
note('registered')

def on_reply(conn, res, _):
    try:
        conn.call_finish(res)
        note('reply ok')
    except GLib.Error as e:
        note('reply error ' + (Gio.DBusError.get_remote_error(e) or str(e)))

bus.call('io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', method,
         GLib.Variant.parse(GLib.VariantType.new(sig), args, None, None), None,
         Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION, GLib.MAXINT, None, on_reply, None)
GLib.MainLoop().run()
'''

# Run as a user: one connection, N CloneImage calls of base to <prefix>-<i>
# (prefix "flood" unless argv[4] says), sent in waves without waiting for
# replies; prints {i: error name or "ok"}.
FLOOD = r'''
import json, sys, time
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib

n, wave, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
prefix = sys.argv[4] if len(sys.argv) > 4 else 'flood'
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
results, messages = {}, {}
ctx = GLib.MainContext.default()

def done(i):
    def cb(conn, res, _):
        try:
            conn.call_finish(res)
            results[i] = 'ok'
        except GLib.Error as e:
            results[i] = Gio.DBusError.get_remote_error(e) or 'local'
            messages[i] = e.message
    return cb

for i in range(n):
    bus.call('io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', 'CloneImage',
             GLib.Variant('(ssb)', ('base', '%s-%d' % (prefix, i), False)), None, Gio.DBusCallFlags.NONE,
             600000, None, done(i), None)
    if (i + 1) % wave == 0:
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            ctx.iteration(False)
            time.sleep(0.005)
while len(results) < n:
    ctx.iteration(True)
print(json.dumps({'results': results, 'messages': messages}))
'''


class BadCallerTestCase(stamptest.TestCase):

    def write_script(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def user_file(self, name, user=USER):
        path = os.path.join(self.dir, name)
        open(path, 'w').close()
        os.chown(path, self.env.users[user], self.env.users[user])
        return path


class ParkedCallTest(BadCallerTestCase):
    """A caller that leaves while a polkit prompt waits for it."""

    def park_and_leave(self, script, out):
        with open(out, 'w'):
            pass
        cmd = self.env.as_user(USER, [stamptest.PYTHON, script, out, 'CloneImage', '(ssb)',
                                      "('base', 'web', false)"])
        proc = subprocess.Popen(stamptest.wrap_pdeathsig(cmd), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            def asked():
                if proc.poll() is not None:
                    raise AssertionError('the caller ended early: %s; %s' % (
                        proc.stderr.read().decode(errors='replace'), open(out).read()))
                with open(out) as f:
                    return 'asked' in f.read()
            stamptest.wait_for(asked, 'polkit to ask the hanging agent')
        finally:
            proc.kill()
            proc.wait()
        with open(out) as f:
            self.assertNotIn('reply', f.read(), 'the call was answered while the prompt waited')

    def test_callers_leaving_at_the_prompt_leak_nothing(self):
        # AUTH_ADMIN: polkit asks the caller's agent, which never answers.
        self.set_rules(rule_for(USER, 'manage-images', 'AUTH_ADMIN')
                       + rule_for(USER2, 'manage-images', 'YES'))
        # An idle timeout: a parked call left behind would keep the daemon
        # alive for ever, so its exit at the end shows none was. Until then
        # it is kept awake: the measuring below may take longer than any idle
        # timeout on a busy machine.
        awake = stamptest.KeepAwake(self.env.conn)
        self.addCleanup(awake.stop)
        daemon = self.start_daemon(args=['--idle-timeout', '15'])
        store = daemon.store
        make_image(store, 'base')
        before_disk = store_state(store)
        script = self.write_script('hanging-agent.py', HANGING_AGENT)
        out = self.user_file('agent.out')

        warmup = 5
        for i in range(warmup):
            self.park_and_leave(script, out)
        spin(0.5)
        fds0, rss0, threads0 = settled_resources(daemon.pid)
        fd_targets0 = daemon_fds(daemon.pid)
        t0 = time.monotonic()
        for i in range(PARKED_ROUNDS):
            self.park_and_leave(script, out)
        elapsed = time.monotonic() - t0
        # the last one's NameOwnerChanged has reached the daemon once it answers
        self.assertIn('base', self.root.list_images())
        spin(0.5)
        fds1, rss1, threads1 = settled_resources(daemon.pid)
        stamptest.diag('%d callers left at the prompt in %.1fs; daemon fds %d -> %d, VmRSS %d -> %d KiB, '
                       'threads %d -> %d' % (PARKED_ROUNDS, elapsed, fds0, fds1, rss0, rss1, threads0,
                                             threads1))
        self.assertEqual(fds1, fds0, 'fds leaked: %s' % (
            set(daemon_fds(daemon.pid).items()) ^ set(fd_targets0.items())))
        self.assertEqual(threads1, threads0)
        if rss_is_meaningful(daemon.pid):
            self.assertLess(rss1 - rss0, 4096, 'VmRSS grew by %d KiB over %d parked calls' % (
                rss1 - rss0, PARKED_ROUNDS))
        self.assertUnchanged(store, before_disk, 'callers left at the prompt')

        # The daemon still serves, polkit checks included...
        self.user2.manager('CloneImage', 'base', 'other', False)
        self.assertEqual(sorted(self.root.list_images()), ['base', 'other'])
        # ...and nothing is parked any more: it goes idle and exits by itself (status 0).
        awake.stop()
        stamptest.wait_for(lambda: not daemon.running(), 'the daemon to exit when idle', 120)
        self.assertEqual(daemon.proc.returncode, 0)


class FloodTest(BadCallerTestCase):

    def test_one_connection_flooding_clone_calls(self):
        """100 CloneImage calls in flight from one connection: the per-caller
        caps (16 pending authorizations, 16 operations) refuse some and say so,
        the daemon keeps answering others, and nothing half-made is left. How
        many operations run at once is counted where it does not depend on
        the machine's speed: OperationCapTest."""
        self.set_rules(rule_for(USER, 'manage-images', 'YES') + rule_for(USER2, 'manage-images', 'YES'))
        # One user makes many images here: this is about the caps on what is in flight, not about
        # stampd.conf's ImagesPerUser=, which a fast machine would otherwise reach first.
        config = os.path.join(self.dir, 'stampd.conf')
        stamptest.write_file(config, '[Limits]\nImagesPerUser=infinity\n')
        daemon = self.start_daemon(kind='plain', args=['--config', config])
        store = daemon.store
        base = make_tree(os.path.join(store, 'base'), files=600)
        base_digest = tree_digest(base)
        # the first polkit check starts the daemon's polkit thread and its bus connection: before counting
        self.user2.manager('MarkImageReadOnly', 'base', False)
        fds0 = settled_resources(daemon.pid)[0]
        script = self.write_script('flood.py', FLOOD)

        # All 100 sent at once, not in waves: however fast the copies are, more than 16 calls wait
        # for polkit at the same moment, so a cap is hit on any machine.
        cmd = self.env.as_user(USER, [stamptest.PYTHON, script, '100', '100', '0'])
        flood = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Others are served meanwhile: reads, and another caller's clone (own caps).
        self.assertIn('base', self.root.list_images())
        self.user2.manager('CloneImage', 'base', 'bystander', False)
        out, err = flood.communicate(timeout=stamptest.TIMEOUT * 10)
        self.assertEqual(flood.returncode, 0, err)
        report = json.loads(out)
        results, messages = report['results'], report['messages']
        kinds = {}
        for r in results.values():
            kinds[r] = kinds.get(r, 0) + 1
        stamptest.diag('flood of 100: %s' % kinds)

        self.assertEqual(set(kinds) - {'ok', LIMITS_EXCEEDED}, set(), messages)
        self.assertGreater(kinds.get(LIMITS_EXCEEDED, 0), 0, 'no cap was hit')
        self.assertGreater(kinds.get('ok', 0), 0)
        for i, m in messages.items():
            self.assertRegex(m, 'too many|Too many', 'the refusal does not say why: %s' % m)

        listed = self.root.list_images()
        for i, r in results.items():
            name = 'flood-%s' % i
            if r == 'ok':
                self.assertIn(name, listed)
                self.assertEqual(tree_digest(os.path.join(store, name)), base_digest, name)
            else:
                self.assertFalse(os.path.lexists(os.path.join(store, name)), name)
        self.assertEqual(temporaries(store), [])
        self.assertEqual(tree_digest(base), base_digest)
        spin(0.5)
        self.assertEqual(settled_resources(daemon.pid)[0], fds0, 'fds left after the flood')


def threads_waiting_on_disk(pid):
    """How many of @pid's threads sleep uninterruptibly (as on a frozen file system)."""
    n = 0
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
                n += f.read().rsplit(')', 1)[1].split()[0] == 'D'
        except OSError:
            pass
    return n


class OperationCapTest(BadCallerTestCase):
    """OperationsPerUser= and Operations= hold whatever the machine's speed: with the store's file
    system frozen (fsfreeze), every clone that got its operation waits on disk in a worker, counted,
    until the thaw; the daemon answers meanwhile, and the caps' refusals say which cap."""

    def test_caps_hold_while_operations_wait_on_disk(self):
        self.set_rules(rule_for(USER, 'manage-images', 'YES') + rule_for(USER2, 'manage-images', 'YES'))
        config = os.path.join(self.dir, 'stampd.conf')
        stamptest.write_file(config, '[Limits]\nImagesPerUser=infinity\nOperations=4\nOperationsPerUser=3\n')
        daemon = self.start_daemon(kind='btrfs', args=['--config', config])
        store = daemon.store
        make_image(store, 'base')
        # the daemon's polkit thread and its bus connection, before the count
        self.user2.manager('MarkImageReadOnly', 'base', True)
        self.assertEqual(threads_waiting_on_disk(daemon.pid), 0)
        script = self.write_script('flood.py', FLOOD)
        before = store_state(store)

        stamptest.run(['fsfreeze', '--freeze', store])
        self.addCleanup(stamptest.run, ['fsfreeze', '--unfreeze', store], check=False)
        floods = [subprocess.Popen(self.env.as_user(USER, [stamptest.PYTHON, script, '3', '3', '0', 'one']),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        stamptest.wait_for(lambda: threads_waiting_on_disk(daemon.pid) == 3, "the user's 3 clones to wait on disk")
        e = self.assertDBusError(LIMITS_EXCEEDED, self.user.manager, 'CloneImage', 'base', 'one-more', False)
        self.assertIn('at most 3 per user', e.message)
        # another user's first clone still runs (its own cap), and then the cap of all is reached
        floods.append(subprocess.Popen(self.env.as_user(USER2, [stamptest.PYTHON, script, '1', '1', '0', 'two']),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        stamptest.wait_for(lambda: threads_waiting_on_disk(daemon.pid) == 4, "the other user's clone to wait on disk")
        e = self.assertDBusError(LIMITS_EXCEEDED, self.user2.manager, 'CloneImage', 'base', 'two-more', False)
        self.assertIn('at most 4 in all', e.message)
        # answered meanwhile, and nothing half-made is visible
        self.assertEqual(sorted(self.root.list_images()), ['base'])
        self.assertUnchanged(store, before, 'the refusals')
        self.assertEqual(threads_waiting_on_disk(daemon.pid), 4)

        stamptest.run(['fsfreeze', '--unfreeze', store])
        for flood in floods:
            out, err = flood.communicate(timeout=stamptest.TIMEOUT)
            self.assertEqual(flood.returncode, 0, err)
            self.assertEqual(set(json.loads(out)['results'].values()), {'ok'}, out)
        self.assertEqual(sorted(self.root.list_images()), ['base', 'one-0', 'one-1', 'one-2', 'two-0'])
        self.assertEqual(temporaries(store), [])
        # the caps were given back: the refused calls go through now
        self.user.manager('CloneImage', 'base', 'one-more', False)
        self.user2.manager('CloneImage', 'base', 'two-more', False)


class OptionsTest(BadCallerTestCase):
    """Unknown option keys and wrong variant types: InvalidArgs naming the
    key, from root and from an unprivileged caller alike, nothing changed."""

    CASES = [
        # method, call(caller, options), (unknown key case), (wrong type case)
        ('CreateTemplate', lambda c, o: c.manager('CreateTemplate', 'tmpl', 'bookworm', o)),
        ('StartMachine', lambda c, o: c.manager('StartMachine', 'base', o)),
        ('PullTar', lambda c, o: c.manager('PullTar', 'http://127.0.0.1:9/x.tar', 'pulled', o)),
    ]
    BAD = {
        'CreateTemplate': [({'frobnicate': GLib.Variant('b', True)}, 'frobnicate'),
                           ({'bootable': GLib.Variant('s', 'yes')}, 'bootable'),
                           ({'include': GLib.Variant('s', 'vim')}, 'include'),
                           ({'variant': GLib.Variant('v', GLib.Variant('s', 'minbase'))}, 'variant'),
                           ({'package_tarball': GLib.Variant('i', 0)}, 'package_tarball'),
                           ({'mirror': GLib.Variant('s', 'x' * 5000)}, 'mirror'),
                           ({'include': GLib.Variant('as', ['p'] * 1025)}, 'include'),
                           ({'Bootable': GLib.Variant('b', True)}, 'Bootable')],
        'StartMachine': [({'frobnicate': GLib.Variant('b', True)}, 'frobnicate'),
                         ({'command': GLib.Variant('s', '/bin/sh')}, 'command'),
                         ({'boot': GLib.Variant('i', 1)}, 'boot'),
                         ({'stdin': GLib.Variant('s', '/dev/tty')}, 'stdin'),
                         ({'name': GLib.Variant('as', ['x'])}, 'name')],
        'PullTar': [({'frobnicate': GLib.Variant('b', True)}, 'frobnicate'),
                    ({'verify': GLib.Variant('b', False)}, 'verify'),
                    ({'read_only': GLib.Variant('s', 'yes')}, 'read_only'),
                    ({'verify ': GLib.Variant('s', 'no')}, 'verify ')],
    }

    def test_bad_options_name_the_key(self):
        daemon = self.start_daemon()
        store = daemon.store
        make_image(store, 'base')
        before = store_state(store)
        for method, call in self.CASES:
            for caller_label, caller in (('root', self.root), ('user', self.user)):
                for options, key in self.BAD[method]:
                    with self.subTest(method=method, caller=caller_label, key=key):
                        # a method that still answers NotSupported skips (SkipTest passes through)
                        e = self.assertDBusError(INVALID_ARGS, skip_if_not_supported,
                                                 lambda: call(caller, options), method)
                        self.assertIn('"%s"' % key, e.message)
                        self.assertUnchanged(store, before, '%s with %s' % (method, key))
        self.assertEqual(self.root.manager('ListJobs'), [])
        self.assertEqual(self.root.manager('ListMachines'), [])


class FdKindsTest(BadCallerTestCase):
    """fds of the wrong kind are refused before anything starts."""

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        make_image(self.store, 'base')
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)
        self.fds = []
        self.addCleanup(lambda: [os.close(fd) for fd in self.fds])

    def keep(self, fd):
        self.fds.append(fd)
        return fd

    def wrong_fds(self, for_writing):
        f = os.path.join(self.dir, 'file')
        open(f, 'w').close()
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(os.path.join(self.dir, 'sock-%d' % len(self.fds)))
        listening.listen()
        self.addCleanup(listening.close)
        kinds = [
            ('directory', self.keep(os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY))),
            ('O_PATH', self.keep(os.open(f, os.O_PATH))),
            ('character device', self.keep(os.open('/dev/null', os.O_RDWR))),
            ('listening socket', listening.fileno()),
        ]
        if for_writing:
            kinds.append(('read-only file', self.keep(os.open(f, os.O_RDONLY))))
        else:
            kinds.append(('write-only file', self.keep(os.open(f, os.O_WRONLY))))
        return kinds

    def check(self, method, call, for_writing, accept_socket_job=False, skip=()):
        for label, fd in self.wrong_fds(for_writing):
            if label in skip:
                continue
            before = store_state(self.store)
            with self.subTest(method=method, fd=label):
                try:
                    result = skip_if_not_supported(lambda: call(fd), method)
                except stamptest.DBusError as e:
                    self.assertEqual(e.name, INVALID_ARGS, str(e))
                    self.assertTrue(e.message)
                else:
                    # A socket is a stream like a pipe; an unconnected one must then fail the job
                    # cleanly rather than be refused up front.
                    self.assertTrue(label == 'listening socket' and accept_socket_job,
                                    '%s accepted a %s fd: %r' % (method, label, result))
                    outcome, log = self.jobs.wait(result)
                    self.assertEqual(outcome, 'failed', log)
                    # the job made and removed its temporary: only the store's own mtime moved
                    before.pop('.')
                    after = store_state(self.store)
                    after.pop('.')
                    self.assertEqual(after, before, '%s with a %s left something' % (method, label))
                    continue
                self.assertEqual(self.root.manager('ListJobs'), [])
                self.assertUnchanged(self.store, before, '%s with a %s' % (method, label))

    def test_import_tar(self):
        self.check('ImportTar', lambda fd: self.root.call(
            MANAGER_PATH, MANAGER_IFACE, 'ImportTar', 0, 'imported', False, fd_list=fd_list(fd)),
            for_writing=False, accept_socket_job=True)

    def test_export_tar(self):
        self.check('ExportTar', lambda fd: self.root.call(
            MANAGER_PATH, MANAGER_IFACE, 'ExportTar', 'base', 0, 'zstd', fd_list=fd_list(fd)),
            for_writing=True, accept_socket_job=True)

    def test_create_template_package_tarball(self):
        self.check('CreateTemplate', lambda fd: self.root.call(
            MANAGER_PATH, MANAGER_IFACE, 'CreateTemplate', 'tmpl', 'bookworm',
            {'package_tarball': GLib.Variant('h', 0)}, fd_list=fd_list(fd)),
            for_writing=False, accept_socket_job=True)

    def assertNothingLeft(self, before, what):
        """A job that started and failed: its temporary came and went, so
        only the store directory's own times may differ."""
        after = store_state(self.store)
        self.assertEqual({k: v for k, v in after.items() if k != '.'},
                         {k: v for k, v in before.items() if k != '.'}, what)

    def test_start_machine_stdio(self):
        # a socket is a fine terminal-less stdio for a machine: only the kinds that are never right
        for key, writing in (('stdin', False), ('stdout', True), ('stderr', True)):
            self.check('StartMachine', lambda fd: self.root.call(
                MANAGER_PATH, MANAGER_IFACE, 'StartMachine', 'base',
                {key: GLib.Variant('h', 0), 'command': GLib.Variant('as', ['/bin/busybox', 'true'])},
                fd_list=fd_list(fd)), for_writing=writing, skip=('listening socket', 'character device'))
        self.assertEqual(self.root.manager('ListMachines'), [])

    def test_closed_pipes(self):
        # import from a pipe whose writer is already gone: an empty stream
        before = store_state(self.store)
        r, w = os.pipe()
        os.close(w)
        job = skip_if_not_supported(lambda: self.root.call(
            MANAGER_PATH, MANAGER_IFACE, 'ImportTar', 0, 'empty', False, fd_list=fd_list(r)), 'ImportTar')
        os.close(r)
        outcome, log = self.jobs.wait(job)
        self.assertEqual(outcome, 'failed', log)
        self.assertNothingLeft(before, 'an import from a closed pipe')

        # import from a writer that dies half-way through the archive
        src = make_tree(os.path.join(self.dir, 'src'), files=50)
        tar = subprocess.run(['tar', '-C', src, '-cf', '-', '.'], capture_output=True, check=True).stdout
        r, w = os.pipe()
        job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ImportTar', 0, 'half', False, fd_list=fd_list(r))
        os.close(r)
        os.write(w, tar[:len(tar) // 2])
        os.close(w)
        outcome, log = self.jobs.wait(job)
        self.assertEqual(outcome, 'failed', log)
        self.assertNothingLeft(before, 'an import whose writer died')

        # export into a pipe whose reader is already gone
        r, w = os.pipe()
        os.close(r)
        job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExportTar', 'base', 0, 'zstd', fd_list=fd_list(w))
        os.close(w)
        outcome, log = self.jobs.wait(job)
        self.assertEqual(outcome, 'failed', log)
        self.assertEqual(temporaries(self.store), [])
        self.assertTrue(self.daemon.running())
        self.assertEqual(sorted(self.root.list_images()), ['base'])


class CallerLeavesMidJobTest(BadCallerTestCase):
    """A caller that starts a job and goes away: the job is the daemon's, it
    goes on to its end, and what it makes is whole."""

    CALL_AND_LEAVE = r'''
import os, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
fds = Gio.UnixFDList.new()
fds.append(os.open(sys.argv[1], os.O_RDONLY))
reply, _ = bus.call_with_unix_fd_list_sync('io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager',
    'ImportTar', GLib.Variant('(hsb)', (0, sys.argv[2], False)), None, Gio.DBusCallFlags.NONE, 60000, fds, None)
print(reply.unpack()[0], flush=True)
os._exit(0)  # gone at once, connection and all
'''

    def test_import_outlives_its_caller(self):
        daemon = self.start_daemon()
        jobs = JobWatch(self.env.conn)
        self.addCleanup(jobs.close)
        src = make_tree(os.path.join(self.dir, 'src'), files=2000)
        digest = tree_digest(src)
        tar = os.path.join(self.dir, 'src.tar')
        stamptest.run(['tar', '--numeric-owner', '-C', src, '-cf', tar, '.'])
        script = self.write_script('call-and-leave.py', self.CALL_AND_LEAVE)
        p = stamptest.run([stamptest.PYTHON, script, tar, 'orphan'], check=False)
        if 'NotSupported' in p.stderr:
            self.skipTest('ImportTar answers NotSupported')
        self.assertEqual(p.returncode, 0, p.stderr)
        job_id = int(p.stdout.strip())
        stamptest.spin_until(lambda: job_id in jobs.removed or not self.root.manager('ListJobs'),
                             'the orphaned job to end', stamptest.TIMEOUT * 5)
        listed = self.root.list_images()
        stamptest.diag('the job of a caller that left ended: %s' % jobs.removed.get(job_id, '(not seen)'))
        self.assertIn('orphan', listed, 'the job did not finish after its caller left')
        self.assertEqual(tree_digest(os.path.join(daemon.store, 'orphan')), digest)
        self.assertEqual(temporaries(daemon.store), [])


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
