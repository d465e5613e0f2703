# SPDX-License-Identifier: LGPL-2.1-or-later
"""Installed trees of stamp, for the packaging tests.

Two kinds:

  * destdir_install(): `meson install --destdir` of the build under test
    (STAMP_BUILDDIR), to look at what lands where;
  * prefix_install(): a build of our own, configured with --prefix inside the
    test's directory and `meson install`ed there, so that the installed files
    are real at the paths they name: the activation file's Exec= and the
    unit's ExecStart= point at a stampd that exists. (With --destdir they
    would name <prefix>/libexec/stampd, which is not there.) Build options
    such as -Dstore= and -Didle-timeout= are compiled into that stampd.

Both read the configured directories back from `meson introspect`.
"""

import json
import os
import shutil
import signal
import subprocess

import stamptest
from stamptest import BUILDDIR, SRCDIR, run, wait_for, wrap_pdeathsig

MESON = shutil.which('meson') or 'meson'
BOOT_TIMEOUT = float(os.environ.get('STAMPTEST_BOOT_TIMEOUT', '180'))


class Tree:
    """An installed tree: root (the destdir, or '/') plus the configured
    directories as absolute paths on the target system."""

    def __init__(self, builddir, root):
        self.builddir = builddir
        self.root = root
        opts = {o['name']: o['value'] for o in json.loads(
            run([MESON, 'introspect', '--buildoptions', builddir]).stdout)}
        self.options = opts
        prefix = opts['prefix']
        self.prefix = prefix
        self.bindir = os.path.join(prefix, opts['bindir'])
        self.libexecdir = os.path.join(prefix, opts['libexecdir'])
        self.datadir = os.path.join(prefix, opts['datadir'])
        self.mandir = os.path.join(prefix, opts['mandir'])
        self.store = opts['store']
        # what systemd/meson.build decides
        self.unitdir = opts['systemdsystemunitdir'] or self._default_unitdir()

    def _default_unitdir(self):
        if self.prefix == '/usr':
            p = run(['pkg-config', '--variable=systemdsystemunitdir', 'systemd'], check=False)
            if p.returncode == 0 and p.stdout.strip():
                return p.stdout.strip()
        return os.path.join(self.prefix, 'lib/systemd/system')

    def path(self, target_path):
        """Where a path of the target system is in this tree."""
        return os.path.join(self.root, target_path.lstrip('/'))

    @property
    def stampd(self):
        return os.path.join(self.libexecdir, 'stampd')

    @property
    def stampctl(self):
        return os.path.join(self.bindir, 'stampctl')

    @property
    def activation_file(self):
        return os.path.join(self.datadir, 'dbus-1/system-services/io.stamp.Stamp1.service')

    @property
    def unit_file(self):
        return os.path.join(self.unitdir, 'stampd.service')

    def installed_files(self):
        """Every file and link below root, as target-system paths."""
        found = []
        for top, dirs, files in os.walk(self.root):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
                found.append('/' + os.path.relpath(os.path.join(top, name), self.root))
        return sorted(found)


_done = {}


def once(key, func, *args, **kw):
    """func(*args, **kw) the first time, its result after that: a fixture
    shared by the tests of a file. If it could not be made, the first test
    fails with its traceback and each later one with a line naming it."""
    if key in _done:
        result, error = _done[key]
        if error is not None:
            raise AssertionError('%s could not be set up (see the first test that needed it): '
                                 '%s' % (key, error))
        return result
    try:
        result = func(*args, **kw)
    except Exception as e:
        _done[key] = (None, e)
        raise
    _done[key] = (result, None)
    return result


def destdir_install(destdir):
    """The build under test, installed below destdir. --no-rebuild: meson
    test has built it, and other tests run from that build dir meanwhile."""
    run([MESON, 'install', '-C', BUILDDIR, '--no-rebuild', '--quiet', '--destdir', destdir])
    return Tree(BUILDDIR, destdir)


