/* Unit tests of fsmods/fat/fat_claims.c on a small FAT16 volume built in memory: a clean tree
 * has no cross-links; a chain that runs into another file's first cluster, a directory entry
 * that names its own directory, and an entry whose first cluster the FAT calls free are found;
 * the allocator never takes a claimed free cluster; a loop in the tree ends the scan; a broken
 * directory chain is read up to its break. */
#include "check.h"
#include "fat_claims.h"
#include "fat_dir.h"
#include "fat_endian.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLUSTERS 100
#define CS 512

/* The volume: the fixed root (16 entries) then the data clusters, 2 onwards. */
static uint8_t disk[CS + CLUSTERS * CS];
static struct fat_geometry g;
static struct fat_table t;

static unsigned reads;

static int mem_read(void *ctx, void *buf, size_t len, uint64_t off)
{
	(void)ctx;
	reads++;
	if (off + len > sizeof disk)
		return -EIO;
	memcpy(buf, disk + off, len);
	return 0;
}

static uint8_t *cluster(uint32_t c)
{
	return disk + fat_cluster_offset(&g, c);
}

static void entry(uint8_t *e, const char *name11, uint8_t attr, uint32_t first)
{
	memset(e, 0, FAT_ENTRY_SIZE);
	memcpy(e, name11, 11);
	e[DE_ATTR] = attr;
	fat_de_set_first_cluster(e, first, false);
}

/* Root: A (2, 3), B (4, 5), directory D (6) holding ".", ".." and C (7). */
static void volume(void)
{
	memset(disk, 0, sizeof disk);
	memset(&g, 0, sizeof g);
	g.type = FAT16;
	g.sector_size = g.cluster_size = CS;
	g.root_entries = CS / FAT_ENTRY_SIZE;
	g.root_offset = 0;
	g.data_offset = CS;
	g.cluster_count = CLUSTERS;
	size_t bytes = (CLUSTERS + 2) * 2;
	uint8_t *raw = calloc(1, bytes);
	put_le16(raw, 0xFFF8), put_le16(raw + 2, 0xFFFF);
	CHECK_EQ(fat_table_init(&t, FAT16, CLUSTERS, raw, bytes), 0);
	fat_set(&t, 2, 3), fat_set(&t, 3, FAT_EOC);
	fat_set(&t, 4, 5), fat_set(&t, 5, FAT_EOC);
	fat_set(&t, 6, FAT_EOC);
	fat_set(&t, 7, FAT_EOC);
	t.free_count -= 6;
	entry(disk, "A       BIN", FAT_ATTR_ARCHIVE, 2);
	entry(disk + 32, "B       BIN", FAT_ATTR_ARCHIVE, 4);
	entry(disk + 64, "D          ", FAT_ATTR_DIR, 6);
	entry(cluster(6), ".          ", FAT_ATTR_DIR, 6);
	entry(cluster(6) + 32, "..         ", FAT_ATTR_DIR, 0);
	entry(cluster(6) + 64, "C       TXT", FAT_ATTR_ARCHIVE, 7);
}

static bool touches(const struct fat_claims *c, uint32_t first)
{
	struct fat_extents e = { 0 };
	fat_chain_extents(&t, first, &e);
	bool r = fat_claims_touch(c, &e);
	fat_extents_free(&e);
	return r;
}

static void test_clean_tree_has_no_cross_links(void)
{
	struct fat_claims c;
	volume();
	CHECK_EQ(fat_claims_scan(&c, &t, &g, mem_read, NULL), 0);
	CHECK_EQ(c.contested, 0);
	CHECK_EQ(c.claimed_free, 0);
	CHECK_EQ(c.dirs, 2); /* the root and D */
	CHECK(c.hands_off == NULL);
	CHECK(!touches(&c, 2) && !touches(&c, 4) && !touches(&c, 7));
	fat_claims_free(&c);
	fat_table_free(&t);
}

