#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Real-parts test harness for stamp (see shared/TESTING.md).

A test file does `import stamptest`, defines `stamptest.TestCase` classes and
ends with `stamptest.main()`. main() re-executes the file inside a private
mount namespace and brings up, once per file:

  * a private *system* dbus-daemon whose policy includes polkit's and the
    project's own dbus/io.stamp.Stamp1.conf, bind-mounted over /run/dbus;
  * the real polkitd, seeing the project's polkit/ actions and a rules dir
    that tests fill through TestCase.set_rules();
  * test users in copies of /etc/{passwd,shadow,group,gshadow} bind-mounted
    over /etc.

Each test then starts stampd on a store of its choice (an empty directory by
default, so the daemon's own pool set-up runs), calls it as root through Gio
or as an unprivileged user through tests/callas.py, and checks the outcome on
disk. Output is TAP. Everything a test starts is stopped by pid when it ends;
mounts vanish with the namespace at the latest.

Environment: STAMPD, STAMPCTL (binaries), STAMP_SRCDIR, STAMP_BUILDDIR.
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import xml.etree.ElementTree as ET

import gi

gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

PYTHON = '/usr/bin/python3'  # the one with gi; a python3 earlier on PATH may lack it
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get('STAMP_SRCDIR') or os.path.dirname(TESTS_DIR)
BUILDDIR = os.environ.get('STAMP_BUILDDIR') or os.path.join(SRCDIR, 'build-tests')
STAMPD = os.environ.get('STAMPD') or os.path.join(BUILDDIR, 'daemon', 'stampd')
STAMPCTL = os.environ.get('STAMPCTL') or os.path.join(BUILDDIR, 'client', 'stampctl')
CALLAS = os.path.join(TESTS_DIR, 'callas.py')

BUS_NAME = 'io.stamp.Stamp1'
MANAGER_PATH = '/io/stamp/Stamp1'
IMAGE_PREFIX = '/io/stamp/Stamp1/image'
MANAGER_IFACE = 'io.stamp.Stamp1.Manager'
JOB_IFACE = 'io.stamp.Stamp1.Job'
IMAGE_IFACE = 'io.stamp.Stamp1.Image'
STAMP_ERROR = 'io.stamp.Stamp1.Error.'
ACCESS_DENIED = 'org.freedesktop.DBus.Error.AccessDenied'
INTERACTIVE_REQUIRED = 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired'
LIMITS_EXCEEDED = 'org.freedesktop.DBus.Error.LimitsExceeded'
POLKIT_NAME = 'org.freedesktop.PolicyKit1'
ACTION_PREFIX = 'io.stamp.Stamp1.'
UINT64_MAX = 2**64 - 1

# Generous: the same suite runs under ASan/UBSan on a 2-core CI machine.
# These bound waits for things that must happen; they are never a pass/fail
# criterion about speed.
TIMEOUT = float(os.environ.get('STAMPTEST_TIMEOUT', '60'))
# How long a canceled job may take to end. A cancel kills the job's whole namespace, which takes
# moments on any machine: a wait after a cancel that ran this long means nothing was killed, and
# says so in seconds rather than after a job's full timeout.
CANCEL_TIMEOUT = float(os.environ.get('STAMPTEST_CANCEL_TIMEOUT', '30'))

# Test users: (name, password). USER is the ordinary unprivileged caller;
# USER2 a second one (member of group "stamp"); ADMIN the identity that
# polkit's admin rule names, whose password the AUTH_ADMIN prompts want.
USER, USER_PASSWORD = 'stamp-user', 'user-pw-4711'
USER2, USER2_PASSWORD = 'stamp-user2', 'user2-pw-0815'
ADMIN, ADMIN_PASSWORD = 'stamp-admin', 'admin-pw-1234'
STAMP_GROUP = 'stamp'

ENV = None  # the TestEnv of this process, set by main()


# ---------------------------------------------------------------- utilities

def diag(text):
    """Print TAP diagnostic lines."""
    for line in str(text).splitlines() or ['']:
        print('# ' + line, flush=True)


def run(cmd, check=True, **kw):
    """Run a command, return its CompletedProcess with text stdout/stderr."""
    kw.setdefault('stdin', subprocess.DEVNULL)
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError('command failed (%d): %s\n%s%s' % (
            p.returncode, shlex.join(cmd), p.stdout, p.stderr))
    return p


def out(cmd, **kw):
    return run(cmd, **kw).stdout


def end_process(proc, timeout=10):
    """SIGTERM to @proc (a Popen) if it still runs, SIGKILL after @timeout seconds; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(cond, what, timeout=TIMEOUT, interval=0.005):
    """Poll cond() until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %gs waiting for %s' % (timeout, what))
        time.sleep(interval)


def spin_until(cond, what, timeout=TIMEOUT):
    """Iterate the GLib main context (signal delivery) until cond() is true."""
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    waker = GLib.timeout_add(20, lambda: True)  # re-check the deadline now and then
    try:
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError('timed out after %gs waiting for %s' % (timeout, what))
            ctx.iteration(True)
    finally:
        GLib.source_remove(waker)


def write_file(path, text, mode=0o644):
    """Write atomically: readers (polkitd's inotify) never see half a file."""
    tmp = os.path.join(os.path.dirname(path), '.tmp.' + os.path.basename(path))
    with open(tmp, 'w') as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def bus_label_escape(name):
    """sd-bus's bus_label_escape(): what an image name becomes in an object path."""
    if not name:
        return '_'
    res = []
    for i, ch in enumerate(name):
        if (ch.isascii() and ch.isalpha()) or (i > 0 and ch.isascii() and ch.isdigit()):
            res.append(ch)
        else:
            res.extend('_%02x' % b for b in ch.encode())
    return ''.join(res)


def image_path(name):
    return IMAGE_PREFIX + '/' + bus_label_escape(name)


# ------------------------------------------------------------ interface XML

def parse_interfaces(xml_text):
    """{iface: {'methods': {name: [(dir, type, name)]}, 'properties':
    {name: (type, access)}, 'signals': {name: [(type, name)]}}}"""
    result = {}
    for iface in ET.fromstring(xml_text).findall('interface'):
        methods = {m.get('name'): [(a.get('direction', 'in'), a.get('type'), a.get('name'))
                                   for a in m.findall('arg')]
                   for m in iface.findall('method')}
        props = {p.get('name'): (p.get('type'), p.get('access')) for p in iface.findall('property')}
        signals = {s.get('name'): [(a.get('type'), a.get('name')) for a in s.findall('arg')]
                   for s in iface.findall('signal')}
        result[iface.get('name')] = {'methods': methods, 'properties': props, 'signals': signals}
    return result


def load_project_interfaces():
    ifaces = {}
    for name in ('Manager', 'Image', 'Machine', 'Job'):
        with open(os.path.join(SRCDIR, 'dbus', 'io.stamp.Stamp1.%s.xml' % name)) as f:
            ifaces.update(parse_interfaces(f.read()))
    return ifaces


INTERFACES = load_project_interfaces()


def in_signature(iface, method):
    args = INTERFACES[iface]['methods'][method]
    return '(' + ''.join(t for d, t, _ in args if d == 'in') + ')'


# ------------------------------------------------------------------ callers

class DBusError(Exception):
    def __init__(self, name, message):
        super().__init__('%s: %s' % (name, message))
        self.name = name
        self.message = message


def _signature_for(iface, method, args, sig):
    if sig is not None:
        return sig
    if iface in INTERFACES and method in INTERFACES[iface]['methods']:
        return in_signature(iface, method)
    if not args:
        return '()'
    raise ValueError('no signature known for %s.%s' % (iface, method))


def strip_remote_error(message):
    """GLib prefixes "GDBus.Error:NAME: "; PyGObject cannot strip it in place."""
    return re.sub(r'^GDBus\.Error:\S+: ', '', message)


def _unwrap(reply_tuple):
    """Method replies: None for no value, the value for one, a tuple for more."""
    if len(reply_tuple) == 0:
        return None
    if len(reply_tuple) == 1:
        return reply_tuple[0]
    return reply_tuple


def fd_list(*fds):
    """A Gio.UnixFDList holding dups of fds (it owns what it is given)."""
    lst = Gio.UnixFDList.new()
    for fd in fds:
        lst.append(fd)
    return lst


class JobWatch:
    """JobRemoved results (and the LogMessage lines) of every job."""

    def __init__(self, conn):
        self.conn = conn
        self.removed = {}
        self.logs = {}
        self.errors = {}
        self.error_names = {}
        flags = Gio.DBusSignalFlags.NONE
        self.subs = [
            conn.signal_subscribe(BUS_NAME, 'org.freedesktop.DBus.Properties',
                                  'PropertiesChanged', None, JOB_IFACE, flags, self._on_changed),
            conn.signal_subscribe(BUS_NAME, MANAGER_IFACE, 'JobRemoved', MANAGER_PATH, None,
                                  flags, self._on_removed),
            conn.signal_subscribe(BUS_NAME, JOB_IFACE, 'LogMessage', None, None, flags,
                                  self._on_log),
        ]
        conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                       'GetId', None, None, Gio.DBusCallFlags.NONE, 5000, None)

    def _on_removed(self, conn, sender, path, iface, member, params):
        job_id, _, result = params.unpack()
        self.removed[job_id] = result

    def _on_changed(self, conn, sender, path, iface, member, params):
        _, changed, _ = params.unpack()
        if changed.get('ErrorName'):  # sent with its value just before JobRemoved
            self.error_names[path] = changed['ErrorName']

    def error_name(self, job):
        """The named error a failed job ended with (its ErrorName property), or ''."""
        return self.error_names.get(job[1], '')

    def _on_log(self, conn, sender, path, iface, member, params):
        priority, text = params.unpack()
        self.logs.setdefault(path, []).append(text)
        if priority <= 3:  # LOG_ERR: what the job says it failed of
            self.errors.setdefault(path, []).append(text)

    def final_error(self, job):
        """The error a failed job ended with (its last LOG_ERR line), or ''."""
        return (self.errors.get(job[1]) or [''])[-1]

    def wait(self, job, timeout=TIMEOUT * 5):
        job_id, path = job
        spin_until(lambda: job_id in self.removed, 'job %d to end' % job_id, timeout)
        return self.removed[job_id], '\n'.join(self.logs.get(path, []))

    def close(self):
        for s in self.subs:
            self.conn.signal_unsubscribe(s)
        self.subs = []


