/* The metadata block cache between libext2fs and the block layer.
 *
 * libext2fs reads and writes metadata (inode tables, directory blocks, bitmaps, extent blocks)
 * one block at a time through its io_manager and re-reads the same blocks all the time. Over an
 * NBD source every one of those reads would be a network round trip, and every inode update a
 * separate write. This cache keeps recently used blocks in memory and holds writes back until
 * a commit (fsync, the periodic commit, unmount, or memory pressure), when the dirty blocks go
 * out sorted and merged into as few writes as possible.
 *
 * File data does not live here: the data path reads and writes the device directly (the
 * kernel's page cache already holds file data) and tells the cache, so that a block freed as
 * metadata and reused for data (or the reverse) is never shadowed by a stale cached copy.
 *
 * Not thread-safe: every call happens under the file system's big lock. */
#ifndef UMFUSE_EXT2_BCACHE_H
#define UMFUSE_EXT2_BCACHE_H

#include "block.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bcache;

struct bcache_stats {
	uint64_t hits, misses, writebacks, blocks_written, skipped_same;
	size_t cached, dirty;
};

/* max_bytes bounds the memory of cached blocks (at least 64 blocks are always allowed). */
struct bcache *bcache_new(struct vo_block *dev, unsigned block_size, size_t max_bytes);
void bcache_free(struct bcache *bc); /* drops dirty blocks: call bcache_writeback first */

/* Changes the block size: writes back and forgets every cached block. 0 or -errno. */
int bcache_set_block_size(struct bcache *bc, unsigned block_size);
unsigned bcache_block_size(const struct bcache *bc);
struct vo_block *bcache_device(const struct bcache *bc);

/* Cached metadata I/O of n whole blocks. 0 or -errno (-EIO on a short read). */
int bcache_read(struct bcache *bc, uint64_t blk, size_t n, void *buf);
int bcache_write(struct bcache *bc, uint64_t blk, size_t n, const void *buf);

/* Byte-granular I/O (the superblock is written this way). A write of at most two blocks goes
 * into the cache (the blocks are read first if needed) and out at the next writeback; a larger
 * one is written through, and the cached copies of the blocks it touches stay coherent. */
int bcache_read_bytes(struct bcache *bc, uint64_t off, size_t len, void *buf);
int bcache_write_bytes(struct bcache *bc, uint64_t off, size_t len, const void *buf);

/* The data path: straight to the device. A read sees blocks still dirty in the cache; a write
 * (whole blocks) replaces whatever the cache held for them. */
int bcache_read_direct(struct bcache *bc, uint64_t blk, size_t n, void *buf);
int bcache_write_direct(struct bcache *bc, uint64_t blk, size_t n, const void *buf);
/* The blocks read back as zeros afterwards. */
int bcache_zero(struct bcache *bc, uint64_t blk, uint64_t n);
/* Forget cached copies of these blocks without writing them (they were freed). */
void bcache_forget(struct bcache *bc, uint64_t blk, uint64_t n);

/* Write every dirty block to the device (not yet durable). 0 or -errno. */
int bcache_writeback(struct bcache *bc);
/* bcache_writeback, then make the device durable. */
int bcache_sync(struct bcache *bc);
bool bcache_has_dirty(const struct bcache *bc);

void bcache_get_stats(const struct bcache *bc, struct bcache_stats *st);

#endif
