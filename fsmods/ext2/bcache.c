/* See bcache.h. A hash table of blocks plus an LRU list; written here rather than taken from a
 * library because it must be coherent with the direct data path (bcache_*_direct), which no
 * general-purpose cache knows about, and because it fits in two hundred lines. */
#include "bcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	uint64_t blk;
	struct entry *hnext;       /* hash chain */
	struct entry *prev, *next; /* LRU list; bc->lru->next is the most recently used */
	struct entry *dprev, *dnext; /* the dirty list, when dirty */
	bool dirty;
	unsigned char data[];
};

struct bcache {
	struct vo_block *dev;
	unsigned bsize;
	size_t max_bytes, max_count, count, ndirty;
	size_t nbuckets; /* a power of two */
	struct entry **buckets;
	struct entry *lru; /* the sentinel of the LRU list (it holds no data) */
	/* The dirty blocks, so that a writeback costs what is dirty, not what is cached: a close
	 * of a written file writes back (see op_flush), with thousands of blocks cached. */
	struct entry *dirty;
	/* Where a run of dirty blocks is put together for one write: kept, because a writeback
	 * per close is frequent and a 1 MiB malloc each time is not free (an mmap and munmap,
	 * and under AddressSanitizer milliseconds of shadow poisoning). */
	unsigned char *staging;
	struct bcache_stats st;
};

static size_t bucket_of(const struct bcache *bc, uint64_t blk)
{
	return (size_t)((blk * 0x9E3779B97F4A7C15ULL) >> 20) & (bc->nbuckets - 1);
}

static struct entry *lookup(const struct bcache *bc, uint64_t blk)
{
	for (struct entry *e = bc->buckets[bucket_of(bc, blk)]; e; e = e->hnext)
		if (e->blk == blk)
			return e;
	return NULL;
}

static void lru_unlink(struct entry *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
}

static void lru_push_front(struct bcache *bc, struct entry *e)
{
	e->next = bc->lru->next;
	e->prev = bc->lru;
	bc->lru->next->prev = e;
	bc->lru->next = e;
}

static void touch(struct bcache *bc, struct entry *e)
{
	lru_unlink(e);
	lru_push_front(bc, e);
}

static void set_dirty(struct bcache *bc, struct entry *e)
{
	e->dirty = true;
	e->dprev = NULL;
	e->dnext = bc->dirty;
	if (bc->dirty)
		bc->dirty->dprev = e;
	bc->dirty = e;
	bc->ndirty++;
}

static void set_clean(struct bcache *bc, struct entry *e)
{
	if (e->dprev)
		e->dprev->dnext = e->dnext;
	else
		bc->dirty = e->dnext;
	if (e->dnext)
		e->dnext->dprev = e->dprev;
	e->dirty = false;
	bc->ndirty--;
}