class Caller:
    """Calls stampd as someone. Subclasses say how the call is made."""

    def call(self, path, iface, method, *args, sig=None, interactive=False, timeout=TIMEOUT):
        raise NotImplementedError

    def manager(self, method, *args, **kw):
        return self.call(MANAGER_PATH, MANAGER_IFACE, method, *args, **kw)

    def image(self, name, method, *args, **kw):
        return self.call(image_path(name), IMAGE_IFACE, method, *args, **kw)

    def get_property(self, path, iface, prop, **kw):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'Get', iface, prop,
                         sig='(ss)', **kw)

    def get_all(self, path, iface, **kw):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'GetAll', iface,
                         sig='(s)', **kw)

    def image_props(self, name, **kw):
        return self.get_all(image_path(name), IMAGE_IFACE, **kw)

    def list_images(self):
        """{name: (type, read_only, crtime, mtime, usage, object)}"""
        return {row[0]: tuple(row[1:]) for row in self.manager('ListImages')}


class RootCaller(Caller):
    """Root, in-process, over one Gio connection to the private bus."""

    def __init__(self, conn):
        self.conn = conn

    def call(self, path, iface, method, *args, sig=None, interactive=False, timeout=TIMEOUT,
             dest=BUS_NAME, fd_list=None):
        sig = _signature_for(iface, method, args, sig)
        params = GLib.Variant(sig, args) if sig != '()' else None
        flags = Gio.DBusCallFlags.NONE
        if interactive:
            flags |= Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION
        try:
            if fd_list is not None:
                reply, _ = self.conn.call_with_unix_fd_list_sync(
                    dest, path, iface, method, params, None, flags, int(timeout * 1000),
                    fd_list, None)
            else:
                reply = self.conn.call_sync(dest, path, iface, method, params, None, flags,
                                            int(timeout * 1000), None)
        except GLib.Error as e:
            raise dbus_error(e) from None
        return _unwrap(reply.unpack())

    def call_async(self, path, iface, method, *args, sig=None, timeout=TIMEOUT):
        """Send a call without waiting; the PendingCall completes while the
        GLib main context is iterated (spin_until)."""
        sig = _signature_for(iface, method, args, sig)
        params = GLib.Variant(sig, args) if sig != '()' else None
        pending = PendingCall()
        self.conn.call(BUS_NAME, path, iface, method, params, None, Gio.DBusCallFlags.NONE,
                       int(timeout * 1000), None, pending.finish, None)
        return pending


