#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""DiffImage, ExportImage and ImportImage (issue 12): what a clone changed
against its template from btrfs's own knowledge; btrfs send streams, full
and delta, that round-trip trees exactly, also onto a second store that has
the template only through a full import; refusals of missing parents,
corrupt, truncated and hostile streams, with nothing left behind; and who may
do what."""

import hashlib
import os
import stat
import struct
import subprocess

from gi.repository import GLib

import stamptest
from stamptest import (STAMPCTL, ACCESS_DENIED, INTERACTIVE_REQUIRED, MANAGER_IFACE, MANAGER_PATH, STAMP_ERROR, USER, USER2,
                       JobWatch, fd_list, make_image, populate_image, rule_for, run, store_state,
                       subvolume_read_only)

NO_SUCH_IMAGE = STAMP_ERROR + 'NoSuchImage'
BAD_ARCHIVE = STAMP_ERROR + 'BadArchive'
UNSUPPORTED_FORMAT = STAMP_ERROR + 'UnsupportedFormat'
INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
NOT_SUPPORTED = STAMP_ERROR + 'NotSupported'
INVALID_NAME = STAMP_ERROR + 'InvalidName'


def sh(cwd, script):
    run(['sh', '-ec', script], cwd=cwd)


def fill_base(root):
    """A template's tree with every kind of thing a tree can hold."""
    populate_image(root, 'base')
    sh(root, '''
        mkdir -p etc/app var/lib/old d1/sub data
        echo a > etc/app/conf; echo keep > keep; echo gone > gone; echo moved > moved
        seq 1 50000 > data/big; echo f > d1/sub/f; echo t > typechange
        echo h > hard1; ln hard1 hard2; mkfifo fifo; mknod null c 1 3
        ln -s keep link; echo q > var/lib/old/q; echo m > modeonly; echo o > owneronly
        echo x > xattrs; setfattr -n user.one -v 1 xattrs
        echo acl > acl; setfacl -m u:1234:rw acl
        chown 1000:1000 owneronly
    ''')


def change_clone(root):
    """Known changes; the diff each makes is in EXPECTED_DIFF."""
    sh(root, '''
        echo b > etc/app/conf; rm gone; mv moved moved2; echo new > etc/app/new
        mkdir newdir; echo n > newdir/inner
        printf x | dd of=data/big bs=1 seek=5000 conv=notrunc status=none
        mv d1 d2; rm typechange; ln -s keep typechange; rm fifo; rm -r var/lib/old
        chmod 600 modeonly; chown 1:2 owneronly; setfattr -n user.two -v 2 xattrs
        setfacl -m u:4321:r acl; rm hard2; ln keep hard3; mknod newnull c 1 3
        touch -d 2001-01-01 link
    ''')


EXPECTED_DIFF = [
    ('M', 'acl'), ('D', 'd1'), ('D', 'd1/sub'), ('D', 'd1/sub/f'), ('A', 'd2'), ('A', 'd2/sub'),
    ('A', 'd2/sub/f'), ('M', 'data/big'), ('M', 'etc/app/conf'), ('A', 'etc/app/new'), ('D', 'fifo'),
    ('D', 'gone'), ('D', 'hard2'), ('A', 'hard3'), ('M', 'modeonly'), ('D', 'moved'), ('A', 'moved2'),
    ('A', 'newdir'), ('A', 'newdir/inner'), ('A', 'newnull'), ('M', 'owneronly'), ('T', 'typechange'),
    ('D', 'var/lib/old'), ('D', 'var/lib/old/q'), ('M', 'xattrs'),
]


