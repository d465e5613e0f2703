#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Limits: SetImageLimit (a quota group limit on an image of stampd's own
pool) refuses a write past it; SetPoolLimit shrinks the pool and caps its
growth; both are NotSupported on a store stampd did not make, need
manage-images, and bad values are named errors. StartMachine's memory_max and
cpu_weight land in the machine's cgroup and are shown on the Machine
object."""

import importlib
import os
import subprocess
import tarfile

import stamptest
from stamptest import (ACCESS_DENIED, MANAGER_IFACE, MANAGER_PATH, STAMP_ERROR, STAMPCTL, USER,
                       GLib, make_image, rule_for, run, store_state)

machines = importlib.import_module('test-machines')
copytest = importlib.import_module('test-copy')

INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
NOT_SUPPORTED = STAMP_ERROR + 'NotSupported'
NO_SPACE = STAMP_ERROR + 'NoSpace'
REFUSED = (ACCESS_DENIED, stamptest.INTERACTIVE_REQUIRED)
UNLIMITED = 2 ** 64 - 1
MIB = 1 << 20


class ImageLimitTest(copytest.CopyTestCase):

    def write_file(self, name, size):
        """CopyToImage of a file of @size bytes into base:/srv/@name: (result, ErrorName)."""
        src = os.path.join(self.dir, name)
        with open(src, 'wb') as f:
            f.write(os.urandom(size))
        path = os.path.join(self.dir, name + '.tar')
        with tarfile.open(path, mode='w', format=tarfile.PAX_FORMAT) as t:
            t.add(src, arcname=name)
        fd = os.open(path, os.O_RDONLY)
        try:
            result, error, _ = self.call_copy('CopyToImage', 'base', '/srv/' + name, fd)
        finally:
            os.close(fd)
        return result, error

    def test_a_write_past_the_limit_is_refused(self):
        self.assertEqual(self.root.image_props('base')['Limit'], UNLIMITED)
        run([STAMPCTL, 'set-limit', 'base', '4M'])
        self.assertEqual(self.root.image_props('base')['Limit'], 4 * MIB)
        shown = run([STAMPCTL, 'show', 'base']).stdout
        self.assertRegex(shown, r'Limit: +4\.0M')

        self.assertEqual(self.write_file('small', 64 * 1024), ('done', ''))
        run(['sync'])
        result, error = self.write_file('big', 16 * MIB)
        self.assertEqual((result, error), ('failed', NO_SPACE))
        self.assertFalse(os.path.lexists(os.path.join(self.base, 'srv/big')))
        self.assertEqual([n for n in os.listdir(os.path.join(self.base, 'srv')) if n.startswith('.')], [])

        self.root.manager('SetImageLimit', 'base', UNLIMITED)
        self.assertEqual(self.root.image_props('base')['Limit'], UNLIMITED)
        self.assertEqual(self.write_file('big', 16 * MIB), ('done', ''))

    def test_refusals(self):
        make_image(self.store, 'plain', kind='directory')
        before = store_state(self.store)
        pool_limit = self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolLimit')
        self.assertDBusError(INVALID_ARGS, self.root.manager, 'SetImageLimit', 'base', 0)
        self.assertDBusError(STAMP_ERROR + 'NoSuchImage', self.root.manager, 'SetImageLimit', 'nothere', MIB)
        self.assertDBusError(STAMP_ERROR + 'InvalidName', self.root.manager, 'SetImageLimit', '../x', MIB)
        self.assertDBusError(NOT_SUPPORTED, self.root.manager, 'SetImageLimit', 'plain', MIB)
        for args in (('SetImageLimit', 'base', MIB), ('SetPoolLimit', 1 << 30)):
            with self.assertRaises(stamptest.DBusError) as e:
                self.user.manager(*args)
            self.assertIn(e.exception.name, REFUSED)
        self.assertDBusError(INVALID_ARGS, self.root.manager, 'SetPoolLimit', MIB)
        self.assertEqual(self.root.image_props('base')['Limit'], UNLIMITED)
        self.assertEqual(self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolLimit'), pool_limit)
        self.assertEqual(store_state(self.store), before)
        # with the right action, the user may
        self.set_rules(rule_for(USER, 'manage-images', 'YES'))
        self.user.manager('SetImageLimit', 'base', 8 * MIB)
        self.assertEqual(self.root.image_props('base')['Limit'], 8 * MIB)

    def test_pool_limit_shrinks_the_pool(self):
        size = os.statvfs(self.store)
        size = size.f_blocks * size.f_frsize
        limit = 1536 * MIB
        self.assertLess(limit, size)
        self.root.manager('SetPoolLimit', limit)
        self.assertEqual(self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolLimit'), limit)
        st = os.statvfs(self.store)
        self.assertLessEqual(st.f_blocks * st.f_frsize, limit)
        self.assertLessEqual(os.stat(self.store + '.raw').st_size, limit)
        self.assertRegex(run([STAMPCTL, 'status']).stdout, r'Limit: +1\.5G')
        # kept across a restart of the daemon
        self.stop_daemon(self.daemon)
        self.daemon = self.start_daemon(store=self.store)
        self.assertEqual(self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolLimit'), limit)
        self.root.manager('SetPoolLimit', UNLIMITED)
        self.assertEqual(self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolLimit'),
                         os.statvfs(self.store).f_blocks * os.statvfs(self.store).f_frsize)


machines.OPTION_TYPES.update({'memory_max': 't', 'cpu_weight': 't'})


def machine_cgroup_dir(pid, controller):
    """The directory of the cgroup stampd made for the machine whose leader is @pid: the one named
    stamp-machine-* among those of @pid's cgroup and its ancestors (@controller None: unified)."""
    with open('/proc/%d/cgroup' % pid) as f:
        for line in f:
            _, controllers, path = line.rstrip('\n').split(':', 2)
            if (controller is None and controllers == '') or controller in controllers.split(','):
                break
        else:
            return None
    top = '/sys/fs/cgroup' + ('/' + controller if controller else '')
    while path not in ('', '/'):
        if os.path.basename(path).startswith('stamp-machine-'):
            return top + path
        path = os.path.dirname(path)
    return None


