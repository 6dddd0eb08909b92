/* Unit tests of fsmods/ext2/bcache.c over a real block source (mem:, a memfd): write-back,
 * coherence between cached metadata and the direct data path, byte-granular writes, eviction
 * under a small memory limit. */
#include "bcache.h"
#include "check.h"

#include <string.h>

enum { BS = 1024 };

static struct vo_block *dev(void)
{
	char err[256];
	struct vo_block *b = vo_block_open("mem:1M", 0, err, sizeof err);
	if (!b)
		fprintf(stderr, "%s\n", err);
	return b;
}

static void fill(unsigned char *b, int v) { memset(b, v, BS); }

static int dev_byte(struct vo_block *d, uint64_t off)
{
	unsigned char c;
	return vo_block_pread(d, &c, 1, off) == 1 ? c : -1;
}

static void test_writes_wait_for_writeback(void)
{
	struct vo_block *d = dev();
	struct bcache *bc = bcache_new(d, BS, 1 << 20);
	unsigned char b[BS];
	fill(b, 0xAA);
	CHECK_EQ(bcache_write(bc, 5, 1, b), 0);
	CHECK_EQ(dev_byte(d, 5 * BS), 0); /* not yet on the device */
	CHECK(bcache_has_dirty(bc));
	unsigned char r[BS];
	CHECK_EQ(bcache_read(bc, 5, 1, r), 0);
	CHECK_EQ(r[100], 0xAA);
	CHECK_EQ(bcache_sync(bc), 0);
	CHECK_EQ(dev_byte(d, 5 * BS + 100), 0xAA);
	CHECK(!bcache_has_dirty(bc));
	bcache_free(bc);
	vo_block_close(d);
}

static void test_direct_paths_stay_coherent(void)
{
	struct vo_block *d = dev();
	struct bcache *bc = bcache_new(d, BS, 1 << 20);
	unsigned char b[3 * BS], r[3 * BS];
	fill(b, 0x11);
	CHECK_EQ(bcache_write(bc, 10, 1, b), 0); /* dirty metadata in block 10 */
	/* a direct read of blocks 9..11 sees the dirty block */
	CHECK_EQ(bcache_read_direct(bc, 9, 3, r), 0);
	CHECK_EQ(r[0], 0);
	CHECK_EQ(r[BS + 7], 0x11);
	/* a direct write of block 10 (reused for data) wins over the dirty copy */
	memset(b, 0x22, sizeof b);
	CHECK_EQ(bcache_write_direct(bc, 10, 1, b), 0);
	CHECK_EQ(bcache_sync(bc), 0);
	CHECK_EQ(dev_byte(d, 10 * BS + 7), 0x22);
	CHECK_EQ(bcache_read(bc, 10, 1, r), 0);
	CHECK_EQ(r[7], 0x22);
	/* zeroing forgets cached copies too */
	fill(b, 0x33);
	CHECK_EQ(bcache_write(bc, 12, 1, b), 0);
	CHECK_EQ(bcache_zero(bc, 12, 1), 0);
	CHECK_EQ(bcache_read(bc, 12, 1, r), 0);
	CHECK_EQ(r[0], 0);
	bcache_free(bc);
	vo_block_close(d);
}

static void test_byte_writes_patch_cached_blocks(void)
{
	struct vo_block *d = dev();
	struct bcache *bc = bcache_new(d, BS, 1 << 20);
	unsigned char b[BS], r[BS];
	fill(b, 0x44);
	CHECK_EQ(bcache_write(bc, 1, 1, b), 0);
	CHECK_EQ(bcache_write_bytes(bc, BS + 10, 4, "abcd"), 0);
	CHECK_EQ(bcache_read(bc, 1, 1, r), 0);
	CHECK(memcmp(r + 10, "abcd", 4) == 0);
	CHECK_EQ(r[9], 0x44);
	char got[4];
	CHECK_EQ(bcache_read_bytes(bc, BS + 8, 4, got), 0);
	CHECK(memcmp(got, "\x44\x44" "ab", 4) == 0);
	bcache_free(bc);
	vo_block_close(d);
}

/* The superblock's way: a few bytes into blocks not cached yet (one straddles two blocks). They
 * wait for the writeback like block writes, and the rest of each block is what was there. */
