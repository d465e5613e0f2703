#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Authorization: every mutating call goes through polkit for the calling
peer, refusals change nothing, root passes, details reach the rules, and a
slow polkit answer (a person at a password prompt) stalls no one else."""

import json
import os
import subprocess
import threading

import stamptest
from stamptest import (store_names, ACCESS_DENIED, ADMIN_PASSWORD, INTERACTIVE_REQUIRED, LIMITS_EXCEEDED, USER, USER2,
                       image_path, make_image, rule_for, store_state, subvolume_read_only)

# Each mutating call, as (label, call(caller, **kw)), all aimed at image "base".
MUTATIONS = [
    ('CloneImage', lambda c, **kw: c.manager('CloneImage', 'base', 'web', False, **kw)),
    ('RemoveImage', lambda c, **kw: c.manager('RemoveImage', 'base', **kw)),
    ('RenameImage', lambda c, **kw: c.manager('RenameImage', 'base', 'renamed', **kw)),
    ('MarkImageReadOnly', lambda c, **kw: c.manager('MarkImageReadOnly', 'base', True, **kw)),
    ('Image.Clone', lambda c, **kw: c.image('base', 'Clone', 'web', False, **kw)),
    ('Image.Remove', lambda c, **kw: c.image('base', 'Remove', **kw)),
    ('Image.Rename', lambda c, **kw: c.image('base', 'Rename', 'renamed', **kw)),
    ('Image.MarkReadOnly', lambda c, **kw: c.image('base', 'MarkReadOnly', True, **kw)),
]

# polkit answers "challenge" for AUTH_ADMIN whether or not the caller allows
# interaction (with no agent around, nobody can be asked). Following the
# D-Bus specification, the daemon turns a challenge into
# InteractiveAuthorizationRequired only when the caller did NOT set
# ALLOW_INTERACTIVE_AUTHORIZATION (retrying with it could succeed); a caller
# that did allow interaction and still was not authorized gets AccessDenied.
EXPECTED_REFUSAL = {
    # (polkit result for the caller, interactive flag) -> error
    ('AUTH_ADMIN', False): INTERACTIVE_REQUIRED,
    ('AUTH_ADMIN', True): ACCESS_DENIED,
    ('NO', False): ACCESS_DENIED,
    ('NO', True): ACCESS_DENIED,
}


# Runs as a user: one bus connection, a CloneImage of base for each name read from stdin, one JSON
# line of outcome for each.
ONE_CONNECTION_SCRIPT = '''
import json, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib
conn = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
for line in sys.stdin:
    name = line.strip()
    try:
        conn.call_sync('io.stamp.Stamp1', '/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager', 'CloneImage',
                       GLib.Variant('(ssb)', ('base', name, False)), None, 0, 60000, None)
        print(json.dumps({'ok': name}), flush=True)
    except GLib.Error as e:
        print(json.dumps({'error': Gio.DBusError.get_remote_error(e)}), flush=True)
'''


class AuthzTestCase(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        self.base = make_image(self.store, 'base')

    def path(self, name):
        return os.path.join(self.store, name)


class ReadOnlyCallsTest(AuthzTestCase):
    """Reading needs no authorization, and no rule is set here."""

    def test_user_can_read(self):
        self.assertIn('base', self.user.list_images())
        self.assertEqual(self.user.manager('GetImage', 'base'), image_path('base'))
        self.assertEqual(self.user.image_props('base')['Name'], 'base')
        self.assertIn('PoolPath', self.user.get_all(stamptest.MANAGER_PATH,
                                                    stamptest.MANAGER_IFACE))
        xml = self.user.call(stamptest.MANAGER_PATH, 'org.freedesktop.DBus.Introspectable',
                             'Introspect', sig='()')
        self.assertIn(stamptest.MANAGER_IFACE, xml)
        objects = self.user.call(stamptest.MANAGER_PATH, 'org.freedesktop.DBus.ObjectManager',
                                 'GetManagedObjects', sig='()')
        self.assertIn(image_path('base'), objects)


class RefusalTest(AuthzTestCase):
    """An unauthorized user is refused, with the right error, and nothing on
    disk changes: not the images, not their flags, not even the store dir."""

    def check_refused(self, result):
        if result is not None:
            self.set_rules(rule_for(USER, 'manage-images', result))
        for interactive in (False, True):
            expected = EXPECTED_REFUSAL[(result or 'AUTH_ADMIN', interactive)]
            for label, call in MUTATIONS:
                with self.subTest(call=label, interactive=interactive):
                    before = store_state(self.store)
                    e = self.assertDBusError(expected, call, self.user, interactive=interactive)
                    self.assertTrue(e.message)
                    self.assertUnchanged(self.store, before, label)

    def test_no_rule_uses_policy_default(self):
        self.check_refused(None)  # the shipped default is auth_admin

    def test_rule_says_auth_admin(self):
        self.check_refused('AUTH_ADMIN')

    def test_rule_says_no(self):
        self.check_refused('NO')

    def test_rule_for_someone_else(self):
        self.allow(USER2)
        before = store_state(self.store)
        self.assertDBusError(INTERACTIVE_REQUIRED, self.user.manager, 'CloneImage', 'base', 'web',
                             False)
        self.assertUnchanged(self.store, before)

    def test_other_actions_do_not_count(self):
        self.set_rules(''.join(rule_for(USER, a, 'YES') for a in (
            'create-template', 'start-machine', 'manage-machines', 'export', 'import', 'pull')))
        before = store_state(self.store)
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'CloneImage', 'base', 'web', False,
                             interactive=True)
        self.assertUnchanged(self.store, before)


class AllowedTest(AuthzTestCase):

    def test_authorized_user_clones(self):
        self.allow(USER)
        self.user.manager('CloneImage', 'base', 'web', False)
        self.assertSnapshotOf(self.path('web'), self.base)
        self.assertFalse(subvolume_read_only(self.path('web')))
        self.assertEqual(self.user.image_props('web')['Origin'], 'base')

    def test_authorized_user_manages(self):
        self.allow(USER)
        self.user.image('base', 'Clone', 'web', False)
        self.user.manager('MarkImageReadOnly', 'web', True)
        self.assertTrue(subvolume_read_only(self.path('web')))
        self.user.image('web', 'MarkReadOnly', False)
        self.assertFalse(subvolume_read_only(self.path('web')))
        self.user.manager('RenameImage', 'web', 'site')
        self.user.image('site', 'Rename', 'site2')
        self.assertEqual(store_names(self.store), ['base', 'site2'])
        self.user.image('site2', 'Remove')
        self.user.manager('RemoveImage', 'base')
        self.assertEqual(store_names(self.store), [])

    def test_root_is_not_asked(self):
        # a rule that refuses everyone, root included, must not matter for root
        self.set_rules('''polkit.addRule(function(action, subject) {
    if (action.id.indexOf("io.stamp.Stamp1.") == 0)
        return polkit.Result.NO;
});
''')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertSnapshotOf(self.path('web'), self.base)
        # again on the same connection, whose uid the daemon now knows
        self.root.manager('CloneImage', 'base', 'web2', False)
        self.assertSnapshotOf(self.path('web2'), self.base)

    def test_every_call_of_one_connection_is_asked(self):
        """The daemon remembers a connection's uid, never polkit's answer:
        one connection is refused, allowed and refused again as the rules
        change between its calls."""
        script = os.path.join(self.dir, 'one-connection.py')
        with open(script, 'w') as f:
            f.write(ONE_CONNECTION_SCRIPT)
        os.chmod(self.dir, 0o755)
        os.chmod(script, 0o644)
        p = subprocess.Popen(self.env.as_user(USER, [stamptest.PYTHON, script]), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))

        def clone(name):
            p.stdin.write(name + '\n')
            p.stdin.flush()
            return json.loads(p.stdout.readline())

        self.assertEqual(clone('a'), {'error': INTERACTIVE_REQUIRED})  # the policy's default
        self.allow(USER)
        self.assertEqual(clone('b'), {'ok': 'b'})
        self.allow(USER, result='NO')
        self.assertEqual(clone('c'), {'error': ACCESS_DENIED})
        self.assertEqual(store_names(self.store), ['b', 'base'])

    def test_shipped_group_example(self):
        with open(os.path.join(stamptest.SRCDIR, 'polkit', '50-stamp-group.rules.example')) as f:
            self.set_rules(f.read())
        self.user2.manager('CloneImage', 'base', 'web', False)  # USER2 is in group "stamp"
        self.assertSnapshotOf(self.path('web'), self.base)
        before = store_state(self.store)
        self.assertDBusError(INTERACTIVE_REQUIRED, self.user.manager, 'CloneImage', 'base', 'web2',
                             False)
        self.assertUnchanged(self.store, before)


def details_rule(verb, image, new_name=None):
    """YES for USER only when the call's polkit details are exactly these."""
    cond = 'action.lookup("verb") == "%s" && action.lookup("image") == "%s"' % (verb, image)
    if new_name is None:
        cond += ' && action.lookup("new_name") === undefined'
    else:
        cond += ' && action.lookup("new_name") == "%s"' % new_name
    return '''polkit.addRule(function(action, subject) {
    if (action.id == "io.stamp.Stamp1.manage-images" && subject.user == "%s")
        return (%s) ? polkit.Result.YES : polkit.Result.NO;
});
''' % (USER, cond)