static void remove_entry(struct bcache *bc, struct entry *e)
{
	struct entry **pp = &bc->buckets[bucket_of(bc, e->blk)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	lru_unlink(e);
	if (e->dirty)
		set_clean(bc, e);
	bc->count--;
	free(e);
}

static void drop_all(struct bcache *bc)
{
	while (bc->lru->next != bc->lru)
		remove_entry(bc, bc->lru->next);
}

static void size_table(struct bcache *bc)
{
	bc->max_count = bc->max_bytes / bc->bsize;
	if (bc->max_count < 64)
		bc->max_count = 64;
	size_t n = 64;
	while (n < bc->max_count)
		n <<= 1;
	free(bc->buckets);
	bc->nbuckets = n;
	bc->buckets = calloc(n, sizeof *bc->buckets);
}

struct bcache *bcache_new(struct vo_block *dev, unsigned block_size, size_t max_bytes)
{
	struct bcache *bc = calloc(1, sizeof *bc);
	if (!bc)
		return NULL;
	bc->dev = dev;
	bc->bsize = block_size;
	bc->max_bytes = max_bytes;
	bc->lru = calloc(1, sizeof *bc->lru);
	if (!bc->lru) {
		free(bc);
		return NULL;
	}
	bc->lru->next = bc->lru->prev = bc->lru;
	size_table(bc);
	if (!bc->buckets) {
		free(bc->lru);
		free(bc);
		return NULL;
	}
	return bc;
}

void bcache_free(struct bcache *bc)
{
	if (!bc)
		return;
	drop_all(bc);
	free(bc->buckets);
	free(bc->lru);
	free(bc->staging);
	free(bc);
}

unsigned bcache_block_size(const struct bcache *bc)
{
	return bc->bsize;
}

struct vo_block *bcache_device(const struct bcache *bc)
{
	return bc->dev;
}

int bcache_set_block_size(struct bcache *bc, unsigned block_size)
{
	if (block_size == bc->bsize)
		return 0;
	int r = bcache_writeback(bc);
	if (r < 0)
		return r;
	drop_all(bc);
	bc->bsize = block_size;
	size_table(bc);
	return bc->buckets ? 0 : -ENOMEM;
}

static int dev_read(struct bcache *bc, uint64_t off, size_t len, void *buf)
{
	ssize_t r = vo_block_pread(bc->dev, buf, len, off);
	if (r < 0)
		return (int)r;
	return (size_t)r == len ? 0 : -EIO;
}

static int dev_write(struct bcache *bc, uint64_t off, size_t len, const void *buf)
{
	ssize_t r = vo_block_pwrite(bc->dev, buf, len, off);
	if (r < 0)
		return (int)r;
	return (size_t)r == len ? 0 : -EIO;
}

/* Make room for one more block: evict clean blocks from the cold end. When the coldest block
 * is dirty, everything dirty goes out at once (in order) rather than one block at a time. */
static int make_room(struct bcache *bc)
{
	while (bc->count >= bc->max_count) {
		struct entry *victim = bc->lru->prev;
		if (victim->dirty) {
			int r = bcache_writeback(bc);
			if (r < 0)
				return r;
		}
		remove_entry(bc, victim);
	}
	return 0;
}

static struct entry *insert(struct bcache *bc, uint64_t blk, const void *data, bool dirty)
{
	if (make_room(bc) < 0)
		return NULL;
	struct entry *e = malloc(sizeof *e + bc->bsize);
	if (!e)
		return NULL;
	e->blk = blk;
	e->dirty = false;
	memcpy(e->data, data, bc->bsize);
	size_t b = bucket_of(bc, blk);
	e->hnext = bc->buckets[b];
	bc->buckets[b] = e;
	lru_push_front(bc, e);
	bc->count++;
	if (dirty)
		set_dirty(bc, e);
	return e;
}

int bcache_read(struct bcache *bc, uint64_t blk, size_t n, void *buf)
{
	unsigned char *out = buf;
	size_t i = 0;
	while (i < n) {
		struct entry *e = lookup(bc, blk + i);
		if (e) {
			memcpy(out + i * bc->bsize, e->data, bc->bsize);
			touch(bc, e);
			bc->st.hits++;
			i++;
			continue;
		}
		/* read the whole run of missing blocks at once */
		size_t j = i + 1;
		while (j < n && !lookup(bc, blk + j))
			j++;
		int r = dev_read(bc, (blk + i) * bc->bsize, (j - i) * bc->bsize,
				 out + i * bc->bsize);
		if (r < 0)
			return r;
		bc->st.misses += j - i;
		for (; i < j; i++)
			insert(bc, blk + i, out + i * bc->bsize, false); /* best effort */
	}
	return 0;
}

int bcache_write(struct bcache *bc, uint64_t blk, size_t n, const void *buf)
{
	const unsigned char *in = buf;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *src = in + i * bc->bsize;
		struct entry *e = lookup(bc, blk + i);
		if (e) {
			/* libext2fs rewrites whole bitmaps and descriptor tables on every flush;
			 * an unchanged clean block need not go to the device again */
			if (!e->dirty && memcmp(e->data, src, bc->bsize) == 0) {
				bc->st.skipped_same++;
			} else {
				memcpy(e->data, src, bc->bsize);
				if (!e->dirty)
					set_dirty(bc, e);
			}
			touch(bc, e);
			continue;
		}
		if (!insert(bc, blk + i, src, true)) {
			/* no memory: write through */
			int r = dev_write(bc, (blk + i) * bc->bsize, bc->bsize, src);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* The blocks overlapping [off, off+len). */
static void block_span(const struct bcache *bc, uint64_t off, size_t len, uint64_t *first,
		       uint64_t *last)
{
	*first = off / bc->bsize;
	*last = (off + len - 1) / bc->bsize;
}

/* Copy between a cached block and the byte range [off, off+len) where they overlap. */
static void overlap_copy(const struct bcache *bc, struct entry *e, uint64_t off, size_t len,
			 unsigned char *bytes, bool to_bytes)
{
	uint64_t bstart = e->blk * bc->bsize, bend = bstart + bc->bsize;
	uint64_t s = off > bstart ? off : bstart, t = off + len < bend ? off + len : bend;
	if (s >= t)
		return;
	if (to_bytes)
		memcpy(bytes + (s - off), e->data + (s - bstart), t - s);
	else
		memcpy(e->data + (s - bstart), bytes + (s - off), t - s);
}

int bcache_read_bytes(struct bcache *bc, uint64_t off, size_t len, void *buf)
{
	if (len == 0)
		return 0;
	int r = dev_read(bc, off, len, buf);
	if (r < 0)
		return r;
	uint64_t first, last;
	block_span(bc, off, len, &first, &last);
	for (uint64_t b = first; b <= last; b++) {
		struct entry *e = lookup(bc, b);
		if (e && e->dirty)
			overlap_copy(bc, e, off, len, buf, true);
	}
	return 0;
}

/* A block from the device into the cache (clean), for a byte write to land in. */
static struct entry *load(struct bcache *bc, uint64_t blk)
{
	unsigned char *tmp = malloc(bc->bsize);
	struct entry *e = NULL;
	if (tmp && dev_read(bc, blk * bc->bsize, bc->bsize, tmp) == 0) {
		e = insert(bc, blk, tmp, false);
		bc->st.misses++;
	}
	free(tmp);
	return e;
}

int bcache_write_bytes(struct bcache *bc, uint64_t off, size_t len, const void *buf)
{
	if (len == 0)
		return 0;
	uint64_t first, last;
	block_span(bc, off, len, &first, &last);
	/* libext2fs writes the superblock this way at every flush, a few bytes at a time (the
	 * fields that changed): in the cache, the writes of a flush become one block write at
	 * writeback — a close of a written file flushes (see op_flush). Ranges of more than two
	 * blocks, and blocks that cannot be read whole (the end of a short device) or cached,
	 * are written through. (The first block is made the most recent of at least 64: the
	 * second load cannot evict it.) */
	struct entry *e[2] = { NULL, NULL };
	bool cached = last - first < 2;
	for (uint64_t b = first; b <= last && cached; b++) {
		e[b - first] = lookup(bc, b);
		if (!e[b - first])
			e[b - first] = load(bc, b);
		cached = e[b - first] != NULL;
		if (cached)
			touch(bc, e[b - first]);
	}
	if (cached) {
		for (uint64_t b = first; b <= last; b++) {
			overlap_copy(bc, e[b - first], off, len, (unsigned char *)buf, false);
			if (!e[b - first]->dirty)
				set_dirty(bc, e[b - first]);
		}
		return 0;
	}
	int r = dev_write(bc, off, len, buf);
	if (r < 0)
		return r;
	for (uint64_t b = first; b <= last; b++) {
		struct entry *c = lookup(bc, b);
		if (c) /* a clean copy stays clean: the device now holds the same bytes */
			overlap_copy(bc, c, off, len, (unsigned char *)buf, false);
	}
	return 0;
}

int bcache_read_direct(struct bcache *bc, uint64_t blk, size_t n, void *buf)
{
	int r = dev_read(bc, blk * bc->bsize, n * bc->bsize, buf);
	if (r < 0 || bc->ndirty == 0)
		return r;
	unsigned char *out = buf;
	for (size_t i = 0; i < n; i++) {
		struct entry *e = lookup(bc, blk + i);
		if (e && e->dirty)
			memcpy(out + i * bc->bsize, e->data, bc->bsize);
	}
	return 0;
}

void bcache_forget(struct bcache *bc, uint64_t blk, uint64_t n)
{
	if (bc->count == 0)
		return;
	if (n > bc->count) {
		/* cheaper to walk what is cached than the range */
		struct entry *e = bc->lru->next;
		while (e != bc->lru) {
			struct entry *next = e->next;
			if (e->blk >= blk && e->blk - blk < n)
				remove_entry(bc, e);
			e = next;
		}
		return;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct entry *e = lookup(bc, blk + i);
		if (e)
			remove_entry(bc, e);
	}
}

int bcache_write_direct(struct bcache *bc, uint64_t blk, size_t n, const void *buf)
{
	int r = dev_write(bc, blk * bc->bsize, n * bc->bsize, buf);
	if (r < 0)
		return r;
	bcache_forget(bc, blk, n);
	return 0;
}

int bcache_zero(struct bcache *bc, uint64_t blk, uint64_t n)
{
	int r = vo_block_zero(bc->dev, blk * bc->bsize, n * bc->bsize);
	if (r < 0)
		return r;
	bcache_forget(bc, blk, n);
	return 0;
}

static int cmp_blk(const void *a, const void *b)
{
	const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
	return x->blk < y->blk ? -1 : x->blk > y->blk;
}

enum { RUN_MAX_BLOCKS_BYTES = 1 << 20 };

int bcache_writeback(struct bcache *bc)
{
	if (bc->ndirty == 0)
		return 0;
	struct entry **dirty = malloc(bc->ndirty * sizeof *dirty);
	size_t run_max = RUN_MAX_BLOCKS_BYTES / bc->bsize;
	if (!bc->staging)
		bc->staging = malloc(RUN_MAX_BLOCKS_BYTES); /* run_max blocks of any size */
	if (!dirty || !bc->staging) {
		free(dirty);
		return -ENOMEM;
	}
	size_t nd = 0;
	for (struct entry *e = bc->dirty; e; e = e->dnext)
		dirty[nd++] = e;
	qsort(dirty, nd, sizeof *dirty, cmp_blk);
	int r = 0;
	for (size_t i = 0; i < nd && r == 0;) {
		size_t j = i + 1;
		while (j < nd && j - i < run_max && dirty[j]->blk == dirty[j - 1]->blk + 1)
			j++;
		const void *src = dirty[i]->data;
		if (j - i > 1) {
			for (size_t k = i; k < j; k++)
				memcpy(bc->staging + (k - i) * bc->bsize, dirty[k]->data, bc->bsize);
			src = bc->staging;
		}
		r = dev_write(bc, dirty[i]->blk * bc->bsize, (j - i) * bc->bsize, src);
		if (r == 0) {
			for (size_t k = i; k < j; k++)
				set_clean(bc, dirty[k]);
			bc->st.blocks_written += j - i;
		}
		i = j;
	}
	bc->st.writebacks++;
	free(dirty);
	return r;
}

int bcache_sync(struct bcache *bc)
{
	int r = bcache_writeback(bc);
	if (r < 0)
		return r;
	return vo_block_flush(bc->dev);
}

bool bcache_has_dirty(const struct bcache *bc)
{
	return bc->ndirty > 0;
}

void bcache_get_stats(const struct bcache *bc, struct bcache_stats *st)
{
	*st = bc->st;
	st->cached = bc->count;
	st->dirty = bc->ndirty;
}
