#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A store that is not btrfs (--no-pool): images are directories, a clone is
a full copy that keeps owners, modes, xattrs, ACLs, hard links, devices,
fifos and symlinks; read-only is the immutable flag; a failed copy leaves
nothing behind."""

import os
import stat
import subprocess

import stamptest
from reliabilitytest import temporaries
from stamptest import (store_names, STAMP_ERROR, UINT64_MAX, has_immutable_flag, is_subvolume, make_image,
                       make_tmpfs_store, run, store_state)

OWNER = (1234, 5678)


def make_rich_image(store, name='base'):
    """A directory image with every kind of file and metadata a copy can lose."""
    root = make_image(store, name, kind='directory')
    srv = os.path.join(root, 'srv')

    def p(rel):
        return os.path.join(srv, rel)

    with open(p('owned'), 'w') as f:
        f.write('owned by someone else\n')
    os.chown(p('owned'), *OWNER)
    os.chmod(p('owned'), 0o640)
    os.utime(p('owned'), ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    os.mkdir(p('private'), 0o750)
    os.chown(p('private'), 42, 43)
    with open(p('suid'), 'w') as f:
        f.write('#!/bin/sh\n')
    os.chmod(p('suid'), 0o4755)
    with open(p('xattr'), 'w') as f:
        f.write('x\n')
    os.setxattr(p('xattr'), 'user.stamp', b'hello')
    os.setxattr(p('xattr'), 'trusted.stamp', b'root-only')
    with open(p('acl'), 'w') as f:
        f.write('acl\n')
    run(['setfacl', '-m', 'u:%d:rwx,g:%d:r' % OWNER, p('acl')])
    os.mkdir(p('acl-dir'))
    run(['setfacl', '-d', '-m', 'u:%d:rx' % OWNER[0], p('acl-dir')])
    with open(p('hard1'), 'w') as f:
        f.write('one inode, two names\n')
    os.link(p('hard1'), p('hard2'))
    os.mknod(p('null'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(p('blk'), 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    os.mkfifo(p('fifo'), 0o620)
    os.symlink('../etc/hostname', p('rel-link'))
    os.symlink('/etc/shadow', p('abs-link'))  # must be copied as a link, never followed
    os.symlink('/nonexistent', p('dangling'))
    return root


def metadata(top):
    """Everything a faithful copy keeps, per relative path, plus the hard-link
    groups (as sets of paths) so that inode numbers need not match."""
    entries, inodes = {}, {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            s = os.lstat(path)
            xattrs = {}
            if not stat.S_ISLNK(s.st_mode):
                xattrs = {k: os.getxattr(path, k, follow_symlinks=False)
                          for k in os.listxattr(path, follow_symlinks=False)}
            content = None
            if stat.S_ISREG(s.st_mode):
                with open(path, 'rb') as f:
                    content = f.read()
            entries[rel] = {
                'mode': s.st_mode, 'owner': (s.st_uid, s.st_gid),
                'rdev': s.st_rdev if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode) else None,
                'link': os.readlink(path) if stat.S_ISLNK(s.st_mode) else None,
                'content': content, 'xattrs': xattrs,
                'mtime': s.st_mtime_ns if stat.S_ISREG(s.st_mode) else None,
            }
            if s.st_nlink > 1 and not stat.S_ISDIR(s.st_mode):
                inodes.setdefault(s.st_ino, set()).add(rel)
    return entries, sorted(sorted(g) for g in inodes.values())


class FallbackTestCase(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon(kind='plain')
        self.store = self.daemon.store

    def path(self, name):
        return os.path.join(self.store, name)


class CopyTest(FallbackTestCase):

    def test_copy_keeps_everything(self):
        base = make_rich_image(self.store)
        self.root.manager('CloneImage', 'base', 'web', False)
        web = self.path('web')
        want, want_links = metadata(base)
        got, got_links = metadata(web)
        for rel in sorted(set(want) | set(got)):
            with self.subTest(path=rel):
                self.assertEqual(got.get(rel), want.get(rel))
        self.assertEqual(got_links, want_links, 'hard links were not kept')
        self.assertEqual(got_links, [['srv/hard1', 'srv/hard2']])
        self.assertEqual(os.lstat(os.path.join(web, 'srv/hard1')).st_nlink, 2)
        self.assertNotEqual(os.lstat(os.path.join(web, 'srv/hard1')).st_ino,
                            os.lstat(os.path.join(base, 'srv/hard1')).st_ino)
        self.assertEqual(os.stat(web).st_mode, os.stat(base).st_mode)
        self.assertFalse(is_subvolume(web))

    def test_copy_is_independent(self):
        make_rich_image(self.store)
        self.root.manager('CloneImage', 'base', 'web', False)
        with open(self.path('web/srv/hard1'), 'w') as f:
            f.write('changed\n')
        with open(self.path('base/srv/hard1')) as f:
            self.assertEqual(f.read(), 'one inode, two names\n')

    def test_holes_stay_holes(self):
        base = make_image(self.store, 'base', kind='directory')
        with open(os.path.join(base, 'srv', 'sparse'), 'wb') as f:
            f.seek(64 << 20)
            f.write(b'end')
            f.truncate(128 << 20)
        self.root.manager('CloneImage', 'base', 'web', False)
        st = os.stat(self.path('web/srv/sparse'))
        self.assertEqual(st.st_size, 128 << 20)
        self.assertLess(st.st_blocks * 512, 1 << 20, 'the holes were filled')
        with open(self.path('web/srv/sparse'), 'rb') as f:
            f.seek((64 << 20) - 1)
            self.assertEqual(f.read(5), b'\0end\0')

    def test_too_deep_tree_is_refused(self):
        base = make_image(self.store, 'base', kind='directory')
        os.makedirs(os.path.join(base, 'srv', *(['d'] * 300)))
        e = self.assertDBusError('org.freedesktop.DBus.Error.Failed', self.root.manager, 'CloneImage',
                                 'base', 'web', False)
        self.assertIn('directories deep', e.message)
        self.assertEqual(os.listdir(self.store), ['base'])  # the half-made copy went with the failure

    def test_properties_of_directory_images(self):
        make_image(self.store, 'base', kind='directory')
        self.root.manager('CloneImage', 'base', 'web', False)
        props = self.root.image_props('web')
        self.assertEqual(props['Type'], 'directory')
        self.assertFalse(props['ReadOnly'])
        self.assertEqual((props['Usage'], props['UsageExclusive']), (UINT64_MAX, UINT64_MAX))
        self.assertEqual(props['Origin'], '')
        self.assertEqual(props['OSRelease'].get('ID'), 'stamptest')
        self.assertEqual(self.root.list_images()['web'][:2], ('directory', False))

    def test_no_temporaries_left(self):
        make_image(self.store, 'base', kind='directory')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertEqual(store_names(self.store), ['base', 'web'])

    def test_concurrent_copies_to_one_name(self):
        base = make_rich_image(self.store)
        with open(os.path.join(base, 'srv', 'blob'), 'wb') as f:
            f.write(os.urandom(32 << 20))  # so the copies overlap
        pending = [self.root.call_async(stamptest.MANAGER_PATH, stamptest.MANAGER_IFACE,
                                        'CloneImage', 'base', 'web', False) for _ in range(3)]
        self.assertIn('base', self.root.list_images())  # served while copies run
        stamptest.spin_until(lambda: all(p.done for p in pending), 'the clones to finish')
        errors = [p.error for p in pending if p.error]
        self.assertEqual(len(errors), 2, [str(e) for e in errors])
        for e in errors:
            self.assertIn(e.name, (STAMP_ERROR + 'ImageExists', STAMP_ERROR + 'ImageBusy'))
        self.assertEqual(store_names(self.store), ['base', 'web'])
        self.assertEqual(metadata(self.path('web')), metadata(base))

    def test_clone_onto_existing(self):
        make_image(self.store, 'base', kind='directory')
        make_image(self.store, 'taken', kind='directory', populate=False)
        before = store_state(self.store)
        self.assertDBusError(STAMP_ERROR + 'ImageExists', self.root.manager, 'CloneImage', 'base',
                             'taken', False)
        self.assertUnchanged(self.store, before)
        self.assertEqual(os.listdir(self.path('taken')), [])


class ReadOnlyDirectoryTest(FallbackTestCase):

    def setUp(self):
        super().setUp()
        make_image(self.store, 'base', kind='directory')

    def test_read_only_clone_is_immutable(self):
        self.root.manager('CloneImage', 'base', 'frozen', True)
        self.assertTrue(has_immutable_flag(self.path('frozen')))
        self.assertTrue(self.root.image_props('frozen')['ReadOnly'])
        with self.assertRaises(OSError):
            open(self.path('frozen/new-file'), 'w').close()

    def test_mark_read_only_and_back(self):
        self.root.manager('MarkImageReadOnly', 'base', True)
        self.assertTrue(has_immutable_flag(self.path('base')))
        self.assertTrue(self.root.image_props('base')['ReadOnly'])
        self.root.manager('MarkImageReadOnly', 'base', False)
        self.assertFalse(has_immutable_flag(self.path('base')))
        self.assertFalse(self.root.image_props('base')['ReadOnly'])

    def test_read_only_image_can_be_cloned_writable(self):
        self.root.manager('MarkImageReadOnly', 'base', True)
        self.root.manager('CloneImage', 'base', 'work', False)
        self.assertFalse(has_immutable_flag(self.path('work')))
        open(self.path('work/new-file'), 'w').close()

    def test_remove_read_only(self):
        self.root.manager('MarkImageReadOnly', 'base', True)
        self.root.manager('RemoveImage', 'base')
        self.assertEqual(store_names(self.store), [])

    def test_rename_read_only(self):
        self.root.manager('MarkImageReadOnly', 'base', True)
        self.root.manager('RenameImage', 'base', 'renamed')
        self.assertEqual(store_names(self.store), ['renamed'])
        self.assertTrue(has_immutable_flag(self.path('renamed')))

    def test_remove_and_rename(self):
        self.root.image('base', 'Clone', 'web', False)
        self.root.image('web', 'Rename', 'site')
        self.assertEqual(store_names(self.store), ['base', 'site'])
        self.root.image('site', 'Remove')
        self.assertEqual(store_names(self.store), ['base'])


SWAPPER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
os.chdir(sys.argv[1])
pairs = [(b'd%02d' % i, b'l%02d' % i) for i in range(int(sys.argv[2]))]
open(sys.argv[3], 'w').close()
while True:
    for a, b in pairs:
        libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
"""


