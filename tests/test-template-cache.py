#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The image cache of online builds (normal suite, no network): a local
signed mirror made from the package tarball (tests/localmirror.py) serves
mmdebstrap; a second build of the same recipe from the same signed InRelease
is a snapshot of the cached image, with the per-template steps done anew."""

import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
import time

import stamptest
from stamptest import run
from localmirror import LocalMirror, trust_for_suite
from stamptest import GLib
from templatetest import (INVALID_ARGS, JOB_TIMEOUT, LOG_DEBUG, SUITE, JobWatcher, TemplateTestCase,
                          processes_mentioning)


def package_versions(tree):
    p = run(['chroot', tree, 'dpkg-query', '-W', '-f', '${Package} ${Version} ${db:Status-Abbrev}\n'])
    return sorted(tuple(line.split()[:2]) for line in p.stdout.splitlines() if line.split()[2:3] == ['ii'])


def tree_listing(tree):
    """Every path below @tree with its type, mode and owner."""
    found = set()
    for top, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            found.add((os.path.relpath(path, tree), stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid))
    return found


def host_tools_versions():
    """What the key of a cached tree says of the host's apt and dpkg: their installed packages and
    versions, as dpkg-query gives them."""
    out = run(['dpkg-query', '-W', '-f', '${binary:Package} ${Version}\n', 'apt', 'dpkg',
               'libapt-pkg[0-9]*']).stdout
    return ', '.join(line for line in out.splitlines() if line.split(' ', 1)[1:] != [''])


class ImageCacheTest(TemplateTestCase):
    """Each test has a store of its own; the mirror is the class's (made
    once: it takes a while), and a test that signs it anew leaves it so."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mirror_dir = tempfile.mkdtemp(prefix='stamp-mirror.')
        cls.mirror = LocalMirror(os.path.join(cls.mirror_dir, 'mirror'))

    @classmethod
    def tearDownClass(cls):
        cls.mirror.close()
        shutil.rmtree(cls.mirror_dir, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        trust_for_suite(self, self.mirror.keyring)

    def build(self, name, **options):
        self.mirror.requests.clear()
        start = time.monotonic()
        job_id, job = self.create(name, mirror=self.mirror.url, bootable=False, **options)
        result = self.jobs.wait(job_id, JOB_TIMEOUT)
        stamptest.diag('%s: %.1f s' % (name, time.monotonic() - start))
        log = self.jobs.log_text(job, LOG_DEBUG)
        for line in log.splitlines():  # what the image cache's steps cost, for the record
            if re.search(r' in [0-9]+ ms\.$', line) or 'I: success in' in line:
                stamptest.diag('  ' + line)
        self.assertEqual(result, 'done', log[-3000:])
        return log

    def entries(self):
        """The image cache's entries: name → InRelease digest; and any
        other name (a temporary) under 'other'."""
        top = os.path.join(self.store, '.stamp/cache/images')
        found, other = {}, []
        for name in (os.listdir(top) if os.path.isdir(top) else []):
            if name.endswith('.lock'):
                continue
            if re.fullmatch('[0-9a-f]{64}', name):
                found[name] = os.getxattr(os.path.join(top, name), 'user.stamp.cache.inrelease').decode()
            else:
                other.append(name)
        self.assertEqual(other, [], 'temporaries left in the image cache')
        return found

    def locks(self):
        """The keys of the image cache's lock files."""
        top = os.path.join(self.store, '.stamp/cache/images')
        return sorted(n[:-len('.lock')] for n in os.listdir(top) if n.endswith('.lock'))

    def test_second_build_from_cache(self):
        log = self.build('one')
        self.assertIn('Kept the tree in the image cache', log)
        self.assertTrue(self.mirror.debs_fetched())
        [(key, digest)] = self.entries().items()
        entry = os.path.join(self.store, '.stamp/cache/images', key)
        self.assertTrue(stamptest.is_subvolume(entry))
        self.assertTrue(stamptest.subvolume_read_only(entry))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(entry)).st_mode), 0o700)
        # an upgrade of the host's apt or dpkg is another recipe
        self.assertIn('\nhost-apt-dpkg %s\n' % host_tools_versions(),
                      os.getxattr(entry, 'user.stamp.cache.key').decode())
        usage = self.root.get_property(stamptest.MANAGER_PATH, stamptest.MANAGER_IFACE, 'CacheUsage')

        hashed = run(['openssl', 'passwd', '-6', 'secret']).stdout.strip()
        log = self.build('two', root_password_hashed=hashed)
        self.assertIn('Reused the tree of an identical build of', log)
        self.assertNotIn('mmdebstrap', [os.path.basename(l.split()[0]) for l in log.splitlines() if l.split()])
        # the mirror was asked for the signed InRelease and nothing else
        self.assertEqual(self.mirror.requests, ['/debian/dists/%s/InRelease' % SUITE])
        self.assertEqual(self.entries(), {key: digest})

        one, two = self.path('one'), self.path('two')
        self.assertEqual(package_versions(one), package_versions(two))
        self.assertEqual(tree_listing(one), tree_listing(two))
        with open(os.path.join(two, 'etc/shadow')) as f:
            self.assertIn('root:%s:' % hashed, f.read())
        with open(os.path.join(one, 'etc/shadow')) as f:
            self.assertNotIn(hashed, f.read())
        for tree in (one, two):  # no machine ID of its own in either (systemd makes one at boot)
            path = os.path.join(tree, 'etc/machine-id')
            self.assertEqual(open(path).read() if os.path.exists(path) else '', '')
        self.assertEqual(os.listxattr(two), os.listxattr(one))
        self.assertTrue(stamptest.subvolume_read_only(two))
        r1, r2 = self.root.image_props('one')['Recipe'], self.root.image_props('two')['Recipe']
        self.assertNotIn('image_cache', r1)
        self.assertEqual(set(r2), set(r1) | {'image_cache'})
        self.assertLess(r2['image_cache'], r2['created'])
        for field in set(r1) - {'created', 'uuid'}:
            self.assertEqual(r1[field], r2[field], field)
        # hidden from the store's listing
        self.assertEqual(sorted(self.root.list_images()), ['one', 'two'])
        self.assertGreater(self.root.get_property(stamptest.MANAGER_PATH, stamptest.MANAGER_IFACE,
                                                  'CacheUsage'), 0)
        self.assertGreaterEqual(usage, 100 * 1024 * 1024)  # the tree's files, not only the .debs

        # kept over a restart of the daemon
        self.stop_daemon(self.daemon)
        self.daemon = self.start_daemon(store=self.store)
        self.jobs.close()  # the new daemon counts its jobs from the start again
        self.jobs = JobWatcher(self.env.conn)
        self.addCleanup(self.jobs.close)
        log = self.build('three')
        self.assertIn('Reused the tree', log)
        self.assertEqual(self.mirror.debs_fetched(), [])

        # CleanCache empties it: the next build is a full one
        self.root.manager('CleanCache', {})
        self.assertEqual(self.entries(), {})
        self.assertEqual(self.locks(), [])
        self.assertEqual(self.root.get_property(stamptest.MANAGER_PATH, stamptest.MANAGER_IFACE,
                                                'CacheUsage'), 0)

    def test_misses(self):
        # one tree kept at most
        config = os.path.join(self.dir, 'stampd.conf')
        stamptest.write_file(config, '[Limits]\nTemplateCacheImages=1\n')
        self.stop_daemon(self.daemon)
        self.daemon = self.start_daemon(store=self.store, args=['--config', config])
        self.build('one')
        [(key, digest)] = self.entries().items()

        # the mirror signed another InRelease: a full build, whose tree replaces the entry
        self.mirror.sign()
        log = self.build('two')
        self.assertIn('made from another InRelease', log)
        self.assertNotIn('Reused the tree', log)
        self.assertTrue(self.mirror.debs_fetched() or 'downloading packages' in log)
        [(key2, digest2)] = self.entries().items()
        self.assertEqual(key2, key)
        self.assertNotEqual(digest2, digest)

        # asked not to: a full build, whose tree replaces the entry
        log = self.build('three', image_cache=False)
        self.assertIn('Not using the image cache, as asked', log)
        self.assertNotIn('Reused the tree', log)
        self.assertIn('Kept the tree in the image cache', log)
        [(key3, _)] = self.entries().items()
        self.assertEqual(key3, key)

        # other packages: another recipe, another entry, and the older one goes (the limit)
        log = self.build('four', include=['libexpat1'])
        self.assertIn('has no tree of this recipe', log)
        self.assertIn(('libexpat1',), {(n,) for n, _ in package_versions(self.path('four'))})
        [key4] = self.entries()
        self.assertNotEqual(key4, key)
        # the lock of the recipe that went out of the cache went with it
        self.assertEqual(self.locks(), [key4])

    def test_expired_inrelease_is_not_served(self):
        """An InRelease past its Valid-Until (an old one a mirror serves again): apt refuses it, and the
        image cache does not serve a tree for it either, not even one made from that very file."""
        self.build('one')
        [(key, _)] = self.entries().items()
        text = self.mirror.sign(valid_until=time.time() - 3600)
        self.addCleanup(self.mirror.sign)  # the mirror is the class's
        # the entry as if it had been made from this InRelease while it was valid
        entry = os.path.join(self.store, '.stamp/cache/images', key)
        run(['btrfs', 'property', 'set', '-ts', entry, 'ro', 'false'])
        os.setxattr(entry, 'user.stamp.cache.inrelease', hashlib.sha256(text.encode()).hexdigest().encode())
        run(['btrfs', 'property', 'set', '-ts', entry, 'ro', 'true'])

        job_id, job = self.create('two', mirror=self.mirror.url, bootable=False)
        result = self.jobs.wait(job_id, JOB_TIMEOUT)
        log = self.jobs.log_text(job, LOG_DEBUG)
        self.assertIn('(its Valid-Until): the image cache is not used', log)
        self.assertNotIn('Reused the tree', log)
        self.assertEqual(result, 'failed', log[-3000:])  # apt's own refusal
        self.assertIn('expired', log)
        self.assertNothingLeft('two')
        self.assertIn(key, self.entries())

    def test_cancel_leaves_no_entry(self):
        self.mirror.requests.clear()
        job_id, job = self.create('gone', mirror=self.mirror.url, bootable=False)
        stamptest.wait_for(lambda: self.mirror.debs_fetched(), 'the build to download', JOB_TIMEOUT)
        self.root.manager('CancelJob', job_id)
        self.assertEqual(self.jobs.wait(job_id, stamptest.CANCEL_TIMEOUT), 'canceled')
        self.assertNothingLeft('gone')
        self.assertEqual(self.entries(), {})

        # kill -9 of the daemon: the job dies with it, and the next daemon finds nothing half-made
        self.mirror.requests.clear()
        job_id, job = self.create('crash', mirror=self.mirror.url, bootable=False)
        stamptest.wait_for(lambda: self.mirror.debs_fetched(), 'the build to download', JOB_TIMEOUT)
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.proc.wait()
        stamptest.wait_for(lambda: not processes_mentioning(self.store), 'the job to die with the daemon', 30)
        self.daemon = self.start_daemon(store=self.store)
        self.assertNothingLeft('crash')
        self.assertEqual(self.entries(), {})

    def test_stampctl_no_cache(self):
        """stampctl create-template --no-cache asks for a full build: seen in
        the job's log as soon as it starts, then canceled."""
        p = run([stamptest.STAMPCTL, '--no-block', 'create-template', 'ctl', '--suite', SUITE,
                 '--mirror', self.mirror.url, '--no-cache'])
        job_id = int(p.stdout.strip())
        job = '/io/stamp/Stamp1/job/%d' % job_id
        self.jobs.wait_log(job, lambda prio, text: 'InRelease' in text, 'the build to check the InRelease')
        self.assertIn('Not using the image cache, as asked', self.jobs.log_text(job))
        self.root.manager('CancelJob', job_id)
        self.assertEqual(self.jobs.wait(job_id, stamptest.CANCEL_TIMEOUT), 'canceled')
        self.assertNothingLeft('ctl')
        self.assertEqual(self.entries(), {})


class OptionTest(TemplateTestCase):

    def test_option_type_refused(self):
        before = stamptest.store_state(self.store)
        e = self.assertDBusError(INVALID_ARGS, self.create, 'x', mirror='http://127.0.0.1:9/debian',
                                 image_cache=GLib.Variant('s', 'no'))
        self.assertIn('image_cache', e.message)
        self.assertEqual(stamptest.store_state(self.store), before)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
