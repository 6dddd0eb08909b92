/* See disk.h: the disk, its partitions, and re-reading the table. */
#define _GNU_SOURCE
#include "disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct umdev_extent *extent_new(unsigned number, uint64_t start, uint64_t length,
				       const struct umdev_partition *info)
{
	struct umdev_extent *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	e->refs = 1;
	e->number = number;
	e->start = start;
	e->length = length;
	if (info)
		e->info = *info;
	return e;
}

void umdev_extent_get(struct umdev_extent *e)
{
	__atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
}

void umdev_extent_put(struct umdev_extent *e)
{
	if (e && __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(e);
}

bool umdev_extent_gone(const struct umdev_extent *e)
{
	return __atomic_load_n(&e->gone, __ATOMIC_ACQUIRE);
}

struct umdev_disk *umdev_disk_new(struct vo_block *dev, uint64_t null_size, bool partscan)
{
	struct umdev_disk *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	d->dev = dev;
	d->size = dev ? vo_block_size(dev) : null_size;
	d->partscan = partscan && dev;
	uint64_t base;
	struct stat st;
	int fd = dev ? vo_block_fd(dev, &base) : -1;
	d->trim_zeroes = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	d->direct_fd = -1;
	d->areas_lo = UINT64_MAX;
	d->whole = extent_new(0, 0, d->size, NULL);
	if (!d->whole) {
		free(d);
		return NULL;
	}
	pthread_mutex_init(&d->rescan_lock, NULL);
	pthread_rwlock_init(&d->table_lock, NULL);
	return d;
}

void umdev_disk_free(struct umdev_disk *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->nparts; i++)
		umdev_extent_put(d->parts[i]);
	free(d->parts);
	umdev_extent_put(d->whole);
	umdev_table_clear(&d->table);
	pthread_rwlock_destroy(&d->table_lock);
	pthread_mutex_destroy(&d->rescan_lock);
	if (d->direct_fd >= 0)
		close(d->direct_fd);
	if (d->dev)
		vo_block_close(d->dev);
	free(d);
}