class SwapRaceTest(FallbackTestCase):
    """A copy walks an image while something in it (root in a machine running on it) swaps
    directories for symlinks to the host, as fast as it can. The copy follows nothing: each
    entry is copied as what it was when the walk reached it, and nothing of the host gets in."""

    PAIRS = 6
    FILES = 30
    CLONES = 8

    def test_copy_never_follows_a_swapped_in_symlink(self):
        host = os.path.join(self.dir, 'host-secret')
        os.mkdir(host)
        for f in range(self.FILES):
            with open(os.path.join(host, 'f%02d' % f), 'w') as fh:
                fh.write('HOST SECRET\n')
        base = make_image(self.store, 'base', kind='directory')
        srv = os.path.join(base, 'srv')
        for i in range(self.PAIRS):
            os.mkdir(os.path.join(srv, 'd%02d' % i))
            for f in range(self.FILES):  # the same names as on the host: a followed path finds them
                with open(os.path.join(srv, 'd%02d' % i, 'f%02d' % f), 'w') as fh:
                    fh.write('image\n')
            os.symlink(host, os.path.join(srv, 'l%02d' % i))

        ready = os.path.join(self.dir, 'swapper-ready')
        swapper = subprocess.Popen(stamptest.wrap_pdeathsig(
            [stamptest.PYTHON, '-c', SWAPPER, srv, str(self.PAIRS), ready]))
        self.addCleanup(swapper.wait)
        self.addCleanup(swapper.kill)
        stamptest.wait_for(lambda: os.path.exists(ready), 'the swapper to run')

        failures = []
        for n in range(self.CLONES):
            try:
                self.root.manager('CloneImage', 'base', 'copy-%d' % n, False)
            except stamptest.DBusError as e:
                failures.append(str(e))
        swapper.kill()
        swapper.wait()

        leaked = []
        for n in range(self.CLONES):
            top = os.path.join(self.store, 'copy-%d' % n)
            for dirpath, dirs, files in os.walk(top):
                for name in files:
                    path = os.path.join(dirpath, name)
                    if os.path.islink(path):
                        continue
                    with open(path, 'rb') as fh:
                        if b'HOST SECRET' in fh.read():
                            leaked.append(os.path.relpath(path, self.store))
            if os.path.isdir(top):
                # each name is what it was when the walk came by: a directory of the image's
                # files, or the link itself
                for i in range(self.PAIRS):
                    for name in ('d%02d' % i, 'l%02d' % i):
                        path = os.path.join(top, 'srv', name)
                        if os.path.islink(path):
                            self.assertEqual(os.readlink(path), host)
                        else:
                            self.assertEqual(sorted(os.listdir(path)),
                                             ['f%02d' % f for f in range(self.FILES)])
        self.assertEqual(leaked[:5], [], '%d files of the host were copied into images' % len(leaked))
        self.assertEqual(failures, [], 'copies failed while the image changed')
        self.assertEqual(temporaries(self.store), [])


class FullDiskTest(stamptest.TestCase):

    def test_failed_copy_leaves_nothing(self):
        store = make_tmpfs_store(os.path.join(self.dir, 'store'), '8M')
        base = make_image(store, 'base', kind='directory')
        with open(os.path.join(base, 'srv', 'blob'), 'wb') as f:
            f.write(os.urandom(5 << 20))
        self.start_daemon(store=store, args=['--no-pool'])
        e = self.assertDBusError(STAMP_ERROR + 'NoSpace', self.root.manager, 'CloneImage', 'base',
                                 'web', False)
        self.assertTrue('web' in e.message or 'base' in e.message, e.message)
        self.assertEqual(store_names(store), ['base'])
        self.assertNotIn('web', self.root.list_images())
        # the daemon still works, and the space came back
        os.remove(os.path.join(base, 'srv', 'blob'))
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertSameTree(os.path.join(store, 'web'), base)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
