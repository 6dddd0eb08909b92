/* See fat_table.h. */
#include "fat_table.h"

#include "fat_endian.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void fat_table_mark_dirty(struct fat_table *t, size_t lo, size_t hi)
{
	for (size_t b = lo / FAT_DIRTY_BLOCK; b * FAT_DIRTY_BLOCK < hi; b++) {
		uint8_t bit = (uint8_t)(1u << (b & 7));
		if (!(t->dirty[b / 8] & bit)) {
			t->dirty[b / 8] |= bit;
			t->ndirty++;
		}
	}
}

static void mark_dirty(struct fat_table *t, size_t lo, size_t hi)
{
	fat_table_mark_dirty(t, lo, hi);
}

uint32_t fat_get(const struct fat_table *t, uint32_t c)
{
	uint32_t v;
	switch (t->type) {
	case FAT12: {
		size_t off = c + c / 2;
		v = le16(t->raw + off);
		v = c & 1 ? v >> 4 : v & 0xFFF;
		if (v >= 0xFF8)
			return FAT_EOC;
		return v == 0xFF7 ? FAT_BAD : v;
	}
	case FAT16:
		v = le16(t->raw + (size_t)c * 2);
		if (v >= 0xFFF8)
			return FAT_EOC;
		return v == 0xFFF7 ? FAT_BAD : v;
	case FAT32:
	default:
		v = le32(t->raw + (size_t)c * 4) & 0x0FFFFFFF;
		if (v >= 0x0FFFFFF8)
			return FAT_EOC;
		return v;
	}
}

void fat_set(struct fat_table *t, uint32_t c, uint32_t value)
{
	switch (t->type) {
	case FAT12: {
		size_t off = c + c / 2;
		uint16_t v = value == FAT_EOC ? 0xFFF : value == FAT_BAD ? 0xFF7 : (uint16_t)value;
		uint16_t old = le16(t->raw + off);
		if (c & 1)
			old = (uint16_t)((old & 0x000F) | (v << 4));
		else
			old = (uint16_t)((old & 0xF000) | (v & 0xFFF));
		put_le16(t->raw + off, old);
		mark_dirty(t, off, off + 2);
		break;
	}
	case FAT16: {
		uint16_t v = value == FAT_EOC ? 0xFFFF : value == FAT_BAD ? 0xFFF7 : (uint16_t)value;
		put_le16(t->raw + (size_t)c * 2, v);
		mark_dirty(t, (size_t)c * 2, (size_t)c * 2 + 2);
		break;
	}
	case FAT32:
	default: {
		uint8_t *p = t->raw + (size_t)c * 4;
		put_le32(p, (le32(p) & 0xF0000000) | (value & 0x0FFFFFFF));
		mark_dirty(t, (size_t)c * 4, (size_t)c * 4 + 4);
		break;
	}
	}
}

int fat_table_init(struct fat_table *t, enum fat_type type, uint32_t cluster_count, uint8_t *raw,
		   size_t raw_len)
{
	memset(t, 0, sizeof *t);
	uint64_t n = (uint64_t)cluster_count + 2;
	/* FAT12 entries are read and written as the 16 bits that hold them: ceil(1.5 n) bytes
	 * still cover the last one */
	uint64_t need = type == FAT12 ? (n * 3 + 1) / 2 : n * (type == FAT16 ? 2 : 4);
	if (raw_len < need)
		return -EINVAL;
	t->dirty = calloc((raw_len + FAT_DIRTY_BLOCK * 8 - 1) / (FAT_DIRTY_BLOCK * 8), 1);
	if (!t->dirty)
		return -ENOMEM;
	t->type = type;
	t->nentries = (uint32_t)n;
	t->raw = raw;
	t->raw_len = raw_len;
	t->next_free = 2;
	for (uint32_t c = 2; c < t->nentries; c++)
		if (fat_get(t, c) == FAT_FREE)
			t->free_count++;
	return 0;
}

