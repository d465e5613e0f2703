#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""PushImage and PullImage against a real registry (Debian's docker-registry,
started here on 127.0.0.1) with skopeo as the independent client: a template
pushed is a valid OCI image that skopeo reads and copies, and pulled on a
second store gives the same tree; an image skopeo pushed from an OCI layout
made here (whiteouts, opaque directories, hard links, xattrs) is applied
layer over layer; corrupt blobs, wrong digests, hostile layers, unknown media
types and refused credentials each fail with a named error and leave nothing;
the caller's authorization and bad references are refused before anything
happens."""

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request

import stamptest
from stamptest import (ACCESS_DENIED, STAMP_ERROR, STAMPCTL, USER, GLib, JobWatch,
                       make_image, run, store_state, subvolume_read_only, tree_listing, wait_for)

INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
AUTH_FAILED = 'org.freedesktop.DBus.Error.AuthFailed'
OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip'
LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar'
MTIME = 1_700_000_000


def stat_mode(path):
    return os.stat(path).st_mode & 0o7777


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def sha256(data):
    return 'sha256:' + hashlib.sha256(data).hexdigest()


class Registry:
    """docker-registry serving a directory of its own on a free port."""

    def __init__(self, test, htpasswd=None, tls=False):
        self.dir = os.path.join(test.dir, 'registry-%d' % len(test.registries))
        os.makedirs(self.dir)
        self.storage = os.path.join(self.dir, 'storage')
        self.port = free_port()
        self.host = '127.0.0.1:%d' % self.port
        config = ['version: 0.1',
                  'log: {level: info}',
                  'storage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}' % self.storage,
                  'http: {addr: "%s"}' % self.host]
        self.scheme = 'http'
        if tls:
            cert, key = os.path.join(self.dir, 'cert.pem'), os.path.join(self.dir, 'key.pem')
            run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
                 '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert])
            config[-1] = 'http: {addr: "%s", tls: {certificate: %s, key: %s}}' % (self.host, cert, key)
            self.scheme = 'https'
        if htpasswd:
            path = os.path.join(self.dir, 'htpasswd')
            user, password = htpasswd
            run(['htpasswd', '-Bbc', path, user, password])
            config.append('auth: {htpasswd: {realm: stamp-test, path: %s}}' % path)
        conf = os.path.join(self.dir, 'config.yml')
        with open(conf, 'w') as f:
            f.write('\n'.join(config) + '\n')
        self.log = os.path.join(self.dir, 'registry.log')
        test.attach_log(self.log)
        with open(self.log, 'w') as log:
            self.proc = subprocess.Popen(['docker-registry', 'serve', conf], stdout=log,
                                         stderr=subprocess.STDOUT)
        test.addCleanup(self.stop)
        wait_for(self.answers, 'the registry to answer')

    def answers(self):
        if self.proc.poll() is not None:
            raise AssertionError('docker-registry exited with %s' % self.proc.returncode)
        try:
            import ssl
            urllib.request.urlopen('%s://%s/v2/' % (self.scheme, self.host), timeout=5,
                                   context=ssl._create_unverified_context())
            return True
        except urllib.error.HTTPError:
            return True  # 401: up, with auth
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def blob_path(self, digest):
        hexd = digest.split(':', 1)[1]
        return os.path.join(self.storage, 'docker/registry/v2/blobs/sha256', hexd[:2], hexd, 'data')

    # A client of our own for what skopeo will not make: hostile and odd manifests.
    def put_blob(self, repo, data):
        digest = sha256(data)
        req = urllib.request.Request('http://%s/v2/%s/blobs/uploads/' % (self.host, repo),
                                     method='POST', data=b'')
        with urllib.request.urlopen(req) as resp:
            location = resp.headers['Location']
        if location.startswith('/'):
            location = 'http://%s%s' % (self.host, location)
        sep = '&' if '?' in location else '?'
        req = urllib.request.Request(location + sep + 'digest=' + digest, method='PUT', data=data,
                                     headers={'Content-Type': 'application/octet-stream'})
        urllib.request.urlopen(req).close()
        return digest

    def put_manifest(self, repo, tag, manifest, media_type=OCI_MANIFEST):
        body = json.dumps(manifest).encode()
        req = urllib.request.Request('http://%s/v2/%s/manifests/%s' % (self.host, repo, tag),
                                     method='PUT', data=body, headers={'Content-Type': media_type})
        urllib.request.urlopen(req).close()
        return sha256(body)

    def put_image(self, repo, tag, layers, layer_types=None, config=None, annotations=None):
        """layers: bytes each (already compressed as layer_types say). The config names the layers'
        diff_ids unless it is given."""
        def diff_id(data):
            try:
                return sha256(gzip.decompress(data))
            except OSError:
                return sha256(data)
        config = json.dumps(config or {'architecture': 'amd64', 'os': 'linux', 'rootfs': {
            'type': 'layers', 'diff_ids': [diff_id(data) for data in layers]}}).encode()
        cdigest = self.put_blob(repo, config)
        descs = []
        for i, data in enumerate(layers):
            descs.append({'mediaType': (layer_types or [LAYER_GZIP] * len(layers))[i],
                          'digest': self.put_blob(repo, data), 'size': len(data)})
        manifest = {'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
                    'config': {'mediaType': OCI_CONFIG, 'digest': cdigest, 'size': len(config)},
                    'layers': descs}
        if annotations:
            manifest['annotations'] = annotations
        return self.put_manifest(repo, tag, manifest)


class TokenProxy(http.server.BaseHTTPRequestHandler):
    """The distribution spec's bearer-token flow in front of a registry: /v2/
    wants a token, /token hands one out (to the right user, if one is set)."""

    protocol_version = 'HTTP/1.1'

    def do_token(self):
        srv = self.server
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        srv.token_requests.append(query)
        auth = self.headers.get('Authorization')
        if srv.basic and auth != 'Basic ' + base64.b64encode(srv.basic.encode()).decode():
            return self.answer(401, b'{}')
        return self.answer(200, json.dumps({'token': srv.token}).encode())

    def answer(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def forward(self):
        srv = self.server
        if self.path.startswith('/token'):
            return self.do_token()
        if srv.refuse_patch and self.command == 'PATCH':
            self.close_connection = True  # its chunked body is left unread
            return self.answer(405, b'{"errors":[{"code":"UNSUPPORTED"}]}')
        if srv.token and self.headers.get('Authorization') != 'Bearer ' + srv.token:
            realm = 'http://%s/token' % srv.host
            return self.answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', [
                ('WWW-Authenticate', 'Bearer realm="%s",service="stamp-test",scope="repository:%s:pull"'
                 % (realm, srv.repo))])
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        conn = http.client.HTTPConnection(srv.backend)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ('authorization', 'expect')}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if srv.hold and self.command == 'GET' and self.path.endswith('/blobs/' + srv.hold):
            self.send_response(resp.status)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            srv.held.set()
            srv.release.wait(stamptest.TIMEOUT)
            self.close_connection = True
            return
        self.answer(resp.status, data, [(k, v) for k, v in resp.getheaders()
                                        if k.lower() not in ('content-length', 'transfer-encoding', 'connection')])
        conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = forward

    def log_message(self, fmt, *args):
        pass


def token_proxy(test, backend, repo, basic=None):
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), TokenProxy)
    srv.daemon_threads = True
    srv.backend = backend
    srv.repo = repo
    srv.basic = basic
    srv.token = 'tok-' + os.urandom(12).hex()
    srv.token_requests = []
    srv.hold = None
    srv.refuse_patch = False
    srv.held = threading.Event()
    srv.release = threading.Event()
    test.addCleanup(srv.release.set)
    srv.host = '127.0.0.1:%d' % srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    test.addCleanup(srv.server_close)
    test.addCleanup(srv.shutdown)
    return srv


def tar_bytes(entries):
    """entries: (name, kind, payload, extra) with kind file/dir/link/hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
        for name, kind, payload, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.uid = info.gid = 0
            if extra:
                info.pax_headers = dict(extra)
            if kind == 'dir':
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                t.addfile(info)
            elif kind == 'link':
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                t.addfile(info)
            elif kind == 'hardlink':
                info.type = tarfile.LNKTYPE
                info.linkname = payload
                t.addfile(info)
            else:
                info.size = len(payload)
                info.mode = (extra or {}).pop('mode', 0o644) if extra else 0o644
                info.pax_headers = dict(extra or {})
                t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def gz(data):
    return gzip.compress(data, mtime=0)


