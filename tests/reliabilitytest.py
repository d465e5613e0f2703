# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the reliability tests share (test-reliability.py, test-bad-callers.py,
test-load.py, test-authz-matrix.py): trees big enough for work to take time,
checksums of trees, the daemon's resource use, who still holds the store, a
throttled HTTP server for PullTar, and calls that skip themselves while
their method answers NotSupported.

Nothing here is a mock: it is all ways of driving and looking at the real
daemon from outside."""

import hashlib
import http.server
import os
import random
import socketserver
import stat
import threading
import time
import unittest

import stamptest
from stamptest import MANAGER_IFACE, STAMP_ERROR, GLib

NOT_SUPPORTED = STAMP_ERROR + 'NotSupported'
NO_SPACE = STAMP_ERROR + 'NoSpace'
INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
LIMITS_EXCEEDED = 'org.freedesktop.DBus.Error.LimitsExceeded'


# ---------------------------------------------------------------- trees

def make_tree(root, files=4000, size=32 << 10, dirs=40, seed=1):
    """A deterministic tree of files x size bytes in dirs directories, with
    a few links and modes mixed in: copying 4000 x 32 KiB takes about a
    second here."""
    rnd = random.Random(seed)
    blob = rnd.randbytes(1 << 20)
    os.makedirs(root, exist_ok=True)
    for d in range(dirs):
        os.makedirs(os.path.join(root, 'd%02d' % d), exist_ok=True)
    for i in range(files):
        d = os.path.join(root, 'd%02d' % (i % dirs))
        off = (i * 7919) % (len(blob) - size)
        with open(os.path.join(d, 'f%05d' % i), 'wb') as f:
            f.write(blob[off:off + size])
    os.makedirs(os.path.join(root, 'etc'), exist_ok=True)
    with open(os.path.join(root, 'etc', 'os-release'), 'w') as f:
        f.write('ID=stamptest\nNAME="Stamp Test"\n')
    os.symlink('../d00/f00000', os.path.join(root, 'etc', 'link'))
    os.chmod(os.path.join(root, 'd01'), 0o750)
    return root


def tree_digest(top):
    """One hash over every path, type, mode, owner, size, link target and
    content below top: equal digests mean equal trees."""
    h = hashlib.sha256()
    for rel, entry in sorted(stamptest.tree_listing(top).items()):
        h.update(repr((rel, entry)).encode())
    return h.hexdigest()


def temporaries(store):
    return sorted(n for n in os.listdir(store) if n.startswith('.#'))


# ------------------------------------------------------ processes, resources

def holders(path):
    """(pid, what) of every process whose cwd, root or an open fd is at or
    below path (the test process itself excluded)."""
    path = path.rstrip('/')
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        links = ['cwd', 'root']
        try:
            links += ['fd/' + fd for fd in os.listdir('/proc/%s/fd' % pid)]
        except OSError:
            continue
        for link in links:
            try:
                target = os.readlink('/proc/%s/%s' % (pid, link))
            except OSError:
                continue
            if target == path or target.startswith(path + '/'):
                found.append((int(pid), link, target))
                break
    return found


def wait_store_released(test, store, timeout=60):
    """After the daemon died: wait until none of its workers holds the store
    any more (they must die with it: PR_SET_PDEATHSIG, PID namespaces)."""
    stamptest.wait_for(lambda: not holders(store),
                       'the dead daemon\'s workers to let go of %s (still: %s)' % (store, holders(store)),
                       timeout, interval=0.05)


def daemon_resources(pid):
    """(open fds, VmRSS in KiB, threads) of a process."""
    n_fds = len(os.listdir('/proc/%d/fd' % pid))
    rss = threads = 0
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
            elif line.startswith('Threads:'):
                threads = int(line.split()[1])
    return n_fds, rss, threads


def daemon_fds(pid):
    """{fd: target} of a process, for telling what leaked."""
    fds = {}
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            fds[int(fd)] = os.readlink('/proc/%d/fd/%s' % (pid, fd))
        except OSError:
            pass
    return fds


# ---------------------------------------------------------------- calls

def skip_if_not_supported(call, what):
    """Run call(); a NotSupported answer skips the test (the method has not
    landed yet), anything else is returned or raised."""
    try:
        return call()
    except stamptest.DBusError as e:
        if e.name == NOT_SUPPORTED:
            raise unittest.SkipTest('%s answers NotSupported: %s' % (what, e.message))
        raise


def spin(seconds):
    """Let the GLib main context deliver replies and signals for a while."""
    deadline = time.monotonic() + seconds
    ctx = GLib.MainContext.default()
    waker = GLib.timeout_add(10, lambda: True)
    try:
        while time.monotonic() < deadline:
            ctx.iteration(True)
    finally:
        GLib.source_remove(waker)


# ---------------------------------------------------------- HTTP for PullTar

class ThrottledServer:
    """A local HTTP server (127.0.0.1 only) for PullTar: serves the files of
    a directory, the big ones slowly (chunk bytes every delay seconds), so
    that a pull takes long enough to be interrupted."""

    def __init__(self, directory, chunk=256 << 10, delay=0.02):
        outer = self
        self.directory = directory
        self.chunk, self.delay = chunk, delay
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                path = os.path.join(outer.directory, os.path.basename(self.path))
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                size = os.path.getsize(path)
                self.send_response(200)
                self.send_header('Content-Length', str(size))
                self.end_headers()
                try:
                    with open(path, 'rb') as f:
                        while True:
                            data = f.read(outer.chunk)
                            if not data:
                                break
                            self.wfile.write(data)
                            if size > outer.chunk:
                                time.sleep(outer.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.httpd = Server(('127.0.0.1', 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return 'http://127.0.0.1:%d/%s' % (self.port, name)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def write_sha256sums(directory):
    lines = []
    for name in sorted(os.listdir(directory)):
        p = os.path.join(directory, name)
        if name == 'SHA256SUMS' or not os.path.isfile(p):
            continue
        with open(p, 'rb') as f:
            lines.append('%s *%s\n' % (hashlib.sha256(f.read()).hexdigest(), name))
    with open(os.path.join(directory, 'SHA256SUMS'), 'w') as f:
        f.writelines(lines)


def is_mode_dir(path):
    return stat.S_ISDIR(os.lstat(path).st_mode)


# ------------------------------------------------------- fds from a user

# Run as a user: open argv[1] with the flags argv[2] (the user's own open),
# pass the fd as the call's only 'h' argument (index 0), print callas.py's
# JSON line.
_FD_CALL = r'''
import json, os, re, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib
path, flags, method, sig, args, interactive = sys.argv[1:7]
fd = os.open(path, int(flags), 0o600)
fds = Gio.UnixFDList.new()
fds.append(fd)
os.close(fd)
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
call_flags = Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION if interactive == '1' else Gio.DBusCallFlags.NONE
try:
    reply, _ = bus.call_with_unix_fd_list_sync(
        'io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', method,
        GLib.Variant.parse(GLib.VariantType.new(sig), args, None, None), None, call_flags, 120000, fds, None)
    print(json.dumps({'reply': reply.print_(True)}))
except GLib.Error as e:
    print(json.dumps({'error': Gio.DBusError.get_remote_error(e) or 'local',
                      'message': re.sub(r'^GDBus\.Error:\S+: ', '', e.message)}))
'''


def user_call_with_fd(test, user, path, flags, method, args, interactive=False):
    """A Manager method call by user whose 'h' argument is the user's own fd
    of path opened with flags; args hold 0 for the fd. Returns the reply or
    raises DBusError, like the other callers."""
    script = os.path.join(test.dir, 'fd-call.py')
    if not os.path.exists(script):
        with open(script, 'w') as f:
            f.write(_FD_CALL)
        os.chmod(script, 0o644)
    sig = stamptest.in_signature(MANAGER_IFACE, method)
    argv = [stamptest.PYTHON, script, path, str(flags), method, sig, GLib.Variant(sig, args).print_(True),
            '1' if interactive else '0']
    p = stamptest.run(test.env.as_user(user, argv), timeout=stamptest.TIMEOUT + 30)
    return stamptest.parse_callas_output(p.stdout)


def settled_resources(pid, timeout=30):
    """daemon_resources() once the fd count has stayed the same for half a
    second: a reply can reach us a moment before the daemon closes the fds
    of the work that made it."""
    deadline = time.monotonic() + timeout
    last, same_since = None, time.monotonic()
    while True:
        now = daemon_resources(pid)
        if last is None or now[0] != last[0]:
            same_since = time.monotonic()
        elif time.monotonic() - same_since >= 0.5 or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.05)


def rss_is_meaningful(pid):
    """Whether VmRSS of the daemon says something about its own memory:
    not under valgrind (its shadow memory) nor ASan (its quarantine keeps
    freed memory); those check leaks themselves, at the daemon's exit."""
    try:
        exe = os.readlink('/proc/%d/exe' % pid)
        with open('/proc/%d/maps' % pid) as f:
            maps = f.read()
        with open('/proc/%d/environ' % pid, 'rb') as f:
            environ = f.read()
    except OSError:
        return False
    return 'valgrind' not in exe and 'memcheck' not in exe and 'libasan' not in maps and \
        b'ASAN_OPTIONS=' not in environ and '__asan' not in maps
