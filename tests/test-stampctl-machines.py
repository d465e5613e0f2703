#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""stampctl's machine verbs as a user meets them: kill reaches the command
(--kill-whom=all by default, as machinectl), exit statuses of 128+signal
(130 for Ctrl-C, 143 for stop, 137 for KILL, also when the command kills
itself), start --no-block keeps the machine off the caller's fds,
machine-status, terminate, and on a terminal the caller's TERM and a banner."""

import fcntl
import importlib.util
import json
import os
import signal
import subprocess

import stamptest
from stamptest import STAMPCTL, USER

_spec = importlib.util.spec_from_file_location(
    'machinetests', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'test-machines.py'))
machinetests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machinetests)

EXIT_NO_SUCH = 4
PIDFD_GET_INFO = 0xC040FF0B  # _IOWR(0xFF, 11, struct pidfd_info of 64 bytes), Linux 6.15


def kernel_keeps_exit_status():
    """Whether a pidfd tells how its process ended (PIDFD_GET_INFO with PIDFD_INFO_EXIT)."""
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    fd = os.pidfd_open(pid)
    try:
        os.waitpid(pid, 0)
        info = bytearray(64)
        info[0] = 1 << 3  # PIDFD_INFO_EXIT
        try:
            fcntl.ioctl(fd, PIDFD_GET_INFO, info)
        except OSError:
            return False
        return bool(info[0] & (1 << 3))
    finally:
        os.close(fd)


def blocked_signals(pid):
    """The signals pid blocks (stampctl blocks those its event loop takes)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('SigBlk:'):
                    mask = int(line.split()[1], 16)
                    return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    except OSError:
        pass
    return set()


def stampctl_pids():
    pids = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                if f.read().split(b'\0')[0] == STAMPCTL.encode():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def wait_listening(pid, signo):
    """Until stampctl's event loop takes signo: sent earlier, it would meet the default action."""
    stamptest.wait_for(lambda: signo in blocked_signals(pid), 'stampctl (pid %d) to take signal %d' % (pid, signo))


class StampctlMachineTestCase(machinetests.MachineTestCase):

    def stampctl(self, *args, **kw):
        return subprocess.Popen([STAMPCTL] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)

    def ctl(self, *args, expect=0):
        p = stamptest.run([STAMPCTL] + list(args), check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, expect, 'stampctl %s: %s%s' % (' '.join(args), p.stdout, p.stderr))
        return p

    def wait_payload(self, name='base'):
        """The command under nspawn's stub init, once the daemon knows it."""
        stamptest.wait_for(lambda: self.props(name)['Payload'] != 0, 'the command of machine %s' % name)
        return self.props(name)['Payload']

    def wait_listed(self, name='base'):
        stamptest.wait_for(lambda: name in self.list_machines(), 'machine %s to be listed' % name)

    def finish(self, p):
        out, err = p.communicate(timeout=stamptest.TIMEOUT)
        return p.returncode, out, err

    def start_sleeper(self, *extra):
        p = self.stampctl('start', *extra, 'base', '--', '/bin/sleep', '1000')
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.addCleanup(self.kill_quietly, 'base')
        self.wait_listed()
        self.wait_running('base')
        self.wait_payload()
        return p


