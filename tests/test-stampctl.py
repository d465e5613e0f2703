#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""stampctl end to end against the real daemon: list, show, clone, remove,
rename, read-only, --json, exit codes, one-line errors, job verbs that exit
with their job's outcome, and a polkit password prompt typed into a real
terminal."""

import json
import os
import subprocess

import stamptest
from stamptest import (store_names, ADMIN_PASSWORD, MANAGER_IFACE, MANAGER_PATH, STAMPCTL, UINT64_MAX, USER,
                       make_image, rule_for, run, store_state, subvolume_read_only, wait_for,
                       wrap_pdeathsig)

# Exit codes documented in `stampctl --help`.
EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_SUPPORTED, EXIT_NO_SUCH, EXIT_EXISTS = 1, 2, 3, 4, 5
EXIT_UNAVAILABLE, EXIT_DENIED = 69, 77


class StampctlTestCase(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.daemon = self.start_daemon()
        self.store = self.daemon.store
        self.base = make_image(self.store, 'base')

    def path(self, name):
        return os.path.join(self.store, name)

    def ctl(self, *args, user=None, expect=0):
        """Run stampctl (as root, or as user); check its exit status."""
        cmd = [STAMPCTL] + list(args)
        if user:
            cmd = self.env.as_user(user, cmd)
        p = run(cmd, check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, expect, 'stampctl %s: %s%s' % (
            ' '.join(args), p.stdout, p.stderr))
        if expect != 0:
            self.assertOneLineError(p.stderr)
        return p

    def assertOneLineError(self, stderr):
        lines = stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, 'not a one-line error: %r' % stderr)
        self.assertTrue(lines[0].startswith('stampctl: '), lines[0])


class ListShowTest(StampctlTestCase):

    def test_list_table(self):
        self.ctl('clone', 'base', 'web')
        lines = self.ctl('list').stdout.splitlines()
        self.assertEqual(lines[0].split(),
                         ['NAME', 'TYPE', 'RO', 'OWNER', 'USAGE', 'CREATED', 'MODIFIED', 'ORIGIN'])
        rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip()}
        self.assertEqual(rows['base'][1:3], ['subvolume', 'no'])
        self.assertEqual(rows['web'][-1], 'base')
        self.assertIn('2 images listed.', lines)

    def test_list_no_legend(self):
        lines = self.ctl('--no-legend', 'list').stdout.splitlines()
        self.assertEqual([line.split()[0] for line in lines], ['base'])

    def test_list_json(self):
        make_image(self.store, 'frozen', read_only=True)
        self.ctl('clone', 'base', 'web')
        images = {i['name']: i for i in json.loads(self.ctl('--json', 'list').stdout)['images']}
        listed = self.root.list_images()
        self.assertEqual(sorted(images), ['base', 'frozen', 'web'])
        for name, image in images.items():
            with self.subTest(image=name):
                kind, ro, crtime, mtime, _, _ = listed[name]
                self.assertEqual(image['type'], kind)
                self.assertIs(image['ro'], ro)
                self.assertEqual((image['created'], image['modified']), (crtime, mtime))
        self.assertIs(images['frozen']['ro'], True)
        self.assertIs(images['base']['ro'], False)
        self.assertEqual(images['web']['origin'], 'base')

    def test_show_image(self):
        self.ctl('clone', 'base', 'web')
        text = self.ctl('show', 'web').stdout
        fields = dict(line.strip().split(': ', 1) for line in text.splitlines()
                      if ': ' in line)
        self.assertEqual(fields['Name'], 'web')
        self.assertEqual(fields['Path'], self.path('web'))
        self.assertEqual(fields['Type'], 'subvolume')
        self.assertEqual(fields['Read-only'], 'no')
        self.assertEqual(fields['Origin'], 'base')
        self.assertIn('ID=stamptest', text)

    def test_show_escapes_what_the_image_says(self):
        """An image's os-release is the image's to write: escape sequences in it
        (a window title, a screen clear, an 8-bit CSI) reach the terminal escaped,
        in the OS line and in the OS release field alike; --json carries the
        value as it is, JSON-escaped."""
        evil = make_image(self.store, 'evil')
        pretty = '\x1b]0;pwned\x07\x1b[2JEvil\u009b31m'
        with open(os.path.join(evil, 'usr/lib/os-release'), 'w', encoding='utf-8') as f:
            f.write('ID=evil\nPRETTY_NAME="%s"\nX_\x1b[8mKEY=hidden\n' % pretty)
        text = self.ctl('show', 'evil').stdout
        for c in text:
            self.assertFalse((ord(c) < 0x20 and c != '\n') or 0x7f <= ord(c) <= 0x9f,
                             'raw control character %r in %r' % (c, text))
        shown = '\\033]0;pwned\\007\\033[2JEvil\\302\\23331m'
        fields = dict(line.strip().split(': ', 1) for line in text.splitlines() if ': ' in line)
        self.assertEqual(fields['OS'], shown)
        self.assertIn('PRETTY_NAME=' + shown, text)
        self.assertIn('X_\\033[8mKEY=hidden', text)
        props = json.loads(self.ctl('--json', 'show', 'evil').stdout)
        self.assertEqual(props['os_release']['PRETTY_NAME'], pretty)

    def test_show_json_matches_properties(self):
        shown = json.loads(self.ctl('--json', 'show', 'base').stdout)
        props = self.root.image_props('base')
        for key, prop in (('name', 'Name'), ('path', 'Path'), ('type', 'Type'), ('ro', 'ReadOnly'),
                          ('created', 'CreationTimestamp'), ('os_release', 'OSRelease'),
                          ('template', 'Template')):
            self.assertEqual(shown[key], props[prop], key)
        self.assertIsNone(shown['origin'], 'no origin is null, as in list')

    def test_json_one_vocabulary(self):
        """list's keys are show's keys, with the same values; unknown is null in both."""
        self.ctl('clone', 'base', 'web')
        for name in ('base', 'web'):
            listed = [i for i in json.loads(self.ctl('--json', 'list').stdout)['images']
                      if i['name'] == name][0]
            shown = json.loads(self.ctl('--json', 'show', name).stdout)
            self.assertLessEqual(set(listed), set(shown), name)
            for key in listed:
                self.assertEqual(listed[key], shown[key], '%s of %s' % (key, name))
        self.assertEqual(shown['origin'], 'base')

    def test_json_modes(self):
        pretty = self.ctl('--json=pretty', 'list').stdout
        short = self.ctl('--json=short', 'list').stdout
        self.assertEqual(json.loads(pretty), json.loads(short))
        self.assertEqual(len(short.splitlines()), 1, short)
        self.assertGreater(len(pretty.splitlines()), 1)
        self.assertIn('NAME', self.ctl('--json', '--json=off', 'list').stdout)
        p = self.ctl('--json=loud', 'list', expect=EXIT_USAGE)
        self.assertIn("'loud'", p.stderr)

    def test_show_pool(self):
        shown = json.loads(self.ctl('--json', 'show').stdout)
        self.assertEqual(shown['pool_path'],
                         self.root.get_property(stamptest.MANAGER_PATH, stamptest.MANAGER_IFACE,
                                                'PoolPath'))
        self.assertGreater(shown['pool_limit'], 0)

    def test_show_missing(self):
        p = self.ctl('show', 'ghost', expect=EXIT_NO_SUCH)
        self.assertIn('ghost', p.stderr)


class ChangeTest(StampctlTestCase):

    def test_clone(self):
        self.ctl('clone', 'base', 'web')
        self.assertSnapshotOf(self.path('web'), self.base)
        self.assertFalse(subvolume_read_only(self.path('web')))

    def test_clone_read_only(self):
        self.ctl('clone', 'base', 'frozen', '--read-only')
        self.assertTrue(subvolume_read_only(self.path('frozen')))

    def test_rename_read_only_remove(self):
        self.ctl('clone', 'base', 'web')
        self.ctl('rename', 'web', 'site')
        self.assertEqual(store_names(self.store), ['base', 'site'])
        self.ctl('read-only', 'site')
        self.assertTrue(subvolume_read_only(self.path('site')))
        self.ctl('read-only', 'site', 'no')
        self.assertFalse(subvolume_read_only(self.path('site')))
        self.ctl('read-only', 'site', 'yes')
        self.assertTrue(subvolume_read_only(self.path('site')))
        self.ctl('clone', 'base', 'other')
        self.ctl('remove', 'site', 'other')
        self.assertEqual(store_names(self.store), ['base'])

    def test_errors_and_exit_codes(self):
        self.ctl('clone', 'base', 'web')
        before = store_state(self.store)
        self.assertIn('web', self.ctl('clone', 'base', 'web', expect=EXIT_EXISTS).stderr)
        self.assertIn('ghost', self.ctl('clone', 'ghost', 'x', expect=EXIT_NO_SUCH).stderr)
        self.assertIn('a/b', self.ctl('clone', 'base', 'a/b', expect=EXIT_USAGE).stderr)
        self.ctl('rename', 'base', 'web', expect=EXIT_EXISTS)
        self.ctl('remove', 'ghost', expect=EXIT_NO_SUCH)
        self.ctl('read-only', 'ghost', expect=EXIT_NO_SUCH)
        self.ctl('read-only', 'base', 'maybe', expect=EXIT_USAGE)
        self.ctl('no-such-verb', expect=EXIT_USAGE)
        # machinectl's habits: its names for the same verbs, and a hint for a typo.
        self.assertEqual(self.ctl('--no-legend', 'list-images').stdout, self.ctl('--no-legend', 'list').stdout)
        self.assertIn("did you mean 'list'?", self.ctl('lsit', expect=EXIT_USAGE).stderr)
        # A value for an option that takes none is said so, in words.
        for args, option in ((['--no-legend=short', 'list'], '--no-legend'), (['list', '--tree=yes'], '--tree'),
                             (['--quiet=1', 'list'], '--quiet')):
            err = self.ctl(*args, expect=EXIT_USAGE).stderr
            self.assertIn("Option '%s' takes no value." % option, err)
        self.ctl('clone', 'base', expect=EXIT_USAGE)
        self.assertUnchanged(self.store, before)

    def test_help_and_version(self):
        self.assertIn('clone SRC DST', self.ctl('--help').stdout)
        self.assertTrue(self.ctl('--version').stdout.strip())

    def test_daemon_not_running(self):
        self.stop_daemon(self.daemon)
        p = self.ctl('list', expect=EXIT_UNAVAILABLE)
        self.assertTrue(p.stderr.strip())

    def test_usage_unknown_shown_as_such(self):
        store = stamptest.make_btrfs_store(os.path.join(self.dir, 'userfs'))
        self.stop_daemon(self.daemon)
        self.start_daemon(store=store)
        make_image(store, 'base')
        image = json.loads(self.ctl('--json', 'list').stdout)['images'][0]
        self.assertIsNone(image['usage'])
        self.assertEqual(self.root.list_images()['base'][4], UINT64_MAX)


class JobVerbTest(StampctlTestCase):
    """A job verb waits for its job and exits with its outcome: 0 when it is
    done, 1 with a one-line error when it failed or was canceled."""

    def entries(self):
        """The store's entries, temporaries of jobs included."""
        return sorted(os.listdir(self.store))

    def assertJobFailed(self, stderr, label):
        """Beside the progress lines (a line per percent when stderr is no
        terminal), one line says that the job failed and why."""
        others = [line for line in stderr.splitlines() if not line.startswith(label + ': ')]
        self.assertOneLineError('\n'.join(others))
        self.assertIn(label, others[0])

    def test_import_of_random_bytes_fails(self):
        junk = os.path.join(self.dir, 'junk.tar')
        with open(junk, 'wb') as f:
            f.write(os.urandom(256 << 10))
        before = self.entries()
        p = self.ctl('--quiet', 'import-tar', junk, 'junk', expect=EXIT_FAILURE)
        self.assertIn('import-tar junk', p.stderr)
        self.assertIn('not a tar archive', p.stderr)
        p = run([STAMPCTL, 'import-tar', junk, 'junk'], check=False, timeout=stamptest.TIMEOUT)
        self.assertEqual(p.returncode, EXIT_FAILURE, p.stderr)
        self.assertJobFailed(p.stderr, 'import-tar junk')
        error = [line for line in p.stderr.splitlines() if line.startswith('stampctl: ')][0]
        self.assertLessEqual(error.lower().count('failed'), 1, 'no doubled "failed": %s' % error)
        self.assertEqual(self.entries(), before)
        self.assertNotIn('junk', self.root.list_images())

    def test_export_import_round_trip(self):
        for fmt in ('zstd', 'uncompressed'):
            with self.subTest(format=fmt):
                archive = os.path.join(self.dir, 'base-%s.tar' % fmt)
                p = self.ctl('--quiet', 'export-tar', '--format', fmt, 'base', archive)
                self.assertEqual(p.stderr, '')
                self.assertGreater(os.path.getsize(archive), 0)
                back = 'back-' + fmt
                p = self.ctl('--quiet', 'import-tar', archive, back)
                self.assertEqual(p.stderr, '')
                self.assertSameTree(self.path('base'), self.path(back))
                self.assertIn(back, self.root.list_images())
        self.assertEqual([n for n in self.entries() if n.startswith('.') and n != stamptest.STORE_META], [])

    def test_progress_without_a_terminal(self):
        """Not on a terminal: a line per tenth of the way (not per percent), then one summary."""
        img = self.path('base')
        with open(os.path.join(img, 'srv/random'), 'wb') as f:
            f.write(os.urandom(16 << 20))
        archive = os.path.join(self.dir, 'base.tar')
        p = self.ctl('export-tar', '--format', 'uncompressed', 'base', archive)
        lines = p.stderr.splitlines()
        self.assertTrue(lines and lines[-1].startswith('export-tar base: done in '), p.stderr)
        self.assertRegex(lines[-1], r' s, 1[67]M written$', 'what, size, time')
        progress = [line for line in lines[:-1] if line.endswith('%')]
        self.assertEqual(len(progress), len(lines) - 1, p.stderr)
        self.assertLessEqual(len(progress), 12, 'a line per tenth of the way at most: %s' % p.stderr)

    def test_canceled_wait_exits_non_zero(self):
        """stampctl waits on an import whose input never comes; another
        process cancels the job."""
        before = self.entries()
        r, w = os.pipe()
        try:
            ctl = subprocess.Popen(wrap_pdeathsig([STAMPCTL, 'import-tar', '-', 'held']), stdin=r,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            os.close(r)
        self.addCleanup(lambda: ctl.poll() is None and ctl.kill())
        self.addCleanup(os.close, w)

        def running_job():
            jobs = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ListJobs')
            return jobs and jobs[0][0]
        job_id = wait_for(running_job, 'the import job to appear')
        self.assertIsNone(ctl.poll(), 'stampctl stopped waiting')
        self.ctl('cancel', str(job_id))
        # The job ends at the cancel while its input is still open: stampctl must not wait for more.
        out, err = ctl.communicate(timeout=stamptest.TIMEOUT)
        self.assertEqual(ctl.returncode, EXIT_FAILURE, err)
        self.assertJobFailed(err, 'import-tar held')
        self.assertIn('canceled', err)
        self.assertEqual(out, '')
        self.assertNotIn('held', self.root.list_images())
        wait_for(lambda: self.entries() == before, 'the canceled import to leave nothing in the store')


class PolishTest(StampctlTestCase):
    """What a newcomer trips over (issue 17): tables at 80 columns, messages that
    name the thing, refusals that say how to get what was refused, help that
    matches, jobs that say what they read and write."""

    def test_tables_fit_80_columns(self):
        long_name = 'bookworm-base-with-a-rather-long-name'
        make_image(self.store, long_name)
        self.ctl('clone', long_name, 'web-server-of-the-marketing-team')
        env = dict(os.environ, COLUMNS='80')
        p = run([STAMPCTL, 'list'], env=env, check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = [line for line in p.stdout.splitlines() if line.strip()]
        for line in lines:
            self.assertLessEqual(len(line), 80, line)
        rows = {line.split()[0]: line for line in lines[1:-1]}
        # ellipsized with "…", never cut in the middle of a word without a sign
        self.assertTrue(any(name.endswith('…') and long_name.startswith(name[:-1]) for name in rows), rows)
        self.assertNotIn(long_name, rows)
        # shorter timestamps (no weekday, no seconds): the whole date and time are there
        self.assertRegex(lines[1], r'\d{4}-\d\d-\d\d \d\d:\d\d')
        self.assertNotRegex(lines[1], r'\d\d:\d\d:\d\d')
        # wide enough, nothing changes
        wide = run([STAMPCTL, 'list'], env=dict(os.environ, COLUMNS='300')).stdout
        self.assertIn(long_name, wide)
        self.assertRegex(wide, r'\d\d:\d\d:\d\d')

    def test_tree_has_no_origin_column(self):
        self.ctl('clone', 'base', 'web')
        lines = self.ctl('list', '--tree').stdout.splitlines()
        self.assertEqual(lines[0].split(), ['NAME', 'TYPE', 'RO', 'OWNER', 'USAGE', 'CREATED', 'MODIFIED'])
        self.assertIn('web', lines[2])
        tree = json.loads(self.ctl('--json', 'list', '--tree').stdout)['images']
        self.assertEqual(tree[0]['children'][0]['origin'], 'base')

    def test_quiet_tables(self):
        self.assertEqual(self.ctl('-q', 'jobs').stdout, '')
        self.assertEqual(self.ctl('jobs').stdout, 'No jobs.\n')
        out = self.ctl('-q', 'list').stdout
        self.assertNotIn('listed', out)
        self.assertIn('base', out)

    def test_help_matches(self):
        text = self.ctl('--help').stdout
        for needle in ('shell NAME [--user U] [--ephemeral]', 'snapshot NAME SNAP', '--with-snapshots', 'machine-status NAME', '--kill-whom', 'terminate NAME',
                       '130 for Ctrl-C'):
            self.assertIn(needle, text)
        self.assertEqual([line for line in text.splitlines() if line.endswith(' ')], [])
        self.assertEqual(self.ctl('help').stdout, text)

    def test_start_options_hint_double_dash(self):
        for args in (['start', 'base', 'ls', '-la'], ['start', '-x', 'base', 'ls', '--color']):
            p = self.ctl(*args, expect=EXIT_USAGE)
            self.assertIn("put '--' before it", p.stderr)
        p = self.ctl('list', '-la', expect=EXIT_USAGE)
        self.assertNotIn("'--'", p.stderr)

    def test_file_arguments_named(self):
        before = store_state(self.store)
        p = self.ctl('import-tar', self.dir, 'x', expect=EXIT_USAGE)
        self.assertIn(self.dir, p.stderr)
        self.assertIn('directory', p.stderr)
        p = self.ctl('export-tar', 'base', self.dir, expect=EXIT_USAGE)
        self.assertIn(self.dir, p.stderr)
        self.assertUnchanged(self.store, before)
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith('.')], [])

    def test_remote_refuses_fd_verbs_up_front(self):
        # no ssh is tried: the refusal comes before any connection
        for args in (['import-tar', '/dev/null', 'x'], ['export-tar', 'base', 'x.tar'], ['start', 'base'],
                     ['shell', 'base']):
            p = self.ctl('-H', 'nowhere.invalid', *args, expect=EXIT_NOT_SUPPORTED)
            self.assertIn('ssh', p.stderr)
            self.assertIn(args[0], p.stderr)

    def test_already_exists_wording(self):
        self.ctl('clone', 'base', 'web')
        p = self.ctl('clone', 'base', 'web', expect=EXIT_EXISTS)
        self.assertIn('already exists', p.stderr)

    def test_refusals_say_how(self):
        before = store_state(self.store)
        p = self.ctl('--no-ask-password', 'clone', 'base', 'web', user=USER, expect=EXIT_DENIED)
        self.assertIn('clone image base as web', p.stderr)
        self.assertIn('io.stamp.Stamp1.manage-images', p.stderr)
        self.assertIn('without --no-ask-password', p.stderr)
        self.assertNotIn('interactive authorization', p.stderr)
        # without a terminal: no password can be asked, and it says where to look
        p = self.ctl('remove', 'base', user=USER, expect=EXIT_DENIED)
        self.assertIn('remove image base', p.stderr)
        self.assertIn('AUTHORIZATION in stampctl(1)', p.stderr)
        self.assertIn('terminal', p.stderr)
        self.assertUnchanged(self.store, before)

    def test_clone_does_not_show_the_templates_recipe(self):
        uuid = stamptest.subvolume_show(self.base)['UUID'].replace('-', '')
        os.setxattr(self.base, 'user.stamp.recipe',
                    ("{'suite': <'bookworm'>, 'uuid': <'%s'>}" % uuid).encode())
        self.ctl('clone', 'base', 'web')
        self.assertEqual(json.loads(self.ctl('--json', 'show', 'base').stdout)['recipe']['suite'], 'bookworm')
        self.assertEqual(json.loads(self.ctl('--json', 'show', 'web').stdout)['recipe'], {})
        self.assertNotIn('bookworm', self.ctl('show', 'web').stdout)

    def complete(self, *words):
        script = ('source %s && COMP_WORDS=(%s) && COMP_CWORD=%d && _stampctl && printf "%%s\\n" "${COMPREPLY[@]}"'
                  % (os.path.join(stamptest.SRCDIR, 'completion', 'stampctl'),
                     ' '.join("'%s'" % w for w in (STAMPCTL,) + words), len(words)))
        return sorted(run(['bash', '--norc', '--noprofile', '-c', script]).stdout.split())

    def test_completion_offers_what_the_verb_can_use(self):
        make_image(self.store, 'frozen', read_only=True)
        self.assertEqual(self.complete('start', ''), ['base'])
        self.assertEqual(self.complete('shell', ''), ['base'])
        self.assertEqual(self.complete('start', '-x', ''), ['base', 'frozen'])
        self.assertEqual(self.complete('start', '--read-only', ''), ['base', 'frozen'])
        self.assertEqual(self.complete('clone', ''), ['base', 'frozen'])
        self.assertIn('terminate', self.complete('ter'))
        self.assertEqual(self.complete('kill', '--kill-whom', ''), ['all', 'leader'])


