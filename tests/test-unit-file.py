#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The installed stampd.service: `systemd-analyze verify` accepts it without
a single complaint (its ExecStart= and man pages exist: it is verified in a
tree installed under a prefix of our own), `systemd-analyze security` sees
the protections it claims, and none of the settings the unit's comments rule
out has crept in. systemd need not be PID 1 for any of this."""

import os
import re
import shutil

import installtree
import stamptest
from stamptest import run

# Give the service a mount namespace of its own, which would keep the pool's
# mount from the host (see the unit's comment (M)). Value that turns each on.
MOUNT_NAMESPACE_SETTINGS = {
    'ProtectSystem': None, 'ProtectHome': None, 'PrivateTmp': None, 'PrivateDevices': None,
    'PrivateMounts': None, 'ProtectKernelTunables': None, 'ProtectKernelModules': None,
    'ProtectKernelLogs': None, 'ProtectControlGroups': None, 'ProtectProc': 'default',
    'ProcSubset': 'all', 'ReadOnlyPaths': '', 'ReadWritePaths': '', 'InaccessiblePaths': '',
    'ExecPaths': '', 'NoExecPaths': '', 'TemporaryFileSystem': '', 'BindPaths': '',
    'BindReadOnlyPaths': '', 'RootDirectory': '', 'RootImage': '', 'MountAPIVFS': None,
    'PrivateUsers': None, 'PrivateNetwork': None, 'DynamicUser': None,
}
FALSE = ('', 'no', 'false', '0', 'off')

# Inherited by every machine and ruled out in the unit's comments (I).
INHERITED_RULED_OUT = ['NoNewPrivileges', 'ProtectHostname', 'MemoryDenyWriteExecute',
                       'RestrictNamespaces', 'RestrictSUIDSGID']

# What `systemd-analyze security` must find in effect.
CLAIMED = ['ProtectClock=', 'LockPersonality=', 'SystemCallArchitectures=', 'RestrictRealtime=',
           'RestrictAddressFamilies=~AF_PACKET', 'RestrictAddressFamilies=~…',
           'CapabilityBoundingSet=~CAP_SYS_TIME', 'CapabilityBoundingSet=~CAP_SYSLOG',
           'CapabilityBoundingSet=~CAP_SYS_MODULE', 'SystemCallFilter=~@module']


class UnitFileTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.top = os.path.join(self.env.T, 'unit')
        self.tree = installtree.once('unit', installtree.prefix_install, self.top)
        self.unit = self.tree.unit_file
        self.settings = installtree.read_keyfile(self.unit)

    def analyze(self, *args, unit=None):
        # man: the Documentation= pages are looked up in the installed tree
        env = dict(os.environ, MANPATH=self.tree.mandir, SYSTEMD_PAGER='', SYSTEMD_COLORS='0')
        return run(['systemd-analyze'] + list(args) + [unit or self.unit], check=False, env=env)

    def service(self, key):
        return self.settings['Service'].get(key, [])

    def test_verify_clean(self):
        self.assertTrue(os.access(self.service('ExecStart')[0], os.X_OK))
        p = self.analyze('verify')
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ''))

    def test_verify_catches_mistakes(self):
        """The same check on a broken copy complains: a pass above means something."""
        bad = os.path.join(self.top, 'stampd.service')
        with open(self.unit) as f:
            text = f.read()
        text = text.replace('LockPersonality=yes', 'LockPersonalty=yes')
        text = text.replace('DeviceAllow=block-loop rw', 'DeviceAllow=block-loop rx')
        with open(bad, 'w') as f:
            f.write(text)
        p = self.analyze('verify', unit=bad)
        self.assertIn("Unknown key 'LockPersonalty'", p.stderr)
        self.assertIn("Invalid device rights 'rx'", p.stderr)

    def test_security_sees_the_protections(self):
        p = self.analyze('security', '--offline=true', '--no-pager')
        self.assertEqual(p.returncode, 0, p.stderr)
        marks = {}
        for line in p.stdout.splitlines():
            m = re.match(r'^([✓✗]) (\S+)', line)
            if m:
                marks[m.group(2)] = m.group(1)
        for name in CLAIMED:
            with self.subTest(setting=name):
                self.assertEqual(marks.get(name), '✓', 'systemd-analyze security: %s not in '
                                 'effect\n%s' % (name, p.stdout))

    def test_no_mount_namespace(self):
        for key, off in MOUNT_NAMESPACE_SETTINGS.items():
            for value in self.service(key):
                with self.subTest(setting=key):
                    self.assertIn(value.lower(), FALSE + ((off,) if off else ()),
                                  '%s=%s gives stampd a mount namespace: its pool would not '
                                  'reach the host' % (key, value))

    def test_no_inherited_breakers(self):
        for key in INHERITED_RULED_OUT:
            for value in self.service(key):
                with self.subTest(setting=key):
                    self.assertIn(value.lower(), FALSE, '%s=%s is inherited by every machine'
                                  % (key, value))

    def test_pool_devices_allowed(self):
        """ProtectClock= switches the device allow-list on: the pool's loop
        devices, and making device nodes, must be on it."""
        allowed = self.service('DeviceAllow')
        for entry in ('/dev/loop-control rw', 'block-loop rw', 'char-* m', 'block-* m'):
            self.assertIn(entry, allowed)

    def test_names(self):
        self.assertEqual(self.service('Type'), ['dbus'])
        self.assertEqual(self.service('BusName'), ['io.stamp.Stamp1'])
        self.assertEqual(self.service('ExecStart'), [self.tree.stampd])
        # CacheDirectory= is what the daemon is told to use
        self.assertEqual(self.service('CacheDirectory'), ['stamp'])
        self.assertIn('STAMP_CACHE_DIR=%C/stamp', self.service('Environment'))
        self.assertTrue(shutil.which('systemd-analyze'))


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