class PendingCall:
    def __init__(self):
        self.done = False
        self.result = self.error = None

    def finish(self, conn, res, _user_data):
        try:
            self.result = _unwrap(conn.call_finish(res).unpack())
        except GLib.Error as e:
            self.error = dbus_error(e)
        self.done = True


def dbus_error(gerror):
    name = Gio.DBusError.get_remote_error(gerror) or 'local:%s:%d' % (gerror.domain, gerror.code)
    return DBusError(name, strip_remote_error(gerror.message))


class UserCaller(Caller):
    """An unprivileged user, through tests/callas.py under setpriv."""

    def __init__(self, env, user):
        self.env = env
        self.user = user

    @staticmethod
    def command(path, iface, method, *args, sig=None, interactive=False, timeout=TIMEOUT,
                dest=BUS_NAME, output=None):
        """The callas.py command line for this call (to be run as the user)."""
        sig = _signature_for(iface, method, args, sig)
        argv = [PYTHON, CALLAS, '--timeout', str(timeout)]
        if interactive:
            argv.append('--interactive')
        if output:
            argv += ['--output', output]
        argv += [dest, path, iface, method]
        if sig != '()':
            argv += [sig, GLib.Variant(sig, args).print_(True)]
        return argv

    def call(self, path, iface, method, *args, timeout=TIMEOUT, **kw):
        cmd = self.env.as_user(self.user, self.command(path, iface, method, *args,
                                                       timeout=timeout, **kw))
        p = run(cmd, timeout=timeout + 30)
        return parse_callas_output(p.stdout)


def parse_callas_output(text):
    result = json.loads(text)
    if 'error' in result:
        raise DBusError(result['error'], result['message'])
    return _unwrap(GLib.Variant.parse(None, result['reply'], None, None).unpack())


# ------------------------------------------------------------------- mounts

def mounts_under(top):
    """Mount points at or below top, deepest first."""
    points = []
    with open('/proc/self/mountinfo') as f:
        for line in f:
            mp = line.split()[4]
            mp = re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), mp)
            if mp == top or mp.startswith(top.rstrip('/') + '/'):
                points.append(mp)
    return sorted(points, key=lambda p: p.count('/'), reverse=True)


def loops_backed_by(top):
    """Loop devices whose backing file lies below top."""
    devs = []
    for dev in os.listdir('/sys/block'):
        try:
            with open('/sys/block/%s/loop/backing_file' % dev) as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.startswith(top.rstrip('/') + '/'):
            devs.append('/dev/' + dev)
    return devs


def unmount_all_under(top):
    for mp in mounts_under(top):
        if run(['umount', mp], check=False).returncode != 0:
            run(['umount', '-l', mp], check=False)
    for dev in loops_backed_by(top):
        run(['losetup', '-d', dev], check=False)


def remove_tree(path):
    if not os.path.lexists(path):
        return
    unmount_all_under(path)
    try:
        shutil.rmtree(path)
    except OSError:
        # read-only images: immutable directories, read-only subvolumes
        run(['chattr', '-R', '-i', path], check=False)
        for sub in subvolumes_below(path):
            run(['btrfs', 'property', 'set', '-ts', sub, 'ro', 'false'], check=False)
        shutil.rmtree(path)


def subvolumes_below(path):
    found = []
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p) and os.lstat(p).st_ino == 256:
                found.append(p)
    return found


# ----------------------------------------------------------- disk helpers

def fs_type(path):
    return out(['stat', '-f', '-c', '%T', path]).strip()


def subvolume_show(path):
    """`btrfs subvolume show` as a dict; raises if path is no subvolume."""
    info = {}
    for line in out(['btrfs', 'subvolume', 'show', path]).splitlines()[1:]:
        if ':' in line and line.startswith('\t') and not line.startswith('\t\t'):
            key, _, value = line.strip().partition(':')
            info[key.strip()] = value.strip()
    return info


def is_subvolume(path):
    return run(['btrfs', 'subvolume', 'show', path], check=False).returncode == 0


def subvolume_read_only(path):
    return out(['btrfs', 'property', 'get', '-ts', path, 'ro']).strip() == 'ro=true'


def has_immutable_flag(path):
    return 'i' in out(['lsattr', '-d', path]).split()[0]


def quotas_enabled(mountpoint):
    return run(['btrfs', 'qgroup', 'show', mountpoint], check=False).returncode == 0


def mount_source(path):
    """(source, fstype) of the mount that is exactly at path, or None."""
    p = run(['findmnt', '-n', '-o', 'SOURCE,FSTYPE', '--mountpoint', path], check=False)
    if p.returncode != 0:
        return None
    source, fstype = p.stdout.split()[:2]
    return source, fstype


def loop_backing_file(dev):
    with open('/sys/block/%s/loop/backing_file' % os.path.basename(dev)) as f:
        return f.read().strip()


def make_btrfs_store(path, size='1G', quotas=False):
    """A btrfs filesystem of our own on a sparse file, mounted on path."""
    raw = path + '.btrfs'
    with open(raw, 'wb') as f:
        f.truncate(parse_size(size))
    run(['mkfs.btrfs', '-q', raw])
    os.makedirs(path, exist_ok=True)
    run(['mount', '-o', 'loop', raw, path])
    if quotas:
        run(['btrfs', 'quota', 'enable', path])
    return path


def make_tmpfs_store(path, size):
    os.makedirs(path, exist_ok=True)
    run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0700' % size, 'stamptest', path])
    return path


