#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The bus face of stampd: live introspection matches dbus/*.xml, objects
and nodes, the installed bus policy, argument checking, shutdown on SIGTERM
and on the idle timeout, the command line."""

import os
import subprocess

import stamptest
from stamptest import (ACCESS_DENIED, BUS_NAME, IMAGE_IFACE, INTERFACES, MANAGER_IFACE,
                       MANAGER_PATH, STAMPD, bus_label_escape, image_path, make_image,
                       parse_interfaces)

STANDARD = ['org.freedesktop.DBus.Properties', 'org.freedesktop.DBus.Introspectable',
            'org.freedesktop.DBus.Peer']


class IntrospectionTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        make_image(self.daemon.store, 'base')

    def introspect(self, path):
        xml = self.root.call(path, 'org.freedesktop.DBus.Introspectable', 'Introspect', sig='()')
        return xml, parse_interfaces(xml)

    def check_matches_xml(self, live, iface):
        want = INTERFACES[iface]
        got = live[iface]
        for kind in ('methods', 'properties', 'signals'):
            with self.subTest(iface=iface, kind=kind):
                self.assertEqual(got[kind], want[kind])

    def test_manager_matches_xml(self):
        _, live = self.introspect(MANAGER_PATH)
        self.check_matches_xml(live, MANAGER_IFACE)
        for iface in STANDARD + ['org.freedesktop.DBus.ObjectManager']:
            self.assertIn(iface, live)

    def test_image_matches_xml(self):
        _, live = self.introspect(image_path('base'))
        self.check_matches_xml(live, IMAGE_IFACE)
        for iface in STANDARD:
            self.assertIn(iface, live)

    def test_image_nodes_are_enumerable(self):
        make_image(self.daemon.store, 'my-image.2', populate=False)
        xml, _ = self.introspect('/io/stamp/Stamp1/image')
        import xml.etree.ElementTree as ET
        nodes = {n.get('name') for n in ET.fromstring(xml).findall('node')}
        self.assertEqual(nodes, {bus_label_escape('base'), bus_label_escape('my-image.2')})

    def test_missing_image_object(self):
        e = self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject', self.root.get_all,
                                 image_path('ghost'), IMAGE_IFACE)
        self.assertTrue(e.message)

    def test_manager_properties(self):
        props = self.root.get_all(MANAGER_PATH, MANAGER_IFACE)
        self.assertEqual(set(props), set(INTERFACES[MANAGER_IFACE]['properties']))

    def test_properties_cannot_be_set(self):
        self.assertDBusError('org.freedesktop.DBus.Error.PropertyReadOnly', self.root.call,
                             image_path('base'), 'org.freedesktop.DBus.Properties', 'Set',
                             IMAGE_IFACE, 'ReadOnly', stamptest.GLib.Variant('b', True),
                             sig='(ssv)')
        self.assertFalse(stamptest.subvolume_read_only(os.path.join(self.daemon.store, 'base')))

    def test_argument_checking(self):
        self.assertDBusError('org.freedesktop.DBus.Error.UnknownMethod', self.root.manager,
                             'NoSuchMethod', sig='()')
        self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', self.root.manager,
                             'CloneImage', 'base', sig='(s)')
        self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', self.root.manager,
                             'GetImage', 7, sig='(u)')

    def test_peer_ping(self):
        self.root.call(MANAGER_PATH, 'org.freedesktop.DBus.Peer', 'Ping', sig='()')
        self.user.call(MANAGER_PATH, 'org.freedesktop.DBus.Peer', 'Ping', sig='()')


class BusPolicyTest(stamptest.TestCase):
    """dbus/io.stamp.Stamp1.conf, as installed: only root owns the name,
    callers may call, but may not set properties."""

    def test_user_cannot_own_name(self):
        self.assertDBusError(ACCESS_DENIED, self.user.call, '/org/freedesktop/DBus',
                             'org.freedesktop.DBus', 'RequestName', BUS_NAME, 0, sig='(su)',
                             dest='org.freedesktop.DBus')

    def test_root_can_own_name(self):
        bus = ('/org/freedesktop/DBus', 'org.freedesktop.DBus')
        self.assertEqual(self.root.call(*bus, 'RequestName', BUS_NAME, 0, sig='(su)',
                                        dest='org.freedesktop.DBus'), 1)
        self.root.call(*bus, 'ReleaseName', BUS_NAME, sig='(s)', dest='org.freedesktop.DBus')

    def test_user_cannot_set_properties(self):
        daemon = self.start_daemon()
        make_image(daemon.store, 'base')
        e = self.assertDBusError(ACCESS_DENIED, self.user.call, image_path('base'),
                                 'org.freedesktop.DBus.Properties', 'Set', IMAGE_IFACE,
                                 'ReadOnly', stamptest.GLib.Variant('b', True), sig='(ssv)')
        self.assertIn('Rejected send message', e.message)  # by the bus, not by stampd


class LifecycleTest(stamptest.TestCase):

    def test_sigterm_exits_cleanly(self):
        daemon = self.start_daemon()
        make_image(daemon.store, 'base')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertEqual(daemon.stop(), 0)
        self.assertIsNone(self.env.name_owner_pid(BUS_NAME))
        self.assertTrue(stamptest.is_subvolume(os.path.join(daemon.store, 'web')))

    def test_idle_timeout(self):
        # awake until the call, however long the daemon's start and the call take
        with stamptest.KeepAwake(self.env.conn):
            daemon = self.start_daemon(args=['--idle-timeout', '1'])
            self.assertEqual(self.root.list_images(), {})
        stamptest.wait_for(lambda: not daemon.running(), 'stampd to exit when idle')
        self.assertEqual(daemon.proc.returncode, 0)
        stamptest.wait_for(lambda: self.env.name_owner_pid(BUS_NAME) is None,
                           'the name to leave the bus')

    def test_idle_timeout_restarts_with_pool(self):
        with stamptest.KeepAwake(self.env.conn):
            daemon = self.start_daemon(args=['--idle-timeout', '1'])
            make_image(daemon.store, 'base')
        stamptest.wait_for(lambda: not daemon.running(), 'stampd to exit when idle')
        self.start_daemon(store=daemon.store)
        self.assertEqual(sorted(self.root.list_images()), ['base'])

    def test_command_line(self):
        help_ = subprocess.run([STAMPD, '--help'], capture_output=True, text=True, timeout=30)
        self.assertEqual(help_.returncode, 0)
        for option in ('--store', '--idle-timeout', '--no-pool', '--log-level'):
            self.assertIn(option, help_.stdout)
        bad = subprocess.run([STAMPD, '--no-such-option'], capture_output=True, text=True,
                             timeout=30)
        self.assertNotEqual(bad.returncode, 0)
        self.assertTrue(bad.stderr.strip())
        bad = subprocess.run([STAMPD, '--idle-timeout', 'soon'], capture_output=True, text=True,
                             timeout=30)
        self.assertNotEqual(bad.returncode, 0)

    def test_no_bus(self):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS='unix:path=' + os.path.join(
            self.dir, 'no-such-socket'))
        store = os.path.join(self.dir, 'store')
        p = subprocess.run([STAMPD, '--store', store, '--no-pool'], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertTrue(p.stderr.strip())


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
