/* umdev-null: a device file at PATH that reads as zeros and swallows every write, as View-OS's
 * umdevnull. With the default size 0 every read is at end of file at once; -o size=SIZE gives
 * SIZE bytes of zeros (a bare number counts 512-byte sectors). Writes are accepted and
 * discarded at any offset. What it leaves out: View-OS's umdevnull printed a trace line per
 * call (it was a test module); -d traces every request instead. */
#include "service.h"

#include <stddef.h>

static const struct vo_opt options[] = {
	{ "size", VO_OPT_SIZE, offsetof(struct umdev_config, size), 512, 0, NULL, "SIZE",
	  "bytes of zeros to read (K/M/G/T suffixes; a bare number counts 512-byte sectors; "
	  "default 0)" },
	{ "uid", VO_OPT_UINT, offsetof(struct umdev_config, uid), 0, 0, NULL, "UID",
	  "owner of the device file (default: the user running the daemon)" },
	{ "gid", VO_OPT_UINT, offsetof(struct umdev_config, gid), 0, 0, NULL, "GID",
	  "group of the device file" },
	{ "mode", VO_OPT_OCTAL, offsetof(struct umdev_config, mode), 0, 0, NULL, "MODE",
	  "permissions of the device file (default 0600)" },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	.name = "umdev-null",
	.args_usage = "PATH",
	.summary = "Shows a null device (reads zeros, discards writes) as the device file PATH.",
	.options = options,
	.min_positional = 1,
	.max_positional = 2,
};

int main(int argc, char **argv)
{
	struct umdev_config cfg = UMDEV_CONFIG_INIT;
	cfg.partscan = 0;
	return umdev_service_main(&info, UMDEV_KIND_NULL, &cfg, argc, argv);
}
