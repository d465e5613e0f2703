#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Where stampd's log goes.

Under systemd its standard error is the journal's stream; run by hand or by
a test, a terminal or a file. Started by dbus-daemon without systemd, it is
/dev/null: the log must not vanish there. It then goes to the journal's
socket if one is there, else to syslog. The journal here is a datagram
socket of this test's, mounted where libsystemd looks for it, read with
the journal's native protocol (one KEY=value per line). The syslog case
(no journal socket) is not tested: this machine has no /dev/log.
"""

import os
import socket
import subprocess

import stamptest
from stamptest import BUS_NAME, STAMPD, make_image, run, wait_for, wrap_pdeathsig


class FakeJournal:
    """A socket at /run/systemd/journal/socket, in this test's mount namespace only."""

    def __init__(self, top):
        self.dir = os.path.join(top, 'run-systemd')
        os.makedirs(os.path.join(self.dir, 'journal'))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(self.dir, 'journal', 'socket'))
        self.sock.setblocking(False)
        run(['mount', '--bind', self.dir, '/run/systemd'])
        self.entries = []

    def read(self):
        """Every entry sent so far, as dicts."""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return self.entries
            entry = {}
            for line in data.decode(errors='replace').split('\n'):
                if '=' in line:
                    key, value = line.split('=', 1)
                    entry[key] = value
            self.entries.append(entry)

    def messages(self):
        return [e.get('MESSAGE') for e in self.read()]

    def close(self):
        run(['umount', '/run/systemd'])
        self.sock.close()


class LogTargetTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.journal = FakeJournal(self.dir)
        self.addCleanup(self.journal.close)

    def test_stderr_that_leads_somewhere_is_used(self):
        daemon = self.start_daemon()
        wait_for(lambda: '<6>Serving %s.' % BUS_NAME in daemon.log(), 'the log line on stderr')
        self.assertEqual(self.journal.read(), [], 'logged to the journal with a stderr to use')

    def test_journal_when_stderr_leads_nowhere(self):
        store = self.make_store('pool')
        # no idle exit (as the harness starts every stampd): this test is not about it
        proc = subprocess.Popen(wrap_pdeathsig([STAMPD, '--store', store, '--idle-timeout', '0']),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (proc.poll() is None and proc.terminate(), proc.wait()))
        wait_for(lambda: self.env.name_owner_pid(BUS_NAME) == proc.pid, 'stampd to own its name')

        serving = 'Serving %s.' % BUS_NAME
        wait_for(lambda: serving in self.journal.messages(), 'the log line in the journal')
        entry = [e for e in self.journal.read() if e.get('MESSAGE') == serving][0]
        self.assertEqual(entry.get('PRIORITY'), '6')
        self.assertEqual(entry.get('SYSLOG_IDENTIFIER'), 'stampd')

        make_image(store, 'base')
        self.root.manager('CloneImage', 'base', 'copy', False)
        wait_for(lambda: 'Cloned base to copy.' in self.journal.messages(), 'the clone logged')

        proc.terminate()
        self.assertEqual(proc.wait(timeout=stamptest.TIMEOUT), 0)


if __name__ == '__main__':
    stamptest.main()
