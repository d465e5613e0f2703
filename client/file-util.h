/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* The files stampctl's exports write and its imports read (export, export-tar, import, import-tar). */

/* Cleanup of a temporary's path: removes the file if it is still there. */
void unlink_tempp(char **path);

/* Where an export goes: "-" is standard output (*ret_fd -1), refused if it is a terminal ("Refusing
 * to write @what to a terminal."); else @file, created. If @atomic (the export is waited for) the
 * file is written as a hidden temporary beside @file, *ret_temp, which export_file_commit() renames
 * over @file once the export succeeded. EXIT_OK, or the exit code after saying why. */
int export_file_open(const char *file, bool atomic, const char *what, int *ret_fd, char **ret_temp);
/* Puts the complete temporary @*temp, open as @fd, in place as @file. */
int export_file_commit(int fd, char **temp, const char *file);

/* Where an import comes from: "-" is standard input (*ret_fd -1), refused if it is a terminal
 * ("Refusing to read @what from a terminal."); else @file, opened. The image it makes is @name, or
 * if that is NULL what @name_from_file() makes of @file (not of standard input): *ret_name, a new
 * string. EXIT_OK, or the exit code after saying why. */
int import_file_open(const char *file, const char *name, char *(*name_from_file)(const char *file), const char *what,
                     int *ret_fd, char **ret_name);
