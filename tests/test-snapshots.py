#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshots: SnapshotImage, RestoreImage, RemoveSnapshot, ListSnapshots,
RemoveImageEx with_snapshots, StartMachine's option "snapshot" and the
stampctl verbs. Round trips compare trees exactly; snapshots are hidden,
follow renames and keep their image from being removed alone; a restore is
refused while a machine runs and survives a kill -9 at its critical steps;
refusals are named and change nothing; each method's authorization."""

import os
import signal
import time

import stamptest
from stamptest import (ACCESS_DENIED, ADMIN_PASSWORD, INTERACTIVE_REQUIRED, MANAGER_IFACE,
                       MANAGER_PATH, STAMP_ERROR, STAMPCTL, USER, USER2, GLib, make_image,
                       rule_for, run, store_names, store_state, tree_listing, write_file)

NO_SUCH_IMAGE = STAMP_ERROR + 'NoSuchImage'
NO_SUCH_SNAPSHOT = STAMP_ERROR + 'NoSuchSnapshot'
IMAGE_BUSY = STAMP_ERROR + 'ImageBusy'
IMAGE_EXISTS = STAMP_ERROR + 'ImageExists'
IMAGE_READ_ONLY = STAMP_ERROR + 'ImageReadOnly'
INVALID_NAME = STAMP_ERROR + 'InvalidName'
NOT_SUPPORTED = STAMP_ERROR + 'NotSupported'
QUOTA_EXCEEDED = STAMP_ERROR + 'QuotaExceeded'
INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
REFUSED = (ACCESS_DENIED, INTERACTIVE_REQUIRED)
SNAPSHOTS_DIR = os.path.join('.stamp', 'snapshots')
APPLETS = ('sleep', 'cat', 'ls', 'touch', 'rm', 'true')
BAD_NAMES = ('', '.hidden', '-dash', '..', 'a/b', '../escape', 'x' * 65, 'sp ace', 'new\nline')


