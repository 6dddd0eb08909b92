/* Unit tests of fsmods/fat/fat_table.c: entry packing for the three widths, chain walking with
 * every hostile case (loops, out-of-range, free and bad clusters), allocation that keeps files
 * contiguous, all-or-nothing ENOSPC, truncation, and the dirty range. */
#include "check.h"
#include "fat_endian.h"
#include "fat_table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void table(struct fat_table *t, enum fat_type type, uint32_t clusters)
{
	size_t n = (size_t)clusters + 2;
	size_t bytes = type == FAT12 ? (n * 3 + 1) / 2 : n * (type == FAT16 ? 2 : 4);
	uint8_t *raw = calloc(1, bytes);
	/* entries 0 and 1 reserved as mkfs writes them */
	if (type == FAT12)
		raw[0] = 0xF8, raw[1] = 0xFF, raw[2] = 0xFF;
	else if (type == FAT16)
		put_le16(raw, 0xFFF8), put_le16(raw + 2, 0xFFFF);
	else
		put_le32(raw, 0x0FFFFFF8), put_le32(raw + 4, 0x0FFFFFFF);
	CHECK_EQ(fat_table_init(t, type, clusters, raw, bytes), 0);
}

static void test_fat12_packing(void)
{
	struct fat_table t;
	table(&t, FAT12, 100);
	CHECK_EQ(t.free_count, 100);
	fat_set(&t, 2, 0x123);
	fat_set(&t, 3, 0x456);
	/* entries 2 and 3 share bytes 3..5: 23 61 45 */
	CHECK_EQ(t.raw[3], 0x23);
	CHECK_EQ(t.raw[4], 0x61);
	CHECK_EQ(t.raw[5], 0x45);
	CHECK_EQ(fat_get(&t, 2), 0x123);
	CHECK_EQ(fat_get(&t, 3), 0x456);
	fat_set(&t, 3, FAT_EOC);
	CHECK_EQ(fat_get(&t, 2), 0x123); /* the neighbour keeps its bits */
	CHECK_EQ(fat_get(&t, 3), FAT_EOC);
	CHECK_EQ(t.raw[5], 0xFF);
	t.raw[5] = 0xFF, t.raw[4] = (uint8_t)((t.raw[4] & 0x0F) | 0x80); /* 0xFF8: also an end */
	CHECK_EQ(fat_get(&t, 3), FAT_EOC);
	fat_set(&t, 101, FAT_BAD); /* the last entry */
	CHECK_EQ(fat_get(&t, 101), FAT_BAD);
	fat_table_free(&t);
}

static void test_fat16_fat32_values(void)
{
	struct fat_table t;
	table(&t, FAT16, 5000);
	fat_set(&t, 4000, 4001);
	CHECK_EQ(le16(t.raw + 8000), 4001);
	fat_set(&t, 4001, FAT_EOC);
	CHECK_EQ(le16(t.raw + 8002), 0xFFFF);
	put_le16(t.raw + 8002, 0xFFF8);
	CHECK_EQ(fat_get(&t, 4001), FAT_EOC);
	put_le16(t.raw + 8002, 0xFFF7);
	CHECK_EQ(fat_get(&t, 4001), FAT_BAD);
	fat_table_free(&t);

	table(&t, FAT32, 70000);
	put_le32(t.raw + 4 * 10, 0xA0000000); /* reserved high bits set, entry free */
	CHECK_EQ(fat_get(&t, 10), FAT_FREE);
	fat_set(&t, 10, 11);
	CHECK_EQ(le32(t.raw + 40), 0xA000000B); /* kept, as the specification asks */
	fat_set(&t, 10, FAT_EOC);
	CHECK_EQ(fat_get(&t, 10), FAT_EOC);
	fat_table_free(&t);
}

static void test_dirty_blocks(void)
{
	struct fat_table t;
	size_t lo, hi;
	table(&t, FAT16, 5000);
	CHECK(!fat_table_take_dirty(&t, &lo, &hi));
	fat_set(&t, 100, 5);  /* bytes 200-201: block 0 */
	fat_set(&t, 300, 6);  /* bytes 600-601: block 1 */
	fat_set(&t, 4000, 7); /* bytes 8000-8001: block 15 */
	CHECK(fat_table_take_dirty(&t, &lo, &hi));
	CHECK_EQ(lo, 0);
	CHECK_EQ(hi, 1024); /* blocks 0 and 1 in one run */
	CHECK(fat_table_take_dirty(&t, &lo, &hi));
	CHECK_EQ(lo, 15 * 512);
	CHECK_EQ(hi, 16 * 512);
	CHECK(!fat_table_take_dirty(&t, &lo, &hi));
	/* the last block is clipped to the table */
	fat_set(&t, 5001, FAT_EOC);
	CHECK(fat_table_take_dirty(&t, &lo, &hi));
	CHECK_EQ(hi, t.raw_len);
	CHECK(!fat_table_take_dirty(&t, &lo, &hi));
	/* a FAT12 entry across a block boundary dirties both */
	struct fat_table t12;
	table(&t12, FAT12, 1000);
	fat_set(&t12, 341, 5); /* bytes 511-512 */
	CHECK(fat_table_take_dirty(&t12, &lo, &hi));
	CHECK_EQ(lo, 0);
	CHECK_EQ(hi, 1024 < t12.raw_len ? 1024 : t12.raw_len);
	fat_table_free(&t12);
	fat_table_free(&t);
}

