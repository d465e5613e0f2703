#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Derived templates over the network (slow suite): apt inside a snapshot of
a template installs a package through a counting HTTP proxy of the test's
own; the package cache in the store serves a second build without any
download, also after a daemon restart; a corrupt cached .deb is fetched
again, never installed; CleanCache empties the cache."""

import glob
import hashlib
import http.client
import http.server
import os
import threading
import urllib.parse

import stamptest
from stamptest import STAMPCTL, run
from templatetest import SUITE, TemplateTestCase, host_arch

MANAGER = ('/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager')


class CountingProxy:
    """A plain-http forward proxy on the loopback that notes each request."""

    def __init__(self):
        self.requests = []  # (path, status)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._forward(body=True)

            def do_HEAD(self):
                self._forward(body=False)

            def _forward(self, body):
                url = urllib.parse.urlsplit(self.path)
                conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ('proxy-connection', 'connection', 'keep-alive')}
                path = url.path + ('?' + url.query if url.query else '')
                try:
                    conn.request(self.command, path, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError as e:
                    self.send_error(502, str(e))
                    return
                finally:
                    conn.close()
                proxy.requests.append((url.path, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ('transfer-encoding', 'connection', 'content-length'):
                        self.send_header(k, v)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                if body and self.command != 'HEAD':
                    self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return 'http://127.0.0.1:%d/' % self.server.server_address[1]

    def debs(self):
        return [p for p, status in self.requests if p.endswith('.deb') and status == 200]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def packages(tree):
    p = run(['chroot', tree, 'dpkg-query', '-W', '-f', '${Package} ${db:Status-Abbrev}\n'])
    return {line.split()[0] for line in p.stdout.splitlines() if line.split()[1:2] == ['ii']}


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class DerivedOnlineTest(TemplateTestCase):

    def restart_with_proxy(self):
        self.stop_daemon(self.daemon)
        env = dict(os.environ, http_proxy=self.proxy.url)
        self.daemon = self.start_daemon(store=self.store, environ=env)

    def derive(self, name, packages_, **options):
        job_id, job = self.create(name, suite='', include=packages_, **{'from': 'base'}, **options)
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        return job

    def archives(self):
        return os.path.join(self.store, '.stamp', 'cache', 'apt', '%s-%s' % (SUITE, host_arch()),
                            'archives')

    def test_derived_build_cache_and_corruption(self):
        self.proxy = CountingProxy()
        self.addCleanup(self.proxy.close)
        self.restart_with_proxy()
        job_id, job = self.create_offline('base', bootable=False)
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])

        # the first derived build downloads the package
        job = self.derive('dev', ['hello'])
        self.assertEqual([os.path.basename(p).split('_')[0] for p in self.proxy.debs()], ['hello'])
        progress = self.jobs.progress[job]
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(progress[-1], 1.0)
        self.assertGreater(len({p for p in progress if 0 < p < 1}), 3, progress)
        base, dev = packages(self.path('base')), packages(self.path('dev'))
        self.assertEqual(dev - base, {'hello'})
        self.assertEqual(base - dev, set())
        recipe = self.root.image_props('dev')['Recipe']
        self.assertEqual((recipe['from'], recipe['added']), ('base', ['hello']))
        self.assertIn('hello', recipe['include'])
        self.assertTrue(self.root.image_props('dev')['Template'])
        # what apt used stays in the cache, not in the template
        tree = self.path('dev')
        self.assertEqual(glob.glob(os.path.join(tree, 'var/cache/apt/archives/*.deb')), [])
        lists = 'var/lib/apt/lists'
        self.assertEqual(sorted(os.listdir(os.path.join(tree, lists))),
                         sorted(os.listdir(os.path.join(self.path('base'), lists))))
        self.assertEqual(glob.glob(os.path.join(tree, 'var/cache/apt/*.bin')), [])
        with open(os.path.join(tree, 'etc/apt/sources.list')) as f, \
                open(os.path.join(self.path('base'), 'etc/apt/sources.list')) as g:
            self.assertEqual(f.read(), g.read())
        cached = glob.glob(os.path.join(self.archives(), 'hello_*.deb'))
        self.assertEqual(len(cached), 1)
        usage = self.root.get_property(*MANAGER, 'CacheUsage')
        self.assertGreater(usage, os.path.getsize(cached[0]))
        good = sha256(os.path.join(tree, 'usr/bin/hello'))

        # after a restart, a second build of the same packages downloads none, through stampctl
        self.restart_with_proxy()
        before = len(self.proxy.requests)
        run([STAMPCTL, 'create-template', 'dev2', '--from', 'base', '--include', 'hello'])
        self.assertEqual([p for p, _ in self.proxy.requests[before:] if p.endswith('.deb')], [])
        self.assertIn('hello', packages(self.path('dev2')))

        # a corrupt cached package (same size) is noticed, fetched again and never installed
        with open(cached[0], 'r+b') as f:
            f.seek(os.path.getsize(cached[0]) // 2)
            f.write(b'\0corrupt\0')
        before = len(self.proxy.requests)
        job = self.derive('dev3', ['hello'])
        self.assertIn('fetching it again', self.jobs.log_text(job))
        self.assertEqual([os.path.basename(p).split('_')[0] for p in self.proxy.debs()[-1:]], ['hello'])
        self.assertTrue(any(p.endswith('.deb') for p, _ in self.proxy.requests[before:]))
        self.assertEqual(sha256(os.path.join(self.path('dev3'), 'usr/bin/hello')), good)

        # and CleanCache empties it
        self.root.manager('CleanCache', {})
        self.assertEqual(glob.glob(os.path.join(self.archives(), '*.deb')), [])
        self.assertEqual(self.root.get_property(*MANAGER, 'CacheUsage'), 0)


    def test_derived_from_an_online_template(self):
        # mmdebstrap leaves no /etc/resolv.conf: apt's download in the jail resolves through the host's
        job_id, job = self.create('mm', bootable=False)
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        had = os.path.lexists(os.path.join(self.path('mm'), 'etc/resolv.conf'))
        job_id, job = self.create('mmdev', suite='', include=['hello'], **{'from': 'mm'})
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        self.assertEqual(packages(self.path('mmdev')) - packages(self.path('mm')), {'hello'})
        self.assertEqual(os.path.lexists(os.path.join(self.path('mmdev'), 'etc/resolv.conf')), had)
        self.assertEqual(self.root.image_props('mmdev')['Recipe']['from'], 'mm')
        self.assertEqual(self.temporaries(), [])


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
