/* The FAT table layer: one copy of the file allocation table held in memory, read and written
 * entry by entry whatever the entry width (12, 16 or 28 bits), cluster chains walked into
 * extents with every hostile case caught (loops, numbers outside the volume, free or bad
 * clusters inside a chain), and allocation that keeps files contiguous where it can.
 *
 * Hand-written (no FAT library in Debian, see umfuse-fat.c). The table does no I/O: it records
 * which 512-byte blocks it changed, and the volume writes those to every FAT copy when it
 * writes back (fat_table_take_dirty). That keeps it testable and fuzzable on plain buffers.
 * Not thread-safe: the volume lock covers it. */
#ifndef FAT_TABLE_H
#define FAT_TABLE_H

#include "fat_bpb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Entry values as fat_get returns them, whatever the FAT type. */
#define FAT_FREE 0u
#define FAT_BAD 0x0FFFFFF7u
#define FAT_EOC 0x0FFFFFFFu /* end of chain (any of the type's end values reads as this) */

#define FAT_DIRTY_BLOCK 512

struct fat_table {
	enum fat_type type;
	uint32_t nentries;   /* cluster_count + 2: entries 0 and 1 are reserved */
	uint8_t *raw;        /* the FAT as on disk, raw_len bytes */
	size_t raw_len;
	uint8_t *dirty;      /* one bit per FAT_DIRTY_BLOCK bytes changed since written back */
	size_t ndirty;       /* blocks marked */
	uint32_t free_count;
	uint32_t next_free;  /* where the next search for a free cluster starts */
	uint32_t last_alloc; /* the last cluster allocated, 0 if none is known: what FSInfo's
				"next free" hint holds, as the specification and Linux keep it */
	const uint8_t *avoid; /* NULL, or one bit per cluster never to allocate (fat_claims.h) */
	uint32_t avoid_free; /* free clusters among them: free_count counts them, fat_alloc
				does not */
};

/* A run of consecutive clusters. */
struct fat_extent {
	uint32_t start;
	uint32_t count;
};

/* A chain as runs; total = clusters in all runs. */
struct fat_extents {
	struct fat_extent *v;
	size_t n, cap;
	uint32_t total;
};

/* Take ownership of raw (raw_len bytes, at least the entries of nentries clusters); counts the
 * free clusters. Returns 0, -EINVAL when raw_len is too short, or -ENOMEM. */
int fat_table_init(struct fat_table *t, enum fat_type type, uint32_t cluster_count, uint8_t *raw,
		   size_t raw_len);
void fat_table_free(struct fat_table *t);

uint32_t fat_get(const struct fat_table *t, uint32_t cluster);
/* value: FAT_FREE, FAT_EOC, FAT_BAD or a cluster number. Keeps the four reserved high bits of
 * FAT32 entries, as the specification asks. */
void fat_set(struct fat_table *t, uint32_t cluster, uint32_t value);

static inline bool fat_valid_cluster(const struct fat_table *t, uint32_t c)
{
	return c >= 2 && c < t->nentries;
}

/* The next run of changed bytes [lo, hi) (whole blocks, clipped to raw_len), now forgotten.
 * Call until it returns false to take them all. */
bool fat_table_take_dirty(struct fat_table *t, size_t *lo, size_t *hi);
/* Mark bytes [lo, hi) changed (for writes made to raw directly). */
void fat_table_mark_dirty(struct fat_table *t, size_t lo, size_t hi);

/* Walk the chain that starts at first into out (which is reset). Returns 0, or -EIO when the
 * chain leaves the volume, reaches a free or bad cluster, or loops (it is then longer than the
 * volume). first == 0 is the empty chain. */
int fat_chain_extents(const struct fat_table *t, uint32_t first, struct fat_extents *out);

/* Allocate n clusters and chain them. When last != 0 the new clusters go after that cluster
 * (the chain's last, its entry becomes a link), starting right after it when those are free.
 * Otherwise they start at next_free, in the first free run long enough when there is one.
 * Clusters marked in avoid are never taken. The new runs are appended to ext (when not NULL).
 * All or nothing: -ENOSPC when fewer than n clusters can be taken, with nothing changed. */
int fat_alloc(struct fat_table *t, uint32_t last, uint32_t n, struct fat_extents *ext);

/* Free every cluster of the chain that starts at first (a chain already checked with
 * fat_chain_extents, given as its extents). The search for free clusters starts at the
 * first freed one again, so space given back is used before the volume's untouched end. */
void fat_free_extents(struct fat_table *t, const struct fat_extents *ext);

/* Where the hint of FSInfo says the last allocation was (clusters outside the volume, 0 and
 * FSINFO's "unknown" are ignored): the search for free clusters starts after it. */
void fat_table_set_hint(struct fat_table *t, uint32_t last_alloc);
/* Clusters fat_alloc can take (free ones outside avoid). */
static inline uint32_t fat_table_takeable(const struct fat_table *t)
{
	return t->free_count - t->avoid_free;
}

/* Cut a chain: keep its first keep clusters (keep >= 1 ends the chain there, keep == 0 frees
 * it all) and free the rest; ext is updated to match. */
void fat_truncate_extents(struct fat_table *t, struct fat_extents *ext, uint32_t keep);

/* Extent helpers. */
void fat_extents_reset(struct fat_extents *e);
void fat_extents_free(struct fat_extents *e);
int fat_extents_append(struct fat_extents *e, uint32_t cluster);
/* The cluster that holds the index-th cluster of the chain (index < total). */
uint32_t fat_extents_cluster(const struct fat_extents *e, uint32_t index);
static inline uint32_t fat_extents_last(const struct fat_extents *e)
{
	return e->n ? e->v[e->n - 1].start + e->v[e->n - 1].count - 1 : 0;
}

#endif