def busybox_entries():
    with open('/bin/busybox', 'rb') as f:
        bb = f.read()
    return [('bin', 'dir', None, None), ('bin/busybox', 'file', bb, {'mode': 0o755}),
            ('bin/sh', 'link', 'busybox', None), ('etc', 'dir', None, None),
            ('usr', 'dir', None, None), ('usr/lib', 'dir', None, None),
            ('usr/lib/os-release', 'file', b'ID=ocitest\n', None)]


def write_oci_layout(path, tag, layers, diff_ids=None):
    """An OCI image layout with one manifest of layers [(media type, bytes)]; the config names
    @diff_ids instead of the layers' own if given (a config that lies)."""
    blobs = os.path.join(path, 'blobs', 'sha256')
    os.makedirs(blobs)
    given = diff_ids

    def blob(data):
        d = sha256(data)
        with open(os.path.join(blobs, d.split(':')[1]), 'wb') as f:
            f.write(data)
        return d
    diff_ids = []
    descs = []
    for media_type, data in layers:
        raw = gzip.decompress(data) if media_type.endswith('+gzip') else data
        diff_ids.append(sha256(raw))
        descs.append({'mediaType': media_type, 'digest': blob(data), 'size': len(data)})
    config = json.dumps({'architecture': 'amd64', 'os': 'linux',
                         'rootfs': {'type': 'layers', 'diff_ids': given or diff_ids}}).encode()
    manifest = json.dumps({'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
                           'config': {'mediaType': OCI_CONFIG, 'digest': blob(config),
                                      'size': len(config)},
                           'layers': descs}).encode()
    mdigest = blob(manifest)
    with open(os.path.join(path, 'oci-layout'), 'w') as f:
        json.dump({'imageLayoutVersion': '1.0.0'}, f)
    with open(os.path.join(path, 'index.json'), 'w') as f:
        json.dump({'schemaVersion': 2, 'manifests': [
            {'mediaType': OCI_MANIFEST, 'digest': mdigest, 'size': len(manifest),
             'annotations': {'org.opencontainers.image.ref.name': tag}}]}, f)


class OciTestCase(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.registries = []
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)

    def registry(self, **kw):
        r = Registry(self, **kw)
        self.registries.append(r)
        return r

    def options(self, **options):
        return {k: GLib.Variant('b' if isinstance(v, bool) else 's', v) for k, v in options.items()}

    def push(self, name, ref, **options):
        options.setdefault('insecure', True)
        return self.root.manager('PushImage', name, ref, self.options(**options))

    def pull(self, ref, name, **options):
        options.setdefault('insecure', True)
        return self.root.manager('PullImage', ref, name, self.options(**options))

    def assertDone(self, job):
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'done', 'the job failed: %s' % log)
        return log

    def assertFailed(self, job, store, name, error, *phrases):
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'failed', 'the job should have failed; its log: %s' % log)
        self.assertEqual(self.jobs.error_name(job), error, log)
        for phrase in phrases:
            self.assertIn(phrase, log)
        self.assertFalse(os.path.lexists(os.path.join(store, name)))
        self.assertEqual([n for n in os.listdir(store) if n.startswith('.#')], [])
        return log

    def make_template(self, store, name):
        path = make_image(store, name)
        with open(os.path.join(path, 'srv/data'), 'wb') as f:
            f.write(os.urandom(256 << 10))
        os.chown(os.path.join(path, 'srv/data'), 1234, 4321)
        os.link(os.path.join(path, 'srv/data'), os.path.join(path, 'srv/data-link'))
        os.setxattr(os.path.join(path, 'srv/marker'), 'user.stamp-test', b'kept')
        uuid = stamptest.subvolume_show(path)['UUID'].replace('-', '')
        recipe = "{'suite': <'bookworm'>, 'variant': <'minbase'>, 'uuid': <'%s'>}" % uuid
        os.setxattr(path, 'user.stamp.recipe', recipe.encode())
        run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'])
        return path


