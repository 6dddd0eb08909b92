/* umdev-mbr: a disk image as device files. The whole disk appears at PATH and each partition
 * at PATH1, PATH2, ... (PATHp1, ... when PATH ends in a digit, as Linux names nvme0n1p1):
 * regular files, each a FUSE mount served by this one process, that fdisk, sfdisk, mkfs, fsck
 * and the file-system drivers of viewos use as they would use /dev/sda and /dev/sda1. The
 * partition files follow the table (MBR primary and logical partitions, GPT): after a write to
 * the table through PATH, they are updated when the writer flushes or closes, or on BLKRRPART.
 * With -o nbd= the disk and its partitions are exported over NBD as well (nbdserver.h).
 *
 * What it leaves out, and why:
 *   - 4096-byte logical sectors: tables are read with 512-byte sectors, as nearly every image
 *     is made; a 4Kn image shows no partitions;
 *   - block ioctls whose number encodes no size (BLKGETSIZE, BLKSSZGET, BLKROSET, HDIO_GETGEO,
 *     BLKDISCARD, ...): FUSE cannot move their data on a regular file (devfile.c says more);
 *   - device numbers (st_rdev): a device file is a regular file, which is what lets an
 *     ordinary user make one. */
#include "disk.h"
#include "service.h"

#include <stddef.h>

static const struct vo_opt options[] = {
	{ "uid", VO_OPT_UINT, offsetof(struct umdev_config, uid), 0, 0, NULL, "UID",
	  "owner of the device files (default: the user running the daemon)" },
	{ "gid", VO_OPT_UINT, offsetof(struct umdev_config, gid), 0, 0, NULL, "GID",
	  "group of the device files" },
	{ "mode", VO_OPT_OCTAL, offsetof(struct umdev_config, mode), 0, 0, NULL, "MODE",
	  "permissions of the device files (default 0600)" },
	{ "partscan", VO_OPT_BOOL, offsetof(struct umdev_config, partscan), 0, 0, NULL, NULL,
	  "show the partitions as files (the default; partscan=0: the whole disk only)" },
	{ "direct", VO_OPT_FLAG, offsetof(struct umdev_config, direct), 1, 0, NULL, NULL,
	  "bypass the image's page cache too (O_DIRECT for aligned requests)" },
	{ "nbd", VO_OPT_STRING, offsetof(struct umdev_config, nbd), 0, 0, NULL,
	  "unix:SOCKET|tcp:HOST:PORT", "also export the disk and its partitions over NBD" },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	.name = "umdev-mbr",
	.args_usage = "IMAGE PATH",
	.summary = "Shows the disk IMAGE as the device file PATH and its partitions as PATH1, "
		   "PATH2, ...",
	.options = options,
	.min_positional = 2,
	.max_positional = 2,
};

int main(int argc, char **argv)
{
	struct umdev_config cfg = UMDEV_CONFIG_INIT;
	return umdev_service_main(&info, UMDEV_KIND_IMAGE, &cfg, argc, argv);
}
