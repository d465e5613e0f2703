#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""test-reliability.py's long variants (slow suite): a tree four times as
big, and the CreateTemplate crash and full-disk trials."""

import os
import runpy

os.environ['STAMP_RELIABILITY_SLOW'] = '1'  # kept through stamptest's re-exec in its namespace
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'test-reliability.py'),
               run_name='__main__')