class PushPullTest(OciTestCase):

    def test_template_push_is_valid_oci_and_pulls_into_the_same_tree(self):
        reg = self.registry()
        daemon = self.start_daemon()
        src = self.make_template(daemon.store, 'tmpl')
        want = tree_listing(src)
        self.assertTrue(self.root.image_props('tmpl')['Template'])
        log = self.assertDone(self.push('tmpl', reg.host + '/stamp/tmpl:v1'))
        # uploaded while it was made, in one chunked PATCH
        self.assertNotIn('once it is made', log)
        self.assertNotIn('sending it again', log)
        with open(reg.log) as f:
            self.assertEqual(sum(1 for line in f if '"PATCH /v2/stamp/tmpl/blobs/uploads/' in line), 1)

        # skopeo reads it back: an OCI manifest, one gzip layer, our config and annotations.
        raw = json.loads(subprocess.check_output(
            ['skopeo', 'inspect', '--tls-verify=false', '--raw', 'docker://%s/stamp/tmpl:v1' % reg.host]))
        self.assertEqual(raw['mediaType'], OCI_MANIFEST)
        self.assertEqual([layer['mediaType'] for layer in raw['layers']], [LAYER_GZIP])
        self.assertEqual(raw['annotations']['io.stamp.kind'], 'template')
        self.assertEqual(raw['annotations']['io.stamp.name'], 'tmpl')
        self.assertIn("'bookworm'", raw['annotations']['io.stamp.recipe'])
        config = json.loads(subprocess.check_output(
            ['skopeo', 'inspect', '--tls-verify=false', '--config', '--raw',
             'docker://%s/stamp/tmpl:v1' % reg.host]))
        self.assertEqual((config['architecture'], config['os']), ('amd64', 'linux'))
        layer = open(reg.blob_path(raw['layers'][0]['digest']), 'rb').read()
        self.assertEqual(config['rootfs']['diff_ids'], [sha256(gzip.decompress(layer))])
        # skopeo copies it into a layout, checking every digest on the way.
        run(['skopeo', 'copy', '--src-tls-verify=false', 'docker://%s/stamp/tmpl:v1' % reg.host,
             'oci:%s:v1' % os.path.join(self.dir, 'copy')])

        # A second store, a second daemon: the pull fetches everything and makes the same tree.
        self.stop_daemon(daemon)
        store2 = os.path.join(self.dir, 'store2')
        os.makedirs(store2)
        daemon2 = self.start_daemon(store=store2)
        self.jobs.close()
        self.jobs = JobWatch(self.env.conn)  # job ids start again at 1
        log = self.assertDone(self.pull(reg.host + '/stamp/tmpl:v1', ''))
        self.assertIn('Fetched %d bytes of layers' % len(layer), log)
        self.assertEqual(tree_listing(os.path.join(store2, 'tmpl')), want)
        self.assertTrue(subvolume_read_only(os.path.join(store2, 'tmpl')))
        self.assertEqual(os.getxattr(os.path.join(store2, 'tmpl/srv/marker'), 'user.stamp-test'), b'kept')
        st1 = os.stat(os.path.join(store2, 'tmpl/srv/data'))
        st2 = os.stat(os.path.join(store2, 'tmpl/srv/data-link'))
        self.assertEqual(st1.st_ino, st2.st_ino)
        props = self.root.image_props('tmpl')
        self.assertTrue(props['Template'], 'a pulled template is a template again')
        # Pushed again from here, it is the same layer under the same diff_id; also where the record
        # is one of an earlier version, which named the layer's digest as its diff_id.
        record = os.path.join(store2, '.stamp/oci-layers/tmpl')
        for repo in ('again', 'old-record'):
            if repo == 'old-record':
                lines = open(record).read().split('\n')
                self.assertEqual(lines[2], config['rootfs']['diff_ids'][0])
                lines[2] = lines[1]
                with open(record, 'w') as f:
                    f.write('\n'.join(lines))
            log = self.assertDone(self.push('tmpl', reg.host + '/stamp/%s:v1' % repo))
            self.assertIn('Template tmpl is layer %s' % raw['layers'][0]['digest'], log)
            config2 = json.loads(subprocess.check_output(
                ['skopeo', 'inspect', '--tls-verify=false', '--config', '--raw',
                 'docker://%s/stamp/%s:v1' % (reg.host, repo)]))
            self.assertEqual(config2['rootfs']['diff_ids'], config['rootfs']['diff_ids'])

        # Pulled again by digest under another name: every blob is in the cache, nothing is fetched.
        digest = self.manifest_digest(reg, 'stamp/tmpl', 'v1')
        log = self.assertDone(self.pull(reg.host + '/stamp/tmpl@' + digest, 'again'))
        self.assertIn('Fetched 0 bytes of layers', log)
        self.assertEqual(tree_listing(os.path.join(store2, 'again')), want)
        self.assertTrue(daemon2.running())

    def restart_on(self, daemon, store_name):
        """Stop daemon; a new one on a new, empty store (one stampd per bus)."""
        self.stop_daemon(daemon)
        store = os.path.join(self.dir, store_name)
        os.makedirs(store)
        new = self.start_daemon(store=store)
        self.jobs.close()
        self.jobs = JobWatch(self.env.conn)  # job ids start again at 1
        return new

    def blob_gets(self, reg, digest):
        with open(reg.log) as f:
            return sum(1 for line in f if '"GET /v2/' in line and '/blobs/' + digest in line)

    def test_clone_is_its_templates_layer_plus_its_changes(self):
        reg = self.registry()
        daemon = self.start_daemon()
        store = daemon.store
        self.make_template(store, 'tmpl')
        self.root.manager('CloneImage', 'tmpl', 'web', False)
        web = os.path.join(store, 'web')
        with open(os.path.join(web, 'srv/new'), 'wb') as f:
            f.write(os.urandom(64 << 10))
        with open(os.path.join(web, 'srv/marker'), 'w') as f:
            f.write('changed\n')
        os.unlink(os.path.join(web, 'etc/hostname'))
        os.makedirs(os.path.join(web, 'srv/newdir/deeper'))
        os.link(os.path.join(web, 'srv/new'), os.path.join(web, 'srv/newdir/new-link'))
        run(['rm', '-rf', os.path.join(web, 'usr')])
        os.setxattr(os.path.join(web, 'srv/new'), 'user.stamp-test', b'new')
        want_web, want_tmpl = tree_listing(web), tree_listing(os.path.join(store, 'tmpl'))

        self.assertDone(self.push('tmpl', reg.host + '/stamp/tmpl:v1'))
        log = self.assertDone(self.push('web', reg.host + '/stamp/web:v1'))
        self.assertIn('Template tmpl is layer', log)
        inspect = ['skopeo', 'inspect', '--tls-verify=false', '--raw']
        tm = json.loads(subprocess.check_output(inspect + ['docker://%s/stamp/tmpl:v1' % reg.host]))
        wm = json.loads(subprocess.check_output(inspect + ['docker://%s/stamp/web:v1' % reg.host]))
        self.assertEqual(len(wm['layers']), 2)
        self.assertEqual(wm['layers'][0], tm['layers'][0], "the clone's first layer is the template's")
        self.assertEqual(wm['annotations']['io.stamp.kind'], 'clone')
        self.assertEqual(wm['annotations']['io.stamp.origin'], 'tmpl')
        delta = wm['layers'][1]
        with tarfile.open(reg.blob_path(delta['digest'])) as t:
            names = t.getnames()
        self.assertIn('etc/.wh.hostname', names)
        self.assertIn('.wh.usr', names)
        self.assertNotIn('usr/lib/.wh.os-release', names, 'only the top of a removed tree')
        self.assertIn('srv/new', names)
        self.assertNotIn('bin/busybox', names, 'nothing unchanged')
        self.assertLess(delta['size'], tm['layers'][0]['size'] / 4)
        run(['skopeo', 'copy', '--src-tls-verify=false', 'docker://%s/stamp/web:v1' % reg.host,
             'oci:%s:v1' % os.path.join(self.dir, 'copy')])

        # A host that has the template fetches the clone's own layer alone.
        daemon2 = self.restart_on(daemon, 'store2')
        self.assertDone(self.pull(reg.host + '/stamp/tmpl:v1', ''))
        gets = self.blob_gets(reg, tm['layers'][0]['digest'])
        log = self.assertDone(self.pull(reg.host + '/stamp/web:v1', ''))
        self.assertIn('Fetched %d bytes of layers' % delta['size'], log)
        self.assertEqual(self.blob_gets(reg, tm['layers'][0]['digest']), gets, 'the template layer again')
        self.assertEqual(tree_listing(os.path.join(daemon2.store, 'web')), want_web)
        self.assertEqual(self.root.image_props('web')['Origin'], 'tmpl')
        self.assertFalse(subvolume_read_only(os.path.join(daemon2.store, 'web')))

        # A host without it makes the template too, read-only, and the clone of it.
        daemon3 = self.restart_on(daemon2, 'store3')
        added, unsubscribe = self.env.subscribe(stamptest.MANAGER_IFACE, 'ImageAdded', stamptest.MANAGER_PATH)
        self.addCleanup(unsubscribe)
        log = self.assertDone(self.pull(reg.host + '/stamp/web:v1', 'web2'))
        stamptest.spin_until(lambda: len(added) >= 2, 'ImageAdded of both')
        self.assertEqual(sorted(name for name, _ in added), ['tmpl', 'web2'])
        self.assertIn('Making template tmpl', log)
        self.assertEqual(tree_listing(os.path.join(daemon3.store, 'web2')), want_web)
        self.assertEqual(tree_listing(os.path.join(daemon3.store, 'tmpl')), want_tmpl)
        self.assertTrue(subvolume_read_only(os.path.join(daemon3.store, 'tmpl')))
        self.assertEqual(self.root.image_props('web2')['Origin'], 'tmpl')
        # and a second clone of it then needs its own layer only
        log = self.assertDone(self.pull(reg.host + '/stamp/web:v1', 'web3'))
        self.assertIn('only the clone\'s own layer is needed', log)

    def test_stampctl_push_and_pull_zstd(self):
        reg = self.registry()
        daemon = self.start_daemon()
        src = make_image(daemon.store, 'src')
        with open(os.path.join(src, 'srv/data'), 'wb') as f:
            f.write(os.urandom(128 << 10))
        ref = reg.host + '/plain/src:latest'
        run([STAMPCTL, 'push', '--insecure', '--compression=zstd', 'src', ref], timeout=stamptest.TIMEOUT)
        raw = json.loads(subprocess.check_output(
            ['skopeo', 'inspect', '--tls-verify=false', '--raw', 'docker://' + ref]))
        self.assertEqual([layer['mediaType'] for layer in raw['layers']], [LAYER_TAR + '+zstd'])
        self.assertEqual(raw['annotations']['io.stamp.kind'], 'image')
        # The tag defaults to latest; the name to the repository's last component.
        run([STAMPCTL, 'pull', '--insecure', '--read-only', reg.host + '/plain/src', 'copy'],
            timeout=stamptest.TIMEOUT)
        self.assertEqual(tree_listing(os.path.join(daemon.store, 'copy')), tree_listing(src))
        self.assertTrue(subvolume_read_only(os.path.join(daemon.store, 'copy')))
        # Refusals: the exit codes of stampctl(1).
        p = run([STAMPCTL, 'pull', 'not a reference'], check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn('Invalid reference', p.stderr)
        p = run([STAMPCTL, 'pull', '--insecure', reg.host + '/plain/none:v1', 'x'], check=False,
                timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn('has no manifest v1 in plain/none', p.stderr)
        # Without --insecure, the registry must speak verified TLS, which this one does not.
        p = run([STAMPCTL, 'pull', ref, 'y'], check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn('verified TLS', p.stderr)
        self.assertEqual(stamptest.store_names(daemon.store), ['copy', 'src'])

    def test_gzip_layer_of_blocks_is_valid_and_the_same_each_time(self):
        """A gzip layer is compressed in blocks, a gzip member each: gzip -t and skopeo take it,
        it pulls back into the same tree, and the same tree gives the same layer again."""
        reg = self.registry()
        daemon = self.start_daemon()
        src = make_image(daemon.store, 'src')
        with open(os.path.join(src, 'srv/random'), 'wb') as f:
            f.write(os.urandom(3 << 20))
        with open(os.path.join(src, 'srv/text'), 'wb') as f:
            f.write(b''.join(b'line %d of a compressible file\n' % i for i in range(200000)))
        digests = []
        for repo in ('one', 'two'):
            self.assertDone(self.push('src', reg.host + '/blocks/%s:v1' % repo))
            raw = json.loads(subprocess.check_output(
                ['skopeo', 'inspect', '--tls-verify=false', '--raw', 'docker://%s/blocks/%s:v1' % (reg.host, repo)]))
            digests.append(raw['layers'][0]['digest'])
        self.assertEqual(digests[0], digests[1], 'the same tree, the same layer')
        path = reg.blob_path(digests[0])
        run(['gzip', '-t', path])
        with open(path, 'rb') as f:
            data = f.read()
        self.assertGreater(data.count(b'\x1f\x8b\x08'), 3, 'several members')
        run(['skopeo', 'copy', '--src-tls-verify=false', 'docker://%s/blocks/one:v1' % reg.host,
             'oci:%s:v1' % os.path.join(self.dir, 'copy')])
        self.assertDone(self.pull(reg.host + '/blocks/one:v1', 'back'))
        self.assertEqual(tree_listing(os.path.join(daemon.store, 'back')), tree_listing(src))

    def manifest_digest(self, reg, repo, tag):
        req = urllib.request.Request('http://%s/v2/%s/manifests/%s' % (reg.host, repo, tag),
                                     headers={'Accept': OCI_MANIFEST})
        with urllib.request.urlopen(req) as resp:
            return sha256(resp.read())

    def test_pull_of_layout_skopeo_pushed_applies_whiteouts_and_opaque_dirs(self):
        reg = self.registry()
        daemon = self.start_daemon()
        layer1 = tar_bytes(busybox_entries() + [
            ('srv', 'dir', None, None),
            ('srv/keep', 'file', b'keep\n', {'SCHILY.xattr.user.color': 'blue'}),
            ('srv/keep-link', 'hardlink', 'srv/keep', None),
            ('srv/gone', 'file', b'gone\n', None),
            ('srv/gonedir', 'dir', None, None),
            ('srv/gonedir/deep', 'file', b'deep\n', None),
            ('srv/opaque', 'dir', None, None),
            ('srv/opaque/old', 'file', b'old\n', None),
            ('srv/changed', 'file', b'one\n', None),
        ])
        layer2 = tar_bytes([
            ('srv/.wh.gone', 'file', b'', None),
            ('srv/.wh.gonedir', 'file', b'', None),
            ('srv/opaque/new', 'file', b'new\n', None),  # before the marker: it stays all the same
            ('srv/opaque/.wh..wh..opq', 'file', b'', None),
            ('srv/changed', 'file', b'two\n', None),
        ])
        layout = os.path.join(self.dir, 'layout')
        write_oci_layout(layout, 'v1', [(LAYER_GZIP, gz(layer1)), (LAYER_TAR, layer2)])
        run(['skopeo', 'copy', '--dest-tls-verify=false', 'oci:%s:v1' % layout,
             'docker://%s/other/img:v1' % reg.host])

        self.assertDone(self.pull(reg.host + '/other/img:v1', 'img'))
        root = os.path.join(daemon.store, 'img')
        self.assertFalse(subvolume_read_only(root), 'an image stamp did not make is writable')
        self.assertEqual(sorted(os.listdir(os.path.join(root, 'srv'))),
                         ['changed', 'keep', 'keep-link', 'opaque'])
        self.assertEqual(os.listdir(os.path.join(root, 'srv/opaque')), ['new'])
        self.assertEqual(open(os.path.join(root, 'srv/changed')).read(), 'two\n')
        self.assertEqual(os.getxattr(os.path.join(root, 'srv/keep'), 'user.color'), b'blue')
        self.assertEqual(os.stat(os.path.join(root, 'srv/keep')).st_ino,
                         os.stat(os.path.join(root, 'srv/keep-link')).st_ino)
        # and stamp can run it: StartMachine with a command, its output on our pipe
        removed, unsubscribe = self.env.subscribe(stamptest.MANAGER_IFACE, 'MachineRemoved',
                                                  stamptest.MANAGER_PATH)
        self.addCleanup(unsubscribe)
        r, w = os.pipe()
        fds = stamptest.Gio.UnixFDList.new()
        try:
            options = {'command': GLib.Variant('as', ['/bin/busybox', 'cat', '/srv/changed']),
                       'stdout': GLib.Variant('h', fds.append(w))}
            self.root.call(stamptest.MANAGER_PATH, stamptest.MANAGER_IFACE, 'StartMachine', 'img', options,
                           fd_list=fds)
        finally:
            os.close(w)
            for fd in fds.steal_fds():  # the list's dup of w, or read() never sees the end
                os.close(fd)
        with os.fdopen(r) as f:
            self.assertEqual(f.read(), 'two\n')
        stamptest.spin_until(lambda: len(removed) > 0, 'the machine to end')


class RefusalTest(OciTestCase):

    def setUp(self):
        super().setUp()
        self.reg = self.registry()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store

    def test_corrupt_blob(self):
        layer = gz(tar_bytes(busybox_entries()))
        self.reg.put_image('bad/corrupt', 'v1', [layer])
        path = self.reg.blob_path(sha256(layer))
        data = bytearray(open(path, 'rb').read())
        data[len(data) // 2] ^= 0xff
        with open(path, 'wb') as f:
            f.write(data)
        self.assertFailed(self.pull(self.reg.host + '/bad/corrupt:v1', 'x'), self.store, 'x',
                          STAMP_ERROR + 'BadArchive', 'does not match its digest')
        self.assertEqual(stamptest.store_names(self.store), [])
        cache = os.path.join(self.store, '.stamp/oci-blobs/sha256')
        self.assertNotIn(sha256(layer).split(':')[1], os.listdir(cache))

    def test_short_blob(self):
        """A blob the registry sends short while it is being extracted: the size is what fails
        (the extraction, stopped first, does not get to say that its layer ended early)."""
        layer = gz(tar_bytes(busybox_entries()))
        self.reg.put_image('bad/short', 'v1', [layer])
        path = self.reg.blob_path(sha256(layer))
        with open(path, 'r+b') as f:
            f.truncate(len(layer) - 1000)
        log = self.assertFailed(self.pull(self.reg.host + '/bad/short:v1', 'x'), self.store, 'x',
                                STAMP_ERROR + 'BadArchive', 'has %d bytes, not the %d its manifest says' % (
                                    len(layer) - 1000, len(layer)))
        self.assertNotIn('ends', log.splitlines()[-1])
        self.assertEqual(stamptest.store_names(self.store), [])
        cache = os.path.join(self.store, '.stamp/oci-blobs/sha256')
        self.assertNotIn(sha256(layer).split(':')[1], os.listdir(cache))

    def test_wrong_manifest_digest(self):
        digest = self.reg.put_image('bad/digest', 'v1', [gz(tar_bytes(busybox_entries()))])
        # The registry stores the manifest as a blob: changed there, it no longer has its digest.
        path = self.reg.blob_path(digest)
        body = json.loads(open(path, 'rb').read())
        body['annotations'] = {'x': 'y'}
        with open(path, 'w') as f:
            json.dump(body, f)
        self.assertFailed(self.pull(self.reg.host + '/bad/digest@' + digest, 'x'), self.store, 'x',
                          STAMP_ERROR + 'BadArchive', 'does not match its digest')
        # By tag, the digest the registry gives for it is checked instead.
        self.assertFailed(self.pull(self.reg.host + '/bad/digest:v1', 'x'), self.store, 'x',
                          STAMP_ERROR + 'BadArchive', 'does not match the digest the registry gives')

    def test_hostile_layers(self):
        cases = {
            'dotdot': [('../escape', 'file', b'x', None)],
            'absolute': [('/etc/escape', 'file', b'x', None)],
            'symlink-out': [('up', 'link', '../../..', None)],
            'link-out': [('esc', 'hardlink', '../../etc/passwd', None)],
            'through-symlink': [('etc2', 'link', '/etc', None), ('etc2/passwd', 'file', b'x', None)],
            'whiteout-dot': [('srv', 'dir', None, None), ('srv/.wh..', 'file', b'', None)],
            'whiteout-empty': [('.wh.', 'file', b'', None)],
        }
        for repo, entries in cases.items():
            with self.subTest(repo):
                self.reg.put_image('hostile/' + repo, 'v1',
                                   [gz(tar_bytes(busybox_entries())), gz(tar_bytes(entries))])
                self.assertFailed(self.pull(self.reg.host + '/hostile/%s:v1' % repo, 'x'), self.store, 'x',
                                  STAMP_ERROR + 'BadArchive')
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(self.store), 'escape')))

    def test_config_whose_diff_ids_lie(self):
        """A layer's uncompressed tar is checked against the config's rootfs.diff_ids while it is
        applied: a config that names another one fails the pull, naming the layer, and leaves
        nothing; so does one that names fewer diff_ids than there are layers."""
        layer1 = gz(tar_bytes(busybox_entries()))
        layer2 = gz(tar_bytes([('srv', 'dir', None, None), ('srv/file', 'file', b'data\n', None)]))
        lie = sha256(gzip.decompress(layer2) + b'\0')
        for repo, diff_ids, phrases in [
                ('lie/second', [sha256(gzip.decompress(layer1)), lie],
                 ['Layer %s of ' % sha256(layer2), 'does not match the diff_id %s' % lie]),
                ('lie/first', [lie, sha256(gzip.decompress(layer2))],
                 ['Layer %s of ' % sha256(layer1), 'does not match the diff_id %s' % lie]),
                ('lie/short', [sha256(gzip.decompress(layer1))],
                 ['names 1 layers in rootfs.diff_ids where its manifest has 2'])]:
            with self.subTest(repo):
                layout = os.path.join(self.dir, repo.replace('/', '-'))
                write_oci_layout(layout, 'v1', [(LAYER_GZIP, layer1), (LAYER_GZIP, layer2)], diff_ids=diff_ids)
                run(['skopeo', 'copy', '--dest-tls-verify=false', 'oci:%s:v1' % layout,
                     'docker://%s/%s:v1' % (self.reg.host, repo)])
                self.assertFailed(self.pull(self.reg.host + '/%s:v1' % repo, 'x'), self.store, 'x',
                                  STAMP_ERROR + 'BadArchive', *phrases)
                self.assertEqual(stamptest.store_names(self.store), [])
        # The same layers under a config that tells the truth pull.
        layout = os.path.join(self.dir, 'truth')
        write_oci_layout(layout, 'v1', [(LAYER_GZIP, layer1), (LAYER_GZIP, layer2)])
        run(['skopeo', 'copy', '--dest-tls-verify=false', 'oci:%s:v1' % layout,
             'docker://%s/lie/truth:v1' % self.reg.host])
        self.assertDone(self.pull(self.reg.host + '/lie/truth:v1', 'x'))
        self.assertEqual(open(os.path.join(self.store, 'x/srv/file')).read(), 'data\n')

    def test_a_clone_pull_that_fails_keeps_the_template_it_made(self):
        """A clone pulled where its template is not: the template is made first, complete and
        verified; if the clone's own layer then fails, the template stays (read-only, recorded:
        the next pull of the clone needs its own layer alone) and the log says so; the clone is
        not there."""
        tmpl_layer = gz(tar_bytes(busybox_entries() + [('srv', 'dir', None, None)]))
        clone = {'io.stamp.kind': 'clone', 'io.stamp.origin': 'base', 'io.stamp.name': 'web'}
        self.reg.put_image('k/web', 'bad', [tmpl_layer, gz(tar_bytes([('../escape', 'file', b'x', None)]))],
                           annotations=clone)
        self.reg.put_image('k/web', 'good', [tmpl_layer, gz(tar_bytes([('srv/new', 'file', b'new\n', None)]))],
                           annotations=clone)
        log = self.assertFailed(self.pull(self.reg.host + '/k/web:bad', 'web'), self.store, 'web',
                                STAMP_ERROR + 'BadArchive', 'Making template base',
                                'Template base stays: it is complete and verified')
        self.assertEqual(stamptest.store_names(self.store), ['base'])
        self.assertTrue(subvolume_read_only(os.path.join(self.store, 'base')))
        self.assertEqual(sorted(os.listdir(os.path.join(self.store, 'base/srv'))), [])
        self.assertNotIn('escape', os.listdir(os.path.dirname(self.store)), log)
        # It is the template of the next pull: only the clone's layer is fetched.
        log = self.assertDone(self.pull(self.reg.host + '/k/web:good', 'web'))
        self.assertIn("only the clone's own layer is needed", log)
        self.assertEqual(self.root.image_props('web')['Origin'], 'base')
        self.assertEqual(open(os.path.join(self.store, 'web/srv/new')).read(), 'new\n')

    def test_damaged_gzip_layers(self):
        """Gzip layers whose digests match but whose content is damaged: cut short, or a byte
        changed (the member's CRC catches it), in one big member or in one of several small ones
        (as stamp pushes them) - each a BadArchive and nothing left. Several members intact pull."""
        tar = tar_bytes(busybox_entries() + [('srv', 'dir', None, None),
                                             ('srv/blob', 'file', os.urandom(2 << 20), None)])
        members = [gz(tar[i:i + (1 << 20)]) for i in range(0, len(tar), 1 << 20)]
        self.assertGreater(len(members), 3)
        multi = b''.join(members)
        flipped = bytearray(multi)
        flipped[len(members[0]) + len(members[1]) // 2] ^= 0x55
        cases = {'cut-single': gz(tar)[:-4096], 'cut-multi': multi[:len(members[0]) + 1000],
                 'flipped-multi': bytes(flipped)}
        for repo, layer in cases.items():
            with self.subTest(repo):
                self.reg.put_image('damaged/' + repo, 'v1', [layer],
                                   config={'architecture': 'amd64', 'os': 'linux',
                                           'rootfs': {'type': 'layers', 'diff_ids': [sha256(tar)]}})
                self.assertFailed(self.pull(self.reg.host + '/damaged/%s:v1' % repo, 'x'), self.store, 'x',
                                  STAMP_ERROR + 'BadArchive', 'Layer %s of ' % sha256(layer))
        self.reg.put_image('damaged/none', 'v1', [multi])
        self.assertDone(self.pull(self.reg.host + '/damaged/none:v1', 'x'))
        self.assertEqual(os.path.getsize(os.path.join(self.store, 'x/srv/blob')), 2 << 20)

    def test_whiteouts_never_follow_symlinks(self):
        """A whiteout below a symlink removes nothing: not where the link points."""
        base = busybox_entries() + [('srv', 'dir', None, None), ('srv/keep', 'file', b'keep\n', None),
                                    ('lnk', 'link', 'srv', None), ('abs', 'link', '/srv', None)]
        self.reg.put_image('wh/links', 'v1', [gz(tar_bytes(base)), gz(tar_bytes([
            ('lnk/.wh.keep', 'file', b'', None), ('abs/.wh.keep', 'file', b'', None),
            ('abs/.wh..wh..opq', 'file', b'', None)]))])
        self.assertDone(self.pull(self.reg.host + '/wh/links:v1', 'links'))
        root = os.path.join(self.store, 'links')
        self.assertEqual(open(os.path.join(root, 'srv/keep')).read(), 'keep\n')
        self.assertEqual(os.readlink(os.path.join(root, 'lnk')), 'srv')

    def test_a_user_granted_pull_owns_what_they_pulled(self):
        self.reg.put_image('u/img', 'v1', [gz(tar_bytes(busybox_entries()))])
        self.set_rules(stamptest.rule_for(USER, 'pull', 'YES'))
        job = self.user.manager('PullImage', self.reg.host + '/u/img:v1', '',
                                {'insecure': GLib.Variant('b', True)})
        self.assertDone(tuple(job))
        self.assertEqual(self.root.image_props('img')['Owner'], self.env.users[USER])
        # push is another action: not granted by pull (its default wants the administrator)
        self.assertDBusError(stamptest.INTERACTIVE_REQUIRED, self.user.manager, 'PushImage', 'img', self.reg.host + '/u/x:v1',
                             {'insecure': GLib.Variant('b', True)})

    def test_unknown_media_type(self):
        self.reg.put_image('odd/type', 'v1', [b'not a layer'],
                           layer_types=['application/vnd.example.unknown'])
        self.assertFailed(self.pull(self.reg.host + '/odd/type:v1', 'x'), self.store, 'x',
                          STAMP_ERROR + 'UnsupportedFormat', 'application/vnd.example.unknown')

    def test_other_architecture(self):
        self.reg.put_image('odd/arch', 'v1', [gz(tar_bytes(busybox_entries()))],
                           config={'architecture': 'arm64', 'os': 'linux'})
        self.assertFailed(self.pull(self.reg.host + '/odd/arch:v1', 'x'), self.store, 'x',
                          STAMP_ERROR + 'NotSupported', 'arm64')

    def test_index_picks_linux_amd64(self):
        amd = self.reg.put_image('multi/img', 'amd', [gz(tar_bytes(busybox_entries() + [
            ('srv', 'dir', None, None), ('srv/arch', 'file', b'amd64\n', None)]))])
        arm = self.reg.put_image('multi/img', 'arm', [gz(tar_bytes([('srv', 'dir', None, None)]))],
                                 config={'architecture': 'arm64', 'os': 'linux'})

        def size(digest):
            return os.path.getsize(self.reg.blob_path(digest))
        entries = [{'mediaType': OCI_MANIFEST, 'digest': arm, 'size': size(arm),
                    'platform': {'architecture': 'arm64', 'os': 'linux'}},
                   {'mediaType': OCI_MANIFEST, 'digest': amd, 'size': size(amd),
                    'platform': {'architecture': 'amd64', 'os': 'linux'}}]
        index = 'application/vnd.oci.image.index.v1+json'
        self.reg.put_manifest('multi/img', 'v1', {'schemaVersion': 2, 'mediaType': index,
                                                  'manifests': entries}, media_type=index)
        self.assertDone(self.pull(self.reg.host + '/multi/img:v1', 'multi'))
        with open(os.path.join(self.store, 'multi/srv/arch')) as f:
            self.assertEqual(f.read(), 'amd64\n')
        # An index without linux/amd64 is refused by name.
        self.reg.put_manifest('multi/img', 'armonly', {'schemaVersion': 2, 'mediaType': index,
                                                       'manifests': entries[:1]}, media_type=index)
        self.assertFailed(self.pull(self.reg.host + '/multi/img:armonly', 'x'), self.store, 'x',
                          STAMP_ERROR + 'NotSupported', 'no image for linux/amd64')

    def test_missing_image(self):
        self.assertFailed(self.pull(self.reg.host + '/no/such:v1', 'x'), self.store, 'x',
                          STAMP_ERROR + 'NoSuchImage', 'no/such')

    def test_bad_references_and_names_are_refused_before_anything(self):
        make_image(self.store, 'src')
        before = store_state(self.store)
        for ref in ['noslash', self.reg.host + '/UPPER:v1', self.reg.host + '/a//b:v1',
                    self.reg.host + '/a:bad tag', self.reg.host + '/a@sha256:1234', 'h:x/a:v1',
                    self.reg.host + '/' + 'a' * 600]:
            with self.subTest(ref):
                self.assertDBusError(INVALID_ARGS, self.pull, ref, 'x')
                self.assertDBusError(INVALID_ARGS, self.push, 'src', ref)
        self.assertDBusError(INVALID_ARGS, self.push, 'src', self.reg.host + '/a@sha256:' + '0' * 64)
        self.assertDBusError(STAMP_ERROR + 'InvalidName', self.pull, self.reg.host + '/a:v1', '../x')
        self.assertDBusError(STAMP_ERROR + 'ImageExists', self.pull, self.reg.host + '/a:v1', 'src')
        self.assertDBusError(STAMP_ERROR + 'NoSuchImage', self.push, 'nothere', self.reg.host + '/a:v1')
        self.assertDBusError(STAMP_ERROR + 'UnsupportedFormat', self.push, 'src', self.reg.host + '/a:v1',
                             compression='xz')
        self.assertUnchanged(self.store, before)

    def test_unauthorized_callers_are_refused(self):
        make_image(self.store, 'src', read_only=True)
        before = store_state(self.store)
        self.set_rules(stamptest.rule_for(USER, 'push', 'NO') + stamptest.rule_for(USER, 'pull', 'NO'))
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'PushImage', 'src', self.reg.host + '/a:v1',
                             {'insecure': GLib.Variant('b', True)})
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'PullImage', self.reg.host + '/a:v1', 'x',
                             {'insecure': GLib.Variant('b', True)})
        self.assertUnchanged(self.store, before)
        # Nothing reached the registry either.
        self.assertFalse(os.path.exists(os.path.join(self.reg.storage, 'docker/registry/v2/repositories')))
        # Granted push alone, the pull is still refused.
        self.set_rules(stamptest.rule_for(USER, 'push', 'YES') + stamptest.rule_for(USER, 'pull', 'NO'))
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'PullImage', self.reg.host + '/a:v1', 'x',
                             {'insecure': GLib.Variant('b', True)})
        self.assertUnchanged(self.store, before)