class DetailsTest(AuthzTestCase):
    """Rules can decide on what is done to which image."""

    def test_clone_details(self):
        make_image(self.store, 'other')
        self.set_rules(details_rule('clone', 'base', 'web'))
        for src, dst in (('base', 'web2'), ('other', 'web')):
            before = store_state(self.store)
            self.assertDBusError(ACCESS_DENIED, self.user.manager, 'CloneImage', src, dst, False)
            self.assertUnchanged(self.store, before)
        self.user.manager('CloneImage', 'base', 'web', False)
        self.assertSnapshotOf(self.path('web'), self.base)

    def test_image_object_clone_details(self):
        self.set_rules(details_rule('clone', 'base', 'web'))
        self.user.image('base', 'Clone', 'web', True)
        self.assertTrue(subvolume_read_only(self.path('web')))

    def test_rename_details(self):
        self.set_rules(details_rule('rename', 'base', 'renamed'))
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'RenameImage', 'base', 'other')
        self.user.manager('RenameImage', 'base', 'renamed')
        self.assertTrue(os.path.isdir(self.path('renamed')))

    def test_remove_details(self):
        make_image(self.store, 'victim')
        self.set_rules(details_rule('remove', 'victim'))
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'RemoveImage', 'base')
        self.user.image('victim', 'Remove')
        self.assertFalse(os.path.lexists(self.path('victim')))
        self.assertTrue(os.path.isdir(self.base))

    def test_read_only_details(self):
        self.set_rules(details_rule('mark-read-only', 'base'))
        self.user.manager('MarkImageReadOnly', 'base', True)
        self.assertTrue(subvolume_read_only(self.base))
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'MarkImageReadOnly', 'base', False)
        self.set_rules(details_rule('mark-writable', 'base'))
        self.user.manager('MarkImageReadOnly', 'base', False)
        self.assertFalse(subvolume_read_only(self.base))


