#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""D-Bus activation of the *installed* stampd.

A build of our own is installed under a prefix in the test's directory, with
-Dstore= pointing into that directory and -Didle-timeout=2 compiled in: the
activation file cannot carry arguments, so the installed stampd must default
to the test's store, and a short idle timeout keeps the test short. Then:

  * the harness's private system bus gets the installed
    share/dbus-1/system-services as a <servicedir>; the first call (the
    installed stampctl, as an unprivileged user) starts stampd through the
    file's Exec=, which exits after its idle timeout, and is started again
    by the next call; a running machine keeps it;
  * a second bus run as systemd runs its bus (dbus-daemon
    --systemd-activation) hands the activation to "systemd" (this test,
    owning org.freedesktop.systemd1) as the unit named in SystemdService=,
    and the call completes once that unit's ExecStart= owns the name.
"""

import json
import os
import signal
import subprocess
import time

import installtree
import stamptest
from stamptest import (BUS_NAME, MANAGER_IFACE, MANAGER_PATH, USER, GLib, Gio, fs_type,
                       make_image, run, spin_until, wait_for, wrap_pdeathsig)

IDLE = 2  # -Didle-timeout of the installed build, seconds

# On the harness's bus (<type>system</type>, no <servicehelper>) dbus-daemon
# forks the Exec= of an activation file itself, as the user it runs as: root.
# The <servicehelper> of a real system bus, dbus-daemon-launch-helper, cannot
# serve a private bus: it is set-uid, runs only for the messagebus user (it
# exits with "permissions invalid" for anyone else) and reads the service
# dirs of the machine's own /usr/share/dbus-1/system.conf, never ours. An
# included file may add a <servicedir>; ReloadConfig makes it count.
SERVICEDIR_CONF = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <servicedir>%s</servicedir>
</busconfig>
'''

# A bus as systemd's dbus.service runs it (--systemd-activation): activation
# files with SystemdService= become ActivationRequest signals to systemd.
SYSTEMD_BUS_CONF = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%(socket)s</listen>
  <auth>EXTERNAL</auth>
  <servicedir>%(servicedir)s</servicedir>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
  <includedir>%(system_d)s</includedir>
</busconfig>
'''


def stampd_pids(exe):
    """Processes running the installed stampd."""
    pids = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if os.readlink('/proc/%s/exe' % entry) == exe:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def proc_status(pid, field):
    """The values of a field of /proc/PID/status, as a list."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(field + ':'):
                return line.split(':', 1)[1].split()
    return []


def alive(pid):
    try:
        return proc_status(pid, 'State')[:1] not in ([], ['Z'])
    except OSError:
        return False