class CacheTest(OciTestCase):

    def test_cache_is_trimmed_to_its_limit_and_cleaned(self):
        reg = self.registry()
        layer_a = gz(tar_bytes(busybox_entries() + [('srv', 'dir', None, None), ('srv/a', 'file', b'a', None)]))
        layer_b = gz(tar_bytes(busybox_entries() + [('srv', 'dir', None, None), ('srv/b', 'file', b'b', None)]))
        reg.put_image('c/a', 'v1', [layer_a])
        reg.put_image('c/b', 'v1', [layer_b])
        conf = os.path.join(self.dir, 'stampd.conf')
        with open(conf, 'w') as f:
            f.write('[Limits]\nBlobCacheBytes=1\n')
        daemon = self.start_daemon(args=['--config', conf])
        cache = os.path.join(daemon.store, '.stamp/oci-blobs/sha256')

        def cached():
            return sorted('sha256:' + n for n in os.listdir(cache))
        self.assertDone(self.pull(reg.host + '/c/a:v1', 'a'))
        self.assertEqual(cached(), [sha256(layer_a)], 'what the last pull used stays')
        self.assertDone(self.pull(reg.host + '/c/b:v1', 'b'))
        self.assertEqual(cached(), [sha256(layer_b)], 'the older blob went for the limit')
        self.assertEqual(stat_mode(cache), 0o700)

        # Cleaning needs manage-images; then stampctl empties the cache and leaves the images.
        self.set_rules(stamptest.rule_for(USER, 'manage-images', 'NO'))
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'CleanCache', {})
        self.assertEqual(cached(), [sha256(layer_b)])
        run([STAMPCTL, 'clean', '--cache'], timeout=stamptest.TIMEOUT)
        self.assertEqual(cached(), [])
        self.assertEqual(stamptest.store_names(daemon.store), ['a', 'b'])
        p = run([STAMPCTL, 'clean'], check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 2, p.stderr)

    def test_cancel_mid_layer_leaves_nothing(self):
        reg = self.registry()
        layer = gz(tar_bytes(busybox_entries() + [('srv', 'dir', None, None),
                                                  ('srv/big', 'file', os.urandom(4 << 20), None)]))
        reg.put_image('c/big', 'v1', [layer])
        proxy = token_proxy(self, reg.host, 'c/big')
        proxy.token = None
        proxy.hold = sha256(layer)
        daemon = self.start_daemon()
        job = self.pull(proxy.host + '/c/big:v1', 'big')
        self.assertTrue(proxy.held.wait(stamptest.TIMEOUT), 'the layer was never asked for')
        self.root.manager('CancelJob', job[0])
        result, log = self.jobs.wait(job)
        self.assertEqual(result, 'canceled', log)
        proxy.release.set()
        self.assertEqual(stamptest.store_names(daemon.store), [])
        self.assertEqual([n for n in os.listdir(daemon.store) if n.startswith('.#')], [])
        cache = os.path.join(daemon.store, '.stamp/oci-blobs/sha256')
        self.assertEqual(os.listdir(cache), [], 'no part of the blob is kept')


