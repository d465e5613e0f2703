#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A clone of a template gets an identity of its own (machine-id emptied,
hostname set, ssh host keys made anew) unless asked to keep it; a clone of a
writable image keeps it; what the template holds where these files should be
(links out of the image, FIFOs, directories) never makes the daemon write
outside the new clone or hang."""

import os
import stat
import subprocess

import stamptest
from stamptest import (STAMPCTL, GLib, make_image, run, store_state,
                       subvolume_read_only)

INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
KEY_TYPES = ('ed25519', 'ecdsa')
MACHINE_ID = '0123456789abcdef0123456789abcdef\n'


def read(path, mode='r'):
    with open(path, mode) as f:
        return f.read()


def write(path, data):
    with open(path, 'w') as f:
        f.write(data)


class IdentityTestCase(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store

    def path(self, *parts):
        return os.path.join(self.store, *parts)

    def make_template(self, name='base', read_only=True, keys=True, kind='subvolume', prepare=None):
        """An image with a machine-id, a hostname and ssh host keys, as a
        Debian system with openssh-server has them."""
        root = make_image(self.store, name, kind=kind)
        write(os.path.join(root, 'etc/machine-id'), MACHINE_ID)
        if keys:
            os.makedirs(os.path.join(root, 'etc/ssh'))
            write(os.path.join(root, 'etc/ssh/sshd_config'), '# kept\n')
            for t in KEY_TYPES:
                run(['ssh-keygen', '-q', '-t', t, '-N', '', '-C', 'root@' + name,
                     '-f', os.path.join(root, 'etc/ssh/ssh_host_%s_key' % t)])
        if prepare:
            prepare(root)
        if read_only:
            if kind == 'subvolume':
                run(['btrfs', 'property', 'set', '-ts', root, 'ro', 'true'])
            else:
                run(['chattr', '+i', root])
        return root

    def identity(self, name):
        """machine-id, hostname and the ssh host key files of an image."""
        root = self.path(name)
        ssh = os.path.join(root, 'etc/ssh')
        keys = {}
        if os.path.isdir(ssh):
            for f in sorted(os.listdir(ssh)):
                if f.startswith('ssh_host_'):
                    st = os.lstat(os.path.join(ssh, f))
                    keys[f] = (read(os.path.join(ssh, f)), stat.S_IMODE(st.st_mode), st.st_uid)
        hostname = os.path.join(root, 'etc/hostname')
        return {
            'machine-id': read(os.path.join(root, 'etc/machine-id')),
            'hostname': read(hostname) if os.path.isfile(hostname) else None,
            'keys': keys,
        }

    def assertFresh(self, name, template):
        new, old = self.identity(name), self.identity(template)
        self.assertEqual(new['machine-id'], '', 'machine-id emptied for systemd to make anew')
        self.assertEqual(new['hostname'], name + '\n')
        self.assertEqual(sorted(new['keys']), sorted(old['keys']), 'the same key types as the template')
        for f, (data, mode, uid) in new['keys'].items():
            self.assertNotEqual(data, old['keys'][f][0], f + ' made anew')
            self.assertEqual(mode, 0o644 if f.endswith('.pub') else 0o600, f)
            self.assertEqual(uid, 0, f)
            if f.endswith('.pub'):
                self.assertTrue(data.rstrip().endswith('root@' + name), data)
                # A real key: ssh-keygen reads it, and the private half matches the public one.
                priv = self.path(name, 'etc/ssh', f[:-len('.pub')])
                derived = run(['ssh-keygen', '-y', '-f', priv]).stdout
                self.assertEqual(derived.split()[:2], data.split()[:2])
        self.assertEqual(read(self.path(name, 'etc/ssh/sshd_config')), '# kept\n')


class FreshIdentityTest(IdentityTestCase):

    def test_clone_of_template_gets_fresh_identity(self):
        self.make_template()
        before = self.identity('base')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertFresh('web', 'base')
        self.assertEqual(self.identity('base'), before, 'the template is untouched')
        self.assertEqual(read(self.path('web/srv/marker')), 'base\n', 'the rest is the template')

    def test_two_clones_differ(self):
        self.make_template()
        self.root.manager('CloneImage', 'base', 'one', False)
        self.root.manager('CloneImage', 'base', 'two', False)
        one, two = self.identity('one'), self.identity('two')
        for f in one['keys']:
            self.assertNotEqual(one['keys'][f][0], two['keys'][f][0], f)
        self.assertNotEqual(one['hostname'], two['hostname'])

    def test_image_clone_method_too(self):
        self.make_template()
        self.root.image('base', 'Clone', 'web', False)
        self.assertFresh('web', 'base')

    def test_read_only_clone_of_template(self):
        self.make_template()
        self.root.manager('CloneImageEx', 'base', 'frozen', {'read_only': GLib.Variant('b', True)})
        self.assertTrue(subvolume_read_only(self.path('frozen')))
        self.assertFresh('frozen', 'base')

    def test_directory_template_copied(self):
        self.make_template(kind='directory')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertFresh('web', 'base')

    def test_template_without_keys_or_hostname(self):
        def bare(root):
            os.unlink(os.path.join(root, 'etc/hostname'))
        self.make_template(keys=False, prepare=bare)
        self.root.manager('CloneImage', 'base', 'web', False)
        ident = self.identity('web')
        self.assertEqual(ident['machine-id'], '')
        self.assertEqual(ident['hostname'], 'web\n')
        self.assertEqual(ident['keys'], {})
        self.assertFalse(os.path.exists(self.path('web/etc/ssh')))

    def test_template_without_etc(self):
        make_image(self.store, 'bare')
        subprocess.run(['rm', '-rf', self.path('bare/etc')], check=True)
        run(['btrfs', 'property', 'set', '-ts', self.path('bare'), 'ro', 'true'])
        self.root.manager('CloneImage', 'bare', 'web', False)
        self.assertFalse(os.path.exists(self.path('web/etc')), 'no /etc is made where there was none')


class KeepIdentityTest(IdentityTestCase):

    def test_keep_identity_option(self):
        self.make_template()
        self.root.manager('CloneImageEx', 'base', 'web', {'keep_identity': GLib.Variant('b', True)})
        self.assertEqual(self.identity('web'), self.identity('base'))

    def test_clone_of_writable_image_keeps_identity(self):
        self.make_template(read_only=False)
        self.root.manager('CloneImage', 'base', 'copy', False)
        self.assertEqual(self.identity('copy'), self.identity('base'))

    def test_stampctl(self):
        self.make_template()
        run([STAMPCTL, 'clone', 'base', 'kept', '--keep-identity'])
        self.assertEqual(self.identity('kept'), self.identity('base'))
        run([STAMPCTL, 'clone', 'base', 'fresh'])
        self.assertFresh('fresh', 'base')

    def test_bad_options_refused(self):
        self.make_template()
        before = store_state(self.store)
        for options in ({'keep_identity': GLib.Variant('s', 'yes')},
                        {'keep_identiy': GLib.Variant('b', True)}):
            e = self.assertDBusError(INVALID_ARGS, self.root.manager, 'CloneImageEx', 'base', 'web', options)
            self.assertIn('keep_identi', e.message, 'the message names the option')
        self.assertUnchanged(self.store, before)


class HostileTemplateTest(IdentityTestCase):
    """What a template's own contents put where the identity files go
    (root inside a machine, or an imported archive, can put anything there)."""

    def setUp(self):
        super().setUp()
        self.outside = os.path.join(self.dir, 'outside')
        os.makedirs(os.path.join(self.outside, 'ssh'))
        write(os.path.join(self.outside, 'hostname'), 'host\n')
        write(os.path.join(self.outside, 'machine-id'), MACHINE_ID)
        write(os.path.join(self.outside, 'ssh/ssh_host_ed25519_key'), 'not yours\n')
        self.outside_before = self.snapshot(self.outside)

    def snapshot(self, top):
        state = {}
        for d, dirs, files in os.walk(top):
            for f in files:
                p = os.path.join(d, f)
                state[p] = (read(p), os.lstat(p).st_ino)
        return state

    def assertOutsideUntouched(self):
        self.assertEqual(self.snapshot(self.outside), self.outside_before)

    def test_links_out_of_the_image(self):
        def links(root):
            etc = os.path.join(root, 'etc')
            os.unlink(os.path.join(etc, 'hostname'))
            os.unlink(os.path.join(etc, 'machine-id'))
            os.symlink(os.path.join(self.outside, 'hostname'), os.path.join(etc, 'hostname'))
            os.symlink(os.path.join(self.outside, 'machine-id'), os.path.join(etc, 'machine-id'))
        self.make_template(keys=False, prepare=links)
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertOutsideUntouched()
        hostname = self.path('web/etc/hostname')
        self.assertFalse(os.path.islink(hostname), 'the link is replaced, not followed')
        self.assertEqual(read(hostname), 'web\n')
        self.assertTrue(os.path.islink(self.path('web/etc/machine-id')), 'a linked machine-id is left alone')

    def test_ssh_dir_linked_out(self):
        def link_ssh(root):
            os.symlink(os.path.join(self.outside, 'ssh'), os.path.join(root, 'etc/ssh'))
        self.make_template(keys=False, prepare=link_ssh)
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertOutsideUntouched()

    def test_etc_linked_out(self):
        def link_etc(root):
            subprocess.run(['rm', '-rf', os.path.join(root, 'etc')], check=True)
            os.symlink(self.outside, os.path.join(root, 'etc'))
        self.make_template(keys=False, prepare=link_etc)
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertOutsideUntouched()

    def test_fifo_and_directory_in_the_way(self):
        def odd(root):
            etc = os.path.join(root, 'etc')
            os.unlink(os.path.join(etc, 'machine-id'))
            os.mkfifo(os.path.join(etc, 'machine-id'))
            os.unlink(os.path.join(etc, 'hostname'))
            os.mkdir(os.path.join(etc, 'hostname'))
        self.make_template(keys=False, prepare=odd)
        # A FIFO opened for writing would block the clone for ever: the call must simply end.
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertTrue(stat.S_ISFIFO(os.lstat(self.path('web/etc/machine-id')).st_mode))
        self.assertTrue(os.path.isdir(self.path('web/etc/hostname')))
        self.assertEqual(sorted(self.root.list_images()), ['base', 'web'])

    def test_device_node_not_opened(self):
        def device(root):
            etc = os.path.join(root, 'etc')
            os.unlink(os.path.join(etc, 'machine-id'))
            os.mknod(os.path.join(etc, 'machine-id'), 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
        self.make_template(keys=False, prepare=device)
        self.root.manager('CloneImage', 'base', 'web', False)
        st = os.lstat(self.path('web/etc/machine-id'))
        self.assertTrue(stat.S_ISCHR(st.st_mode))


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
