#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""stampctl -H [USER@]HOST[:PORT] for real: an sshd of our own on 127.0.0.1,
sd-bus's remote transport (`ssh -xT -p PORT USER@HOST -- systemd-stdio-bridge`),
and on the far side the test's stampd.

"Remote" is this machine: sshd runs inside the test's mount namespace, where
/run/dbus/system_bus_socket is the harness's private bus, so the
systemd-stdio-bridge of each ssh session reaches the test's stampd and
nothing else. The local side is a user of our own whose home (with
~/.ssh/config, its key and known_hosts, as any user has them) lies in the
test's directory, so ssh reads and writes nothing of the machine's. Its own
bus address points nowhere: whatever answers came over ssh.
"""

import json
import os
import shutil
import socket
import subprocess
import time

import installtree
import stamptest
from stamptest import (STAMPCTL, USER, make_image, run, store_state, subvolume_read_only,
                       wait_for, wrap_pdeathsig)

SSHD = '/usr/sbin/sshd'
PRIVSEP_DIR = '/run/sshd'  # compiled into sshd
LOCAL_USER = 'stamp-ssh'   # runs stampctl -H; added to the private /etc/passwd
EXIT_NOT_SUPPORTED, EXIT_UNAVAILABLE, EXIT_PERMISSION = 3, 69, 77

SSHD_CONFIG = '''# sshd for stamp's tests: 127.0.0.1 only, keys only, no PAM.
ListenAddress 127.0.0.1
HostKey %(dir)s/ssh_host_ed25519_key
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers root %(remote_user)s
# The keys live in the test's directory, below /tmp, which StrictModes
# would refuse (group- or world-writable parents); their own modes are right.
AuthorizedKeysFile %(dir)s/authorized_keys/%%u
StrictModes no
X11Forwarding no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
'''

SSH_CONFIG = '''Host 127.0.0.1
    IdentityFile ~/.ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    GSSAPIAuthentication no
    LogLevel ERROR
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1):
            return True
    except OSError:
        return False


def private_etc(env, name):
    """A file of the harness's private /etc copy; it is what /etc/NAME is here."""
    path = os.path.join(env.T, 'etc', name)
    assert os.path.samefile(path, '/etc/' + name), '/etc/%s is not the private copy' % name
    return path


def add_local_user(env, name, home):
    """A user with a home of its own, in the private user database (appended
    in place: the copies are bind-mounted over /etc in our namespace)."""
    used = set()
    for db in ('passwd', 'group'):
        with open(private_etc(env, db)) as f:
            used.update(int(line.split(':')[2]) for line in f if line.count(':') >= 3)
    uid = next(i for i in range(62000, 65000) if i not in used)
    for db, line in (('passwd', '%s:x:%d:%d::%s:/bin/sh' % (name, uid, uid, home)),
                     ('shadow', '%s:*:19000:0:99999:7:::' % name),
                     ('group', '%s:x:%d:' % (name, uid)),
                     ('gshadow', '%s:!::' % name)):
        with open(private_etc(env, db), 'a') as f:
            f.write(line + '\n')
    os.makedirs(os.path.join(home, '.ssh'), mode=0o700)
    for p in (home, os.path.join(home, '.ssh')):
        os.chown(p, uid, uid)
    return uid


def unlock_root_for_keys(env):
    """sshd without PAM refuses a locked account ('!' hash) even for keys;
    Debian leaves root's password '*' or '!' by install. Only the private
    shadow copy is changed."""
    path = private_etc(env, 'shadow')
    with open(path, 'r+') as f:
        lines = f.read().splitlines()
        for i, line in enumerate(lines):
            fields = line.split(':')
            if fields[0] == 'root' and fields[1].startswith('!'):
                fields[1] = '*'
                lines[i] = ':'.join(fields)
        f.seek(0)
        f.truncate()
        f.write('\n'.join(lines) + '\n')