static void test_chain_walking(void)
{
	struct fat_table t;
	struct fat_extents e = { 0 };
	table(&t, FAT32, 1000);
	/* 5 -> 6 -> 7 -> 20 -> 21 -> end: two runs */
	fat_set(&t, 5, 6), fat_set(&t, 6, 7), fat_set(&t, 7, 20), fat_set(&t, 20, 21);
	fat_set(&t, 21, FAT_EOC);
	CHECK_EQ(fat_chain_extents(&t, 5, &e), 0);
	CHECK_EQ(e.n, 2);
	CHECK_EQ(e.total, 5);
	CHECK_EQ(e.v[0].start, 5);
	CHECK_EQ(e.v[0].count, 3);
	CHECK_EQ(e.v[1].start, 20);
	CHECK_EQ(fat_extents_cluster(&e, 3), 20);
	CHECK_EQ(fat_extents_last(&e), 21);
	CHECK_EQ(fat_chain_extents(&t, 0, &e), 0); /* the empty chain */
	CHECK_EQ(e.total, 0);

	/* a loop: 30 -> 31 -> 32 -> 30 */
	fat_set(&t, 30, 31), fat_set(&t, 31, 32), fat_set(&t, 32, 30);
	CHECK_EQ(fat_chain_extents(&t, 30, &e), -EIO);
	fat_set(&t, 40, 40); /* a cluster pointing at itself */
	CHECK_EQ(fat_chain_extents(&t, 40, &e), -EIO);
	/* out of the volume, in both directions */
	fat_set(&t, 50, 5000);
	CHECK_EQ(fat_chain_extents(&t, 50, &e), -EIO);
	fat_set(&t, 51, 1);
	CHECK_EQ(fat_chain_extents(&t, 51, &e), -EIO);
	CHECK_EQ(fat_chain_extents(&t, 1002, &e), -EIO); /* starts outside */
	CHECK_EQ(fat_chain_extents(&t, 1, &e), -EIO);
	/* a free or bad cluster inside a chain */
	fat_set(&t, 60, 61);
	CHECK_EQ(fat_chain_extents(&t, 60, &e), -EIO);
	fat_set(&t, 61, FAT_BAD);
	CHECK_EQ(fat_chain_extents(&t, 60, &e), -EIO);
	/* a chain that visits every cluster once is not a loop: the longest legal chain */
	struct fat_table small;
	table(&small, FAT12, 10);
	for (uint32_t c = 2; c < 11; c++)
		fat_set(&small, c, c + 1);
	fat_set(&small, 11, FAT_EOC);
	CHECK_EQ(fat_chain_extents(&small, 2, &e), 0);
	CHECK_EQ(e.total, 10);
	fat_set(&small, 11, 2);
	CHECK_EQ(fat_chain_extents(&small, 2, &e), -EIO);
	fat_table_free(&small);
	fat_extents_free(&e);
	fat_table_free(&t);
}

static void test_allocation_contiguous_and_enospc(void)
{
	struct fat_table t;
	struct fat_extents e = { 0 };
	table(&t, FAT16, 5000);
	CHECK_EQ(t.last_alloc, 0); /* nothing known */
	CHECK_EQ(fat_alloc(&t, 0, 10, &e), 0);
	CHECK_EQ(e.n, 1);
	CHECK_EQ(e.v[0].start, 2);
	CHECK_EQ(t.free_count, 4990);
	CHECK_EQ(t.last_alloc, 11); /* FSInfo's hint: the last cluster allocated */
	/* a second file, then the first grows: it continues elsewhere in one run */
	struct fat_extents f = { 0 };
	CHECK_EQ(fat_alloc(&t, 0, 5, &f), 0);
	CHECK_EQ(f.v[0].start, 12);
	CHECK_EQ(fat_alloc(&t, fat_extents_last(&e), 20, &e), 0);
	CHECK_EQ(e.n, 2);
	CHECK_EQ(e.v[1].start, 17);
	CHECK_EQ(e.v[1].count, 20);
	CHECK_EQ(fat_get(&t, 11), 17); /* the old end links to the new run */
	struct fat_extents back = { 0 };
	CHECK_EQ(fat_chain_extents(&t, 2, &back), 0);
	CHECK_EQ(back.total, 30);
	/* the file right after has room freed behind it: growth takes it first */
	fat_free_extents(&t, &f);
	CHECK_EQ(fat_get(&t, 12), FAT_FREE);
	CHECK_EQ(t.last_alloc, 36); /* a free does not move the hint, as in Linux */
	struct fat_extents g = { 0 };
	CHECK_EQ(fat_alloc(&t, 0, 3, &g), 0);
	CHECK_EQ(g.v[0].start, 12); /* the hint went back to the freed place */
	/* a run long enough is preferred over the first small hole */
	struct fat_extents h = { 0 };
	CHECK_EQ(fat_alloc(&t, 0, 4, &h), 0);
	CHECK_EQ(h.n, 1);
	CHECK_EQ(h.v[0].start, 37);
	/* ENOSPC changes nothing */
	uint32_t free_before = t.free_count;
	size_t lo, hi;
	while (fat_table_take_dirty(&t, &lo, &hi))
		;
	uint8_t *copy = malloc(t.raw_len);
	memcpy(copy, t.raw, t.raw_len);
	struct fat_extents big = { 0 };
	CHECK_EQ(fat_alloc(&t, 0, free_before + 1, &big), -ENOSPC);
	CHECK_EQ(t.free_count, free_before);
	CHECK(memcmp(copy, t.raw, t.raw_len) == 0);
	CHECK(!fat_table_take_dirty(&t, &lo, &hi));
	/* exactly all that is left, fragmented */
	CHECK_EQ(fat_alloc(&t, 0, free_before, &big), 0);
	CHECK_EQ(t.free_count, 0);
	CHECK_EQ(big.total, free_before);
	CHECK(big.n >= 2);
	struct fat_extents walk = { 0 };
	CHECK_EQ(fat_chain_extents(&t, big.v[0].start, &walk), 0);
	CHECK_EQ(walk.total, free_before);
	free(copy);
	fat_extents_free(&e), fat_extents_free(&f), fat_extents_free(&g), fat_extents_free(&h);
	fat_extents_free(&big), fat_extents_free(&back), fat_extents_free(&walk);
	fat_table_free(&t);
}

