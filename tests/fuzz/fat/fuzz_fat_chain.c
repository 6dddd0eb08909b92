/* libFuzzer harness: the FAT table (fat_table.c). The first bytes choose the FAT type and the
 * cluster count, the rest is the table. Every chain is walked (loops, out-of-range numbers,
 * free and bad clusters must end in -EIO, never in a hang); then allocation and truncation run
 * on it, and the free count must still match a recount. */
#include "fat_table.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t recount(const struct fat_table *t)
{
	uint32_t n = 0;
	for (uint32_t c = 2; c < t->nentries; c++)
		n += fat_get(t, c) == FAT_FREE;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	enum fat_type type = data[0] % 3 == 0 ? FAT12 : data[0] % 3 == 1 ? FAT16 : FAT32;
	uint32_t clusters = 1 + ((uint32_t)data[1] << 8 | data[2]) % 4000;
	data += 3;
	size -= 3;
	size_t n = (size_t)clusters + 2;
	size_t need = type == FAT12 ? (n * 3 + 1) / 2 : n * (type == FAT16 ? 2 : 4);
	uint8_t *raw = calloc(1, need);
	memcpy(raw, data, size < need ? size : need);
	struct fat_table t;
	if (fat_table_init(&t, type, clusters, raw, need) < 0) {
		free(raw);
		return 0;
	}
	struct fat_extents e = { 0 };
	for (uint32_t c = 0; c < t.nentries + 2; c++) {
		int r = fat_chain_extents(&t, c, &e);
		if (r == 0 && e.total > t.nentries - 2)
			abort();
		if (r != 0 && r != -EIO)
			abort();
	}
	/* allocate, grow, truncate: the count stays true */
	struct fat_extents a = { 0 };
	uint32_t want = size ? data[0] % 50 : 7;
	if (fat_alloc(&t, 0, want, &a) == 0) {
		if (a.total != want)
			abort();
		fat_alloc(&t, fat_extents_last(&a), want / 2 + 1, &a);
		struct fat_extents w = { 0 };
		if (a.total && (fat_chain_extents(&t, a.v[0].start, &w) != 0 || w.total != a.total))
			abort();
		fat_extents_free(&w);
		fat_truncate_extents(&t, &a, a.total / 3);
		if (a.total)
			fat_free_extents(&t, &a);
	}
	if (t.free_count != recount(&t))
		abort();
	fat_extents_free(&a);
	fat_extents_free(&e);
	fat_table_free(&t);
	return 0;
}