class ExitStatusTest(StampctlMachineTestCase):

    def test_kill_reaches_the_command(self):
        p = self.start_sleeper()
        self.ctl('kill', 'base')  # TERM to every process: the stub init alone would ignore it
        status, _, err = self.finish(p)
        self.assertEqual(status, 128 + signal.SIGTERM, err)

    def test_kill_signal_kill(self):
        p = self.start_sleeper()
        self.ctl('kill', '--signal', 'KILL', 'base')
        self.assertEqual(self.finish(p)[0], 128 + signal.SIGKILL)

    def test_kill_leader_only(self):
        p = self.start_sleeper()
        self.ctl('kill', '--kill-whom=leader', '--signal', 'KILL', 'base')
        self.assertEqual(self.finish(p)[0], 128 + signal.SIGKILL)
        self.ctl('kill', '--kill-whom=nobody', 'base', expect=2)

    def test_stop(self):
        p = self.start_sleeper()
        self.ctl('stop', 'base')
        self.assertEqual(self.finish(p)[0], 128 + signal.SIGTERM)

    def test_ctrl_c(self):
        p = self.start_sleeper()
        wait_listening(p.pid, signal.SIGINT)
        p.send_signal(signal.SIGINT)
        status, _, err = self.finish(p)
        self.assertEqual(status, 128 + signal.SIGINT, err)

    def test_command_killing_itself(self):
        # No signal of stampd's own to go by: only the command's own wait status can tell.
        if not kernel_keeps_exit_status():
            self.skipTest('the kernel keeps no exit status for a pidfd (PIDFD_GET_INFO, Linux 6.15)')
        p = subprocess.Popen([STAMPCTL, 'start', 'base', '--', '/bin/sh', '-c', 'read x; kill -9 $$'],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.wait_listed()
        self.wait_running('base')
        self.wait_payload()
        out, err = p.communicate('go\n', timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 128 + signal.SIGKILL, err)

    def test_name_taken_says_already_exists(self):
        self.start_sleeper()
        p = self.ctl('start', 'base', '--', '/bin/true', expect=5)
        self.assertIn('A machine named base already exists', p.stderr)

    def test_exit_code_passes(self):
        self.assertEqual(self.ctl('start', 'base', '--', '/bin/sh', '-c', 'exit 7', expect=7).returncode, 7)

    def test_terminate(self):
        p = self.start_sleeper()
        self.ctl('terminate', 'base')
        self.assertEqual(self.finish(p)[0], 128 + signal.SIGKILL)


class DetachedTest(StampctlMachineTestCase):

    def test_no_block_keeps_off_the_callers_fds(self):
        out_path = os.path.join(self.dir, 'caller-output')
        with open(out_path, 'w') as f:
            p = subprocess.run([STAMPCTL, 'start', '--no-block', 'base', '--', '/bin/sh', '-c',
                                'read x; echo machine-said-this; echo machine-err >&2'],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(self.wait_removed('base'), 0)
        with open(out_path) as f:
            caller = f.read()
        self.assertNotIn('machine-said-this', caller)
        self.assertNotIn('machine-err', caller)
        self.assertIn('stampd', caller)  # where the output went, in words
        stamptest.wait_for(lambda: 'machine-said-this' in self.daemon.log(), "the output in stampd's log")
        self.assertIn('machine-err', self.daemon.log())

    def test_no_block_json(self):
        p = stamptest.run([STAMPCTL, '--json', 'start', '--no-block', 'base', '--', '/bin/true'], check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {'name': 'base', 'object': machinetests.machine_path('base')})
        self.wait_removed('base')

    def test_shell_refuses_no_block(self):
        p = stamptest.run([STAMPCTL, 'shell', '--no-block', 'base'], check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn('--no-block', p.stderr)
        self.assertEqual(self.list_machines(), {})


class MachineStatusTest(StampctlMachineTestCase):

    def test_machine_status(self):
        self.start_sleeper()
        payload = self.props('base')['Payload']
        text = self.ctl('machine-status', 'base').stdout
        self.assertIn('Name: base', text)
        self.assertIn('State: running', text)
        self.assertIn('Command: %d' % payload, text)
        shown = json.loads(self.ctl('--json', 'machine-status', 'base').stdout)
        self.assertEqual((shown['name'], shown['image'], shown['state'], shown['payload']),
                         ('base', 'base', 'running', payload))
        # the keys of `machines --json` are a subset
        listed = json.loads(self.ctl('--json', 'machines').stdout)['machines'][0]
        self.assertLessEqual(set(listed), set(shown))
        for key in listed:
            self.assertEqual(listed[key], shown[key], key)

    def test_console_resized_only_by_its_starter(self):
        self.start_sleeper()
        for call in (lambda: self.root.call(machinetests.machine_path('base'), machinetests.MACHINE_IFACE,
                                            'ConsoleResized'),
                     lambda: self.user.call(machinetests.machine_path('base'), machinetests.MACHINE_IFACE,
                                            'ConsoleResized')):
            with self.assertRaises(stamptest.DBusError) as e:
                call()
            self.assertEqual(e.exception.name, stamptest.ACCESS_DENIED)
            self.assertIn('base', e.exception.message)
        self.assertEqual(self.props('base')['State'], 'running')

    def test_status_of_a_machine_without_such_image(self):
        p = self.stampctl('start', '--name', 'other', '-x', 'base', '--', '/bin/sleep', '1000')
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.addCleanup(self.kill_quietly, 'other')
        self.wait_listed('other')
        text = self.ctl('status', 'other').stdout
        self.assertIn('Name: other', text)
        self.assertIn('Image: base', text)
        self.assertIn('Path: ', self.ctl('status', 'base').stdout, 'an image of that name is the image')
        self.ctl('status', 'nothing', expect=EXIT_NO_SUCH)

    def test_machine_status_unknown(self):
        p = self.ctl('machine-status', 'nothing', expect=EXIT_NO_SUCH)
        self.assertIn('No machine named nothing', p.stderr)


class TerminalTest(StampctlMachineTestCase):

    def test_term_and_banner(self):
        self.allow(USER, 'start-machine')
        inner = 'echo inner=$TERM.; read x'
        pane = self.run_in_terminal(USER, ['sh', '-c', 'echo outer=$TERM.; exec %s start base -- /bin/sh -c %s'
                                           % (STAMPCTL, "'" + inner + "'")])
        stamptest.wait_for(lambda: 'inner=' in pane.capture() or pane.exited(), 'the command in the machine')
        screen = pane.capture()
        outer = screen.split('outer=', 1)[1].split('.', 1)[0]
        self.assertTrue(outer)
        self.assertIn('inner=%s.' % outer, screen)
        self.assertIn('Press ^] three times within 1s to leave', screen)
        pane.type_line('')
        self.assertEqual(pane.wait_exit(), 0)

    def test_window_size_follows_the_terminal(self):
        self.allow(USER, 'start-machine')
        pane = self.run_in_terminal(USER, [STAMPCTL, '-q', 'start', 'base', '--', '/bin/sh', '-c',
                                           'while read x; do /bin/busybox stty size; done'])
        stamptest.wait_for(lambda: 'base' in self.list_machines() or pane.exited(), 'the machine')
        self.wait_running('base')

        def size_shown(rows, cols):
            pane.type_line('')
            return ('%d %d' % (rows, cols)) in pane.capture() or pane.exited()
        rows, cols = (int(x) for x in pane.tmux.cmd('display-message', '-p', '-t', pane.session,
                                                       '#{pane_height} #{pane_width}').stdout.split())
        stamptest.wait_for(lambda: size_shown(rows, cols), 'the first size', interval=0.05)
        self.assertNotIn('Press ^]', pane.capture(), '-q: no banner')
        wait_listening(stamptest.wait_for(stampctl_pids, 'the stampctl in the terminal')[0], signal.SIGWINCH)
        pane.tmux.cmd('resize-window', '-t', pane.session, '-x', '100', '-y', '30')
        rows, cols = (int(x) for x in pane.tmux.cmd('display-message', '-p', '-t', pane.session,
                                                       '#{pane_height} #{pane_width}').stdout.split())
        self.assertEqual(cols, 100)
        stamptest.wait_for(lambda: size_shown(rows, cols), 'the new size inside', interval=0.05)
        self.assertFalse(pane.exited(), pane.capture())
        self.ctl('stop', 'base')
        self.assertEqual(pane.wait_exit(), 128 + signal.SIGTERM)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