class PromptTest(AuthzTestCase):
    """A person at a polkit password prompt (pkttyagent in a terminal)."""

    def setUp(self):
        super().setUp()
        self.set_rules(rule_for(USER, 'manage-images', 'AUTH_ADMIN')
                       + rule_for(USER2, 'manage-images', 'YES'))

    def test_right_password(self):
        pane, result = self.call_in_terminal(USER, 'CloneImage', 'base', 'web', False)
        pane.wait_for_password_prompt()
        pane.type_line(ADMIN_PASSWORD)
        self.assertEqual(pane.wait_exit(), 0)
        self.assertIsNone(result())
        self.assertSnapshotOf(self.path('web'), self.base)

    def test_wrong_password(self):
        before = store_state(self.store)
        pane, result = self.call_in_terminal(USER, 'CloneImage', 'base', 'web', False)
        pane.wait_for_password_prompt()
        pane.type_line('wrong-password')
        self.assertEqual(pane.wait_exit(), 0)
        self.assertDBusError(ACCESS_DENIED, result)
        self.assertUnchanged(self.store, before)

    def test_waiting_prompt_stalls_no_one(self):
        pane, result = self.call_in_terminal(USER, 'CloneImage', 'base', 'web', False)
        pane.wait_for_password_prompt()
        # USER's call is now parked in the daemon, waiting for polkit, which
        # waits for a person. Everyone else is served meanwhile:
        self.assertIn('base', self.root.list_images())
        self.assertEqual(self.user2.image_props('base')['Name'], 'base')
        self.user2.manager('CloneImage', 'base', 'other', False)  # a second polkit check
        self.assertSnapshotOf(self.path('other'), self.base)
        self.root.manager('MarkImageReadOnly', 'other', True)
        self.assertFalse(os.path.lexists(self.path('web')))
        self.assertFalse(pane.exited())
        # ...and the parked call resumes when the person answers.
        pane.type_line(ADMIN_PASSWORD)
        self.assertEqual(pane.wait_exit(), 0)
        self.assertIsNone(result())
        self.assertSnapshotOf(self.path('web'), self.base)

    def test_caller_leaving_at_prompt(self):
        pane, _ = self.call_in_terminal(USER, 'CloneImage', 'base', 'web', False)
        pane.wait_for_password_prompt()
        pane.kill()
        stamptest.wait_for(lambda: not any(
            p for p in os.listdir('/proc') if p.isdigit() and _is_callas(p)),
            'the caller to be gone')
        self.assertIn('base', self.root.list_images())
        self.user2.manager('CloneImage', 'base', 'other', False)
        self.assertEqual(store_names(self.store), ['base', 'other'])
        self.assertNotIn('web', stamptest.out(['btrfs', 'subvolume', 'list', self.store]))

    def test_sigterm_with_a_parked_call(self):
        pane, result = self.call_in_terminal(USER, 'CloneImage', 'base', 'web', False)
        pane.wait_for_password_prompt()
        self.stop_daemon(self.daemon)  # exits 0
        self.assertEqual(pane.wait_exit(), 0)
        with self.assertRaises(stamptest.DBusError):
            result()
        self.assertFalse(os.path.lexists(self.path('web')))