def own_cgroup_dir(controller):
    """The directory of this process's cgroup (the daemon's, which it started) for @controller."""
    with open('/proc/self/cgroup') as f:
        for line in f:
            _, controllers, path = line.rstrip('\n').split(':', 2)
            if (controller is None and controllers == '') or controller in controllers.split(','):
                return '/sys/fs/cgroup' + ('/' + controller if controller else '') + path
    return None


def cgroup_unified():
    return os.statvfs('/sys/fs/cgroup') and os.path.exists('/sys/fs/cgroup/cgroup.controllers')


class MachineLimitTest(machines.MachineTestCase):

    def test_memory_max_and_cpu_weight_land_in_the_cgroup(self):
        props = self.sleeper(memory_max=64 * MIB, cpu_weight=50)
        self.assertEqual((props['MemoryMax'], props['CPUWeight']), (64 * MIB, 50))
        leader = props['Leader']
        if cgroup_unified():
            d = machine_cgroup_dir(leader, None)
            self.assertIsNotNone(d, 'the machine runs in a cgroup of its own')
            with open(os.path.join(d, 'memory.max')) as f:
                self.assertEqual(int(f.read()), 64 * MIB)
            with open(os.path.join(d, 'cpu.weight')) as f:
                self.assertEqual(int(f.read()), 50)
            dirs = [d]
        else:
            mem, cpu = machine_cgroup_dir(leader, 'memory'), machine_cgroup_dir(leader, 'cpu')
            self.assertIsNotNone(mem, 'the machine runs in a memory cgroup of its own')
            self.assertIsNotNone(cpu, 'the machine runs in a cpu cgroup of its own')
            with open(os.path.join(mem, 'memory.limit_in_bytes')) as f:
                self.assertEqual(int(f.read()), 64 * MIB)
            with open(os.path.join(cpu, 'cpu.shares')) as f:
                self.assertEqual(int(f.read()), 512)
            dirs = [mem, cpu]
        self.root.manager('KillMachine', 'base', 9)
        self.wait_removed('base')
        for d in dirs:
            stamptest.wait_for(lambda: not os.path.exists(d), '%s to be removed with the machine' % d,
                               interval=0.05)

    def test_memory_max_is_enforced(self):
        for applet in ('head', 'sort'):
            os.symlink('busybox', os.path.join(self.base, 'bin', applet))
        # sort holds all its input in memory: 32 MiB and more
        command = ['/bin/sh', '-c', 'head -c 33554432 /dev/urandom | sort >/dev/null && echo survived']
        status, output = self.run_command(command, name='limited', memory_max=16 * MIB)
        self.assertNotEqual(status, 0, output)
        self.assertNotIn('survived', output)
        # the cgroup goes with the machine, also after the OOM killer was in it
        parent = own_cgroup_dir(None if cgroup_unified() else 'memory')
        stamptest.wait_for(lambda: not [n for n in os.listdir(parent) if n.startswith('stamp-machine-limited-')],
                           'the machine\'s cgroup to be removed', interval=0.05)
        status, output = self.run_command(command, name='unlimited')
        self.assertEqual((status, output.strip()), (0, 'survived'))

    def test_stampctl_start_with_limits(self):
        subprocess.run([STAMPCTL, 'start', 'base', '--no-block', '--memory-max', '32M', '--cpu-weight', '200',
                        '--', '/bin/sleep', '1000'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=stamptest.TIMEOUT)
        self.addCleanup(self.kill_quietly, 'base')
        props = self.wait_running('base')
        self.assertEqual((props['MemoryMax'], props['CPUWeight']), (32 * MIB, 200))
        p = run([STAMPCTL, 'start', 'base', '--name', 'other', '--cpu-weight', '0', '--', '/bin/true'],
                check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('cpu_weight', p.stderr)

    def test_bad_values_are_named_errors(self):
        for options in ({'memory_max': 1}, {'memory_max': 0}, {'cpu_weight': 0}, {'cpu_weight': 10001}):
            variants, fd_list_ = self.options(**options)
            e = self.assertDBusError(INVALID_ARGS, self.root.call, MANAGER_PATH, MANAGER_IFACE, 'StartMachine',
                                     'base', variants, fd_list=fd_list_)
            self.assertIn(list(options)[0], e.message)
        self.assertDBusError(INVALID_ARGS, self.root.manager, 'StartMachine', 'base',
                             {'memory_max': GLib.Variant('s', '64M')})
        self.assertEqual(self.list_machines(), {})


class ForeignStoreTest(stamptest.TestCase):

    def test_not_supported_on_a_store_stampd_did_not_make(self):
        daemon = self.start_daemon(kind='btrfs')
        make_image(daemon.store, 'base')
        self.assertDBusError(NOT_SUPPORTED, self.root.manager, 'SetImageLimit', 'base', 4 * MIB)
        self.assertDBusError(NOT_SUPPORTED, self.root.manager, 'SetPoolLimit', 1 << 30)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
