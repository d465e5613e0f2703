#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""CreateTemplate, offline: real debootstrap from a package tarball passed by
fd, into the daemon's own pool; progress, log, cancel, a killed daemon, bad
input, concurrency, caps and authorization. The online build is in
test-template-online.py (slow suite). See templatetest.py for the tarball."""

import base64
import glob
import http.server
import os
import signal
import socket
import subprocess
import threading
import time

import stamptest
from stamptest import (ACCESS_DENIED, INTERACTIVE_REQUIRED, STAMP_ERROR, USER, GLib, make_image,
                       rule_for, run, store_state, subvolume_read_only, subvolume_show)
from templatetest import (BOOTABLE, INVALID_ARGS, JOB_PREFIX, LIMITS_EXCEEDED, LOG_ERR, LOG_INFO,
                          SUITE, TemplateTestCase, descendants, host_arch, note_package_code, package_tarball,
                          processes_mentioning)

INVALID_NAME = STAMP_ERROR + 'InvalidName'
NOT_SUPPORTED = STAMP_ERROR + 'NotSupported'
IMAGE_EXISTS = STAMP_ERROR + 'ImageExists'
IMAGE_BUSY = STAMP_ERROR + 'ImageBusy'
BAD_NAMES = ['../x', 'a/b', '.x', '-x', '', 'a' * 65, 'ü', '.', '..', 'a b', 'x\ny']
SECRET = 'S3cr3t-mirror-pw'
# openssl passwd -6 -salt stampsalt secret
PASSWORD_HASH = ('$6$stampsalt$/./4UV3iV/GnFowdoBkUWU9izC6C.1Bezic0KkZqiYUOGd7R0l6wP4oM5rkXk8XJ3'
                 '.qxtBXvltkAijLjG1rJM0')


def installed_packages(tree):
    p = run(['chroot', tree, 'dpkg-query', '-W', '-f', '${Package} ${db:Status-Abbrev}\n'])
    return {line.split()[0] for line in p.stdout.splitlines() if line.split()[1:2] == ['ii']}


class OfflineTemplateTest(TemplateTestCase):

    def test_template_from_package_tarball(self):
        t0 = time.time()
        job_id, job = self.create_offline('deb12', include=['dbus'],
                                          root_password_hashed=PASSWORD_HASH)
        self.assertEqual(job, JOB_PREFIX + str(job_id))
        props = self.root.get_all(job, 'io.stamp.Stamp1.Job')
        self.assertEqual((props['Id'], props['Type'], props['Image']),
                         (job_id, 'create-template', 'deb12'))
        self.assertIn(job_id, [row[0] for row in self.root.manager('ListJobs')])
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job))
        t1 = time.time()

        # progress: a real fraction, only forward, ending at 1
        progress = self.jobs.progress[job]
        self.assertEqual(progress, sorted(progress), 'progress went backwards')
        self.assertEqual(progress[-1], 1.0)
        self.assertGreater(len({p for p in progress if 0 < p < 1}), 10, progress)
        # the log: debootstrap's own messages, and what the tools said
        info = self.jobs.log_text(job, LOG_INFO)
        for phrase in ('I: Extracting', 'I: Unpacking', 'I: Configuring',
                       'I: Base system installed successfully.', 'Template deb12 is ready.'):
            self.assertIn(phrase, info)
        self.assertIn('Setting up', self.jobs.log_text(job), 'dpkg output is not in the log')
        self.assertIn('deb12', self.jobs.images_added)

        # on disk: a read-only subvolume under its name, nothing else
        tree = self.path('deb12')
        self.assertTrue(stamptest.is_subvolume(tree))
        self.assertTrue(subvolume_read_only(tree))
        self.assertEqual(self.temporaries(), [])
        uuid = subvolume_show(tree)['UUID'].replace('-', '')

        img = self.root.image_props('deb12')
        self.assertTrue(img['ReadOnly'])
        self.assertTrue(img['Template'])
        self.assertEqual(img['Type'], 'subvolume')
        self.assertEqual(img['Origin'], '')
        recipe = img['Recipe']
        created = recipe.pop('created')
        self.assertLessEqual(t0 * 1e6, created)
        self.assertLessEqual(created, t1 * 1e6)
        self.assertEqual(recipe, {'suite': SUITE, 'variant': 'minbase', 'arch': host_arch(),
                                  'include': ['dbus'], 'mirror': 'http://deb.debian.org/debian',
                                  'bootable': True, 'offline': True, 'uuid': uuid,
                                  'builder': 'debootstrap'})
        osr = img['OSRelease']
        self.assertEqual((osr['ID'], osr['VERSION_CODENAME']), ('debian', SUITE))

        # a real Debian tree with what was asked for, made generic
        self.assertTrue(set(BOOTABLE) <= installed_packages(tree))
        with open(os.path.join(tree, 'etc/shadow')) as f:
            root_entry = [line for line in f if line.startswith('root:')][0]
        self.assertEqual(root_entry.split(':')[1], PASSWORD_HASH)
        self.assertEqual(os.path.getsize(os.path.join(tree, 'etc/machine-id')), 0)
        self.assertFalse(os.path.lexists(os.path.join(tree, 'etc/hostname')))
        # dpkg's unsafe I/O was stamp's for the build only: the template's own dpkg syncs again
        self.assertIn('dpkg.cfg', os.listdir(os.path.join(tree, 'etc/dpkg')))
        self.assertEqual([n for n in os.listdir(os.path.join(tree, 'etc/dpkg/dpkg.cfg.d')) if 'stamp' in n], [])
        self.assertEqual([n for n in os.listdir(os.path.join(tree, 'var/cache/apt/archives'))
                          if n.endswith('.deb')], [])
        self.assertEqual([n for n in os.listdir(tree) if n.startswith('.')], [])
        self.assertFalse(os.path.exists(os.path.join(tree, 'debootstrap')))

        # a clone is writable, knows its origin, and is no template
        self.root.manager('CloneImage', 'deb12', 'work', False)
        clone = self.root.image_props('work')
        self.assertEqual((clone['ReadOnly'], clone['Template'], clone['Origin']),
                         (False, False, 'deb12'))
        with open(os.path.join(self.path('work'), 'root/hello'), 'w') as f:
            f.write('hi\n')
        p = run(['systemd-nspawn', '--register=no', '--keep-unit', '-q', '-D', self.path('work'),
                 '--', '/bin/sh', '-c', 'cat /root/hello; . /etc/os-release; echo $ID'],
                check=False)
        self.assertEqual(p.stdout.split(), ['hi', 'debian'], p.stderr)

    def test_two_templates_at_once_one_from_a_pipe(self):
        tarball = package_tarball()
        a, _ = self.create_offline('one')
        r, w = os.pipe()
        try:
            b, _ = self.create('two', fd=r, bootable=False, variant='buildd')
        finally:
            os.close(r)

        def feed():
            with open(tarball, 'rb') as src, os.fdopen(w, 'wb') as dst:
                while chunk := src.read(1 << 16):
                    dst.write(chunk)
        feeder = threading.Thread(target=feed)
        feeder.start()
        self.addCleanup(feeder.join)
        self.assertEqual(sorted(row[2] for row in self.root.manager('ListJobs')), ['one', 'two'])
        self.assertEqual(self.jobs.wait(a), 'done')
        self.assertEqual(self.jobs.wait(b), 'done')
        one, two = self.root.image_props('one'), self.root.image_props('two')
        self.assertTrue(one['Template'] and two['Template'])
        self.assertNotEqual(one['Recipe']['uuid'], two['Recipe']['uuid'])
        self.assertEqual((two['Recipe']['variant'], two['Recipe']['bootable']), ('buildd', False))
        self.assertEqual(self.temporaries(), [])


class JailTest(TemplateTestCase):
    """debootstrap's second stage, where the packages' maintainer scripts
    run, holds no privilege over the host: a user namespace whose root is an
    unprivileged uid range, while the files still land 0-based on disk."""

    def ischroot_in_jail(self, pids):
        """In the namespaces and root of one of @pids (or of any process of the build while it
        runs), with the build's /proc: ischroot's exit status (0 a chroot, 1 not), and what the
        root of the jail's PID 1 holds."""
        for _ in range(200):
            for pid in pids + [p for p, c in descendants(self.daemon.pid) if 'dpkg' in c]:
                p = run(['nsenter', '-t', str(pid), '-U', '-m', '-p', '-r', '-w', '--',
                         'sh', '-c', 'test -e /proc/1 && exec ischroot'], check=False)
                if p.returncode in (0, 1):
                    listing = run(['nsenter', '-t', str(pid), '-U', '-m', '-p', '-r', '--',
                                   'ls', '-A', '/proc/1/root/'], check=False)
                    if listing.returncode == 0:
                        return p.returncode, listing.stdout.split()
            pids = []
            time.sleep(0.05)
        return None, None

    def test_package_scripts_run_without_host_root(self):
        job_id, job = self.create_offline('jailed')
        seen = {}
        stamptest.wait_for(lambda: note_package_code(self.daemon.pid, seen), 'dpkg to run', 300, interval=0.05)
        self.assertJailed(seen)
        # what the scripts ask: a chroot (image work, no booted system: libc6 then skips its
        # re-execution of init and the second of sleep after it), whose PID 1 shows them nothing
        chroot, init_root = self.ischroot_in_jail(list(seen))
        self.assertEqual(chroot, 0, 'ischroot in the build: %r' % chroot)
        self.assertEqual(init_root, [], "the jail's PID 1 sees files")
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])

        # on disk, everything 0-based, as the scripts meant it
        tree = self.path('jailed')
        self.assertZeroBased(tree)
        with open(os.path.join(tree, 'etc/group')) as f:
            shadow_gid = [int(line.split(':')[2]) for line in f if line.startswith('shadow:')][0]
        st = os.stat(os.path.join(tree, 'etc/shadow'))
        self.assertEqual((st.st_uid, st.st_gid), (0, shadow_gid))
        self.assertEqual(self.temporaries(), [])
        self.assertEqual(stamptest.mounts_under(self.store), [self.store])


