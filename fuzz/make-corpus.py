#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Write the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Run again after changing it; the files are committed. Seeds are small: the
fuzzer mutates them, the `fuzz` test suite replays them."""

import io
import lzma
import bz2
import gzip
import os
import shutil
import struct
import subprocess
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def clear(target):
    d = os.path.join(HERE, 'corpus', target)
    if os.path.isdir(d):
        shutil.rmtree(d)


# ---- image names and object paths

NAMES = ['base', 'a', 'a' * 64, 'a' * 65, 'my-image.v2', '1st_one', 'x..y', '../x', 'a/b', '.x',
         '-x', '', '.', '..', 'ü', 'a b', 'x\ny', '.#stamp-web-0123', '\x7f', 'A-Z_a-z.0-9']
PATHS = ['/io/stamp/Stamp1/image/base', '/io/stamp/Stamp1/image/my_2dimage_2ev2',
         '/io/stamp/Stamp1/image/_2e_2e', '/io/stamp/Stamp1/image/a_2fb', '/io/stamp/Stamp1/image/a/b',
         '/io/stamp/Stamp1/image', '/io/stamp/Stamp1/image/_', '/io/stamp/Stamp1/image/_2e_23stamp',
         '/io/stamp/Stamp1/image/evil', '/io/stamp/Stamp1/image/_61', '/io/stamp/Stamp1/image/_zz',
         '/io/stamp/Stamp1/imagex/base', '/', '_2f_2e_2e']


def names():
    clear('fuzz-image-name')
    for i, n in enumerate(NAMES):
        write('fuzz-image-name', 'name-%02d' % i, n)
    clear('fuzz-bus-label')
    for i, n in enumerate(NAMES + PATHS):
        write('fuzz-bus-label', 'label-%02d' % i, n)


# ---- option dictionaries, in the grammar of fuzz-options.c

KEYS = ['variant', 'arch', 'include', 'mirror', 'package_tarball', 'root_password_hashed', 'bootable']
T_STRING, T_BOOL, T_STRV, T_FD, T_INT, T_UINT64, T_DOUBLE, T_PATH, T_BYTES, T_SIG, T_VARIANT, T_DICT, T_FDS = range(13)


def short(s):
    b = s.encode()
    return bytes([0, len(b)]) + b  # mode < 0xf0, then fuzz_string: length, bytes


def entry(key, value):
    """key: index into KEYS or bytes of an unknown key; value: bytes of the value."""
    if isinstance(key, int):
        head = bytes([key])
    else:
        head = bytes([0xc0]) + short(key.decode())
    return head + value


def right(*rest):  # for a known key: the type byte < 0x90 selects the right type
    return bytes([0]) + b''.join(rest)


def wrong(t, *rest):  # a type byte >= 0x90 whose value % 13 is t
    b = 0x90
    while b % 13 != t:
        b += 1
    return bytes([b]) + b''.join(rest)


def options():
    clear('fuzz-options')
    seeds = {
        'empty': bytes([0]),
        'all-good': bytes([7]) + b''.join([
            entry(0, right(short('minbase'))),
            entry(1, right(short('amd64'))),
            entry(2, right(bytes([3]), short('dbus'), short('vim'), short('less'))),
            entry(3, right(short('http://deb.debian.org/debian'))),
            entry(4, right()),
            entry(5, right(short('$6$salt$hash'))),
            entry(6, right(bytes([1]))),
        ]),
        'unknown-key': bytes([2]) + entry(0, right(short('minbase'))) + entry(b'frobnicate', wrong(T_BOOL, b'\x01')),
        'wrong-type': bytes([2]) + entry(4, right()) + entry(6, wrong(T_STRING, short('yes'))),
        'twice': bytes([2]) + entry(3, right(short('a'))) + entry(3, right(short('b'))),
        'long-string': bytes([1]) + entry(3, right(bytes([0xf3, 0x0c]))),
        'huge-string': bytes([1]) + entry(3, right(bytes([0xff, 0x10, 0x00]))),
        'many-packages': bytes([1]) + entry(2, right(bytes([0xf2]))),
        'huge-array': bytes([1]) + entry(2, right(bytes([0xff, 0xff, 0xff]))),
        'bytes': bytes([1]) + entry(b'blob', wrong(T_BYTES, b'\xff\xff')),
        'nested-variant': bytes([1]) + entry(0, wrong(T_VARIANT, b'\x00', short('minbase'))),
        'nested-dict': bytes([1]) + entry(0, wrong(T_DICT, b'\x02', short('k'), b'\x01\x01', short('j'), b'\x07')),
        'fds': bytes([2]) + entry(4, wrong(T_FDS)) + entry(4, right()),
        'control-key': bytes([1]) + entry(b'evil\nkey\x1b[31m', wrong(T_STRING, short('x'))),
        'extra-keys': bytes([3, 0xa0, 0x01, 0x00, 0xa3, 0x01, 0x00, 0xa7, 0x01, 0x00]),
    }
    for name, data in seeds.items():
        write('fuzz-options', name, data)


# ---- archives

def tar_bytes(members, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=fmt) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name, kind=tarfile.REGTYPE, data=b'', mode=0o644, link='', uid=0, gid=0, **kw):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1700000000
    info.linkname = link
    for k, v in kw.items():
        setattr(info, k, v)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def os_tree(prefix=''):
    p = prefix
    return [
        member(p + 'etc/' if p else 'etc', tarfile.DIRTYPE, mode=0o755),
        member(p + 'etc/os-release', data=b'ID=fuzz\nNAME="Fuzz"\n'),
        member(p + 'usr', tarfile.DIRTYPE, mode=0o755),
        member(p + 'usr/bin', tarfile.DIRTYPE, mode=0o755),
        member(p + 'usr/bin/tool', data=b'#!/bin/sh\necho hi\n', mode=0o4755),
        member(p + 'usr/bin/sh', tarfile.SYMTYPE, link='tool'),
        member(p + 'usr/bin/hard', tarfile.LNKTYPE, link=p + 'usr/bin/tool'),
        member(p + 'etc/shadow-link', tarfile.SYMTYPE, link='/etc/shadow'),
        member(p + 'etc/fifo', tarfile.FIFOTYPE, mode=0o600),
        member(p + 'etc/owned', data=b'x', uid=1234, gid=5678, mode=0o640),
    ]


def archives():
    clear('fuzz-archive-import')
    plain = tar_bytes(os_tree())
    seeds = {
        'os-tree.tar': plain,
        'os-tree-gnu.tar': tar_bytes(os_tree(), tarfile.GNU_FORMAT),
        'os-tree-ustar.tar': tar_bytes(os_tree(), tarfile.USTAR_FORMAT),
        'os-tree.tar.gz': gzip.compress(plain),
        'os-tree.tar.xz': lzma.compress(plain),
        'os-tree.tar.bz2': bz2.compress(plain),
        'one-directory.tar': tar_bytes([member('rootfs', tarfile.DIRTYPE, mode=0o755)] + os_tree('rootfs/')),
        'dot-slash.tar': tar_bytes([member('.', tarfile.DIRTYPE, mode=0o755)] + os_tree('./')),
        'absolute.tar': tar_bytes([member('/etc/evil', data=b'x')]),
        'dotdot.tar': tar_bytes([member('../evil', data=b'x')]),
        'dotdot-inner.tar': tar_bytes([member('a', tarfile.DIRTYPE), member('a/../../evil', data=b'x')]),
        'symlink-out.tar': tar_bytes([member('up', tarfile.SYMTYPE, link='../..')]),
        'write-through-symlink.tar': tar_bytes([member('etc', tarfile.SYMTYPE, link='/etc'),
                                                member('etc/evil', data=b'x')]),
        'write-through-relative-symlink.tar': tar_bytes([member('d', tarfile.DIRTYPE),
                                                         member('d/l', tarfile.SYMTYPE, link='..'),
                                                         member('d/l/evil', data=b'x')]),
        'hardlink-out.tar': tar_bytes([member('h', tarfile.LNKTYPE, link='../etc/passwd')]),
        'hardlink-absolute.tar': tar_bytes([member('h', tarfile.LNKTYPE, link='/etc/passwd')]),
        'devices.tar': tar_bytes([member('null', tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
                                  member('loop', tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=200)]),
        'long-names.tar': tar_bytes([member('d' * 200 + '/' + 'f' * 200, data=b'long'),
                                     member('l', tarfile.SYMTYPE, link='t' * 300)]),
        'empty-name.tar': tar_bytes([member('', data=b'x')], tarfile.USTAR_FORMAT),
        'empty.tar': b'\0' * 1024,
        'garbage': b'this is not a tar archive\n' * 8,
        'truncated.tar': plain[:len(plain) // 2],
        'no-end-marker.tar': plain[:-1024],
    }
    zstd = shutil.which('zstd')
    if zstd:
        seeds['os-tree.tar.zst'] = subprocess.run([zstd, '-q', '-c'], input=plain, capture_output=True,
                                                  check=True).stdout
    for name, data in seeds.items():
        write('fuzz-archive-import', name, data)


# ---- btrfs send streams, as BTRFS_IOC_SEND writes them (version 1)

def crc32c(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc


def send_cmd(cmd, *attrs):
    body = b''.join(struct.pack('<HH', t, len(v)) + v for t, v in attrs)
    head = struct.pack('<IHI', len(body), cmd, 0)
    return struct.pack('<IHI', len(body), cmd, crc32c(head + body)) + body


def u64(v):
    return struct.pack('<Q', v)


def send_streams():
    clear('fuzz-btrfs-send')
    head = b'btrfs-stream\0' + struct.pack('<I', 1)
    t = struct.pack('<QI', 1700000000, 5)
    subvol = send_cmd(1, (15, b'img'), (1, bytes(range(16))), (2, u64(9)))
    snap = send_cmd(2, (15, b'img'), (1, bytes(range(16))), (2, u64(9)), (20, bytes(16)), (21, u64(3)))
    body = [
        send_cmd(4, (15, b'o257-9-0'), (3, u64(257))),
        send_cmd(9, (15, b'o257-9-0'), (16, b'etc')),
        send_cmd(3, (15, b'o258-9-0'), (3, u64(258))),
        send_cmd(9, (15, b'o258-9-0'), (16, b'etc/hostname')),
        send_cmd(15, (15, b'etc/hostname'), (18, u64(0)), (19, b'web\n')),
        send_cmd(8, (15, b'etc/link'), (17, b'hostname')),
        send_cmd(10, (15, b'etc/hard'), (17, b'etc/hostname')),
        send_cmd(5, (15, b'null'), (5, u64(0o20666)), (8, u64(0x103))),
        send_cmd(13, (15, b'etc/hostname'), (13, b'user.x'), (14, b'1')),
        send_cmd(19, (15, b'etc/hostname'), (6, u64(0)), (7, u64(0))),
        send_cmd(18, (15, b'etc/hostname'), (5, u64(0o644))),
        send_cmd(17, (15, b'etc/hostname'), (4, u64(4))),
        send_cmd(20, (15, b''), (11, t), (10, t), (9, t)),
    ]
    end = send_cmd(21)
    full = head + subvol + b''.join(body) + end
    seeds = {
        'full': full,
        'delta': head + snap + send_cmd(11, (15, b'gone')) + send_cmd(12, (15, b'dir')) +
        send_cmd(22, (15, b'etc/hostname'), (18, u64(0)), (4, u64(4096))) + end,
        'truncated': full[:len(full) - 7],
        'no-end': head + subvol,
        'escape': head + subvol + send_cmd(9, (15, b'a'), (16, b'../a')) + end,
        'empty': b'',
    }
    for name, data in seeds.items():
        write('fuzz-btrfs-send', name, data)


if __name__ == '__main__':
    names()
    options()
    archives()
    send_streams()
    for t in sorted(os.listdir(os.path.join(HERE, 'corpus'))):
        d = os.path.join(HERE, 'corpus', t)
        print('%-22s %3d seeds, %7d bytes' % (t, len(os.listdir(d)),
                                               sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))))
