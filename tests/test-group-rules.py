#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The sample polkit rules (polkit/50-stamp-group.rules.example) for real:
placed in the rules dir of the real polkitd, they let a member of the group
"stamp" clone, rename and remove images with no agent and no password, and
refuse everyone else as before. A user added to the group (in the harness's
private /etc/group) is let in at the next call, as `usermod -aG` promises."""

import os

import stamptest
from stamptest import store_names, SRCDIR, STAMP_GROUP, STAMPCTL, USER, USER2, make_image, run, store_state

EXIT_PERMISSION = 77  # stampctl: polkit said no, or nobody could be asked

with open(os.path.join(SRCDIR, 'polkit', '50-stamp-group.rules.example')) as _f:
    EXAMPLE_RULES = _f.read()


class GroupRulesTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        make_image(self.store, 'base')

    def ctl(self, user, *args):
        """stampctl as user: never asks (no agent, no interactive flag)."""
        return run(self.env.as_user(user, [STAMPCTL, '--no-ask-password'] + list(args)),
                   check=False, timeout=stamptest.TIMEOUT)

    def assertRefused(self, user, *args):
        before = store_state(self.store)
        p = self.ctl(user, *args)
        self.assertEqual(p.returncode, EXIT_PERMISSION, p.stdout + p.stderr)
        self.assertUnchanged(self.store, before, ' '.join(args))

    def assertAllowed(self, user, *args):
        p = self.ctl(user, *args)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_without_rules_the_group_is_nothing(self):
        self.assertIn(USER2, group_members())
        self.assertRefused(USER2, 'clone', 'base', 'web')

    def test_group_member_manages_images(self):
        self.set_rules(EXAMPLE_RULES)
        self.assertAllowed(USER2, 'clone', 'base', 'web')
        self.assertSnapshotOf(os.path.join(self.store, 'web'), os.path.join(self.store, 'base'))
        self.assertAllowed(USER2, 'rename', 'web', 'site')
        self.assertAllowed(USER2, 'read-only', 'site', 'yes')
        self.assertAllowed(USER2, 'remove', 'site')
        self.assertEqual(store_names(self.store), ['base'])

    def test_others_still_refused(self):
        self.set_rules(EXAMPLE_RULES)
        self.assertNotIn(USER, group_members())
        self.assertRefused(USER, 'clone', 'base', 'web')
        self.assertRefused(USER, 'remove', 'base')

    def test_user_added_to_group(self):
        self.set_rules(EXAMPLE_RULES)
        self.assertRefused(USER, 'clone', 'base', 'web')
        set_group_members(self.env, group_members() + [USER])
        self.addCleanup(set_group_members, self.env, [m for m in group_members() if m != USER])
        self.assertAllowed(USER, 'clone', 'base', 'web')
        self.assertTrue(os.path.isdir(os.path.join(self.store, 'web')))


def group_members():
    with open('/etc/group') as f:
        for line in f:
            fields = line.rstrip('\n').split(':')
            if fields[0] == STAMP_GROUP:
                return [m for m in fields[3].split(',') if m]
    raise AssertionError('no group %s' % STAMP_GROUP)


def set_group_members(env, members):
    """Rewrite the group's line in the harness's private copy of /etc/group,
    in place: that copy is bind-mounted over /etc/group in our namespace."""
    path = os.path.join(env.T, 'etc', 'group')
    assert os.path.samefile(path, '/etc/group'), '/etc/group is not the private copy'
    with open(path, 'r+') as f:
        lines = f.read().splitlines()
        for i, line in enumerate(lines):
            fields = line.split(':')
            if fields[0] == STAMP_GROUP:
                fields[3] = ','.join(members)
                lines[i] = ':'.join(fields)
        f.seek(0)
        f.truncate()
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
