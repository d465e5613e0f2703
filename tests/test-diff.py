#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""DiffImage's fast path (issue 12, store/btrfs-tree-diff.c): a clone and
its template compared by their btrfs metadata must answer exactly what a
walk of both trees says, for random mixes of every kind of change (adds,
rewrites, chmod, chown, xattrs set and removed, deletions of files and whole
directories, type changes, renames, hard links, deep new directories), in
both directions; and a template changed after the clone was made must not be
compared that way (the send fallback sees the template's change)."""

import hashlib
import os
import random
import shutil
import stat

from gi.repository import GLib

import stamptest
from stamptest import make_image, run

SEEDS = range(6)
OPS_PER_SEED = 40


def walk(top):
    """path → (inode number, S_IFMT, mode, uid, gid, content digest or None, xattrs)."""
    entries = {'': os.lstat(top)}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(root, name)
            entries[os.path.relpath(p, top)] = os.lstat(p)
    out = {}
    for rel, s in entries.items():
        p = os.path.join(top, rel)
        digest = None
        if stat.S_ISREG(s.st_mode):
            with open(p, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(s.st_mode):
            digest = os.readlink(p)
        xattrs = ()
        if not stat.S_ISLNK(s.st_mode):
            xattrs = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                  for k in os.listxattr(p, follow_symlinks=False)))
        out[rel] = (s.st_ino, stat.S_IFMT(s.st_mode), s.st_mode, s.st_uid, s.st_gid, digest, xattrs)
    return out


def expected_diff(base, image):
    """What DiffImage must answer, from two walks: a path only in one tree is
    A or D; a path in both is the same object only if it and each of its
    ancestors are the same inode in both (else T for another type, M for the
    same type); the same object is M if its mode, owner, extended attributes
    or (not for a directory) contents changed; the root is never listed."""
    b, n = walk(base), walk(image)

    def same_chain(p):
        while p:
            if b[p][0] != n[p][0]:
                return False
            p = os.path.dirname(p)
        return True

    changes = []
    for p in sorted(set(b) | set(n)):
        if p == '':
            continue
        if p not in n:
            changes.append(('D', p))
        elif p not in b:
            changes.append(('A', p))
        elif not same_chain(p):
            changes.append(('T' if b[p][1] != n[p][1] else 'M', p))
        else:
            x, y = b[p], n[p]
            if x[2:5] != y[2:5] or x[6] != y[6] or (x[1] != stat.S_IFDIR and x[5] != y[5]):
                changes.append(('M', p))
    return changes


def fill(root, rnd):
    """A small tree: a few directories deep, files (some big enough for
    real extents), symlinks, hard links, xattrs, owners."""
    for d in ('etc/app', 'usr/lib/x', 'usr/share/doc/a', 'usr/share/doc/b', 'var/lib/s', 'srv'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    dirs = [r for r, _, _ in os.walk(root)]
    for i in range(60):
        p = os.path.join(rnd.choice(dirs), 'f%d' % i)
        with open(p, 'wb') as f:
            f.write(rnd.randbytes(rnd.choice((10, 300, 5000, 70000))))
        if i % 7 == 0:
            os.setxattr(p, 'user.k%d' % i, b'v')
        if i % 11 == 0:
            os.chown(p, 1000 + i, 1000)
    for i in range(8):
        os.symlink('f%d' % i, os.path.join(rnd.choice(dirs), 'l%d' % i))
    # Enough entries for several metadata leaves, most of which a clone's
    # few changes leave shared.
    for d in ('usr/share/bulk1', 'var/bulk2'):
        os.makedirs(os.path.join(root, d))
        for i in range(150):
            with open(os.path.join(root, d, 'b%03d' % i), 'wb') as f:
                f.write(rnd.randbytes(rnd.choice((0, 20, 900))))
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs
                   if os.path.isfile(os.path.join(r, f)) and not os.path.islink(os.path.join(r, f)))
    for i in range(6):
        os.link(rnd.choice(files), os.path.join(rnd.choice(dirs), 'h%d' % i))


