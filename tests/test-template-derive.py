#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Derived templates (CreateTemplate option "from") and the package cache in
the store, offline: refusals, a derived template that only sets the root
password, cancel and kill -9 while apt inside a derived build waits for a
mirror that never answers, and CleanCache. Building the parent takes one
offline debootstrap (see templatetest.py). The builds that install packages
over the network are in test-template-derive-online.py (slow suite)."""

import os
import signal
import socket
import threading

import stamptest
from stamptest import (ACCESS_DENIED, INTERACTIVE_REQUIRED, STAMP_ERROR, STAMPCTL, USER, GLib,
                       make_image, rule_for, run, store_state, subvolume_read_only)
from templatetest import (INVALID_ARGS, SUITE, TemplateTestCase, descendants, host_arch,
                          processes_mentioning)

NO_SUCH_IMAGE = STAMP_ERROR + 'NoSuchImage'
# openssl passwd -6 -salt stampsalt secret
PASSWORD_HASH = ('$6$stampsalt$/./4UV3iV/GnFowdoBkUWU9izC6C.1Bezic0KkZqiYUOGd7R0l6wP4oM5rkXk8XJ3'
                 '.qxtBXvltkAijLjG1rJM0')


class SilentMirror:
    """A mirror on the loopback that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()

    @property
    def url(self):
        return 'http://127.0.0.1:%d/debian' % self.port


def fake_template(store, name):
    """A read-only subvolume with the recipe of a template, made by hand: enough for the checks
    made before a build starts."""
    path = make_image(store, name)
    uuid = stamptest.subvolume_show(path)['UUID'].replace('-', '')
    recipe = "{'suite': <'%s'>, 'arch': <'%s'>, 'variant': <'minbase'>, 'uuid': <'%s'>}" % (
        SUITE, host_arch(), uuid)
    os.setxattr(path, 'user.stamp.recipe', recipe.encode())
    run(['btrfs', 'property', 'set', '-ts', path, 'ro', 'true'])
    return path


def shadow_root(tree):
    with open(os.path.join(tree, 'etc/shadow')) as f:
        for line in f:
            if line.startswith('root:'):
                return line.split(':')[1]
    return None


class RefusalTest(TemplateTestCase):

    def test_missing_from_is_no_such_image(self):
        before = store_state(self.store)
        self.assertDBusError(NO_SUCH_IMAGE, self.create, 'dev', suite='', **{'from': 'nothere'})
        self.assertDBusError(NO_SUCH_IMAGE, self.create, 'dev', suite='', include=['hello'],
                             **{'from': 'nothere'})
        self.jobs.spin()
        self.assertEqual(self.jobs.new, [])
        self.assertUnchanged(self.store, before)

    def test_from_must_be_a_template(self):
        make_image(self.store, 'plain')
        before = store_state(self.store)
        e = self.assertDBusError(INVALID_ARGS, self.create, 'dev', suite='', **{'from': 'plain'})
        self.assertIn('plain is not a template', e.message)
        for bad in ('../x', '.hidden', 'a/b'):
            self.assertDBusError(STAMP_ERROR + 'InvalidName', self.create, 'dev', suite='',
                                 **{'from': bad})
        self.assertUnchanged(self.store, before)

    def test_options_the_parent_fixed_are_refused(self):
        make_image(self.store, 'plain')
        before = store_state(self.store)
        for opts in ({'variant': 'buildd'}, {'arch': 'amd64'}, {'bootable': True},
                     {'mirror': 'http://user:pw@127.0.0.1/debian'}, {'include': ['Bad_Name']}):
            with self.subTest(opts=opts):
                e = self.assertDBusError(INVALID_ARGS, self.create, 'dev', suite='', **opts,
                                         **{'from': 'plain'})
                self.assertNotIn('pw', e.message)
        self.assertUnchanged(self.store, before)

    def test_unauthorized_user_refused(self):
        fake_template(self.store, 'tpl')
        self.assertTrue(self.root.image_props('tpl')['Template'])
        before = store_state(self.store)
        for rules, error in (('', INTERACTIVE_REQUIRED),
                             (rule_for(USER, 'create-template', 'NO'), ACCESS_DENIED),
                             (rule_for(USER, 'manage-images', 'YES'), INTERACTIVE_REQUIRED)):
            with self.subTest(rules=rules):
                self.set_rules(rules)
                self.assertDBusError(error, self.user.manager, 'CreateTemplate', 'mine', '',
                                     {'from': GLib.Variant('s', 'tpl'),
                                      'include': GLib.Variant('as', ['hello'])})
        self.jobs.spin()
        self.assertEqual(self.jobs.new, [])
        # the parent is checked before polkit is asked: a missing one is NoSuchImage for anyone
        self.assertDBusError(NO_SUCH_IMAGE, self.user.manager, 'CreateTemplate', 'mine', '',
                             {'from': GLib.Variant('s', 'nothere')})
        self.assertUnchanged(self.store, before)


    def test_polkit_sees_the_parent(self):
        """A rule can tell a derived build by its parent (the detail "from")."""
        fake_template(self.store, 'tpl')
        before = store_state(self.store)
        self.set_rules('''polkit.addRule(function(action, subject) {
    if (action.id == "io.stamp.Stamp1.create-template" && action.lookup("from") == "tpl")
        return polkit.Result.NO;
});''')
        self.assertDBusError(ACCESS_DENIED, self.user.manager, 'CreateTemplate', 'mine', '',
                             {'from': GLib.Variant('s', 'tpl'),
                              'include': GLib.Variant('as', ['hello'])})
        self.assertUnchanged(self.store, before)