static void test_chain_running_into_another_file(void)
{
	struct fat_claims c;
	volume();
	fat_set(&t, 3, 4); /* A's chain now goes on into B's: 2, 3, 4, 5 */
	CHECK_EQ(fat_claims_scan(&c, &t, &g, mem_read, NULL), 0);
	CHECK_EQ(c.contested, 1); /* cluster 4: B's entry and A's link */
	CHECK(fat_claims_hands_off(&c, 4));
	CHECK(!fat_claims_hands_off(&c, 5));
	CHECK(touches(&c, 2)); /* both files hold it */
	CHECK(touches(&c, 4));
	CHECK(!touches(&c, 7)); /* the rest is untouched */
	fat_claims_free(&c);
	fat_table_free(&t);
}

static void test_entry_naming_its_own_directory_and_a_loop(void)
{
	struct fat_claims c;
	volume();
	entry(cluster(6) + 96, "LOOP       ", FAT_ATTR_DIR, 6); /* D inside D */
	CHECK_EQ(fat_claims_scan(&c, &t, &g, mem_read, NULL), 0); /* and the scan ends */
	CHECK_EQ(c.contested, 1);
	CHECK(touches(&c, 6));
	CHECK_EQ(c.dirs, 2);
	fat_claims_free(&c);
	fat_table_free(&t);
}

static void test_claimed_free_cluster_is_never_allocated(void)
{
	struct fat_claims c;
	volume();
	fat_set(&t, 7, FAT_FREE); /* C's entry still names 7 */
	t.free_count++;
	CHECK_EQ(fat_claims_scan(&c, &t, &g, mem_read, NULL), 0);
	CHECK_EQ(c.contested, 0);
	CHECK_EQ(c.claimed_free, 1);
	CHECK(fat_claims_hands_off(&c, 7));
	t.avoid = c.hands_off;
	t.avoid_free = c.claimed_free;
	uint32_t takeable = fat_table_takeable(&t);
	CHECK_EQ(takeable, t.free_count - 1);
	struct fat_extents all = { 0 };
	CHECK_EQ(fat_alloc(&t, 0, takeable + 1, &all), -ENOSPC);
	CHECK_EQ(fat_alloc(&t, 0, takeable, &all), 0); /* every cluster but 7 */
	CHECK_EQ(fat_get(&t, 7), FAT_FREE);
	CHECK_EQ(fat_table_takeable(&t), 0);
	fat_extents_free(&all);
	fat_claims_free(&c);
	fat_table_free(&t);
}

static void test_broken_directory_chain_is_scanned_up_to_the_break(void)
{
	struct fat_claims c;
	volume();
	fat_set(&t, 6, 500); /* D's chain leaves the volume after its first cluster */
	fat_set(&t, 7, FAT_FREE); /* and C, in that first cluster, names a free cluster */
	t.free_count++;
	CHECK_EQ(fat_claims_scan(&c, &t, &g, mem_read, NULL), 0);
	CHECK_EQ(c.contested, 0);
	CHECK_EQ(c.claimed_free, 1); /* C was read: D's first cluster was scanned */
	fat_claims_free(&c);
	fat_table_free(&t);
}

static void test_directories_sharing_clusters_are_read_once(void)
{
	struct fat_claims c;
	volume();
	/* E: a directory whose chain is its own cluster 8 then D's cluster 6, named by ten
	 * entries: each cluster is still read once */
	fat_set(&t, 8, 6);
	t.free_count--;
	for (int i = 0; i < 10; i++) {
		char name[12];
		snprintf(name, sizeof name, "E%-10d", i);
		entry(disk + 96 + 32 * i, name, FAT_ATTR_DIR, 8);
	}
	reads = 0;
	CHECK_EQ(fat_claims_scan(&c, &t, &g, mem_read, NULL), 0);
	CHECK_EQ(reads, 3); /* the root, 6 and 8 */
	CHECK_EQ(c.dirs, 3);
	CHECK(fat_claims_hands_off(&c, 6)); /* D's entry and E's link */
	CHECK(fat_claims_hands_off(&c, 8)); /* ten entries */
	fat_claims_free(&c);
	fat_table_free(&t);
}

int main(void)
{
	RUN(test_clean_tree_has_no_cross_links);
	RUN(test_chain_running_into_another_file);
	RUN(test_entry_naming_its_own_directory_and_a_loop);
	RUN(test_claimed_free_cluster_is_never_allocated);
	RUN(test_broken_directory_chain_is_scanned_up_to_the_break);
	RUN(test_directories_sharing_clusters_are_read_once);
	return CHECK_DONE();
}