class PlainStoreTest(TemplateTestCase):
    """Where the store is no btrfs, a template is a directory, immutable."""

    store_kind = 'plain'

    def test_template_in_a_directory_store(self):
        # with a mirror that carries credentials: they reach neither the log, the recipe, nor the tree
        # (the mirror the tarball was made from: debootstrap finds its package lists by it)
        job_id, job = self.create_offline('plain', mirror='http://stamp:%s@deb.debian.org/debian' % SECRET)
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        self.assertNotIn(SECRET, self.jobs.log_text(job))
        tree = self.path('plain')
        self.assertFalse(stamptest.is_subvolume(tree))
        self.assertTrue(stamptest.has_immutable_flag(tree))
        self.assertEqual(self.temporaries(), [])
        img = self.root.image_props('plain')
        self.assertEqual((img['Type'], img['ReadOnly'], img['Template']), ('directory', True, True))
        self.assertNotIn('uuid', img['Recipe'])
        self.assertEqual(img['Recipe']['suite'], SUITE)
        self.assertEqual(img['Recipe']['mirror'], 'http://deb.debian.org/debian')
        with open(os.path.join(tree, 'etc/apt/sources.list')) as f:
            sources = f.read()
        self.assertIn('http://deb.debian.org/debian', sources)
        self.assertNotIn(SECRET, sources)
        self.assertEqual(img['OSRelease']['ID'], 'debian')
        self.assertIn('dpkg', installed_packages(tree))
        # and it goes away again like any image
        self.root.manager('RemoveImage', 'plain')
        self.assertFalse(os.path.lexists(tree))


