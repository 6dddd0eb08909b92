/* What both umdev harnesses share: the input as a disk (rounded up to whole sectors), the read
 * callback, and the invariants every scan must keep whatever the bytes. */
#ifndef UMDEV_FUZZ_COMMON_H
#define UMDEV_FUZZ_COMMON_H

#include "partition.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_DISK (4u << 20)

struct fuzz_disk {
	uint8_t *bytes;
	uint64_t size;
};

static ssize_t fuzz_read(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct fuzz_disk *d = ctx;
	if (off >= d->size)
		return 0;
	if (len > d->size - off)
		len = (size_t)(d->size - off);
	memcpy(buf, d->bytes + off, len);
	return (ssize_t)len;
}

static int fuzz_disk_from(struct fuzz_disk *d, const uint8_t *data, size_t size)
{
	if (size > FUZZ_MAX_DISK)
		size = FUZZ_MAX_DISK;
	d->size = (size + UMDEV_SECTOR - 1) / UMDEV_SECTOR * UMDEV_SECTOR;
	d->bytes = calloc(1, d->size ? d->size : 1);
	if (!d->bytes)
		return -1;
	memcpy(d->bytes, data, size);
	return 0;
}

/* Scan and check: partitions lie within the disk, numbers are unique and ascending, the
 * table areas do too, and nothing the scan returned is read out of bounds. */
static void fuzz_scan_and_check(struct fuzz_disk *d)
{
	struct umdev_table t;
	umdev_scan(fuzz_read, d, d->size, &t);
	for (size_t i = 0; i < t.count; i++) {
		const struct umdev_partition *p = &t.parts[i];
		if (p->length == 0 || p->start > d->size || p->length > d->size - p->start)
			__builtin_trap();
		if (i > 0 && t.parts[i - 1].number >= p->number)
			__builtin_trap();
		if (strlen(p->name) >= sizeof p->name)
			__builtin_trap();
		if (umdev_table_find(&t, p->number) != p)
			__builtin_trap();
	}
	for (size_t i = 0; i < t.nareas; i++)
		(void)umdev_table_touches(&t, d->size, t.areas[i].start, t.areas[i].length);
	for (size_t i = 0; i < t.nmsgs; i++)
		if (strlen(t.msgs[i].text) >= sizeof t.msgs[i].text)
			__builtin_trap();
	umdev_table_clear(&t);
}

#endif
