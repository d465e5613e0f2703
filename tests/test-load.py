#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Load: 200 concurrent callers — 20 connections with 10 calls in flight
each, half of them root and half an unprivileged user authorized through
polkit — mixing ListImages, GetImage, property reads and CloneImage followed
by RemoveImage of the clone, for STAMP_LOAD_SECONDS (default 60).

Pass: no unexpected error (LimitsExceeded counts as expected only where a
global cap can be reached, and is reported), the daemon's fd count is back
to its starting value and its VmRSS near it afterwards, no image lost or
left over, no temporary left. Latencies are reported, never judged."""

import json
import os
import subprocess
import time

import stamptest
from stamptest import store_names, USER, make_image, rule_for
from reliabilitytest import (LIMITS_EXCEEDED, daemon_fds, daemon_resources, rss_is_meaningful,
                             settled_resources, spin, temporaries, tree_digest)

SECONDS = float(os.environ.get('STAMP_LOAD_SECONDS', '60'))
PROCESSES = 4            # load generators: 2 as root, 2 as the user
CONNECTIONS = 5          # per process
IN_FLIGHT = 10           # per connection

# One load generator: CONNECTIONS connections, IN_FLIGHT calls in flight on
# each, until the deadline; prints a JSON report.
LOAD = r'''
import json, random, sys, time
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib

address, tag, conns, in_flight, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
DEST, MGR, IFACE = 'io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager'
LIMITS_EXCEEDED = 'org.freedesktop.DBus.Error.LimitsExceeded'
rnd = random.Random(hash(tag))
deadline = time.monotonic() + seconds
stats = {'calls': {}, 'errors': {}, 'latency_ms': {}, 'messages': []}
active = [0]
counter = [0]
ctx = GLib.MainContext.default()

def record(op, t0, err=None):
    stats['calls'][op] = stats['calls'].get(op, 0) + 1
    stats['latency_ms'].setdefault(op, []).append((time.monotonic() - t0) * 1000)
    if err is not None:
        name = Gio.DBusError.get_remote_error(err) or 'local:%s' % err.message
        key = '%s %s' % (op, name)
        stats['errors'][key] = stats['errors'].get(key, 0) + 1
        if len(stats['messages']) < 20:
            stats['messages'].append('%s: %s' % (key, err.message))

def call(bus, op, method, params, then=None, path=MGR, iface=IFACE, retry_when_full=False):
    t0 = time.monotonic()
    active[0] += 1
    def done(conn, res, _):
        active[0] -= 1
        try:
            conn.call_finish(res)
            record(op, t0)
            if then:
                then(bus)
                return
        except GLib.Error as e:
            record(op, t0, e)
            if retry_when_full and Gio.DBusError.get_remote_error(e) == LIMITS_EXCEEDED:
                # as the error says: try again when some have ended (a clone must not be left)
                active[0] += 1
                def again():
                    active[0] -= 1
                    call(bus, op, method, params, then, path, iface, retry_when_full)
                    return False
                GLib.timeout_add(100, again)
                return
        slot(bus)
    bus.call(DEST, path, iface, method, params, None, Gio.DBusCallFlags.NONE, 300000, None, done, None)

def slot(bus):
    if time.monotonic() > deadline:
        return
    r = rnd.random()
    if r < 0.30:
        call(bus, 'ListImages', 'ListImages', None)
    elif r < 0.45:
        call(bus, 'GetImage', 'GetImage', GLib.Variant('(s)', ('base',)))
    elif r < 0.70:
        call(bus, 'GetAll', 'GetAll', GLib.Variant('(s)', ('io.stamp.Stamp1.Image',)),
             path='/io/stamp/Stamp1/image/base', iface='org.freedesktop.DBus.Properties')
    else:
        counter[0] += 1
        name = 'load-%s-%d' % (tag, counter[0])
        call(bus, 'CloneImage', 'CloneImage', GLib.Variant('(ssb)', ('base', name, False)),
             then=lambda b: call(b, 'RemoveImage', 'RemoveImage', GLib.Variant('(s)', (name,)),
                                 retry_when_full=True))

buses = [Gio.DBusConnection.new_for_address_sync(
    address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
    None, None) for _ in range(conns)]
for bus in buses:
    for _ in range(in_flight):
        slot(bus)
while active[0] > 0:
    ctx.iteration(True)
for op, l in stats['latency_ms'].items():
    l.sort()
    stats['latency_ms'][op] = {'p50': l[len(l) // 2], 'p99': l[int(len(l) * 0.99)], 'max': l[-1]}
print(json.dumps(stats))
'''


class LoadTest(stamptest.TestCase):

    def test_200_concurrent_callers(self):
        self.set_rules(rule_for(USER, 'manage-images', 'YES'))
        # One user makes hundreds of images here: this is about load, not stampd.conf's limits.
        config = os.path.join(self.dir, 'stampd.conf')
        stamptest.write_file(config, '[Limits]\nImagesPerUser=infinity\n')
        daemon = self.start_daemon(args=['--config', config])
        store = daemon.store
        base = make_image(store, 'base')
        digest = tree_digest(base)
        script = os.path.join(self.dir, 'load.py')
        with open(script, 'w') as f:
            f.write(LOAD)
        os.chmod(script, 0o644)

        # warm up: the polkit thread and its connection, the image paths, a clone
        self.user.manager('CloneImage', 'base', 'warm', False)
        self.root.manager('RemoveImage', 'warm')
        self.user.image_props('base')
        spin(1)
        fds0, rss0, threads0 = settled_resources(daemon.pid)
        fd_targets0 = daemon_fds(daemon.pid)

        procs = []
        for i in range(PROCESSES):
            argv = [stamptest.PYTHON, script, self.env.address, 'p%d' % i, str(CONNECTIONS), str(IN_FLIGHT),
                    str(SECONDS)]
            if i % 2:
                argv = self.env.as_user(USER, argv)
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        peak = [0, 0]
        t0 = time.monotonic()
        while any(p.poll() is None for p in procs) and time.monotonic() < t0 + SECONDS + 300:
            fds, rss, _ = daemon_resources(daemon.pid)
            peak = [max(peak[0], fds), max(peak[1], rss)]
            # the daemon answers a caller outside the load, too
            self.assertIn('base', self.root.list_images())
            time.sleep(1)
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=600)
            self.assertEqual(p.returncode, 0, err)
            reports.append(json.loads(out))

        calls, errors, messages = {}, {}, []
        for r in reports:
            for k, v in r['calls'].items():
                calls[k] = calls.get(k, 0) + v
            for k, v in r['errors'].items():
                errors[k] = errors.get(k, 0) + v
            messages += r['messages']
        stamptest.diag('%d calls in %.0fs by %d connections x %d in flight: %s' % (
            sum(calls.values()), SECONDS, PROCESSES * CONNECTIONS, IN_FLIGHT, calls))
        for r in reports:
            stamptest.diag('latency (ms): %s' % json.dumps(r['latency_ms'], sort_keys=True))
        stamptest.diag('errors: %s' % (errors or 'none'))
        stamptest.diag('daemon during the load: peak fds %d, peak VmRSS %d KiB' % tuple(peak))

        # LimitsExceeded is the daemon saying a global cap (64 operations) is reached: expected
        # under this load when btrfs stalls its commits for seconds (seen here, for machined too),
        # for clones and removals (which the callers retry). Anything else is unexpected.
        unexpected = {k: v for k, v in errors.items()
                      if k not in ('CloneImage ' + LIMITS_EXCEEDED, 'RemoveImage ' + LIMITS_EXCEEDED)}
        self.assertEqual(unexpected, {}, '\n'.join(messages))
        self.assertGreater(calls.get('CloneImage', 0), 0)

        # afterwards: back to where it started
        stamptest.wait_for(lambda: not temporaries(store), 'removals to finish', 120)
        spin(2)
        fds1, rss1, threads1 = settled_resources(daemon.pid)
        stamptest.diag('daemon before/after: fds %d/%d, VmRSS %d/%d KiB, threads %d/%d' % (
            fds0, fds1, rss0, rss1, threads0, threads1))
        self.assertEqual(fds1, fds0, 'fds left open: %s' % (set(daemon_fds(daemon.pid).items())
                                                            ^ set(fd_targets0.items())))
        self.assertEqual(threads1, threads0)
        if rss_is_meaningful(daemon.pid):
            self.assertLess(rss1 - rss0, 16 << 10, 'VmRSS grew by %d KiB' % (rss1 - rss0))
        self.assertEqual(sorted(self.root.list_images()), ['base'], 'images lost or left over')
        self.assertEqual(store_names(store), ['base'])
        self.assertEqual(tree_digest(base), digest)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