def prefix_install(top, **options):
    """A build of the source tree configured with --prefix=top/prefix and
    the given -D options, installed there. Everything it writes stays below
    top (checked: the install log lists every file)."""
    builddir = os.path.join(top, 'build')
    prefix = os.path.join(top, 'prefix')
    cmd = [MESON, 'setup', '--prefix', prefix, '-Dslow-tests=false',
           '-Dsystemdsystemunitdir=' + os.path.join(prefix, 'lib/systemd/system')]
    cmd += ['-D%s=%s' % (k.replace('_', '-'), v) for k, v in options.items()]
    run(cmd + [builddir, SRCDIR])
    run([MESON, 'install', '-C', builddir, '--quiet'])
    with open(os.path.join(builddir, 'meson-logs', 'install-log.txt')) as f:
        written = [line.strip() for line in f if line.strip() and not line.startswith('#')]
    outside = [p for p in written if p != prefix and not p.startswith(prefix + '/')]
    if outside:
        raise AssertionError('meson install wrote outside %s: %s' % (prefix, outside))
    return Tree(builddir, '/')


def planned_install(builddir):
    """{built or source file: target path} that `meson install` would write."""
    return json.loads(run([MESON, 'introspect', '--installed', builddir]).stdout)


def read_keyfile(path):
    """An ini-style file (unit, D-Bus service file) as {section: {key: [values]}};
    keys may repeat, comments and blank lines are skipped."""
    sections, current = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in '#;':
                continue
            if line.startswith('[') and line.endswith(']'):
                current = sections.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition('=')
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def find_descendant(top, match):
    """The first process below the process top whose executable's path
    match(path) accepts, or None."""
    todo = [top]
    while todo:
        pid = todo.pop()
        try:
            exe = os.readlink('/proc/%d/exe' % pid)
            with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
        if pid != top and match(exe):
            return pid
    return None


def keep_awake(nsenter, env):
    """Pings to stampd, 20 a second, run by the command prefix nsenter (in a
    container or a root of ours), that never activate it (--auto-start=no) but
    keep an activated one from its idle exit while a test looks at it, however
    slow the machine. Returns a stop function."""
    script = ('while :; do busctl --auto-start=no call %s /io/stamp/Stamp1 '
              'org.freedesktop.DBus.Peer Ping >/dev/null 2>&1; sleep 0.05; done' % stamptest.BUS_NAME)
    proc = subprocess.Popen(wrap_pdeathsig(nsenter + ['sh', '-c', script]), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return stop


class BootedContainer:
    """A root file system booted with systemd-nspawn --boot up to
    basic.target, with a private network: a host with systemd as PID 1, whose
    dbus-daemon hands activations to systemd. Commands run in it as root, in
    all its namespaces; env is their environment."""

    def __init__(self, root, log, machine, nspawn_args=(), env=None):
        self.log = log
        self.env = env or {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C.UTF-8'}
        argv = ['systemd-nspawn', '--quiet', '-D', root, '--register=no', '--keep-unit', '--private-network',
                '-M', machine] + list(nspawn_args) + ['--boot', '--', 'systemd.unit=basic.target']
        with open(self.log, 'w') as f:
            self.proc = subprocess.Popen(wrap_pdeathsig(argv), stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        self.leader = wait_for(self._find_leader, 'the container to start', timeout=BOOT_TIMEOUT)
        wait_for(lambda: self._dead() or self.run(['systemctl', 'is-active', 'dbus.socket'],
                                                  check=False).stdout.strip() == 'active',
                 'the container to listen on its bus', timeout=BOOT_TIMEOUT, interval=0.2)
        if self._dead():
            raise AssertionError('the container did not boot:\n' + self.read_log())

    def _dead(self):
        return self.proc.poll() is not None

    def _find_leader(self):
        """The container's PID 1: systemd, below nspawn."""
        if self._dead():
            raise AssertionError('systemd-nspawn exited with %s:\n%s' % (self.proc.returncode, self.read_log()))
        return find_descendant(self.proc.pid, lambda exe: exe.endswith('/lib/systemd/systemd'))

    def nsenter(self):
        return ['nsenter', '--target', str(self.leader), '--all', '--root', '--wd=/']

    def run(self, argv, check=True, timeout=stamptest.TIMEOUT):
        """argv as root inside the container (all its namespaces, its root)."""
        return run(self.nsenter() + list(argv), check=check, timeout=timeout, env=self.env)

    def sh(self, script, **kw):
        return self.run(['sh', '-c', script], **kw)

    def keep_awake(self):
        """See keep_awake()."""
        return keep_awake(self.nsenter(), self.env)

    def stop(self):
        if not self._dead():
            # nspawn: a clean poweroff of the booted container
            stamptest.end_process(self.proc, timeout=stamptest.TIMEOUT)

    def read_log(self):
        with open(self.log, errors='replace') as f:
            return f.read()