class JobsPolishTest(StampctlTestCase):

    def held_import(self, name='held'):
        """An import whose input never comes: it stays running until canceled."""
        r, w = os.pipe()
        try:
            ctl = subprocess.Popen(wrap_pdeathsig([STAMPCTL, 'import-tar', '-', name]), stdin=r,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            os.close(r)
        self.addCleanup(lambda: ctl.poll() is None and ctl.kill())
        self.addCleanup(os.close, w)
        return ctl

    def test_jobs_say_what_they_read(self):
        self.held_import()
        wait_for(lambda: self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ListJobs'), 'the import job')
        lines = self.ctl('jobs').stdout.splitlines()
        self.assertEqual(lines[0].split(), ['ID', 'TYPE', 'IMAGE', 'PROGRESS', 'STATE', 'DESCRIPTION'])
        self.assertIn('from a pipe', lines[1])
        self.assertIn('running', lines[1])
        job = json.loads(self.ctl('--json', 'jobs').stdout)['jobs'][0]
        self.assertEqual((job['image'], job['state'], job['description']), ('held', 'running', 'from a pipe'))
        # a file passed by fd is named by the path the kernel keeps for it (a FIFO here: it stays open)
        fifo = os.path.join(self.dir, 'in.tar')
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDWR)
        self.addCleanup(os.close, fd)
        _, path = self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ImportTar', 0, 'fromfile', False,
                                 fd_list=stamptest.fd_list(fd))
        self.assertEqual(self.root.get_property(path, 'io.stamp.Stamp1.Job', 'Description'), 'from ' + fifo)

    def test_refusals_name_the_job_and_the_verb(self):
        self.held_import()
        job_id = wait_for(lambda: self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ListJobs'), 'the import job')[0][0]
        p = self.ctl('--no-ask-password', 'cancel', str(job_id), user=USER, expect=EXIT_DENIED)
        self.assertIn('cancel job %d (on image held)' % job_id, p.stderr)
        p = self.ctl('--no-ask-password', 'read-only', 'base', user=USER, expect=EXIT_DENIED)
        self.assertIn('mark image base read-only', p.stderr)
        self.assertEqual(self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ListJobs')[0][0], job_id)

    def test_no_block_json_shape(self):
        out = os.path.join(self.dir, 'base.tar')
        p = self.ctl('--json', '--no-block', 'export-tar', 'base', out)
        shown = json.loads(p.stdout)
        self.assertEqual(sorted(shown), ['id', 'object'])
        self.assertIn('partial file stays', p.stderr)
        wait_for(lambda: not self.root.call(MANAGER_PATH, MANAGER_IFACE, 'ListJobs'), 'the export to end')


class UserTest(StampctlTestCase):

    def test_user_lists(self):
        self.assertIn('base', self.ctl('list', user=USER).stdout)

    def test_user_refused(self):
        before = store_state(self.store)
        self.ctl('clone', 'base', 'web', user=USER, expect=EXIT_DENIED)
        self.ctl('--no-ask-password', 'clone', 'base', 'web', user=USER, expect=EXIT_DENIED)
        self.ctl('remove', 'base', user=USER, expect=EXIT_DENIED)
        self.assertUnchanged(self.store, before)

    def test_authorized_user(self):
        self.allow(USER)
        self.ctl('clone', 'base', 'web', user=USER)
        self.assertSnapshotOf(self.path('web'), self.base)


class PasswordPromptTest(StampctlTestCase):
    """A user in a terminal: stampctl starts its own text agent and polkit
    asks for the administrator's password there."""

    def setUp(self):
        super().setUp()
        self.set_rules(rule_for(USER, 'manage-images', 'AUTH_ADMIN'))

    def test_right_password_clones(self):
        pane = self.run_in_terminal(USER, [STAMPCTL, 'clone', 'base', 'web'])
        pane.wait_for_password_prompt()
        pane.type_line(ADMIN_PASSWORD)
        self.assertEqual(pane.wait_exit(), 0, pane.capture())
        self.assertSnapshotOf(self.path('web'), self.base)

    def test_wrong_password_refuses(self):
        before = store_state(self.store)
        pane = self.run_in_terminal(USER, [STAMPCTL, 'clone', 'base', 'web'])
        pane.wait_for_password_prompt()
        pane.type_line('not-the-password')
        self.assertEqual(pane.wait_exit(), EXIT_DENIED, pane.capture())
        self.assertUnchanged(self.store, before)

    def test_no_ask_password_in_terminal(self):
        before = store_state(self.store)
        pane = self.run_in_terminal(USER, [STAMPCTL, '--no-ask-password', 'clone', 'base', 'web'])
        self.assertEqual(pane.wait_exit(), EXIT_DENIED, pane.capture())
        self.assertNotIn('Password', pane.capture())
        self.assertUnchanged(self.store, before)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
