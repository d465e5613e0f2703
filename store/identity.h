/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* A fresh identity for a new clone of a template, so that two machines made from one template are
 * not the same host to systemd, the network and ssh clients:
 *
 *   etc/machine-id      emptied (kept as an empty file): systemd makes a new one at the first boot,
 *                       and systemd-nspawn passes a random one to a machine that has none
 *   etc/hostname        the clone's name
 *   etc/ssh/ssh_host_*  each key type the image had is made anew (ssh-keygen, on the host, into a
 *                       private directory; then copied in), or removed where it cannot be made
 *
 * Everything is done below @root_fd, the clone's root, through fds: no path of the image is
 * followed out of it, and only regular files are written (a FIFO, device or symlink where one of
 * these files should be is left as it is, or removed for the ssh keys). Blocking: a worker thread
 * or a helper only. Returns 0, or a negative errno with a sentence in @err. */
int store_reset_identity(int root_fd, const char *hostname, char *err, size_t errlen);
