/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "formats.h"
#include "manager.h"

/* Checks the job methods share, on the event loop. */

/* InvalidArgs unless @fd is a file, pipe or socket open for reading (or for writing, if @for_writing):
 * never a directory, an O_PATH descriptor or one open the wrong way. */
int bus_check_archive_fd(int fd, bool for_writing, sd_bus_error *error);
/* ImageExists or ImageBusy unless @name is free to be made by an import. */
int bus_check_import_target(Manager *m, const char *name, sd_bus_error *error);
