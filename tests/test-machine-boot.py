#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Booting a real Debian tree (minbase with systemd-sysv, from the cached
package tarball of templatetest.py) as a machine: it reaches its login prompt
on the console the caller passed, and StopMachine powers it off cleanly;
then the same image as a read-only template, booted ephemeral. Slow suite."""

import os
import subprocess

import stamptest
import templatetest
from stamptest import MANAGER_IFACE, MANAGER_PATH, GLib, Gio, run

MACHINE_IFACE = 'io.stamp.Stamp1.Machine'
BOOT_TIMEOUT = float(os.environ.get('STAMPTEST_BOOT_TIMEOUT', '180'))


class BootTest(stamptest.TestCase):

    def make_debian(self, store, name):
        tarball = templatetest.package_tarball()  # skips the test when it cannot be had
        path = os.path.join(store, name)
        run(['btrfs', 'subvolume', 'create', path])
        # By hand, as an admin would; the pool stampd made is nosuid,nodev, which debootstrap refuses:
        # it gets a bind mount of its own without them, in a mount namespace of its own.
        run(['unshare', '--mount', '--propagation', 'private', 'sh', '-ec',
             'mount --bind "$1" "$1"; mount -o remount,bind,dev,suid "$1"; shift; exec "$@"', 'sh', path,
             'debootstrap', '--variant=minbase', '--include=' + ','.join(templatetest.BOOTABLE),
             '--unpack-tarball=' + tarball, templatetest.SUITE, path],
            timeout=templatetest.JOB_TIMEOUT)
        return path

    def boot_and_stop(self, removed, **options):
        console = os.path.join(self.dir, 'console-%d.log' % len(removed))
        self.attach_log(console)
        fds = Gio.UnixFDList.new()
        with open(console, 'w') as f:
            variants = {'boot': GLib.Variant('b', True),
                        'stdout': GLib.Variant('h', fds.append(f.fileno())),
                        'stderr': GLib.Variant('h', fds.append(f.fileno()))}
            variants.update({k: GLib.Variant('b', v) for k, v in options.items()})
            path = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'StartMachine', 'deb', variants,
                                  fd_list=fds)

        def console_text():
            with open(console, errors='replace') as f:
                return f.read()

        stamptest.wait_for(lambda: 'login:' in console_text(), 'the login prompt on the console',
                           timeout=BOOT_TIMEOUT, interval=0.2)
        props = self.root.get_all(path, MACHINE_IFACE)
        self.assertEqual((props['State'], props['Boot'], props['Ephemeral']),
                         ('running', True, options.get('ephemeral', False)))
        with open('/proc/%d/comm' % props['Leader']) as f:
            self.assertEqual(f.read().strip(), 'systemd', 'Leader is the container\'s init')

        seen = len(removed)
        self.root.manager('StopMachine', 'deb')
        stamptest.spin_until(lambda: len(removed) > seen, 'MachineRemoved(deb)')
        self.assertEqual(removed[-1], ('deb', path, 0), 'a clean poweroff ends with status 0')
        # Powered off, not killed after the daemon's stop timeout (not timed here: a busy machine
        # is slow, and a kill would say so in the log and in the status).
        self.assertNotIn('did not stop within', self.daemons[-1].log())
        self.assertFalse(os.path.exists('/proc/%d' % props['Leader']))
        self.assertEqual(self.root.manager('ListMachines'), [])

    def test_no_block_boot_keeps_off_the_callers_fds(self):
        """stampctl start --no-block --boot: the console is nobody's (passive), so the boot log never
        reaches the caller's terminal or file, before or after stampctl returned."""
        daemon = self.start_daemon()
        self.make_debian(daemon.store, 'deb')
        removed, unsubscribe = self.env.subscribe(MANAGER_IFACE, 'MachineRemoved', MANAGER_PATH)
        self.addCleanup(unsubscribe)
        caller = os.path.join(self.dir, 'caller-output')
        self.attach_log(caller)
        with open(caller, 'w') as f:
            p = subprocess.run([stamptest.STAMPCTL, 'start', '--no-block', '--boot', 'deb'],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 0)
        path = '/io/stamp/Stamp1/machine/deb'
        stamptest.wait_for(lambda: self.root.get_property(path, MACHINE_IFACE, 'State') == 'running',
                           'the machine to run', timeout=BOOT_TIMEOUT, interval=0.2)
        # its init is up: systemd told nspawn it is ready
        self.root.manager('StopMachine', 'deb')
        stamptest.spin_until(lambda: removed, 'MachineRemoved(deb)', BOOT_TIMEOUT)
        self.assertEqual(removed[-1][2], 0, 'a clean poweroff')
        with open(caller) as f:
            text = f.read()
        self.assertNotIn('systemd', text)
        self.assertNotIn('login', text)
        self.assertEqual(len(text.splitlines()), 1, text)  # stampctl's own line on where the output goes

    def test_boot_reaches_login_and_powers_off(self):
        daemon = self.start_daemon()
        image = self.make_debian(daemon.store, 'deb')
        removed, unsubscribe = self.env.subscribe(MANAGER_IFACE, 'MachineRemoved', MANAGER_PATH)
        self.addCleanup(unsubscribe)

        # a persistent journal in the image tells what the machine did while going down
        os.makedirs(os.path.join(image, 'var/log/journal'), exist_ok=True)
        self.boot_and_stop(removed)
        journal = run(['journalctl', '-D', os.path.join(image, 'var/log/journal'), '--no-pager',
                       '-o', 'cat']).stdout
        self.attach_log(lambda: journal)
        self.assertIn('Reached target poweroff.target', journal)

        self.root.manager('MarkImageReadOnly', 'deb', True)
        self.assertTrue(stamptest.subvolume_read_only(image))
        self.boot_and_stop(removed, ephemeral=True)
        self.assertEqual([n for n in os.listdir(daemon.store) if n.startswith('.#stamp-')], [],
                         'the ephemeral snapshot is gone')


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