def parse_size(size):
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    if size[-1] in units:
        return int(size[:-1]) * units[size[-1]]
    return int(size)


OS_RELEASE = '''ID=stamptest
NAME="Stamp Test"
PRETTY_NAME="Stamp Test Image 1"
VERSION_ID=1
'''


def populate_image(root, marker):
    """A small tree a container could run: static busybox, os-release, data."""
    for d in ('bin', 'etc', 'usr/lib', 'srv', 'root', 'tmp'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, 'tmp'), 0o1777)
    shutil.copy2('/bin/busybox', os.path.join(root, 'bin', 'busybox'))
    os.symlink('busybox', os.path.join(root, 'bin', 'sh'))
    with open(os.path.join(root, 'usr/lib/os-release'), 'w') as f:
        f.write(OS_RELEASE)
    os.symlink('../usr/lib/os-release', os.path.join(root, 'etc/os-release'))
    with open(os.path.join(root, 'etc/hostname'), 'w') as f:
        f.write(marker + '\n')
    with open(os.path.join(root, 'srv/marker'), 'w') as f:
        f.write(marker + '\n')


def make_image(store, name, kind='subvolume', read_only=False, populate=True):
    """An image placed in the store by hand, as root, the way an admin would."""
    path = os.path.join(store, name)
    if kind == 'subvolume':
        run(['btrfs', 'subvolume', 'create', path])
    else:
        os.mkdir(path, 0o755)
    if populate:
        populate_image(path, name)
    if read_only:
        if kind == 'subvolume':
            run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'])
        else:
            run(['chattr', '+i', path])
    return path


STORE_META = '.stamp'  # stampd's own records in the store (owners); no image


def store_names(store):
    """The names in the store, sorted, but for stampd's own metadata directory."""
    return sorted(n for n in os.listdir(store) if n != STORE_META)


def store_state(store):
    """What 'nothing changed on disk' compares: the store directory itself and,
    per entry, its inode, type, mode, owner, mtime and read-only state."""
    st = os.lstat(store)
    state = {'.': (st.st_ino, st.st_mtime_ns, st.st_mode, st.st_nlink)}
    for name in sorted(os.listdir(store)):
        p = os.path.join(store, name)
        s = os.lstat(p)
        ro = None
        if stat.S_ISDIR(s.st_mode):
            ro = subvolume_read_only(p) if s.st_ino == 256 and is_subvolume(p) \
                else has_immutable_flag(p)
        state[name] = (s.st_ino, stat.S_IFMT(s.st_mode), s.st_mode, s.st_uid, s.st_gid,
                       s.st_mtime_ns, ro)
    return state


# ------------------------------------------------------------------- daemon

class Daemon:
    """One stampd process on a given store."""

    def __init__(self, env, store, args=(), log_path=None, environ=None):
        self.env = env
        self.store = store
        self.args = list(args)
        self.log_path = log_path
        self.environ = environ  # None: this process's environment
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        cmd = [STAMPD, '--store', self.store, '--log-level', 'debug'] + self.args
        # No idle exit unless the test is about it: a daemon started before slow set-up (a
        # debootstrap, a big tree) on a busy machine would otherwise be gone when the test calls it.
        if not any(a == '--idle-timeout' or a.startswith('--idle-timeout=') for a in self.args):
            cmd += ['--idle-timeout', '0']
        with open(self.log_path, 'a') as log:
            log.write('\n==== %s\n' % shlex.join(cmd))
            log.flush()
            self.proc = subprocess.Popen(wrap_pdeathsig(cmd), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=self.environ)
        wait_for(self._on_bus_or_dead, 'stampd (pid %d) to own %s' % (self.pid, BUS_NAME))
        if self.proc.poll() is not None:
            raise AssertionError('stampd exited with status %s before owning %s; log:\n%s' % (
                self.proc.returncode, BUS_NAME, self.log()))
        return self

    def _on_bus_or_dead(self):
        return self.proc.poll() is not None or self.env.name_owner_pid(BUS_NAME) == self.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM; the daemon must exit 0. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError('stampd did not exit within %gs of SIGTERM' % TIMEOUT)
        rc = self.proc.returncode
        wait_for(lambda: self.env.name_owner_pid(BUS_NAME) != self.pid,
                 'the bus to drop the name of the stopped stampd')
        return rc

    def log(self):
        try:
            with open(self.log_path, errors='replace') as f:
                return f.read()
        except OSError:
            return ''


class KeepAwake:
    """Bus traffic to stampd every @interval seconds (Peer.Ping, which counts
    as activity), so that a daemon a test started with a short idle timeout
    is still there after slow set-up however busy the machine; stop() (or the
    end of a with block) lets it go idle from then on. The interval is a
    small part of any idle timeout a test uses (a second or more)."""

    def __init__(self, conn, interval=0.05):
        self.conn = conn
        self.interval = interval
        # monotonic time at which the last ping was sent: stampd's last activity is no earlier
        self.last_sent = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            self.last_sent = time.monotonic()
            try:
                self.conn.call_sync(BUS_NAME, MANAGER_PATH, 'org.freedesktop.DBus.Peer', 'Ping', None,
                                    None, Gio.DBusCallFlags.NO_AUTO_START, int(TIMEOUT * 1000), None)
            except GLib.Error:
                pass
            if self._stop.wait(self.interval):
                return

    def stop(self):
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wrap_pdeathsig(cmd):
    """Children die with the test process even if it is killed outright."""
    return ['setpriv', '--pdeathsig', 'KILL', '--'] + list(cmd)


# --------------------------------------------------------------------- tmux

