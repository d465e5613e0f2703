#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Copies into and out of running machines and stopped images: CopyToMachine,
CopyFromMachine, CopyToImage, CopyFromImage and `stampctl cp`. A file and a
tree keep owners, modes and xattrs both ways; paths resolve inside the
machine's root (a symlink to /etc/shadow is the machine's shadow, never the
host's); a machine in a user namespace sees owners as they are inside;
refusals are named and leave nothing behind."""

import importlib
import io
import json
import os
import stat
import subprocess
import tarfile

import stamptest
from stamptest import (ACCESS_DENIED, PYTHON, STAMP_ERROR, STAMPCTL, USER, USER2, GLib, JobWatch,
                       fd_list, rule_for, run, store_state)

machines = importlib.import_module('test-machines')

INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
INTERACTIVE_REQUIRED = stamptest.INTERACTIVE_REQUIRED
REFUSED = (ACCESS_DENIED, INTERACTIVE_REQUIRED)
XATTR = 'user.stamp-copy'


def make_host_tree(top, uid=1234, gid=2345):
    """A tree with owners, modes, an xattr, a symlink, an empty dir and binary data."""
    os.makedirs(os.path.join(top, 'sub/empty'))
    with open(os.path.join(top, 'sub/data.bin'), 'wb') as f:
        f.write(bytes(range(256)) * 300)
    with open(os.path.join(top, 'conf'), 'w') as f:
        f.write('key=value\n')
    os.symlink('sub/data.bin', os.path.join(top, 'link'))
    os.chown(os.path.join(top, 'conf'), uid, gid)
    os.chmod(os.path.join(top, 'conf'), 0o640)
    os.chmod(os.path.join(top, 'sub'), 0o750)
    os.setxattr(os.path.join(top, 'conf'), XATTR, b'kept')
    os.lchown(os.path.join(top, 'link'), uid, gid)


def listing(top):
    """tree_listing plus each entry's xattr, times left out."""
    result = {}
    for rel, entry in stamptest.tree_listing(top).items():
        p = os.path.join(top, rel)
        try:
            x = os.getxattr(p, XATTR, follow_symlinks=False)
        except OSError:
            x = None
        result[rel] = entry + (x,)
    return result