class SaturationTest(AuthzTestCase):
    """One user sits at the cap on pending checks, from many connections,
    with an agent that never answers (tests/never-answers.py); everyone else
    is still served."""

    # 144 checks: more than dbus-daemon lets one connection wait for (128)
    CONNECTIONS, CALLS, CAP = 9, 16, 16

    def test_one_user_at_the_cap_blocks_no_one_else(self):
        self.set_rules(rule_for(USER, 'manage-images', 'AUTH_ADMIN')
                       + rule_for(USER2, 'manage-images', 'YES'))
        script = os.path.join(stamptest.TESTS_DIR, 'never-answers.py')
        p = subprocess.Popen(self.env.as_user(USER, [stamptest.PYTHON, script, str(self.CONNECTIONS),
                                                     str(self.CALLS)]),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait()))
        events = []

        def read_events():
            for line in p.stdout:
                events.append(json.loads(line))
        threading.Thread(target=read_events, daemon=True).start()

        def replies():
            return [e for e in events if e['event'] == 'reply']

        total = self.CONNECTIONS * self.CALLS
        stamptest.wait_for(lambda: len(replies()) >= total - self.CAP or p.poll() is not None,
                           "all but %d of the user's %d calls to be refused" % (self.CAP, total))
        if p.poll() is not None:
            self.fail('never-answers.py ended: %s' % p.stderr.read())
        stamptest.wait_for(lambda: any(e['event'] == 'prompt' for e in events) or p.poll() is not None,
                           'polkit to ask the agent')
        for e in replies():
            self.assertEqual(e.get('error'), LIMITS_EXCEEDED, e)
        self.assertTrue(any('per user' in e['message'] for e in replies()), replies()[:3])

        # Another user's check still goes through polkit and gets its answer...
        self.user2.manager('CloneImage', 'base', 'other', False)
        self.assertSnapshotOf(self.path('other'), self.base)
        # ...root is served...
        self.root.manager('CloneImage', 'base', 'rooted', False)
        # ...and the user's next call, from yet another connection, hears which cap it hit.
        e = self.assertDBusError(LIMITS_EXCEEDED, self.user.manager, 'CloneImage', 'base', 'late',
                                 False, interactive=True)
        self.assertIn('per user', e.message)
        self.assertIn(str(self.CAP), e.message)
        self.assertEqual(len(replies()), total - self.CAP, 'a parked call was answered')
        self.assertEqual(store_names(self.store), ['base', 'other', 'rooted'])

        # The user gives up: the parked calls go with their connections, and the next is asked again.
        p.kill()
        p.wait()
        self.allow(USER)
        stamptest.wait_for(lambda: self.clone_as_user('again'), "the user's parked calls to be dropped")
        self.assertEqual(store_names(self.store), ['again', 'base', 'other', 'rooted'])

    def clone_as_user(self, name):
        try:
            self.user.manager('CloneImage', 'base', name, False)
        except stamptest.DBusError as e:
            if e.name != LIMITS_EXCEEDED:
                raise
            return False
        return True


