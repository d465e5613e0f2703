#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Online templates are built with mmdebstrap (slow suite): its packages'
scripts run without host root (a user namespace on an unprivileged uid
range), the files land 0-based, the system is the one bare debootstrap makes
for the same recipe (dpkg-query -W of both), its apt sources name the mirror
the caller chose, and apt works inside."""

import os
import stat
import subprocess

import stamptest
from stamptest import run
from templatetest import JOB_TIMEOUT, MIRROR, SUITE, TemplateTestCase, host_arch, note_package_code


def package_versions(tree):
    p = run(['chroot', tree, 'dpkg-query', '-W', '-f', '${Package} ${Version} ${db:Status-Abbrev}\n'])
    return {tuple(line.split()[:2]) for line in p.stdout.splitlines() if line.split()[2:3] == ['ii']}


class MmdebstrapTest(TemplateTestCase):

    def test_jailed_and_same_system_as_debootstrap(self):
        job_id, job = self.create('mm', bootable=False, mirror=MIRROR, include=['hello'])
        seen = {}
        def dpkg_or_end():
            self.jobs.spin()
            return note_package_code(self.daemon.pid, seen, also='mmdebstrap') or job_id in self.jobs.removed
        stamptest.wait_for(dpkg_or_end, 'dpkg to run', 600, interval=0.05)
        self.assertNotIn(job_id, self.jobs.removed, self.jobs.log_text(job)[-3000:])
        self.assertJailed(seen)
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        tree = self.path('mm')
        self.assertEqual(self.root.image_props('mm')['Recipe']['builder'], 'mmdebstrap')

        self.assertZeroBased(tree)

        # the same packages, at the same versions, as bare debootstrap installs for the recipe
        bare = os.path.join(self.dir, 'bare')
        p = run(['debootstrap', '--variant=minbase', '--arch=' + host_arch(), '--include=hello',
                 SUITE, bare, MIRROR], check=False, timeout=JOB_TIMEOUT)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr)[-2000:])
        ours, theirs = package_versions(tree), package_versions(bare)
        self.assertEqual(sorted(ours - theirs), [])
        self.assertEqual(sorted(theirs - ours), [])
        self.assertIn(('hello',), {(n,) for n, _ in ours})
        # and the same /dev: the nodes debootstrap makes, as debootstrap makes them
        def dev(root):
            d = os.path.join(root, 'dev')
            return {n: (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_rdev, st.st_uid)
                    for n in os.listdir(d) for st in [os.lstat(os.path.join(d, n))]}
        self.assertEqual(dev(tree), dev(bare))

        # apt sources name the mirror asked for, and apt works inside (on a clone: the template is
        # read-only)
        with open(os.path.join(tree, 'etc/apt/sources.list')) as f:
            self.assertIn('deb %s %s main' % (MIRROR, SUITE), f.read())
        self.root.manager('CloneImage', 'mm', 'mmc', False)
        clone = self.path('mmc')
        run(['chroot', clone, 'apt-get', '-q', 'check'])
        p = subprocess.run(['unshare', '--mount', '--', 'sh', '-c',
                            'mount --bind /etc/resolv.conf "$1/etc/resolv.conf" 2>/dev/null || '
                            'cp /etc/resolv.conf "$1/etc/resolv.conf"; mount -t proc proc "$1/proc"; '
                            # the pool is nodev: the host's nodes for this chroot
                            'mount --rbind /dev "$1/dev"; '
                            'exec chroot "$1" apt-get -q update', 'sh', clone],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        p = run(['chroot', clone, 'apt-get', '-q', '-s', '-o', 'Debug::NoLocking=1', 'install', 'cowsay'])
        self.assertIn('Inst cowsay', p.stdout)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
