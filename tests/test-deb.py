#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The Debian package (debian/), built and used as an administrator would.

tools/build-deb.sh builds it from a fresh clone of the checkout's HEAD
(dpkg-buildpackage -us -uc -b), and lintian must find nothing worse than
information in it. Then it goes into a throw-away Debian 12 root made
offline from a package tarball (`debootstrap --make-tarball` of minbase with
the package's Depends, made once over the network and kept in
$STAMP_TEST_CACHE, as the template tests do), with `apt-get install
./stamp_*.deb`, where:

  * a host without systemd as PID 1: the root is chrooted, with a system bus
    of its own (its dbus-daemon, running before the package arrives) that
    must pick the package's files up by itself: the first stampctl call
    activates stampd through the bus's launch helper; stampd makes its pool
    in /var/lib/machines.raw, imports, clones and starts a machine;
    reinstalling the package over itself restarts the running stampd (a new
    process, running the new file); remove stops it and keeps every image,
    the pool and the conffile; purge removes /etc/stamp, /var/lib/stamp and
    /var/cache/stamp and keeps every image and the pool;
  * a host with systemd as PID 1: the root booted with systemd-nspawn
    --boot. Installing starts nothing; the first stampctl call makes dbus
    ask systemd for stampd.service; a clone works under the unit's sandbox;
    reinstalling restarts the running unit with a new main process; remove
    stops it and keeps the images, as does purge.

Slow suite: it builds the package, installs Debian into a directory and
boots it (about two minutes once the package tarball is cached).
"""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import installtree
import stamptest
import templatetest
from stamptest import SRCDIR, diag, run, wait_for, wrap_pdeathsig

BUILD_TIMEOUT = float(os.environ.get('STAMPTEST_BUILD_TIMEOUT', '900'))
STORE = '/var/lib/machines'
PATH = '/usr/sbin:/usr/bin:/sbin:/bin'


class Package:
    """What tools/build-deb.sh left in outdir."""

    def __init__(self, outdir):
        self.outdir = outdir
        debs = [n for n in os.listdir(outdir) if n.startswith('stamp_') and n.endswith('.deb')]
        if len(debs) != 1:
            raise AssertionError('tools/build-deb.sh made %s in %s' % (debs or 'no stamp_*.deb', outdir))
        self.deb = os.path.join(outdir, debs[0])
        self.changes = os.path.join(outdir, debs[0][:-len('.deb')] + '.changes')

    def field(self, name):
        return run(['dpkg-deb', '-f', self.deb, name]).stdout.strip()

    def depends(self):
        """The package names in Depends (the first of alternatives, no versions)."""
        names = []
        for item in self.field('Depends').split(','):
            first = item.split('|')[0].strip()
            if first:
                names.append(first.split()[0].split(':')[0])
        return names


def build_package(top):
    """tools/build-deb.sh, which clones the checkout's HEAD and builds there."""
    out = os.path.join(top, 'debs')
    tmp = os.path.join(top, 'tmp')
    os.makedirs(tmp)
    env = dict(os.environ, TMPDIR=tmp)
    env.pop('DEB_BUILD_OPTIONS', None)
    run([os.path.join(SRCDIR, 'tools', 'build-deb.sh'), out], env=env, timeout=BUILD_TIMEOUT)
    return Package(out)