void fat_table_free(struct fat_table *t)
{
	free(t->raw);
	free(t->dirty);
	t->raw = NULL;
	t->dirty = NULL;
}

static bool block_dirty(const struct fat_table *t, size_t b)
{
	return t->dirty[b / 8] & (1u << (b & 7));
}

bool fat_table_take_dirty(struct fat_table *t, size_t *lo, size_t *hi)
{
	if (t->ndirty == 0)
		return false;
	size_t nblocks = (t->raw_len + FAT_DIRTY_BLOCK - 1) / FAT_DIRTY_BLOCK, b = 0;
	while (b < nblocks && !t->dirty[b / 8])
		b = (b / 8 + 1) * 8; /* skip clean bytes of the bitmap */
	while (b < nblocks && !block_dirty(t, b))
		b++;
	if (b >= nblocks) {
		t->ndirty = 0;
		return false;
	}
	size_t e = b;
	while (e < nblocks && block_dirty(t, e)) {
		t->dirty[e / 8] &= (uint8_t)~(1u << (e & 7));
		t->ndirty--;
		e++;
	}
	*lo = b * FAT_DIRTY_BLOCK;
	*hi = e * FAT_DIRTY_BLOCK < t->raw_len ? e * FAT_DIRTY_BLOCK : t->raw_len;
	return true;
}

void fat_extents_reset(struct fat_extents *e)
{
	e->n = 0;
	e->total = 0;
}

void fat_extents_free(struct fat_extents *e)
{
	free(e->v);
	memset(e, 0, sizeof *e);
}

int fat_extents_append(struct fat_extents *e, uint32_t c)
{
	if (e->n && e->v[e->n - 1].start + e->v[e->n - 1].count == c) {
		e->v[e->n - 1].count++;
		e->total++;
		return 0;
	}
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 4;
		struct fat_extent *v = realloc(e->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		e->v = v;
		e->cap = cap;
	}
	e->v[e->n++] = (struct fat_extent){ c, 1 };
	e->total++;
	return 0;
}

uint32_t fat_extents_cluster(const struct fat_extents *e, uint32_t index)
{
	for (size_t i = 0; i < e->n; i++) {
		if (index < e->v[i].count)
			return e->v[i].start + index;
		index -= e->v[i].count;
	}
	return 0;
}

int fat_chain_extents(const struct fat_table *t, uint32_t first, struct fat_extents *out)
{
	fat_extents_reset(out);
	if (first == 0)
		return 0;
	uint32_t c = first;
	/* A chain longer than the volume has clusters must revisit one: that is a loop. */
	uint32_t limit = t->nentries - 2;
	for (;;) {
		if (!fat_valid_cluster(t, c))
			return -EIO;
		if (out->total >= limit)
			return -EIO;
		int r = fat_extents_append(out, c);
		if (r < 0)
			return r;
		uint32_t next = fat_get(t, c);
		if (next == FAT_EOC)
			return 0;
		if (next == FAT_FREE || next == FAT_BAD)
			return -EIO;
		c = next;
	}
}

/* Is cluster c free and not one to keep away from? */
static bool takeable(const struct fat_table *t, uint32_t c)
{
	if (fat_get(t, c) != FAT_FREE)
		return false;
	return !t->avoid || !(t->avoid[c / 8] & (1u << (c % 8)));
}

/* Length of the run of takeable clusters that starts at c, up to max. */
static uint32_t free_run(const struct fat_table *t, uint32_t c, uint32_t max)
{
	uint32_t n = 0;
	while (n < max && c + n < t->nentries && takeable(t, c + n))
		n++;
	return n;
}

void fat_table_set_hint(struct fat_table *t, uint32_t last_alloc)
{
	if (!fat_valid_cluster(t, last_alloc))
		return;
	t->last_alloc = last_alloc;
	t->next_free = last_alloc + 1 < t->nentries ? last_alloc + 1 : 2;
}

