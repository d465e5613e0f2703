#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Methods whose issue is still open answer NotSupported, never a silent
success, and change nothing. Delete a line here when its method lands."""

import stamptest
from stamptest import STAMP_ERROR, make_image, store_state

NOT_SUPPORTED = STAMP_ERROR + 'NotSupported'


LATER = [
    ('StartMachine', lambda root: root.manager('StartMachine', 'base', {})),
    ('StopMachine', lambda root: root.manager('StopMachine', 'base')),
    ('KillMachine', lambda root: root.manager('KillMachine', 'base', 15)),
]


class NotSupportedTest(stamptest.TestCase):

    def test_later_methods_say_not_supported(self):
        daemon = self.start_daemon()
        make_image(daemon.store, 'base')
        before = store_state(daemon.store)
        for label, call in LATER:
            with self.subTest(method=label):
                e = self.assertDBusError(NOT_SUPPORTED, call, self.root)
                self.assertTrue(e.message.strip(), 'NotSupported without a message')
        self.assertUnchanged(daemon.store, before)


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
