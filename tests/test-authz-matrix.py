#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The authorization matrix: every mutating method, on the Manager and on
the Image, Job and Machine objects, against an unprivileged caller.

For each method: with no rule (the shipped auth_admin default) the call is
refused — InteractiveAuthorizationRequired without the interactive flag,
AccessDenied with it (there is no agent to ask) — and with a rule that
allows every *other* stamp action it is still refused; either way nothing
changes: not the store, not the jobs, not the machines, not an export's
output file, and a pull fetches nothing. A rule allowing exactly the
method's own action (SPEC.md's table) lets the call through.

Then the subject: polkit judges the calling bus peer itself — a rule that
names one process's pid lets that process in and no other; an
authorization one user obtained is not borrowed by another user's or even
the same user's next process; and without the interactive flag no prompt is
attempted even with an agent waiting for one."""

import os
import signal
import subprocess

import stamptest
from stamptest import (ACCESS_DENIED, ADMIN_PASSWORD, INTERACTIVE_REQUIRED, MANAGER_IFACE,
                       MANAGER_PATH, USER, USER2, GLib, make_image, rule_for, store_state)
from reliabilitytest import (NOT_SUPPORTED, ThrottledServer, make_tree, user_call_with_fd,
                             write_sha256sums)
from stamptest import JobWatch, fd_list

ACTIONS = ['create-template', 'manage-images', 'start-machine', 'manage-machines', 'export', 'import',
           'pull', 'login']
MACHINE_IFACE = 'io.stamp.Stamp1.Machine'
IMAGE_IFACE = 'io.stamp.Stamp1.Image'
JOB_IFACE = 'io.stamp.Stamp1.Job'


def other_actions_rule(user, action):
    return ''.join(rule_for(user, a, 'YES') for a in ACTIONS if a != action)


class MatrixTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        make_image(self.store, 'base')
        self.snapbase_with_snapshot()
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)
        # inputs of the fd-taking methods
        src = make_tree(os.path.join(self.dir, 'src'), files=10)
        self.tar = os.path.join(self.dir, 'small.tar')
        stamptest.run(['tar', '--numeric-owner', '-C', src, '-cf', self.tar, '.'])
        www = os.path.join(self.dir, 'www')
        os.makedirs(www)
        os.link(self.tar, os.path.join(www, 'small.tar'))
        write_sha256sums(www)
        self.server = ThrottledServer(www)
        self.addCleanup(self.server.stop)
        self.requests_before = 0
        self.export_out = os.path.join(self.dir, 'export.tar')
        open(self.export_out, 'w').close()
        os.chown(self.export_out, self.env.users[USER], self.env.users[USER])
        self.open_fds = []
        self.addCleanup(lambda: [os.close(fd) for fd in self.open_fds])

    # -- the things the per-object methods act on, made by root

    def snapbase_with_snapshot(self):
        """An image with a snapshot, for the snapshot methods (base has none: RemoveImage must pass)."""
        make_image(self.store, 'snapbase')
        self.root.manager('SnapshotImage', 'snapbase', 'snap')

    def running_machine(self):
        try:
            if 'boxbase' not in self.root.list_images():
                make_image(self.store, 'boxbase')  # its own image: a running machine holds it busy
            path = self.root.manager('StartMachine', 'boxbase', {
                'name': GLib.Variant('s', 'box'),
                'command': GLib.Variant('as', ['/bin/busybox', 'sleep', '1000'])})
        except stamptest.DBusError as e:
            if e.name == NOT_SUPPORTED:
                return None
            raise
        self.addCleanup(self._kill_machine, 'box')
        stamptest.wait_for(lambda: self.root.get_property(path, MACHINE_IFACE, 'State') == 'running',
                           'the machine to run')
        return path

    def _kill_machine(self, name):
        try:
            self.root.manager('KillMachine', name, signal.SIGKILL)
        except stamptest.DBusError:
            pass

    def stalled_job(self):
        """An import that waits for input nobody writes: a job that stays. Each has a name of
        its own: a cancelled one holds its name until its clean-up has ended."""
        r, w = os.pipe()
        self.open_fds.append(w)
        self.n_stalled = getattr(self, 'n_stalled', 0) + 1
        try:
            job_id, path = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ImportTar', 0,
                                          'stalled-%d' % self.n_stalled, False, fd_list=fd_list(r))
        finally:
            os.close(r)
        self.addCleanup(self._cancel, job_id)
        # The call answers at once; the job makes its hidden temporary a moment later. Snapshots of
        # the store taken before that would differ from later ones for no fault of a refused call.
        prefix = '.#stamp-stalled-%d-' % self.n_stalled
        stamptest.spin_until(lambda: any(n.startswith(prefix) for n in os.listdir(self.store)),
                             'the stalled import to make its temporary')
        # settled: its temporary made (by stamp-transfer, a moment after the reply), so that what
        # the matrix compares does not change under it
        prefix = '.#stamp-stalled-%d-' % self.n_stalled
        stamptest.wait_for(lambda: any(n.startswith(prefix) for n in os.listdir(self.store)),
                           'the stalled import to make its temporary')
        return job_id, path

    def _cancel(self, job_id):
        try:
            self.root.manager('CancelJob', job_id)
        except stamptest.DBusError:
            pass

    # -- the matrix

    def cases(self):
        """(label, action, call(caller, **kw), needs) for every mutating method."""
        tar, out = self.tar, self.export_out

        def with_fd(path, flags, method, *args):
            def call(c, **kw):
                if isinstance(c, stamptest.UserCaller):
                    return user_call_with_fd(self, c.user, path, flags, method, args,
                                             interactive=kw.get('interactive', False))
                fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
                try:
                    return c.call(MANAGER_PATH, MANAGER_IFACE, method, *args, fd_list=fd_list(fd), **kw)
                finally:
                    os.close(fd)
            return call

        return [
            ('CloneImage', 'manage-images', lambda c, **kw: c.manager('CloneImage', 'base', 'web', False, **kw)),
            ('CloneImageEx', 'manage-images',
             lambda c, **kw: c.manager('CloneImageEx', 'base', 'web', {'keep_identity': GLib.Variant('b', True)},
                                       **kw)),
            ('RemoveImage', 'manage-images', lambda c, **kw: c.manager('RemoveImage', 'base', **kw)),
            ('RenameImage', 'manage-images', lambda c, **kw: c.manager('RenameImage', 'base', 'moved', **kw)),
            ('MarkImageReadOnly', 'manage-images',
             lambda c, **kw: c.manager('MarkImageReadOnly', 'base', True, **kw)),
            ('SnapshotImage', 'manage-images', lambda c, **kw: c.manager('SnapshotImage', 'snapbase', 'new', **kw)),
            ('RestoreImage', 'manage-images', lambda c, **kw: c.manager('RestoreImage', 'snapbase', 'snap', **kw)),
            ('RemoveSnapshot', 'manage-images',
             lambda c, **kw: c.manager('RemoveSnapshot', 'snapbase', 'snap', **kw)),
            ('RemoveImageEx', 'manage-images',
             lambda c, **kw: c.manager('RemoveImageEx', 'snapbase', {'with_snapshots': GLib.Variant('b', True)},
                                       **kw)),
            ('Image.Clone', 'manage-images', lambda c, **kw: c.image('base', 'Clone', 'web', False, **kw)),
            ('Image.Remove', 'manage-images', lambda c, **kw: c.image('base', 'Remove', **kw)),
            ('Image.Rename', 'manage-images', lambda c, **kw: c.image('base', 'Rename', 'moved', **kw)),
            ('Image.MarkReadOnly', 'manage-images', lambda c, **kw: c.image('base', 'MarkReadOnly', True, **kw)),
            ('CreateTemplate', 'create-template',
             lambda c, **kw: c.manager('CreateTemplate', 'tmpl', 'bookworm', {}, **kw)),
            ('ImportTar', 'import', with_fd(tar, os.O_RDONLY, 'ImportTar', 0, 'imported', False)),
            ('ExportTar', 'export', with_fd(out, os.O_WRONLY | os.O_CREAT, 'ExportTar', 'base', 0, 'zstd')),
            ('ExportImage', 'export', with_fd(out, os.O_WRONLY | os.O_CREAT, 'ExportImage', 'base', 0,
                                              {'format': GLib.Variant('s', 'btrfs')})),
            ('ImportImage', 'import', with_fd(tar, os.O_RDONLY, 'ImportImage', 0, 'imported2', {})),
            ('DiffImage', 'manage-images', lambda c, **kw: c.manager('DiffImage', 'base', 'base', **kw)),
            ('PullTar', 'pull', lambda c, **kw: c.manager('PullTar', self.server.url('small.tar'), 'pulled', {},
                                                         **kw)),
            ('StartMachine', 'start-machine', lambda c, **kw: c.manager('StartMachine', 'base', {
                'name': GLib.Variant('s', 'other'), 'command': GLib.Variant('as', ['/bin/true'])}, **kw)),
            ('StopMachine', 'manage-machines', lambda c, **kw: c.manager('StopMachine', 'box', **kw), 'machine'),
            ('KillMachine', 'manage-machines', lambda c, **kw: c.manager('KillMachine', 'box', 9, **kw),
             'machine'),
            ('KillMachineEx', 'manage-machines',
             lambda c, **kw: c.manager('KillMachineEx', 'box', 'all', 9, **kw), 'machine'),
            ('Machine.KillEx', 'manage-machines',
             lambda c, **kw: c.call(self.machine, MACHINE_IFACE, 'KillEx', 'leader', 9, sig='(si)', **kw),
             'machine'),
            ('Machine.Stop', 'manage-machines',
             lambda c, **kw: c.call(self.machine, MACHINE_IFACE, 'Stop', sig='()', **kw), 'machine'),
            ('Machine.Kill', 'manage-machines',
             lambda c, **kw: c.call(self.machine, MACHINE_IFACE, 'Kill', 9, sig='(i)', **kw), 'machine'),
            ('ExecMachine', 'login', lambda c, **kw: c.manager('ExecMachine', 'box', ['/bin/busybox', 'true'], {},
                                                              **kw), 'machine'),
            ('Machine.Exec', 'login', lambda c, **kw: c.call(self.machine, MACHINE_IFACE, 'Exec',
                                                             ['/bin/busybox', 'true'], {}, **kw), 'machine'),
            ('CancelJob', 'import', lambda c, **kw: c.manager('CancelJob', self.job[0], **kw), 'job'),
            ('Job.Cancel', 'import', lambda c, **kw: c.call(self.job[1], JOB_IFACE, 'Cancel', sig='()', **kw),
             'job'),
        ]

    def snapshot(self):
        """Everything a refused call must leave as it was."""
        machines = sorted((row[0], row[2], row[3]) for row in self.root.manager('ListMachines')) \
            if self.machines_supported else []
        return {
            'store': store_state(self.store),
            'jobs': sorted((row[0], row[1], row[2]) for row in self.root.manager('ListJobs')),
            'machines': machines,
            'export output': os.path.getsize(self.export_out) if os.path.exists(self.export_out) else None,
        }

    def test_refused_without_authorization(self):
        self.machines_supported = True
        self.machine = self.running_machine()
        if self.machine is None:
            self.machines_supported = False
        self.job = self.stalled_job()
        fetched = []
        for label, action, call, *needs in self.cases():
            if needs and needs[0] == 'machine' and not self.machine:
                continue
            # no rule at all: the policy default (auth_admin) for both flag settings; then a rule
            # that allows every other action
            for rules, interactive, expected in (
                    ('', False, INTERACTIVE_REQUIRED),
                    ('', True, ACCESS_DENIED),
                    (other_actions_rule(USER, action), False, INTERACTIVE_REQUIRED)):
                with self.subTest(method=label, interactive=interactive, other_rules=bool(rules)):
                    self.set_rules(rules)
                    before = self.snapshot()
                    try:
                        call(self.user, interactive=interactive)
                    except stamptest.DBusError as e:
                        if e.name == NOT_SUPPORTED:
                            self.skipTest('%s answers NotSupported' % label)
                        self.assertEqual(e.name, expected, '%s: %s' % (label, e))
                        self.assertTrue(e.message)
                    else:
                        self.fail('%s succeeded for an unauthorized caller' % label)
                    self.assertEqual(self.snapshot(), before, '%s changed something' % label)
            fetched.append(label)
        self.assertEqual(self.server.requests, 0, 'a refused PullTar fetched from the server')
        stamptest.diag('refused and unchanged: %s' % ', '.join(fetched))

    def test_own_action_lets_through(self):
        """The positive control: each method's own action (and only that is
        allowed) admits the caller. Long work is cancelled again at once."""
        self.machines_supported = True
        self.machine = self.running_machine()
        self.job = None
        done = []
        for label, action, call, *needs in self.cases():
            if needs and needs[0] == 'machine':
                if not self.machine:
                    continue
            if needs and needs[0] == 'job':
                self.job = self.stalled_job()
            self.set_rules(rule_for(USER, action, 'YES'))
            with self.subTest(method=label):
                try:
                    result = call(self.user)
                except stamptest.DBusError as e:
                    if e.name == NOT_SUPPORTED:
                        continue
                    self.fail('%s refused despite a rule for %s: %s' % (label, action, e))
                if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
                    self._cancel(result[0])  # a job of ours: not needed any further
                    stamptest.spin_until(lambda: result[0] in self.jobs.removed, 'job %d to end' % result[0])
                done.append(label)
            # put back what the call changed, for the next one
            self.set_rules('')
            if label in ('RemoveImage', 'Image.Remove'):
                make_image(self.store, 'base')
            elif label in ('RenameImage', 'Image.Rename'):
                self.root.manager('RenameImage', 'moved', 'base')
            elif label in ('CloneImage', 'CloneImageEx', 'Image.Clone'):
                self.root.manager('RemoveImage', 'web')
            elif label == 'SnapshotImage':
                self.root.manager('RemoveSnapshot', 'snapbase', 'new')
            elif label == 'RemoveSnapshot':
                self.root.manager('SnapshotImage', 'snapbase', 'snap')
            elif label == 'RemoveImageEx':
                self.snapbase_with_snapshot()
            elif label in ('MarkImageReadOnly', 'Image.MarkReadOnly'):
                self.root.manager('MarkImageReadOnly', 'base', False)
            elif label in ('StopMachine', 'KillMachine', 'KillMachineEx', 'Machine.Stop', 'Machine.Kill',
                           'Machine.KillEx'):
                stamptest.wait_for(lambda: 'box' not in [r[0] for r in self.root.manager('ListMachines')],
                                   'the machine to go')
                self.machine = self.running_machine()
            for name in ('imported', 'pulled', 'tmpl'):
                if name in self.root.list_images():
                    self.root.manager('RemoveImage', name)
        stamptest.diag('let through by their own action: %s' % ', '.join(done))


class SubjectTest(stamptest.TestCase):
    """Who polkit is asked about: the calling bus peer."""

    CALL_WHEN_TOLD = r'''
import os, sys, time, json
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib
go, out = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.01)
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
try:
    bus.call_sync('io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', 'CloneImage',
                  GLib.Variant('(ssb)', ('base', 'by-pid', False)), None, Gio.DBusCallFlags.NONE, 60000, None)
    r = 'ok'
except GLib.Error as e:
    r = Gio.DBusError.get_remote_error(e) or str(e)
with open(out, 'w') as f:
    f.write(r)
'''

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        make_image(self.store, 'base')

    def test_rule_on_one_pid_admits_that_process_only(self):
        script = os.path.join(self.dir, 'call-when-told.py')
        with open(script, 'w') as f:
            f.write(self.CALL_WHEN_TOLD)
        go, out = os.path.join(self.dir, 'go'), os.path.join(self.dir, 'out')
        open(out, 'w').close()
        os.chown(out, self.env.users[USER2], self.env.users[USER2])
        proc = subprocess.Popen(stamptest.wrap_pdeathsig(self.env.as_user(USER2, [stamptest.PYTHON, script,
                                                                                  go, out])))
        self.addCleanup(proc.kill)
        # setpriv and env exec: the pid stays the one polkit will see for the python process
        stamptest.wait_for(lambda: 'call-when-told' in open('/proc/%d/cmdline' % proc.pid).read(),
                           'the waiting caller to start')
        self.set_rules('''polkit.addRule(function(action, subject) {
    if (action.id == "io.stamp.Stamp1.manage-images" && subject.pid == %d)
        return polkit.Result.YES;
});
''' % proc.pid)
        before = store_state(self.store)
        # any other process, of either user, is not that pid
        for caller in (self.user, self.user2):
            self.assertDBusError(INTERACTIVE_REQUIRED, caller.manager, 'CloneImage', 'base', 'by-pid', False)
        self.assertUnchanged(self.store, before)
        # the process the rule names is let in, through its own connection
        open(go, 'w').close()
        proc.wait(timeout=stamptest.TIMEOUT)
        with open(out) as f:
            self.assertEqual(f.read(), 'ok')
        self.assertIn('by-pid', self.root.list_images())

    def test_kept_authorization_is_not_borrowed(self):
        # auth_admin_keep: USER2 authenticates once (as the admin, in a terminal)...
        keep = '''polkit.addRule(function(action, subject) {
    if (action.id == "io.stamp.Stamp1.manage-images" &&
        (subject.user == "%s" || subject.user == "%s"))
        return polkit.Result.AUTH_ADMIN_KEEP;
});
''' % (USER, USER2)
        self.set_rules(keep)
        pane, result = self.call_in_terminal(USER2, 'CloneImage', 'base', 'kept', False)
        pane.wait_for_password_prompt()
        pane.type_line(ADMIN_PASSWORD)
        self.assertEqual(pane.wait_exit(), 0)
        self.assertIsNone(result())
        self.assertIn('kept', self.root.list_images())
        # ...which lets in neither another user's process nor USER2's next one
        before = store_state(self.store)
        self.assertDBusError(INTERACTIVE_REQUIRED, self.user.manager, 'CloneImage', 'base', 'borrowed', False)
        self.assertDBusError(INTERACTIVE_REQUIRED, self.user2.manager, 'CloneImage', 'base', 'borrowed', False)
        self.assertUnchanged(self.store, before)

    def test_no_prompt_without_the_interactive_flag(self):
        self.set_rules(rule_for(USER, 'manage-images', 'AUTH_ADMIN'))
        before = store_state(self.store)
        # An agent registered for the caller, waiting: the call does not allow interaction.
        out = os.path.join(self.dir, 'noninteractive.json')
        open(out, 'w').close()
        os.chown(out, self.env.users[USER], self.env.users[USER])
        argv = stamptest.UserCaller.command(MANAGER_PATH, MANAGER_IFACE, 'CloneImage', 'base', 'web', False,
                                            interactive=False, output=out)
        pane = self.run_in_terminal(USER, argv, agent=True)
        self.assertEqual(pane.wait_exit(), 0)
        with open(out) as f:
            self.assertDBusError(INTERACTIVE_REQUIRED, stamptest.parse_callas_output, f.read())
        screen = pane.capture()
        self.assertNotIn('Password', screen, 'the agent was asked:\n' + screen)
        self.assertNotIn('Authentication is needed', screen, 'the agent was asked:\n' + screen)
        self.assertUnchanged(self.store, before)
        # The same set-up with the flag does prompt: the agent above was able to be asked.
        pane, result = self.call_in_terminal(USER, 'CloneImage', 'base', 'web', False)
        pane.wait_for_password_prompt()
        pane.kill()


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
