#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Every C source and header of the tree is as .clang-format says (clang-format 14, Debian 12's).
# Run by `meson test format`; to fix: clang-format -i $(git ls-files '*.c' '*.h')
set -eu
cd "$1"
if git rev-parse --git-dir >/dev/null 2>&1; then
    files=$(git ls-files '*.c' '*.h')
else
    files=$(find client common daemon store transfer tests fuzz bench -name '*.[ch]' | sort)
fi
# shellcheck disable=SC2086 # one word per file
exec "${CLANG_FORMAT:-clang-format}" --dry-run --Werror $files
