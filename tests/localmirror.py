# SPDX-License-Identifier: LGPL-2.1-or-later
"""A signed Debian mirror on the loopback, made from the package tarball of
templatetest.package_tarball(), for online builds without the network.

The mirror holds the tarball's .debs at the places its Packages list names,
a Packages file of those alone, and an InRelease signed by a key made for the
test. The suite's keyring is what debootstrap's script for the suite names:
for the test's daemon, that script is replaced (a bind mount in the test's
own mount namespace) by one naming the test key. The server notes every path
it was asked for, so a test sees what a build downloaded.
"""

import email.utils
import gzip
import hashlib
import http.server
import os
import re
import subprocess
import tarfile
import threading

from stamptest import run
from templatetest import SUITE, host_arch, package_tarball

SCRIPTS = '/usr/share/debootstrap/scripts'


def _archive_name(package, version, arch):
    def q(s):
        return ''.join('%%%02x' % ord(c) if c in ':_%' else c for c in s)
    return '%s_%s_%s.deb' % (q(package), q(version), q(arch))


class LocalMirror:
    """The mirror in directory @top, served at self.url until close()."""

    def __init__(self, top):
        self.top = top
        self.root = os.path.join(top, 'www')
        self.gnupg = os.path.join(top, 'gnupg')
        self.keyring = os.path.join(top, 'keyring.gpg')
        self.requests = []
        self.generation = 0
        os.makedirs(self.root)
        os.chmod(top, 0o755)
        os.makedirs(self.gnupg, mode=0o700)
        self._make_archive()
        self._make_key()
        self.sign()
        self._serve()

    def _make_archive(self):
        debs = {}
        lists = None
        with tarfile.open(package_tarball()) as tar:
            for m in tar.getmembers():
                base = os.path.basename(m.name)
                if m.isfile() and base.endswith('.deb'):
                    debs[base] = m
                elif m.isfile() and base.endswith('_Packages'):
                    lists = tar.extractfile(m).read().decode()
            kept = []
            for stanza in lists.split('\n\n'):
                fields = dict(re.findall(r'^([A-Za-z0-9-]+): (.*)$', stanza, re.M))
                if 'Package' not in fields:
                    continue
                name = _archive_name(fields['Package'], fields['Version'], fields['Architecture'])
                if name not in debs:
                    continue
                dest = os.path.join(self.root, 'debian', fields['Filename'])
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with tar.extractfile(debs[name]) as src, open(dest, 'wb') as dst:
                    dst.write(src.read())
                kept.append(stanza.strip('\n'))
        self.packages = '\n\n'.join(kept) + '\n'
        self.dists = os.path.join(self.root, 'debian', 'dists', SUITE)
        binary = os.path.join(self.dists, 'main', 'binary-%s' % host_arch())
        os.makedirs(binary)
        with open(os.path.join(binary, 'Packages'), 'w') as f:
            f.write(self.packages)
        with gzip.open(os.path.join(binary, 'Packages.gz'), 'wt') as f:
            f.write(self.packages)

    def _gpg(self, *args, **kw):
        return run(['gpg', '--batch', '--homedir', self.gnupg, '--pinentry-mode', 'loopback',
                    '--passphrase', ''] + list(args), **kw)

    def _make_key(self):
        self._gpg('--quick-gen-key', 'stamp test archive <test@stamp.invalid>', 'ed25519', 'sign', 'never')
        p = subprocess.run(['gpg', '--batch', '--homedir', self.gnupg, '--export'], capture_output=True,
                           check=True)
        with open(self.keyring, 'wb') as f:
            f.write(p.stdout)
        os.chmod(self.keyring, 0o644)

    def sign(self, valid_until=None):
        """(Re)writes and signs InRelease: each call makes another one (a
        mirror that changed), with a Valid-Until of @valid_until (seconds
        since the epoch) if given. Returns its text."""
        self.generation += 1
        lines = []
        for rel in ('main/binary-%s/Packages' % host_arch(), 'main/binary-%s/Packages.gz' % host_arch()):
            with open(os.path.join(self.dists, rel), 'rb') as f:
                data = f.read()
            lines.append(' %s %d %s' % (hashlib.sha256(data).hexdigest(), len(data), rel))
        until = '' if valid_until is None else 'Valid-Until: %s\n' % email.utils.formatdate(valid_until,
                                                                                            usegmt=True)
        release = ('Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: %s\nVersion: 12.%d\n'
                   'Date: %s\n%sArchitectures: %s\nComponents: main\nDescription: stamp test mirror\n'
                   'SHA256:\n%s\n' % (SUITE, self.generation, email.utils.formatdate(usegmt=True), until,
                                      host_arch(), '\n'.join(lines)))
        path = os.path.join(self.dists, 'Release')
        with open(path, 'w') as f:
            f.write(release)
        inrelease = os.path.join(self.dists, 'InRelease')
        if os.path.exists(inrelease):
            os.unlink(inrelease)
        self._gpg('--clearsign', '--digest-algo', 'SHA256', '-o', inrelease, path)
        os.unlink(path)  # InRelease only: one file decides what the mirror serves
        with open(inrelease) as f:
            return f.read()

    def _serve(self):
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=mirror.root, **kw)

            def do_GET(self):
                mirror.requests.append(self.path)
                try:
                    super().do_GET()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a build canceled or killed mid-download

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = 'http://127.0.0.1:%d/debian' % self.server.server_address[1]

    def debs_fetched(self):
        return [p for p in self.requests if p.endswith('.deb')]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        subprocess.run(['gpgconf', '--homedir', self.gnupg, '--kill', 'gpg-agent'], capture_output=True)


def trust_for_suite(test, keyring):
    """Makes the keyring debootstrap's script names for SUITE (the one the
    daemon verifies the suite against) hold the test key alone, until the
    test ends: a bind mount in the test's own mount namespace (the build's
    jail has a /tmp of its own, so the key cannot simply be named there)."""
    with open(os.path.join(SCRIPTS, SUITE)) as f:
        names = [line.split()[1] for line in f if line.startswith('keyring ')]
    run(['mount', '--bind', keyring, names[0]])
    test.addCleanup(run, ['umount', names[0]])
