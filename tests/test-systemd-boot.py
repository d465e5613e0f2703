#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""stampd.service under a real systemd as PID 1, with the bus systemd runs.

This machine's own OS is booted as a container (systemd-nspawn --boot on a
read-only bind mount of the root file system, /var volatile, a private
network, up to basic.target): its systemd and its dbus.service, which is
started with --systemd-activation, are the real ones. Into it go, by bind
mounts, a build of ours installed under a prefix in the test's directory:
the activation file as the container's system-services, the bus policy as
its /etc/dbus-1/system.d, the unit in /run/systemd/system, and a btrfs
store. Then, inside:

  * the first call (the installed stampctl) makes dbus ask systemd for
    stampd.service, which starts it, hardened as the unit says, and the call
    is answered; after its idle timeout the unit goes inactive, successfully;
  * the running stampd has the protections the unit claims (seccomp filter,
    capability bounding set), and none that the unit rules out: no
    no_new_privs, and the mount namespace of PID 1, so that its mounts reach
    the host; a drop-in with ProtectHome=yes shows the check would see it;
  * a clone works under that sandbox.

Slow suite: it boots an OS."""

import fcntl
import glob
import json
import os
import re
import time

import installtree
import stamptest
from stamptest import run, wait_for

IDLE = 2
MACHINE = 'stamp-systemd-test'
INIT = ('/usr/lib/systemd/systemd', '/lib/systemd/systemd')

# Capabilities the unit takes out of the bounding set (by number, capability.h)
CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYSLOG, CAP_WAKE_ALARM = 16, 25, 34, 35
CAP_SYS_ADMIN, CAP_MKNOD = 21, 27

LOOP_CTL_ADD, LOOP_CTL_REMOVE = 0x4C80, 0x4C81
SPARE_LOOPS = 4


def add_spare_loops():
    """Loop devices whose nodes exist now, so that the ones the container's
    stampd gets from /dev/loop-control have nodes in the container too (its
    /dev is a copy made at start). Returns the indexes added."""
    present = [int(m.group(1)) for m in (re.match(r'/dev/loop(\d+)$', p)
                                         for p in glob.glob('/dev/loop*')) if m]
    top = max(present, default=-1)
    added = []
    with open('/dev/loop-control', 'rb') as ctl:
        for n in range(top + 1, top + 1 + SPARE_LOOPS):
            try:
                added.append(fcntl.ioctl(ctl, LOOP_CTL_ADD, n))
            except OSError:
                pass
    wait_for(lambda: all(os.path.exists('/dev/loop%d' % n) for n in added), 'loop device nodes')
    return added


def remove_loops(indexes):
    with open('/dev/loop-control', 'rb') as ctl:
        for n in indexes:
            try:
                fcntl.ioctl(ctl, LOOP_CTL_REMOVE, n)
            except OSError:  # in use (a pool left mounted until the namespace ends), or gone
                pass


class Container(installtree.BootedContainer):
    """This machine's OS, booted read-only in a container of ours."""

    def __init__(self, top, tree, data):
        self.top = top
        rootfs = os.path.join(top, 'rootfs')
        os.makedirs(rootfs)
        # The root file system alone, without what is mounted on it (/dev,
        # /proc, ...), and read-only: nothing below the test's directory may
        # ever reach the machine's own files, not even its clean-up.
        self.rootfs = rootfs
        run(['mount', '--bind', '/', rootfs])
        run(['mount', '-o', 'remount,bind,ro', rootfs])
        if os.path.ismount('/usr'):  # a separate /usr belongs to the OS too
            usr = os.path.join(rootfs, 'usr')
            run(['mount', '--bind', '/usr', usr])
            run(['mount', '-o', 'remount,bind,ro', usr])
        self.loops = add_spare_loops()
        loops = ['--bind=' + p for p in sorted(glob.glob('/dev/loop*'))]
        super().__init__(rootfs, os.path.join(top, 'boot.log'), MACHINE, [
            '--volatile=state',
            '--bind-ro=' + tree.prefix,
            '--bind=' + data,
            '--bind-ro=%s:/usr/share/dbus-1/system-services' % os.path.join(tree.datadir,
                                                                           'dbus-1/system-services'),
            '--bind-ro=%s:/etc/dbus-1/system.d' % os.path.join(tree.datadir, 'dbus-1/system.d'),
            '--bind-ro=%s:/run/systemd/system' % tree.unitdir] + loops,
            env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'SYSTEMD_PAGER': '', 'LANG': 'C.UTF-8'})

    def show(self, unit, *props):
        out = self.run(['systemctl', 'show', unit] + ['-p' + p for p in props]).stdout
        return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)

    def stop(self):
        super().stop()
        remove_loops(self.loops)
        run(['umount', '-R', self.rootfs], check=False)


class SystemdBootTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        if not any(os.path.exists(init) for init in INIT):
            self.skipTest('systemd is not installed: nothing to boot')
        self.top = os.path.join(self.env.T, 'systemd')
        # The store compiled in, empty: stampd sets its pool up there, from
        # inside the container, through the loop devices the unit allows.
        self.data = os.path.join(self.top, 'data')
        self.store = os.path.join(self.data, 'store')
        self.tree = installtree.once('tree', installtree.prefix_install, self.top,
                                     store=self.store, idle_timeout=IDLE)
        self.box = installtree.once('container', self.boot)
        self.attach_log(self.box.log)

    def boot(self):
        os.makedirs(self.data, exist_ok=True)
        box = Container(self.top, self.tree, self.data)
        self.__class__.addClassCleanup(box.stop)
        return box

    def ctl(self, *args):
        return self.box.run([self.tree.stampctl] + list(args))

    def service(self):
        return self.box.show('stampd.service', 'ActiveState', 'SubState', 'MainPID', 'Result',
                             'ExecMainStatus', 'NRestarts')

    def wait_inactive(self):
        return wait_for(lambda: self.service()['ActiveState'] in ('inactive', 'failed')
                        and self.service(), 'stampd.service to stop', interval=0.2,
                        timeout=IDLE + stamptest.TIMEOUT)

    def journal(self, unit):
        return self.box.run(['journalctl', '-b', '-u', unit, '-o', 'cat'], check=False).stdout

    def activate(self):
        """A call activates stampd.service; returns its main pid. It stays
        until the test ends or calls let_idle()."""
        self.wait_inactive()
        self.let_idle = self.box.keep_awake()
        self.addCleanup(self.let_idle)
        json.loads(self.ctl('--json', 'list').stdout)
        state = self.service()
        self.assertEqual(state['ActiveState'], 'active', state)
        pid = int(state['MainPID'])
        self.assertGreater(pid, 0)
        self.assertEqual(self.box.run(['readlink', '/proc/%d/exe' % pid]).stdout.strip(),
                         self.tree.stampd)
        return pid

    def status(self, pid):
        text = self.box.run(['cat', '/proc/%d/status' % pid]).stdout
        return {k: v.strip() for k, v in (line.split(':', 1) for line in text.splitlines())}

    def ns(self, pid, kind):
        return self.box.run(['readlink', '/proc/%s/ns/%s' % (pid, kind)]).stdout.strip()

    def test_activation_through_systemd_and_idle_stop(self):
        self.activate()
        self.let_idle()
        # (Not timed: that it waits its idle timeout out is test-activation's; here, that the unit
        # ends by itself, successfully.)
        state = self.wait_inactive()
        self.assertEqual((state['ActiveState'], state['Result'], state['ExecMainStatus']),
                         ('inactive', 'success', '0'), state)
        self.assertIn('Idle for %d s, exiting.' % IDLE, self.journal('stampd.service'))
        # the bus handed the activation to systemd; it did not fork Exec= itself
        self.assertIn("unit='stampd.service'", self.journal('dbus.service'))

    def test_pool_set_up_and_seen_outside_the_service(self):
        """The unit's device allow-list lets the pool's loop device through,
        and the pool's mount, made by the service, is in PID 1's namespace."""
        self.activate()
        self.assertIn('Mounted the btrfs pool', self.journal('stampd.service'))
        p = self.box.run(['findmnt', '-n', '-o', 'FSTYPE,SOURCE', '--mountpoint', self.store])
        fstype, source = p.stdout.split()[:2]
        self.assertEqual(fstype, 'btrfs')
        self.assertRegex(source, r'^/dev/loop\d+')

    def device_policy_enforced(self):
        """Whether this container's systemd can enforce device policies at
        all (not on a cgroup v1 host, where the container gets no devices
        controller): a transient service with DevicePolicy=closed must fail
        to open /dev/loop-control."""
        p = self.box.run(['systemd-run', '--wait', '--pipe', '--quiet', '-p', 'DevicePolicy=closed',
                          'sh', '-c', 'exec 3<>/dev/loop-control'], check=False)
        return p.returncode != 0

    def test_device_allow_list_exercised(self):
        """With enforcement, the pool test above went through the unit's
        DeviceAllow= list: say whether this machine could show that."""
        if not self.device_policy_enforced():
            self.skipTest('this container does not enforce device policies (cgroup v1 host?): '
                          "the pool's loop devices were not checked against DeviceAllow=")
        self.activate()
        self.assertIn('Mounted the btrfs pool', self.journal('stampd.service'))

    def test_protections_in_effect(self):
        pid = self.activate()
        status = self.status(pid)
        self.assertEqual(status['NoNewPrivs'], '0', 'no_new_privs would reach every machine')
        self.assertEqual(status['Seccomp'], '2', 'no seccomp filter: %s' % status)
        bounding = int(status['CapBnd'], 16)
        for cap in (CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYSLOG, CAP_WAKE_ALARM):
            self.assertFalse(bounding & (1 << cap), 'capability %d is still bounded in' % cap)
        for cap in (CAP_SYS_ADMIN, CAP_MKNOD):
            self.assertTrue(bounding & (1 << cap), 'capability %d is missing' % cap)
        # (M): the mount namespace of PID 1, so the daemon's mounts reach the host
        self.assertEqual(self.ns(pid, 'mnt'), self.ns(1, 'mnt'))
        # ProtectHostname= is not taken: nspawn may name its containers
        self.assertEqual(self.ns(pid, 'uts'), self.ns(1, 'uts'))

    def test_mount_namespace_check_can_fail(self):
        """A drop-in with ProtectHome=yes: the same check sees a namespace of its own."""
        dropin = '/run/systemd/system.control/stampd.service.d'
        self.box.sh('mkdir -p %s && printf "[Service]\\nProtectHome=yes\\n" > %s/50-test.conf'
                    ' && systemctl daemon-reload' % (dropin, dropin))
        try:
            pid = self.activate()
            self.assertNotEqual(self.ns(pid, 'mnt'), self.ns(1, 'mnt'))
        finally:
            self.box.sh('rm -rf %s; systemctl stop stampd.service; systemctl daemon-reload'
                        % dropin)

    def test_clone_under_the_sandbox(self):
        self.activate()  # the pool is there from now on
        base = os.path.join(self.store, 'base')
        self.box.sh('test -d {0} || {{ btrfs -q subvolume create {0} && '
                    'echo hello > {0}/marker; }}'.format(base))
        name = 'clone-%d' % int(time.monotonic() * 1000)
        self.ctl('clone', 'base', name)
        show = self.box.run(['btrfs', 'subvolume', 'show', os.path.join(self.store, name)]).stdout
        uuid = self.box.run(['btrfs', 'subvolume', 'show', base]).stdout
        parent = re.search(r'Parent UUID:\s+(\S+)', show).group(1)
        self.assertEqual(parent, re.search(r'\bUUID:\s+(\S+)', uuid).group(1))
        self.ctl('remove', name)
        self.assertNotEqual(self.box.run(['test', '-e', os.path.join(self.store, name)],
                                         check=False).returncode, 0)
        self.assertEqual(self.service()['NRestarts'], '0')


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
