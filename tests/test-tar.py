#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""ExportTar and ImportTar: exact round trips in every format, streams other
tar readers accept, consistent exports of images being written, hostile
archives refused with nothing left and nothing touched outside the store,
and the checks on fds and formats."""

import array
import fcntl
import hashlib
import io
import os
import socket
import stat
import subprocess
import tarfile
import threading
import time

import stamptest
from stamptest import (CANCEL_TIMEOUT, JOB_IFACE, LIMITS_EXCEEDED, MANAGER_IFACE, MANAGER_PATH, STAMP_ERROR, USER,
                       USER2, JobWatch, fd_list, make_image, populate_image, rule_for, run, store_state,
                       subvolume_read_only, wait_for)
from reliabilitytest import user_call_with_fd

BAD_ARCHIVE = STAMP_ERROR + 'BadArchive'
NO_SUCH_IMAGE = STAMP_ERROR + 'NoSuchImage'
IMAGE_EXISTS = STAMP_ERROR + 'ImageExists'
UNSUPPORTED_FORMAT = STAMP_ERROR + 'UnsupportedFormat'
INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'

FORMATS = ['zstd', 'xz', 'gzip', 'bzip2', 'uncompressed']
MAGIC = {
    'zstd': b'\x28\xb5\x2f\xfd',
    'xz': b'\xfd7zXZ\x00',
    'gzip': b'\x1f\x8b',
    'bzip2': b'BZh',
}


# ------------------------------------------------------------------ helpers

def call_with_fd(caller, method, args, fd):
    """Call a Manager method whose 'h' argument is fd (args hold 0 there)."""
    return caller.call(MANAGER_PATH, MANAGER_IFACE, method, *args, fd_list=fd_list(fd))


class PipeReader(threading.Thread):
    """Drains the read end of a pipe into a file, optionally stopping early."""

    def __init__(self, fd, path, stop_after=None, pause_after=None):
        super().__init__(daemon=True)
        self.fd = fd
        self.path = path
        self.stop_after = stop_after
        self.pause_after = pause_after
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.total = 0

    def run(self):
        with open(self.path, 'wb') as f:
            while True:
                if self.stop_after is not None and self.total >= self.stop_after:
                    break
                if self.pause_after is not None and self.total >= self.pause_after \
                        and not self.resume.is_set():
                    self.paused.set()
                    self.resume.wait()
                data = os.read(self.fd, 65536)
                if not data:
                    break
                f.write(data)
                self.total += len(data)
        os.close(self.fd)


def write_sparse(path, layout, size):
    """A sparse file of size bytes with data only at the given (offset, bytes)."""
    with open(path, 'wb') as f:
        f.truncate(size)
        for offset, data in layout:
            f.seek(offset)
            f.write(data)


def make_rich_tree(root):
    """Everything export must keep, in one tree."""
    populate_image(root, 'rich')
    p = lambda *a: os.path.join(root, *a)  # noqa: E731
    for d in ('srv/owned', 'srv/acl-dir', 'usr/bin', 'dev', 'var/lib/deep/er/est'):
        os.makedirs(p(d), exist_ok=True)

    with open(p('srv/owned/file'), 'w') as f:
        f.write('owned by someone else\n')
    os.chown(p('srv/owned/file'), 1234, 5678)
    os.chown(p('srv/owned'), 100, 101)
    os.chmod(p('srv/owned'), 0o750)
    with open(p('srv/big-uid'), 'w') as f:
        f.write('uid beyond the octal header field\n')
    os.chown(p('srv/big-uid'), 3000000, 3000001)

    shutil_copy(p('bin/busybox'), p('usr/bin/suid'))
    os.chmod(p('usr/bin/suid'), 0o4755)
    shutil_copy(p('bin/busybox'), p('usr/bin/sgid'))
    os.chown(p('usr/bin/sgid'), 0, 42)
    os.chmod(p('usr/bin/sgid'), 0o2711)
    os.makedirs(p('srv/sgid-dir'))
    os.chmod(p('srv/sgid-dir'), 0o2775)

    with open(p('srv/xattrs'), 'w') as f:
        f.write('with extended attributes\n')
    os.setxattr(p('srv/xattrs'), 'user.comment', b'hello')
    os.setxattr(p('srv/xattrs'), 'user.binary', bytes(range(256)))
    os.setxattr(p('srv/xattrs'), 'trusted.overlay.x', b'y')
    os.setxattr(p('srv/owned'), 'user.on-a-dir', b'1')

    shutil_copy(p('bin/busybox'), p('usr/bin/ping'))
    run(['setcap', 'cap_net_raw,cap_net_admin+ep', p('usr/bin/ping')])

    with open(p('srv/acl-file'), 'w') as f:
        f.write('with an access ACL\n')
    run(['setfacl', '-m', 'u:1234:rw,g:5678:r,m::rw', p('srv/acl-file')])
    run(['setfacl', '-d', '-m', 'u:1234:rx', p('srv/acl-dir')])
    run(['setfacl', '-m', 'u:4321:rwx', p('srv/acl-dir')])

    with open(p('srv/hard-a'), 'w') as f:
        f.write('one inode, three names\n')
    os.link(p('srv/hard-a'), p('srv/hard-b'))
    os.link(p('srv/hard-a'), p('var/lib/deep/hard-c'))

    os.mknod(p('dev/null'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(p('dev/loop7'), 0o660 | stat.S_IFBLK, os.makedev(7, 7))
    os.chown(p('dev/loop7'), 0, 6)
    os.mknod(p('dev/big-dev'), 0o600 | stat.S_IFCHR, os.makedev(4000, 300000))
    os.mkfifo(p('srv/fifo'), 0o640)

    os.symlink('usr/bin', p('ubin'))
    os.symlink('/usr/share/zoneinfo/Etc/UTC', p('etc/localtime'))
    os.symlink('../../../srv/xattrs', p('var/lib/deep/xattrs-link'))

    write_sparse(p('srv/sparse'), [(0, b'a' * 4096), (32 << 20, b'b' * 4096)], 64 << 20)
    write_sparse(p('srv/sparse-tail'), [(8 << 20, b'c' * 8192)], (8 << 20) + 8192)
    with open(p('srv/zeros'), 'wb') as f:  # zeros on disk, not a hole: must stay allocated
        f.write(bytes(1 << 20))
    with open(p('srv/random'), 'wb') as f:
        f.write(os.urandom(3 << 20))
    open(p('srv/empty'), 'w').close()

    long_dir = p('srv', 'd' * 60, 'e' * 60)
    os.makedirs(long_dir)
    with open(os.path.join(long_dir, 'f' * 120), 'w') as f:
        f.write('a long path\n')
    with open(p('srv/ünïcödé ☃ name'), 'w') as f:
        f.write('utf-8 name\n')
    with open(p('srv/\udcff-not-utf8'), 'w') as f:
        f.write('a name that is not UTF-8\n')

    run(['chattr', '+d', p('srv/random')])

    # Times to the nanosecond, last, on files, directories, links and the root.
    os.utime(p('srv/xattrs'), ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    os.utime(p('srv/owned'), ns=(1_600_000_000_000_000_001, 1_400_000_000_000_000_002))
    os.utime(p('ubin'), ns=(1_600_000_000_000_000_005, 1_300_000_000_000_000_003),
             follow_symlinks=False)
    os.utime(root, ns=(1_600_000_000_000_000_000, 1_200_000_000_000_000_004))
    return root


def shutil_copy(src, dst):
    with open(src, 'rb') as a, open(dst, 'wb') as b:
        b.write(a.read())
    os.chmod(dst, 0o755)


def fs_flags(path):
    """The inode flags of a regular file (chattr's), FS_IOC_GETFLAGS."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        buf = array.array('i', [0])
        fcntl.ioctl(fd, 0x80086601, buf, True)
        return buf[0]
    finally:
        os.close(fd)


def tree_state(top):
    """Everything the round trip must keep, per relative path, plus the hard
    link groups."""
    entries = {}
    inodes = {}
    for root, dirs, files in os.walk(top):
        for name in ['.'] + dirs + files if root == top else dirs + files:
            path = os.path.normpath(os.path.join(root, name))
            rel = os.path.relpath(path, top)
            s = os.lstat(path)
            xattrs = {}
            for key in os.listxattr(path, follow_symlinks=False):
                xattrs[key] = os.getxattr(path, key, follow_symlinks=False)
            entry = {
                'type': stat.S_IFMT(s.st_mode),
                'mode': stat.S_IMODE(s.st_mode),
                'uid': s.st_uid, 'gid': s.st_gid,
                'mtime_ns': s.st_mtime_ns,
                'xattrs': xattrs,
            }
            if stat.S_ISREG(s.st_mode):
                with open(path, 'rb') as f:
                    entry['sha256'] = hashlib.sha256(f.read()).hexdigest()
                entry.update(size=s.st_size, blocks=s.st_blocks, nlink=s.st_nlink,
                             flags=fs_flags(path))
                inodes.setdefault(s.st_ino, []).append(rel)
            elif stat.S_ISLNK(s.st_mode):
                entry['target'] = os.readlink(path)
            elif stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
                entry['rdev'] = (os.major(s.st_rdev), os.minor(s.st_rdev))
            entries[rel] = entry
    links = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    return entries, links


def temporaries(store):
    return [n for n in os.listdir(store) if n.startswith('.#')]


def tar_bytes(members):
    """An uncompressed tar made by Python's tarfile from (TarInfo, data)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()


def ti(name, kind=tarfile.REGTYPE, linkname='', mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = 1_700_000_000
    return info


def os_tree_members(prefix=''):
    """A minimal OS tree, so an archive is otherwise acceptable."""
    return [
        (ti(prefix + 'etc/', tarfile.DIRTYPE, mode=0o755), None),
        (ti(prefix + 'etc/os-release'), b'ID=hostile\n'),
        (ti(prefix + 'usr/', tarfile.DIRTYPE, mode=0o755), None),
    ]


# ------------------------------------------------------------------- tests

class TarTestCase(stamptest.TestCase):

    store_kind = 'pool'

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon(kind=self.store_kind)
        self.store = self.daemon.store
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)
        os.mkdir(os.path.join(self.dir, 'inputs'))

    def job_progress(self, job):
        """The job's Progress, or -1 once it is gone."""
        try:
            return self.root.get_property(job[1], JOB_IFACE, 'Progress')
        except stamptest.DBusError:
            return -1

    def export_to_file(self, name, fmt, path, caller=None):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            job = call_with_fd(caller or self.root, 'ExportTar', (name, 0, fmt), fd)
        finally:
            os.close(fd)
        return self.jobs.wait(job)

    def export_to_pipe(self, name, fmt, path, **reader_kw):
        """Export through a pipe, drained by a thread into path; returns
        (job, reader), the job still running."""
        r, w = os.pipe2(os.O_CLOEXEC)
        reader = PipeReader(r, path, **reader_kw)
        reader.start()
        try:
            job = call_with_fd(self.root, 'ExportTar', (name, 0, fmt), w)
        finally:
            os.close(w)
        return job, reader

    def import_file(self, path, name, read_only=False):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            job = call_with_fd(self.root, 'ImportTar', (0, name, read_only), fd)
        finally:
            os.close(fd)
        return self.jobs.wait(job)

    def import_bytes(self, data, name):
        os.makedirs(os.path.join(self.dir, 'inputs'), exist_ok=True)
        path = os.path.join(self.dir, 'inputs', 'in-%s.tar' % name)
        with open(path, 'wb') as f:
            f.write(data)
        return self.import_file(path, name)

    def assertJobDone(self, outcome):
        result, log = outcome
        self.assertEqual(result, 'done', 'the job failed: %s' % log)

    def assertJobFailed(self, outcome, *phrases):
        result, log = outcome
        self.assertEqual(result, 'failed', 'the job should have failed; its log: %s' % log)
        for phrase in phrases:
            self.assertIn(phrase, log)
        return log

    def assertNoImageNoTemporary(self, name):
        self.assertNotIn(name, self.root.list_images())
        self.assertFalse(os.path.lexists(os.path.join(self.store, name)))
        self.assertEqual(temporaries(self.store), [])


class RoundTripTest(TarTestCase):

    def setUp(self):
        super().setUp()
        self.src = make_image(self.store, 'rich', populate=False)
        make_rich_tree(self.src)
        self.expected = tree_state(self.src)

    def test_round_trip_every_format_through_a_pipe(self):
        for fmt in FORMATS:
            with self.subTest(format=fmt):
                path = os.path.join(self.dir, 'rich.' + fmt)
                job, reader = self.export_to_pipe('rich', fmt, path)
                self.assertJobDone(self.jobs.wait(job))
                reader.join()
                with open(path, 'rb') as f:
                    head = f.read(512)
                if fmt in MAGIC:
                    self.assertTrue(head.startswith(MAGIC[fmt]), 'not %s: %r' % (fmt, head[:8]))
                else:
                    self.assertEqual(head[257:262], b'ustar')

                # another tar reader takes the very stream (no padding after compression)
                listing = run(['bsdtar', '-tvf', path]).stdout
                self.assertIn('srv/hard-b link to', listing)
                self.assertIn('ubin -> usr/bin', listing)

                self.assertJobDone(self.import_file(path, 'copy-' + fmt))
                self.assertEqual(tree_state(os.path.join(self.store, 'copy-' + fmt)),
                                 self.expected)
        self.assertEqual(temporaries(self.store), [])

    def test_default_format_is_zstd_and_files_work(self):
        path = os.path.join(self.dir, 'rich.tar')
        self.assertJobDone(self.export_to_file('rich', '', path))
        with open(path, 'rb') as f:
            self.assertEqual(f.read(4), MAGIC['zstd'])
        self.assertJobDone(self.import_file(path, 'copy', read_only=True))
        copy = os.path.join(self.store, 'copy')
        self.assertTrue(subvolume_read_only(copy))
        self.assertEqual(tree_state(copy), self.expected)
        self.assertEqual(self.root.list_images()['copy'][1], True)

    def test_export_of_a_read_only_image_leaves_it_alone(self):
        self.root.manager('MarkImageReadOnly', 'rich', True)
        before = store_state(self.store)
        path = os.path.join(self.dir, 'rich.tar.xz')
        self.assertJobDone(self.export_to_file('rich', 'xz', path))
        after = store_state(self.store)
        # read in place: not even a snapshot came and went in the store
        self.assertEqual(after, before)
        self.assertTrue(subvolume_read_only(self.src))
        self.assertJobDone(self.import_file(path, 'copy'))
        self.assertEqual(tree_state(os.path.join(self.store, 'copy')), self.expected)

    def test_sockets_and_non_blocking_fds(self):
        """The caller may hand over a socket, and fds it set non-blocking."""
        out_path = os.path.join(self.dir, 'rich.sock.tar.gz')
        a, b = socket.socketpair()
        a.setblocking(False)
        reader = PipeReader(os.dup(b.fileno()), out_path)
        reader.start()
        try:
            job = call_with_fd(self.root, 'ExportTar', ('rich', 0, 'gzip'), a.fileno())
        finally:
            a.close()
            b.close()
        self.assertJobDone(self.jobs.wait(job))
        reader.join()
        run(['bsdtar', '-tf', out_path])

        with open(out_path, 'rb') as f:
            data = f.read()
        a, b = socket.socketpair()
        b.setblocking(False)
        feeder = threading.Thread(target=lambda: (a.sendall(data), a.close()), daemon=True)
        feeder.start()
        try:
            job = call_with_fd(self.root, 'ImportTar', (0, 'copy', False), b.fileno())
        finally:
            b.close()
        self.assertJobDone(self.jobs.wait(job))
        feeder.join()
        self.assertEqual(tree_state(os.path.join(self.store, 'copy')), self.expected)

    def test_export_as_authorized_user(self):
        out = os.path.join(self.dir, 'by-user.tar.zst')
        script = os.path.join(self.dir, 'export-as-user.py')
        with open(script, 'w') as f:
            f.write(USER_EXPORT_SCRIPT)
        os.chmod(self.dir, 0o777)

        def as_user():
            p = run(self.env.as_user(USER, [stamptest.PYTHON, script, out]), check=False)
            return p.returncode, p.stdout.strip(), p.stderr
        rc, text, err = as_user()
        self.assertEqual(rc, 1, err)
        # the shipped default is auth_admin, and nobody can be asked
        self.assertEqual(text, stamptest.INTERACTIVE_REQUIRED)
        self.assertFalse(os.path.exists(out) and os.path.getsize(out) > 0)

        self.allow(USER, 'export')
        rc, text, err = as_user()
        self.assertEqual((rc, text), (0, 'done'), err)
        self.assertEqual(os.stat(out).st_uid, self.env.users[USER])
        listing = run(['bsdtar', '-tvf', out]).stdout
        self.assertIn('usr/bin/suid', listing)
        self.assertJobDone(self.import_file(out, 'copy'))
        self.assertEqual(tree_state(os.path.join(self.store, 'copy')), self.expected)


class PlainStoreRoundTripTest(TarTestCase):
    """Without btrfs: directory images, exported as they are."""

    store_kind = 'plain'

    def test_progress_without_quota_groups(self):
        """No quota group says how big the image is: it is counted beside the
        export, and progress is said against that count."""
        src = make_image(self.store, 'big', kind='directory')
        os.makedirs(os.path.join(src, 'srv/deep/er'))
        for i, sub in enumerate(('srv', 'srv/deep', 'srv/deep/er')):
            with open(os.path.join(src, sub, 'blob%d' % i), 'wb') as f:
                f.write(os.urandom(4 << 20))
        r, w = os.pipe2(os.O_CLOEXEC)
        read = [0]

        def slow_reader():  # 12 MiB, 64 KiB a read, in about 2 s
            while True:
                data = os.read(r, 256 << 10)
                if not data:
                    break
                read[0] += len(data)
                time.sleep(0.01)
            os.close(r)
        reader = threading.Thread(target=slow_reader, daemon=True)
        reader.start()
        try:
            job = call_with_fd(self.root, 'ExportTar', ('big', 0, 'uncompressed'), w)
        finally:
            os.close(w)
        seen = []
        while reader.is_alive():
            p = self.job_progress(job)
            if 0 < p < 1:
                seen.append((p, read[0] / (12 << 20)))
            time.sleep(0.05)
        self.assertJobDone(self.jobs.wait(job))
        self.assertTrue(any(0.2 < p < 0.9 for p, _ in seen), 'progress seen: %s' % seen)
        # never far ahead of what the reader got (the pipe holds a little)
        for p, got in seen:
            self.assertLess(p, got + 0.2, seen)

    def test_round_trip_of_a_directory_image(self):
        src = make_image(self.store, 'rich', kind='directory', populate=False)
        make_rich_tree(src)
        expected = tree_state(src)
        path = os.path.join(self.dir, 'rich.tar')
        result, log = self.export_to_file('rich', 'uncompressed', path)
        self.assertEqual(result, 'done', log)
        self.assertIn('exporting it as it is', log)
        self.assertEqual(temporaries(self.store), [])
        self.assertJobDone(self.import_file(path, 'copy', read_only=True))
        copy = os.path.join(self.store, 'copy')
        self.assertTrue(stamptest.has_immutable_flag(copy))
        state = tree_state(copy)
        # the immutable flag is how a directory image is read-only; the rest is as exported
        self.assertEqual(state, expected)


TIB = 1 << 40
# Data blocks of a 1 TiB file that is a hole everywhere else: at the start, in
# the middle (not on a block boundary), and at the very end.
HUGE_LAYOUT = [(0, b'head' * 1024), ((TIB // 2) + 12345, b'middle' * 2000), (TIB - 4096, b'tail' * 1024)]


def data_extents(path):
    """The (offset, bytes) runs that hold data, found with SEEK_DATA/SEEK_HOLE."""
    runs = []
    with open(path, 'rb') as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            runs.append((start, end - start))
            pos = end
    return runs


def sparse_state(path):
    """What must survive of a huge sparse file, read without reading its holes:
    its size, and the content of every data run."""
    s = os.stat(path)
    contents = []
    with open(path, 'rb') as f:
        for offset, n in data_extents(path):
            f.seek(offset)
            contents.append((offset, hashlib.sha256(f.read(n)).hexdigest()))
    return s.st_size, contents


class HugeSparseTest(TarTestCase):
    """Files with holes of a TiB and more (root in a machine makes one in a
    moment) are exported as holes and data, quickly and small, and come back
    sparse. Holes were handed to the tar writer as zeros, a MiB at a time: a
    file claiming exabytes made an export that never ended."""

    # Without the fix such an export runs for days: fail after a minute instead.
    EXPORT_TIMEOUT = 60

    def make_sparse_image(self, kind):
        src = make_image(self.store, 'holes', kind=kind, populate=False)
        os.mkdir(os.path.join(src, 'srv'))
        write_sparse(os.path.join(src, 'srv/huge'), HUGE_LAYOUT, TIB)
        write_sparse(os.path.join(src, 'srv/huge-tail-hole'), HUGE_LAYOUT[:1], TIB)
        write_sparse(os.path.join(src, 'srv/all-hole'), [], TIB)
        return src

    def export_bounded(self, name, fmt, path):
        """Export to a file; (outcome, seconds), failing the test if it does
        not end in EXPORT_TIMEOUT."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            job = call_with_fd(self.root, 'ExportTar', (name, 0, fmt), fd)
        finally:
            os.close(fd)
        t0 = time.monotonic()
        try:
            outcome = self.jobs.wait(job, timeout=self.EXPORT_TIMEOUT)
        except AssertionError:
            self.root.call(job[1], JOB_IFACE, 'Cancel')
            self.jobs.wait(job)
            self.fail('the export of image %s did not end within %d s' % (name, self.EXPORT_TIMEOUT))
        return job, outcome, time.monotonic() - t0

    def check_round_trip(self, kind):
        src = self.make_sparse_image(kind)
        names = ('huge', 'huge-tail-hole', 'all-hole')
        expected = {n: sparse_state(os.path.join(src, 'srv', n)) for n in names}
        for fmt in ('uncompressed', 'zstd'):
            with self.subTest(format=fmt):
                path = os.path.join(self.dir, 'holes.' + fmt)
                _, outcome, took = self.export_bounded('holes', fmt, path)
                self.assertJobDone(outcome)
                self.assertLess(took, 10)
                # the data is a few KiB: holes are not in the archive
                self.assertLess(os.path.getsize(path), 1 << 20)
                listing = run(['bsdtar', '-tvf', path]).stdout
                self.assertRegex(listing, r" %d [^\n]*srv/huge\n" % TIB)

                copy = 'holes-' + fmt
                self.assertJobDone(self.import_file(path, copy))
                for n in names:
                    got = os.path.join(self.store, copy, 'srv', n)
                    self.assertEqual(sparse_state(got), expected[n], n)
                    # still holes on disk: a few data blocks, not a TiB
                    self.assertLess(os.stat(got).st_blocks * 512, 4 << 20, n)
        self.assertEqual(temporaries(self.store), [])

    def test_huge_holes_round_trip(self):
        self.check_round_trip('subvolume')

    def test_exabyte_hole_at_the_end_round_trip(self):
        """A hole at a file's end costs the export nothing, however long."""
        src = make_image(self.store, 'tail', populate=False)
        size = (1 << 63) - (1 << 20)
        write_sparse(os.path.join(src, 'big'), [(0, b'data' * 1024)], size)
        expected = sparse_state(os.path.join(src, 'big'))
        path = os.path.join(self.dir, 'tail.tar')
        _, outcome, took = self.export_bounded('tail', 'uncompressed', path)
        self.assertJobDone(outcome)
        self.assertLess(took, 10)
        self.assertLess(os.path.getsize(path), 1 << 20)
        self.assertJobDone(self.import_file(path, 'tail-copy'))
        got = os.path.join(self.store, 'tail-copy', 'big')
        self.assertEqual(sparse_state(got), expected)
        self.assertLess(os.stat(got).st_blocks * 512, 1 << 20)

    def test_exabyte_holes_between_data_are_refused(self):
        """Holes before data must be handed to the tar writer: what that may
        cost is bounded, and an image beyond it is refused at once, with a
        named error and nothing left in the store."""
        src = make_image(self.store, 'absurd', populate=False)
        write_sparse(os.path.join(src, 'big'), [(0, b'a' * 4096), (1 << 62, b'b' * 4096)],
                     (1 << 62) + 4096)
        before = store_state(self.store)['absurd']
        path = os.path.join(self.dir, 'absurd.tar')
        job, outcome, took = self.export_bounded('absurd', 'zstd', path)
        self.assertJobFailed(outcome, 'TiB of holes', 'big')
        self.assertEqual(self.jobs.error_name(job), STAMP_ERROR + 'NotSupported')
        self.assertLess(took, 10)
        # the snapshot it was read from is gone, the image untouched
        self.assertEqual(temporaries(self.store), [])
        self.assertEqual(store_state(self.store)['absurd'], before)


class HugeSparsePlainStoreTest(HugeSparseTest):
    """The same on a store without btrfs (ext4 takes files of up to 16 TiB)."""

    store_kind = 'plain'
    test_exabyte_hole_at_the_end_round_trip = None
    test_exabyte_holes_between_data_are_refused = None

    def test_huge_holes_round_trip(self):
        self.check_round_trip('directory')


USER_EXPORT_SCRIPT = r'''
import os, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib
out = sys.argv[1]
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
fds = Gio.UnixFDList.new()
fds.append(fd)
os.close(fd)
results = {}
def on_removed(conn, sender, path, iface, member, params):
    job_id, _, result = params.unpack()
    results[job_id] = result
bus.signal_subscribe('io.stamp.Stamp1', 'io.stamp.Stamp1.Manager', 'JobRemoved',
                     '/io/stamp/Stamp1', None, Gio.DBusSignalFlags.NONE, on_removed)
try:
    reply, _ = bus.call_with_unix_fd_list_sync(
        'io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', 'ExportTar',
        GLib.Variant('(shs)', ('rich', 0, 'zstd')), None, Gio.DBusCallFlags.NONE, 60000, fds, None)
except GLib.Error as e:
    print(Gio.DBusError.get_remote_error(e))
    sys.exit(1)
job_id = reply.unpack()[0]
ctx = GLib.MainContext.default()
while job_id not in results:
    ctx.iteration(True)
print(results[job_id])
'''


class ConsistencyTest(TarTestCase):

    def test_export_while_writing_is_a_snapshot(self):
        """A writer rewrites 100 files round after round; the export must show
        them as they were at one instant: files 0..k-1 at round g+1, the rest
        at round g. The export is held mid-way (after the first files, inside
        a big one) until the writer has done several more rounds."""
        # Archive order is directory order, which on btrfs is creation order:
        # f000..f049, big, f050..f099. The writer rewrites in place (a rename
        # would reorder the directory) and syncs each write: a snapshot is one
        # instant of what is on disk, and buffered writes reach the disk in no
        # particular order.
        img = make_image(self.store, 'busy', populate=False)
        os.mkdir(os.path.join(img, 'srv'))
        for i in range(100):
            if i == 50:
                with open(os.path.join(img, 'srv/big'), 'wb') as f:
                    f.write(os.urandom(16 << 20))
            with open(os.path.join(img, 'srv/f%03d' % i), 'w') as f:
                f.write('%08d\n' % 0)

        counter = os.path.join(self.dir, 'rounds')
        writer = subprocess.Popen([stamptest.PYTHON, '-c', WRITER_SCRIPT, img, counter])
        self.addCleanup(lambda: (writer.kill(), writer.wait()))
        rounds = lambda: int(open(counter).read() or 0) if os.path.exists(counter) else 0  # noqa: E731
        wait_for(lambda: rounds() >= 2, 'the writer to get going')

        path = os.path.join(self.dir, 'busy.tar')
        job, reader = self.export_to_pipe('busy', 'uncompressed', path, pause_after=1 << 20)
        reader.paused.wait(stamptest.TIMEOUT)
        self.assertTrue(reader.paused.is_set(), 'the export never produced 1 MiB')

        # While it is held, the job shows how far it got.
        progress = wait_for(lambda: 0 < self.job_progress(job) < 1 and self.job_progress(job),
                            'progress between 0 and 1')
        self.assertGreater(progress, 0)

        seen = rounds()
        wait_for(lambda: rounds() >= seen + 3, 'three more rounds of the writer')
        reader.resume.set()
        self.assertJobDone(self.jobs.wait(job))
        reader.join()
        writer.kill()
        writer.wait()

        values = []
        with tarfile.open(path) as t:
            for m in t.getmembers():
                if m.name.startswith('./srv/f'):
                    values.append((m.name, int(t.extractfile(m).read())))
        values.sort()
        self.assertEqual(len(values), 100)
        numbers = [v for _, v in values]
        g = min(numbers)
        k = numbers.count(g + 1)
        self.assertEqual(numbers, [g + 1] * k + [g] * (100 - k),
                         'the export mixes rounds: not one instant of the image')
        self.assertEqual(temporaries(self.store), [], 'the export snapshot was left behind')


    def test_big_file_rewritten_during_export_is_the_snapshot(self):
        """Big files of a writable image are read through the live image
        while their extents show they are still the snapshot's. A file
        rewritten all through the export must still come out as it was at the
        snapshot (one instant of the writer: rounds g+1 then g), not a mix of
        what the live file held at different times."""
        img = make_image(self.store, 'busy', populate=False)
        os.mkdir(os.path.join(img, 'srv'))
        big = os.path.join(img, 'srv/big')
        with open(big, 'wb') as f:
            f.write(round_pattern(0) * (BIG_REWRITTEN // 4096))
        counter = os.path.join(self.dir, 'rounds')
        writer = subprocess.Popen([stamptest.PYTHON, '-c', BIG_WRITER_SCRIPT, big, counter])
        self.addCleanup(lambda: (writer.kill(), writer.wait()))
        rounds = lambda: int(open(counter).read() or 0) if os.path.exists(counter) else 0  # noqa: E731
        wait_for(lambda: rounds() >= 2, 'the writer to get going')

        path = os.path.join(self.dir, 'busy.tar')
        job, reader = self.export_to_pipe('busy', 'uncompressed', path, pause_after=1 << 20)
        reader.paused.wait(stamptest.TIMEOUT)
        self.assertTrue(reader.paused.is_set(), 'the export never produced 1 MiB')
        seen = rounds()
        wait_for(lambda: rounds() >= seen + 3, 'three more rounds of the writer')
        reader.resume.set()
        self.assertJobDone(self.jobs.wait(job))
        reader.join()
        writer.kill()
        writer.wait()

        with tarfile.open(path) as t:
            data = t.extractfile('./srv/big').read()
        self.assertEqual(len(data), BIG_REWRITTEN)
        # The snapshot may fall in the middle of a round: the file's first blocks
        # at round g+1, the rest at round g. Anything else mixes instants.
        numbers = [int(data[i:i + 16]) for i in range(0, len(data), 4096)]
        g = min(numbers)
        k = numbers.count(g + 1)
        self.assertEqual(numbers, [g + 1] * k + [g] * (len(numbers) - k),
                         'the export mixes rounds of srv/big: %s' % sorted(set(numbers)))
        self.assertEqual(temporaries(self.store), [], 'the export snapshot was left behind')


    def test_live_files_swapped_during_export_are_not_followed(self):
        """What the export reads through the live image is opened beneath
        it, never through a symlink, never as a FIFO or device: files swapped
        for those after the snapshot come out as the snapshot has them."""
        img = make_image(self.store, 'swapped', populate=False)
        os.mkdir(os.path.join(img, 'srv'))
        with open(os.path.join(img, 'srv/big'), 'wb') as f:
            f.write(os.urandom(16 << 20))
        later = {}
        for name in ('z-fifo', 'z-link', 'z-dir'):
            later[name] = os.urandom(256 << 10)
            with open(os.path.join(img, 'srv', name), 'wb') as f:
                f.write(later[name])
        secret = os.path.join(self.dir, 'host-secret')
        with open(secret, 'wb') as f:
            f.write(b'host secret\n' * 30000)

        path = os.path.join(self.dir, 'swapped.tar')
        job, reader = self.export_to_pipe('swapped', 'uncompressed', path, pause_after=1 << 20)
        reader.paused.wait(stamptest.TIMEOUT)
        self.assertTrue(reader.paused.is_set(), 'the export never produced 1 MiB')
        srv = os.path.join(img, 'srv')
        os.unlink(os.path.join(srv, 'z-fifo'))
        os.mkfifo(os.path.join(srv, 'z-fifo'))
        os.unlink(os.path.join(srv, 'z-link'))
        os.symlink(secret, os.path.join(srv, 'z-link'))
        os.unlink(os.path.join(srv, 'z-dir'))
        os.mkdir(os.path.join(srv, 'z-dir'))
        os.symlink(secret, os.path.join(srv, 'z-dir', 'x'))
        reader.resume.set()
        self.assertJobDone(self.jobs.wait(job, timeout=60))
        reader.join()
        with tarfile.open(path) as t:
            for name, data in later.items():
                self.assertEqual(t.extractfile('./srv/' + name).read(), data, name)
        self.assertEqual(temporaries(self.store), [])


BIG_REWRITTEN = 24 << 20


def round_pattern(n):
    """4 KiB that say which round of the writer wrote them."""
    return (b'%015d\n' % n) * 256


BIG_WRITER_SCRIPT = r'''
import os, sys
big, counter = sys.argv[1], sys.argv[2]
size = %d
n = 0
while True:
    n += 1
    block = (b'%%015d\n' %% n) * 256 * 256
    fd = os.open(big, os.O_WRONLY)
    for off in range(0, size, len(block)):
        os.pwrite(fd, block, off)
    os.fsync(fd)
    os.close(fd)
    with open(counter + '.new', 'w') as f:
        f.write(str(n))
    os.rename(counter + '.new', counter)
''' % BIG_REWRITTEN

WRITER_SCRIPT = r'''
import os, sys
img, counter = sys.argv[1], sys.argv[2]
n = 0
while True:
    n += 1
    for i in range(100):
        fd = os.open(os.path.join(img, 'srv/f%03d' % i), os.O_WRONLY)
        os.pwrite(fd, b'%08d\n' % n, 0)
        os.fsync(fd)
        os.close(fd)
    with open(counter + '.new', 'w') as f:
        f.write(str(n))
    os.rename(counter + '.new', counter)
'''


class ReadOnlyInPlaceTest(TarTestCase):
    """A read-only image is exported in place, and held read-only until the
    export ends: nothing removes, renames or unlocks it meanwhile."""

    def setUp(self):
        super().setUp()
        self.src = make_image(self.store, 'tpl')
        with open(os.path.join(self.src, 'srv/random'), 'wb') as f:
            f.write(os.urandom(4 << 20))
        self.root.manager('MarkImageReadOnly', 'tpl', True)
        self.expected = tree_state(self.src)

    def start_paused_export(self):
        path = os.path.join(self.dir, 'tpl.tar')
        job, reader = self.export_to_pipe('tpl', 'uncompressed', path, pause_after=64 << 10)
        self.assertTrue(reader.paused.wait(30), 'the export wrote nothing')
        return path, job, reader

    def assertRefusedWhileExported(self):
        before = store_state(self.store)
        for method, args in (('RemoveImage', ('tpl',)), ('RenameImage', ('tpl', 'moved')),
                             ('MarkImageReadOnly', ('tpl', False))):
            with self.subTest(method=method):
                err = self.assertDBusError(STAMP_ERROR + 'ImageBusy', self.root.manager, method, *args)
                self.assertIn('being exported', str(err))
        self.assertEqual(store_state(self.store), before)
        self.assertTrue(subvolume_read_only(self.src))

    def test_held_read_only_while_exported_in_place(self):
        path, job, reader = self.start_paused_export()
        self.assertEqual(temporaries(self.store), [], 'a read-only image needs no snapshot')
        self.assertRefusedWhileExported()
        # reading it is fine: a clone, and a second export beside the first
        self.root.manager('CloneImage', 'tpl', 'copy', False)
        self.assertEqual(self.root.image_props('copy')['Origin'], 'tpl')
        self.assertJobDone(self.export_to_file('tpl', 'zstd', os.path.join(self.dir, 'second.tar.zst')))
        self.assertRefusedWhileExported()  # the first still holds it

        reader.resume.set()
        self.assertJobDone(self.jobs.wait(job))
        reader.join()
        self.assertJobDone(self.import_file(path, 'back'))
        self.assertEqual(tree_state(os.path.join(self.store, 'back')), self.expected)
        # released with the job
        self.root.manager('MarkImageReadOnly', 'tpl', False)
        self.root.manager('RemoveImage', 'tpl')
        self.assertNotIn('tpl', self.root.list_images())

    def test_released_when_canceled(self):
        _, job, reader = self.start_paused_export()
        self.root.manager('CancelJob', job[0])
        reader.resume.set()
        self.assertEqual(self.jobs.wait(job, timeout=CANCEL_TIMEOUT)[0], 'canceled')
        reader.join()
        self.root.manager('RenameImage', 'tpl', 'moved')
        self.assertEqual(sorted(self.root.list_images()), ['moved'])
        self.assertEqual(temporaries(self.store), [])


class StalledImportTestCase(TarTestCase):

    def new_root_caller(self):
        """Root on a bus connection of its own: another caller, as far as caps go."""
        flags = stamptest.Gio.DBusConnectionFlags
        conn = stamptest.Gio.DBusConnection.new_for_address_sync(
            self.env.address, flags.AUTHENTICATION_CLIENT | flags.MESSAGE_BUS_CONNECTION, None, None)
        self.addCleanup(conn.close_sync, None)
        return stamptest.RootCaller(conn)

    def stalled_import(self, name, caller=None):
        """ImportTar from a pipe that nobody writes (and nobody closes): the job waits for its
        input until it is canceled. Returns the job."""
        r, w = os.pipe2(os.O_CLOEXEC)
        self.addCleanup(os.close, w)
        try:
            return call_with_fd(caller or self.root, 'ImportTar', (0, name, False), r)
        finally:
            os.close(r)

    def cancel_all(self, jobs):
        for job in jobs:
            self.root.manager('CancelJob', job[0])
        for job in jobs:
            self.assertEqual(self.jobs.wait(job, timeout=CANCEL_TIMEOUT)[0], 'canceled')

    def helper_of(self, name):
        """The pid of the stamp-transfer importing image name for our daemon."""
        def ancestors(pid):
            for _ in range(4):
                try:
                    with open('/proc/%d/stat' % pid) as f:
                        pid = int(f.read().rsplit(')', 1)[1].split()[1])
                except OSError:
                    return
                yield pid

        def find():
            # stamp-transfer makes the job's namespaces itself and does the work in a child, PID 1
            # there: of the processes with its command line, the one whose parent is another.
            found = []
            for p in os.listdir('/proc'):
                if not p.isdigit():
                    continue
                try:
                    with open('/proc/%s/cmdline' % p, 'rb') as f:
                        argv = f.read().split(b'\0')
                except OSError:
                    continue
                if argv[:2] == [b'stamp-transfer', b'import'] and name.encode() in argv \
                        and self.daemon.pid in ancestors(int(p)):
                    found.append(int(p))
            for pid in found:
                if next(ancestors(pid), None) in found:
                    return pid
            return None
        return wait_for(find, 'the helper importing %s' % name)


class JobCapTest(StalledImportTestCase):

    def test_global_job_cap_across_callers(self):
        """16 jobs in all, whoever holds them: four callers hold four each
        (the per-caller cap), and a fifth caller is refused, naming the
        global cap, with nothing made."""
        callers = [self.root] + [self.new_root_caller() for _ in range(4)]
        jobs = [self.stalled_import('held-%d-%d' % (i, j), caller)
                for i, caller in enumerate(callers[:4]) for j in range(4)]
        self.assertEqual(len(self.root.manager('ListJobs')), 16)
        wait_for(lambda: len(temporaries(self.store)) == 16, 'the imports to make their temporaries')
        before = store_state(self.store)

        e = self.assertDBusError(LIMITS_EXCEEDED, self.stalled_import, 'one-too-many', callers[4])
        self.assertIn('at most 16 in all', e.message)
        self.assertUnchanged(self.store, before)
        self.assertEqual(len(self.root.manager('ListJobs')), 16)

        self.cancel_all(jobs)
        self.assertEqual(temporaries(self.store), [])
        self.assertEqual(self.root.list_images(), {})
        # the cap is free again for the caller it refused
        self.cancel_all([self.stalled_import('after', callers[4])])
        self.assertEqual(temporaries(self.store), [])

    def test_per_user_job_cap_across_connections(self):
        """A user's jobs count together, whichever connection started them:
        four from four connections, and the fifth, from a fifth, is refused
        naming the per-user cap; another user still gets a job."""
        self.set_rules(rule_for(USER, 'import', 'YES') + rule_for(USER2, 'import', 'YES'))
        # A FIFO that the test holds open for writing and never writes: imports from it wait.
        fifo = os.path.join(self.dir, 'never-written')
        os.mkfifo(fifo, 0o666)
        os.chmod(fifo, 0o666)
        held = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        self.addCleanup(os.close, held)

        def user_import(user, name):
            return user_call_with_fd(self, user, fifo, os.O_RDONLY | os.O_NONBLOCK, 'ImportTar',
                                     (0, name, False))
        jobs = [user_import(USER, 'mine-%d' % i) for i in range(4)]  # a process, a connection, each
        e = self.assertDBusError(LIMITS_EXCEEDED, user_import, USER, 'mine-4')
        self.assertIn('per user', e.message)
        self.assertIn('at most 4', e.message)
        jobs.append(user_import(USER2, 'theirs'))
        self.assertEqual(len(self.root.manager('ListJobs')), 5)
        wait_for(lambda: len(temporaries(self.store)) == 5, 'the imports to make their temporaries')
        self.assertFalse([t for t in temporaries(self.store) if t.startswith('.#stamp-mine-4-')])
        self.cancel_all(jobs)
        self.assertEqual(temporaries(self.store), [])


class ImportConfinementTest(StalledImportTestCase):

    def test_helper_is_chrooted_into_the_temporary(self):
        """The import's second layer on its own: whatever slipped past the
        path checks would still land inside the new image, because the
        helper's root is the store's temporary while it extracts."""
        job = self.stalled_import('confined')
        temp = wait_for(lambda: temporaries(self.store), 'the import to make its temporary')[0]
        self.assertTrue(temp.startswith('.#stamp-'), temp)
        pid = self.helper_of('confined')
        temp_stat = os.stat(os.path.join(self.store, temp))

        def root_is_temporary():
            st = os.stat('/proc/%d/root' % pid)
            return (st.st_dev, st.st_ino) == (temp_stat.st_dev, temp_stat.st_ino)
        wait_for(root_is_temporary, "the helper's root to be the temporary %s" % temp, CANCEL_TIMEOUT)
        self.assertTrue(os.readlink('/proc/%d/root' % pid).endswith('/' + temp))

        self.cancel_all([job])
        self.assertNoImageNoTemporary('confined')


class EarlyCloseTest(TarTestCase):

    def test_reader_that_closes_early_fails_the_job_cleanly(self):
        img = make_image(self.store, 'big')
        with open(os.path.join(img, 'srv/random'), 'wb') as f:
            f.write(os.urandom(32 << 20))
        for fmt in ('uncompressed', 'zstd'):
            with self.subTest(format=fmt):
                path = os.path.join(self.dir, 'part.' + fmt)
                job, reader = self.export_to_pipe('big', fmt, path, stop_after=64 << 10)
                self.assertJobFailed(self.jobs.wait(job), 'reader closed the stream')
                reader.join()
                self.assertEqual(temporaries(self.store), [])
        self.assertTrue(self.daemon.running())
        self.assertEqual(sorted(self.root.list_images()), ['big'])

    def test_full_file_system_under_the_archive(self):
        """Into a regular file the archive is written by a thread of its own:
        its failure still fails the job, named, with nothing left behind."""
        img = make_image(self.store, 'big')
        with open(os.path.join(img, 'srv/random'), 'wb') as f:
            f.write(os.urandom(8 << 20))
        small = os.path.join(self.dir, 'small')
        os.mkdir(small)
        run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'stamp-small', small])
        self.addCleanup(run, ['umount', small])
        for fmt in ('uncompressed', 'zstd'):
            with self.subTest(format=fmt):
                path = os.path.join(small, 'big.' + fmt)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    job = call_with_fd(self.root, 'ExportTar', ('big', 0, fmt), fd)
                finally:
                    os.close(fd)
                self.assertJobFailed(self.jobs.wait(job), 'No space left where the archive is written')
                self.assertEqual(self.jobs.error_name(job), STAMP_ERROR + 'NoSpace')
                self.assertEqual(temporaries(self.store), [])
                os.unlink(path)
        self.assertTrue(self.daemon.running())
        self.assertEqual(sorted(self.root.list_images()), ['big'])


class ArgumentsTest(TarTestCase):

    def setUp(self):
        super().setUp()
        make_image(self.store, 'base')
        self.before = store_state(self.store)

    def tearDown(self):
        self.assertEqual(store_state(self.store), self.before)
        super().tearDown()

    def test_unknown_formats(self):
        path = os.path.join(self.dir, 'out')
        for fmt in ('lz4', 'ZSTD', 'zip', 'tar', 'zstd ', '../x'):
            with self.subTest(format=fmt):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    e = self.assertDBusError(UNSUPPORTED_FORMAT, call_with_fd, self.root,
                                             'ExportTar', ('base', 0, fmt), fd)
                finally:
                    os.close(fd)
                self.assertIn(fmt.strip() or fmt, e.message)
        self.assertEqual(os.path.getsize(path), 0)

    def test_export_fd_kinds(self):
        r, w = os.pipe()
        dirfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        pathfd = os.open(os.path.join(self.dir, 'o-path'), os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(pathfd)
        pathfd = os.open(os.path.join(self.dir, 'o-path'), os.O_PATH)
        rofile = os.open(os.path.join(self.dir, 'o-path'), os.O_RDONLY)
        devnull = os.open('/dev/null', os.O_WRONLY)
        try:
            for label, fd, phrase in [('pipe read end', r, 'read-only'),
                                      ('directory', dirfd, 'directory'),
                                      ('O_PATH', pathfd, 'O_PATH'),
                                      ('read-only file', rofile, 'read-only'),
                                      ('character device', devnull, 'character device')]:
                with self.subTest(fd=label):
                    e = self.assertDBusError(INVALID_ARGS, call_with_fd, self.root, 'ExportTar',
                                             ('base', 0, 'zstd'), fd)
                    self.assertIn(phrase, e.message)
        finally:
            for fd in (r, w, dirfd, pathfd, rofile, devnull):
                os.close(fd)

    def test_import_fd_kinds(self):
        r, w = os.pipe()
        dirfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        wofile = os.open(os.path.join(self.dir, 'wo'), os.O_WRONLY | os.O_CREAT, 0o600)
        pathfd = os.open(os.path.join(self.dir, 'wo'), os.O_PATH)
        try:
            for label, fd, phrase in [('pipe write end', w, 'write-only'),
                                      ('directory', dirfd, 'directory'),
                                      ('O_PATH', pathfd, 'O_PATH'),
                                      ('write-only file', wofile, 'write-only')]:
                with self.subTest(fd=label):
                    e = self.assertDBusError(INVALID_ARGS, call_with_fd, self.root, 'ImportTar',
                                             (0, 'new', False), fd)
                    self.assertIn(phrase, e.message)
        finally:
            for fd in (r, w, dirfd, wofile, pathfd):
                os.close(fd)

    def test_names(self):
        path = os.path.join(self.dir, 'out')
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self.assertDBusError(NO_SUCH_IMAGE, call_with_fd, self.root, 'ExportTar',
                                 ('nope', 0, 'zstd'), fd)
            self.assertDBusError(STAMP_ERROR + 'InvalidName', call_with_fd, self.root, 'ExportTar',
                                 ('../base', 0, 'zstd'), fd)
            self.assertDBusError(IMAGE_EXISTS, call_with_fd, self.root, 'ImportTar',
                                 (0, 'base', False), fd)
            self.assertDBusError(STAMP_ERROR + 'InvalidName', call_with_fd, self.root, 'ImportTar',
                                 (0, '.hidden', False), fd)
            self.assertDBusError(STAMP_ERROR + 'InvalidName', call_with_fd, self.root, 'ImportTar',
                                 (0, '', False), fd)
        finally:
            os.close(fd)


class LayoutTest(TarTestCase):

    def test_one_directory_layout_is_brought_to_the_top(self):
        root_dir = ti('rootfs/', tarfile.DIRTYPE, mode=0o711)
        root_dir.uid, root_dir.gid = 7, 8
        data = tar_bytes([(root_dir, None)] + os_tree_members('rootfs/') + [
            (ti('rootfs/rootfs'), b'a file named like its directory\n'),
            (ti('rootfs/usr/bin/', tarfile.DIRTYPE, mode=0o755), None),
            (ti('rootfs/usr/bin/tool', mode=0o755), b'#!/bin/sh\n'),
        ])
        self.assertJobDone(self.import_bytes(data, 'cloud'))
        img = os.path.join(self.store, 'cloud')
        self.assertEqual(sorted(os.listdir(img)), ['etc', 'rootfs', 'usr'])
        with open(os.path.join(img, 'rootfs')) as f:
            self.assertEqual(f.read(), 'a file named like its directory\n')
        self.assertTrue(os.path.isfile(os.path.join(img, 'usr/bin/tool')))
        s = os.stat(img)
        self.assertEqual((stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid), (0o711, 7, 8))

    def test_tree_at_the_top_with_dot_slash_names(self):
        data = tar_bytes([(ti('./', tarfile.DIRTYPE, mode=0o755), None)] +
                         os_tree_members('./') +
                         [(ti('./srv/', tarfile.DIRTYPE), None), (ti('./srv/x'), b'x\n'),
                          (ti('./srv/ünïcödé ☃'), b'utf-8 in a pax header\n')])
        self.assertJobDone(self.import_bytes(data, 'flat'))
        self.assertEqual(sorted(os.listdir(os.path.join(self.store, 'flat'))),
                         ['etc', 'srv', 'usr'])
        self.assertEqual(sorted(os.listdir(os.path.join(self.store, 'flat/srv'))),
                         ['x', 'ünïcödé ☃'])

    def test_one_directory_without_an_os_tree_stays(self):
        data = tar_bytes([(ti('data/', tarfile.DIRTYPE), None), (ti('data/file'), b'1\n')])
        self.assertJobDone(self.import_bytes(data, 'data'))
        self.assertEqual(os.listdir(os.path.join(self.store, 'data')), ['data'])


class HostileTest(TarTestCase):
    """Every archive here must be refused: job failed, no image, no
    temporary, and the canaries outside the store untouched."""

    def setUp(self):
        super().setUp()
        self.canary_dir = os.path.join(self.dir, 'canary')
        os.mkdir(self.canary_dir)
        self.canary = os.path.join(self.canary_dir, 'file')
        with open(self.canary, 'w') as f:
            f.write('canary\n')
        # a canary inside the store's file system too: on a plain store a
        # hard link there would work, and the store's top is one directory
        self.store_canary = os.path.join(self.store, 'canary')
        with open(self.store_canary, 'w') as f:
            f.write('store canary\n')

    def canaries(self):
        state = {'test dir': sorted(os.listdir(self.dir))}
        for name in ['.'] + sorted(os.listdir(self.canary_dir)):
            s = os.lstat(os.path.join(self.canary_dir, name))
            state[name] = (s.st_ino, s.st_mode, s.st_nlink, s.st_mtime_ns, s.st_size)
        s = os.lstat(self.store_canary)
        state['store'] = (s.st_ino, s.st_nlink, s.st_mtime_ns, s.st_size)
        with open(self.canary) as f:
            state['content'] = f.read()
        with open(self.store_canary) as f:
            state['store content'] = f.read()
        return state

    def hostile_archives(self):
        c = self.canary.lstrip('/')
        depth = '../' * 20
        rel_canary = depth + c
        rel_store_canary = '../canary'
        return [
            ('absolute path', [(ti('/' + c + '-abs'), b'x')], 'absolute path'),
            ('absolute path after good entries',
             os_tree_members() + [(ti(self.canary_dir + '/new'), b'x')], 'absolute path'),
            ('dot-dot', [(ti(rel_canary + '-dotdot'), b'x')], '".." component'),
            ('dot-dot inside', os_tree_members() + [(ti('srv/../../x'), b'x')], '".." component'),
            ('dot-dot directory', [(ti(depth + self.canary_dir.lstrip('/') + '/d',
                                       tarfile.DIRTYPE), None)], '".." component'),
            ('symlink out, relative',
             [(ti('evil', tarfile.SYMTYPE, linkname=depth + self.canary_dir.lstrip('/')), None)],
             'leads out of the image'),
            ('write through an absolute symlink',
             os_tree_members() + [(ti('evil', tarfile.SYMTYPE, linkname=self.canary_dir), None),
                                  (ti('evil/through'), b'x')], 'symlink'),
            ('overwrite through an absolute symlink',
             os_tree_members() + [(ti('evil', tarfile.SYMTYPE, linkname=self.canary_dir), None),
                                  (ti('evil/file'), b'overwritten\n')], 'symlink'),
            ('write through a symlink inside',
             os_tree_members() + [(ti('etc2', tarfile.SYMTYPE, linkname='etc'), None),
                                  (ti('etc2/passwd'), b'x')], 'symlink'),
            ('directory through a symlink',
             os_tree_members() + [(ti('evil', tarfile.SYMTYPE, linkname='/'), None),
                                  (ti('evil/tmp/x/', tarfile.DIRTYPE), None)], 'symlink'),
            ('hard link, absolute', [(ti('h', tarfile.LNKTYPE, linkname=self.canary), None)],
             'absolute path'),
            ('hard link, dot-dot', [(ti('h', tarfile.LNKTYPE, linkname=rel_canary), None)],
             '".." component'),
            ('hard link to the store', os_tree_members() +
             [(ti('h', tarfile.LNKTYPE, linkname=rel_store_canary), None)], '".." component'),
            # relative, so that without the checks they would resolve on the
            # store's own mount, where a hard link can be made
            ('hard link through a symlink',
             os_tree_members() + [(ti('up', tarfile.SYMTYPE, linkname='..'), None),
                                  (ti('h', tarfile.LNKTYPE, linkname='up/canary'), None)],
             'leads out of the image'),
            ('write through a relative symlink out',
             os_tree_members() + [(ti('up', tarfile.SYMTYPE, linkname='..'), None),
                                  (ti('up/escaped'), b'x')], 'leads out of the image'),
        ]

    def assertRefused(self, label, data, phrase):
        name = 'hostile%d' % len(os.listdir(os.path.join(self.dir, 'inputs')))
        before = self.canaries()
        store_before = store_state(self.store)
        del store_before['.']  # the temporary came and went
        with self.subTest(archive=label):
            outcome = self.import_bytes(data, name)
            self.assertEqual(self.canaries(), before, 'something outside the store changed')
            store_after = store_state(self.store)
            store_after.pop(name, None)
            del store_after['.']
            self.assertEqual(store_after, store_before, 'the store changed')
            self.assertJobFailed(outcome, phrase)
            self.assertNoImageNoTemporary(name)

    def test_hostile_archives_are_refused(self):
        for label, members, phrase in self.hostile_archives():
            self.assertRefused(label, tar_bytes(members), phrase)

    def test_hostile_archives_compressed(self):
        for label, members, phrase in self.hostile_archives()[:6]:
            data = tar_bytes(members)
            for tool in (['zstd', '-q', '-c'], ['xz', '-c'], ['gzip', '-c']):
                packed = subprocess.run(tool, input=data, capture_output=True, check=True).stdout
                self.assertRefused('%s (%s)' % (label, tool[0]), packed, phrase)

    def test_garbage_and_truncated_streams(self):
        good = tar_bytes(os_tree_members() + [(ti('srv/random'), os.urandom(200_000)),
                                              (ti('srv/last'), b'last\n')])
        gz = subprocess.run(['gzip', '-c'], input=good, capture_output=True, check=True).stdout
        zst = subprocess.run(['zstd', '-q', '-c'], input=good, capture_output=True,
                             check=True).stdout
        # where the tar stops without its end-of-archive blocks: after srv/last's data
        boundary = len(good) - 1024 - (len(good) - 1024) % 512
        while good[boundary - 512:boundary] == bytes(512):
            boundary -= 512
        cases = [
            ('garbage', os.urandom(100_000), 'not a tar archive'),
            ('text', b'hello world\n' * 1000, 'not a tar archive'),
            ('empty', b'', 'not a tar archive'),
            ('compressed garbage',
             subprocess.run(['gzip', '-c'], input=os.urandom(50_000), capture_output=True,
                            check=True).stdout, 'not a tar archive'),
            ('cut in the middle of a file', good[:100_000], 'damaged'),
            ('cut in a header', good[:512 + 100], 'damaged'),
            ('cut between entries', good[:boundary], 'ends early'),
            ('gzip cut short', gz[:len(gz) // 2], 'damaged'),
            ('zstd cut short', zst[:len(zst) // 2], 'damaged'),
            ('zstd cut near the end', zst[:-8], 'damaged'),
        ]
        for label, data, phrase in cases:
            self.assertRefused(label, data, phrase)
        # the same archive, whole, is fine
        self.assertJobDone(self.import_bytes(good, 'whole'))

    def test_truncated_stream_through_a_pipe(self):
        good = tar_bytes(os_tree_members() + [(ti('srv/random'), os.urandom(1 << 20))])
        r, w = os.pipe2(os.O_CLOEXEC)

        def feed():
            os.write(w, good[:300_000])
            os.close(w)
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        try:
            job = call_with_fd(self.root, 'ImportTar', (0, 'piped', False), r)
        finally:
            os.close(r)
        self.assertJobFailed(self.jobs.wait(job), 'damaged')
        t.join()
        self.assertNoImageNoTemporary('piped')


class HostilePlainStoreTest(HostileTest):
    """The same on a store without btrfs, where hard links into the store's
    own file system could work."""

    store_kind = 'plain'
    test_garbage_and_truncated_streams = None  # nothing there depends on the store
    test_hostile_archives_compressed = None


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
