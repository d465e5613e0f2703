#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Run the foundation integration tests (images, authorization, copy fallback, bus API, and the bad
# callers) with every stampd they start running under valgrind:
#
#   sudo tests/valgrind-foundation.sh [BUILDDIR] [TEST...]     (default: build-rel; images authz fallback bus-api bad-callers)
#
# valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1: a definite leak or a
# memory error makes stampd exit non-zero on SIGTERM, which the harness reports as a failed test. The
# reports of each daemon are kept in BUILDDIR/valgrind/; the summary lines are printed at the end.
# Needs a build without sanitizers (valgrind and ASan do not mix).
set -uo pipefail

cd "$(dirname "$0")/.."
B=${1:-build-rel}
shift || true
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(images authz fallback bus-api bad-callers)

if ! command -v valgrind >/dev/null; then
    echo "valgrind-foundation.sh: valgrind is needed (apt-get install valgrind)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "valgrind-foundation.sh: the integration tests need root" >&2
    exit 1
fi
[ -f "$B/meson-private/coredata.dat" ] || meson setup "$B" >/dev/null
ninja -C "$B" daemon/stampd client/stampctl >/dev/null || exit 1
if grep -q 'b_sanitize.*address' "$B/meson-info/intro-buildoptions.json" 2>/dev/null &&
   ! grep -q '"name": "b_sanitize", "value": "none"' "$B/meson-info/intro-buildoptions.json"; then
    echo "valgrind-foundation.sh: $B looks like a sanitizer build; use a plain one" >&2
fi

logs=$PWD/$B/valgrind
rm -rf "$logs"
mkdir -p "$logs"
wrapper=$logs/stampd-valgrind
cat >"$wrapper" <<WRAP
#!/bin/sh
# exec: valgrind runs stampd in this very process, so the pid the harness waits for is the daemon's
exec valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \\
    --error-exitcode=1 --child-silent-after-fork=yes --track-fds=no --num-callers=30 \\
    --log-file="$logs/stampd.%p.log" "$PWD/$B/daemon/stampd" "\$@"
WRAP
chmod 755 "$wrapper"

status=0
for t in "${tests[@]}"; do
    echo "==== $t"
    STAMPD=$wrapper STAMPCTL=$PWD/$B/client/stampctl STAMP_BUILDDIR=$PWD/$B STAMPTEST_TIMEOUT=240 \
        STAMP_PARKED_ROUNDS=${STAMP_PARKED_ROUNDS:-20} \
        /usr/bin/python3 "tests/test-$t.py" >"$logs/test-$t.tap" 2>&1
    rc=$?
    grep -E '^(ok|not ok)' "$logs/test-$t.tap" | sed 's/^/    /'
    [ $rc -eq 0 ] || status=1
done

echo "==== valgrind reports ($logs)"
# "==PID==" lines are valgrind's findings (errors, definite leaks); "--PID--" lines are its own
# warnings, e.g. about syscalls it does not know (pidfd_open, openat2 in valgrind 3.19: stampd then
# runs its fallbacks, or — for openat2 — cannot read an image's os-release, which fails the two
# OSRelease tests of test-images.py under valgrind only).
n=0
bad=0
for f in "$logs"/stampd.*.log; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    if grep -q '^==[0-9]*==' "$f"; then
        bad=$((bad + 1))
        echo "---- $f"
        grep '^==[0-9]*==' "$f"
        status=1
    fi
done
echo "unknown syscalls valgrind warned about: $(cat "$logs"/stampd.*.log 2>/dev/null |
    sed -n 's/.*unhandled amd64-linux syscall: \([0-9]*\).*/\1/p' | sort -u | tr '\n' ' ')"
echo "$n daemons ran under valgrind; $bad reported an error or a definite leak"
exit $status
