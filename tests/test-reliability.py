#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Crash safety and full disk.

Crash safety: stampd is killed with SIGKILL at a random moment while it
works — a copy clone, an import, an export, a pull, a template build — and
started again on the same store, TRIALS times per kind of work. After each
restart: no image is listed that was not complete (a listed new image is
compared with its source tree), no hidden temporary is left, every image
that existed before has the same tree checksum, and the dead daemon's
workers did not outlive it.

Full disk: work that cannot fit fails with NoSpace (a job: failed, its log
says so), nothing half-made remains, the daemon keeps serving, and the
images that were there are intact.

Environment: STAMP_CRASH_TRIALS (default 10), STAMP_CRASH_SEED (default:
random, printed), STAMP_RELIABILITY_SLOW=1 (set by test-reliability-slow.py:
the CreateTemplate trials), STAMP_CRASH_BIG=1 (a tree twice as big).

Each kind of work is a CrashOperation: a new kind (a job type that lands
later) is one more subclass in OPERATIONS; one whose method still answers
NotSupported skips itself."""

import os
import random
import signal
import time
import unittest

import stamptest
from stamptest import (store_names, MANAGER_IFACE, MANAGER_PATH, GLib, has_immutable_flag, make_btrfs_store,
                       make_image, make_tmpfs_store)
from reliabilitytest import (NO_SPACE, ThrottledServer, make_tree, settled_resources, skip_if_not_supported,
                             spin, temporaries, tree_digest, wait_store_released, write_sha256sums)
from stamptest import JobWatch, fd_list

SLOW = os.environ.get('STAMP_RELIABILITY_SLOW') == '1'
TRIALS = int(os.environ.get('STAMP_CRASH_TRIALS', '10'))
FILES = 16000 if os.environ.get('STAMP_CRASH_BIG') == '1' else 8000  # x 32 KiB: ~2 s resp. ~1 s to copy here
TEMPLATE_WINDOW = float(os.environ.get('STAMP_CRASH_TEMPLATE_WINDOW', '45'))


# ------------------------------------------------------------ operations

class CrashOperation:
    """One kind of work to interrupt. Subclasses say how to prepare it, start
    it, tell whether it finished, and check what it made."""

    store_kind = 'pool'
    makes_image = True
    window = None  # seconds to pick the kill moment in; None: measured by a full run first

    def __init__(self, test):
        self.t = test

    def setup(self, store):
        """Make the inputs (and the images in the store it works on)."""

    def start(self, trial):
        """Start the work; returns a token for finished(). NotSupported skips."""
        raise NotImplementedError

    def finished(self, token):
        raise NotImplementedError

    def made_name(self, trial):
        return '%s-%s' % (self.prefix, trial if trial >= 0 else 'calibration')

    def check_made(self, name):
        """A listed new image must be complete."""

    def teardown(self):
        pass


class JobOperation(CrashOperation):
    """Work that is a job: the method returns (id, path) at once."""

    def finished(self, token):
        return self.t.jobs.removed.get(token[0]) == 'done'

    def call_job(self, method, *args, fd=None):
        kw = {'fd_list': fd_list(fd)} if fd is not None else {}
        return skip_if_not_supported(
            lambda: self.t.root.call(MANAGER_PATH, MANAGER_IFACE, method, *args, **kw), method)


class CloneCopy(CrashOperation):
    """CloneImage on a store that is no btrfs (--no-pool): a full copy, made
    under a hidden name and renamed into place; every other trial read-only
    (then the immutable flag is set before the rename)."""

    store_kind = 'plain'
    prefix = 'copy'

    def setup(self, store):
        self.base = make_tree(os.path.join(store, 'base'), files=FILES)
        self.base_digest = tree_digest(self.base)

    def start(self, trial):
        return self.t.root.call_async(MANAGER_PATH, MANAGER_IFACE, 'CloneImage', 'base',
                                      self.made_name(trial), trial % 2 == 1)

    def finished(self, pending):
        return pending.done and pending.error is None

    def check_made(self, name):
        path = os.path.join(self.t.store, name)
        self.t.assertEqual(tree_digest(path), self.base_digest, '%s is listed but incomplete' % name)
        if name.endswith(('1', '3', '5', '7', '9')):  # odd trials are read-only clones
            self.t.assertTrue(has_immutable_flag(path), '%s should be read-only' % name)


class ImportTar(JobOperation):
    """ImportTar of an uncompressed tar of the tree, into the daemon's pool."""

    prefix = 'imported'

    def setup(self, store):
        src = make_tree(os.path.join(self.t.dir, 'src'), files=FILES)
        self.src_digest = tree_digest(src)
        self.tar = os.path.join(self.t.dir, 'src.tar')
        stamptest.run(['tar', '--numeric-owner', '-C', src, '-cf', self.tar, '.'])

    def start(self, trial):
        fd = os.open(self.tar, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return self.call_job('ImportTar', 0, self.made_name(trial), False, fd=fd)
        finally:
            os.close(fd)

    def check_made(self, name):
        self.t.assertEqual(tree_digest(os.path.join(self.t.store, name)), self.src_digest,
                           '%s is listed but incomplete' % name)


class ExportTar(JobOperation):
    """ExportTar of a writable image: the daemon exports a read-only snapshot
    it takes under a hidden name, which must not survive a crash."""

    makes_image = False

    def setup(self, store):
        base = make_image(store, 'base', populate=False)
        make_tree(base, files=FILES)

    def start(self, trial):
        out = os.path.join(self.t.dir, 'export-%d.tar.zst' % trial)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            return self.call_job('ExportTar', 'base', 0, 'zstd', fd=fd)
        finally:
            os.close(fd)


class PullTar(JobOperation):
    """PullTar from a local, throttled HTTP server, checked against SHA256SUMS."""

    prefix = 'pulled'

    def setup(self, store):
        src = make_tree(os.path.join(self.t.dir, 'pull-src'), files=FILES // 2)
        self.src_digest = tree_digest(src)
        www = os.path.join(self.t.dir, 'www')
        os.makedirs(www)
        stamptest.run(['tar', '--numeric-owner', '-C', src, '-cf', os.path.join(www, 'image.tar'), '.'])
        write_sha256sums(www)
        self.server = ThrottledServer(www, chunk=256 << 10, delay=0.01)

    def start(self, trial):
        return self.call_job('PullTar', self.server.url('image.tar'), self.made_name(trial), {})

    def check_made(self, name):
        self.t.assertEqual(tree_digest(os.path.join(self.t.store, name)), self.src_digest,
                           '%s is listed but incomplete' % name)

    def teardown(self):
        self.server.stop()


class CreateTemplate(JobOperation):
    """CreateTemplate from the cached package tarball (see templatetest.py).
    A full build takes minutes, so the kill moment is drawn from the first
    TEMPLATE_WINDOW seconds: mid-debootstrap, mid-dpkg, mid-clean-up."""

    prefix = 'tmpl'
    window = TEMPLATE_WINDOW

    def setup(self, store):
        import templatetest
        self.tarball = templatetest.package_tarball()  # skips without network or cache

    def start(self, trial):
        fd = os.open(self.tarball, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return self.call_job('CreateTemplate', self.made_name(trial), 'bookworm',
                                 {'package_tarball': GLib.Variant('h', 0)}, fd=fd)
        finally:
            os.close(fd)

    def check_made(self, name):
        path = os.path.join(self.t.store, name)
        self.t.assertTrue(os.path.exists(os.path.join(path, 'usr/lib/os-release')),
                          '%s is listed but has no os-release' % name)
        self.t.assertTrue(self.t.root.image_props(name)['ReadOnly'], '%s is listed but writable' % name)


# ------------------------------------------------------------------ tests

class CrashTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)
        seed = os.environ.get('STAMP_CRASH_SEED')
        self.seed = int(seed) if seed else random.randrange(1 << 30)
        self.rnd = random.Random(self.seed)

    def start(self, store, kind):
        args = ['--no-pool'] if kind == 'plain' else []
        return self.start_daemon(store=store, args=args)

    def run_trials(self, op_class, trials=TRIALS):
        stamptest.diag('%s: %d trials, STAMP_CRASH_SEED=%d' % (op_class.__name__, trials, self.seed))
        op = op_class(self)
        self.addCleanup(op.teardown)
        store = self.make_store(op.store_kind)
        if op.store_kind == 'pool':
            # let the daemon make its pool first, then put the inputs there
            daemon = self.start(store, op.store_kind)
            op.setup(store)
        else:
            op.setup(store)
            daemon = self.start(store, op.store_kind)
        self.store = store

        window = op.window
        if window is None:  # one full run, to know how long the work takes
            t0 = time.monotonic()
            token = op.start(-1)
            stamptest.spin_until(lambda: op.finished(token) or self._ended_badly(token),
                                 '%s to finish once' % op_class.__name__, stamptest.TIMEOUT * 5)
            self.assertTrue(op.finished(token), '%s failed without a crash' % op_class.__name__)
            window = (time.monotonic() - t0) * 1.1
            if op.makes_image:
                op.check_made(op.made_name(-1))
                self.root.manager('RemoveImage', op.made_name(-1))
            spin(0.2)

        outcomes = []
        for trial in range(trials):
            before = {n: tree_digest(os.path.join(store, n)) for n in self.root.list_images()}
            self.jobs.removed.clear()  # job ids start at 1 again in each new daemon
            token = op.start(trial)
            delay = self.rnd.uniform(0, window)
            spin(delay)
            done = op.finished(token)
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.proc.wait()
            wait_store_released(self, store)
            daemon = self.start(store, op.store_kind)

            listed = self.root.list_images()
            made = op.made_name(trial) if op.makes_image else None
            with self.subTest(trial=trial, killed_after='%.2fs' % delay):
                self.assertEqual(temporaries(store), [], 'temporaries survived the restart')
                self.assertEqual(stamptest.mounts_under(store), [store] if op.store_kind == 'pool' else [],
                                 'mounts left below the store')
                unexpected = set(listed) - set(before) - ({made} if made else set())
                self.assertEqual(unexpected, set(), 'images listed that nobody made')
                for name, digest in before.items():
                    self.assertIn(name, listed, 'image %s vanished' % name)
                    self.assertEqual(tree_digest(os.path.join(store, name)), digest,
                                     'image %s changed' % name)
                if done and made:
                    self.assertIn(made, listed, 'the work had finished, but its image is gone')
                if made in listed:
                    op.check_made(made)
                    self.root.manager('RemoveImage', made)
            outcomes.append('%.2fs:%s' % (delay, 'made' if made in listed else 'done' if done else '-'))
        stamptest.diag('%s: kill moments and outcomes (window %.2fs): %s' % (
            op_class.__name__, window, ' '.join(outcomes)))
        self.assertTrue(daemon.running())

    def _ended_badly(self, token):
        if isinstance(token, stamptest.PendingCall):
            if token.error:
                raise token.error
            return False
        result = self.jobs.removed.get(token[0])
        if result not in (None, 'done'):
            raise AssertionError('job %d ended %s: %s' % (token[0], result,
                                                          '\n'.join(self.jobs.logs.get(token[1], []))))
        return False

    def test_clone_copy(self):
        self.run_trials(CloneCopy)

    def test_import_tar(self):
        self.run_trials(ImportTar)

    def test_export_tar(self):
        self.run_trials(ExportTar)

    def test_pull_tar(self):
        self.run_trials(PullTar)

    @unittest.skipUnless(SLOW, 'a template build takes minutes: in the slow suite')
    def test_create_template(self):
        self.run_trials(CreateTemplate)


class ShutdownTest(stamptest.TestCase):
    """SIGTERM while short acts (clones, removals) run in stampd's worker threads: the daemon
    waits for the running ones, drops the queued ones unstarted, answers every caller, exits 0,
    and leaves no temporary behind, before any restart cleans up."""

    COPIES = 6
    REMOVALS = 2  # with the copies, more than the 4 workers: some wait in the queue

    def test_sigterm_while_clones_and_removals_run(self):
        store = self.make_store('plain')
        base = make_tree(os.path.join(store, 'base'), files=FILES)
        digest = tree_digest(base)
        for i in range(self.REMOVALS):
            make_tree(os.path.join(store, 'old-%d' % i), files=FILES // 4)
        daemon = self.start_daemon(store=store, args=['--no-pool'])

        pending = {}
        for i in range(self.COPIES):
            pending['copy-%d' % i] = self.root.call_async(MANAGER_PATH, MANAGER_IFACE, 'CloneImage',
                                                          'base', 'copy-%d' % i, False)
        for i in range(self.REMOVALS):
            pending['old-%d' % i] = self.root.call_async(MANAGER_PATH, MANAGER_IFACE, 'RemoveImage',
                                                         'old-%d' % i)
        stamptest.spin_until(lambda: temporaries(store), 'a copy to be under way')
        os.kill(daemon.pid, signal.SIGTERM)
        stamptest.spin_until(lambda: all(p.done for p in pending.values()), 'every call to be answered')
        self.assertEqual(daemon.proc.wait(timeout=stamptest.TIMEOUT), 0, daemon.log())
        self.assertNotIn('AddressSanitizer', daemon.log())

        # every caller was answered by stampd itself, not by the bus for a vanished daemon
        for name, p in sorted(pending.items()):
            with self.subTest(call=name):
                if p.error:
                    self.assertFalse(p.error.name.startswith('local:'), str(p.error))
                    self.assertNotIn(p.error.name, ('org.freedesktop.DBus.Error.NoReply',
                                                    'org.freedesktop.DBus.Error.Disconnected'))
                    stamptest.diag('%s: %s: %s' % (name, p.error.name, p.error.message))
        self.assertEqual(temporaries(store), [], 'the stopped daemon left temporaries')
        copies = [n for n in pending if n.startswith('copy-')]
        made = {n for n in copies if pending[n].error is None}
        self.assertTrue(made, 'no copy that was under way finished')
        for name in copies:
            with self.subTest(image=name):
                if name in made:
                    self.assertEqual(tree_digest(os.path.join(store, name)), digest)
                else:
                    self.assertFalse(os.path.lexists(os.path.join(store, name)))
        removed = {n for n in pending if n.startswith('old-') and pending[n].error is None}
        for i in range(self.REMOVALS):
            name = 'old-%d' % i
            self.assertEqual(os.path.lexists(os.path.join(store, name)), name not in removed)

        # the next start finds exactly what the answers said
        self.start_daemon(store=store, args=['--no-pool'])
        expected = {'base'} | made | {'old-%d' % i for i in range(self.REMOVALS)} - removed
        self.assertEqual(set(self.root.list_images()), expected)
        self.assertEqual(temporaries(store), [])


class FullDiskTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)

    def assertStillServing(self, daemon, store, expected):
        self.assertTrue(daemon.running(), 'the daemon died')
        self.assertEqual(sorted(self.root.list_images()), sorted(expected))
        self.assertEqual(self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolPath'), store)
        self.assertEqual(temporaries(store), [], 'half-made temporaries left')

    def test_copy_clone_that_cannot_fit(self):
        store = make_tmpfs_store(os.path.join(self.dir, 'store'), '64M')
        base = make_tree(os.path.join(store, 'base'), files=1200)  # 37.5 MiB: a copy cannot fit
        small = make_tree(os.path.join(store, 'small'), files=10, seed=2)
        digests = {'base': tree_digest(base), 'small': tree_digest(small)}
        daemon = self.start_daemon(store=store, args=['--no-pool'])
        # a first operation sets up the daemon's child watching (signalfd): before counting fds
        self.root.manager('MarkImageReadOnly', 'small', False)
        fds_before = settled_resources(daemon.pid)[0]

        e = self.assertDBusError(NO_SPACE, self.root.manager, 'CloneImage', 'base', 'big-copy', False)
        self.assertIn('base', e.message)
        self.assertEqual(store_names(store), ['base', 'small'])
        self.assertStillServing(daemon, store, ['base', 'small'])
        for name, digest in digests.items():
            self.assertEqual(tree_digest(os.path.join(store, name)), digest)
        # the space came back: what fits is still made
        self.root.manager('CloneImage', 'small', 'small-copy', False)
        self.assertEqual(tree_digest(os.path.join(store, 'small-copy')), digests['small'])
        self.assertEqual(settled_resources(daemon.pid)[0], fds_before, 'fds leaked by the failed copy')

    def import_tar(self, path, name):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            job = skip_if_not_supported(lambda: self.root.call(
                MANAGER_PATH, MANAGER_IFACE, 'ImportTar', 0, name, False, fd_list=fd_list(fd)),
                'ImportTar')
        finally:
            os.close(fd)
        self.last_job = job
        return self.jobs.wait(job)

    def assertSaysNoSpace(self, job, log):
        """The error the job ended with — what stampctl shows — says the disk is full."""
        final = self.jobs.final_error(job)
        stamptest.diag('the job ended with: %r' % final)
        self.assertEqual(self.jobs.error_name(job), 'io.stamp.Stamp1.Error.NoSpace',
                         'the job failed for want of space, but its ErrorName is %r' % self.jobs.error_name(job))
        self.assertRegex(final.lower(), 'no space|space left|disk is full|full',
                         'the job failed for want of space, but its error says: %r (log: %s)' % (
                             final, log[-1500:]))

    def test_import_into_small_fixed_btrfs(self):
        # A btrfs the user brought (no pool of the daemon's: it never grows it).
        store = make_btrfs_store(os.path.join(self.dir, 'store'), size='256M')
        base = make_image(store, 'base')
        digest = tree_digest(base)
        daemon = self.start_daemon(store=store)
        src = os.path.join(self.dir, 'big')
        os.makedirs(src)
        with open(os.path.join(src, 'blob'), 'wb') as f:
            for _ in range(320):
                f.write(os.urandom(1 << 20))
        big_tar = os.path.join(self.dir, 'big.tar')
        stamptest.run(['tar', '-C', src, '-cf', big_tar, '.'])

        result, log = self.import_tar(big_tar, 'too-big')
        if result == 'done':
            st = os.stat(os.path.join(store, 'too-big', 'blob'))
            self.fail('importing 320 MiB into a 256 MiB filesystem reported "done": the image\'s blob '
                      'has size %d but only %d bytes are on disk (the rest is a hole: data lost '
                      'silently; log: %r)' % (st.st_size, st.st_blocks * 512, log))
        self.assertEqual(result, 'failed', log)
        self.assertSaysNoSpace(self.last_job, log)
        self.assertStillServing(daemon, store, ['base'])
        self.assertEqual(tree_digest(base), digest)
        self.assertNotIn('too-big', stamptest.out(['btrfs', 'subvolume', 'list', store]))
        # and once the failed import is gone, what fits is imported
        stamptest.run(['btrfs', 'filesystem', 'sync', store])
        small = make_tree(os.path.join(self.dir, 'small'), files=20)
        small_tar = os.path.join(self.dir, 'small.tar')
        stamptest.run(['tar', '--numeric-owner', '-C', small, '-cf', small_tar, '.'])
        result, log = self.import_tar(small_tar, 'fits')
        self.assertEqual(result, 'done', log)
        self.assertEqual(tree_digest(os.path.join(store, 'fits')), tree_digest(small))

    @unittest.skipUnless(SLOW, 'a template build takes minutes: in the slow suite')
    def test_template_into_small_fixed_btrfs(self):
        import templatetest
        tarball = templatetest.package_tarball()
        store = make_btrfs_store(os.path.join(self.dir, 'store'), size='256M')
        base = make_image(store, 'base')
        digest = tree_digest(base)
        daemon = self.start_daemon(store=store)
        fd = os.open(tarball, os.O_RDONLY | os.O_CLOEXEC)
        try:
            job = skip_if_not_supported(lambda: self.root.call(
                MANAGER_PATH, MANAGER_IFACE, 'CreateTemplate', 'full', 'bookworm',
                {'package_tarball': GLib.Variant('h', 0)}, fd_list=fd_list(fd)), 'CreateTemplate')
        finally:
            os.close(fd)
        result, log = self.jobs.wait(job, timeout=templatetest.JOB_TIMEOUT)
        self.assertEqual(result, 'failed', log[-2000:])
        self.assertIn('no space left', log.lower(), 'the job log does not show the cause')
        self.assertSaysNoSpace(job, log)
        self.assertStillServing(daemon, store, ['base'])
        self.assertEqual(tree_digest(base), digest)
        self.assertEqual(stamptest.mounts_under(store), [store])


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