class CancelTest(TemplateTestCase):

    def test_cancel_while_debootstrap_runs(self):
        job_id, job = self.create_offline('gone')
        # dpkg at work inside the tree, with /proc mounted there
        self.jobs.wait_log(job, lambda p, t: t.startswith('I: Unpacking'), 'dpkg to unpack')
        temp = self.temporaries()
        self.assertEqual(len(temp), 1)
        self.assertTrue(any('dpkg' in c or 'debootstrap' in c for _, c in descendants(self.daemon.pid)))
        self.root.manager('CancelJob', job_id)
        self.assertEqual(self.jobs.wait(job_id, stamptest.CANCEL_TIMEOUT), 'canceled')
        self.assertNothingLeft('gone')
        self.assertNotIn('gone', self.jobs.images_added)

    def test_cancel_through_job_object_while_reading_tarball(self):
        job_id, job, _ = self.create_stalled('stalled')
        stamptest.wait_for(lambda: self.temporaries(), 'the temporary to appear')
        self.root.call(job, 'io.stamp.Stamp1.Job', 'Cancel')
        self.assertEqual(self.jobs.wait(job_id, stamptest.CANCEL_TIMEOUT), 'canceled')
        self.assertNothingLeft('stalled')
        self.assertEqual(self.root.manager('ListJobs'), [])


