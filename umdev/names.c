/* See disk.h: how partitions are named, and what sizes a RAM disk may have. Shared by the
 * daemons (file names, -o size=) and the nbdkit plugin (export names, size=), so the two always
 * agree. */
#define _GNU_SOURCE
#include "disk.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

char *umdev_partition_name(const char *disk, unsigned n)
{
	size_t len = strlen(disk);
	bool digit = len > 0 && isdigit((unsigned char)disk[len - 1]);
	char *name = NULL;
	if (asprintf(&name, "%s%s%u", disk, digit ? "p" : "", n) < 0)
		return NULL;
	return name;
}

int umdev_check_ramdisk_size(uint64_t size, char *err, size_t errlen)
{
	if (size == 0) {
		snprintf(err, errlen, "size=0: a RAM disk needs at least one sector (512 bytes)");
		return -1;
	}
	if (size % UMDEV_SECTOR) {
		snprintf(err, errlen, "size=%llu bytes is not a whole number of 512-byte sectors",
			 (unsigned long long)size);
		return -1;
	}
	return 0;
}
