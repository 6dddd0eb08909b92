/* The entry point of partition scanning and the table it fills: which scheme is on the disk
 * (mbr.c hands over to gpt.c when it finds a protective entry), the list of partitions, the
 * table areas, and the diagnostics. */
#include "partition.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fresh tables are written at the start (MBR, protective MBR, GPT header and 128 entries: 34
 * sectors, UMDEV_HEAD_BYTES) and the end (backup GPT: 33 sectors) of a disk, even where no
 * table is yet. */

int umdev_read_exact(umdev_read_fn read, void *ctx, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = read(ctx, (char *)buf + done, len - done, off + done);
		if (r < 0)
			return (int)r;
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

static void *grow(void *array, size_t count, size_t elem)
{
	/* Doubling whenever count reaches a power of two keeps appends amortised O(1) without a
	 * separate capacity field: the capacity is 4 below 4 entries, else the next power of two. */
	if (count < 2 || (count & (count - 1)) == 0)
		return realloc(array, (count < 2 ? 4 : count * 2) * elem);
	return array;
}

struct umdev_partition *umdev_table_add(struct umdev_table *t, unsigned number, uint64_t start,
					uint64_t length)
{
	struct umdev_partition *parts = grow(t->parts, t->count, sizeof *parts);
	if (!parts)
		return NULL;
	t->parts = parts;
	struct umdev_partition *p = &parts[t->count++];
	memset(p, 0, sizeof *p);
	p->number = number;
	p->start = start;
	p->length = length;
	return p;
}

struct umdev_partition *umdev_table_add_checked(struct umdev_table *t, unsigned number,
						uint64_t start_sector, uint64_t sectors,
						uint64_t disk_sectors)
{
	/* What Linux does with a partition that does not fit: one that starts past the end is
	 * dropped, one that ends past it is cut at the end of the disk. Both are reported. */
	if (sectors == 0)
		return NULL;
	if (start_sector >= disk_sectors) {
		umdev_table_msg(t, UMDEV_MSG_WARNING, "partition %u starts past the end of the disk "
				"(sector %llu of %llu): ignored", number,
				(unsigned long long)start_sector, (unsigned long long)disk_sectors);
		return NULL;
	}
	if (sectors > disk_sectors - start_sector) {
		umdev_table_msg(t, UMDEV_MSG_WARNING, "partition %u ends past the end of the disk: "
				"truncated from %llu to %llu sectors", number,
				(unsigned long long)sectors,
				(unsigned long long)(disk_sectors - start_sector));
		sectors = disk_sectors - start_sector;
	}
	return umdev_table_add(t, number, start_sector * UMDEV_SECTOR, sectors * UMDEV_SECTOR);
}

void umdev_table_add_area(struct umdev_table *t, uint64_t start, uint64_t length)
{
	struct umdev_range *areas = grow(t->areas, t->nareas, sizeof *areas);
	if (!areas)
		return;
	t->areas = areas;
	t->areas[t->nareas++] = (struct umdev_range){ start, length };
}

void umdev_table_msg(struct umdev_table *t, enum umdev_msg_level level, const char *fmt, ...)
{
	/* A hostile table could make a message per entry; a few say all there is to say. */
	if (t->nmsgs >= 16)
		return;
	struct umdev_msg *msgs = grow(t->msgs, t->nmsgs, sizeof *msgs);
	if (!msgs)
		return;
	t->msgs = msgs;
	struct umdev_msg *m = &msgs[t->nmsgs++];
	m->level = level;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->text, sizeof m->text, fmt, ap);
	va_end(ap);
}

void umdev_table_clear(struct umdev_table *t)
{
	free(t->parts);
	free(t->areas);
	free(t->msgs);
	memset(t, 0, sizeof *t);
}

static int by_number(const void *a, const void *b)
{
	const struct umdev_partition *pa = a, *pb = b;
	return (pa->number > pb->number) - (pa->number < pb->number);
}

int umdev_scan(umdev_read_fn read, void *ctx, uint64_t disk_size, struct umdev_table *t)
{
	memset(t, 0, sizeof *t);
	if (disk_size < UMDEV_SECTOR) {
		umdev_table_msg(t, UMDEV_MSG_INFO, "no partition table: the disk is smaller than "
			       "one sector");
		return 0;
	}
	uint8_t sector0[UMDEV_SECTOR];
	int r = umdev_read_exact(read, ctx, sector0, sizeof sector0, 0);
	if (r < 0)
		return r;
	umdev_table_add_area(t, 0, UMDEV_SECTOR);
	r = umdev_scan_mbr(read, ctx, disk_size, sector0, t);
	if (t->count > 1)
		qsort(t->parts, t->count, sizeof *t->parts, by_number);
	return r;
}

const struct umdev_partition *umdev_table_find(const struct umdev_table *t, unsigned number)
{
	for (size_t i = 0; i < t->count; i++)
		if (t->parts[i].number == number)
			return &t->parts[i];
	return NULL;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

bool umdev_table_touches(const struct umdev_table *t, uint64_t disk_size, uint64_t off,
			 uint64_t len)
{
	uint64_t head = UMDEV_HEAD_BYTES, tail = UMDEV_TAIL_BYTES;
	if (overlaps(off, len, 0, head))
		return true;
	if (disk_size > tail && overlaps(off, len, disk_size - tail, tail))
		return true;
	for (size_t i = 0; t && i < t->nareas; i++)
		if (overlaps(off, len, t->areas[i].start, t->areas[i].length))
			return true;
	return false;
}

const char *umdev_scheme_name(enum umdev_scheme s)
{
	switch (s) {
	case UMDEV_SCHEME_MBR: return "MBR";
	case UMDEV_SCHEME_GPT: return "GPT";
	case UMDEV_SCHEME_NONE: break;
	}
	return "none";
}