class Sshd:
    """sshd on 127.0.0.1:PORT for root and one more remote user, and a local
    user whose ~/.ssh knows the host and holds the key both accept."""

    def __init__(self, env, top, remote_user):
        self.env = env
        self.dir = os.path.join(top, 'sshd')
        os.makedirs(os.path.join(self.dir, 'authorized_keys'))
        self.port = free_port()
        self.log = os.path.join(self.dir, 'sshd.log')
        self.home = os.path.join(top, 'home', LOCAL_USER)
        uid = add_local_user(env, LOCAL_USER, self.home)
        unlock_root_for_keys(env)

        hostkey = os.path.join(self.dir, 'ssh_host_ed25519_key')
        run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'stamptest-host', '-f', hostkey])
        key = os.path.join(self.home, '.ssh', 'id_ed25519')
        run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', LOCAL_USER, '-f', key])
        with open(key + '.pub') as f:
            pub = f.read()
        for user in ('root', remote_user):
            with open(os.path.join(self.dir, 'authorized_keys', user), 'w') as f:
                f.write(pub)
        with open(hostkey + '.pub') as f:
            host_pub = ' '.join(f.read().split()[:2])
        with open(os.path.join(self.home, '.ssh', 'known_hosts'), 'w') as f:
            f.write('[127.0.0.1]:%d %s\n' % (self.port, host_pub))
        with open(os.path.join(self.home, '.ssh', 'config'), 'w') as f:
            f.write(SSH_CONFIG)
        for name in ('id_ed25519', 'id_ed25519.pub', 'known_hosts', 'config'):
            p = os.path.join(self.home, '.ssh', name)
            os.chown(p, uid, uid)
            os.chmod(p, 0o600)

        self.config = os.path.join(self.dir, 'sshd_config')
        with open(self.config, 'w') as f:
            f.write(SSHD_CONFIG % {'dir': self.dir, 'remote_user': remote_user})
        run([SSHD, '-t', '-f', self.config])
        self.proc = None

    def start(self):
        with open(self.log, 'a') as log:
            # -D: stay in the foreground, our child; -e: log to stderr (the file)
            self.proc = subprocess.Popen(
                wrap_pdeathsig([SSHD, '-D', '-e', '-f', self.config, '-p', str(self.port)]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_for(lambda: self.proc.poll() is not None or listening(self.port),
                 'sshd on 127.0.0.1:%d' % self.port)
        if self.proc.poll() is not None:
            raise AssertionError('sshd exited with %s:\n%s' % (self.proc.returncode,
                                                               self.read_log()))

    def stop(self):
        if self.proc:
            stamptest.end_process(self.proc)

    def read_log(self):
        with open(self.log, errors='replace') as f:
            return f.read()


SSHD_STATE = {}


def sshd_for(env):
    """One sshd for the whole file, started on first use (or the error that
    kept it from starting, for every test)."""
    return installtree.once('sshd', start_sshd, env)


def start_sshd(env):
    if not os.path.isdir(PRIVSEP_DIR):
        # What the ssh service itself does at start (RuntimeDirectory=sshd):
        # sshd will not run without this empty directory, and a mount cannot
        # hide one that does not exist. Removed again at the end.
        os.mkdir(PRIVSEP_DIR, 0o755)
        SSHD_STATE['made_privsep_dir'] = True
    sshd = Sshd(env, os.path.join(env.T, 'remote'), USER)
    SSHD_STATE['sshd'] = sshd
    sshd.start()
    return sshd


def stop_sshd():
    sshd = SSHD_STATE.pop('sshd', None)
    if sshd:
        sshd.stop()
    if SSHD_STATE.pop('made_privsep_dir', False):
        try:
            os.rmdir(PRIVSEP_DIR)
        except OSError:
            pass


class RemoteTest(stamptest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.addClassCleanup(stop_sshd)

    def setUp(self):
        super().setUp()
        if not os.path.exists(SSHD) or not shutil.which('systemd-stdio-bridge'):
            self.skipTest('needs openssh-server (tools/install-deps.sh) and systemd-stdio-bridge')
        self.sshd = sshd_for(self.env)
        self.attach_log(self.sshd.log)
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        self.base = make_image(self.store, 'base')

    def host(self, user='root'):
        return '%s@127.0.0.1:%d' % (user, self.sshd.port)

    def remote(self, *args, user='root', expect=0, host=None):
        """stampctl -H as the local user, whose own system bus is nowhere."""
        cmd = ['setpriv', '--reuid=' + LOCAL_USER, '--regid=' + LOCAL_USER, '--init-groups',
               '--reset-env', '--', 'env', 'DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent',
               STAMPCTL, '-H', host or self.host(user)] + list(args)
        p = run(cmd, check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, expect, 'stampctl -H %s %s: %s%s' % (
            host or self.host(user), ' '.join(args), p.stdout, p.stderr))
        return p

    def sessions(self, user):
        return self.sshd.read_log().count('Accepted publickey for %s from 127.0.0.1' % user)

    def test_list(self):
        run([STAMPCTL, 'clone', 'base', 'web'])
        local = json.loads(run([STAMPCTL, '--json', 'list']).stdout)
        before = self.sessions('root')
        remote = json.loads(self.remote('--json', 'list').stdout)
        self.assertEqual(remote, local)
        self.assertEqual(sorted(i['name'] for i in remote['images']), ['base', 'web'])
        self.assertEqual(self.sessions('root'), before + 1, 'the call did not go over ssh')

    def test_clone(self):
        self.remote('clone', 'base', 'far', '--read-only')
        far = os.path.join(self.store, 'far')
        self.assertSnapshotOf(far, self.base)
        self.assertTrue(subvolume_read_only(far))
        self.remote('remove', 'far')
        self.assertFalse(os.path.exists(far))

    def test_remote_user_is_the_one_authorized(self):
        """Over ssh as an unprivileged user, polkit decides for that user."""
        before = store_state(self.store)
        p = self.remote('--no-ask-password', 'clone', 'base', 'far', user=USER,
                        expect=EXIT_PERMISSION)
        # (sshd says first that the test user's home does not exist)
        self.assertRegex(p.stderr.splitlines()[-1], r'^stampctl: .*manage-images')
        self.assertUnchanged(self.store, before, 'a refused remote clone')
        self.allow(USER)
        self.remote('clone', 'base', 'far', user=USER)
        self.assertSnapshotOf(os.path.join(self.store, 'far'), self.base)

    def test_fd_verbs_refused(self):
        """An ssh pipe carries no fds: export/import say so, and nothing runs."""
        before = store_state(self.store)
        out = os.path.join(self.dir, 'base.tar')
        p = self.remote('export-tar', 'base', out, expect=EXIT_NOT_SUPPORTED)
        self.assertIn('cannot pass file descriptors', p.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(self.root.manager('ListJobs'), [])
        self.assertUnchanged(self.store, before)

    def test_unreachable(self):
        closed = free_port()
        p = self.remote('list', host='root@127.0.0.1:%d' % closed, expect=EXIT_UNAVAILABLE)
        self.assertIn('127.0.0.1', p.stderr)

    def test_completion_names_come_from_the_host(self):
        run([STAMPCTL, 'clone', 'base', 'bravo'])
        script = ('source %s && COMP_WORDS=(%s -H %s clone "") && COMP_CWORD=4 && _stampctl && '
                  'printf "%%s\\n" "${COMPREPLY[@]}"' % (
                      os.path.join(stamptest.SRCDIR, 'completion', 'stampctl'), STAMPCTL,
                      self.host()))
        cmd = ['setpriv', '--reuid=' + LOCAL_USER, '--regid=' + LOCAL_USER, '--init-groups',
               '--reset-env', '--', 'env', 'DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent',
               'bash', '--norc', '--noprofile', '-c', script]
        t0 = time.monotonic()
        names = run(cmd).stdout.split()
        self.assertEqual(sorted(names), ['base', 'bravo'], 'completed in %.1fs' % (
            time.monotonic() - t0))


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