def tar_stream(entries, pax_headers=None):
    """A tar stream of (name, type, data, linkname) entries, as bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
        for name, kind, data, link in entries:
            info = tarfile.TarInfo(name)
            info.pax_headers = dict(pax_headers or {})
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 8, 0
            info.type = kind
            info.linkname = link or ''
            info.size = len(data or b'')
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            t.addfile(info, io.BytesIO(data or b''))
    return buf.getvalue()


class CopyTestCase(machines.MachineTestCase):

    def setUp(self):
        super().setUp()
        self.jobs = JobWatch(self.env.conn)
        self.addCleanup(self.jobs.close)

    def cp(self, src, dst, user=None, check=True):
        argv = [STAMPCTL, '--no-ask-password', 'cp', src, dst]
        if user:
            argv = self.env.as_user(user, argv)
        p = run(argv, check=False, timeout=stamptest.TIMEOUT * 3)
        if check:
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p

    def call_copy(self, method, name, path, fd):
        """A copy method by root with @fd; (result, ErrorName, log) once its job ended."""
        job = self.root.manager(method, name, path, 0, {}, fd_list=fd_list(fd),
                                sig='(ssha{sv})')
        result, log = self.jobs.wait(tuple(job))
        return result, self.jobs.error_name(tuple(job)), log

    def copy_bytes_in(self, method, name, path, data):
        r, w = os.pipe()
        try:
            os.write(w, data)  # small: fits in the pipe
        finally:
            os.close(w)
        try:
            return self.call_copy(method, name, path, r)
        finally:
            os.close(r)

    def host_dir(self, name):
        p = os.path.join(self.dir, name)
        os.makedirs(p)
        return p


class MachineCopyTest(CopyTestCase):

    def test_tree_into_machine_and_back_keeps_owners_modes_xattrs(self):
        self.sleeper()
        src = os.path.join(self.dir, 'tree')
        make_host_tree(src)
        self.cp(src, 'base:/srv/copied')
        inside = os.path.join(self.base, 'srv/copied')
        self.assertEqual(listing(inside), listing(src))
        st = os.lstat(os.path.join(inside, 'conf'))
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (1234, 2345, 0o640))

        out = self.host_dir('out')
        self.cp('base:/srv/copied', out)  # into an existing directory, under its own name
        self.assertEqual(listing(os.path.join(out, 'copied')), listing(src))
        self.cp('base:/srv/copied/conf', os.path.join(out, 'conf-again'))
        self.assertEqual(listing(out)['conf-again'], listing(src)['conf'])

    def test_file_lands_in_the_machine_not_the_image(self):
        """/tmp of a running machine is its own tmpfs: a copy there is in the
        machine, which a copy into the image's directory would not be."""
        self.sleeper()
        src = os.path.join(self.dir, 'note')
        with open(src, 'w') as f:
            f.write('into the machine\n')
        self.cp(src, 'base:/tmp/note')
        self.assertFalse(os.path.lexists(os.path.join(self.base, 'tmp/note')))
        status, output = self.exec_cat('/tmp/note')
        self.assertEqual(output, 'into the machine\n')
        back = os.path.join(self.dir, 'back')
        self.cp('base:/tmp/note', back)
        with open(back) as f:
            self.assertEqual(f.read(), 'into the machine\n')

    def exec_cat(self, path):
        """What @path holds inside the running machine base, read back with CopyFromMachine."""
        r, w = os.pipe()
        job = self.root.manager('CopyFromMachine', 'base', path, 0, {},
                                fd_list=fd_list(w), sig='(ssha{sv})')
        os.close(w)
        with os.fdopen(r, 'rb') as f:
            data = f.read()
        result, _ = self.jobs.wait(tuple(job))
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            member = t.getmembers()[0]
            return result, t.extractfile(member).read().decode()

    def test_symlinks_resolve_inside_the_machine(self):
        with open(os.path.join(self.base, 'etc/shadow'), 'w') as f:
            f.write('the machine\'s shadow\n')
        os.symlink('/etc/shadow', os.path.join(self.base, 'srv/abs'))
        os.symlink('../../../../../../../../etc/shadow', os.path.join(self.base, 'srv/rel'))
        os.symlink('/etc', os.path.join(self.base, 'srv/etc-link'))
        self.sleeper()
        for link in ('abs', 'rel'):
            out = os.path.join(self.dir, 'got-' + link)
            self.cp('base:/srv/' + link, out)
            with open(out) as f:
                self.assertEqual(f.read(), 'the machine\'s shadow\n', link)
        # A write through a link to a directory lands in the machine's /etc.
        src = os.path.join(self.dir, 'planted')
        with open(src, 'w') as f:
            f.write('x\n')
        self.cp(src, 'base:/srv/etc-link/planted-by-copy')
        self.assertTrue(os.path.exists(os.path.join(self.base, 'etc/planted-by-copy')))
        self.assertFalse(os.path.lexists('/etc/planted-by-copy'))

    def test_hostile_streams_are_refused_and_leave_nothing(self):
        self.sleeper()
        before = sorted(os.listdir(os.path.join(self.base, 'srv')))
        cases = [
            [('top', tarfile.DIRTYPE, None, None), ('top/../../escaped', tarfile.REGTYPE, b'x', None)],
            [('/abs', tarfile.REGTYPE, b'x', None)],
            [('top', tarfile.DIRTYPE, None, None), ('other/file', tarfile.REGTYPE, b'x', None)],
            [('top', tarfile.DIRTYPE, None, None), ('top/l', tarfile.SYMTYPE, None, '/'),
             ('top/l/etc/through-link', tarfile.REGTYPE, b'x', None)],
            [('top', tarfile.DIRTYPE, None, None), ('top/h', tarfile.LNKTYPE, None, '../../etc/shadow')],
            [('top', tarfile.DIRTYPE, None, None), ('top/sda', tarfile.BLKTYPE, None, None)],
            [('top', tarfile.DIRTYPE, None, None), ('top/mem', tarfile.CHRTYPE, None, None)],
        ]
        for entries in cases:
            result, name, log = self.copy_bytes_in('CopyToMachine', 'base', '/srv/new', tar_stream(entries))
            self.assertEqual((result, name), ('failed', STAMP_ERROR + 'BadArchive'), (entries, log))
        result, name, _ = self.copy_bytes_in('CopyToMachine', 'base', '/srv/new', b'garbage' * 100)
        self.assertEqual((result, name), ('failed', STAMP_ERROR + 'BadArchive'))
        self.assertEqual(sorted(os.listdir(os.path.join(self.base, 'srv'))), before)
        self.assertFalse(os.path.lexists(os.path.join(self.store, 'escaped')))

    def test_cancel_leaves_nothing(self):
        """A copy canceled halfway (the stream stalls in the middle of a file) ends canceled, and what
        it had made is gone."""
        self.sleeper()
        srv = os.path.join(self.base, 'srv')
        stream = tar_stream([('top', tarfile.DIRTYPE, None, None),
                             ('top/big', tarfile.REGTYPE, b'x' * (4 << 20), None)])
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        os.write(w, stream[:60 * 1024])  # below a pipe's buffer: the rest never comes
        job = tuple(self.root.manager('CopyToMachine', 'base', '/srv/new', 0, {}, fd_list=fd_list(r),
                                      sig='(ssha{sv})'))
        os.close(r)
        stamptest.wait_for(lambda: any(n.startswith('.#stamp-copy-') for n in os.listdir(srv)),
                           'the copy to be under way')
        self.root.manager('CancelJob', job[0])
        result, _ = self.jobs.wait(job)
        self.assertEqual(result, 'canceled')
        self.assertEqual([n for n in os.listdir(srv) if n.startswith('.') or n == 'new'], [])

    def test_only_user_xattrs_are_copied_in(self):
        """security.* and trusted.* attributes could give a file powers its copier has not."""
        self.sleeper()
        stream = tar_stream([('f', tarfile.REGTYPE, b'data', None)],
                            {'SCHILY.xattr.user.kept': 'yes', 'SCHILY.xattr.trusted.dropped': 'no'})
        result, name, log = self.copy_bytes_in('CopyToMachine', 'base', '/srv/f', stream)
        self.assertEqual((result, name), ('done', ''), log)
        f = os.path.join(self.base, 'srv/f')
        self.assertEqual(os.getxattr(f, 'user.kept'), b'yes')
        self.assertNotIn('trusted.dropped', os.listxattr(f))

    def test_existing_target_is_refused(self):
        self.sleeper()
        src = os.path.join(self.dir, 'marker')
        with open(src, 'w') as f:
            f.write('new\n')
        p = self.cp(src, 'base:/srv/marker', check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('exists already', p.stderr)
        with open(os.path.join(self.base, 'srv/marker')) as f:
            self.assertEqual(f.read(), 'base\n')

    def test_bad_arguments_are_named_errors(self):
        self.sleeper()
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        for method, path, fd, error in [
                ('CopyToMachine', 'srv/relative', r, INVALID_ARGS),
                ('CopyToMachine', '', r, INVALID_ARGS),
                ('CopyToMachine', '/srv/x', w, INVALID_ARGS),      # write end to read from
                ('CopyFromMachine', '/srv/marker', r, INVALID_ARGS),  # read end to write to
                ('CopyToMachine', '/srv/x', os.open(self.dir, os.O_RDONLY), INVALID_ARGS)]:
            self.assertDBusError(error, self.root.manager, method, 'base', path, 0, {},
                                 fd_list=fd_list(fd), sig='(ssha{sv})')
        self.assertDBusError(STAMP_ERROR + 'NoSuchMachine', self.root.manager, 'CopyToMachine', 'nothere',
                             '/srv/x', 0, {}, fd_list=fd_list(r), sig='(ssha{sv})')
        self.assertDBusError(STAMP_ERROR + 'InvalidName', self.root.manager, 'CopyToMachine', '../x',
                             '/srv/x', 0, {}, fd_list=fd_list(r), sig='(ssha{sv})')
        self.assertDBusError(INVALID_ARGS, self.root.manager, 'CopyToMachine', 'base', '/srv/x',
                             0, {'bogus': GLib.Variant('b', True)}, fd_list=fd_list(r),
                             sig='(ssha{sv})')
        result, name, _ = self.call_copy('CopyFromMachine', 'base', '/srv/missing', w)
        self.assertEqual((result, name), ('failed', STAMP_ERROR + 'NoSuchImage'))

    def test_unauthorized_user_is_refused_and_nothing_changes(self):
        self.sleeper()
        src = os.path.join(self.dir, 'f')
        with open(src, 'w') as f:
            f.write('x\n')
        os.chmod(self.dir, 0o755)
        before = store_state(self.store)
        p = self.cp(src, 'base:/srv/from-user', user=USER, check=False)
        self.assertEqual(p.returncode, 77, p.stderr)
        out = os.path.join(self.dir, 'userout')
        p = self.cp('base:/srv/marker', out, user=USER, check=False)
        self.assertEqual(p.returncode, 77, p.stderr)
        self.assertFalse(os.path.lexists(out))
        self.assertEqual(store_state(self.store), before)
        # login granted: the same copy goes through
        self.set_rules(rule_for(USER, 'login', 'YES'))
        self.cp(src, 'base:/srv/from-user', user=USER)
        self.assertTrue(os.path.exists(os.path.join(self.base, 'srv/from-user')))


class OwnMachineCopyTest(CopyTestCase):
    """A user's own machine runs in a user namespace with its image 0-based on
    disk: its owner copies with manage-own-machines alone, owners are the ones
    seen inside, and someone else is refused."""

    OWN = ('manage-own-images', 'start-own-machine', 'manage-own-machines')

    def setUp(self):
        super().setUp()
        machines.make_template(self.store, 'tmpl')
        self.set_rules(''.join(rule_for(u, a, 'YES') for u in (USER, USER2) for a in self.OWN))
        self.user.manager('CloneImage', 'tmpl', 'mine', False)
        client = self.write_client()
        result = os.path.join(self.dir, 'sleeper.json')
        open(result, 'w').close()
        os.chown(result, self.env.users[USER], self.env.users[USER])
        proc = subprocess.Popen(self.env.as_user(USER, [PYTHON, client, 'mine',
                                                        json.dumps({'command': ['/bin/sleep', '1000']}),
                                                        result]),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait)
        self.addCleanup(self.kill_quietly, 'mine')
        stamptest.wait_for(lambda: 'mine' in self.list_machines() and self.props('mine')['State'] == 'running',
                           'the user\'s machine to run')
        self.assertTrue(self.props('mine')['UserNamespace'])
        os.chmod(self.dir, 0o755)

    def test_owner_copies_with_owners_as_inside(self):
        src = os.path.join(self.dir, 'tree')
        make_host_tree(src, uid=0, gid=0)
        os.chown(os.path.join(src, 'sub/data.bin'), 1000, 1000)
        # root copies in: owners as given are the machine's own (0 is its root)
        self.cp(src, 'mine:/srv/tree')
        on_disk = os.path.join(self.store, 'mine/srv/tree')
        self.assertEqual(listing(on_disk), listing(src))
        self.assertEqual(os.lstat(os.path.join(on_disk, 'sub/data.bin')).st_uid, 1000)
        # and out again, as the machine sees them
        out = os.path.join(self.dir, 'out')
        self.cp('mine:/srv/tree', out)
        self.assertEqual(listing(out), listing(src))

        # the owner needs no login action; files they get are their own
        udir = os.path.join(self.dir, 'user-dir')
        os.mkdir(udir)
        os.chown(udir, self.env.users[USER], self.env.users[USER])
        uout = os.path.join(udir, 'uout')
        self.cp('mine:/srv/tree/conf', uout, user=USER)
        with open(uout) as f:
            self.assertEqual(f.read(), 'key=value\n')
        self.assertEqual(os.stat(uout).st_uid, self.env.users[USER])
        usrc = os.path.join(self.dir, 'usrc')
        with open(usrc, 'w') as f:
            f.write('from the owner\n')
        os.chown(usrc, self.env.users[USER], self.env.users[USER])
        self.cp(usrc, 'mine:/srv/from-owner', user=USER)
        self.assertTrue(os.path.exists(os.path.join(self.store, 'mine/srv/from-owner')))

        # someone else is refused, and nothing changes
        before = store_state(self.store)
        p = self.cp(usrc, 'mine:/srv/from-other', user=USER2, check=False)
        self.assertEqual(p.returncode, 77, p.stderr)
        self.assertEqual(store_state(self.store), before)


class ImageCopyTest(CopyTestCase):

    def test_into_and_out_of_a_stopped_image(self):
        src = os.path.join(self.dir, 'tree')
        make_host_tree(src)
        self.cp(src, 'base:/srv/tree')
        self.assertEqual(listing(os.path.join(self.base, 'srv/tree')), listing(src))
        out = os.path.join(self.dir, 'out')
        self.cp('base:/srv/tree', out)
        self.assertEqual(listing(out), listing(src))

    def test_owner_copies_into_and_out_of_their_own_image(self):
        machines.make_template(self.store, 'tmpl')
        own = ('manage-own-images', 'start-own-machine', 'manage-own-machines')
        self.set_rules(''.join(rule_for(u, a, 'YES') for u in (USER, USER2) for a in own))
        self.user.manager('CloneImage', 'tmpl', 'mine', False)
        udir = os.path.join(self.dir, 'user-dir')
        os.makedirs(udir)
        os.chmod(self.dir, 0o755)
        os.chown(udir, self.env.users[USER], self.env.users[USER])
        src = os.path.join(udir, 'note')
        with open(src, 'w') as f:
            f.write('mine\n')
        os.chown(src, self.env.users[USER], self.env.users[USER])
        self.cp(src, 'mine:/srv/note', user=USER)
        with open(os.path.join(self.store, 'mine/srv/note')) as f:
            self.assertEqual(f.read(), 'mine\n')
        self.cp('mine:/srv/marker', os.path.join(udir, 'marker'), user=USER)
        self.assertEqual(os.stat(os.path.join(udir, 'marker')).st_uid, self.env.users[USER])
        # not someone else's
        before = store_state(self.store)
        p = self.cp(src, 'mine:/srv/other', user=USER2, check=False)
        self.assertEqual(p.returncode, 77, p.stderr)
        self.assertEqual(store_state(self.store), before)

    def test_read_only_busy_and_unauthorized_images(self):
        machines.make_template(self.store, 'tmpl')
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.assertDBusError(STAMP_ERROR + 'ImageReadOnly', self.root.manager, 'CopyToImage', 'tmpl', '/srv/x',
                             0, {}, fd_list=fd_list(r), sig='(ssha{sv})')
        self.assertDBusError(STAMP_ERROR + 'NoSuchImage', self.root.manager, 'CopyToImage', 'nothere', '/srv/x',
                             0, {}, fd_list=fd_list(r), sig='(ssha{sv})')
        self.sleeper()
        self.assertDBusError(STAMP_ERROR + 'ImageBusy', self.root.manager, 'CopyToImage', 'base', '/srv/x',
                             0, {}, fd_list=fd_list(r), sig='(ssha{sv})')
        self.root.manager('KillMachine', 'base', 9)
        self.wait_removed('base')

        os.chmod(self.dir, 0o755)
        src = os.path.join(self.dir, 'f')
        with open(src, 'w') as f:
            f.write('x\n')
        before = store_state(self.store)
        for args in ((src, 'base:/srv/x'), ('tmpl:/srv/marker', os.path.join(self.dir, 'o'))):
            p = self.cp(*args, user=USER, check=False)
            self.assertEqual(p.returncode, 77, p.stderr)
        self.assertEqual(store_state(self.store), before)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