class Pane:
    """One command running in its own tmux session (a real terminal)."""

    def __init__(self, tmux, session, tty, status_path):
        self.tmux = tmux
        self.session = session
        self.tty = tty
        self.status_path = status_path

    def echo_off(self):
        flags = out(['stty', '-a', '-F', self.tty], check=False).split()
        return '-echo' in flags

    def wait_for_password_prompt(self, timeout=TIMEOUT):
        # polkit's text agent turns echo off (TCSAFLUSH) after printing its
        # prompt: keys typed earlier are dropped, so wait for that.
        wait_for(lambda: self.echo_off() or self.exited(),
                 'a password prompt (echo off) on %s' % self.tty, timeout, interval=0.02)
        if not self.echo_off():
            raise AssertionError('the command ended without asking for a password:\n'
                                 + self.capture())

    def type_line(self, text):
        self.tmux.cmd('send-keys', '-t', self.session, '-l', text)
        self.tmux.cmd('send-keys', '-t', self.session, 'Enter')

    def exited(self):
        return os.path.exists(self.status_path) and os.path.getsize(self.status_path) > 0

    def wait_exit(self, timeout=TIMEOUT):
        wait_for(self.exited, 'the command in tmux session %s to end' % self.session, timeout)
        with open(self.status_path) as f:
            return int(f.read().strip())

    def capture(self):
        return self.tmux.cmd('capture-pane', '-p', '-J', '-S', '-200', '-t', self.session,
                             check=False).stdout

    def kill(self):
        self.tmux.cmd('kill-session', '-t', self.session, check=False)


