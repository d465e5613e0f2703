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

from gi.repository import Gio, GLib

import stamptest
from reliabilitytest import user_call_with_fd
from stamptest import (CANCEL_TIMEOUT, STAMPCTL, ACCESS_DENIED, INTERACTIVE_REQUIRED, MANAGER_IFACE, MANAGER_PATH, STAMP_ERROR, USER, USER2,
                       JobWatch, fd_list, make_image, populate_image, run, store_state,
                       subvolume_read_only, subvolume_show)

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


# ---- btrfs send streams made here, as the kernel writes them (version 1)

def crc32c(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc


def cmd(c, *attrs):
    body = b''.join(struct.pack('<HH', t, len(v)) + v for t, v in attrs)
    return struct.pack('<IHI', len(body), c, crc32c(struct.pack('<IHI', len(body), c, 0) + body)) + body


def u64(v):
    return struct.pack('<Q', v)


A_UUID, A_CTRANSID, A_INO, A_SIZE, A_MODE, A_RDEV = 1, 2, 3, 4, 5, 8
A_PATH, A_PATH_TO, A_PATH_LINK, A_OFFSET, A_DATA = 15, 16, 17, 18, 19
A_CLONE_UUID, A_CLONE_CTRANSID, A_CLONE_PATH, A_CLONE_OFFSET, A_CLONE_LEN = 20, 21, 22, 23, 24
C_SUBVOL, C_MKFILE, C_MKDIR, C_MKNOD, C_SYMLINK, C_RENAME, C_LINK = 1, 3, 4, 5, 8, 9, 10
C_WRITE, C_CLONE, C_END = 15, 16, 21


def crafted(*cmds, name='evil'):
    """A stamp btrfs stream of a full image made of the given commands."""
    head = ('stamp-btrfs-stream 1\nname=%s\nread-only=no\n\n' % name).encode()
    subvol = cmd(C_SUBVOL, (A_PATH, name.encode()), (A_UUID, bytes(range(16))), (A_CTRANSID, u64(5)))
    return head + b'btrfs-stream\0' + struct.pack('<I', 1) + subvol + b''.join(cmds) + cmd(C_END)


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
        # A recipe as CreateTemplate writes it: base is a template.
        uuid = subvolume_show(base)['UUID'].replace('-', '')
        os.setxattr(base, 'user.stamp.recipe', ("{'suite': <'bookworm'>, 'uuid': <'%s'>}" % uuid).encode())
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

    def images_state(self):
        """store_state() but for the store directory's own times, which a removed temporary touches."""
        state = store_state(self.store)
        del state['.']
        return state

    def assertImportFails(self, path, name, error, *phrases):
        before = self.images_state()
        job, (result, log) = self.import_(path, name)
        self.assertEqual(result, 'failed', log)
        self.assertEqual(self.jobs.error_name(job), error, log)
        for p in phrases:
            self.assertIn(p, log)
        self.assertEqual(self.images_state(), before)
        self.assertEqual(self.hidden(), [])
        return log

    def file(self, name):
        return os.path.join(self.dir, name)

    def diff(self, caller, name, base=''):
        return [tuple(x) for x in caller.manager('DiffImage', name, base)]

    def hidden(self):
        return sorted(n for n in os.listdir(self.store) if n.startswith('.#'))


    def move_to_second_store(self):
        """The daemon stopped, and another started on an empty store of its own (its job ids start
        again from 1): the receiving side of an export made here."""
        self.stop_daemon(self.daemon)
        store2 = os.path.join(self.dir, 'store2')
        os.makedirs(store2)
        self.daemon = self.start_daemon(store=store2)
        self.store = store2
        self.jobs.close()
        self.jobs = JobWatch(self.env.conn)


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

    def test_delta_of_a_clone_whose_files_were_read(self):
        """A read leaves only a new access time: the delta's update for it is
        not applied (an access time is not part of an image, as in a tar
        export), while a new modification time, alone or with new content, is."""
        web = self.path('web')
        keep = os.lstat(os.path.join(web, 'hard1'))
        os.utime(os.path.join(web, 'hard1'), ns=(keep.st_atime_ns + 10**12, keep.st_mtime_ns))
        os.utime(os.path.join(web, 'modeonly'), ns=(10**18, 10**18))
        self.assertDone(self.export('web', self.file('web.delta'), format='btrfs', parent='base'))
        _, outcome = self.import_(self.file('web.delta'), 'web2')
        self.assertDone(outcome)
        self.assertEqual(tree(self.path('web2')), tree(web))
        self.assertEqual(os.lstat(self.path('web2/modeonly')).st_mtime_ns, 10**18)
        self.assertEqual(os.lstat(self.path('web2/hard1')).st_atime_ns, keep.st_atime_ns)
        self.assertEqual(self.hidden(), [])

    def test_delta_on_a_store_that_has_the_template_only_by_import(self):
        self.assertDone(self.export('base', self.file('base.btrfs'), format='btrfs'))
        self.assertDone(self.export('web', self.file('web.delta'), format='btrfs', parent='base',
                                    compression='xz'))
        want_base, want_web = tree(self.path('base')), tree(self.path('web'))
        self.move_to_second_store()
        # Before the template is there: refused, naming the parent and how to get it.
        self.assertImportFails(self.file('web.delta'), 'web', NO_SUCH_IMAGE, 'base',
                               'import a full btrfs export of base first')
        _, outcome = self.import_(self.file('base.btrfs'), 'base')
        self.assertDone(outcome)
        # A template there too, read-only, with its recipe.
        props = self.root.image_props('base')
        self.assertTrue(props['Template'])
        self.assertTrue(props['ReadOnly'])
        self.assertEqual(props['Recipe']['suite'], 'bookworm')
        # A parent made writable may have changed since: refused until it is read-only again.
        self.root.manager('MarkImageReadOnly', 'base', False)
        self.assertImportFails(self.file('web.delta'), 'web', STAMP_ERROR + 'ImageBusy', 'writable')
        self.root.manager('MarkImageReadOnly', 'base', True)
        _, outcome = self.import_(self.file('web.delta'), 'web')
        self.assertDone(outcome)
        self.assertEqual(tree(self.path('base')), want_base)
        self.assertEqual(tree(self.path('web')), want_web)
        # The image there knows its origin, and its diff is the same.
        self.assertEqual(self.root.image_props('web')['Origin'], 'base')
        self.assertEqual(self.diff(self.root, 'web'), EXPECTED_DIFF)

    def test_delta_against_another_image_of_the_same_name(self):
        self.assertDone(self.export('web', self.file('web.delta'), format='btrfs', parent='base'))
        # A base here that is not the one the delta was made against.
        self.root.manager('RemoveImage', 'web')
        run(['btrfs', 'property', 'set', '-ts', self.path('base'), 'ro', 'false'])
        run(['btrfs', 'subvolume', 'delete', self.path('base')])
        make_image(self.store, 'base', read_only=True)
        self.assertImportFails(self.file('web.delta'), 'web', NO_SUCH_IMAGE, 'base',
                               'not the image the delta was made against')

    def test_tar_through_export_image(self):
        self.assertDone(self.export('web', self.file('web.tar.zst')))
        with open(self.file('web.tar.zst'), 'rb') as f:
            self.assertEqual(f.read(4), b'\x28\xb5\x2f\xfd')  # zstd, the default compression
        _, outcome = self.import_(self.file('web.tar.zst'), 'web-tar')
        self.assertDone(outcome)
        want, got = tree(self.path('web')), tree(self.path('web-tar'))
        self.assertEqual(sorted(got[0]), sorted(want[0]))
        self.assertEqual(got[1], want[1])

    def test_import_from_a_pipe(self):
        self.assertDone(self.export('web', self.file('web.delta'), format='btrfs', parent='base'))
        self.assertDone(self.export('web', self.file('web.tar'), compression='uncompressed'))
        for src, name in ((self.file('web.delta'), 'from-pipe'), (self.file('web.tar'), 'tar-from-pipe')):
            r, w = os.pipe2(os.O_CLOEXEC)
            feeder = subprocess.Popen(['cat', src], stdout=w)
            os.close(w)
            try:
                job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ImportImage', 0, name, {}, fd_list=fd_list(r))
            finally:
                os.close(r)
            self.assertDone(self.jobs.wait(job))
            feeder.wait()
            self.assertEqual(sorted(tree(self.path(name))[0]), sorted(tree(self.path('web'))[0]))

    def test_stampctl_export_import(self):
        run([STAMPCTL, 'export', 'base', self.file('base.btrfs.zst'), '--format', 'btrfs'])
        run([STAMPCTL, 'export', 'web', self.file('web.delta.zst'), '--delta'])
        run([STAMPCTL, 'export', 'web', self.file('web-p.zst'), '--parent', 'base', '--compression', 'gzip'])
        with open(self.file('web-p.zst'), 'rb') as f:
            self.assertEqual(f.read(2), b'\x1f\x8b')
        run([STAMPCTL, 'import', self.file('web.delta.zst'), 'web3'])
        self.assertEqual(tree(self.path('web3')), tree(self.path('web')))
        p = run([STAMPCTL, 'export', 'web', self.file('x'), '--delta', '--format', 'tar'], check=False)
        self.assertEqual(p.returncode, 2)
        p = run([STAMPCTL, 'export', 'base', self.file('x'), '--delta'], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('origin', p.stderr)


class RefusalTest(DeltaTestCase):

    def test_corrupt_and_truncated_streams(self):
        self.assertDone(self.export('base', self.file('plain.btrfs'), format='btrfs', compression='uncompressed'))
        self.assertDone(self.export('base', self.file('z.btrfs'), format='btrfs'))
        with open(self.file('plain.btrfs'), 'rb') as f:
            plain = f.read()
        with open(self.file('z.btrfs'), 'rb') as f:
            zst = f.read()
        cases = {
            'flipped': plain[:len(plain) // 2] + bytes([plain[len(plain) // 2] ^ 0x40]) + plain[len(plain) // 2 + 1:],
            'half': plain[:len(plain) // 2],
            'no-end': plain[:-10],
            'header-only': plain[:plain.index(b'btrfs-stream\0')],
            'cut-header': plain[:30],
            'compressed-half': zst[:len(zst) // 2],
            'trailing': plain + b'more',
            'not-a-tar-nor-stream': b'hello world\n' * 100,
        }
        for what, data in cases.items():
            with self.subTest(what):
                with open(self.file(what), 'wb') as f:
                    f.write(data)
                self.assertImportFails(self.file(what), 'broken', BAD_ARCHIVE)

    def test_hostile_streams(self):
        PHRASES = {
            'rename out': 'rename command with a bad path',
            'absolute path': 'mkfile command with a bad path',
            'hard link to the host': 'link command with a bad link target',
            'symlink climbing out': 'symlink d/esc',
            'write through a symlink': 'mkfile of lnk/x failed',
            'write into a device': 'null is not a regular file',
            'clone from elsewhere': 'from a subvolume other than itself and its parent',
            'two subvolumes': 'more than one subvolume',
        }
        outside = os.path.join(self.dir, 'outside')
        os.makedirs(outside)
        cases = {
            'rename out': crafted(cmd(C_MKFILE, (A_PATH, b'a')), cmd(C_RENAME, (A_PATH, b'a'), (A_PATH_TO, b'../a'))),
            'absolute path': crafted(cmd(C_MKFILE, (A_PATH, outside.encode() + b'/x'))),
            'hard link to the host': crafted(cmd(C_LINK, (A_PATH, b'x'), (A_PATH_LINK, b'/etc/passwd'))),
            'symlink climbing out': crafted(cmd(C_MKDIR, (A_PATH, b'd')),
                                            cmd(C_SYMLINK, (A_PATH, b'd/esc'), (A_PATH_LINK, b'../../../etc'))),
            'write through a symlink': crafted(cmd(C_SYMLINK, (A_PATH, b'lnk'), (A_PATH_LINK, outside.encode())),
                                               cmd(C_MKFILE, (A_PATH, b'lnk/x')),
                                               cmd(C_WRITE, (A_PATH, b'lnk/x'), (A_OFFSET, u64(0)), (A_DATA, b'x'))),
            'write into a device': crafted(cmd(C_MKNOD, (A_PATH, b'null'), (A_MODE, u64(0o20666)),
                                               (A_RDEV, u64(0x103))),
                                           cmd(C_WRITE, (A_PATH, b'null'), (A_OFFSET, u64(0)), (A_DATA, b'x'))),
            'clone from elsewhere': crafted(cmd(C_MKFILE, (A_PATH, b'a')),
                                            cmd(C_CLONE, (A_PATH, b'a'), (A_OFFSET, u64(0)), (A_CLONE_LEN, u64(4096)),
                                                (A_CLONE_UUID, bytes(16)), (A_CLONE_CTRANSID, u64(1)),
                                                (A_CLONE_PATH, b'etc/shadow'), (A_CLONE_OFFSET, u64(0)))),
            'two subvolumes': crafted(cmd(C_SUBVOL, (A_PATH, b'b'), (A_UUID, bytes(16)), (A_CTRANSID, u64(1)))),
        }
        for what, data in cases.items():
            with self.subTest(what):
                with open(self.file('evil'), 'wb') as f:
                    f.write(data)
                log = self.assertImportFails(self.file('evil'), 'evil', BAD_ARCHIVE, PHRASES[what])
                self.assertEqual(os.listdir(outside), [], log)
        # The same stream without its hostile command is taken: the refusals are about those alone.
        with open(self.file('fine'), 'wb') as f:
            f.write(crafted(cmd(C_MKFILE, (A_PATH, b'a')), cmd(C_WRITE, (A_PATH, b'a'), (A_OFFSET, u64(0)),
                                                                (A_DATA, b'hello'))))
        _, outcome = self.import_(self.file('fine'), 'fine')
        self.assertDone(outcome)
        with open(self.path('fine/a'), 'rb') as f:
            self.assertEqual(f.read(), b'hello')

    def test_delta_that_moves_a_link_out_of_reach(self):
        # In the template a relative link stays inside; the clone moves its directory up, so that
        # the same link climbs above the root. A delta of that is refused on import, like a tar.
        run(['btrfs', 'property', 'set', '-ts', self.path('base'), 'ro', 'false'])
        sh(self.path('base'), 'mkdir -p deep/er && ln -s ../../keep deep/er/up')
        run(['btrfs', 'property', 'set', '-ts', self.path('base'), 'ro', 'true'])
        self.clone(self.root, 'base', 'mover')
        sh(self.path('mover'), 'mv deep/er top')
        self.assertDone(self.export('mover', self.file('mover.delta'), format='btrfs', parent='base'))
        self.assertImportFails(self.file('mover.delta'), 'mover2', BAD_ARCHIVE, 'top/up')

    def test_bad_calls(self):
        before = store_state(self.store)
        fd = os.open(self.file('out'), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.addCleanup(os.close, fd)

        def call(name, **opts):
            o = {k: GLib.Variant('s', v) for k, v in opts.items()}
            return self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExportImage', name, 0, o, fd_list=fd_list(os.dup(fd)))

        self.assertDBusError(UNSUPPORTED_FORMAT, call, 'web', format='zip')
        self.assertDBusError(UNSUPPORTED_FORMAT, call, 'web', format='btrfs', compression='lz4')
        e = self.assertDBusError(INVALID_ARGS, call, 'web', format='tar', parent='base')
        self.assertIn('btrfs', str(e))
        e = self.assertDBusError(INVALID_ARGS, call, 'base', format='btrfs', parent='web')
        self.assertIn('read-only', str(e))
        self.assertDBusError(NO_SUCH_IMAGE, call, 'web', format='btrfs', parent='nope')
        self.assertDBusError(INVALID_NAME, call, 'web', format='btrfs', parent='../x')
        self.assertDBusError(INVALID_ARGS, call, 'web', colour='blue')
        # Wrong kinds of fd: a directory, one open for reading only (export), writing only (import).
        for path, flags, method, args, phrase in (
                (self.dir, os.O_RDONLY | os.O_DIRECTORY, 'ExportImage', ('web', 0, {}), 'a directory'),
                (self.file('out'), os.O_RDONLY, 'ExportImage', ('web', 0, {}), 'read-only'),
                (self.file('out'), os.O_WRONLY, 'ImportImage', (0, 'x', {}), 'write-only'),
                (self.dir, os.O_RDONLY | os.O_DIRECTORY, 'ImportImage', (0, 'x', {}), 'a directory')):
            bad = os.open(path, flags | os.O_CLOEXEC)
            try:
                e = self.assertDBusError(INVALID_ARGS, self.root.call, MANAGER_PATH, MANAGER_IFACE, method, *args,
                                         fd_list=fd_list(bad))
            finally:
                os.close(bad)
            self.assertIn(phrase, str(e))
        self.assertUnchanged(self.store, before)

    def test_authorization(self):
        outdir = os.path.join(self.dir, 'user')
        os.makedirs(outdir)
        os.chmod(outdir, 0o777)
        out = os.path.join(outdir, 'web.delta')
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        opts = {'format': GLib.Variant('s', 'btrfs'), 'parent': GLib.Variant('s', 'base')}
        before = store_state(self.store)
        self.assertDenied(user_call_with_fd, self, USER, out, flags, 'ExportImage', ('web', 0, opts))
        self.assertEqual(os.path.getsize(out), 0)
        self.allow(USER, 'export')
        job = user_call_with_fd(self, USER, out, flags, 'ExportImage', ('web', 0, opts))
        self.assertDone(self.jobs.wait(tuple(job)))
        self.assertGreater(os.path.getsize(out), 0)
        self.assertDenied(user_call_with_fd, self, USER, out, os.O_RDONLY, 'ImportImage', (0, 'mine', {}))
        del before['.']  # the export's snapshot came and went
        self.assertEqual(self.images_state(), before)
        self.allow(USER, 'import')
        job = user_call_with_fd(self, USER, out, os.O_RDONLY, 'ImportImage', (0, 'mine', {}))
        self.assertDone(self.jobs.wait(tuple(job)))
        self.assertEqual(tree(self.path('mine')), tree(self.path('web')))

    def test_reader_goes_away(self):
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExportImage', 'web', 0,
                                 {'format': GLib.Variant('s', 'btrfs'),
                                  'compression': GLib.Variant('s', 'uncompressed')}, fd_list=fd_list(w))
        finally:
            os.close(w)
        os.read(r, 1000)
        os.close(r)
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'failed')
        self.assertIn('the reader closed the stream', log)
        stamptest.wait_for(lambda: self.hidden() == [], 'the export snapshot to go')

    def test_cancel_export_and_import(self):
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExportImage', 'web', 0,
                                 {'format': GLib.Variant('s', 'btrfs')}, fd_list=fd_list(w))
        finally:
            os.close(w)
        # Nobody reads: the send waits on the pipe until the cancel.
        self.root.manager('CancelJob', job[0])
        self.assertEqual(self.jobs.wait(job, timeout=CANCEL_TIMEOUT)[0], 'canceled')
        os.close(r)
        stamptest.wait_for(lambda: self.hidden() == [], 'the export snapshot to go')

        r, w = os.pipe2(os.O_CLOEXEC)
        os.write(w, b'stamp-btrfs-stream 1\nname=x\nread-only=no\n\nbtrfs-stream\0\1\0\0\0')
        try:
            job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ImportImage', 0, 'half', {}, fd_list=fd_list(r))
        finally:
            os.close(r)
        self.root.manager('CancelJob', job[0])
        self.assertEqual(self.jobs.wait(job, timeout=CANCEL_TIMEOUT)[0], 'canceled')
        os.close(w)
        stamptest.wait_for(lambda: self.hidden() == [], 'the import temporary to go')
        self.assertNotIn('half', os.listdir(self.store))


class ChangedParentTest(DeltaTestCase):
    """A delta applies only to its parent as it was made against: a parent
    made writable, changed and marked read-only again is not that parent,
    here or on the sender (MarkImageReadOnly keeps the received uuid, so the
    state is what tells)."""

    def second_store_with_base(self):
        """store2 with base only through a full btrfs import; returns the delta
        of web made on the first store."""
        self.assertDone(self.export('base', self.file('base.btrfs'), format='btrfs'))
        self.assertDone(self.export('web', self.file('web.delta'), format='btrfs', parent='base'))
        self.move_to_second_store()
        _, outcome = self.import_(self.file('base.btrfs'), 'base')
        self.assertDone(outcome)
        return self.file('web.delta')

    def change(self, name):
        self.root.manager('MarkImageReadOnly', name, False)
        with open(os.path.join(self.path(name), 'etc/app/late'), 'w') as f:
            f.write('late')
        self.root.manager('MarkImageReadOnly', name, True)

    def test_received_parent_changed_here(self):
        delta = self.second_store_with_base()
        self.change('base')
        self.assertImportFails(delta, 'web', NO_SUCH_IMAGE, 'base', 'changed since it was received')
        # Nor can it be the parent of a delta sent on.
        self.clone(self.root, 'base', 'c')
        result, log = self.export('c', self.file('c.delta'), format='btrfs', parent='base')
        self.assertEqual(result, 'failed', log)
        self.assertIn('changed here since it was received', log)

    def test_received_parent_unchanged_takes_the_delta(self):
        delta = self.second_store_with_base()
        # Marking it writable and read-only again without a change is no change.
        self.root.manager('MarkImageReadOnly', 'base', False)
        self.root.manager('MarkImageReadOnly', 'base', True)
        _, outcome = self.import_(delta, 'web')
        self.assertDone(outcome)

    def test_sender_parent_changed_after_the_delta(self):
        self.assertDone(self.export('web', self.file('web.delta'), format='btrfs', parent='base'))
        self.change('base')
        self.assertImportFails(self.file('web.delta'), 'web2', NO_SUCH_IMAGE, 'base',
                               'not in the state the delta was made against')


class DeltaProgressTest(DeltaTestCase):

    def test_delta_export_reports_progress(self):
        """A delta's size is estimated from the file data the image has and
        its parent has not: Progress moves while the stream is read, never
        back, and ends at 1.0. The reader takes the stream in small pieces
        and looks at Progress after each: no timing involved."""
        with open(os.path.join(self.path('web'), 'srv-blob'), 'wb') as f:
            f.write(os.urandom(6 << 20))
        seen = []

        def on_changed(conn, sender, path, iface, member, params):
            _, changed, _ = params.unpack()
            if 'Progress' in changed:
                seen.append(changed['Progress'])
        sub = self.env.conn.signal_subscribe(stamptest.BUS_NAME, 'org.freedesktop.DBus.Properties',
                                             'PropertiesChanged', None, stamptest.JOB_IFACE,
                                             Gio.DBusSignalFlags.NONE, on_changed)
        self.addCleanup(self.env.conn.signal_unsubscribe, sub)
        r, w = os.pipe2(os.O_CLOEXEC)
        opts = {'format': GLib.Variant('s', 'btrfs'), 'parent': GLib.Variant('s', 'base'),
                'compression': GLib.Variant('s', 'uncompressed')}
        try:
            job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExportImage', 'web', 0, opts, fd_list=fd_list(w))
        finally:
            os.close(w)
        polled, total = [], 0
        while True:
            data = os.read(r, 256 << 10)
            if not data:
                break
            total += len(data)
            try:
                polled.append(self.root.get_property(job[1], stamptest.JOB_IFACE, 'Progress'))
            except stamptest.DBusError:
                pass  # ended meanwhile
        os.close(r)
        self.assertDone(self.jobs.wait(job))
        stamptest.spin_until(lambda: seen and seen[-1] == 1.0, 'the final Progress')
        self.assertGreater(total, 6 << 20)
        self.assertTrue(any(0 < p < 1 for p in polled), 'progress polled: %s' % polled)
        self.assertEqual(polled, sorted(polled))
        # The signals (rate-limited: some values are skipped) never go back either.
        self.assertEqual(seen, sorted(seen))


class PlainStoreTest(stamptest.TestCase):

    def test_btrfs_format_not_supported(self):
        daemon = self.start_daemon(kind='plain')
        store = daemon.store
        make_image(store, 'dir', kind='directory')
        jobs = JobWatch(self.env.conn)
        self.addCleanup(jobs.close)
        before = store_state(store)
        fd = os.open(os.path.join(self.dir, 'out'), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            e = self.assertDBusError(NOT_SUPPORTED, self.root.call, MANAGER_PATH, MANAGER_IFACE, 'ExportImage',
                                     'dir', 0, {'format': GLib.Variant('s', 'btrfs')}, fd_list=fd_list(fd))
        finally:
            os.close(fd)
        self.assertIn('tar', str(e))
        path = os.path.join(self.dir, 'in')
        with open(path, 'wb') as f:
            f.write(crafted(cmd(C_MKFILE, (A_PATH, b'a'))))
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ImportImage', 0, 'x', {}, fd_list=fd_list(fd))
        finally:
            os.close(fd)
        result, log = jobs.wait(job)
        self.assertEqual(result, 'failed')
        self.assertEqual(jobs.error_name(job), NOT_SUPPORTED, log)
        self.assertIn('not on btrfs', log)
        self.assertUnchanged(store, before)


if __name__ == '__main__':
    stamptest.main()
