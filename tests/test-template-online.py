#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""CreateTemplate over the network (slow suite): debootstrap of bookworm
minbase from the host's mirror into the daemon's pool, and a second build
of the same suite that takes its packages from the daemon's cache."""

import glob
import os

import stamptest
from stamptest import run
from templatetest import LOG_INFO, SUITE, TemplateTestCase, host_arch


def host_apt_sources():
    text = ''
    for path in ['/etc/apt/sources.list'] + glob.glob('/etc/apt/sources.list.d/*'):
        try:
            with open(path) as f:
                text += f.read()
        except OSError:
            pass
    return text


class OnlineTemplateTest(TemplateTestCase):

    def build(self, name):
        job_id, job = self.create(name, bootable=False)
        self.assertEqual(self.jobs.wait(job_id), 'done', self.jobs.log_text(job)[-3000:])
        return job

    def cache_state(self):
        d = os.path.join(self.store, '.stamp', 'cache', 'mmdebstrap', '%s-%s' % (SUITE, host_arch()),
                         'archives')
        state = {}
        for name in os.listdir(d):
            st = os.stat(os.path.join(d, name))
            state[name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return state

    def test_online_minbase_then_from_the_cache(self):
        job = self.build('net')
        self.assertIn('I: downloading packages', self.jobs.log_text(job, LOG_INFO), self.jobs.log_text(job)[:3000])
        progress = self.jobs.progress[job]
        self.assertEqual(progress, sorted(progress))
        self.assertEqual(progress[-1], 1.0)
        # a fraction of the work: many steps, from mmdebstrap's own counts of downloads and packages
        self.assertGreater(len({p for p in progress if 0 < p < 1}), 20, progress)

        img = self.root.image_props('net')
        self.assertTrue(img['Template'] and img['ReadOnly'])
        recipe = img['Recipe']
        self.assertEqual((recipe['suite'], recipe['variant'], recipe['arch'], recipe['offline'],
                          recipe['bootable'], recipe['include'], recipe['builder']),
                         (SUITE, 'minbase', host_arch(), False, False, [], 'mmdebstrap'))
        # the host's own Debian mirror, or the fallback when it has none
        self.assertTrue(recipe['mirror'] in host_apt_sources() or
                        recipe['mirror'] == 'http://deb.debian.org/debian', recipe['mirror'])
        self.assertEqual(img['OSRelease']['ID'], 'debian')
        tree = self.path('net')
        packages = run(['chroot', tree, 'dpkg-query', '-W', '-f', '${Package}\n']).stdout.split()
        self.assertIn('apt', packages)
        self.assertNotIn('systemd-sysv', packages)

        cached = self.cache_state()
        self.assertGreater(len([n for n in cached if n.endswith('.deb')]), 50)

        # the second build of the suite downloads no package again
        self.build('net2')
        self.assertEqual(self.cache_state(), cached)
        self.assertTrue(self.root.image_props('net2')['Template'])
        self.assertEqual(self.temporaries(), [])


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