class Tmux:
    """A tmux server of our own (own socket, own config)."""

    def __init__(self, env):
        self.env = env
        self.socket = os.path.join(env.T, 'tmux.sock')
        self.conf = os.path.join(env.T, 'tmux.conf')
        self.count = 0
        self.server_pid = None
        with open(self.conf, 'w') as f:
            # keep a finished pane (and its last output) around for capture
            f.write('set -g remain-on-exit on\nset -g history-limit 5000\n')

    def cmd(self, *args, check=True):
        return run(['tmux', '-S', self.socket, '-f', self.conf] + list(args), check=check)

    def start(self, shell_cmd):
        """Run shell_cmd (as root, in sh) in a new session; returns a Pane.
        The exit status of shell_cmd is written to a file the Pane reads."""
        self.count += 1
        session = 'p%d' % self.count
        status = os.path.join(self.env.T, 'tmux-%s.status' % session)
        script = '%s; echo $? > %s' % (shell_cmd, shlex.quote(status + '.tmp')) + \
            ' && mv %s %s' % (shlex.quote(status + '.tmp'), shlex.quote(status))
        argv = ['new-session', '-d', '-s', session, '-x', '160', '-y', '40', '-P', '-F',
                '#{pane_tty} #{pid}', 'sh -c %s' % shlex.quote(script)]
        # The previous test's clean-up killed the last session and the server is on its way out: a
        # new-session that reaches it then fails so (more often on a busy machine). The next
        # attempt starts a server anew.
        deadline = time.monotonic() + TIMEOUT
        while True:
            p = self.cmd(*argv, check=False)
            if p.returncode == 0 or 'server exited unexpectedly' not in p.stderr \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if p.returncode != 0:
            raise AssertionError('tmux new-session failed (%d): %s%s' % (p.returncode, p.stdout, p.stderr))
        tty, pid = p.stdout.split()
        self.server_pid = int(pid)
        return Pane(self, session, tty, status)

    def stop(self):
        if self.server_pid is not None:
            self.cmd('kill-server', check=False)
            try:
                os.kill(self.server_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.server_pid = None


# ---------------------------------------------------------------- polkit

# Always the first rule: a CheckAuthorization that carries the detail
# "stamp-test-probe" is answered YES only by the rules file of that
# generation, so the harness can tell when polkitd has loaded a new file.
PROBE_RULE = '''// written by tests/stamptest.py
polkit.addRule(function(action, subject) {
    var probe = action.lookup("stamp-test-probe");
    if (probe !== undefined)
        return probe == "%d" ? polkit.Result.YES : polkit.Result.NO;
});
polkit.addAdminRule(function(action, subject) {
    return ["unix-user:%s"];
});
'''


# -------------------------------------------------------------- environment

class TestEnv:
    """Bus, polkitd and users of one test process, in its mount namespace."""

    def __init__(self):
        self.T = tempfile.mkdtemp(prefix='stamptest.')
        os.chmod(self.T, 0o755)  # polkitd (user polkitd) must reach the bus socket
        self.procs = []
        self.conn = None
        self.root = None
        self.rules_generation = 0
        self.rules_body = None
        self.users = {}
        self.tmux = None
        self.test_count = 0

    # -- bring-up

    def setup(self):
        for d in ('run/dbus', 'system.d', 'etc', 'polkit-rules', 'logs', 'tests'):
            os.makedirs(os.path.join(self.T, d))
        self._setup_users()
        self._start_bus()
        self._start_polkitd()

    def _setup_users(self):
        etc = os.path.join(self.T, 'etc')
        for name in ('passwd', 'shadow', 'group', 'gshadow'):
            shutil.copy2('/etc/' + name, os.path.join(etc, name))
            st = os.stat('/etc/' + name)
            os.chown(os.path.join(etc, name), st.st_uid, st.st_gid)
        hashes = out(['openssl', 'passwd', '-6', USER_PASSWORD, USER2_PASSWORD,
                      ADMIN_PASSWORD]).split()
        used_ids = self._used_ids(etc)
        gid_stamp = self._free_id(used_ids)
        self._append(etc, 'group', '%s:x:%d:%s' % (STAMP_GROUP, gid_stamp, USER2))
        self._append(etc, 'gshadow', '%s:!::%s' % (STAMP_GROUP, USER2))
        for (name, _), pw_hash in zip(((USER, 0), (USER2, 0), (ADMIN, 0)), hashes):
            uid = self._free_id(used_ids)
            self._append(etc, 'passwd', '%s:x:%d:%d::/nonexistent:/bin/sh' % (name, uid, uid))
            self._append(etc, 'shadow', '%s:%s:19000:0:99999:7:::' % (name, pw_hash))
            self._append(etc, 'group', '%s:x:%d:' % (name, uid))
            self._append(etc, 'gshadow', '%s:!::' % name)
            self.users[name] = uid
        for name in ('passwd', 'shadow', 'group', 'gshadow'):
            run(['mount', '--bind', os.path.join(etc, name), '/etc/' + name])

    def add_users(self, prefix, n):
        """n more users without a password, prefix0, prefix1, ...: written into the copies of the
        user database in place (the bind mounts show them at once). Returns their names."""
        etc = os.path.join(self.T, 'etc')
        used = self._used_ids(etc)
        names = []
        for i in range(n):
            name = '%s%d' % (prefix, i)
            if name not in self.users:
                uid = self._free_id(used)
                self._append(etc, 'passwd', '%s:x:%d:%d::/nonexistent:/bin/sh' % (name, uid, uid))
                self._append(etc, 'shadow', '%s:!:19000:0:99999:7:::' % name)
                self._append(etc, 'group', '%s:x:%d:' % (name, uid))
                self._append(etc, 'gshadow', '%s:!::' % name)
                self.users[name] = uid
            names.append(name)
        return names

    @staticmethod
    def _used_ids(etc):
        used = set()
        for name in ('passwd', 'group'):
            with open(os.path.join(etc, name)) as f:
                for line in f:
                    fields = line.split(':')
                    if len(fields) > 2 and fields[2].isdigit():
                        used.add(int(fields[2]))
        return used

    @staticmethod
    def _free_id(used):
        uid = 61000
        while uid in used:
            uid += 1
        used.add(uid)
        return uid

    @staticmethod
    def _append(etc, name, line):
        with open(os.path.join(etc, name), 'a') as f:
            f.write(line + '\n')

    def _start_bus(self):
        # polkit-agent-helper-1 is set-uid, clears its environment and always
        # reports to /run/dbus/system_bus_socket: that path must be our bus.
        run(['mount', '--bind', os.path.join(self.T, 'run/dbus'), '/run/dbus'])
        shutil.copy(os.path.join(SRCDIR, 'dbus', 'io.stamp.Stamp1.conf'),
                    os.path.join(self.T, 'system.d'))
        conf = os.path.join(self.T, 'system.conf')
        with open(conf, 'w') as f:
            f.write(SYSTEM_BUS_CONF % {'system_d': os.path.join(self.T, 'system.d')})
        r, w = os.pipe()
        self._spawn('dbus-daemon', ['dbus-daemon', '--config-file=' + conf, '--nofork',
                                    '--print-address=%d' % w], pass_fds=(w,))
        os.close(w)
        with os.fdopen(r) as f:
            address = f.readline().strip()
        if not address:
            raise AssertionError('dbus-daemon did not start:\n' + self.log('dbus-daemon'))
        self.address = address
        os.environ['DBUS_SYSTEM_BUS_ADDRESS'] = address
        self.conn = Gio.DBusConnection.new_for_address_sync(
            address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
        self.root = RootCaller(self.conn)

    def _start_polkitd(self):
        # tmpfs over polkit's own directories hides the distribution's actions
        # and rules even where a directory does not exist on the host.
        for top in ('/usr/share/polkit-1', '/etc/polkit-1'):
            run(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'stamptest', top])
            os.mkdir(os.path.join(top, 'rules.d'), 0o755)
        os.mkdir('/usr/share/polkit-1/actions', 0o755)
        run(['mount', '--bind', os.path.join(SRCDIR, 'polkit'), '/usr/share/polkit-1/actions'])
        rules_dir = os.path.join(self.T, 'polkit-rules')
        os.chmod(rules_dir, 0o755)
        run(['mount', '--bind', rules_dir, '/etc/polkit-1/rules.d'])
        self._write_rules('')
        self.start_polkitd()

    def start_polkitd(self):
        """(Re)start polkitd; returns once it answers with the current rules."""
        self.procs = [(n, p) for n, p in self.procs if n != 'polkitd' or p.poll() is None]
        self._spawn('polkitd', ['/usr/lib/polkit-1/polkitd'])
        wait_for(lambda: self.name_owner_pid(POLKIT_NAME) or self._dead('polkitd'),
                 'polkitd on the bus')
        if self._dead('polkitd'):
            raise AssertionError('polkitd died:\n' + self.log('polkitd'))
        self._wait_rules_applied()

    def stop_polkitd(self):
        """Stop polkitd (SIGTERM); returns once its name has left the bus."""
        for name, proc in self.procs:
            if name == 'polkitd' and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=TIMEOUT)
        wait_for(lambda: self.name_owner_pid(POLKIT_NAME) is None, 'polkitd to leave the bus')

    def polkitd_running(self):
        return any(n == 'polkitd' and p.poll() is None for n, p in self.procs)

    def _spawn(self, name, cmd, **kw):
        log = open(os.path.join(self.T, 'logs', name + '.log'), 'a')
        proc = subprocess.Popen(wrap_pdeathsig(cmd), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, **kw)
        log.close()
        self.procs.append((name, proc))
        return proc

    def _dead(self, name):
        return any(n == name and p.poll() is not None for n, p in self.procs)

    def log(self, name):
        try:
            with open(os.path.join(self.T, 'logs', name + '.log'), errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def log_path(self, name):
        return os.path.join(self.T, 'logs', name + '.log')

    # -- tear-down

    def teardown(self):
        if self.tmux:
            self.tmux.stop()
        if self.conn:
            self.conn.close_sync(None)
        for name, proc in reversed(self.procs):
            end_process(proc)
        remove_tree_best_effort(self.T)

    # -- bus

    def name_owner_pid(self, name):
        try:
            reply = self.conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus',
                                        'org.freedesktop.DBus', 'GetConnectionUnixProcessID',
                                        GLib.Variant('(s)', (name,)), None,
                                        Gio.DBusCallFlags.NONE, 5000, None)
        except GLib.Error:
            return None
        return reply.unpack()[0]

    def subscribe(self, iface, member, path=None):
        """Collect signals from stampd; returns (list, unsubscribe)."""
        seen = []

        def on_signal(conn, sender, obj_path, iface_, member_, params):
            seen.append(params.unpack())

        sub = self.conn.signal_subscribe(BUS_NAME, iface, member, path, None,
                                         Gio.DBusSignalFlags.NONE, on_signal)
        # a round trip to the bus makes sure the match rule is in place
        self.conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus',
                            'org.freedesktop.DBus', 'GetId', None, None,
                            Gio.DBusCallFlags.NONE, 5000, None)
        return seen, lambda: self.conn.signal_unsubscribe(sub)

    # -- users

    def as_user(self, user, argv):
        """argv run as user (no supplementary privileges, clean environment)."""
        return ['setpriv', '--reuid=' + user, '--regid=' + user, '--init-groups',
                '--reset-env', '--', 'env', 'DBUS_SYSTEM_BUS_ADDRESS=' + self.address] + argv

    def user_caller(self, user=USER):
        return UserCaller(self, user)

    # -- polkit rules

    def set_rules(self, body):
        """Replace the test rules; returns once polkitd evaluates the new file."""
        if body == self.rules_body:
            return
        self._write_rules(body)
        self._wait_rules_applied()

    def _write_rules(self, body):
        self.rules_generation += 1
        self.rules_body = body
        text = PROBE_RULE % (self.rules_generation, ADMIN) + body
        write_file(os.path.join(self.T, 'polkit-rules', '50-stamp-test.rules'), text)

    def _wait_rules_applied(self):
        wait_for(lambda: self._probe(self.rules_generation),
                 'polkitd to load rules generation %d' % self.rules_generation)

    def _probe(self, generation):
        subject = ('system-bus-name', {'name': GLib.Variant('s', self.conn.get_unique_name())})
        try:
            reply = self.conn.call_sync(
                POLKIT_NAME, '/org/freedesktop/PolicyKit1/Authority',
                'org.freedesktop.PolicyKit1.Authority', 'CheckAuthorization',
                GLib.Variant('((sa{sv})sa{ss}us)', (subject, ACTION_PREFIX + 'manage-images',
                                                     {'stamp-test-probe': str(generation)}, 0, '')),
                None, Gio.DBusCallFlags.NONE, 10000, None)
        except GLib.Error as e:
            # polkitd busy (a burst of checks just dropped, a loaded machine): asked again until
            # wait_for()'s own time is up
            if e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT):
                return False
            raise
        return reply.unpack()[0][0]

    # -- tmux

    def get_tmux(self):
        if self.tmux is None:
            self.tmux = Tmux(self)
        return self.tmux

    def new_test_dir(self, test_id):
        self.test_count += 1
        d = os.path.join(self.T, 'tests', '%02d-%s' % (self.test_count, test_id.split('.')[-1]))
        os.makedirs(d)
        os.chmod(d, 0o755)
        return d