def tree(top):
    """Everything a round trip must keep: per path its type, mode, owner, size,
    content digest, link target, device number, mtime, extended attributes
    (ACLs among them); and which paths are hard links of each other."""
    entries, inodes = {}, {}
    for root, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            p = os.path.join(root, name)
            rel = os.path.relpath(p, top)
            s = os.lstat(p)
            digest = None
            if stat.S_ISREG(s.st_mode):
                with open(p, 'rb') as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            xattrs = {}
            if not stat.S_ISLNK(s.st_mode):
                for k in os.listxattr(p, follow_symlinks=False):
                    xattrs[k] = os.getxattr(p, k, follow_symlinks=False)
            entries[rel] = (s.st_mode, s.st_uid, s.st_gid, s.st_size if digest else None, digest,
                            os.readlink(p) if stat.S_ISLNK(s.st_mode) else None,
                            s.st_rdev if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode) else None,
                            s.st_mtime_ns, tuple(sorted(xattrs.items())))
            if not stat.S_ISDIR(s.st_mode) and s.st_nlink > 1:
                inodes.setdefault(s.st_ino, []).append(rel)
    links = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return entries, links


class DeltaTestCase(stamptest.TestCase):
    """A daemon on its own pool with a template `base` (read-only, root's)
    and its clone `web`, changed in known ways."""

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)
        base = make_image(self.store, 'base', populate=False)
        fill_base(base)
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'true'])
        # keep_identity: a fresh machine-id and hostname would be changes of their own.
        self.clone(self.root, 'base', 'web')
        change_clone(self.path('web'))

    def path(self, name):
        return os.path.join(self.store, name)

    def clone(self, caller, source, name):
        caller.manager('CloneImageEx', source, name, {'keep_identity': GLib.Variant('b', True)})

    def assertDenied(self, func, *args):
        try:
            func(*args)
        except stamptest.DBusError as e:
            self.assertIn(e.name, (ACCESS_DENIED, INTERACTIVE_REQUIRED))
            return e
        self.fail('not refused')

    def export(self, name, path, caller=None, **options):
        opts = {k: GLib.Variant('s', v) for k, v in options.items()}
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            job = (caller or self.root).call(MANAGER_PATH, MANAGER_IFACE, 'ExportImage', name, 0, opts,
                                             fd_list=fd_list(fd))
        finally:
            os.close(fd)
        return self.jobs.wait(job)

    def import_(self, path, name, read_only=None):
        opts = {} if read_only is None else {'read_only': GLib.Variant('b', read_only)}
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ImportImage', 0, name, opts, fd_list=fd_list(fd))
        finally:
            os.close(fd)
        return job, self.jobs.wait(job)

    def assertDone(self, outcome):
        self.assertEqual(outcome[0], 'done', 'the job failed: %s' % outcome[1])

    def assertImportFails(self, path, name, error, *phrases):
        before = store_state(self.store)
        job, (result, log) = self.import_(path, name)
        self.assertEqual(result, 'failed', log)
        self.assertEqual(self.jobs.error_name(job), error, log)
        for p in phrases:
            self.assertIn(p, log)
        self.assertUnchanged(self.store, before)
        self.assertEqual(self.hidden(), [])
        return log

    def file(self, name):
        return os.path.join(self.dir, name)

    def diff(self, caller, name, base=''):
        return [tuple(x) for x in caller.manager('DiffImage', name, base)]

    def hidden(self):
        return sorted(n for n in os.listdir(self.store) if n.startswith('.#'))