class PolkitBudgetTest(AuthzTestCase):
    """Many users at their cap at once: stampd keeps its checks at polkit
    below what the bus lets its one connection to polkitd wait for, and
    says so itself, instead of the bus failing checks for whoever comes."""

    USERS, CALLS = 9, 16  # 144 checks if stampd sent them all: more than 128

    def test_checks_at_polkit_stay_below_the_bus_limit(self):
        script = os.path.join(stamptest.TESTS_DIR, 'never-answers.py')
        procs, events = [], []
        for user in self.env.add_users('stamp-crowd', self.USERS):
            p = subprocess.Popen(self.env.as_user(user, [stamptest.PYTHON, script, '1', str(self.CALLS)]),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.addCleanup(lambda p=p: (p.poll() is None and p.kill(), p.wait()))
            procs.append(p)

            def read_events(p=p):
                for line in p.stdout:
                    events.append(json.loads(line))
            threading.Thread(target=read_events, daemon=True).start()

        def replies():
            return [e for e in events if e['event'] == 'reply']

        total, budget = self.USERS * self.CALLS, 96
        stamptest.wait_for(lambda: len(replies()) >= total - budget
                           or any(p.poll() is not None for p in procs),
                           '%d of the %d calls to be refused' % (total - budget, total))
        for p in procs:
            if p.poll() is not None:
                self.fail('never-answers.py ended: %s' % p.stderr.read())
        stamptest.time.sleep(1)  # a check the bus failed would come back now
        for e in replies():
            self.assertEqual(e.get('error'), LIMITS_EXCEEDED, e)
            self.assertIn('at most 96 in all', e['message'])
        self.assertEqual(len(replies()), total - budget)
        # root is still served, and the store is as it was
        self.root.manager('CloneImage', 'base', 'rooted', False)
        self.assertEqual(store_names(self.store), ['base', 'rooted'])


class PolkitGoneTest(stamptest.TestCase):
    """polkit out of reach is never a yes: an unprivileged caller's mutating
    calls are refused with a named error and change nothing, root is still
    served, and the user is served again once polkit is back; whether polkitd
    goes away while stampd runs or is missing when stampd first needs it."""

    def setUp(self):
        super().setUp()
        self.allow(USER)  # had polkit answered, the user would be allowed

    def assertUserRefused(self, store):
        before = store_state(store)
        for label, call in MUTATIONS:
            with self.subTest(call=label):
                e = self.assertDBusError(ACCESS_DENIED, call, self.user)
                self.assertIn('Cannot check authorization', e.message)
                self.assertUnchanged(store, before, label)

    def assertRootAndThenUserServed(self, store):
        self.root.manager('CloneImage', 'base', 'by-root', False)
        self.assertSnapshotOf(os.path.join(store, 'by-root'), os.path.join(store, 'base'))
        self.env.start_polkitd()
        self.user.manager('CloneImage', 'base', 'by-user', False)
        self.assertSnapshotOf(os.path.join(store, 'by-user'), os.path.join(store, 'base'))

    def test_polkitd_stops_while_stampd_serves(self):
        store = self.start_daemon().store
        make_image(store, 'base')
        self.user.manager('CloneImage', 'base', 'first', False)  # polkit answered once
        self.stop_polkitd()
        self.assertUserRefused(store)
        self.assertRootAndThenUserServed(store)

    def test_polkitd_missing_when_stampd_starts(self):
        self.stop_polkitd()
        store = self.start_daemon().store
        make_image(store, 'base')
        self.assertUserRefused(store)
        self.assertRootAndThenUserServed(store)


def _is_callas(pid):
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as f:
            return stamptest.CALLAS.encode() in f.read()
    except OSError:
        return False


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
