#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Self-service: images have owners, recorded where nothing in an image can
change them; a user granted only the -own- actions clones templates, and
renames and removes their own images, but nothing of anyone else's; per-user
limits refuse the next image with nothing made; the store is private."""

import os
import stat
import xml.etree.ElementTree as ET

import stamptest
from stamptest import (ACCESS_DENIED, INTERACTIVE_REQUIRED, SRCDIR, STAMP_ERROR, STAMPCTL, USER,
                       USER2, make_image, rule_for, run, store_state, write_file)

QUOTA_EXCEEDED = STAMP_ERROR + 'QuotaExceeded'
REFUSED = (ACCESS_DENIED, INTERACTIVE_REQUIRED)
OWN_ACTIONS = ('manage-own-images', 'start-own-machine', 'manage-own-machines')


class SelfServiceTestCase(stamptest.TestCase):
    """A template of root's (read-only), and rules that grant both test users
    the -own- actions and nothing else."""

    limits = ''

    def setUp(self):
        super().setUp()
        self.config = os.path.join(self.dir, 'stampd.conf')
        write_file(self.config, '[Limits]\n' + self.limits)
        self.daemon = self.start_daemon(args=['--config', self.config])
        self.store = self.daemon.store
        make_image(self.store, 'base', read_only=True)
        self.set_rules(''.join(rule_for(u, a, 'YES') for u in (USER, USER2) for a in OWN_ACTIONS))
        self.uid = stamptest.ENV.users[USER]
        self.uid2 = stamptest.ENV.users[USER2]

    def path(self, *parts):
        return os.path.join(self.store, *parts)

    def owner(self, name, caller=None):
        return (caller or self.root).image_props(name)['Owner']

    def assertRefused(self, caller, method, *args):
        before = store_state(self.store)
        try:
            caller.manager(method, *args)
        except stamptest.DBusError as e:
            self.assertIn(e.name, REFUSED, str(e))
            self.assertUnchanged(self.store, before, method)
            return e
        self.fail('%s %r was allowed' % (method, args))


class OwnerTest(SelfServiceTestCase):

    def test_clone_of_template_is_the_callers(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        self.assertEqual(self.owner('mine'), self.uid)
        self.assertEqual(self.owner('base'), 0, 'an image made by hand is root\'s')
        self.assertEqual(self.owner('mine', self.user2), self.uid, 'anyone may see whose it is')

    def test_root_clone_is_roots(self):
        self.root.manager('CloneImage', 'base', 'roots', False)
        self.assertEqual(self.owner('roots'), 0)

    def test_owner_survives_rename_and_restart(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        self.user.manager('RenameImage', 'mine', 'renamed')
        self.assertEqual(self.owner('renamed'), self.uid)
        self.stop_daemon(self.daemon)
        self.daemon = self.start_daemon(store=self.store, args=['--config', self.config])
        self.assertEqual(self.owner('renamed'), self.uid)
        self.user.manager('RemoveImage', 'renamed')
        self.assertEqual(sorted(self.root.list_images()), ['base'])

    def test_record_is_outside_the_image(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        meta = self.path('.stamp')
        st = os.lstat(meta)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o700))
        self.assertEqual(sorted(os.listdir(os.path.join(meta, 'owners'))), ['mine'])
        self.assertEqual(sorted(self.root.list_images()), ['base', 'mine'], 'the records are no image')
        # What the image's own tree holds decides nothing: root inside a machine can write all of it.
        with open(self.path('mine/etc/owner'), 'w') as f:
            f.write('%d\n' % self.uid2)
        os.setxattr(self.path('mine'), 'user.stamp.owner', str(self.uid2).encode())
        self.assertEqual(self.owner('mine'), self.uid)

    def test_record_is_a_link_and_the_old_file_form_is_read(self):
        """A record is a symbolic link "UID IDENTITY" (whole after a crash without an fsync); records
        written as files by earlier versions are still believed, and a record not root's is not."""
        self.user.manager('CloneImage', 'base', 'mine', False)
        record = self.path('.stamp/owners/mine')
        self.assertTrue(os.path.islink(record))
        target = os.readlink(record)
        self.assertRegex(target, r'^%d uuid:[0-9a-f]{32}$' % self.uid)
        os.unlink(record)
        with open(record, 'w') as f:
            f.write(target + '\n')
        os.chmod(record, 0o600)
        self.assertEqual(self.owner('mine'), self.uid)
        # A record that is not root's is nobody's word.
        os.unlink(record)
        os.symlink(target, record)
        os.lchown(record, self.uid, self.uid)
        self.assertEqual(self.owner('mine'), 0)
        # The rename rewrites it as a link.
        os.lchown(record, 0, 0)
        self.user.manager('RenameImage', 'mine', 'mine2')
        self.assertTrue(os.path.islink(self.path('.stamp/owners/mine2')))
        self.assertEqual(self.owner('mine2'), self.uid)

    def test_image_made_by_hand_under_a_recorded_name_is_roots(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        run(['btrfs', 'subvolume', 'delete', self.path('mine')])  # behind stampd's back
        make_image(self.store, 'mine')
        self.assertEqual(self.owner('mine'), 0, 'a stale record is never believed')
        self.assertRefused(self.user, 'RemoveImage', 'mine')

    def test_stale_records_cleaned_at_start(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        run(['btrfs', 'subvolume', 'delete', self.path('mine')])
        self.stop_daemon(self.daemon)
        self.daemon = self.start_daemon(store=self.store, args=['--config', self.config])
        self.assertEqual(os.listdir(self.path('.stamp/owners')), [])

    def test_stampctl_owner_column_and_mine(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        self.user2.manager('CloneImage', 'base', 'theirs', False)
        lines = run(stamptest.ENV.as_user(USER, [STAMPCTL, 'list'])).stdout.splitlines()
        self.assertEqual(lines[0].split(), ['NAME', 'TYPE', 'RO', 'OWNER', 'USAGE', 'CREATED', 'MODIFIED',
                                            'ORIGIN'])
        rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip() and 'listed' not in line}
        self.assertEqual(rows['mine'][3], USER)
        self.assertEqual(rows['theirs'][3], USER2)
        self.assertEqual(rows['base'][3], 'root')
        mine = run(stamptest.ENV.as_user(USER, [STAMPCTL, '--no-legend', 'list', '--mine'])).stdout.split('\n')
        self.assertEqual([line.split()[0] for line in mine if line.strip()], ['mine'])
        shown = run(stamptest.ENV.as_user(USER, [STAMPCTL, 'show', 'theirs'])).stdout
        self.assertRegex(shown, r'Owner: *%s' % USER2)

    def test_polkit_sees_owner_and_caller_owns(self):
        # Only what the caller owns: removing their own image passes, a clone of root's template
        # (owner 0, caller_owns no) does not.
        self.user.manager('CloneImage', 'base', 'mine', False)
        self.set_rules('''polkit.addRule(function(action, subject) {
    if (action.id == "io.stamp.Stamp1.manage-own-images" && subject.user == "%s" &&
        action.lookup("caller_owns") == "yes" && action.lookup("owner") == "%d")
        return polkit.Result.YES;
});
''' % (USER, self.uid))
        self.assertRefused(self.user, 'CloneImage', 'base', 'again', False)
        self.user.manager('RemoveImage', 'mine')


class OwnActionsTest(SelfServiceTestCase):

    def test_own_image_managed_without_admin(self):
        self.user.manager('CloneImage', 'base', 'mine', False)
        self.user.manager('CloneImage', 'mine', 'mine2', False)  # a clone of one's own image
        self.assertEqual(self.owner('mine2'), self.uid)
        self.user.manager('MarkImageReadOnly', 'mine2', True)
        self.user.manager('MarkImageReadOnly', 'mine2', False)
        self.user.manager('RenameImage', 'mine2', 'mine3')
        self.user.image('mine3', 'Remove')
        self.user.manager('RemoveImage', 'mine')
        self.assertEqual(sorted(self.root.list_images()), ['base'])

    def test_others_images_refused(self):
        self.user2.manager('CloneImage', 'base', 'theirs', False)
        for method, args in (('RemoveImage', ('theirs',)),
                             ('RenameImage', ('theirs', 'stolen')),
                             ('MarkImageReadOnly', ('theirs', True)),
                             ('CloneImage', ('theirs', 'copy', False))):
            with self.subTest(method=method):
                self.assertRefused(self.user, method, *args)

    def test_others_read_only_image_is_no_template(self):
        self.user2.manager('CloneImage', 'base', 'theirs', False)
        self.user2.manager('MarkImageReadOnly', 'theirs', True)
        self.assertRefused(self.user, 'CloneImage', 'theirs', 'copy', False)

    def test_roots_writable_image_and_templates_refused(self):
        make_image(self.store, 'rootwork')
        self.assertRefused(self.user, 'CloneImage', 'rootwork', 'copy', False)
        self.assertRefused(self.user, 'RemoveImage', 'base')
        self.assertRefused(self.user, 'RenameImage', 'base', 'moved')
        self.assertRefused(self.user, 'MarkImageReadOnly', 'base', False)

    def test_without_own_rules_the_default_asks_the_admin(self):
        self.set_rules('')
        self.assertRefused(self.user, 'CloneImage', 'base', 'mine', False)


class LimitsTest(SelfServiceTestCase):

    limits = 'ImagesPerUser=2\n'

    def test_images_per_user(self):
        self.user.manager('CloneImage', 'base', 'one', False)
        self.user.manager('CloneImage', 'base', 'two', False)
        before = store_state(self.store)
        e = self.assertDBusError(QUOTA_EXCEEDED, self.user.manager, 'CloneImage', 'base', 'three', False)
        self.assertIn('ImagesPerUser=2', e.message)
        self.assertIn('has 2 images', e.message)
        self.assertUnchanged(self.store, before)
        # Another user has limits of their own; root has none.
        self.user2.manager('CloneImage', 'base', 'theirs', False)
        for name in ('r1', 'r2', 'r3'):
            self.root.manager('CloneImage', 'base', name, False)
        # A removal makes room again.
        self.user.manager('RemoveImage', 'one')
        self.user.manager('CloneImage', 'base', 'three', False)

    def test_status_shows_own_usage(self):
        self.user.manager('CloneImage', 'base', 'one', False)
        self.assertEqual(self.root.manager('GetUserUsage', self.uid)[:2], (1, 2))
        out = run(stamptest.ENV.as_user(USER, [STAMPCTL, 'status'])).stdout
        self.assertIn('Yours: 1 of 2 images of %s' % USER, out)
        self.assertRegex(out, r'\n +\S+ used, no limit\n')
        self.assertEqual(self.root.manager('GetUserUsage', self.uid)[:2], (1, 2))
        self.assertEqual(self.root.manager('GetUserUsage', 0)[1], 0xFFFFFFFF, 'root has no limits')
        out = run([STAMPCTL, 'status']).stdout
        self.assertIn('images of root, no limit', out)

    def test_stampctl_says_which_limit(self):
        self.user.manager('CloneImage', 'base', 'one', False)
        self.user.manager('CloneImage', 'base', 'two', False)
        p = run(stamptest.ENV.as_user(USER, [STAMPCTL, 'clone', 'base', 'three']), check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('ImagesPerUser=2', p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


class BytesLimitTest(SelfServiceTestCase):

    limits = 'BytesPerUser=1M\n'

    def test_bytes_per_user(self):
        self.user.manager('CloneImage', 'base', 'one', False)
        with open(self.path('one/srv/big'), 'wb') as f:  # what the user's machine wrote
            f.write(os.urandom(3 << 20))
        run(['btrfs', 'filesystem', 'sync', self.store])
        stamptest.wait_for(lambda: self.root.manager('GetUserUsage', self.uid)[2] >= 3 << 20,
                           'the quota groups to count the 3 MiB written')
        before = store_state(self.store)
        e = self.assertDBusError(QUOTA_EXCEEDED, self.user.manager, 'CloneImage', 'base', 'two', False)
        self.assertIn('BytesPerUser=1048576', e.message)
        self.assertUnchanged(self.store, before)
        self.user2.manager('CloneImage', 'base', 'theirs', False)


class JobOwnerTest(SelfServiceTestCase):
    """Images that jobs make (an import here; pulls and templates alike) are
    their caller's, recorded by stamp-transfer before the image is renamed
    into sight, and count against the same limits."""

    limits = 'ImagesPerUser=2\n'

    def setUp(self):
        super().setUp()
        os.chmod(self.dir, 0o755)
        self.tar = os.path.join(self.dir, 'base.tar')
        run(['tar', '--numeric-owner', '-C', self.path('base'), '-cf', self.tar, '.'])
        os.chmod(self.tar, 0o644)
        self.set_rules(''.join(rule_for(USER, a, 'YES') for a in OWN_ACTIONS + ('import',)))

    def user_import(self, name):
        return run(stamptest.ENV.as_user(USER, [STAMPCTL, '--quiet', 'import-tar', self.tar, name]), check=False)

    def test_import_is_the_callers(self):
        p = self.user_import('imported')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.owner('imported'), self.uid)
        self.assertIn('imported', os.listdir(self.path('.stamp/owners')))
        self.user.manager('RemoveImage', 'imported')  # and so the user's to remove
        run([STAMPCTL, '--quiet', 'import-tar', self.tar, 'roots'])
        self.assertEqual(self.owner('roots'), 0)

    def test_import_counts_against_the_limit(self):
        self.user.manager('CloneImage', 'base', 'one', False)
        self.assertEqual(self.user_import('two').returncode, 0)
        before = store_state(self.store)
        p = self.user_import('three')
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('ImagesPerUser=2', p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertUnchanged(self.store, before)
        self.assertEqual(self.root.manager('GetUserUsage', self.uid)[0], 2)


class CapsFromConfigTest(SelfServiceTestCase):
    """The daemon's caps come from stampd.conf too."""

    limits = 'Jobs=1\n'

    def import_from_pipe(self, name):
        r, w = os.pipe()  # nobody writes: the import waits
        self.addCleanup(os.close, w)
        try:
            return self.root.call(stamptest.MANAGER_PATH, stamptest.MANAGER_IFACE, 'ImportTar', 0, name, False,
                                  fd_list=stamptest.fd_list(r))
        finally:
            os.close(r)

    def test_jobs_cap(self):
        job_id, path = self.import_from_pipe('first')
        self.addCleanup(lambda: self.root.manager('CancelJob', job_id) if job_id in
                        [j[0] for j in self.root.manager('ListJobs')] else None)
        e = self.assertDBusError(stamptest.LIMITS_EXCEEDED, self.import_from_pipe, 'second')
        self.assertIn('at most 1 in all', e.message)


class BadConfigTest(stamptest.TestCase):

    def test_missing_config_file_named_on_the_command_line(self):
        store = self.make_store()
        p = run([stamptest.STAMPD, '--store', store, '--config', os.path.join(self.dir, 'nope.conf')],
                check=False, timeout=stamptest.TIMEOUT)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('nope.conf', p.stderr)

    def test_bad_values_keep_defaults(self):
        config = os.path.join(self.dir, 'stampd.conf')
        write_file(config, '[Limits]\nImagesPerUser=lots\nBytesPerUser=12Q\nFrobs=3\n[Other]\n')
        daemon = self.start_daemon(args=['--config', config])
        make_image(daemon.store, 'base', read_only=True)
        self.allow(USER, 'manage-own-images')
        self.user.manager('CloneImage', 'base', 'mine', False)
        with open(daemon.log_path) as f:
            log = f.read()
        for word in ('ImagesPerUser=lots', 'BytesPerUser=12Q', 'Frobs', '[Other]'):
            self.assertIn(word, log)


class StoreTest(SelfServiceTestCase):

    def test_store_is_private_and_pool_nosuid_nodev(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.store).st_mode), 0o700)
        with open('/proc/self/mountinfo') as f:
            mounts = [line.split() for line in f]
        options = [m[5] for m in mounts if m[4] == self.store]
        self.assertTrue(options, 'the pool is mounted on the store')
        self.assertIn('nosuid', options[-1].split(','))
        self.assertIn('nodev', options[-1].split(','))

    def test_pool_uses_simple_quotas(self):
        if not os.path.exists('/sys/fs/btrfs/features/simple_quota'):
            self.skipTest('the kernel has no btrfs simple quotas')
        uuid = run(['findmnt', '-n', '-o', 'UUID', '--mountpoint', self.store]).stdout.strip()
        self.assertTrue(uuid)
        self.assertTrue(os.path.exists('/sys/fs/btrfs/%s/features/simple_quota' % uuid),
                        'the pool stampd made counts bytes with simple quotas')

    def test_store_others_could_enter_is_made_private(self):
        self.stop_daemon(self.daemon)
        os.chmod(self.store, 0o755)
        self.daemon = self.start_daemon(store=self.store, args=['--config', self.config])
        self.assertEqual(stat.S_IMODE(os.stat(self.store).st_mode), 0o700)


class PolicyTest(stamptest.TestCase):
    """The defaults cannot be exercised here (no logind session): read them."""

    def test_own_action_defaults(self):
        tree = ET.parse(os.path.join(SRCDIR, 'polkit', 'io.stamp.Stamp1.policy'))
        actions = {a.get('id'): a for a in tree.getroot().iter('action')}
        for name in OWN_ACTIONS:
            a = actions['io.stamp.Stamp1.' + name]
            d = a.find('defaults')
            self.assertEqual((d.findtext('allow_any'), d.findtext('allow_inactive'), d.findtext('allow_active')),
                             ('auth_admin', 'auth_admin_keep', 'yes'), name)
            self.assertTrue(a.findtext('message'))
        for name in ('manage-images', 'start-machine', 'manage-machines', 'create-template'):
            d = actions['io.stamp.Stamp1.' + name].find('defaults')
            self.assertNotEqual(d.findtext('allow_active'), 'yes', name + ' still needs the admin')


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