class DaemonKilledTest(TemplateTestCase):

    def test_kill_9_mid_run_leaves_nothing_after_restart(self):
        job_id, job = self.create_offline('crash')
        self.jobs.wait_log(job, lambda p, t: t.startswith('I: Configuring'), 'dpkg to configure')
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.proc.wait()
        # the job's processes die with the daemon
        stamptest.wait_for(lambda: not processes_mentioning(self.store),
                           'the job to die with the daemon', 10)
        self.assertEqual(len(self.temporaries()), 1, 'the temporary should still be there')
        self.daemon = self.start_daemon(store=self.store)
        self.assertNothingLeft('crash')


class FailureTest(TemplateTestCase):

    def garbage_fd(self, data):
        path = os.path.join(self.dir, 'garbage')
        with open(path, 'wb') as f:
            f.write(data)
        return self.keep_fd(os.open(path, os.O_RDONLY))

    def test_garbage_tarball_fails_with_debootstrap_reason(self):
        job_id, job = self.create('junk', fd=self.garbage_fd(os.urandom(1 << 20)))
        self.assertEqual(self.jobs.wait(job_id), 'failed')
        errors = self.jobs.log_text(job, LOG_ERR)
        self.assertIn('not one made by debootstrap --make-tarball', errors)
        self.assertIn('does not look like a tar archive', errors)
        self.assertNothingLeft('junk')

    def test_gzip_that_is_no_debootstrap_tarball_fails(self):
        src = os.path.join(self.dir, 'src')
        os.makedirs(os.path.join(src, 'etc'))
        with open(os.path.join(src, 'etc', 'motd'), 'w') as f:
            f.write('not a package archive\n')
        data = subprocess.run(['tar', '-C', src, '-cz', '.'], check=True, capture_output=True).stdout
        job_id, job = self.create('junk', fd=self.garbage_fd(data))
        self.assertEqual(self.jobs.wait(job_id), 'failed')
        errors = self.jobs.log_text(job, LOG_ERR)
        self.assertIn('not one made by debootstrap --make-tarball', errors)
        self.assertIn('debootstrap/required', errors)
        self.assertNothingLeft('junk')

    def test_empty_tarball(self):
        job_id, job = self.create('junk', fd=self.garbage_fd(b''))
        self.assertEqual(self.jobs.wait(job_id), 'failed')
        self.assertIn('empty', self.jobs.log_text(job, LOG_ERR))
        self.assertNothingLeft('junk')

    def test_package_not_in_tarball(self):
        job_id, job = self.create_offline('short', include=['nano'])
        self.assertEqual(self.jobs.wait(job_id), 'failed')
        self.assertIn('nano', self.jobs.log_text(job, LOG_ERR))
        self.assertNothingLeft('short')


