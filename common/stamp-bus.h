/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Names that other programs depend on (SPEC.md); shared by daemon and client. */

#define STAMP_BUS_NAME "io.stamp.Stamp1"
#define STAMP_MANAGER_PATH "/io/stamp/Stamp1"
#define STAMP_IMAGE_PREFIX "/io/stamp/Stamp1/image"
#define STAMP_MACHINE_PREFIX "/io/stamp/Stamp1/machine"
#define STAMP_JOB_PREFIX "/io/stamp/Stamp1/job"

#define STAMP_MANAGER_IFACE "io.stamp.Stamp1.Manager"
#define STAMP_IMAGE_IFACE "io.stamp.Stamp1.Image"
#define STAMP_MACHINE_IFACE "io.stamp.Stamp1.Machine"
#define STAMP_JOB_IFACE "io.stamp.Stamp1.Job"

#define STAMP_ERROR_NO_SUCH_IMAGE "io.stamp.Stamp1.Error.NoSuchImage"
#define STAMP_ERROR_IMAGE_EXISTS "io.stamp.Stamp1.Error.ImageExists"
#define STAMP_ERROR_INVALID_NAME "io.stamp.Stamp1.Error.InvalidName"
#define STAMP_ERROR_IMAGE_BUSY "io.stamp.Stamp1.Error.ImageBusy"
#define STAMP_ERROR_IMAGE_READ_ONLY "io.stamp.Stamp1.Error.ImageReadOnly"
#define STAMP_ERROR_NO_SUCH_MACHINE "io.stamp.Stamp1.Error.NoSuchMachine"
#define STAMP_ERROR_MACHINE_EXISTS "io.stamp.Stamp1.Error.MachineExists"
#define STAMP_ERROR_NO_SUCH_JOB "io.stamp.Stamp1.Error.NoSuchJob"
#define STAMP_ERROR_UNSUPPORTED_FORMAT "io.stamp.Stamp1.Error.UnsupportedFormat"
#define STAMP_ERROR_BAD_ARCHIVE "io.stamp.Stamp1.Error.BadArchive"
#define STAMP_ERROR_NOT_SUPPORTED "io.stamp.Stamp1.Error.NotSupported"
#define STAMP_ERROR_NO_SPACE "io.stamp.Stamp1.Error.NoSpace"
#define STAMP_ERROR_QUOTA_EXCEEDED "io.stamp.Stamp1.Error.QuotaExceeded"
#define STAMP_ERROR_NO_SUCH_SNAPSHOT "io.stamp.Stamp1.Error.NoSuchSnapshot"
#define STAMP_ERROR_NO_SUCH_EXEC "io.stamp.Stamp1.Error.NoSuchExec"

#define STAMP_ACTION_CREATE_TEMPLATE "io.stamp.Stamp1.create-template"
#define STAMP_ACTION_MANAGE_IMAGES "io.stamp.Stamp1.manage-images"
#define STAMP_ACTION_START_MACHINE "io.stamp.Stamp1.start-machine"
#define STAMP_ACTION_MANAGE_MACHINES "io.stamp.Stamp1.manage-machines"
#define STAMP_ACTION_EXPORT "io.stamp.Stamp1.export"
#define STAMP_ACTION_IMPORT "io.stamp.Stamp1.import"
#define STAMP_ACTION_PULL "io.stamp.Stamp1.pull"
#define STAMP_ACTION_PUSH "io.stamp.Stamp1.push"
#define STAMP_ACTION_MANAGE_OWN_IMAGES "io.stamp.Stamp1.manage-own-images"
#define STAMP_ACTION_START_OWN_MACHINE "io.stamp.Stamp1.start-own-machine"
#define STAMP_ACTION_MANAGE_OWN_MACHINES "io.stamp.Stamp1.manage-own-machines"
#define STAMP_ACTION_LOGIN "io.stamp.Stamp1.login"