class CleanCacheTest(TemplateTestCase):

    def cache(self):
        return os.path.join(self.store, '.stamp', 'cache')

    def test_clean_cache(self):
        # what a build leaves: a .deb in a SUITE-ARCH directory, and the usage noted
        d = os.path.join(self.cache(), 'debootstrap', '%s-%s' % (SUITE, host_arch()))
        os.makedirs(d)
        with open(os.path.join(d, 'x_1_all.deb'), 'wb') as f:
            f.write(b'\0' * 65536)
        with open(os.path.join(self.cache(), 'usage'), 'w') as f:
            f.write('65536\n')
        self.assertEqual(self.root.get_property('/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager',
                                                'CacheUsage'), 65536)
        # a user without manage-images cannot
        for rules, error in (('', INTERACTIVE_REQUIRED),
                             (rule_for(USER, 'manage-images', 'NO'), ACCESS_DENIED)):
            self.set_rules(rules)
            self.assertDBusError(error, self.user.manager, 'CleanCache', {})
            self.assertEqual(os.listdir(d), ['x_1_all.deb'])
        # root can, and stampctl says how much went
        p = run([STAMPCTL, 'clean', '--cache'])
        self.assertIn('Freed', p.stdout)
        self.assertEqual(os.listdir(d), [])
        self.assertEqual(self.root.get_property('/io/stamp/Stamp1', 'io.stamp.Stamp1.Manager',
                                                'CacheUsage'), 0)
        self.assertIn('Package cache: 0B', run([STAMPCTL, 'status']).stdout)

    def test_clean_cache_refuses_options(self):
        # CleanCache takes no options yet: one given is refused, not ignored, and nothing is cleaned
        d = os.path.join(self.cache(), 'debootstrap', '%s-%s' % (SUITE, host_arch()))
        os.makedirs(d)
        with open(os.path.join(d, 'x_1_all.deb'), 'wb') as f:
            f.write(b'x')
        for options in ({'older_than': GLib.Variant('t', 0)}, {'': GLib.Variant('b', True)}):
            e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'CleanCache', options)
            self.assertEqual(e.message, 'CleanCache takes no options yet')
            self.assertEqual(os.listdir(d), ['x_1_all.deb'])
        # refused before polkit is asked: a caller without manage-images hears the same
        self.set_rules(rule_for(USER, 'manage-images', 'NO'))
        self.assertDBusError(INVALID_ARGS, self.user.manager, 'CleanCache', {'older_than': GLib.Variant('t', 0)})
        self.assertEqual(os.listdir(d), ['x_1_all.deb'])

    def test_clean_keeps_what_a_build_holds(self):
        import fcntl
        d = os.path.join(self.cache(), 'apt', '%s-%s' % (SUITE, host_arch()))
        os.makedirs(os.path.join(d, 'archives'))
        with open(os.path.join(d, 'archives', 'y_1_all.deb'), 'wb') as f:
            f.write(b'y')
        fd = os.open(d, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.root.manager('CleanCache', {})
            self.assertEqual(os.listdir(os.path.join(d, 'archives')), ['y_1_all.deb'])
        finally:
            os.close(fd)
        self.root.manager('CleanCache', {})
        self.assertFalse(os.path.exists(os.path.join(d, 'archives', 'y_1_all.deb')))


class DerivedTest(TemplateTestCase):

    def parent(self, name='base'):
        job_id, job = self.create_offline(name, bootable=True)
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])

    def test_derived_with_root_password_and_tree(self):
        self.parent()
        job_id, job = self.create('dev', suite='', root_password_hashed=PASSWORD_HASH,
                                  **{'from': 'base'})
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        progress = self.jobs.progress[job]
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(progress[-1], 1.0)
        tree = self.path('dev')
        self.assertTrue(stamptest.is_subvolume(tree))
        self.assertTrue(subvolume_read_only(tree))
        self.assertEqual(shadow_root(tree), PASSWORD_HASH)
        self.assertNotEqual(shadow_root(self.path('base')), PASSWORD_HASH)
        img = self.root.image_props('dev')
        self.assertTrue(img['Template'] and img['ReadOnly'])
        self.assertEqual(img['Origin'], 'base')
        recipe = img['Recipe']
        base = self.root.image_props('base')['Recipe']
        self.assertEqual(recipe['from'], 'base')
        self.assertEqual(recipe['added'], [])
        self.assertEqual((recipe['suite'], recipe['arch'], recipe['variant']),
                         (base['suite'], base['arch'], base['variant']))
        self.assertNotEqual(recipe['uuid'], base['uuid'])
        self.assertEqual(self.temporaries(), [])
        # a template derived from a derived one; the tree shows them under their parents
        job_id, job = self.create('dev2', suite=SUITE, **{'from': 'dev'})
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        self.assertEqual(self.root.image_props('dev2')['Recipe']['from'], 'dev')
        out = run([STAMPCTL, 'list', '--tree']).stdout
        lines = [l for l in out.splitlines() if any(n in l for n in ('base', 'dev'))]
        names = [l.split()[0].strip('├└─│ ') or l.split()[1] for l in lines]
        self.assertEqual([n for n in names if n], ['base', 'dev', 'dev2'], out)
        self.assertLess(out.index('base'), out.index('dev'))
        # another suite than the parent's
        e = self.assertDBusError(INVALID_ARGS, self.create, 'dev3', suite='trixie', **{'from': 'base'})
        self.assertIn('not that of template base', e.message)

    def wait_for_apt(self, mirror, job):
        stamptest.wait_for(lambda: mirror.conns, 'apt to reach the mirror', 120)
        self.assertTrue(any('apt' in c for _, c in descendants(self.daemon.pid)),
                        descendants(self.daemon.pid))
        self.assertEqual(len(self.temporaries()), 1)

    def test_cancel_and_kill_9_during_a_derived_build(self):
        self.parent()
        before = store_state(self.store)
        mirror = SilentMirror()
        self.addCleanup(mirror.close)

        job_id, job = self.create('gone', suite='', include=['hello'], mirror=mirror.url,
                                  **{'from': 'base'})
        self.wait_for_apt(mirror, job)
        self.root.manager('CancelJob', job_id)
        self.assertEqual(self.jobs.wait(job_id, stamptest.CANCEL_TIMEOUT), 'canceled')
        self.assertNothingLeft('gone')
        self.assertTrue(subvolume_read_only(self.path('base')))

        mirror.conns.clear()
        job_id, job = self.create('crash', suite='', include=['hello'], mirror=mirror.url,
                                  **{'from': 'base'})
        self.wait_for_apt(mirror, job)
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.proc.wait()
        stamptest.wait_for(lambda: not processes_mentioning(self.store),
                           'the job to die with the daemon', 10)
        self.daemon = self.start_daemon(store=self.store)
        self.assertNothingLeft('crash')
        self.assertEqual(sorted(self.root.list_images()), ['base'])
        # the parent is untouched, and nothing but the cache's directories was added
        after = store_state(self.store)
        for state in (before, after):
            state.pop('.stamp', None)  # the package cache's directories were made there
            state.pop('.', None)
        self.assertEqual(after, before)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