class BadInputTest(TemplateTestCase):
    """Refused before anything starts: no job, the store unchanged."""

    def refused(self, error, *args, fd=None, **options):
        before = store_state(self.store)
        e = self.assertDBusError(error, self.create, *args, fd=fd, **options)
        self.jobs.spin()
        self.assertEqual(self.jobs.new, [])
        self.assertUnchanged(self.store, before)
        return e

    def test_wrong_kinds_of_fd(self):
        sock_a, sock_b = socket.socketpair()
        self.addCleanup(sock_a.close)
        self.addCleanup(sock_b.close)
        cases = {
            'directory': os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY),
            'write-only file': os.open(os.path.join(self.dir, 'w'), os.O_WRONLY | os.O_CREAT),
            'O_PATH file': os.open(package_tarball(), os.O_PATH),
            'socket': os.dup(sock_a.fileno()),
            'pipe write end': os.pipe()[1],
            'character device': os.open('/dev/zero', os.O_RDONLY),
        }
        for what, fd in cases.items():
            self.keep_fd(fd)
            with self.subTest(what):
                e = self.refused(INVALID_ARGS, 'x', fd=fd)
                self.assertIn('package_tarball', e.message)

    def test_unknown_option_and_wrong_type(self):
        e = self.refused(INVALID_ARGS, 'x', bogus='1')
        self.assertIn('bogus', e.message)
        for key, value in (('variant', GLib.Variant('i', 1)), ('bootable', GLib.Variant('s', 'yes')),
                           ('include', GLib.Variant('s', 'vim')),
                           ('package_tarball', GLib.Variant('s', '/etc/shadow'))):
            with self.subTest(key):
                e = self.refused(INVALID_ARGS, 'x', **{key: value})
                self.assertIn('"%s"' % key, e.message)

    def test_bad_values(self):
        for key, value in (('variant', 'maxbase'), ('arch', 'AMD64'), ('arch', '../x'),
                           ('include', ['vim,curl']), ('include', ['-oops']),
                           ('mirror', 'file:///etc'), ('mirror', 'copy:///srv/mirror'),
                           ('mirror', 'http://x y/')):
            with self.subTest(key=key, value=value):
                e = self.refused(INVALID_ARGS, 'x', **{key: value})
                shown = value[0] if isinstance(value, list) else value
                self.assertIn(shown, e.message)

    def test_bad_password_hashes(self):
        for value in ('secret', '$6$salt$has:colon', '$6$salt$line\nbreak', '$nosuchmethod$x$y', ''):
            with self.subTest(value=value):
                e = self.refused(INVALID_ARGS, 'x', root_password_hashed=value)
                self.assertIn('root_password_hashed', e.message)
                if value:
                    self.assertNotIn(value, e.message)

    def test_bad_suites(self):
        self.refused(INVALID_ARGS, 'x', '')
        for suite in ('../etc', 'bookworm/../x', '-x', 'nosuchsuite'):
            with self.subTest(suite):
                e = self.refused(INVALID_ARGS, 'x', suite)
                self.assertIn(suite, e.message)

    def test_bad_names(self):
        for name in BAD_NAMES:
            with self.subTest(name=name):
                self.refused(INVALID_NAME, name)

    def test_name_taken(self):
        make_image(self.store, 'taken')
        e = self.refused(IMAGE_EXISTS, 'taken')
        self.assertIn('taken', e.message)
        with open(self.path('afile'), 'w') as f:
            f.write('x')
        self.refused(IMAGE_EXISTS, 'afile')

    def test_name_being_made(self):
        self.create_stalled('busy')
        e = self.assertDBusError(IMAGE_BUSY, self.create, 'busy')
        self.assertIn('busy', e.message)
        self.assertEqual(len(self.root.manager('ListJobs')), 1)


def suites_without_keyring():
    """Suites debootstrap has a script for whose keyring is not installed."""
    found = []
    for script in sorted(glob.glob('/usr/share/debootstrap/scripts/*')):
        with open(script, errors='replace') as f:
            keyrings = [line.split()[1] for line in f if line.startswith('keyring ')]
        if keyrings and not os.path.exists(keyrings[0]):
            found.append((os.path.basename(script), keyrings[0]))
    return found


class UnsignedMirrorTest(TemplateTestCase):
    """An online build (mmdebstrap) takes nothing from a mirror whose
    Release file is not signed by the suite's keyring."""

    def test_unsigned_release_refused(self):
        root = os.path.join(self.dir, 'mirror')
        os.makedirs(os.path.join(root, 'debian/dists', SUITE))
        with open(os.path.join(root, 'debian/dists', SUITE, 'Release'), 'w') as f:
            f.write('Origin: Debian\nSuite: %s\nCodename: %s\nArchitectures: %s\nComponents: main\n'
                    'Date: Sat, 05 Dec 2026 00:00:00 UTC\nSHA256:\n' % (SUITE, SUITE, host_arch()))
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=root, **kw)
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        mirror = 'http://127.0.0.1:%d/debian' % server.server_address[1]
        job_id, job = self.create('unsigned', mirror=mirror, bootable=False)
        self.assertEqual(self.jobs.wait(job_id), 'failed')
        self.assertIn('not signed', self.jobs.log_text(job, LOG_ERR))
        self.assertNothingLeft('unsigned')