class DiffTest(DeltaTestCase):

    def test_diff_against_origin(self):
        self.assertEqual(self.diff(self.root, 'web'), EXPECTED_DIFF)
        # The writable image was compared through a snapshot, which is gone again.
        self.assertEqual(self.hidden(), [])

    def test_diff_named_base_and_reverse(self):
        self.assertEqual(self.diff(self.root, 'web', 'base'), EXPECTED_DIFF)
        rev = self.diff(self.root, 'base', 'web')
        swap = {'A': 'D', 'D': 'A', 'M': 'M', 'T': 'T'}
        self.assertEqual(rev, sorted(((swap[c], p) for c, p in EXPECTED_DIFF), key=lambda x: x[1]))

    def test_unchanged_clone_has_no_diff(self):
        self.clone(self.root, 'base', 'same')
        self.assertEqual(self.diff(self.root, 'same'), [])

    def test_refusals(self):
        before = store_state(self.store)
        e = self.assertDBusError(NO_SUCH_IMAGE, self.root.manager, 'DiffImage', 'nope', '')
        self.assertIn('nope', str(e))
        e = self.assertDBusError(NO_SUCH_IMAGE, self.root.manager, 'DiffImage', 'web', 'nobase')
        self.assertIn('nobase', str(e))
        # base has no origin: the caller must name one.
        e = self.assertDBusError(NO_SUCH_IMAGE, self.root.manager, 'DiffImage', 'base', '')
        self.assertIn('no origin', str(e))
        for bad in ('../x', 'a/b', '.x'):
            self.assertDBusError(INVALID_NAME, self.root.manager, 'DiffImage', bad, '')
            self.assertDBusError(INVALID_NAME, self.root.manager, 'DiffImage', 'web', bad)
        self.assertUnchanged(self.store, before)
        os.mkdir(self.path('plain'))
        before = store_state(self.store)
        e = self.assertDBusError(NOT_SUPPORTED, self.root.manager, 'DiffImage', 'plain', 'base')
        self.assertIn('plain', str(e))
        self.assertUnchanged(self.store, before)

    def test_owner_reads_own_diff_without_asking(self):
        # USER clones the template through manage-own-images; then no rule at all.
        self.allow(USER, 'manage-own-images')
        self.clone(self.user, 'base', 'mine')
        self.set_rules('')
        sh(self.path('mine'), 'echo changed > etc/hostname; rm srv/marker')
        self.assertEqual(self.diff(self.user, 'mine'), [('M', 'etc/hostname'), ('D', 'srv/marker')])
        # Another user may not, without manage-images; with it, may.
        e = self.assertDenied(self.user2.manager, 'DiffImage', 'mine', '')
        self.assertIn('manage-images', str(e))
        self.assertDenied(self.user.manager, 'DiffImage', 'web', '')
        self.allow(USER2, 'manage-images')
        self.assertEqual(self.diff(self.user2, 'mine'), [('M', 'etc/hostname'), ('D', 'srv/marker')])

    def test_owner_needs_manage_images_for_a_base_not_theirs(self):
        self.allow(USER, 'manage-own-images')
        self.clone(self.user, 'base', 'mine')
        self.set_rules('')
        # web is root's writable clone: not shared, so its paths are not the user's to read.
        self.assertDenied(self.user.manager, 'DiffImage', 'mine', 'web')
        self.assertEqual(self.diff(self.root, 'mine', 'web'), self.diff(self.root, 'mine', 'web'))

    def test_stampctl_diff(self):
        out = run([STAMPCTL, 'diff', 'web']).stdout
        self.assertEqual(out, ''.join('%s\t%s\n' % x for x in EXPECTED_DIFF))
        # A name git would quote is quoted, so that a line stays one change.
        sh(self.path('web'), 'echo q > "$(printf \'tab\\there\')"')
        out = run([STAMPCTL, 'diff', 'web', 'base']).stdout
        self.assertIn('A\t"tab\\there"\n', out)
        p = run([STAMPCTL, 'diff', 'nope'], check=False)
        self.assertEqual(p.returncode, 4)
        self.assertIn('nope', p.stderr)


class RoundTripTest(DeltaTestCase):

    def test_full_btrfs_round_trip(self):
        self.assertDone(self.export('base', self.file('base.btrfs'), format='btrfs'))
        _, outcome = self.import_(self.file('base.btrfs'), 'copy')
        self.assertDone(outcome)
        self.assertEqual(tree(self.path('copy')), tree(self.path('base')))
        # A template stays one: read-only, as it was sent.
        self.assertTrue(subvolume_read_only(self.path('copy')))
        self.assertEqual(self.hidden(), [])

    def test_delta_round_trip(self):
        self.assertDone(self.export('web', self.file('web.delta'), format='btrfs', parent='base'))
        self.assertLess(os.path.getsize(self.file('web.delta')), os.path.getsize(self.path('base/data/big')))
        _, outcome = self.import_(self.file('web.delta'), 'web2')
        self.assertDone(outcome)
        self.assertEqual(tree(self.path('web2')), tree(self.path('web')))
        self.assertFalse(subvolume_read_only(self.path('web2')))
        self.assertEqual(self.hidden(), [])


if __name__ == '__main__':
    stamptest.main()