def remove_tree_best_effort(path):
    try:
        remove_tree(path)
    except Exception as e:  # a leftover in /tmp is no reason to fail a test run
        diag('could not remove %s: %s' % (path, e))


SYSTEM_BUS_CONF = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- A private system bus for stamp's tests: Debian's system.conf without
     the user switch, forking, activation and the host's system.d. -->
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
  <includedir>%(system_d)s</includedir>
</busconfig>
'''


# ---------------------------------------------------------------- TestCase

class TestCase(unittest.TestCase):
    """Base of every integration test: a fresh directory, no polkit rules,
    and helpers to start stampd and look at the store."""

    maxDiff = None

    def setUp(self):
        self.env = ENV
        self.root = ENV.root
        self.user = ENV.user_caller(USER)
        self.user2 = ENV.user_caller(USER2)
        self.dir = ENV.new_test_dir(self.id())
        self.attached_logs = []
        self.daemons = []
        self.addCleanup(remove_tree, self.dir)
        self.set_rules('')

    # -- polkit

    def set_rules(self, body):
        ENV.set_rules(body)

    def stop_polkitd(self):
        """polkit goes away (until the test ends: then it is started again)."""
        self.addCleanup(lambda: ENV.polkitd_running() or ENV.start_polkitd())
        ENV.stop_polkitd()

    def allow(self, user=USER, action='manage-images', result='YES'):
        """A rule: action is decided as result for user."""
        self.set_rules(rule_for(user, action, result))

    # -- daemons and stores

    def attach_log(self, path):
        if path not in self.attached_logs:
            self.attached_logs.append(path)

    def make_store(self, kind='pool'):
        """'pool': an empty directory (the daemon makes its own pool);
        'btrfs': a btrfs of our own without quotas; 'plain': a directory on
        the non-btrfs filesystem of the temp dir."""
        store = os.path.join(self.dir, 'store')
        if kind == 'btrfs':
            make_btrfs_store(store)
        else:
            os.makedirs(store)
        if kind == 'plain':
            self.assertNotEqual(fs_type(store), 'btrfs', 'the temp dir must not be on btrfs')
        return store

    def start_daemon(self, store=None, kind='pool', args=(), environ=None):
        if store is None:
            store = self.make_store(kind)
            if kind == 'plain':
                args = ['--no-pool'] + list(args)
        log = os.path.join(self.dir, 'stampd.log')
        self.attach_log(log)
        self.attach_log(ENV.log_path('polkitd'))
        daemon = Daemon(ENV, store, args, log, environ)
        self.daemons.append(daemon)
        self.addCleanup(self._stop_daemon, daemon)
        return daemon.start()

    def _stop_daemon(self, daemon):
        if daemon.running():
            rc = daemon.stop()
            self.assertEqual(rc, 0, 'stampd exited with status %s on SIGTERM' % rc)

    def stop_daemon(self, daemon):
        rc = daemon.stop()
        self.assertEqual(rc, 0, 'stampd exited with status %s on SIGTERM' % rc)

    # -- terminals

    def run_in_terminal(self, user, argv, agent=False):
        """argv as user in a tmux pane. With agent, a pkttyagent registered
        for argv's process answers its polkit prompts on that terminal."""
        command = shlex.join(argv)
        if agent:
            fifo = os.path.join(self.dir, 'agent-%d.fifo' % len(self.attached_logs))
            os.mkfifo(fifo, 0o600)
            os.chown(fifo, ENV.users[user], ENV.users[user])
            # pkttyagent closes the notify fd once registered: cat then sees
            # EOF, and exec keeps the pid polkit matches the agent by.
            command = 'pkttyagent --process $$ --notify-fd 3 3>%s & cat %s >/dev/null; exec %s' % (
                shlex.quote(fifo), shlex.quote(fifo), command)
        pane = ENV.get_tmux().start(shlex.join(ENV.as_user(user, ['sh', '-c', command])))
        self.addCleanup(pane.kill)
        self.attach_log(pane.capture)
        return pane

    def call_in_terminal(self, user, method, *args, path=MANAGER_PATH, iface=MANAGER_IFACE):
        """An interactive call by user from a terminal with a text agent.
        Returns (pane, result) where result() parses the call's outcome."""
        output = os.path.join(self.dir, 'callas-%d.json' % len(self.attached_logs))
        open(output, 'w').close()
        os.chown(output, ENV.users[user], ENV.users[user])
        argv = UserCaller.command(path, iface, method, *args, interactive=True, output=output)
        pane = self.run_in_terminal(user, argv, agent=True)

        def result():
            with open(output) as f:
                return parse_callas_output(f.read())
        return pane, result

    # -- assertions

    def assertDBusError(self, name, func, *args, **kw):
        """func(*args) must fail with the D-Bus error name; returns the error."""
        try:
            result = func(*args, **kw)
        except DBusError as e:
            if e.name != name:
                self.fail('expected %s, got %s' % (name, e))
            return e
        self.fail('expected %s, got success: %r' % (name, result))

    def assertUnchanged(self, store, before, what=''):
        self.assertEqual(store_state(store), before,
                         'the store changed on disk%s' % (' after ' + what if what else ''))

    def assertSnapshotOf(self, path, source):
        """path is a btrfs snapshot of source (parent UUID)."""
        info, src = subvolume_show(path), subvolume_show(source)
        self.assertEqual(info['Parent UUID'], src['UUID'],
                         '%s is not a snapshot of %s' % (path, source))

    def assertSameTree(self, a, b):
        self.assertEqual(tree_listing(a), tree_listing(b))


def rule_for(user, action, result):
    return '''polkit.addRule(function(action, subject) {
    if (action.id == "%s%s" && subject.user == "%s")
        return polkit.Result.%s;
});
''' % (ACTION_PREFIX, action, user, result)


def tree_listing(top):
    """Relative path → (type, mode, uid, gid, size, link target, content digest)."""
    entries = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(root, name)
            s = os.lstat(p)
            target = os.readlink(p) if stat.S_ISLNK(s.st_mode) else None
            digest = None
            if stat.S_ISREG(s.st_mode):
                with open(p, 'rb') as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            entries[os.path.relpath(p, top)] = (stat.S_IFMT(s.st_mode), s.st_mode, s.st_uid,
                                                s.st_gid, s.st_size if digest else None,
                                                target, digest)
    return entries


# ----------------------------------------------------------------- running

class TapResult(unittest.TestResult):
    """unittest results as TAP, one line per test, written when the test
    ends; failures carry the traceback and the logs the test attached."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def startTest(self, test):
        super().startTest(test)
        self._t0 = time.monotonic()
        self._ok, self._directive, self._errors, self._logs = True, '', [], None

    def stopTest(self, test):
        super().stopTest(test)
        self.n += 1
        directive = self._directive
        if self._ok and not directive:
            directive = '  # %.2fs' % (time.monotonic() - self._t0)
        print('%s %d - %s%s' % ('ok' if self._ok else 'not ok', self.n, test_name(test),
                                directive), flush=True)
        for err in self._errors:
            diag(err)
        if self._logs:
            diag(self._logs)

    def _fail(self, test, err, label=''):
        self._ok = False
        self._errors.append(label + ''.join(traceback.format_exception(*err)))
        if self._logs is None:  # now, before clean-up removes them
            self._logs = self._read_logs(test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._directive = ' # SKIP ' + reason

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._directive = ' # TODO expected failure'

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._ok = False
        self._errors.append('unexpected success')

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err)

    def addError(self, test, err):
        super().addError(test, err)
        if not hasattr(self, '_errors') or isinstance(test, unittest.suite._ErrorHolder):
            # setUpClass/tearDownClass failed: no startTest/stopTest around it.
            self.n += 1
            print('not ok %d - %s' % (self.n, test.id()), flush=True)
            diag(''.join(traceback.format_exception(*err)))
            return
        self._fail(test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail(test, err, 'subtest %s:\n' % subtest._subDescription())

    @staticmethod
    def _read_logs(test):
        parts = []
        for log in getattr(test, 'attached_logs', []):
            if callable(log):  # e.g. a tmux pane's screen
                title, text = getattr(log, '__qualname__', 'output'), log()
            else:
                try:
                    with open(log, errors='replace') as f:
                        title, text = log, f.read()
                except OSError:
                    continue
            parts.append('---- %s (last 150 lines)' % title)
            parts.extend(text.splitlines()[-150:])
        return '\n'.join(parts)


def test_name(test):
    return test.id().split('.', 1)[-1] if hasattr(test, 'id') else str(test)


def enter_namespace():
    """Re-run this very process in a private mount namespace."""
    if os.environ.get('STAMPTEST_NAMESPACE') == '1':
        return
    os.environ['STAMPTEST_NAMESPACE'] = '1'
    os.execvp('unshare', ['unshare', '--mount', '--propagation', 'private', '--',
                          PYTHON] + sys.argv)


def on_sigterm(signum, frame):
    raise SystemExit('killed by signal %d' % signum)


def main():
    global ENV
    if os.geteuid() != 0:
        print('1..0 # SKIP the integration tests need root')
        return 0
    enter_namespace()
    signal.signal(signal.SIGTERM, on_sigterm)
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules['__main__'])
    if len(sys.argv) > 1:  # run only the named tests: test-x.py CloneTest.test_y
        suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:],
                                                              sys.modules['__main__'])
    result = TapResult()
    ENV = TestEnv()
    try:
        t0 = time.monotonic()
        ENV.setup()
        diag('bus, polkitd and users up in %.0f ms' % ((time.monotonic() - t0) * 1000))
        suite.run(result)
    except BaseException:
        harness = unittest.FunctionTestCase(lambda: None, description='harness')
        result.startTest(harness)
        result.addError(harness, sys.exc_info())
        result.stopTest(harness)
    finally:
        ENV.teardown()
    print('1..%d' % result.n, flush=True)
    return 0 if result.wasSuccessful() else 1
