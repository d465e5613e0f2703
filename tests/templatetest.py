# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the CreateTemplate tests share: the package tarball, a watcher for
job signals, and checks that nothing of a job is left behind.

The package tarball (`debootstrap --make-tarball` of bookworm minbase with
the bootable packages, for the host's architecture) is made once, over the
network (about a minute), and kept in $STAMP_TEST_CACHE (default
/var/tmp/stamp-test-cache), so later runs are offline. Delete it there to
have it made anew from the current archive.
"""

import os
import shutil
import tempfile
import unittest

import stamptest
from stamptest import BUS_NAME, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, Gio, GLib, fd_list, run

CACHE = os.environ.get('STAMP_TEST_CACHE', '/var/tmp/stamp-test-cache')
SUITE = 'bookworm'
MIRROR = 'http://deb.debian.org/debian'
BOOTABLE = ['systemd-sysv', 'dbus', 'libpam-systemd']
JOB_PREFIX = '/io/stamp/Stamp1/job/'
INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
LIMITS_EXCEEDED = 'org.freedesktop.DBus.Error.LimitsExceeded'
JOB_TIMEOUT = float(os.environ.get('STAMPTEST_JOB_TIMEOUT', '900'))

LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG = 3, 4, 6, 7


def host_arch():
    return run(['dpkg', '--print-architecture']).stdout.strip()


def package_tarball():
    """The path of the cached package tarball, made now if missing."""
    path = os.path.join(CACHE, '%s-minbase-%s-bootable.tgz' % (SUITE, host_arch()))
    if os.path.exists(path):
        return path
    os.makedirs(CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix='.make-tarball.', dir=CACHE)
    tmp = path + '.tmp.%d' % os.getpid()
    stamptest.diag('making the package tarball %s (needs the network, once)' % path)
    try:
        p = run(['debootstrap', '--variant=minbase', '--arch=' + host_arch(),
                 '--include=' + ','.join(BOOTABLE), '--make-tarball=' + tmp, SUITE, work, MIRROR],
                check=False, timeout=JOB_TIMEOUT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if p.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise unittest.SkipTest('no package tarball in %s and debootstrap --make-tarball failed '
                                '(no network?): %s' % (CACHE, (p.stdout + p.stderr)[-500:]))
    os.rename(tmp, path)
    return path


class JobWatcher:
    """Collects the signals of jobs: JobNew, JobRemoved, LogMessage, Progress."""

    def __init__(self, conn):
        self.conn = conn
        self.new = []          # ids
        self.removed = {}      # id -> result
        self.logs = {}         # job path -> [(priority, text)]
        self.progress = {}     # job path -> [values]
        self.images_added = []
        self.subs = [
            conn.signal_subscribe(BUS_NAME, MANAGER_IFACE, 'JobNew', MANAGER_PATH, None,
                                  Gio.DBusSignalFlags.NONE, self._on_job_new),
            conn.signal_subscribe(BUS_NAME, MANAGER_IFACE, 'JobRemoved', MANAGER_PATH, None,
                                  Gio.DBusSignalFlags.NONE, self._on_job_removed),
            conn.signal_subscribe(BUS_NAME, MANAGER_IFACE, 'ImageAdded', MANAGER_PATH, None,
                                  Gio.DBusSignalFlags.NONE, self._on_image_added),
            conn.signal_subscribe(BUS_NAME, JOB_IFACE, 'LogMessage', None, None,
                                  Gio.DBusSignalFlags.NONE, self._on_log),
            conn.signal_subscribe(BUS_NAME, 'org.freedesktop.DBus.Properties', 'PropertiesChanged',
                                  None, JOB_IFACE, Gio.DBusSignalFlags.NONE, self._on_props),
        ]
        # a round trip makes sure the match rules are in place
        conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                       'GetId', None, None, Gio.DBusCallFlags.NONE, 5000, None)

    def close(self):
        for s in self.subs:
            self.conn.signal_unsubscribe(s)
        self.subs = []

    def _on_job_new(self, conn, sender, path, iface, member, params):
        self.new.append(params.unpack()[0])

    def _on_job_removed(self, conn, sender, path, iface, member, params):
        job_id, _, result = params.unpack()
        self.removed[job_id] = result

    def _on_image_added(self, conn, sender, path, iface, member, params):
        self.images_added.append(params.unpack()[0])

    def _on_log(self, conn, sender, path, iface, member, params):
        self.logs.setdefault(path, []).append(tuple(params.unpack()))

    def _on_props(self, conn, sender, path, iface, member, params):
        _, changed, _ = params.unpack()
        if 'Progress' in changed:
            self.progress.setdefault(path, []).append(changed['Progress'])

    def wait(self, job_id, timeout=JOB_TIMEOUT):
        """The job's result, once JobRemoved came."""
        stamptest.spin_until(lambda: job_id in self.removed, 'job %d to end' % job_id, timeout)
        return self.removed[job_id]

    def wait_log(self, path, pred, what, timeout=JOB_TIMEOUT):
        def seen():
            return any(pred(p, t) for p, t in self.logs.get(path, []))
        stamptest.spin_until(seen, what, timeout)

    def spin(self):
        """Deliver what signals have come."""
        ctx = GLib.MainContext.default()
        while ctx.iteration(False):
            pass

    def log_text(self, path, max_priority=LOG_DEBUG):
        return '\n'.join(t for p, t in self.logs.get(path, []) if p <= max_priority)


def process_table():
    """{pid: (ppid, cmdline)} of every process we can see."""
    table = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            with open('/proc/%s/cmdline' % d, 'rb') as f:
                cmdline = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
        except (OSError, ValueError, IndexError):
            continue
        table[int(d)] = (ppid, cmdline)
    return table


def descendants(pid):
    """(pid, cmdline) of every process below pid."""
    table = process_table()
    children = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append((p, table[p][1]))
        todo.extend(children.get(p, []))
    return found


def processes_mentioning(text):
    return [(p, c) for p, (_, c) in process_table().items() if text in c and p != os.getpid()]


def note_package_code(daemon_pid, seen, also=None):
    """Notes in @seen (pid → (cmdline, [uids, gids], uid_map)) how the host sees each process below
    @daemon_pid that runs package code: dpkg installing, unpacking or configuring (the host's dpkg
    asked for its architecture runs none), and any whose command line holds @also. True once a
    dpkg was seen."""
    for pid, cmdline in descendants(daemon_pid):
        words = cmdline.split()
        if not words:
            continue
        is_dpkg = os.path.basename(words[0]) == 'dpkg' and {'--install', '--unpack', '--configure'} & set(words)
        if not is_dpkg and not (also and also in cmdline):
            continue
        try:
            with open('/proc/%d/status' % pid) as f:
                ids = [line.split()[1:] for line in f if line.startswith(('Uid:', 'Gid:'))]
            with open('/proc/%d/uid_map' % pid) as f:
                uid_map = f.read().split()
        except OSError:
            continue
        seen[pid] = (cmdline, ids, uid_map)
    return any(os.path.basename(c.split()[0]) == 'dpkg' for c, _, _ in seen.values())


class TemplateTestCase(stamptest.TestCase):
    """A daemon on its own pool (or a store of store_kind), its package
    cache in the test's directory, and a watcher of its jobs."""

    store_kind = 'pool'

    def setUp(self):
        super().setUp()
        self.cache_dir = os.path.join(self.dir, 'cache')
        old = os.environ.get('STAMP_CACHE_DIR')
        os.environ['STAMP_CACHE_DIR'] = self.cache_dir
        self.addCleanup(self._restore_env, old)
        self.jobs = JobWatcher(self.env.conn)
        self.addCleanup(self.jobs.close)
        self.daemon = self.start_daemon(kind=self.store_kind)
        self.store = self.daemon.store
        self.open_fds = []
        self.addCleanup(self._close_fds)

    @staticmethod
    def _restore_env(old):
        if old is None:
            os.environ.pop('STAMP_CACHE_DIR', None)
        else:
            os.environ['STAMP_CACHE_DIR'] = old

    def _close_fds(self):
        for fd in self.open_fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def keep_fd(self, fd):
        self.open_fds.append(fd)
        return fd

    def path(self, name):
        return os.path.join(self.store, name)

    def create(self, name, suite=SUITE, fd=None, caller=None, **options):
        """CreateTemplate; with fd, that fd is passed as package_tarball.
        Returns (job id, job path)."""
        caller = caller or self.root
        opts = {}
        for key, value in options.items():
            opts[key] = value if isinstance(value, GLib.Variant) else {
                str: lambda v: GLib.Variant('s', v),
                bool: lambda v: GLib.Variant('b', v),
                list: lambda v: GLib.Variant('as', v),
            }[type(value)](value)
        kw = {}
        if fd is not None:
            opts['package_tarball'] = GLib.Variant('h', 0)
            kw['fd_list'] = fd_list(fd)
        return caller.manager('CreateTemplate', name, suite, opts, timeout=120, **kw)

    def create_offline(self, name, **options):
        fd = self.keep_fd(os.open(package_tarball(), os.O_RDONLY | os.O_CLOEXEC))
        return self.create(name, fd=fd, **options)

    def create_stalled(self, name, **options):
        """A job that stays in its first step: its tarball comes from a pipe
        that nobody writes to. Returns (id, path, write end)."""
        r, w = os.pipe()
        self.keep_fd(w)
        try:
            job_id, path = self.create(name, fd=r, **options)
        finally:
            os.close(r)
        return job_id, path, w

    def temporaries(self):
        return [n for n in os.listdir(self.store) if n.startswith('.#')]

    def assertJailed(self, seen):
        """Each process of note_package_code() held no host root: as the host sees it, no uid or gid
        below 65536, and a user namespace mapping 0…65535 to a range that is not the host's 0."""
        self.assertTrue(seen)
        for pid, (cmdline, ids, uid_map) in seen.items():
            with self.subTest(cmdline=cmdline):
                for row in ids:
                    for i in row:
                        self.assertGreaterEqual(int(i), 65536, ids)
                self.assertEqual((uid_map[0], uid_map[2]), ('0', '65536'))
                self.assertNotEqual(uid_map[1], '0')

    def assertZeroBased(self, tree):
        """Every file of @tree is owned by ids of an image (below 65536), as its scripts meant them."""
        outside = []
        for top, dirs, files in os.walk(tree):
            for name in dirs + files:
                st = os.lstat(os.path.join(top, name))
                if st.st_uid >= 65536 or st.st_gid >= 65536:
                    outside.append((os.path.join(top, name), st.st_uid, st.st_gid))
        self.assertEqual(outside[:10], [])

    def assertNothingLeft(self, name, daemon=None):
        """No image, no temporary, no mount below the store, no process of
        the job: what a failed or canceled job must leave."""
        daemon = daemon or self.daemon
        self.assertFalse(os.path.lexists(self.path(name)), '%s exists' % name)
        self.assertEqual(self.temporaries(), [], 'temporaries left in the store')
        self.assertEqual(stamptest.mounts_under(self.store), [self.store],
                         'mounts left below the store')
        stamptest.wait_for(lambda: not descendants(daemon.pid), 'the job processes to go')
        self.assertEqual([(p, c) for p, c in processes_mentioning(self.store) if p != daemon.pid], [],
                         'processes still working in the store')
        self.assertNotIn(name, self.root.list_images())
