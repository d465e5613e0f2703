#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The store: a pool the daemon makes itself (<store>.raw, loop-mounted
btrfs with quotas), mounted again after a restart, grown before it is full;
a btrfs the user brought left as it is; stale temporaries removed at start."""

import os

import stamptest
from stamptest import (store_names, MANAGER_IFACE, MANAGER_PATH, UINT64_MAX, fs_type, is_subvolume,
                       loop_backing_file, make_btrfs_store, make_image, mount_source, out,
                       quotas_enabled, run, subvolume_read_only)


def fs_uuid(mountpoint):
    return out(['findmnt', '-n', '-o', 'UUID', '--mountpoint', mountpoint]).strip()


class SelfMadePoolTest(stamptest.TestCase):

    def check_pool(self, store):
        raw = store + '.raw'
        st = os.stat(raw)
        self.assertTrue(os.path.isfile(raw) and not os.path.islink(raw))
        self.assertLess(st.st_blocks * 512, st.st_size, '%s is not sparse' % raw)
        source, fstype = mount_source(store)
        self.assertEqual(fstype, 'btrfs')
        self.assertTrue(source.startswith('/dev/loop'), source)
        self.assertEqual(loop_backing_file(source), raw)
        self.assertTrue(quotas_enabled(store), 'quota groups are off on the self-made pool')

    def test_empty_store_becomes_pool(self):
        daemon = self.start_daemon()
        self.check_pool(daemon.store)
        props = self.root.get_all(MANAGER_PATH, MANAGER_IFACE)
        self.assertIn(props['PoolPath'], (daemon.store, daemon.store + '.raw'))
        size = os.stat(daemon.store + '.raw').st_size
        self.assertGreater(props['PoolLimit'], 0)
        self.assertLessEqual(props['PoolLimit'], size)
        self.assertLessEqual(props['PoolUsage'], props['PoolLimit'])

    def test_pool_made_with_an_empty_environment(self):
        # D-Bus's activation helper starts stampd with no environment at all, so no PATH: the
        # tools in sbin (mkfs.btrfs) must still be found, or the store silently stays plain.
        daemon = self.start_daemon(environ={})
        self.check_pool(daemon.store)

    def test_missing_store_is_created(self):
        store = os.path.join(self.dir, 'a', 'b', 'machines')
        daemon = self.start_daemon(store=store)
        self.check_pool(daemon.store)

    def test_images_on_pool_are_snapshots(self):
        daemon = self.start_daemon()
        base = make_image(daemon.store, 'base')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertSnapshotOf(os.path.join(daemon.store, 'web'), base)
        self.assertLess(self.root.image_props('web')['Usage'], UINT64_MAX)

    def test_restart_mounts_existing_pool_again(self):
        daemon = self.start_daemon()
        store = daemon.store
        make_image(store, 'base')
        self.root.manager('CloneImage', 'base', 'web', False)
        uuid = fs_uuid(store)
        self.stop_daemon(daemon)
        # as after a reboot: the pool file is there, nothing is mounted
        stamptest.unmount_all_under(store)
        self.assertNotEqual(fs_type(store), 'btrfs')
        self.assertEqual(store_names(store), [])
        daemon = self.start_daemon(store=store)
        self.assertEqual(fs_uuid(store), uuid, 'the pool was made anew')
        self.check_pool(store)
        self.assertEqual(sorted(self.root.list_images()), ['base', 'web'])
        self.assertSnapshotOf(os.path.join(store, 'web'), os.path.join(store, 'base'))

    def test_restart_with_pool_still_mounted(self):
        daemon = self.start_daemon()
        store = daemon.store
        make_image(store, 'base')
        uuid = fs_uuid(store)
        self.stop_daemon(daemon)
        self.start_daemon(store=store)
        self.assertEqual(fs_uuid(store), uuid)
        self.assertEqual(len(stamptest.mounts_under(store)), 1, 'the pool is mounted twice')
        self.assertEqual(sorted(self.root.list_images()), ['base'])

    def test_pool_grows_before_it_is_full(self):
        daemon = self.start_daemon()
        store, raw = daemon.store, daemon.store + '.raw'
        size = os.stat(raw).st_size
        limit = self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolLimit')
        make_image(store, 'base')
        self.root.manager('CloneImage', 'base', 'big', False)
        # take most of the free space without writing it (fallocate is cheap)
        free = os.statvfs(store).f_bavail * os.statvfs(store).f_frsize
        run(['fallocate', '-l', str(free - (256 << 20)), os.path.join(store, 'big', 'fill')])
        run(['btrfs', 'filesystem', 'sync', store])
        self.root.manager('CloneImage', 'base', 'trigger', False)
        stamptest.wait_for(lambda: os.stat(raw).st_size > size, 'the pool file to grow')
        stamptest.wait_for(
            lambda: self.root.get_property(MANAGER_PATH, MANAGER_IFACE, 'PoolLimit') > limit,
            'the pool file system to grow')
        st = os.statvfs(store)
        self.assertGreater(st.f_bavail * st.f_frsize, 256 << 20)


class UserBtrfsTest(stamptest.TestCase):
    """A btrfs the user mounted on the store: used as it is."""

    def test_used_without_pool_or_quotas(self):
        daemon = self.start_daemon(kind='btrfs')
        store = daemon.store
        self.assertFalse(os.path.exists(store + '.raw'))
        self.assertEqual(mount_source(store)[0], loop_device_of(store + '.btrfs'))
        base = make_image(store, 'base')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertSnapshotOf(os.path.join(store, 'web'), base)
        self.assertFalse(quotas_enabled(store), 'the daemon turned quotas on')
        props = self.root.image_props('web')
        self.assertEqual((props['Usage'], props['UsageExclusive']), (UINT64_MAX, UINT64_MAX))
        self.assertEqual(self.root.list_images()['web'][4], UINT64_MAX)
        self.assertEqual(props['Origin'], 'base')

    def test_user_quotas_left_on(self):
        store = make_btrfs_store(os.path.join(self.dir, 'store'), quotas=True)
        self.start_daemon(store=store)
        make_image(store, 'base')
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertTrue(quotas_enabled(store))
        self.assertLess(self.root.image_props('web')['Usage'], UINT64_MAX)


def loop_device_of(backing):
    return out(['losetup', '-n', '-O', 'NAME', '-j', backing]).split()[0]


class NonEmptyPlainStoreTest(stamptest.TestCase):

    def test_no_pool_over_existing_files(self):
        store = os.path.join(self.dir, 'store')
        os.makedirs(store)
        make_image(store, 'base', kind='directory')
        self.start_daemon(store=store)
        self.assertFalse(os.path.exists(store + '.raw'))
        self.assertIsNone(mount_source(store))
        self.root.manager('CloneImage', 'base', 'web', False)
        self.assertSameTree(os.path.join(store, 'web'), os.path.join(store, 'base'))
        self.assertEqual(self.root.image_props('web')['Type'], 'directory')


class StaleTemporariesTest(stamptest.TestCase):
    """What an interrupted operation left (hidden ".#stamp-" names) goes at
    start; hidden names of other tools sharing the store (importd's ".#…")
    and the images stay."""

    def make_stale(self, store, kind):
        make_image(store, '.#stamp-web-0123456789abcdef', kind=kind)
        make_image(store, '.#stamp-ro-0123456789abcdef', kind=kind, read_only=True)
        os.makedirs(os.path.join(store, '.#stamp-dir-0123456789abcdef', 'deep', 'er'))
        with open(os.path.join(store, '.#stamp-file-0123456789abcdef'), 'w') as f:
            f.write('x')
        os.mkdir(os.path.join(store, '.#import-of-someone-else'))

    def check_only_images_left(self, store):
        self.assertEqual(store_names(store), ['.#import-of-someone-else', 'base'])

    def test_removed_from_pool_at_start(self):
        daemon = self.start_daemon()
        store = daemon.store
        make_image(store, 'base')
        self.stop_daemon(daemon)
        self.make_stale(store, 'subvolume')
        self.start_daemon(store=store)
        self.check_only_images_left(store)
        self.assertTrue(is_subvolume(os.path.join(store, 'base')))
        self.assertNotIn('.#stamp-', out(['btrfs', 'subvolume', 'list', store]))

    def test_removed_from_plain_store_at_start(self):
        store = os.path.join(self.dir, 'store')
        os.makedirs(store)
        make_image(store, 'base', kind='directory')
        self.make_stale(store, 'directory')
        self.start_daemon(store=store, args=['--no-pool'])
        self.check_only_images_left(store)

    def test_read_only_image_untouched(self):
        daemon = self.start_daemon()
        store = daemon.store
        make_image(store, 'base', read_only=True)
        self.stop_daemon(daemon)
        self.start_daemon(store=store)
        self.assertTrue(subvolume_read_only(os.path.join(store, 'base')))


if __name__ == '__main__':
    raise SystemExit(stamptest.main())