int umdev_disk_use_direct_io(struct umdev_disk *d)
{
	uint64_t base;
	int fd = d->dev ? vo_block_fd(d->dev, &base) : -1;
	if (fd < 0)
		return -EOPNOTSUPP;
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int flags = (vo_block_readonly(d->dev) ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC;
	int dfd = open(path, flags);
	if (dfd < 0)
		return -errno;
	d->direct_fd = dfd;
	return 0;
}

static ssize_t read_disk(void *ctx, void *buf, size_t len, uint64_t off)
{
	return vo_block_pread(ctx, buf, len, off);
}

static int add_change(struct umdev_changes *ch, enum umdev_change_kind kind, unsigned number,
		      struct umdev_extent *e)
{
	if (!ch)
		return 0;
	struct umdev_change *items = realloc(ch->items, (ch->count + 1) * sizeof *items);
	if (!items)
		return -ENOMEM;
	ch->items = items;
	if (e)
		umdev_extent_get(e);
	items[ch->count++] = (struct umdev_change){ kind, number, e };
	return 0;
}

void umdev_changes_clear(struct umdev_changes *ch)
{
	for (size_t i = 0; i < ch->count; i++)
		umdev_extent_put(ch->items[i].extent);
	free(ch->items);
	ch->items = NULL;
	ch->count = 0;
}

static void retire(struct umdev_extent *e)
{
	__atomic_store_n(&e->gone, true, __ATOMIC_RELEASE);
	umdev_extent_put(e);
}

int umdev_disk_rescan(struct umdev_disk *d, struct umdev_changes *ch)
{
	pthread_mutex_lock(&d->rescan_lock);
	/* Cleared before reading: a write that lands during the scan marks it dirty again. */
	__atomic_store_n(&d->table_dirty, false, __ATOMIC_SEQ_CST);
	struct umdev_table t;
	int r = 0;
	if (d->partscan)
		r = umdev_scan(read_disk, d->dev, d->size, &t);
	else
		memset(&t, 0, sizeof t);

	struct umdev_extent **parts = calloc(t.count ? t.count : 1, sizeof *parts);
	if (!parts) {
		umdev_table_clear(&t);
		pthread_mutex_unlock(&d->rescan_lock);
		return -ENOMEM;
	}
	/* Merge the old and new lists (both sorted by number). */
	size_t i = 0, j = 0, n = 0;
	while (i < d->nparts || j < t.count) {
		struct umdev_extent *old = i < d->nparts ? d->parts[i] : NULL;
		const struct umdev_partition *p = j < t.count ? &t.parts[j] : NULL;
		if (old && (!p || old->number < p->number)) {
			add_change(ch, UMDEV_REMOVED, old->number, NULL);
			retire(old);
			i++;
			continue;
		}
		if (old && old->number == p->number && old->start == p->start &&
		    old->length == p->length) {
			old->info = *p; /* the type or name may change in place; I/O does not */
			parts[n++] = old;
			i++, j++;
			continue;
		}
		struct umdev_extent *e = extent_new(p->number, p->start, p->length, p);
		if (!e) {
			r = -ENOMEM;
			j++;
			continue;
		}
		parts[n++] = e;
		if (old && old->number == p->number) {
			add_change(ch, UMDEV_MOVED, p->number, e);
			retire(old);
			i++;
		} else {
			add_change(ch, UMDEV_ADDED, p->number, e);
		}
		j++;
	}
	uint64_t lo = UINT64_MAX, hi = 0;
	for (size_t k = 0; k < t.nareas; k++) {
		const struct umdev_range *a = &t.areas[k];
		/* within the fixed head or tail, which every write is checked against anyway */
		if (a->start + a->length <= UMDEV_HEAD_BYTES ||
		    (d->size > UMDEV_TAIL_BYTES && a->start >= d->size - UMDEV_TAIL_BYTES))
			continue;
		lo = a->start < lo ? a->start : lo;
		hi = a->start + a->length > hi ? a->start + a->length : hi;
	}
	pthread_rwlock_wrlock(&d->table_lock);
	free(d->parts);
	d->parts = parts;
	d->nparts = n;
	umdev_table_clear(&d->table);
	d->table = t;
	__atomic_store_n(&d->areas_lo, lo, __ATOMIC_RELEASE);
	__atomic_store_n(&d->areas_hi, hi, __ATOMIC_RELEASE);
	pthread_rwlock_unlock(&d->table_lock);
	pthread_mutex_unlock(&d->rescan_lock);
	return r;
}

struct umdev_extent *umdev_disk_get(struct umdev_disk *d, unsigned number)
{
	if (number == 0) {
		umdev_extent_get(d->whole);
		return d->whole;
	}
	struct umdev_extent *found = NULL;
	pthread_rwlock_rdlock(&d->table_lock);
	for (size_t i = 0; i < d->nparts; i++) {
		if (d->parts[i]->number == number) {
			found = d->parts[i];
			umdev_extent_get(found);
			break;
		}
	}
	pthread_rwlock_unlock(&d->table_lock);
	return found;
}

bool umdev_disk_table_dirty(struct umdev_disk *d)
{
	return __atomic_load_n(&d->table_dirty, __ATOMIC_SEQ_CST);
}

void umdev_note_write(struct umdev_disk *d, uint64_t abs_off, uint64_t len)
{
	__atomic_store_n(&d->unflushed, true, __ATOMIC_RELEASE);
	if (!d->partscan || umdev_disk_table_dirty(d))
		return;
	/* The common case without a lock: a write to the fixed head or tail is a table write;
	 * one that misses the span of the other areas is not. */
	if (umdev_table_touches(NULL, d->size, abs_off, len)) {
		__atomic_store_n(&d->table_dirty, true, __ATOMIC_SEQ_CST);
		return;
	}
	uint64_t lo = __atomic_load_n(&d->areas_lo, __ATOMIC_ACQUIRE);
	uint64_t hi = __atomic_load_n(&d->areas_hi, __ATOMIC_ACQUIRE);
	if (lo >= hi || abs_off + len <= lo || abs_off >= hi)
		return;
	pthread_rwlock_rdlock(&d->table_lock);
	bool touches = umdev_table_touches(&d->table, d->size, abs_off, len);
	pthread_rwlock_unlock(&d->table_lock);
	if (touches)
		__atomic_store_n(&d->table_dirty, true, __ATOMIC_SEQ_CST);
}