class KeyringTest(TemplateTestCase):
    """An online build must verify what the mirror serves: a suite whose
    keyring is not installed is refused, unless a package tarball is given."""

    def test_suite_without_keyring_refused_online(self):
        missing = suites_without_keyring()
        if not missing:
            self.skipTest('every suite debootstrap knows has its keyring installed here')
        suite, keyring = missing[0]
        before = store_state(self.store)
        for options in ({}, {'mirror': 'http://127.0.0.1:9/ubuntu'}):
            with self.subTest(options=options):
                e = self.assertDBusError(NOT_SUPPORTED, self.create, 'nokey', suite, **options)
                self.assertIn(keyring, e.message)
                self.assertIn('package_tarball', e.message)
        self.jobs.spin()
        self.assertEqual(self.jobs.new, [])
        self.assertUnchanged(self.store, before)

    def test_suite_without_keyring_from_a_tarball_starts(self):
        missing = suites_without_keyring()
        if not missing:
            self.skipTest('every suite debootstrap knows has its keyring installed here')
        job_id, job, _ = self.create_stalled('nokey', suite=missing[0][0])
        stamptest.spin_until(lambda: job_id in self.jobs.new, 'JobNew')
        self.root.manager('CancelJob', job_id)
        self.assertEqual(self.jobs.wait(job_id), 'canceled')
        self.assertNothingLeft('nokey')


class MirrorCredentialsTest(TemplateTestCase):
    """A mirror's user:password@ reaches the mirror (as HTTP basic
    authentication, through wget) and nothing else: no command line, no log
    line, no error."""

    def serve(self):
        seen = {'auth': [], 'cmdlines': []}
        store = self.store

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                # the download is running now: what can every local user read of it?
                seen['cmdlines'] += [c for _, c in processes_mentioning(store)]
                auth = self.headers.get('Authorization')
                if auth is None:
                    self.send_response(401)
                    self.send_header('WWW-Authenticate', 'Basic realm="mirror"')
                else:
                    seen['auth'].append(auth)
                    self.send_response(404)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(server.shutdown)
        return server.server_address[1], seen

    def test_credentials_go_to_the_mirror_only(self):
        port, seen = self.serve()
        mirror = 'http://st%%40mp:%s@127.0.0.1:%d/debian' % (SECRET, port)
        job_id, job = self.create('cred', mirror=mirror, bootable=False)
        self.assertEqual(self.jobs.wait(job_id), 'failed')
        expected = 'Basic ' + base64.b64encode(('st@mp:%s' % SECRET).encode()).decode()
        self.assertIn(expected, seen['auth'])
        self.assertTrue(seen['cmdlines'], 'no process of the job was seen during the download')
        for cmdline in seen['cmdlines']:
            self.assertNotIn(SECRET, cmdline)
            self.assertNotIn('st%40mp', cmdline)
        self.assertIn('127.0.0.1:%d' % port, self.jobs.log_text(job))
        self.assertNotIn(SECRET, self.jobs.log_text(job))
        props_error = self.jobs.log_text(job, LOG_ERR)
        self.assertNotIn(SECRET, props_error)
        self.assertNothingLeft('cred')

    def test_bad_credentials_not_repeated(self):
        before = store_state(self.store)
        for mirror in ('http://user:%s%%0a@127.0.0.1:9/debian' % SECRET,
                       'http://:%s@127.0.0.1:9/debian' % SECRET):
            with self.subTest(mirror=mirror):
                e = self.assertDBusError(INVALID_ARGS, self.create, 'x', mirror=mirror)
                self.assertNotIn(SECRET, e.message)
                self.assertIn('127.0.0.1:9', e.message)
        # a token in the query: debootstrap would show it on its command line, the recipe keep it
        for mirror in ('http://127.0.0.1:9/debian?token=%s' % SECRET,
                       'http://127.0.0.1:9/debian#%s' % SECRET,
                       'ftp://u:%s@h/debian' % SECRET, 'http://u:%s@h/deb?x=%s' % (SECRET, SECRET)):
            with self.subTest(mirror=mirror):
                e = self.assertDBusError(INVALID_ARGS, self.create, 'x', mirror=mirror)
                self.assertNotIn(SECRET, e.message)
        self.jobs.spin()
        self.assertEqual(self.jobs.new, [])
        self.assertUnchanged(self.store, before)


