/* The life of a umdev daemon, shared by umdev-mbr, umdev-ramdisk and umdev-null:
 *   parse options -> check PATH -> detach -> open the backing store -> mount the disk file ->
 *   read the table and mount a file per partition -> start nbdkit (-o nbd=) -> ready ->
 *   serve until a signal or until the disk file is unmounted -> stop nbdkit, unmount every
 *   device file, flush, remove the files we created.
 * The three daemons differ only in their options and their backing store. */
#ifndef UMDEV_SERVICE_H
#define UMDEV_SERVICE_H

#include "options.h"

#include <limits.h>
#include <stdint.h>

enum umdev_kind {
	UMDEV_KIND_IMAGE,   /* umdev-mbr: an image file, device, or NBD URI */
	UMDEV_KIND_RAMDISK, /* umdev-ramdisk: a memfd of cfg.size bytes */
	UMDEV_KIND_NULL,    /* umdev-null: zeros in, nothing out */
};

struct umdev_config {
	unsigned uid, gid;  /* of the device files; UINT_MAX: the daemon's own */
	unsigned mode;      /* permission bits of the device files */
	int partscan;       /* partition files (mbr, ramdisk) */
	int direct;         /* mbr: O_DIRECT on the image for aligned requests */
	uint64_t size;      /* ramdisk, null */
	char *nbd;          /* unix:SOCKET or tcp:[HOST]:PORT */
};

#define UMDEV_CONFIG_INIT { .uid = UINT_MAX, .gid = UINT_MAX, .mode = 0600, .partscan = 1 }

int umdev_service_main(const struct vo_daemon_info *info, enum umdev_kind kind,
		       struct umdev_config *cfg, int argc, char **argv);

#endif