def add_applets(root):
    """What nspawn needs of a busybox image (see test-machines.py)."""
    for d in ('dev', 'proc', 'sys', 'run', 'var'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for f in ('etc/resolv.conf', 'etc/localtime'):
        open(os.path.join(root, f), 'a').close()
    for applet in APPLETS:
        link = os.path.join(root, 'bin', applet)
        if not os.path.lexists(link):
            os.symlink('busybox', link)


def populate_rich(root):
    """Owners, modes, xattrs, hard links, symlinks, a FIFO and a device node."""
    os.makedirs(os.path.join(root, 'data/sub'), exist_ok=True)
    with open(os.path.join(root, 'data/a.txt'), 'w') as f:
        f.write('alpha\n' * 100)
    with open(os.path.join(root, 'data/sub/b.bin'), 'wb') as f:
        f.write(os.urandom(200000))
    os.chown(os.path.join(root, 'data/sub/b.bin'), 1234, 5678)
    os.chmod(os.path.join(root, 'data/sub/b.bin'), 0o4711)
    os.link(os.path.join(root, 'data/a.txt'), os.path.join(root, 'data/hard'))
    os.symlink('../data/a.txt', os.path.join(root, 'data/sub/link'))
    os.mkfifo(os.path.join(root, 'data/fifo'))
    os.mknod(os.path.join(root, 'data/null'), 0o600 | 0o020000, os.makedev(1, 3))
    os.setxattr(os.path.join(root, 'data/a.txt'), 'user.note', b'kept')


def full_listing(top):
    """tree_listing plus xattrs and inode numbers of hard links' groups."""
    listing = tree_listing(top)
    extra = {}
    for rel in listing:
        p = os.path.join(top, rel)
        st = os.lstat(p)
        xattrs = {}
        if not os.path.islink(p):
            for name in os.listxattr(p, follow_symlinks=False):
                xattrs[name] = os.getxattr(p, name, follow_symlinks=False)
        extra[rel] = (sorted(xattrs.items()), st.st_nlink, st.st_rdev)
    return listing, extra


class SnapshotTestCase(stamptest.TestCase):
    """A daemon on its own pool; web, an image of root's with a rich tree."""

    limits = ''
    environ = None

    def setUp(self):
        super().setUp()
        self.config = os.path.join(self.dir, 'stampd.conf')
        write_file(self.config, '[Limits]\n' + self.limits)
        self.daemon = self.start_daemon(args=['--config', self.config], environ=self.environ)
        self.store = self.daemon.store
        self.web = make_image(self.store, 'web')
        populate_rich(self.web)

    def path(self, *parts):
        return os.path.join(self.store, *parts)

    def restart(self, environ=None):
        self.daemon = self.start_daemon(store=self.store, args=['--config', self.config],
                                        environ=environ)

    def snapshots(self, name, caller=None):
        return [row[0] for row in (caller or self.root).manager('ListSnapshots', name)]

    def hidden_in_store(self):
        return sorted(n for n in os.listdir(self.store) if n.startswith('.') and n != '.stamp')

    def snapshot_dirs(self):
        top = self.path(SNAPSHOTS_DIR)
        return sorted(os.listdir(top)) if os.path.isdir(top) else []

    def assertRefused(self, name, caller, method, *args):
        before = store_state(self.store)
        snaps = self.snapshot_dirs()
        try:
            caller.manager(method, *args)
        except stamptest.DBusError as error:
            e = error
        else:
            self.fail('%s %r was allowed' % (method, args))
        self.assertIn(e.name, name if isinstance(name, tuple) else (name,), str(e))
        self.assertUnchanged(self.store, before, method)
        self.assertEqual(self.snapshot_dirs(), snaps)
        return e

    def stampctl(self, *args, user=None, check=True):
        argv = [STAMPCTL, '--no-ask-password'] + list(args)
        if user:
            argv = stamptest.ENV.as_user(user, argv)
        return run(argv, check=check)


class RoundTripTest(SnapshotTestCase):

    def test_snapshot_restore_round_trip(self):
        before = full_listing(self.web)
        t0 = time.time()
        self.root.manager('SnapshotImage', 'web', 'one')
        rows = self.root.manager('ListSnapshots', 'web')
        self.assertEqual([r[0] for r in rows], ['one'])
        self.assertLess(abs(rows[0][1] / 1e6 - t0), 60, 'creation time in µs')
        # Hidden: no image, no entry of the store, nothing machinectl would list.
        self.assertEqual(sorted(self.root.list_images()), ['web'])
        self.assertEqual(store_names(self.store), ['web'])

        # Change everything a machine could: contents, deletions, renames, modes, owners, xattrs.
        with open(self.path('web/data/a.txt'), 'a') as f:
            f.write('changed\n')
        os.remove(self.path('web/data/sub/b.bin'))
        os.rename(self.path('web/data/fifo'), self.path('web/data/fifo2'))
        os.chmod(self.path('web/data'), 0o700)
        os.chown(self.path('web/srv/marker'), 42, 42)
        os.removexattr(self.path('web/data/a.txt'), 'user.note')
        with open(self.path('web/new-file'), 'w') as f:
            f.write('new\n')
        self.assertNotEqual(full_listing(self.web), before)

        self.root.manager('RestoreImage', 'web', 'one')
        self.assertEqual(full_listing(self.web), before)
        self.assertFalse(stamptest.subvolume_read_only(self.web), 'a restored image is writable')
        self.assertEqual(self.snapshots('web'), ['one'], 'the snapshot stays after a restore')
        self.assertEqual(self.hidden_in_store(), [], 'the old tree is gone')
        self.assertEqual(os.listdir(self.path('.stamp/restoring')), [])

        # Twice, and from the later of two snapshots.
        with open(self.path('web/second'), 'w') as f:
            f.write('2\n')
        self.root.manager('SnapshotImage', 'web', 'two')
        second = full_listing(self.web)
        os.remove(self.path('web/second'))
        self.root.manager('RestoreImage', 'web', 'two')
        self.assertEqual(full_listing(self.web), second)
        self.assertEqual(self.snapshots('web'), ['one', 'two'])
        self.root.manager('RestoreImage', 'web', 'one')
        self.assertEqual(full_listing(self.web), before)

    def test_snapshot_is_read_only_and_out_of_sight(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        dirs = self.snapshot_dirs()
        self.assertEqual(len(dirs), 1)
        snap = self.path(SNAPSHOTS_DIR, dirs[0], 'one')
        self.assertTrue(stamptest.subvolume_read_only(snap))
        self.assertSnapshotOf(snap, self.web)
        st = os.stat(self.path(SNAPSHOTS_DIR))
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (0, 0o700))

    def test_remove_snapshot(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        self.root.manager('SnapshotImage', 'web', 'two')
        self.root.manager('RemoveSnapshot', 'web', 'one')
        self.assertEqual(self.snapshots('web'), ['two'])
        self.assertEqual(len(os.listdir(self.path(SNAPSHOTS_DIR, self.snapshot_dirs()[0]))), 1)
        self.assertDBusError(NO_SUCH_SNAPSHOT, self.root.manager, 'RestoreImage', 'web', 'one')

    def test_snapshots_follow_rename(self):
        before = full_listing(self.web)
        self.root.manager('SnapshotImage', 'web', 'one')
        self.root.manager('RenameImage', 'web', 'www')
        self.assertEqual(self.snapshots('www'), ['one'])
        self.assertDBusError(NO_SUCH_IMAGE, self.root.manager, 'ListSnapshots', 'web')
        # A new image under the old name has none of them.
        make_image(self.store, 'web')
        self.assertEqual(self.snapshots('web'), [])
        os.remove(self.path('www/srv/marker'))
        self.root.manager('RestoreImage', 'www', 'one')
        self.assertEqual(full_listing(self.path('www')), before)
        # And after the restore (a new subvolume), a rename still carries them.
        self.root.manager('RenameImage', 'www', 'w3')
        self.assertEqual(self.snapshots('w3'), ['one'])

    def test_origin_kept_after_restore(self):
        self.root.manager('MarkImageReadOnly', 'web', True)
        self.root.manager('CloneImage', 'web', 'clone', False)
        self.assertEqual(self.root.image_props('clone')['Origin'], 'web')
        self.root.manager('SnapshotImage', 'clone', 'one')
        self.root.manager('RestoreImage', 'clone', 'one')
        self.assertEqual(self.root.image_props('clone')['Origin'], 'web',
                         "a restored image's btrfs parent is its snapshot, not its origin")
        self.root.manager('SnapshotImage', 'clone', 'two')
        self.root.manager('RestoreImage', 'clone', 'two')
        self.root.manager('RenameImage', 'clone', 'renamed')
        self.assertEqual(self.root.image_props('renamed')['Origin'], 'web')

    def test_remove_refused_then_with_snapshots(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        self.root.manager('SnapshotImage', 'web', 'two')
        e = self.assertRefused(IMAGE_BUSY, self.root, 'RemoveImage', 'web')
        self.assertIn('2 snapshots', e.message)
        self.assertIn('with_snapshots', e.message)
        self.assertDBusError(IMAGE_BUSY, self.root.image, 'web', 'Remove')
        self.assertRefused(IMAGE_BUSY, self.root, 'RemoveImageEx', 'web', {})
        self.assertRefused(IMAGE_BUSY, self.root, 'RemoveImageEx', 'web',
                           {'with_snapshots': GLib.Variant('b', False)})
        e = self.assertRefused(INVALID_ARGS, self.root, 'RemoveImageEx', 'web',
                               {'with_snapshots': GLib.Variant('s', 'yes')})
        self.assertIn('with_snapshots', e.message)
        e = self.assertRefused(INVALID_ARGS, self.root, 'RemoveImageEx', 'web',
                               {'with_snapshot': GLib.Variant('b', True)})
        self.assertIn('with_snapshot', e.message)
        self.root.manager('RemoveImageEx', 'web', {'with_snapshots': GLib.Variant('b', True)})
        self.assertEqual(sorted(self.root.list_images()), [])
        self.assertEqual(self.snapshot_dirs(), [])
        self.assertEqual(self.hidden_in_store(), [])
        self.assertEqual(stamptest.subvolumes_below(self.store), [])

    def test_remove_without_snapshots_still_works(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        self.root.manager('RemoveSnapshot', 'web', 'one')
        self.root.manager('RemoveImage', 'web')
        self.assertEqual(sorted(self.root.list_images()), [])

    def test_directory_image_not_supported(self):
        make_image(self.store, 'dir', kind='directory')
        e = self.assertRefused(NOT_SUPPORTED, self.root, 'SnapshotImage', 'dir', 'one')
        self.assertIn('dir', e.message)
        self.assertEqual(self.root.manager('ListSnapshots', 'dir'), [])


class RefusalTest(SnapshotTestCase):

    limits = 'SnapshotsPerImage=2\n'

    def test_bad_names(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        for bad in BAD_NAMES:
            with self.subTest(name=bad):
                for method in ('SnapshotImage', 'RestoreImage', 'RemoveSnapshot'):
                    e = self.assertRefused(INVALID_NAME, self.root, method, 'web', bad)
                    self.assertIn('snapshot name', e.message)
                    e = self.assertRefused(INVALID_NAME, self.root, method, bad, 'one')
                    self.assertIn('image name', e.message)
                self.assertDBusError(INVALID_NAME, self.root.manager, 'ListSnapshots', bad)
        self.assertEqual(self.snapshots('web'), ['one'])

    def test_missing_image_and_snapshot(self):
        for method in ('SnapshotImage', 'RestoreImage', 'RemoveSnapshot'):
            e = self.assertRefused(NO_SUCH_IMAGE, self.root, method, 'nothere', 'one')
            self.assertIn('nothere', e.message)
        self.assertDBusError(NO_SUCH_IMAGE, self.root.manager, 'ListSnapshots', 'nothere')
        for method in ('RestoreImage', 'RemoveSnapshot'):
            e = self.assertRefused(NO_SUCH_SNAPSHOT, self.root, method, 'web', 'never')
            self.assertIn('never', e.message)
            self.assertIn('web', e.message)
        self.root.manager('SnapshotImage', 'web', 'one')
        self.assertRefused(NO_SUCH_SNAPSHOT, self.root, 'RestoreImage', 'web', 'other')

    def test_exists_and_per_image_cap(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        e = self.assertRefused(IMAGE_EXISTS, self.root, 'SnapshotImage', 'web', 'one')
        self.assertIn('one', e.message)
        self.root.manager('SnapshotImage', 'web', 'two')
        e = self.assertRefused(QUOTA_EXCEEDED, self.root, 'SnapshotImage', 'web', 'three')
        self.assertIn('SnapshotsPerImage=2', e.message)
        self.root.manager('RemoveSnapshot', 'web', 'one')
        self.root.manager('SnapshotImage', 'web', 'three')
        self.assertEqual(self.snapshots('web'), ['two', 'three'])

    def test_read_only_image_not_restored(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        self.root.manager('MarkImageReadOnly', 'web', True)
        self.assertRefused(IMAGE_READ_ONLY, self.root, 'RestoreImage', 'web', 'one')


class MachineTest(SnapshotTestCase):

    def setUp(self):
        super().setUp()
        add_applets(self.web)
        seen, unsubscribe = self.env.subscribe(MANAGER_IFACE, 'MachineRemoved', MANAGER_PATH)
        self.addCleanup(unsubscribe)
        self.removed = seen

    def start(self, **options):
        types = {'command': 'as', 'snapshot': 's', 'ephemeral': 'b'}
        variants = {k: GLib.Variant(types[k], v) for k, v in options.items()}
        self.root.manager('StartMachine', 'web', variants)
        self.addCleanup(self.kill_quietly)

    def kill_quietly(self):
        if self.daemon.running():
            try:
                self.root.manager('KillMachine', 'web', signal.SIGKILL)
            except stamptest.DBusError:
                pass
            stamptest.spin_until(lambda: not self.root.manager('ListMachines'), 'the machine to end')

    def wait_removed(self):
        stamptest.spin_until(lambda: self.removed, 'MachineRemoved')
        return self.removed[-1][2]

    def test_restore_while_running_refused(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        self.start(command=['/bin/sleep', '1000'])
        stamptest.wait_for(lambda: self.root.manager('ListMachines'), 'the machine')
        # (The running machine changes the image's times itself: its tree is what must not change.)
        inode = os.stat(self.web).st_ino, stamptest.subvolume_show(self.web)['UUID']
        e = self.assertDBusError(IMAGE_BUSY, self.root.manager, 'RestoreImage', 'web', 'one')
        self.assertIn('machine web', e.message)
        self.assertDBusError(IMAGE_BUSY, self.root.manager, 'RemoveImageEx', 'web',
                             {'with_snapshots': GLib.Variant('b', True)})
        self.assertEqual((os.stat(self.web).st_ino, stamptest.subvolume_show(self.web)['UUID']), inode)
        self.assertEqual([n for n in self.hidden_in_store() if n != '.#web.lck'], [], "nspawn's lock only")
        # A snapshot of the running machine's image may be taken, and removed.
        self.root.manager('SnapshotImage', 'web', 'live')
        self.root.manager('RemoveSnapshot', 'web', 'live')
        self.assertEqual(self.snapshots('web'), ['one'])

    def test_start_with_snapshot(self):
        before = full_listing(self.web)
        self.start(command=['/bin/touch', '/srv/changed'], snapshot='before-upgrade')
        self.assertEqual(self.wait_removed(), 0)
        self.assertTrue(os.path.exists(self.path('web/srv/changed')))
        self.assertEqual(self.snapshots('web'), ['before-upgrade'])
        self.root.manager('RestoreImage', 'web', 'before-upgrade')
        self.assertEqual(full_listing(self.web), before)

    def test_stampctl_start_with_snapshot(self):
        run([STAMPCTL, 'start', 'web', '--snapshot', 'before', '--', '/bin/touch', '/srv/touched'])
        self.assertTrue(os.path.exists(self.path('web/srv/touched')))
        self.assertEqual(self.snapshots('web'), ['before'])
        self.assertEqual(int(self.root.image_props('web')['Snapshots']), 1)

    def test_start_with_snapshot_refusals(self):
        self.root.manager('SnapshotImage', 'web', 'one')
        for options, error in (({'snapshot': 'one'}, IMAGE_EXISTS),
                               ({'snapshot': '../x'}, INVALID_NAME),
                               ({'snapshot': 'two', 'ephemeral': True}, INVALID_ARGS)):
            with self.subTest(options=options):
                before = store_state(self.store)
                variants = {k: GLib.Variant('b' if k == 'ephemeral' else 's', v)
                            for k, v in options.items()}
                variants['command'] = GLib.Variant('as', ['/bin/true'])
                self.assertDBusError(error, self.root.manager, 'StartMachine', 'web', variants)
                self.assertUnchanged(self.store, before)
                self.assertEqual(self.root.manager('ListMachines'), [])
        self.assertEqual(self.snapshots('web'), ['one'])


class CrashTest(SnapshotTestCase):
    """kill -9 of stampd while a restore is stopped at its critical steps (STAMPD_TEST_PAUSE): the
    next start finds the old tree or the new one, complete, with its snapshots and owner."""

    def crash_during_restore(self, point):
        # An image of the user's own, so that the owner record must survive too.
        self.set_rules(rule_for(USER, 'manage-own-images', 'YES'))
        uid = stamptest.ENV.users[USER]
        self.root.manager('MarkImageReadOnly', 'web', True)
        self.user.manager('CloneImage', 'web', 'mine', False)
        mine = self.path('mine')
        self.user.manager('SnapshotImage', 'mine', 'one')
        old_tree = full_listing(self.path(SNAPSHOTS_DIR, self.snapshot_dirs()[0], 'one'))
        os.remove(os.path.join(mine, 'data/a.txt'))
        with open(os.path.join(mine, 'changed'), 'w') as f:
            f.write('changed\n')
        changed_tree = full_listing(mine)

        self.stop_daemon(self.daemon)
        env = dict(os.environ, STAMPD_TEST_PAUSE=point)
        self.restart(environ=env)
        pending = self.root.call_async(MANAGER_PATH, MANAGER_IFACE, 'RestoreImage', 'mine', 'one')
        stamptest.spin_until(lambda: 'Paused at %s' % point in self.daemon.log() or pending.done,
                             'the restore to pause at %s' % point)
        self.assertFalse(pending.done, 'the restore ended instead of pausing: %s' % pending.error)
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait()
        stamptest.spin_until(lambda: pending.done, 'the call to fail')

        self.restart()
        self.assertEqual(sorted(self.root.list_images()), ['mine', 'web'])
        self.assertEqual(self.hidden_in_store(), [], 'no temporary left')
        self.assertEqual(os.listdir(self.path('.stamp/restoring')), [])
        self.assertEqual(self.snapshots('mine'), ['one'])
        self.assertEqual(self.root.image_props('mine')['Owner'], uid)
        return old_tree, changed_tree, full_listing(mine)

    def test_kill_before_exchange_leaves_old(self):
        snapshot_tree, changed_tree, now = self.crash_during_restore('restore-before-exchange')
        self.assertEqual(now, changed_tree)
        self.user.manager('RestoreImage', 'mine', 'one')  # and it works after
        self.assertEqual(full_listing(self.path('mine')), snapshot_tree)

    def test_kill_after_exchange_leaves_new(self):
        snapshot_tree, changed_tree, now = self.crash_during_restore('restore-after-exchange')
        self.assertEqual(now, snapshot_tree)
        self.user.manager('RemoveImageEx', 'mine', {'with_snapshots': GLib.Variant('b', True)})
        self.assertEqual(sorted(self.root.list_images()), ['web'])
        self.assertEqual(self.snapshot_dirs(), [])


class AuthorizationTest(SnapshotTestCase):
    """manage-own-images for the owner, manage-images for anyone else; ListSnapshots for anyone."""

    def setUp(self):
        super().setUp()
        self.set_rules(''.join(rule_for(u, 'manage-own-images', 'YES') for u in (USER, USER2)))
        self.root.manager('MarkImageReadOnly', 'web', True)
        self.user.manager('CloneImage', 'web', 'mine', False)

    def test_owner_without_password(self):
        self.user.manager('SnapshotImage', 'mine', 'one')
        self.assertEqual(self.snapshots('mine', self.user), ['one'])
        os.remove(self.path('mine/srv/marker'))
        self.user.manager('RestoreImage', 'mine', 'one')
        self.assertTrue(os.path.exists(self.path('mine/srv/marker')))
        self.user.manager('SnapshotImage', 'mine', 'two')
        self.user.manager('RemoveSnapshot', 'mine', 'two')
        e = self.assertDBusError(IMAGE_BUSY, self.user.manager, 'RemoveImage', 'mine')
        self.assertIn('1 snapshot', e.message)
        self.user.manager('RemoveImageEx', 'mine', {'with_snapshots': GLib.Variant('b', True)})
        self.assertEqual(self.snapshot_dirs(), [])

    def test_other_user_refused(self):
        self.user.manager('SnapshotImage', 'mine', 'one')
        self.assertEqual(self.snapshots('mine', self.user2), ['one'], 'reading needs nothing')
        for method, args in (('SnapshotImage', ('mine', 'two')), ('RestoreImage', ('mine', 'one')),
                             ('RemoveSnapshot', ('mine', 'one')),
                             ('RemoveImageEx', ('mine', {'with_snapshots': GLib.Variant('b', True)}))):
            with self.subTest(method=method):
                self.assertRefused(REFUSED, self.user2, method, *args)
        # Nor root's image for the owner of none of it.
        self.assertRefused(REFUSED, self.user, 'SnapshotImage', 'web', 'x')
        self.assertEqual(self.snapshots('mine'), ['one'])

    def test_manage_images_for_anyones(self):
        self.set_rules(rule_for(USER2, 'manage-images', 'YES'))
        self.user2.manager('SnapshotImage', 'mine', 'by-admin')
        self.user2.manager('RestoreImage', 'mine', 'by-admin')
        self.user2.manager('RemoveSnapshot', 'mine', 'by-admin')

    def test_admin_prompt(self):
        """Root's image: each method asks for the administrator's password (each call is a process
        of its own, so nothing is kept from the one before)."""
        self.set_rules('')
        self.root.manager('MarkImageReadOnly', 'web', False)
        for method, args in (('SnapshotImage', ('web', 'asked')), ('RestoreImage', ('web', 'asked')),
                             ('SnapshotImage', ('web', 'second')), ('RemoveSnapshot', ('web', 'asked')),
                             ('RemoveImageEx', ('web', {'with_snapshots': GLib.Variant('b', True)}))):
            with self.subTest(method=method):
                pane, result = self.call_in_terminal(USER, method, *args)
                pane.wait_for_password_prompt()
                pane.type_line(ADMIN_PASSWORD)
                self.assertEqual(pane.wait_exit(), 0)
                self.assertIsNone(result())
                if args == ('web', 'asked') and method == 'SnapshotImage':
                    os.remove(self.path('web/srv/marker'))
                if method == 'RestoreImage':
                    self.assertTrue(os.path.exists(self.path('web/srv/marker')))
                if method == 'RemoveSnapshot':
                    self.assertEqual(self.snapshots('web'), ['second'])
        self.assertEqual(sorted(self.root.list_images()), ['mine'])
        self.assertEqual(self.snapshot_dirs(), [])

    def test_wrong_password_changes_nothing(self):
        self.set_rules('')
        self.root.manager('SnapshotImage', 'mine', 'one')
        before = store_state(self.store)
        pane, result = self.call_in_terminal(USER2, 'RestoreImage', 'mine', 'one')
        pane.wait_for_password_prompt()
        pane.type_line('wrong-password')
        self.assertEqual(pane.wait_exit(), 0)
        self.assertDBusError(ACCESS_DENIED, result)
        self.assertUnchanged(self.store, before)


class QuotaTest(stamptest.TestCase):
    """On a btrfs with full quota groups (a store the administrator brought), the bytes only a
    snapshot holds count toward the image owner's BytesPerUser=."""

    def setUp(self):
        super().setUp()
        self.config = os.path.join(self.dir, 'stampd.conf')
        write_file(self.config, '[Limits]\nBytesPerUser=3M\n')
        store = stamptest.make_btrfs_store(os.path.join(self.dir, 'store'), quotas=True)
        self.store = store
        make_image(store, 'base', read_only=True)
        self.daemon = self.start_daemon(store=store, args=['--config', self.config])
        self.set_rules(rule_for(USER, 'manage-own-images', 'YES'))
        self.uid = stamptest.ENV.users[USER]

    def write(self, name, size):
        with open(os.path.join(self.store, 'mine', name), 'wb') as f:
            f.write(os.urandom(size))
        self.sync()

    def sync(self):
        run(['btrfs', 'filesystem', 'sync', self.store])

    def usage(self):
        return self.root.manager('GetUserUsage', self.uid)[2]

    def test_snapshot_bytes_count(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        self.write('one', 2 << 20)
        self.user.manager('SnapshotImage', 'mine', 'first')
        os.remove(os.path.join(self.store, 'mine', 'one'))
        self.sync()
        # Only the snapshot holds the first 2 MiB now; the image, less than 1 MiB.
        (name, _, exclusive), = self.root.manager('ListSnapshots', 'mine')
        self.assertGreaterEqual(exclusive, 2 << 20)
        self.assertGreaterEqual(self.usage(), 2 << 20, "the snapshot's bytes are the owner's")
        self.write('two', 1 << 20)
        e = self.assertDBusError(QUOTA_EXCEEDED, self.user.manager, 'SnapshotImage', 'mine', 'second')
        self.assertIn('BytesPerUser=', e.message)
        self.user.manager('RemoveSnapshot', 'mine', 'first')
        self.sync()
        self.user.manager('SnapshotImage', 'mine', 'second')


class StampctlTest(SnapshotTestCase):

    def test_verbs(self):
        self.stampctl('snapshot', 'web', 'one')
        self.stampctl('snapshot', 'web', 'two')
        lines = self.stampctl('snapshots', 'web').stdout.splitlines()
        self.assertEqual(lines[0].split(), ['NAME', 'CREATED', 'EXCLUSIVE'])
        self.assertEqual([line.split()[0] for line in lines[1:] if line.strip() and 'listed' not in line],
                         ['one', 'two'])
        shown = self.stampctl('show', 'web').stdout
        self.assertRegex(shown, r'Snapshots: *2')
        os.remove(self.path('web/srv/marker'))
        self.stampctl('restore', 'web', 'one')
        self.assertTrue(os.path.exists(self.path('web/srv/marker')))
        self.stampctl('remove-snapshot', 'web', 'two')
        self.assertEqual(self.snapshots('web'), ['one'])
        r = self.stampctl('remove', 'web', check=False)
        self.assertEqual(r.returncode, 5, 'ImageBusy is a conflict')
        self.assertIn('1 snapshot', r.stderr)
        self.assertIn('--with-snapshots', r.stderr)
        self.stampctl('remove', '--with-snapshots', 'web')
        self.assertEqual(sorted(self.root.list_images()), [])
        self.assertEqual(self.snapshot_dirs(), [])

    def test_errors(self):
        r = self.stampctl('restore', 'web', 'never', check=False)
        self.assertEqual(r.returncode, 4, 'NoSuchSnapshot is "not found"')
        self.assertIn('no snapshot named never', r.stderr)
        r = self.stampctl('snapshot', 'web', '../x', check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Invalid snapshot name', r.stderr)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
