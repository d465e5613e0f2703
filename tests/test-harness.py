#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The harness itself: bus, polkitd with the project's actions, test users,
rules that take effect, btrfs over loop, and polkit prompts through tmux.
None of this needs stampd, so a failure here points at the machine or the
harness, not at the daemon."""

import os
import pwd
import time

import stamptest
from stamptest import ADMIN, ADMIN_PASSWORD, USER, USER2, run


ACTIONS = ['create-template', 'manage-images', 'start-machine', 'manage-machines', 'export',
           'import', 'pull', 'manage-own-images', 'start-own-machine', 'manage-own-machines', 'login',
           'push']


def pkcheck_cmd(action, interactive=False):
    # exec keeps the pid, so the subject is pkcheck itself
    return ['sh', '-c', 'exec pkcheck --action-id %s%s --process $$%s' % (
        stamptest.ACTION_PREFIX, action, ' --allow-user-interaction' if interactive else '')]


class HarnessTest(stamptest.TestCase):

    def test_private_bus_is_ours(self):
        self.assertTrue(os.environ['DBUS_SYSTEM_BUS_ADDRESS'].startswith(
            'unix:path=/run/dbus/system_bus_socket'))
        self.assertTrue(os.path.samefile('/run/dbus/system_bus_socket',
                                         os.path.join(self.env.T, 'run/dbus/system_bus_socket')))
        self.assertIsNotNone(self.env.name_owner_pid(stamptest.POLKIT_NAME))

    def test_daemons_have_no_idle_timeout_unless_asked(self):
        """However long a test's set-up takes on a busy machine, its stampd is
        still there: the harness starts it with --idle-timeout 0, unless the
        test is about the idle timeout and gives its own."""
        def idle_arguments(daemon):
            with open('/proc/%d/cmdline' % daemon.pid, 'rb') as f:
                argv = f.read().decode().split('\0')
            self.assertTrue(argv[0].endswith('stampd'), argv)
            return [argv[i + 1] for i, a in enumerate(argv) if a == '--idle-timeout']

        daemon = self.start_daemon()
        self.assertEqual(idle_arguments(daemon), ['0'])
        self.stop_daemon(daemon)
        daemon = self.start_daemon(store=daemon.store, args=['--idle-timeout', '7'])
        self.assertEqual(idle_arguments(daemon), ['7'])

    def test_keep_awake_holds_a_daemon_past_its_idle_timeout(self):
        """What the idle tests rely on: the pings keep stampd as long as they
        go on, and it exits on idle once they stop."""
        with stamptest.KeepAwake(self.env.conn) as awake:
            daemon = self.start_daemon(args=['--idle-timeout', '1'])
            time.sleep(3)
            self.assertTrue(daemon.running(), 'stampd exited while pinged')
        stamptest.wait_for(lambda: not daemon.running(), 'stampd to exit when idle')
        self.assertGreaterEqual(time.monotonic() - awake.last_sent, 1 - 0.1)
        self.assertEqual(daemon.proc.returncode, 0)

    def test_pkaction_sees_project_actions_only(self):
        listed = set(run(['pkaction']).stdout.split())
        self.assertEqual(listed, {stamptest.ACTION_PREFIX + a for a in ACTIONS})
        for action in ACTIONS:
            p = run(['pkaction', '--verbose', '--action-id', stamptest.ACTION_PREFIX + action])
            self.assertIn('implicit any:      auth_admin', p.stdout)

    def test_users_exist_in_namespace_only(self):
        for name in (USER, USER2, ADMIN):
            uid = pwd.getpwnam(name).pw_uid
            self.assertEqual(uid, self.env.users[name])
            p = run(self.env.as_user(name, ['id', '-u']))
            self.assertEqual(int(p.stdout), uid)
        groups = run(self.env.as_user(USER2, ['id', '-nG'])).stdout.split()
        self.assertIn(stamptest.STAMP_GROUP, groups)
        for name in ('passwd', 'shadow', 'group', 'gshadow'):
            self.assertTrue(os.path.samefile('/etc/' + name,
                                             os.path.join(self.env.T, 'etc', name)))

    def test_rules_take_effect(self):
        check = self.env.as_user(USER, pkcheck_cmd('manage-images'))
        self.assertNotEqual(run(check, check=False).returncode, 0)
        self.allow(USER)
        self.assertEqual(run(check, check=False).returncode, 0)
        self.set_rules('')
        self.assertNotEqual(run(check, check=False).returncode, 0)
        self.allow(USER2)
        self.assertNotEqual(run(check, check=False).returncode, 0)

    def test_btrfs_over_loop(self):
        store = stamptest.make_btrfs_store(os.path.join(self.dir, 'fs'), '256M')
        self.assertEqual(stamptest.fs_type(store), 'btrfs')
        path = stamptest.make_image(store, 'base')
        self.assertTrue(stamptest.is_subvolume(path))
        self.assertFalse(stamptest.quotas_enabled(store))
        source, fstype = stamptest.mount_source(store)
        self.assertEqual(fstype, 'btrfs')
        self.assertEqual(stamptest.loop_backing_file(source), store + '.btrfs')

    def _prompted_pkcheck(self, password):
        self.set_rules(stamptest.rule_for(USER, 'manage-images', 'AUTH_ADMIN'))
        pane = self.run_in_terminal(USER, pkcheck_cmd('manage-images', interactive=True),
                                    agent=True)
        pane.wait_for_password_prompt()
        pane.type_line(password)
        return pane.wait_exit()

    def test_prompt_right_password(self):
        self.assertEqual(self._prompted_pkcheck(ADMIN_PASSWORD), 0)

    def test_prompt_wrong_password(self):
        self.assertNotEqual(self._prompted_pkcheck('not-the-password'), 0)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