class ActivationTestCase(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.top = os.path.join(self.env.T, 'activation')
        self.store = os.path.join(self.top, 'store')
        self.tree = installtree.once('activation', installtree.prefix_install, self.top,
                                     store=self.store, idle_timeout=IDLE)
        self.servicedir = os.path.join(self.tree.datadir, 'dbus-1/system-services')
        # what an activated stampd says goes to the bus's log
        self.attach_log(self.env.log_path('dbus-daemon'))
        # none left over from the test before
        wait_for(lambda: not stampd_pids(self.tree.stampd), 'earlier stampd to exit')

    def ctl(self, *args, user=None, env=None):
        """The installed stampctl; returns its CompletedProcess, checked."""
        cmd = [self.tree.stampctl] + list(args)
        if user:
            cmd = self.env.as_user(user, cmd)
        return run(cmd, env=env, timeout=stamptest.TIMEOUT)


class BusActivationTest(ActivationTestCase):

    def setUp(self):
        super().setUp()
        installtree.once('servicedir', self.add_servicedir)

    def add_servicedir(self):
        path = os.path.join(self.env.T, 'system.d', 'stamp-activation.conf')
        with open(path, 'w') as f:
            f.write(SERVICEDIR_CONF % self.servicedir)
        self.bus_call('ReloadConfig')
        wait_for(lambda: BUS_NAME in self.bus_call('ListActivatableNames')[0],
                 '%s to be activatable' % BUS_NAME)

    def bus_call(self, method, *args, sig=None):
        reply = self.env.conn.call_sync(
            'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', method,
            GLib.Variant(sig, args) if sig else None, None, Gio.DBusCallFlags.NONE, 10000, None)
        return reply.unpack()

    def log_size(self):
        return os.path.getsize(self.env.log_path('dbus-daemon'))

    def log_since(self, offset):
        with open(self.env.log_path('dbus-daemon'), errors='replace') as f:
            f.seek(offset)
            return f.read()

    def activate(self, user=USER):
        """The first call: the installed stampctl lists images. Returns
        (pid of the activated stampd, listed names, monotonic time of its last
        activity)."""
        self.assertIsNone(self.env.name_owner_pid(BUS_NAME), 'stampd is already on the bus')
        self.assertEqual(stampd_pids(self.tree.stampd), [])
        p, pid, done = self.call_and_catch(self.ctl, '--json', 'list', user=user)
        names = [i['name'] for i in json.loads(p.stdout)['images']]
        return pid, names, done

    def call_and_catch(self, func, *args, **kw):
        """func(*args, **kw), a call that activates stampd, and the pid of the
        stampd it activated, caught before its idle timeout however slow the
        machine: pings that never activate (NO_AUTO_START) keep it until
        then. Returns (what func returned, pid, monotonic time of the last
        ping, no later than stampd's last activity)."""
        with stamptest.KeepAwake(self.env.conn) as awake:
            result = func(*args, **kw)
            pid = self.env.name_owner_pid(BUS_NAME)
        done = awake.last_sent
        self.assertIsNotNone(pid, 'nobody owns %s after the call' % BUS_NAME)
        return result, pid, done

    def wait_exit(self, pid, since):
        wait_for(lambda: not alive(pid), 'the activated stampd (pid %d) to exit on idle' % pid,
                 timeout=IDLE + stamptest.TIMEOUT)
        gone = time.monotonic()
        self.assertIsNone(self.env.name_owner_pid(BUS_NAME))
        return gone - since

    def test_first_call_activates_installed_stampd(self):
        self.assertIn(BUS_NAME, self.bus_call('ListActivatableNames')[0])
        offset = self.log_size()
        pid, names, done = self.activate()
        self.assertEqual(sorted(names),
                         sorted(n for n in os.listdir(self.store) if not n.startswith('.')))
        # the installed binary, started by the bus itself, as root
        self.assertEqual(os.readlink('/proc/%d/exe' % pid), self.tree.stampd)
        self.assertIn("Successfully activated service '%s'" % BUS_NAME, self.log_since(offset))
        self.assertEqual(proc_status(pid, 'Uid'), ['0'] * 4)
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            self.assertEqual(f.read().split(b'\0')[1:], [b''], 'stampd was started with arguments')
        # on the store compiled in with -Dstore: its pool set itself up there
        self.assertEqual(fs_type(self.store), 'btrfs')
        # and it leaves after its idle timeout, by itself
        idle_for = self.wait_exit(pid, done)
        self.assertGreaterEqual(idle_for, IDLE - 0.1, 'stampd exited before its idle timeout')
        self.assertIn('Idle for %d s, exiting.' % IDLE, self.log_since(offset))

    def test_activated_again_after_idle_exit(self):
        pid1, _, done = self.activate()
        self.wait_exit(pid1, done)
        make_image(self.store, 'base')
        # root's call activates too, and the clone lands in the store
        _, pid2, done = self.call_and_catch(self.ctl, 'clone', 'base', 'again')
        self.assertNotIn(pid2, (None, pid1))
        self.assertTrue(os.path.isdir(os.path.join(self.store, 'again')))
        self.wait_exit(pid2, done)
        pid3, names, done = self.activate()
        self.assertNotIn(pid3, (pid1, pid2))
        self.assertEqual(sorted(names), ['again', 'base'])
        self.wait_exit(pid3, done)

    def test_running_machine_keeps_it(self):
        if not os.path.isdir(os.path.join(self.store, 'base')):
            pid, _, done = self.activate()
            self.wait_exit(pid, done)
            make_image(self.store, 'base')
        removed, unsubscribe = self.env.subscribe(MANAGER_IFACE, 'MachineRemoved', MANAGER_PATH)
        self.addCleanup(unsubscribe)
        # The machine runs until told to end, not for a time: a busy machine may be slow anywhere.
        go = os.path.join(self.store, 'base', 'srv', 'go')
        if os.path.exists(go):
            os.unlink(go)
        command = ['/bin/busybox', 'sh', '-c', 'while [ ! -e /srv/go ]; do /bin/busybox sleep 0.1; done']
        try:
            # activates stampd, which then holds the machine: it cannot go idle before we look
            self.root.call(MANAGER_PATH, MANAGER_IFACE, 'StartMachine', 'base',
                           {'command': GLib.Variant('as', command)})
        except stamptest.DBusError as e:
            if e.name == stamptest.STAMP_ERROR + 'NotSupported':
                self.skipTest('machines are not supported here: %s' % e.message)
            raise
        pid = self.env.name_owner_pid(BUS_NAME)
        time.sleep(IDLE + 1.5)
        spin_until(lambda: True, 'signals so far')
        self.assertEqual(removed, [], 'the machine ended early')
        self.assertTrue(alive(pid), 'stampd exited on idle while a machine was running')
        with open(go, 'w'):
            pass
        spin_until(lambda: removed, 'the machine to end')
        ended = time.monotonic()
        self.assertEqual(removed[0][2], 0, 'the machine failed')
        self.assertGreaterEqual(self.wait_exit(pid, ended), IDLE - 0.5)


class SystemdActivationTest(ActivationTestCase):
    """Where systemd runs: the activation goes to the unit in SystemdService=."""

    def start_systemd_bus(self):
        sock = os.path.join(self.dir, 'bus.socket')
        conf = os.path.join(self.dir, 'bus.conf')
        with open(conf, 'w') as f:
            f.write(SYSTEMD_BUS_CONF % {
                'socket': sock, 'servicedir': self.servicedir,
                'system_d': os.path.join(self.tree.datadir, 'dbus-1/system.d')})
        log = os.path.join(self.dir, 'dbus-daemon.log')
        self.attach_log(log)
        r, w = os.pipe()
        with open(log, 'w') as logf:
            proc = subprocess.Popen(
                wrap_pdeathsig(['dbus-daemon', '--config-file=' + conf, '--nofork',
                                '--systemd-activation', '--print-address=%d' % w]),
                pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        os.close(w)
        self.addCleanup(self.stop_process, proc)
        with os.fdopen(r) as f:
            address = f.readline().strip()
        self.assertTrue(address, 'the systemd-style dbus-daemon did not start')
        return address

    def stop_process(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=stamptest.TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def test_systemd_service_is_requested(self):
        address = self.start_systemd_bus()
        conn = Gio.DBusConnection.new_for_address_sync(
            address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
        self.addCleanup(conn.close_sync, None)
        requests, started = [], []

        def on_activation_request(conn_, sender, path, iface, member, params):
            unit = params.unpack()[0]
            requests.append(unit)
            # start the unit as systemd would: its ExecStart=, no arguments
            unit_file = os.path.join(self.tree.unitdir, unit)
            if not os.path.exists(unit_file):
                return
            exec_start = installtree.read_keyfile(unit_file)['Service']['ExecStart'][0]
            log = open(os.path.join(self.dir, 'stampd.log'), 'a')
            proc = subprocess.Popen(wrap_pdeathsig(exec_start.split()), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log,
                                    env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address))
            log.close()
            self.addCleanup(self.stop_process, proc)
            started.append(proc)

        conn.signal_subscribe('org.freedesktop.DBus', 'org.freedesktop.systemd1.Activator',
                              'ActivationRequest', '/org/freedesktop/DBus', None,
                              Gio.DBusSignalFlags.NONE, on_activation_request)
        reply = conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus',
                               'org.freedesktop.DBus', 'RequestName',
                               GLib.Variant('(su)', ('org.freedesktop.systemd1', 4)), None,
                               Gio.DBusCallFlags.NONE, 10000, None)
        self.assertEqual(reply.unpack()[0], 1, 'could not own org.freedesktop.systemd1')
        self.attach_log(os.path.join(self.dir, 'stampd.log'))

        client = subprocess.Popen([self.tree.stampctl, '--json', 'list'],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address))
        spin_until(lambda: client.poll() is not None, 'stampctl on the systemd-style bus')
        out, err = client.communicate()
        self.assertEqual(client.returncode, 0, err)
        self.assertIn('images', json.loads(out))
        self.assertEqual(requests, ['stampd.service'])
        self.assertEqual(len(started), 1)
        # the one stampd is the unit's, not one the bus forked from Exec=
        self.assertEqual(stampd_pids(self.tree.stampd), [started[0].pid])
        self.stop_process(started[0])
        self.assertEqual(started[0].returncode, 0)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