def mutate(root, rnd, count):
    """@count random changes of every kind, made in the clone."""
    serial = [0]

    def fresh():
        serial[0] += 1
        return 'n%d' % serial[0]

    def listing():
        dirs, files = [], []
        for r, ds, fs in os.walk(root):
            dirs += [os.path.join(r, d) for d in ds]
            files += [os.path.join(r, f) for f in fs]
        return sorted(dirs), sorted(files)

    for _ in range(count):
        dirs, files = listing()
        alldirs = [root] + dirs
        regular = [f for f in files if os.path.isfile(f) and not os.path.islink(f)]
        op = rnd.choice(['add', 'deep', 'write', 'append', 'chmod', 'chown', 'xattr-set', 'xattr-rm',
                         'xattr-again', 'xattr-swap', 'rm', 'rmdir', 'type', 'rename', 'rename-over',
                         'rename-dir', 'link', 'chmod-dir'])
        if op == 'add':
            with open(os.path.join(rnd.choice(alldirs), fresh()), 'wb') as f:
                f.write(rnd.randbytes(rnd.choice((5, 3000, 40000))))
        elif op == 'deep':
            d = os.path.join(rnd.choice(alldirs), fresh(), 'x', 'y', 'z')
            os.makedirs(d)
            with open(os.path.join(d, 'leaf'), 'w') as f:
                f.write('leaf')
        elif op == 'write' and regular:
            p = rnd.choice(regular)
            size = os.path.getsize(p)
            with open(p, 'r+b') as f:
                f.seek(rnd.randrange(max(size, 1)))
                f.write(rnd.randbytes(16) + b'\x01')
        elif op == 'append' and regular:
            with open(rnd.choice(regular), 'ab') as f:
                f.write(rnd.randbytes(100))
        elif op == 'chmod' and regular:
            p = rnd.choice(regular)
            os.chmod(p, os.lstat(p).st_mode & 0o7777 ^ 0o010)
        elif op == 'chmod-dir' and dirs:
            p = rnd.choice(dirs)
            os.chmod(p, os.lstat(p).st_mode & 0o7777 ^ 0o020)
        elif op == 'chown' and files:
            p = rnd.choice(files)
            os.chown(p, rnd.randrange(1, 5000), rnd.randrange(1, 5000), follow_symlinks=False)
        elif op == 'xattr-set' and regular:
            os.setxattr(rnd.choice(regular), 'user.' + rnd.choice(('a', 'b', 'k0', 'k7')), rnd.randbytes(4))
        elif op == 'xattr-rm' and regular:
            p = rnd.choice(regular)
            names = os.listxattr(p)
            if names:
                os.removexattr(p, rnd.choice(names))
        elif op == 'xattr-again' and [f for f in regular if os.listxattr(f)]:
            # written anew with the value it has: its item changes (a new transid), the file does not
            p = rnd.choice([f for f in regular if os.listxattr(f)])
            for name in os.listxattr(p):
                os.setxattr(p, name, os.getxattr(p, name))
        elif op == 'xattr-swap' and [f for f in regular if len(os.listxattr(f)) >= 2]:
            p = rnd.choice([f for f in regular if len(os.listxattr(f)) >= 2])
            a, b = rnd.sample(os.listxattr(p), 2)
            va, vb = os.getxattr(p, a), os.getxattr(p, b)
            os.setxattr(p, a, vb)
            os.setxattr(p, b, va)
        elif op == 'rm' and files:
            os.unlink(rnd.choice(files))
        elif op == 'rmdir' and dirs:
            shutil.rmtree(rnd.choice(dirs))
        elif op == 'type' and files:
            p = rnd.choice(files)
            os.unlink(p)
            if rnd.random() < 0.5:
                os.symlink('elsewhere', p)
            else:
                os.mkdir(p)
        elif op == 'rename' and files:
            os.rename(rnd.choice(files), os.path.join(rnd.choice(alldirs), fresh()))
        elif op == 'rename-over' and len(regular) > 1:
            src, dst = rnd.sample(regular, 2)
            os.rename(src, dst)
        elif op == 'rename-dir' and dirs:
            src = rnd.choice(dirs)
            into = [d for d in alldirs if d != src and not d.startswith(src + '/')]
            os.rename(src, os.path.join(rnd.choice(into), fresh()))
        elif op == 'link' and regular:
            os.link(rnd.choice(regular), os.path.join(rnd.choice(alldirs), fresh()))


class DiffFastPathTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        base = make_image(self.store, 'base', populate=False)
        fill(base, random.Random(1000))
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'true'])

    def clone(self, name):
        self.root.manager('CloneImageEx', 'base', name, {'keep_identity': GLib.Variant('b', True)})
        return os.path.join(self.store, name)

    def diff(self, name, base):
        return [tuple(x) for x in self.root.manager('DiffImage', name, base)]

    def test_random_changes_match_a_walk(self):
        base = os.path.join(self.store, 'base')
        for seed in SEEDS:
            with self.subTest(seed=seed):
                name = 'c%d' % seed
                clone = self.clone(name)
                mutate(clone, random.Random(seed), OPS_PER_SEED)
                want = expected_diff(base, clone)
                self.assertTrue(want, 'the changes made no difference')
                self.assertEqual(self.diff(name, 'base'), want)
                self.assertEqual(self.diff('base', name), expected_diff(clone, base))

    def test_many_changes_in_one_big_directory(self):
        # More rewritten metadata than one search buffer holds, and a directory
        # whose entries go on from one buffer to the next.
        base = os.path.join(self.store, 'base')
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'false'])
        os.mkdir(os.path.join(base, 'bulk'))
        for i in range(4000):
            os.close(os.open(os.path.join(base, 'bulk', 'entry-with-a-longer-name-%04d' % i),
                             os.O_WRONLY | os.O_CREAT, 0o644))
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'true'])
        clone = self.clone('big')
        bulk = os.path.join(clone, 'bulk')
        rnd = random.Random(7)
        for name in sorted(os.listdir(bulk)):
            p = os.path.join(bulk, name)
            r = rnd.random()
            if r < 0.6:
                os.chmod(p, 0o600)
            elif r < 0.7:
                os.unlink(p)
            elif r < 0.8:
                os.rename(p, p + '.moved')
            elif r < 0.9:
                os.setxattr(p, 'user.x', b'1')
        for i in range(300):
            os.close(os.open(os.path.join(bulk, 'new-%04d' % i), os.O_WRONLY | os.O_CREAT, 0o644))
        want = expected_diff(base, clone)
        self.assertGreater(len(want), 3000)
        self.assertEqual(self.diff('big', 'base'), want)

    def test_template_changed_after_the_clone_is_not_compared_by_metadata(self):
        # A template made writable, changed and marked read-only again no longer
        # shares its leaves with the clone as the clone remembers: the comparison
        # must still see the template's own change.
        # The template needs many metadata leaves for that to matter: a small
        # tree is one leaf, which the clone's own change rewrites anyway.
        base = os.path.join(self.store, 'base')
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'false'])
        os.mkdir(os.path.join(base, 'bulk'))
        for i in range(3000):
            os.close(os.open(os.path.join(base, 'bulk', 'e%04d' % i), os.O_WRONLY | os.O_CREAT, 0o644))
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'true'])
        clone = self.clone('c')
        with open(os.path.join(clone, 'srv/new'), 'w') as f:
            f.write('new')
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'false'])
        # In the middle of the tree, in leaves the clone never rewrote.
        with open(os.path.join(base, 'bulk/e1500'), 'w') as f:
            f.write('late')
        run(['btrfs', 'property', 'set', '-ts', base, 'ro', 'true'])
        got = self.diff('c', 'base')
        self.assertIn(('M', 'bulk/e1500'), got)
        self.assertIn(('A', 'srv/new'), got)
        self.assertEqual(got, expected_diff(base, clone))


if __name__ == '__main__':
    stamptest.main()
