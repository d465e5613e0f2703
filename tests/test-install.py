#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""What `meson install` of the build under test puts where (--destdir), and
that the installed files are the ones the system reads: programs that run,
a bus policy and polkit policy that validate, an activation file and a unit
that name the installed stampd, man pages, the completion, the example
rules; and nothing outside the prefix but the unit."""

import os
import re
import stat

import installtree
import stamptest
from stamptest import SRCDIR, run

# Read now, before main() hides /usr/share/polkit-1 behind the harness's tmpfs.
POLKIT_DTD_PATH = '/usr/share/polkit-1/policyconfig-1.dtd'
try:
    with open(POLKIT_DTD_PATH) as _f:
        POLKIT_DTD = _f.read()
except OSError:
    POLKIT_DTD = None

INTERFACES = ['io.stamp.Stamp1.%s.xml' % n for n in ('Manager', 'Image', 'Machine', 'Job')]
MAN_PAGES = [('man1', 'stampctl.1'), ('man8', 'stampd.8'), ('man5', 'io.stamp.Stamp1.5'), ('man5', 'stampd.conf.5')]


def read(path, mode='r'):
    with open(path, mode) as f:
        return f.read()


class InstallTest(stamptest.TestCase):

    def setUp(self):
        super().setUp()
        self.top = os.path.join(self.env.T, 'install')
        self.tree = installtree.once('destdir', installtree.destdir_install,
                                     os.path.join(self.top, 'root'))

    def installed(self, target_path):
        """The installed file at target_path; fails if it is missing."""
        p = self.tree.path(target_path)
        self.assertTrue(os.path.isfile(p), '%s is not installed (looked at %s)' % (target_path, p))
        return p

    def assertSameAsSource(self, installed, source):
        self.assertEqual(read(installed, 'rb'), read(os.path.join(SRCDIR, source), 'rb'),
                         '%s differs from %s' % (installed, source))

    def assertExecutable(self, path):
        mode = os.stat(path).st_mode
        self.assertTrue(stat.S_ISREG(mode) and mode & 0o111 == 0o111,
                        '%s is not an executable file (mode %o)' % (path, mode))

    # -- programs

    def test_stampd_in_libexecdir(self):
        p = self.installed(self.tree.stampd)
        self.assertExecutable(p)
        version = run([p, '--version']).stdout
        self.assertRegex(version, r'^stampd \S+\n$')
        self.assertIn(self.tree.store, run([p, '--help']).stdout,
                      'stampd --help does not name the configured default store')

    def test_stamp_transfer_beside_stampd(self):
        """The tar jobs run in stamp-transfer, which stampd looks for next
        to itself (and in libexecdir)."""
        p = self.installed(os.path.join(self.tree.libexecdir, 'stamp-transfer'))
        self.assertExecutable(p)

    def test_heavy_libraries_stay_where_they_are_used(self):
        """The idle daemon maps neither libarchive nor libcurl; exports and
        imports do not load libcurl either (pulls dlopen it)."""
        def needed(path):
            out = run(['readelf', '-d', path]).stdout
            return {line.split('[', 1)[1].split(']', 1)[0] for line in out.splitlines()
                    if '(NEEDED)' in line}
        daemon = needed(self.installed(self.tree.stampd))
        transfer = needed(self.installed(os.path.join(self.tree.libexecdir, 'stamp-transfer')))
        self.assertFalse({n for n in daemon if n.startswith(('libarchive', 'libcurl'))}, daemon)
        self.assertIn('libarchive.so.13', transfer)
        self.assertFalse({n for n in transfer if n.startswith('libcurl')}, transfer)

    def test_stampctl_in_bindir(self):
        p = self.installed(self.tree.stampctl)
        self.assertExecutable(p)
        self.assertRegex(run([p, '--version']).stdout, r'^stampctl \S+\n$')
        self.assertFalse(os.path.exists(self.tree.path(os.path.join(self.tree.bindir, 'stampd'))),
                         'stampd must not be in bindir')

    # -- D-Bus

    def test_interface_xml(self):
        for name in INTERFACES:
            with self.subTest(name=name):
                p = self.installed(os.path.join(self.tree.datadir, 'dbus-1/interfaces', name))
                self.assertSameAsSource(p, os.path.join('dbus', name))
                run(['xmllint', '--noout', p])

    def test_bus_policy(self):
        p = self.installed(os.path.join(self.tree.datadir, 'dbus-1/system.d/io.stamp.Stamp1.conf'))
        self.assertSameAsSource(p, 'dbus/io.stamp.Stamp1.conf')
        run(['xmllint', '--noout', p])
        # dbus-daemon accepts it: the harness's bus includes this very file
        # (from the source tree, identical as just checked).

    def test_activation_file(self):
        p = self.installed(self.tree.activation_file)
        service = installtree.read_keyfile(p)['D-BUS Service']
        self.assertEqual(service['Name'], ['io.stamp.Stamp1'])
        self.assertEqual(service['Exec'], [self.tree.stampd],
                         'Exec= must be the installed stampd')
        self.assertEqual(service['User'], ['root'])
        self.assertEqual(service['SystemdService'], ['stampd.service'])
        # the unit it names is installed, and is the one that owns the name
        unit = installtree.read_keyfile(self.installed(self.tree.unit_file))
        self.assertEqual(unit['Service']['BusName'], ['io.stamp.Stamp1'])
        self.assertEqual(unit['Service']['Type'], ['dbus'])

    # -- systemd

    def test_unit(self):
        p = self.installed(self.tree.unit_file)
        unit = installtree.read_keyfile(p)
        self.assertEqual(unit['Service']['ExecStart'], [self.tree.stampd])
        self.assertEqual(unit['Unit']['RequiresMountsFor'], [self.tree.store])
        self.assertNotRegex(read(p), r'@[A-Z_]+@', 'a placeholder was left unconfigured')
        self.assertNotIn('Install', unit, 'the unit is static: D-Bus activation starts it')

    def test_unit_dir(self):
        """Under the prefix, or the distribution's unit dir for prefix /usr:
        never the host's unit dir for a prefix elsewhere."""
        if self.tree.prefix == '/usr' or self.tree.options['systemdsystemunitdir']:
            self.skipTest('prefix /usr or an explicit unit dir: the distribution decides')
        self.assertTrue(self.tree.unitdir.startswith(self.tree.prefix + '/'), self.tree.unitdir)

    def test_nothing_outside_prefix(self):
        allowed = [self.tree.prefix + '/', self.tree.unitdir + '/']
        stray = [f for f in self.tree.installed_files()
                 if not any(f.startswith(a) for a in allowed)]
        self.assertEqual(stray, [])

    # -- polkit

    def test_polkit_policy(self):
        p = self.installed(os.path.join(self.tree.datadir,
                                        'polkit-1/actions/io.stamp.Stamp1.policy'))
        # identical to the file the harness's polkitd loads and pkaction lists
        # (test-harness.py checks what pkaction reads from it)
        self.assertSameAsSource(p, 'polkit/io.stamp.Stamp1.policy')
        if POLKIT_DTD is None:
            run(['xmllint', '--noout', p])
        else:
            dtd = os.path.join(self.top, 'policyconfig-1.dtd')
            with open(dtd, 'w') as f:
                f.write(POLKIT_DTD)
            run(['xmllint', '--noout', '--dtdvalid', dtd, p])

    def test_polkit_actions_carry_a_reason(self):
        """Every action is preceded by a comment that says why its defaults
        are what they are."""
        text = read(os.path.join(SRCDIR, 'polkit/io.stamp.Stamp1.policy'))
        ids = re.findall(r'<action id="([^"]+)"', text)
        self.assertEqual(len(ids), 12)
        for action in ids:
            with self.subTest(action=action):
                before = text[:text.index('<action id="%s"' % action)].rstrip()
                self.assertTrue(before.endswith('-->'), '%s has no comment before it' % action)
                comment = before[before.rindex('<!--') + 4:-3].strip()
                self.assertGreater(len(comment.split()), 3, comment)

    def test_rules_example_is_documentation_only(self):
        p = self.installed(os.path.join(self.tree.datadir,
                                        'doc/stamp/examples/50-stamp-group.rules.example'))
        self.assertSameAsSource(p, 'polkit/50-stamp-group.rules.example')
        rules = [f for f in self.tree.installed_files() if '/polkit-1/rules.d/' in f]
        self.assertEqual(rules, [], 'no rules may be active after an install')

    # -- documentation and completion

    def test_man_pages(self):
        planned = installtree.planned_install(self.tree.builddir).values()
        if not any(p.startswith(self.tree.mandir + '/') for p in planned):
            self.skipTest('scdoc was not found when the build was configured: no man pages')
        for section, name in MAN_PAGES:
            with self.subTest(page=name):
                p = self.installed(os.path.join(self.tree.mandir, section, name))
                self.assertRegex(read(p), r'(?m)^\.TH ')
                # man finds it by name in the installed tree
                manpath = self.tree.path(self.tree.mandir)
                title, sect = name.rsplit('.', 1)
                found = run(['man', '-M', manpath, '-w', sect, title], check=False)
                self.assertEqual(found.returncode, 0, found.stderr)
                self.assertEqual(os.path.realpath(found.stdout.strip()), os.path.realpath(p))

    def test_bash_completion(self):
        p = run(['pkg-config', '--variable=completionsdir',
                 '--define-variable=datadir=' + self.tree.datadir, 'bash-completion'],
                check=False)
        cdir = p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else \
            os.path.join(self.tree.datadir, 'bash-completion/completions')
        path = self.installed(os.path.join(cdir, 'stampctl'))
        self.assertSameAsSource(path, 'completion/stampctl')
        # sourced by bash, it registers itself for stampctl and completes verbs
        script = ('source %s && complete -p stampctl && '
                  'COMP_WORDS=(stampctl clo) COMP_CWORD=1 && _stampctl && '
                  'printf "%%s\\n" "${COMPREPLY[@]}"' % path)
        out = run(['bash', '--norc', '--noprofile', '-c', script]).stdout
        self.assertIn('-F _stampctl stampctl', out)
        self.assertEqual(out.splitlines()[-1:], ['clone'])


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
