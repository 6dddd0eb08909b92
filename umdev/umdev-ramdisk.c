/* umdev-ramdisk: a RAM disk as a device file at PATH. The memory is a memfd: sparse (blocks
 * never written cost nothing and read as zeros), freed again by discard and zeroing
 * (fallocate PUNCH_HOLE/ZERO_RANGE on the device file, trim and zero over NBD), and shared
 * with nbdkit for -o nbd=. Partitions made on it appear as PATH1, PATH2, ... as with
 * umdev-mbr. The contents are gone when the daemon ends.
 *
 * Sizes as View-OS's umdevramdisk: -o size= with K/M/G/T suffixes, a bare number counts
 * 512-byte sectors, 32 MiB by default. What it leaves out: View-OS rounded the size up to
 * whole cylinders (a geometry nothing reads any more); we keep the size exact. */
#include "disk.h"
#include "service.h"

#include <stddef.h>

static const struct vo_opt options[] = {
	{ "size", VO_OPT_SIZE, offsetof(struct umdev_config, size), 512, 0, NULL, "SIZE",
	  "size (K/M/G/T suffixes; a bare number counts 512-byte sectors; default 32M)" },
	{ "uid", VO_OPT_UINT, offsetof(struct umdev_config, uid), 0, 0, NULL, "UID",
	  "owner of the device files (default: the user running the daemon)" },
	{ "gid", VO_OPT_UINT, offsetof(struct umdev_config, gid), 0, 0, NULL, "GID",
	  "group of the device files" },
	{ "mode", VO_OPT_OCTAL, offsetof(struct umdev_config, mode), 0, 0, NULL, "MODE",
	  "permissions of the device files (default 0600)" },
	{ "partscan", VO_OPT_BOOL, offsetof(struct umdev_config, partscan), 0, 0, NULL, NULL,
	  "show partitions made on the RAM disk as files (the default; partscan=0: off)" },
	{ "nbd", VO_OPT_STRING, offsetof(struct umdev_config, nbd), 0, 0, NULL,
	  "unix:SOCKET|tcp:HOST:PORT", "also export the RAM disk and its partitions over NBD" },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	/* "[SOURCE] PATH": mount.fuse3 passes a source ("none"), which is ignored as View-OS did */
	.name = "umdev-ramdisk",
	.args_usage = "PATH",
	.summary = "Shows a sparse RAM disk as the device file PATH.",
	.options = options,
	.min_positional = 1,
	.max_positional = 2,
};

int main(int argc, char **argv)
{
	struct umdev_config cfg = UMDEV_CONFIG_INIT;
	cfg.size = UMDEV_RAMDISK_DEFAULT_SIZE;
	return umdev_service_main(&info, UMDEV_KIND_RAMDISK, &cfg, argc, argv);
}
