/* Cross-links: clusters that more than one chain claims, found before a read-write mount
 * serves anything.
 *
 * FAT records who owns a cluster only by reference: a cluster belongs to the chain whose
 * previous cluster's FAT entry names it, or whose directory entry names it as its first.
 * Damage can make two references name one cluster (two files sharing clusters, a directory
 * entry pointing at its parent's cluster, a chain that runs into another file's first
 * cluster) or make a reference name a cluster the FAT calls free. Writing through one claimant
 * then changes the other's bytes, freeing one claimant's chain frees clusters the other still
 * uses, and handing the free cluster to a new file makes a third claimant: every write would
 * spread the damage. So a read-write mount first counts every claim, as fsck.fat does: each
 * FAT entry that links to a cluster, the first cluster of each live entry of every directory
 * (the whole tree, from the root), and the FAT32 root cluster. A cluster claimed twice, or
 * claimed while free, is "hands off": the volume never writes into, frees or allocates it, and
 * a file or directory whose chain holds one is read-only (EIO on change; reads still work).
 *
 * Linux vfat does no such check: it trusts the image and leaves damage to fsck.fat. The cost
 * here is one pass over the FAT in memory and one read of every directory, at mount, only when
 * mounting read-write. The reads go through a callback so the unit tests and the fuzz harness
 * run the scan on plain buffers. Not thread-safe: done before the volume serves. */
#ifndef FAT_CLAIMS_H
#define FAT_CLAIMS_H

#include "fat_bpb.h"
#include "fat_table.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Read len bytes at byte offset off of the volume; 0 or -errno. */
typedef int (*fat_read_fn)(void *ctx, void *buf, size_t len, uint64_t off);

struct fat_claims {
	uint8_t *hands_off;     /* one bit per cluster number (t->nentries bits) */
	uint32_t nentries;
	uint32_t contested;     /* clusters claimed twice or more */
	uint32_t claimed_free;  /* free clusters that something claims */
	uint32_t dirs;          /* directories read */
};

/* Count every claim on the volume (see above) and mark the clusters to keep hands off.
 * Directories that cannot be read are skipped (their entries then claim nothing: what the
 * driver cannot reach it cannot write through). Returns 0, or -ENOMEM. */
int fat_claims_scan(struct fat_claims *c, const struct fat_table *t, const struct fat_geometry *g,
		    fat_read_fn read, void *ctx);
void fat_claims_free(struct fat_claims *c);

static inline bool fat_claims_hands_off(const struct fat_claims *c, uint32_t cluster)
{
	return c->hands_off && cluster < c->nentries &&
	       (c->hands_off[cluster / 8] & (1u << (cluster % 8)));
}

/* Does any cluster of the extents lie where hands must stay off? */
bool fat_claims_touch(const struct fat_claims *c, const struct fat_extents *e);

#endif