class UploadTest(OciTestCase):

    def test_a_registry_without_chunked_uploads_gets_the_layer_whole(self):
        reg = self.registry()
        proxy = token_proxy(self, reg.host, 'up/src')
        proxy.token = None
        proxy.refuse_patch = True
        daemon = self.start_daemon()
        make_image(daemon.store, 'src', read_only=True)
        log = self.assertDone(self.push('src', proxy.host + '/up/src:v1'))
        self.assertIn('sending it again', log)
        self.assertDone(self.pull(reg.host + '/up/src:v1', 'back'))
        self.assertEqual(tree_listing(os.path.join(daemon.store, 'back')),
                         tree_listing(os.path.join(daemon.store, 'src')))


class TlsTest(OciTestCase):

    def test_tls_is_verified_unless_insecure(self):
        reg = self.registry(tls=True)
        daemon = self.start_daemon()
        make_image(daemon.store, 'src')
        # A certificate nobody vouches for: refused, nothing sent.
        self.assertFailed(self.push('src', reg.host + '/tls/src:v1', insecure=False), daemon.store, 'nothing',
                          'org.freedesktop.DBus.Error.Failed', 'verified TLS')
        self.assertFalse(os.path.exists(os.path.join(reg.storage, 'docker/registry/v2/repositories')))
        # insecure: TLS still, without verification (not plain http, which this registry does not speak).
        self.assertDone(self.push('src', reg.host + '/tls/src:v1'))
        self.assertDone(self.pull(reg.host + '/tls/src:v1', 'back'))
        self.assertEqual(tree_listing(os.path.join(daemon.store, 'back')),
                         tree_listing(os.path.join(daemon.store, 'src')))
        self.assertFailed(self.pull(reg.host + '/tls/src:v1', 'x', insecure=False), daemon.store, 'x',
                          'org.freedesktop.DBus.Error.Failed', 'verified TLS')


