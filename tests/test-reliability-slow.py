#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""test-reliability.py's long variants (slow suite): the CreateTemplate
crash and full-disk trials. (STAMP_CRASH_BIG=1 test-reliability.py runs the
other crash trials on a tree twice as big.)"""

import os
import runpy
import sys

os.environ['STAMP_RELIABILITY_SLOW'] = '1'  # kept through stamptest's re-exec in its namespace
if len(sys.argv) == 1:  # the rest is test-reliability.py's own, in the integration suite
    sys.argv += ['CrashTest.test_create_template', 'FullDiskTest.test_template_into_small_fixed_btrfs']
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'test-reliability.py'),
               run_name='__main__')