static void test_byte_writes_wait_for_writeback_with_the_rest_of_the_block(void)
{
	struct vo_block *d = dev();
	unsigned char b[BS];
	fill(b, 0x55);
	CHECK_EQ(vo_block_pwrite(d, b, BS, 7 * BS), BS);
	CHECK_EQ(vo_block_pwrite(d, b, BS, 8 * BS), BS);
	struct bcache *bc = bcache_new(d, BS, 1 << 20);
	CHECK_EQ(bcache_write_bytes(bc, 7 * BS + 4, 2, "xy"), 0);
	CHECK_EQ(bcache_write_bytes(bc, 8 * BS - 1, 2, "zw"), 0);
	CHECK_EQ(dev_byte(d, 7 * BS + 4), 0x55); /* not yet on the device */
	CHECK_EQ(dev_byte(d, 8 * BS), 0x55);
	char got[6];
	CHECK_EQ(bcache_read_bytes(bc, 7 * BS + 3, 4, got), 0);
	CHECK(memcmp(got, "\x55xy\x55", 4) == 0);
	CHECK_EQ(bcache_writeback(bc), 0);
	CHECK(!bcache_has_dirty(bc));
	CHECK_EQ(dev_byte(d, 7 * BS + 4), 'x');
	CHECK_EQ(dev_byte(d, 7 * BS + 5), 'y');
	CHECK_EQ(dev_byte(d, 8 * BS - 1), 'z');
	CHECK_EQ(dev_byte(d, 8 * BS), 'w');
	CHECK_EQ(dev_byte(d, 7 * BS + 6), 0x55);
	CHECK_EQ(dev_byte(d, 8 * BS + 1), 0x55);
	/* a range of more than two blocks is written through */
	unsigned char big[3 * BS];
	memset(big, 0x66, sizeof big);
	CHECK_EQ(bcache_write_bytes(bc, 20 * BS + 1, sizeof big, big), 0);
	CHECK_EQ(dev_byte(d, 22 * BS), 0x66);
	bcache_free(bc);
	vo_block_close(d);
}

static void test_small_cache_evicts_and_keeps_data(void)
{
	struct vo_block *d = dev();
	struct bcache *bc = bcache_new(d, BS, 64 * BS); /* room for 64 blocks */
	unsigned char b[BS], r[BS];
	for (int i = 0; i < 500; i++) {
		fill(b, i & 0xff);
		CHECK_EQ(bcache_write(bc, (uint64_t)i, 1, b), 0);
	}
	struct bcache_stats st;
	bcache_get_stats(bc, &st);
	CHECK(st.cached <= 64);
	for (int i = 0; i < 500; i += 37) {
		CHECK_EQ(bcache_read(bc, (uint64_t)i, 1, r), 0);
		CHECK_EQ(r[BS - 1], i & 0xff);
	}
	CHECK_EQ(bcache_sync(bc), 0);
	for (int i = 0; i < 500; i += 41)
		CHECK_EQ(dev_byte(d, (uint64_t)i * BS), i & 0xff);
	bcache_free(bc);
	vo_block_close(d);
}

static void test_unchanged_rewrite_is_not_written_again(void)
{
	struct vo_block *d = dev();
	struct bcache *bc = bcache_new(d, BS, 1 << 20);
	unsigned char b[BS];
	fill(b, 0x55);
	CHECK_EQ(bcache_write(bc, 3, 1, b), 0);
	CHECK_EQ(bcache_sync(bc), 0);
	CHECK_EQ(bcache_write(bc, 3, 1, b), 0);
	CHECK(!bcache_has_dirty(bc));
	bcache_free(bc);
	vo_block_close(d);
}

int main(void)
{
	RUN(test_writes_wait_for_writeback);
	RUN(test_direct_paths_stay_coherent);
	RUN(test_byte_writes_patch_cached_blocks);
	RUN(test_byte_writes_wait_for_writeback_with_the_rest_of_the_block);
	RUN(test_small_cache_evicts_and_keeps_data);
	RUN(test_unchanged_rewrite_is_not_written_again);
	return check_failures ? 1 : 0;
}
