#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""PullTar from a local HTTP server on 127.0.0.1: a good archive checked
against its SHA256SUMS, streamed straight into the import; every way a
download goes wrong (a wrong checksum, a corrupted archive, no SHA256SUMS, a
404, a connection cut midway) fails the job and leaves nothing; and a URL's
credentials and query reach the server but nobody else."""

import base64
import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading

import stamptest
from stamptest import (JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, PYTHON, STAMPCTL, USER2, GLib,
                       JobWatch, fd_list, make_image, store_state, subvolume_read_only, tree_listing,
                       wait_for, wrap_pdeathsig)

INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'


class Route:
    """What the server answers for one path."""

    def __init__(self, body, cut_at=None, hold_at=None):
        self.body = body
        self.cut_at = cut_at    # send this many bytes of a full Content-Length, then close
        self.hold_at = hold_at  # send this many bytes, wait for release, then the rest
        self.held = threading.Event()
        self.release = threading.Event()
        self.requests = 0
        self.authorization = []  # the Authorization header of each request (None: none)


class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route.requests += 1
        route.authorization.append(self.headers.get('Authorization'))
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(route.body)))
        self.end_headers()
        body = route.body
        try:
            if route.cut_at is not None:
                self.wfile.write(body[:route.cut_at])
                self.wfile.flush()
                self.close_connection = True
                return
            if route.hold_at is not None:
                self.wfile.write(body[:route.hold_at])
                self.wfile.flush()
                route.held.set()
                route.release.wait(stamptest.TIMEOUT)
                body = body[route.hold_at:]
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, fmt, *args):
        pass


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def tar_of(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                t.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class PullTestCase(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.server.routes = {}
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.addCleanup(self.release_all)
        self.base = 'http://127.0.0.1:%d' % self.server.server_address[1]

        # The archive to serve: made by the daemon's own export of an image.
        src = make_image(self.store, 'src')
        os.makedirs(os.path.join(src, 'srv/data'))
        with open(os.path.join(src, 'srv/data/random'), 'wb') as f:
            f.write(os.urandom(2 << 20))
        os.chown(os.path.join(src, 'srv/data/random'), 1234, 4321)
        self.src = src
        self.archive = self.export('src', 'zstd')

    def release_all(self):
        for route in self.server.routes.values():
            route.release.set()

    def export(self, name, fmt):
        path = os.path.join(self.dir, '%s.%s' % (name, fmt))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            job = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ExportTar', name, 0, fmt,
                                 fd_list=fd_list(fd))
        finally:
            os.close(fd)
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'done', log)
        with open(path, 'rb') as f:
            return f.read()

    def serve(self, path, body, **kw):
        route = Route(body, **kw)
        self.server.routes[path] = route
        return route

    def serve_sums(self, directory, entries):
        text = ''.join('%s  %s\n' % (digest, name) for name, digest in entries)
        return self.serve(directory + 'SHA256SUMS', text.encode())

    def pull(self, path, name, **options):
        opts = {k: GLib.Variant('b' if isinstance(v, bool) else 's', v) for k, v in options.items()}
        return self.root.manager('PullTar', self.base + path, name, opts)

    def assertPulled(self, job, name):
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'done', 'the pull failed: %s' % log)
        self.assertEqual(tree_listing(os.path.join(self.store, name)), tree_listing(self.src))
        self.assertIn(name, self.root.list_images())
        self.assertEqual(self.temporaries(), [])

    def assertPullFailed(self, job, name, *phrases):
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'failed', 'the pull should have failed; its log: %s' % log)
        for phrase in phrases:
            self.assertIn(phrase, log)
        self.assertNotIn(name, self.root.list_images())
        self.assertFalse(os.path.lexists(os.path.join(self.store, name)))
        self.assertEqual(self.temporaries(), [])
        return log

    def temporaries(self):
        return [n for n in os.listdir(self.store) if n.startswith('.#')]


class GoodPullTest(PullTestCase):

    def test_pull_verified_against_sha256sums(self):
        self.serve('/good/img.tar.zst', self.archive)
        self.serve_sums('/good/', [('other.tar.xz', '0' * 64),
                                   ('img.tar.zst', sha256(self.archive))])
        self.assertPulled(self.pull('/good/img.tar.zst', 'pulled'), 'pulled')
        self.assertFalse(subvolume_read_only(os.path.join(self.store, 'pulled')))

    def test_binary_marker_query_and_derived_name_and_read_only(self):
        self.serve('/v1/debian-12.tar.zst', self.archive)
        self.serve('/v1/SHA256SUMS', ('%s *debian-12.tar.zst\n' % sha256(self.archive)).encode())
        # the query string belongs to the archive's URL, not to SHA256SUMS'
        self.server.routes['/v1/debian-12.tar.zst?token=1'] = self.server.routes['/v1/debian-12.tar.zst']
        job = self.pull('/v1/debian-12.tar.zst?token=1', '', read_only=True)
        self.assertPulled(job, 'debian-12')
        self.assertTrue(subvolume_read_only(os.path.join(self.store, 'debian-12')))

    def test_verify_no_needs_no_sha256sums(self):
        self.serve('/plain/img.tar.zst', self.archive)
        self.assertPulled(self.pull('/plain/img.tar.zst', 'pulled', verify='no'), 'pulled')

    def test_streams_into_the_import_with_progress(self):
        """The server holds the rest of the archive back; meanwhile the first
        files are already in the new image's temporary, so the archive is
        never copied whole before it is extracted, and progress is known
        from Content-Length."""
        big = os.urandom(4 << 20)
        archive = tar_of([('etc/', None), ('etc/os-release', b'ID=streamed\n'),
                          ('srv/', None), ('srv/early', b'early\n'), ('srv/big', big)])
        route = self.serve('/slow/img.tar', archive, hold_at=len(archive) // 2)
        job = self.pull('/slow/img.tar', 'streamed', verify='no')
        route.held.wait(stamptest.TIMEOUT)

        def early_in_temporary():
            return [t for t in self.temporaries()
                    if os.path.exists(os.path.join(self.store, t, 'srv/early'))]
        wait_for(early_in_temporary, 'srv/early in the temporary while the download is held')
        progress = wait_for(lambda: 0 < self.job_progress(job) < 1 and self.job_progress(job),
                            'progress between 0 and 1')
        self.assertGreaterEqual(progress, 0.3)
        self.assertNotIn('streamed', self.root.list_images())
        # URLs may carry tokens: no process may show one on its command line, which anyone can read.
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    cmdline = f.read()
            except OSError:
                continue
            if b'stamp-transfer' in cmdline:
                self.assertNotIn(b'/slow/img.tar', cmdline, 'the URL is on the command line of %s' % pid)

        route.release.set()
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'done', log)
        with open(os.path.join(self.store, 'streamed/srv/big'), 'rb') as f:
            self.assertEqual(f.read(), big)

    def test_cancel_while_downloading(self):
        route = self.serve('/slow/img.tar.zst', self.archive, hold_at=len(self.archive) // 3)
        job = self.pull('/slow/img.tar.zst', 'canceled', verify='no')
        route.held.wait(stamptest.TIMEOUT)
        self.root.manager('CancelJob', job[0])
        result, _ = self.jobs.wait(job, timeout=stamptest.CANCEL_TIMEOUT)
        self.assertEqual(result, 'canceled')
        self.assertNotIn('canceled', self.root.list_images())
        self.assertEqual(self.temporaries(), [])

    def job_progress(self, job):
        try:
            return self.root.get_property(job[1], JOB_IFACE, 'Progress')
        except stamptest.DBusError:
            return -1


class BadPullTest(PullTestCase):

    def test_checksum_mismatch(self):
        # a perfectly good archive, just not the one SHA256SUMS names
        self.serve('/m/img.tar.zst', self.archive)
        self.serve_sums('/m/', [('img.tar.zst', sha256(b'something else'))])
        log = self.assertPullFailed(self.pull('/m/img.tar.zst', 'pulled'), 'pulled',
                                    'does not match its checksum')
        self.assertIn(sha256(self.archive), log)

    def test_corrupted_archive(self):
        corrupt = bytearray(self.archive)
        for i in range(len(corrupt) // 2, len(corrupt) // 2 + 64):
            corrupt[i] ^= 0xff
        self.serve('/c/img.tar.zst', bytes(corrupt))
        self.serve_sums('/c/', [('img.tar.zst', sha256(self.archive))])
        self.assertPullFailed(self.pull('/c/img.tar.zst', 'pulled'), 'pulled')

    def test_corrupted_archive_without_verification(self):
        # Without SHA256SUMS only the compression's own check can tell: xz
        # has one (libarchive writes zstd frames without a checksum).
        corrupt = bytearray(self.export('src', 'xz'))
        for i in range(len(corrupt) // 2, len(corrupt) // 2 + 64):
            corrupt[i] ^= 0xff
        self.serve('/c/img.tar.xz', bytes(corrupt))
        self.assertPullFailed(self.pull('/c/img.tar.xz', 'pulled', verify='no'), 'pulled',
                              'damaged')

    def test_missing_sha256sums(self):
        route = self.serve('/nosums/img.tar.zst', self.archive)
        self.assertPullFailed(self.pull('/nosums/img.tar.zst', 'pulled'), 'pulled',
                              'SHA256SUMS', 'HTTP 404')
        self.assertEqual(route.requests, 0, 'the archive was fetched without a checksum')

    def test_sha256sums_without_the_file(self):
        self.serve('/other/img.tar.zst', self.archive)
        self.serve_sums('/other/', [('img.tar.xz', sha256(self.archive)),
                                    ('img.tar.zst.asc', sha256(self.archive))])
        self.assertPullFailed(self.pull('/other/img.tar.zst', 'pulled'), 'pulled',
                              'has no checksum for img.tar.zst')

    def test_not_found(self):
        self.assertPullFailed(self.pull('/nothing/img.tar.zst', 'pulled', verify='no'), 'pulled',
                              'HTTP 404')

    def test_connection_cut_midway(self):
        self.serve('/cut/img.tar.zst', self.archive, cut_at=len(self.archive) // 2)
        self.assertPullFailed(self.pull('/cut/img.tar.zst', 'pulled', verify='no'), 'pulled',
                              'connection was cut', 'of %d bytes' % len(self.archive))
        # and with a checksum to check, the same
        self.serve_sums('/cut/', [('img.tar.zst', sha256(self.archive))])
        self.assertPullFailed(self.pull('/cut/img.tar.zst', 'pulled'), 'pulled',
                              'connection was cut')

    def test_hostile_archive_with_a_good_checksum(self):
        evil = tar_of([('etc/', None), ('/tmp/stamp-pull-escape', b'x')])
        self.serve('/evil/img.tar', evil)
        self.serve_sums('/evil/', [('img.tar', sha256(evil))])
        self.assertPullFailed(self.pull('/evil/img.tar', 'pulled'), 'pulled', 'absolute path')
        self.assertFalse(os.path.exists('/tmp/stamp-pull-escape'))


class SignalListener:
    """tests/listenas.py as a user: every signal the bus lets that user see."""

    def __init__(self, env, user):
        cmd = env.as_user(user, [PYTHON, os.path.join(stamptest.TESTS_DIR, 'listenas.py')])
        self.proc = subprocess.Popen(wrap_pdeathsig(cmd), stdout=subprocess.PIPE, text=True)
        self.lines = []
        ready = self.proc.stdout.readline()
        if json.loads(ready or '{}').get('ready') is not True:
            raise AssertionError('the signal listener did not start: %r' % ready)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=stamptest.TIMEOUT)
        self.thread.join(stamptest.TIMEOUT)
        return self.lines


def all_command_lines():
    """{pid: command line} of every process."""
    lines = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                lines[pid] = f.read().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            pass
    return lines


class SecretsTest(PullTestCase):
    """A URL's user:password@ and its query go to the server, and nowhere
    else: not in the LogMessage signals and PropertiesChanged that any user
    can receive, not in the job's ErrorMessage, not on any command line
    (stampctl's own included) while the job runs, not in stampd's log."""

    USER_NAME, PASSWORD, TOKEN = 'puller-name', 'pw-S3cr3t-4242', 'tok-Q9zW7'

    def setUp(self):
        super().setUp()
        self.secrets = (self.PASSWORD, self.TOKEN, self.USER_NAME)
        self.listener = SignalListener(self.env, USER2)
        self.addCleanup(self.listener.stop)
        self.port = self.server.server_address[1]

    def secret_url(self, path):
        return 'http://%s:%s@127.0.0.1:%d%s?token=%s' % (self.USER_NAME, self.PASSWORD, self.port, path,
                                                          self.TOKEN)

    def shown_url(self, path):
        return 'http://***@127.0.0.1:%d%s?\u2026' % (self.port, path)

    def assertNoSecret(self, text, where):
        for secret in self.secrets:
            self.assertNotIn(secret, text, 'a secret of the URL in %s: %s' % (where, text))

    def assertCredentialsSent(self, route):
        expected = 'Basic ' + base64.b64encode(('%s:%s' % (self.USER_NAME, self.PASSWORD)).encode()).decode()
        self.assertTrue(route.authorization, 'the server was never asked')
        self.assertEqual(set(route.authorization), {expected})

    def heard(self):
        """What the other user received, once stampd's last signals are in."""
        lines = self.listener.stop()
        self.assertTrue(any(line.get('member') == 'JobRemoved' for line in lines),
                        'the listener heard no job end: %s' % lines)
        return lines

    def test_good_pull_through_stampctl(self):
        route = self.serve('/sec/img.tar.zst?token=' + self.TOKEN, self.archive,
                           hold_at=len(self.archive) // 2)
        sums = self.serve_sums('/sec/', [('img.tar.zst', sha256(self.archive))])
        ctl = subprocess.Popen(wrap_pdeathsig([STAMPCTL, 'pull-tar', self.secret_url('/sec/img.tar.zst'),
                                               'secret']),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: ctl.poll() is None and ctl.kill())
        self.assertTrue(route.held.wait(stamptest.TIMEOUT), 'the download never started')
        # While the download runs: stampctl, stampd, stamp-transfer and its downloader all exist.
        lines = all_command_lines()
        self.assertTrue([c for c in lines.values() if 'stamp-transfer' in c], lines)
        self.assertTrue([c for c in lines.values() if 'pull-tar' in c], lines)
        for pid, cmdline in lines.items():
            self.assertNoSecret(cmdline, '/proc/%s/cmdline' % pid)
        route.release.set()
        out, err = ctl.communicate(timeout=stamptest.TIMEOUT * 5)
        self.assertEqual(ctl.returncode, 0, err)
        self.assertNoSecret(out + err, "stampctl's output")
        self.assertEqual(tree_listing(os.path.join(self.store, 'secret')), tree_listing(self.src))
        self.assertCredentialsSent(route)
        self.assertCredentialsSent(sums)

        heard = self.heard()
        logs = [line['args'] for line in heard if line.get('member') == 'LogMessage']
        # It heard the job's log, URL and all, redacted.
        self.assertTrue([t for t in logs if 'http://***@127.0.0.1:%d/sec/SHA256SUMS' % self.port in t], logs)
        for line in heard:
            self.assertNoSecret(json.dumps(line), 'a signal another user received')
        self.assertNoSecret(self.daemon.log(), "stampd's log")

    def test_failed_pulls(self):
        # a 404 (whose message names the URL) and a checksum mismatch (likewise)
        self.serve('/sec/bad.tar.zst?token=' + self.TOKEN, self.archive)
        sums = self.serve_sums('/sec/', [('bad.tar.zst', sha256(b'not this'))])
        cases = [('/sec/missing.tar', {'verify': GLib.Variant('s', 'no')}, 'HTTP 404'),
                 ('/sec/bad.tar.zst', {}, 'does not match its checksum')]
        errors = {}
        for path, opts, phrase in cases:
            job = self.root.manager('PullTar', self.secret_url(path), 'failed', opts)
            log = self.assertPullFailed(job, 'failed', phrase, self.shown_url(path))
            self.assertNoSecret(log, 'the log of %s' % path)
            self.assertNoSecret(self.jobs.final_error(job), 'the final error of %s' % path)
            errors[job[1]] = path
        self.assertCredentialsSent(sums)
        # through stampctl: it exits 1 and says why, with the URL as shown everywhere
        p = stamptest.run([STAMPCTL, 'pull-tar', '--verify=no', self.secret_url('/sec/missing.tar'), 'failed'],
                          check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(self.shown_url('/sec/missing.tar'), p.stderr)
        self.assertNoSecret(p.stdout + p.stderr, "stampctl's output")
        self.assertNotIn('failed', self.root.list_images())

        heard = self.heard()
        for line in heard:
            self.assertNoSecret(json.dumps(line), 'a signal another user received')
        # ErrorMessage, as PropertiesChanged broadcast it when each job failed
        messages = {line['path']: line['args'] for line in heard
                    if line.get('member') == 'PropertiesChanged' and 'ErrorMessage' in line['args']
                    and line['path'] in errors}
        self.assertEqual(set(messages), set(errors), heard)
        for job_path, args in messages.items():
            self.assertIn(self.shown_url(errors[job_path]), args)
        self.assertNoSecret(self.daemon.log(), "stampd's log")

    def test_refused_url_and_polkit_details(self):
        # An invalid URL's error names it without its secrets too.
        e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'PullTar',
                                 'ftp://%s:%s@127.0.0.1/x.tar?token=%s' % (self.USER_NAME, self.PASSWORD,
                                                                           self.TOKEN), 'x', {})
        self.assertIn('ftp://***@127.0.0.1/x.tar?\u2026', e.message)
        self.assertNoSecret(e.message, 'the error reply')
        # A '/' in the password makes it a port to any URL parser, which then says so.
        e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'PullTar',
                                 'http://%s:%s/x@127.0.0.1/x.tar' % (self.USER_NAME, self.PASSWORD), 'x', {})
        self.assertIn('Invalid URL "http://***@127.0.0.1/x.tar"', e.message)
        self.assertNoSecret(e.message, 'the error reply')
        # What polkit is told (and may show an administrator asked to authenticate).
        self.set_rules('''polkit.addRule(function(action, subject) {
    if (action.id == "io.stamp.Stamp1.pull" && subject.user == "%s") {
        polkit.log("PULL-DETAILS url=" + action.lookup("url"));
        return polkit.Result.NO;
    }
});''' % stamptest.USER)
        self.assertDBusError(stamptest.ACCESS_DENIED, self.user.manager, 'PullTar',
                             self.secret_url('/sec/img.tar'), 'x', {})
        polkit_log = wait_for(lambda: 'PULL-DETAILS' in self.env.log('polkitd') and self.env.log('polkitd'),
                              'polkitd to log the details')
        self.assertIn('PULL-DETAILS url=' + self.shown_url('/sec/img.tar'), polkit_log)
        self.assertNoSecret(polkit_log, "polkitd's log")


class ArgumentsTest(PullTestCase):

    def test_refused_urls_and_options(self):
        before = store_state(self.store)
        cases = [
            ('ftp://127.0.0.1/img.tar', 'pulled', {}, 'only http and https'),
            ('file:///etc/passwd', 'pulled', {}, 'only http and https'),
            ('gopher://127.0.0.1/img.tar', 'pulled', {}, 'only http and https'),
            ('/img.tar', 'pulled', {}, 'Invalid URL'),
            ('http://127.0.0.1/', 'pulled', {}, 'names no file'),
            (self.base + '/img.tar', 'pulled', {'verify': GLib.Variant('s', 'gpg')}, 'verify'),
            (self.base + '/img.tar', 'pulled', {'colour': GLib.Variant('s', 'red')}, 'colour'),
        ]
        for url, name, opts, phrase in cases:
            with self.subTest(url=url, opts=opts):
                e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'PullTar', url, name, opts)
                self.assertIn(phrase, e.message)
        self.assertDBusError(stamptest.STAMP_ERROR + 'InvalidName', self.root.manager, 'PullTar',
                             self.base + '/x/.hidden.tar', '', {})
        self.assertDBusError(stamptest.STAMP_ERROR + 'ImageExists', self.root.manager, 'PullTar',
                             self.base + '/x/src.tar', '', {})
        after = store_state(self.store)
        self.assertEqual(after, before)
        self.assertEqual(sum(r.requests for r in self.server.routes.values()), 0)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