class JobModelTest(TemplateTestCase):
    """A template build is an exec of stamp-transfer like every job: stampd
    (which has threads) runs no job code in a forked copy of itself."""

    def test_build_runs_in_stamp_transfer(self):
        job_id, job, _ = self.create_stalled('model', root_password_hashed=PASSWORD_HASH)
        stamptest.wait_for(lambda: self.temporaries(), 'the temporary to appear')
        stampd = os.readlink('/proc/%d/exe' % self.daemon.pid)
        found = descendants(self.daemon.pid)
        self.assertTrue(found)
        for pid, cmdline in found:
            with self.subTest(cmdline=cmdline):
                try:
                    exe = os.readlink('/proc/%d/exe' % pid)
                except OSError:
                    continue
                self.assertNotEqual(exe, stampd)
                self.assertEqual(os.path.basename(exe), 'stamp-transfer')
                self.assertEqual(cmdline, 'stamp-transfer template model')
        self.root.manager('CancelJob', job_id)
        self.assertEqual(self.jobs.wait(job_id), 'canceled')
        self.assertNothingLeft('model')


class CapTest(TemplateTestCase):

    def test_per_caller_job_cap(self):
        ids = [self.create_stalled('t%d' % i)[0] for i in range(4)]
        stamptest.wait_for(lambda: len(self.temporaries()) == 4, 'the jobs to make their temporaries')
        before = store_state(self.store)
        e = self.assertDBusError(LIMITS_EXCEEDED, self.create_stalled, 't4')
        self.assertIn('4', e.message)
        self.assertUnchanged(self.store, before)
        # another caller is not held back by the first one's jobs
        other = stamptest.RootCaller(stamptest.Gio.DBusConnection.new_for_address_sync(
            self.env.address, stamptest.Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | stamptest.Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None))
        self.addCleanup(other.conn.close_sync, None)
        r, w = os.pipe()
        self.keep_fd(w)
        try:
            other_id, _ = self.create('t5', fd=r, caller=other)
        finally:
            os.close(r)
        ids.append(other_id)
        self.assertEqual(len(self.root.manager('ListJobs')), 5)
        for job_id in ids:
            self.root.manager('CancelJob', job_id)
        for job_id in ids:
            self.assertEqual(self.jobs.wait(job_id, stamptest.CANCEL_TIMEOUT), 'canceled')
        self.assertEqual(self.temporaries(), [])
        self.assertEqual(self.root.list_images(), {})


class AuthorizationTest(TemplateTestCase):

    def test_unauthorized_user_refused(self):
        before = store_state(self.store)
        for rules, error in (('', INTERACTIVE_REQUIRED),
                             (rule_for(USER, 'create-template', 'NO'), ACCESS_DENIED),
                             (rule_for(USER, 'manage-images', 'YES'), INTERACTIVE_REQUIRED)):
            with self.subTest(rules=rules):
                self.set_rules(rules)
                self.assertDBusError(error, self.user.manager, 'CreateTemplate', 'mine', SUITE, {})
        self.jobs.spin()
        self.assertEqual(self.jobs.new, [])
        self.assertUnchanged(self.store, before)

    def test_authorized_user_gets_a_job(self):
        # An unreachable mirror: the job starts, fails, and says why.
        self.allow(USER, 'create-template')
        options = {'mirror': GLib.Variant('s', 'http://127.0.0.1:9/debian'),
                   'bootable': GLib.Variant('b', False)}
        job_id, job = self.user.manager('CreateTemplate', 'mine', SUITE, options)
        self.assertEqual(self.jobs.wait(job_id), 'failed')
        self.assertIn('127.0.0.1:9', self.jobs.log_text(job, LOG_ERR))
        self.assertNothingLeft('mine')
        # its package cache is in the store, hidden, root's alone
        cache = os.path.join(self.store, '.stamp', 'cache')
        self.assertTrue(os.path.isdir(os.path.join(cache, 'mmdebstrap', '%s-%s' % (SUITE, host_arch()))))
        st = os.stat(cache)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (0, 0o700))


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