static void test_truncate_extents(void)
{
	struct fat_table t;
	struct fat_extents e = { 0 }, x = { 0 }, walk = { 0 };
	table(&t, FAT32, 1000);
	CHECK_EQ(fat_alloc(&t, 0, 5, &e), 0);
	CHECK_EQ(fat_alloc(&t, 0, 1, &x), 0);         /* a neighbour: the file splits */
	CHECK_EQ(fat_alloc(&t, fat_extents_last(&e), 5, &e), 0);
	CHECK_EQ(e.n, 2);
	uint32_t free0 = t.free_count;
	fat_truncate_extents(&t, &e, 7);
	CHECK_EQ(e.total, 7);
	CHECK_EQ(e.n, 2);
	CHECK_EQ(t.free_count, free0 + 3);
	CHECK_EQ(fat_chain_extents(&t, e.v[0].start, &walk), 0);
	CHECK_EQ(walk.total, 7);
	fat_truncate_extents(&t, &e, 3);
	CHECK_EQ(e.n, 1);
	CHECK_EQ(fat_get(&t, 4), FAT_EOC);
	CHECK_EQ(fat_get(&t, 5), FAT_FREE);
	fat_truncate_extents(&t, &e, 0);
	CHECK_EQ(e.total, 0);
	CHECK_EQ(e.n, 0);
	CHECK_EQ(fat_get(&t, 2), FAT_FREE);
	CHECK_EQ(t.free_count, 999);
	CHECK_EQ(fat_get(&t, x.v[0].start), FAT_EOC); /* the neighbour is untouched */
	fat_extents_free(&e), fat_extents_free(&x), fat_extents_free(&walk);
	fat_table_free(&t);
}

static void test_hint_from_fsinfo(void)
{
	struct fat_table t;
	struct fat_extents e = { 0 };
	table(&t, FAT32, 1000);
	fat_table_set_hint(&t, 0xFFFFFFFF); /* unknown, and so are 0, 1 and numbers past the end */
	fat_table_set_hint(&t, 0);
	fat_table_set_hint(&t, 1002);
	CHECK_EQ(t.last_alloc, 0);
	CHECK_EQ(t.next_free, 2);
	fat_table_set_hint(&t, 500);
	CHECK_EQ(t.last_alloc, 500);
	CHECK_EQ(fat_alloc(&t, 0, 3, &e), 0);
	CHECK_EQ(e.v[0].start, 501); /* the search starts after it */
	CHECK_EQ(t.last_alloc, 503);
	fat_table_set_hint(&t, 1001); /* the last cluster: the search wraps round */
	CHECK_EQ(t.next_free, 2);
	fat_extents_free(&e);
	fat_table_free(&t);
}

static void test_short_raw_refused(void)
{
	struct fat_table t;
	uint8_t *raw = calloc(1, 10);
	CHECK_EQ(fat_table_init(&t, FAT16, 100, raw, 10), -EINVAL);
	free(raw);
}

int main(void)
{
	RUN(test_fat12_packing);
	RUN(test_fat16_fat32_values);
	RUN(test_dirty_blocks);
	RUN(test_chain_walking);
	RUN(test_allocation_contiguous_and_enospc);
	RUN(test_truncate_extents);
	RUN(test_hint_from_fsinfo);
	RUN(test_short_raw_refused);
	return CHECK_DONE();
}