/* Take clusters [start, start+count) into the chain after *last. */
static int take_run(struct fat_table *t, uint32_t *last, uint32_t start, uint32_t count,
		    struct fat_extents *ext)
{
	for (uint32_t i = 0; i < count; i++) {
		uint32_t c = start + i;
		if (*last)
			fat_set(t, *last, c);
		fat_set(t, c, FAT_EOC);
		*last = c;
		if (ext && fat_extents_append(ext, c) < 0)
			return -ENOMEM;
	}
	t->free_count -= count;
	fat_table_set_hint(t, start + count - 1);
	return 0;
}

int fat_alloc(struct fat_table *t, uint32_t last, uint32_t n, struct fat_extents *ext)
{
	if (n == 0)
		return 0;
	if (n > fat_table_takeable(t))
		return -ENOSPC;
	int r;
	/* 1. Right after the chain's end, so a growing file stays one run. */
	if (last && fat_valid_cluster(t, last + 1)) {
		uint32_t run = free_run(t, last + 1, n);
		if (run) {
			if ((r = take_run(t, &last, last + 1, run, ext)) < 0)
				return r;
			n -= run;
		}
	}
	if (n == 0)
		return 0;
	/* 2. The first free run long enough, searching from the hint round the volume. */
	uint32_t span = t->nentries - 2;
	uint32_t start = fat_valid_cluster(t, t->next_free) ? t->next_free : 2;
	for (uint32_t i = 0; i < span;) {
		uint32_t c = 2 + (start - 2 + i) % span;
		if (!takeable(t, c)) {
			i++;
			continue;
		}
		uint32_t run = free_run(t, c, n);
		if (run == n)
			return take_run(t, &last, c, n, ext);
		i += run;
	}
	/* 3. Fragmented: whatever runs there are, in order from the hint. */
	for (uint32_t i = 0; i < span && n;) {
		uint32_t c = 2 + (start - 2 + i) % span;
		uint32_t run = takeable(t, c) ? free_run(t, c, n) : 0;
		if (run == 0) {
			i++;
			continue;
		}
		if ((r = take_run(t, &last, c, run, ext)) < 0)
			return r;
		n -= run;
		i += run;
	}
	return n ? -EIO : 0; /* free_count said there were enough: the count was wrong */
}

void fat_free_extents(struct fat_table *t, const struct fat_extents *ext)
{
	for (size_t i = 0; i < ext->n; i++)
		for (uint32_t k = 0; k < ext->v[i].count; k++) {
			uint32_t c = ext->v[i].start + k;
			if (fat_valid_cluster(t, c) && fat_get(t, c) != FAT_FREE) {
				fat_set(t, c, FAT_FREE);
				t->free_count++;
			}
		}
	if (ext->n && fat_valid_cluster(t, ext->v[0].start) && ext->v[0].start < t->next_free)
		t->next_free = ext->v[0].start;
}

void fat_truncate_extents(struct fat_table *t, struct fat_extents *ext, uint32_t keep)
{
	if (keep >= ext->total)
		return;
	uint32_t seen = 0;
	size_t kept_runs = 0;
	for (size_t i = 0; i < ext->n; i++) {
		struct fat_extent *x = &ext->v[i];
		uint32_t stay = keep > seen ? keep - seen : 0;
		if (stay > x->count)
			stay = x->count;
		for (uint32_t k = stay; k < x->count; k++) {
			uint32_t c = x->start + k;
			if (fat_valid_cluster(t, c) && fat_get(t, c) != FAT_FREE) {
				fat_set(t, c, FAT_FREE);
				t->free_count++;
			}
			if (c < t->next_free)
				t->next_free = c;
		}
		seen += x->count;
		x->count = stay;
		if (stay)
			kept_runs = i + 1;
	}
	ext->n = kept_runs;
	ext->total = keep;
	if (keep)
		fat_set(t, fat_extents_last(ext), FAT_EOC);
}