def package_tarball(includes):
    """A cached `debootstrap --make-tarball` of minbase with includes (made
    over the network the first time), named after what it holds."""
    arch = templatetest.host_arch()
    key = hashlib.sha256(','.join(sorted(includes)).encode()).hexdigest()[:12]
    path = os.path.join(templatetest.CACHE, '%s-minbase-%s-deb-%s.tgz' % (templatetest.SUITE, arch, key))
    if os.path.exists(path):
        return path
    os.makedirs(templatetest.CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix='.make-tarball.', dir=templatetest.CACHE)
    tmp = path + '.tmp.%d' % os.getpid()
    diag('making the package tarball %s (needs the network, once)' % path)
    try:
        p = run(['debootstrap', '--variant=minbase', '--arch=' + arch, '--include=' + ','.join(includes),
                 '--make-tarball=' + tmp, templatetest.SUITE, work, templatetest.MIRROR],
                check=False, timeout=templatetest.JOB_TIMEOUT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if p.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise unittest.SkipTest('no package tarball in %s and debootstrap --make-tarball failed '
                                '(no network?): %s' % (templatetest.CACHE, (p.stdout + p.stderr)[-500:]))
    os.rename(tmp, path)
    return path


def make_root(top, package):
    """Debian 12 with the package's Depends installed (and bootable), in the
    test's directory, which is not btrfs (so that stampd makes its pool):
    each scenario gets a copy of it."""
    includes = sorted(set(package.depends()) | set(templatetest.BOOTABLE))
    tarball = package_tarball(includes)
    base = os.path.join(top, 'base')
    run(['debootstrap', '--variant=minbase', '--unpack-tarball=' + tarball,
         '--include=' + ','.join(includes), templatetest.SUITE, base, templatetest.MIRROR],
        timeout=templatetest.JOB_TIMEOUT)
    return base


# PID 1 of a ChrootHost's PID namespace: it starts the root's system bus and, as an init does,
# reaps what is left to it (a bus-activated stampd, once dbus-daemon lets go of it, is reparented
# here; left a zombie, it would look alive to the maintainer scripts).
INIT = '''
import ctypes, os, signal, sys
# A PID 1 ignores signals it has no handler for, unshare --kill-child's SIGKILL among them: when
# unshare goes (with the test), SIGTERM, handled, ends this init and so the namespace.
signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
bus = os.fork()
if bus == 0:
    os.chroot(sys.argv[1])
    os.chdir('/')
    os.makedirs('/run/dbus', exist_ok=True)
    os.execv('/usr/bin/dbus-daemon', ['dbus-daemon', '--system', '--nofork', '--nopidfile'])
while True:
    pid, status = os.wait()
    if pid == bus:
        sys.exit('dbus-daemon ended: status %d' % status)
'''


class ChrootHost:
    """A copy of the Debian root, chrooted, as a host without systemd as
    PID 1: a PID namespace whose init starts the root's own dbus-daemon
    --system (and a mount namespace with /proc of its own), the host's /dev and /sys,
    a fresh /run; the root is a mount point, as a host's / is. Everything started inside dies with the bus."""

    def __init__(self, base, path):
        run(['cp', '-a', '--reflink=auto', base, path], timeout=templatetest.JOB_TIMEOUT)
        self.path = path
        self.log = path + '.bus.log'
        # A mount point of its own: systemd-nspawn, run in the root, remounts its / as a slave.
        run(['mount', '--bind', path, path])
        run(['mount', '--rbind', '/dev', os.path.join(path, 'dev')])
        run(['mount', '--rbind', '/sys', os.path.join(path, 'sys')])
        run(['mount', '-t', 'tmpfs', '-o', 'mode=0755,nosuid,nodev', 'stamp-run', os.path.join(path, 'run')])
        argv = ['unshare', '--pid', '--fork', '--kill-child', '--mount-proc=' + os.path.join(path, 'proc'),
                stamptest.PYTHON, '-c', INIT, path]
        with open(self.log, 'w') as log:
            self.proc = subprocess.Popen(wrap_pdeathsig(argv), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env={'PATH': PATH, 'LANG': 'C.UTF-8'})
        self.leader = wait_for(self._find_bus, 'the root\'s dbus-daemon to start')
        with open('/proc/%d/stat' % self.leader) as f:
            self.init = int(f.read().rsplit(')', 1)[1].split()[1])  # its parent: PID 1 inside
        wait_for(lambda: self._dead() or os.path.exists(self.at('/run/dbus/system_bus_socket')),
                 'the root\'s system bus socket')
        if self._dead():
            raise AssertionError('dbus-daemon in the root exited:\n' + self.read_log())

    def _dead(self):
        return self.proc.poll() is not None

    def _find_bus(self):
        if self._dead():
            raise AssertionError('unshare exited with %s:\n%s' % (self.proc.returncode, self.read_log()))
        return installtree.find_descendant(self.proc.pid, lambda exe: exe.endswith('/dbus-daemon'))

    def at(self, path):
        return os.path.join(self.path, path.lstrip('/'))

    def run(self, argv, check=True, timeout=stamptest.TIMEOUT, **kw):
        """argv as root in the root: its mount and PID namespace, chrooted."""
        env = {'PATH': PATH, 'LANG': 'C.UTF-8', 'DEBIAN_FRONTEND': 'noninteractive'}
        return run(['nsenter', '--target', str(self.leader), '--mount', '--pid', '--root', '--wd=/'] + argv,
                   check=check, timeout=timeout, env=env, **kw)

    def sh(self, script, **kw):
        return self.run(['sh', '-c', script], **kw)

    def read(self, path):
        """A file as the root's namespace sees it (the pool is mounted there only)."""
        return self.run(['cat', path]).stdout

    def stampd_pid(self):
        """The pid (in the root's PID namespace) of who owns io.stamp.Stamp1, or None."""
        p = self.run(['dbus-send', '--system', '--print-reply=literal', '--dest=org.freedesktop.DBus', '/',
                      'org.freedesktop.DBus.GetConnectionUnixProcessID', 'string:' + stamptest.BUS_NAME],
                     check=False)
        return int(p.stdout.split()[1]) if p.returncode == 0 else None

    def exe(self, pid):
        return self.run(['readlink', '/proc/%d/exe' % pid], check=False).stdout.strip()

    def alive(self, pid):
        return self.run(['kill', '-0', str(pid)], check=False).returncode == 0

    def keep_awake(self):
        """See installtree.keep_awake()."""
        return installtree.keep_awake(['nsenter', '--target', str(self.leader), '--mount', '--pid', '--root',
                                       '--wd=/'], {'PATH': PATH})

    def stop(self):
        # SIGKILL to the namespace's PID 1, from outside, takes the whole namespace with it.
        try:
            os.kill(self.init, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self._dead():
            self.proc.kill()
        self.proc.wait()
        run(['umount', '-R', '-l', self.path], check=False)

    def read_log(self):
        with open(self.log, errors='replace') as f:
            return f.read()


class BootedHost(installtree.BootedContainer):
    """A copy of the Debian root booted with systemd-nspawn --boot (up to
    basic.target, a private network): a host with systemd as PID 1, whose
    dbus-daemon runs with --systemd-activation and hands activations to
    systemd."""

    def __init__(self, base, path):
        run(['cp', '-a', '--reflink=auto', base, path], timeout=templatetest.JOB_TIMEOUT)
        self.path = path
        super().__init__(path, path + '.boot.log', 'stamp-deb-test',
                         env={'PATH': PATH, 'LANG': 'C.UTF-8', 'DEBIAN_FRONTEND': 'noninteractive',
                              'SYSTEMD_PAGER': ''})

    def at(self, path):
        return os.path.join(self.path, path.lstrip('/'))

    def service(self):
        out = self.run(['systemctl', 'show', 'stampd.service', '-pActiveState', '-pMainPID',
                        '-pLoadState']).stdout
        return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)


class DebTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        for tool in ('dpkg-buildpackage', 'dh', 'lintian', 'debootstrap'):
            if not shutil.which(tool):
                self.skipTest('%s is not installed (tools/install-deps.sh)' % tool)
        self.top = os.path.join(self.env.T, 'deb')
        os.makedirs(self.top, exist_ok=True)
        self.package = installtree.once('package', build_package, self.top)
        self.attach_log(os.path.join(self.top, 'bus.log'))

    def base_root(self):
        return installtree.once('root', make_root, self.top, self.package)

    def chroot_host(self, name):
        host = ChrootHost(self.base_root(), os.path.join(self.top, name))
        self.addCleanup(host.stop)
        self.attach_log(host.log)
        return host

    def booted_host(self, name):
        if not shutil.which('systemd-nspawn'):
            self.skipTest('systemd-nspawn is not installed')
        host = BootedHost(self.base_root(), os.path.join(self.top, name))
        self.addCleanup(host.stop)
        self.attach_log(host.log)
        return host

    def apt(self, host, *args):
        """apt-get in the root, offline: every dependency is there already."""
        t0 = time.monotonic()
        try:
            return host.run(['apt-get', '-y', '-q', '--no-install-recommends'] + list(args),
                            timeout=BUILD_TIMEOUT)
        finally:
            diag('apt-get %s: %.1f s' % (' '.join(args), time.monotonic() - t0))

    def test_lintian_clean(self):
        p = run(['lintian', '--fail-on', 'error,warning', '--display-info', self.package.changes],
                check=False, timeout=BUILD_TIMEOUT)
        lines = p.stdout.splitlines()
        bad = [line for line in lines if line[:2] in ('E:', 'W:')]
        self.assertEqual(bad, [], 'lintian:\n' + p.stdout + p.stderr)
        self.assertEqual(p.returncode, 0, 'lintian:\n' + p.stdout + p.stderr)
        # lintian did look at the package: what it says for information (a static unit, D-Bus
        # activated, and no init script) is there
        self.assertIn('I: stamp: systemd-service-file-missing-install-key [lib/systemd/system/stampd.service]',
                      lines, p.stdout)

    def test_package_contents(self):
        listing = run(['dpkg-deb', '-c', self.package.deb]).stdout
        for path in ('./usr/libexec/stampd', './usr/libexec/stamp-transfer', './usr/bin/stampctl',
                     './usr/share/dbus-1/system-services/io.stamp.Stamp1.service',
                     './usr/share/dbus-1/system.d/io.stamp.Stamp1.conf',
                     './usr/share/polkit-1/actions/io.stamp.Stamp1.policy',
                     './lib/systemd/system/stampd.service', './etc/stamp/stampd.conf',
                     './usr/share/man/man1/stampctl.1.gz', './usr/share/doc/stamp/copyright',
                     './usr/share/doc/stamp/examples/50-stamp-group.rules.example',
                     './usr/share/bash-completion/completions/stampctl'):
            self.assertIn(' ' + path + '\n', listing)
        depends = self.package.depends()
        for tool in ('systemd-container', 'btrfs-progs', 'debootstrap', 'mmdebstrap', 'dbus', 'polkitd',
                     'mount', 'libcurl4', 'libarchive13', 'libsystemd0'):
            self.assertIn(tool, depends)

    def test_without_systemd_install_use_upgrade_remove_purge(self):
        host = self.chroot_host('nosystemd')
        deb = '/tmp/' + os.path.basename(self.package.deb)
        shutil.copy(self.package.deb, host.at(deb))
        self.assertEqual(host.stampd_pid(), None)
        self.assertFalse(os.path.lexists(host.at(STORE + '.raw')))

        # install: the bus, running all along, picks the package's files up itself
        self.apt(host, 'install', deb)
        self.assertEqual(host.stampd_pid(), None, 'the package started stampd at installation')
        out = host.run(['stampctl', '--no-legend', 'list']).stdout
        self.assertEqual(out.strip(), '')
        pid = host.stampd_pid()
        self.assertIsNotNone(pid, 'the first stampctl call did not activate stampd')
        self.assertEqual(host.exe(pid), '/usr/libexec/stampd')
        # its pool, made with the package's dependencies (mkfs.btrfs, mount)
        self.assertTrue(os.path.isfile(host.at(STORE + '.raw')))
        self.assertEqual(host.run(['findmnt', '-n', '-o', 'FSTYPE', '--mountpoint', STORE]).stdout.strip(),
                         'btrfs')

        # use: import (stamp-transfer, libarchive), clone, start (systemd-nspawn)
        tree = os.path.join(self.dir, 'tree')
        os.makedirs(tree)
        stamptest.populate_image(tree, 'base')
        run(['tar', '-C', tree, '-cf', host.at('/tmp/base.tar'), '.'])
        host.run(['stampctl', 'import-tar', '/tmp/base.tar', 'base'])
        host.run(['stampctl', 'clone', 'base', 'work'])
        p = host.run(['stampctl', 'start', 'work', '--', '/bin/busybox', 'sh', '-c',
                                    'busybox cat /srv/marker; echo made > /srv/new'])
        self.assertEqual(p.stdout.strip(), 'base', p.stdout + p.stderr)
        self.assertEqual(host.read(STORE + '/work/srv/new'), 'made\n')
        images = sorted(line.split()[0] for line in
                        host.run(['stampctl', '--no-legend', 'list']).stdout.splitlines())
        self.assertEqual(images, ['base', 'work'])

        # upgrade over itself: the running stampd is replaced by one running the new file
        stop_pings = host.keep_awake()
        self.addCleanup(stop_pings)
        old = host.stampd_pid()
        self.assertIsNotNone(old)
        self.apt(host, 'install', '--reinstall', deb)
        new = wait_for(host.stampd_pid, 'a stampd after the upgrade')
        self.assertNotEqual(new, old, 'the upgrade did not restart stampd')
        self.assertFalse(host.alive(old), 'the old stampd still runs')
        self.assertEqual(host.exe(new), '/usr/libexec/stampd', 'stampd does not run the installed file')
        self.assertEqual(sorted(line.split()[0] for line in
                                host.run(['stampctl', '--no-legend', 'list']).stdout.splitlines()),
                         ['base', 'work'])
        stop_pings()

        # remove: stampd stopped; images, the pool and the conffile stay
        running = host.stampd_pid()
        self.assertIsNotNone(running)
        self.apt(host, 'remove', 'stamp')
        self.assertEqual(host.stampd_pid(), None, 'stampd still owns its bus name after remove')
        self.assertFalse(host.alive(running), 'stampd still runs after remove')
        self.assertFalse(os.path.exists(host.at('/usr/libexec/stampd')))
        self.assertTrue(os.path.isfile(host.at('/etc/stamp/stampd.conf')), 'remove took the conffile')
        self.assert_images_kept(host)

        # purge: stamp's own config, state and cache go; the images and the pool stay
        for d in ('/var/lib/stamp', '/var/cache/stamp'):
            os.makedirs(host.at(d), exist_ok=True)
            with open(host.at(d + '/leftover'), 'w') as f:
                f.write('x\n')
        self.apt(host, 'purge', 'stamp')
        for gone in ('/etc/stamp', '/var/lib/stamp', '/var/cache/stamp'):
            self.assertFalse(os.path.lexists(host.at(gone)), '%s is still there after purge' % gone)
        self.assert_images_kept(host)
        self.assertIn(host.run(['dpkg-query', '-W', '-f', '${db:Status-Status}', 'stamp'],
                               check=False).stdout.strip(), ('', 'not-installed'))

    def test_with_systemd_install_use_upgrade_remove_purge(self):
        host = self.booted_host('systemd')
        deb = '/root/' + os.path.basename(self.package.deb)
        shutil.copy(self.package.deb, host.at(deb))
        # An image there already: the store is not empty, so stampd uses it as it is (no pool, which
        # would need loop devices in the container) and clones by copying.
        stamptest.populate_image(host.at(STORE + '/base'), 'base')

        self.apt(host, 'install', deb)
        state = host.service()
        self.assertEqual((state['LoadState'], state['ActiveState']), ('loaded', 'inactive'), state)

        # the first call: dbus asks systemd for stampd.service
        self.assertEqual(host.run(['stampctl', '--no-legend', 'list']).stdout.split()[0], 'base')
        stop_pings = host.keep_awake()
        self.addCleanup(stop_pings)
        state = host.service()
        self.assertEqual(state['ActiveState'], 'active', state)
        old = int(state['MainPID'])
        self.assertEqual(host.run(['readlink', '/proc/%d/exe' % old]).stdout.strip(), '/usr/libexec/stampd')
        self.assertIn("unit='stampd.service'",
                      host.run(['journalctl', '-u', 'dbus.service', '-o', 'cat'], check=False).stdout)
        host.run(['stampctl', 'clone', 'base', 'work'])
        self.assertEqual(open(host.at(STORE + '/work/srv/marker')).read(), 'base\n')

        # upgrade over itself: systemd restarts the running stampd.service
        self.apt(host, 'install', '--reinstall', deb)
        state = wait_for(lambda: (lambda s: s['ActiveState'] == 'active' and s)(host.service()),
                         'stampd.service to be active after the upgrade')
        new = int(state['MainPID'])
        self.assertNotEqual(new, old, 'the upgrade did not restart stampd.service')
        self.assertEqual(host.run(['readlink', '/proc/%d/exe' % new]).stdout.strip(), '/usr/libexec/stampd')
        stop_pings()

        # remove: stopped, the unit gone; the images stay
        self.assertEqual(host.service()['ActiveState'], 'active')
        self.apt(host, 'remove', 'stamp')
        state = host.service()
        self.assertEqual((state['LoadState'], state['ActiveState']), ('not-found', 'inactive'), state)
        self.assertTrue(os.path.isfile(host.at('/etc/stamp/stampd.conf')))
        for name in ('base', 'work'):
            self.assertEqual(open(host.at(STORE + '/%s/srv/marker' % name)).read(), 'base\n')

        self.apt(host, 'purge', 'stamp')
        self.assertFalse(os.path.lexists(host.at('/etc/stamp')))
        self.assertEqual(sorted(n for n in os.listdir(host.at(STORE)) if n != stamptest.STORE_META),
                         ['base', 'work'])

    def assert_images_kept(self, host):
        self.assertTrue(os.path.isfile(host.at(STORE + '.raw')), '/var/lib/machines.raw is gone')
        self.assertEqual(host.run(['findmnt', '-n', '-o', 'SOURCE', '--mountpoint', STORE]).stdout.split()[0],
                         host.run(['losetup', '-n', '-O', 'NAME', '-j', STORE + '.raw']).stdout.strip(),
                         'the pool is no longer mounted on %s' % STORE)
        self.assertEqual(host.read(STORE + '/base/srv/marker'), 'base\n')
        self.assertEqual(host.read(STORE + '/work/srv/new'), 'made\n')
        names = sorted(n for n in host.run(['ls', '-A', STORE]).stdout.split() if n != stamptest.STORE_META)
        self.assertEqual(names, ['base', 'work'])


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
