#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Published ports: StartMachine's option ports (nspawn's --port on a veth
pair whose ends stampd addresses) makes a server inside the machine reachable
on the host's addresses; the Machine object lists them; bad values are named
errors; a user may not publish ports on their own. The whole file runs in a
network namespace of its own, so the host's network is never touched."""

import importlib
import os
import socket
import subprocess
import sys

import stamptest
from stamptest import ACCESS_DENIED, MANAGER_IFACE, MANAGER_PATH, PYTHON, STAMPCTL, USER, run

machines = importlib.import_module('test-machines')
machines.OPTION_TYPES.update({'ports': 'as'})

INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
PUBLIC = '10.200.0.1'  # an address of "the host" that is not the machine's veth


def fetch(address, port):
    """The body of GET / from address:port, or None while nothing answers."""
    try:
        with socket.create_connection((address, port), timeout=2) as s:
            s.sendall(b'GET / HTTP/1.0\r\nHost: x\r\n\r\n')
            data = b''
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    return data.split(b'\r\n\r\n', 1)[-1].decode(errors='replace')


class PortTest(machines.MachineTestCase):

    def setUp(self):
        super().setUp()
        for applet in ('httpd',):
            os.symlink('busybox', os.path.join(self.base, 'bin', applet))
        with open(os.path.join(self.base, 'srv/index.html'), 'w') as f:
            f.write('served from inside\n')

    def test_a_port_reaches_a_server_inside(self):
        props = self.sleeper(command=['/bin/httpd', '-f', '-p', '80', '-h', '/srv'],
                             ports=['tcp:8080:80', 'udp:5353:53', '9000'])
        self.assertEqual(sorted(props['Ports']), [('tcp', 8080, 80), ('tcp', 9000, 9000), ('udp', 5353, 53)])
        stamptest.wait_for(lambda: fetch(PUBLIC, 8080) == 'served from inside\n',
                           'the server inside to answer on %s:8080' % PUBLIC, interval=0.1)
        self.assertIsNone(fetch(PUBLIC, 8081), 'only the published port is forwarded')
        self.root.manager('KillMachine', 'base', 9)
        self.wait_removed('base')
        stamptest.wait_for(lambda: fetch(PUBLIC, 8080) is None, 'the port to be withdrawn', interval=0.1)

    def sleeper(self, command, **options):
        self.start('base', command=command, **options)
        return self.wait_running('base')

    def test_stampctl_port_option(self):
        subprocess.run([STAMPCTL, 'start', 'base', '--no-block', '--port', 'tcp:8081:80', '--',
                        '/bin/httpd', '-f', '-p', '80', '-h', '/srv'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       timeout=stamptest.TIMEOUT)
        self.addCleanup(self.kill_quietly, 'base')
        self.assertEqual(self.wait_running('base')['Ports'], [('tcp', 8081, 80)])
        stamptest.wait_for(lambda: fetch(PUBLIC, 8081) == 'served from inside\n', 'the server inside to answer',
                           interval=0.1)

    def test_bad_values_are_named_errors(self):
        for ports in (['sctp:1:2'], ['tcp:0:80'], ['tcp:8080:65536'], ['tcp:80:'], ['x'], [''],
                      ['tcp:8080:80', 'tcp:8080:81'], ['%d' % p for p in range(1000, 1033)]):
            variants, fd_list = self.options(ports=ports)
            e = self.assertDBusError(INVALID_ARGS, self.root.call, MANAGER_PATH, MANAGER_IFACE, 'StartMachine',
                                     'base', variants, fd_list=fd_list)
            self.assertIn('ports', e.message)
        self.assertEqual(self.list_machines(), {})

    def test_owner_may_not_publish_ports_alone(self):
        machines.make_template(self.store, 'tmpl')
        own = ('manage-own-images', 'start-own-machine', 'manage-own-machines')
        self.set_rules(''.join(stamptest.rule_for(USER, a, 'YES') for a in own))
        self.user.manager('CloneImage', 'tmpl', 'mine', False)
        with self.assertRaises(stamptest.DBusError) as e:
            self.user.manager('StartMachine', 'mine', {'ports': stamptest.GLib.Variant('as', ['8082:80']),
                                                        'command': stamptest.GLib.Variant('as', ['/bin/true'])})
        self.assertIn(e.exception.name, (ACCESS_DENIED, stamptest.INTERACTIVE_REQUIRED))
        self.assertEqual(self.list_machines(), {})


    def test_rules_see_the_ports(self):
        """A start that publishes ports says so to polkit (the detail "ports"), without a snapshot too."""
        machines.make_template(self.store, 'tmpl')
        self.root.manager('CloneImage', 'tmpl', 'web', False)
        self.set_rules('''polkit.addRule(function(action, subject) {
    if (action.id == "io.stamp.Stamp1.start-machine" && action.lookup("ports") == "yes")
        return polkit.Result.NO;
    if (action.id == "io.stamp.Stamp1.start-machine")
        return polkit.Result.YES;
});''')
        with self.assertRaises(stamptest.DBusError) as e:
            self.user.manager('StartMachine', 'web', {'ports': stamptest.GLib.Variant('as', ['8083:80']),
                                                       'command': stamptest.GLib.Variant('as', ['/bin/true'])})
        self.assertEqual(e.exception.name, ACCESS_DENIED)
        self.assertEqual(self.list_machines(), {})

def private_network():
    """Run this file in a network namespace of its own, with a "public" address."""
    if os.geteuid() != 0 or os.environ.get('STAMPTEST_NETNS') == '1':
        return
    os.environ['STAMPTEST_NETNS'] = '1'
    os.execvp('unshare', ['unshare', '--net', '--', PYTHON] + sys.argv)


if __name__ == '__main__':
    private_network()
    # once: stamptest.main() runs this file again in a mount namespace of its own
    if os.geteuid() == 0 and os.environ.get('STAMPTEST_NAMESPACE') != '1':
        run(['ip', 'link', 'set', 'lo', 'up'])
        run(['ip', 'link', 'add', 'pub0', 'type', 'veth', 'peer', 'name', 'pub1'])
        run(['ip', 'addr', 'add', PUBLIC + '/24', 'dev', 'pub0'])
        run(['ip', 'link', 'set', 'pub0', 'up'])
        run(['ip', 'link', 'set', 'pub1', 'up'])
    raise SystemExit(stamptest.main())