class AuthTest(OciTestCase):

    def test_bearer_token_flow(self):
        reg = self.registry()
        reg.put_image('tok/img', 'v1', [gz(tar_bytes(busybox_entries()))])
        proxy = token_proxy(self, reg.host, 'tok/img')
        creds = os.path.join(self.dir, 'registries.conf')
        conf = os.path.join(self.dir, 'stampd.conf')
        with open(conf, 'w') as f:
            f.write('[Registries]\nCredentialsFile=%s\n' % creds)
        daemon = self.start_daemon(args=['--config', conf])
        log = self.assertDone(self.pull(proxy.host + '/tok/img:v1', 'anon'))
        self.assertEqual(proxy.token_requests[0]['scope'], ['repository:tok/img:pull'])
        self.assertEqual(proxy.token_requests[0]['service'], ['stamp-test'])
        self.assertTrue(os.path.exists(os.path.join(daemon.store, 'anon/bin/busybox')))
        # A token server that wants a user: refused without one, given with the file's.
        proxy.basic = 'robot:t0ken-pw'
        self.assertFailed(self.pull(proxy.host + '/tok/img:v1', 'x'), daemon.store, 'x', AUTH_FAILED,
                          'refused a token')
        with open(creds, 'w') as f:
            f.write('[%s]\nUser=robot\nPassword=t0ken-pw\n' % proxy.host)
        os.chmod(creds, 0o600)
        log += self.assertDone(self.pull(proxy.host + '/tok/img:v1', 'y'))
        for secret in (proxy.token, 't0ken-pw'):
            self.assertNotIn(secret, log)
            self.assertNotIn(secret, daemon.log())

    def test_basic_auth_from_the_credentials_file(self):
        reg = self.registry(htpasswd=('stamp', 's3cret-pw'))
        creds = os.path.join(self.dir, 'registries.conf')
        conf = os.path.join(self.dir, 'stampd.conf')
        with open(conf, 'w') as f:
            f.write('[Registries]\nCredentialsFile=%s\n' % creds)
        daemon = self.start_daemon(args=['--config', conf])
        store = daemon.store
        self.make_template(store, 'tmpl')

        # No credentials: refused by name, nothing made.
        self.assertFailed(self.push('tmpl', reg.host + '/auth/tmpl:v1'), store, 'nothing',
                          AUTH_FAILED, 'none is configured')
        # Credentials that others may read are not used.
        with open(creds, 'w') as f:
            f.write('[%s]\nUser=stamp\nPassword=s3cret-pw\n' % reg.host)
        os.chmod(creds, 0o644)
        self.assertFailed(self.push('tmpl', reg.host + '/auth/tmpl:v1'), store, 'nothing', AUTH_FAILED)
        # A wrong password.
        with open(creds, 'w') as f:
            f.write('[%s]\nUser=stamp\nPassword=wrong\n' % reg.host)
        os.chmod(creds, 0o600)
        self.assertFailed(self.push('tmpl', reg.host + '/auth/tmpl:v1'), store, 'nothing', AUTH_FAILED)
        self.assertFailed(self.pull(reg.host + '/auth/tmpl:v1', 'x'), store, 'x', AUTH_FAILED)
        # The right one.
        with open(creds, 'w') as f:
            f.write('[%s]\nUser=stamp\nPassword=s3cret-pw\n' % reg.host)
        log = self.assertDone(self.push('tmpl', reg.host + '/auth/tmpl:v1'))
        log += self.assertDone(self.pull(reg.host + '/auth/tmpl:v1', 'x'))
        self.assertEqual(tree_listing(os.path.join(store, 'x')), tree_listing(os.path.join(store, 'tmpl')))
        # The password is in no log line, no property, nothing the daemon said.
        self.assertNotIn('s3cret-pw', log)
        self.assertNotIn('s3cret-pw', daemon.log())


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
