#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Commands in a booted machine: a real Debian tree (minbase with
systemd-sysv, from the cached package tarball of templatetest.py) is booted,
and ExecMachine runs commands beside its systemd: in its namespaces, its
cgroup, as its users; stampctl shell joins it with a login shell. Slow
suite."""

import os
import signal

import stamptest
import templatetest
from stamptest import MANAGER_IFACE, MANAGER_PATH, USER, GLib, Gio, run

MACHINE_IFACE = 'io.stamp.Stamp1.Machine'
BOOT_TIMEOUT = float(os.environ.get('STAMPTEST_BOOT_TIMEOUT', '180'))
NAMESPACES = ('pid', 'mnt', 'uts', 'ipc', 'net', 'cgroup', 'user')


class BootedExecTest(stamptest.TestCase):

    def make_debian(self, store, name):
        tarball = templatetest.package_tarball()  # skips the test when it cannot be had
        path = os.path.join(store, name)
        run(['btrfs', 'subvolume', 'create', path])
        run(['unshare', '--mount', '--propagation', 'private', 'sh', '-ec',
             'mount --bind "$1" "$1"; mount -o remount,bind,dev,suid "$1"; shift; exec "$@"', 'sh', path,
             'debootstrap', '--variant=minbase', '--include=' + ','.join(templatetest.BOOTABLE),
             '--unpack-tarball=' + tarball, templatetest.SUITE, path],
            timeout=templatetest.JOB_TIMEOUT)
        return path

    def boot(self, name):
        console = os.path.join(self.dir, 'console.log')
        self.attach_log(console)
        fds = Gio.UnixFDList.new()
        with open(console, 'w') as f:
            variants = {'boot': GLib.Variant('b', True),
                        'stdout': GLib.Variant('h', fds.append(f.fileno())),
                        'stderr': GLib.Variant('h', fds.append(f.fileno()))}
            path = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'StartMachine', name, variants, fd_list=fds)
        self.addCleanup(self.stop_quietly, name)

        def console_text():
            with open(console, errors='replace') as f:
                return f.read()
        stamptest.wait_for(lambda: 'login:' in console_text(), 'the login prompt on the console',
                           timeout=BOOT_TIMEOUT, interval=0.2)
        return self.root.get_all(path, MACHINE_IFACE)

    def stop_quietly(self, name):
        if self.daemons and self.daemons[-1].running():
            try:
                self.root.manager('KillMachine', name, signal.SIGKILL)
            except stamptest.DBusError:
                pass

    def exec_capture(self, name, argv, **options):
        """(result, status, stdout, stderr) of argv in the machine."""
        out, err = os.path.join(self.dir, 'out'), os.path.join(self.dir, 'err')
        fds = Gio.UnixFDList.new()
        with open(out, 'wb') as fo, open(err, 'wb') as fe:
            variants = {'stdout': GLib.Variant('h', fds.append(fo.fileno())),
                        'stderr': GLib.Variant('h', fds.append(fe.fileno()))}
            variants.update({k: GLib.Variant('s', v) for k, v in options.items()})
            exec_id = self.root.manager('ExecMachine', name, argv, variants, fd_list=fds)
        stamptest.spin_until(lambda: any(e[0] == exec_id for e in self.exited), 'ExecExited(%d)' % exec_id)
        e = [e for e in self.exited if e[0] == exec_id][-1]
        with open(out) as fo, open(err) as fe:
            return e[2], e[3], fo.read(), fe.read()

    def test_exec_and_shell_in_a_booted_machine(self):
        daemon = self.start_daemon()
        self.make_debian(daemon.store, 'deb')
        self.exited, unsubscribe = self.env.subscribe(MANAGER_IFACE, 'ExecExited', MANAGER_PATH)
        self.addCleanup(unsubscribe)
        props = self.boot('deb')
        leader = props['Leader']
        with open('/proc/%d/comm' % leader) as f:
            self.assertEqual(f.read().strip(), 'systemd')

        script = ('for n in %s; do echo "$n $(readlink /proc/self/ns/$n)"; done; echo "hostname $(hostname)"; '
                  'echo "init $(cat /proc/1/comm)"; echo "cgroup-self $(cat /proc/self/cgroup | tr "\\n" " ")"; '
                  'echo "cgroup-init $(cat /proc/1/cgroup | tr "\\n" " ")"; echo "whoami $(id -un)"; exit 3'
                  % ' '.join(NAMESPACES))
        result, status, out, err = self.exec_capture('deb', ['/bin/sh', '-c', script])
        self.assertEqual((result, status, err), ('exited', 3, ''))
        lines = dict(line.split(' ', 1) for line in out.splitlines())
        for n in NAMESPACES:
            self.assertEqual(lines[n], os.readlink('/proc/%d/ns/%s' % (leader, n)), n)
        # the machine's systemd set it from its /etc/hostname: the one its leader sees
        self.assertEqual(lines['hostname'], run(['nsenter', '-t', str(leader), '-u', 'hostname']).stdout.strip())
        self.assertEqual(lines['init'], 'systemd', 'PID 1 it sees is the machine\'s systemd')
        self.assertEqual(lines['cgroup-self'], lines['cgroup-init'], 'the cgroup of the machine\'s init')
        self.assertEqual(lines['whoami'], 'root')

        # a user of the machine's own (made inside), on its own terms
        result, status, out, _ = self.exec_capture('deb', ['/usr/sbin/useradd', '-m', '-s', '/bin/bash', 'dora'])
        self.assertEqual((result, status), ('exited', 0))
        result, status, out, _ = self.exec_capture('deb', ['/bin/sh', '-c', 'id -un; pwd; echo $HOME'], user='dora')
        self.assertEqual((result, status, out), ('exited', 0, 'dora\n/home/dora\n/home/dora\n'))

        # stampctl shell joins it: a login shell as root, on a terminal of the machine's
        self.allow(USER, 'login')
        pane = self.run_in_terminal(USER, [stamptest.STAMPCTL, 'shell', 'deb'])
        stamptest.wait_for(lambda: 'root@' in pane.capture() or pane.exited(), 'bash\'s prompt in the machine')
        pane.type_line('echo "in $(cat /proc/1/comm) on $(tty) as $(id -un), login shell: $0"')
        stamptest.wait_for(lambda: 'in systemd on /dev/pts/' in pane.capture(), 'the command output')
        self.assertIn('as root, login shell: -bash', pane.capture())
        pane.type_line('exit 7')
        self.assertEqual(pane.wait_exit(), 7)

        self.root.manager('StopMachine', 'deb')
        stamptest.wait_for(lambda: self.root.manager('ListMachines') == [], 'the machine to stop',
                           timeout=BOOT_TIMEOUT)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
