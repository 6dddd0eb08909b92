/* File data: read, write and truncate (fat_volume.h), mapping file offsets through the
 * node's extents (its cluster chain as runs) to the source.
 *
 * Data moves with only the node's io lock held, so reads of different files, and of one file,
 * run in parallel; the volume lock is taken briefly to allocate clusters and to update the
 * directory entry. FAT has no holes: whatever a file grows over (a write past its end, a
 * truncate upwards) is zeroed on the source before the new size is written. */
#define _GNU_SOURCE
#include "fat_volume.h"

#include "fat_endian.h"

#include <errno.h>
#include <string.h>

typedef int (*run_fn)(struct fat_volume *vol, uint64_t dev, size_t pos, size_t len, void *ctx);

/* Call fn for each run of the source that holds file bytes [off, off + len): pos is where the
 * run starts within those bytes. -EIO if the chain ends first. */
static int for_runs(struct fat_volume *vol, const struct fat_extents *ext, uint64_t off,
		    size_t len, run_fn fn, void *ctx)
{
	uint64_t cs = vol->g.cluster_size;
	uint64_t base = 0; /* file offset where extent i starts */
	size_t i = 0;
	while (i < ext->n && base + ext->v[i].count * cs <= off)
		base += ext->v[i++].count * cs;
	size_t done = 0;
	while (done < len) {
		if (i >= ext->n)
			return -EIO;
		uint64_t within = off + done - base, bytes = ext->v[i].count * cs;
		size_t n = len - done < bytes - within ? len - done : (size_t)(bytes - within);
		int r = fn(vol, fat_cluster_offset(&vol->g, ext->v[i].start) + within, done, n, ctx);
		if (r != 0)
			return r < 0 ? r : 0; /* > 0: the callback has seen enough */
		done += n;
		base += bytes;
		i++;
	}
	return 0;
}

static int run_read(struct fat_volume *vol, uint64_t dev, size_t pos, size_t len, void *ctx)
{
	ssize_t r = vo_block_pread(vol->dev, (char *)ctx + pos, len, dev);
	return r < 0 ? (int)r : (size_t)r == len ? 0 : -EIO;
}

static int run_write(struct fat_volume *vol, uint64_t dev, size_t pos, size_t len, void *ctx)
{
	ssize_t r = vo_block_pwrite(vol->dev, (const char *)ctx + pos, len, dev);
	return r < 0 ? (int)r : (size_t)r == len ? 0 : -EIO;
}

static int run_zero(struct fat_volume *vol, uint64_t dev, size_t pos, size_t len, void *ctx)
{
	(void)pos, (void)ctx;
	return vo_block_zero(vol->dev, dev, len);
}

static uint32_t file_size(const struct fat_node *n)
{
	return le32(n->de + DE_SIZE);
}

static uint32_t clusters_for(const struct fat_volume *vol, uint64_t bytes)
{
	return (uint32_t)((bytes + vol->g.cluster_size - 1) / vol->g.cluster_size);
}

/* Grow the chain to hold `clusters` clusters (vol->lock held). All or nothing. */
static int grow_chain(struct fat_volume *vol, struct fat_node *n, uint32_t clusters)
{
	if (clusters <= n->ext.total)
		return 0;
	bool was_empty = n->ext.total == 0;
	int r = vol_alloc(vol, fat_extents_last(&n->ext), clusters - n->ext.total, &n->ext);
	if (r < 0)
		return r;
	if (was_empty)
		vol_set_first_cluster(vol, n->de, n->ext.v[0].start);
	/* the chain is on disk before the entry points at it (the entry is written later) */
	return vol_commit(vol);
}

/* Free the clusters past what the size needs (vol->lock held); the entry is written first. */
static int shrink_chain(struct fat_volume *vol, struct fat_node *n)
{
	uint32_t keep = clusters_for(vol, file_size(n));
	if (keep >= n->ext.total)
		return 0;
	if (keep == 0)
		vol_set_first_cluster(vol, n->de, 0);
	vol_node_store(vol, n);
	int r = vol_commit(vol);
	fat_truncate_extents(&vol->fat, &n->ext, keep);
	int r2 = vol_commit(vol);
	return r < 0 ? r : r2;
}

struct map_ctx {
	struct fat_run *runs;
	size_t max, n;
};

static int run_map(struct fat_volume *vol, uint64_t dev, size_t pos, size_t len, void *ctx)
{
	(void)vol, (void)pos;
	struct map_ctx *m = ctx;
	if (m->n == m->max)
		return 1; /* enough: the read ends here, short */
	m->runs[m->n++] = (struct fat_run){ dev, len };
	return 0;
}

ssize_t fat_file_map(struct fat_volume *vol, struct fat_node *n, uint64_t off, size_t size,
		     struct fat_run *runs, size_t max, size_t *nruns)
{
	pthread_rwlock_rdlock(&n->io);
	pthread_mutex_lock(&vol->lock);
	uint64_t fsize = file_size(n);
	bool bad = n->chain_bad;
	pthread_mutex_unlock(&vol->lock);
	uint64_t held = (uint64_t)n->ext.total * vol->g.cluster_size;
	*nruns = 0;
	ssize_t r = 0;
	if (bad || (off < fsize && off >= held)) {
		r = -EIO;
	} else if (off < fsize) {
		if (size > fsize - off)
			size = (size_t)(fsize - off);
		if (size > held - off)
			size = (size_t)(held - off);
		struct map_ctx m = { runs, max, 0 };
		int e = for_runs(vol, &n->ext, off, size, run_map, &m);
		*nruns = m.n;
		if (e < 0) {
			r = e;
		} else {
			size_t total = 0;
			for (size_t i = 0; i < m.n; i++)
				total += runs[i].len;
			r = (ssize_t)total;
		}
	}
	if (r < 0)
		pthread_rwlock_unlock(&n->io);
	return r;
}

void fat_file_unmap(struct fat_node *n)
{
	pthread_rwlock_unlock(&n->io);
}

ssize_t fat_file_read(struct fat_volume *vol, struct fat_node *n, char *buf, size_t size,
		      uint64_t off)
{
	pthread_rwlock_rdlock(&n->io);
	pthread_mutex_lock(&vol->lock);
	uint64_t fsize = file_size(n);
	bool bad = n->chain_bad;
	pthread_mutex_unlock(&vol->lock);
	ssize_t r;
	if (bad) {
		r = -EIO;
	} else if (off >= fsize) {
		r = 0;
	} else {
		if (size > fsize - off)
			size = (size_t)(fsize - off);
		/* a chain shorter than the size (damage): what it holds, then EIO */
		uint64_t held = (uint64_t)n->ext.total * vol->g.cluster_size;
		if (off >= held) {
			r = -EIO;
		} else {
			if (size > held - off)
				size = (size_t)(held - off);
			int e = for_runs(vol, &n->ext, off, size, run_read, buf);
			r = e < 0 ? e : (ssize_t)size;
		}
	}
	pthread_rwlock_unlock(&n->io);
	return r;
}

ssize_t fat_file_write(struct fat_volume *vol, struct fat_node *n, const char *buf, size_t size,
		       uint64_t off)
{
	if (size == 0)
		return 0;
	if (off >= FAT_MAX_FILE_SIZE)
		return -EFBIG;
	if (size > FAT_MAX_FILE_SIZE - off)
		size = (size_t)(FAT_MAX_FILE_SIZE - off); /* what fits, as write(2) does at a limit */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);

	pthread_rwlock_wrlock(&n->io);
	pthread_mutex_lock(&vol->lock);
	int r = vol->readonly ? -EROFS : vol_node_changeable(n);
	uint32_t old_size = file_size(n);
	uint32_t need = clusters_for(vol, off + size);
	if (r == 0 && need > n->ext.total) {
		/* a full disk takes what still fits, as write(2) does; nothing fits: ENOSPC */
		uint32_t can = n->ext.total + vol_free_clusters(vol);
		if (need > can) {
			uint64_t cap = (uint64_t)can * vol->g.cluster_size;
			if (cap <= off)
				r = -ENOSPC;
			else
				size = (size_t)(cap - off), need = can;
		}
		if (r == 0)
			r = grow_chain(vol, n, need);
	}
	pthread_mutex_unlock(&vol->lock);

	if (r == 0 && off > old_size)
		r = for_runs(vol, &n->ext, old_size, (size_t)(off - old_size), run_zero, NULL);
	if (r == 0)
		r = for_runs(vol, &n->ext, off, size, run_write, (void *)buf);

	pthread_mutex_lock(&vol->lock);
	if (r == 0) {
		if (off + size > old_size)
			put_le32(n->de + DE_SIZE, (uint32_t)(off + size));
		vol_touch(vol, n->de, FAT_TIME_M | FAT_TIME_C, &now);
		n->de[DE_ATTR] |= FAT_ATTR_ARCHIVE;
		vol_node_store(vol, n);
		r = vol_commit(vol);
	} else if (r != -EROFS && vol_node_changeable(n) == 0) {
		shrink_chain(vol, n); /* give back what this write took */
	}
	pthread_mutex_unlock(&vol->lock);
	pthread_rwlock_unlock(&n->io);
	return r < 0 ? r : (ssize_t)size;
}

int fat_file_truncate(struct fat_volume *vol, struct fat_node *n, uint64_t size)
{
	if (size > FAT_MAX_FILE_SIZE)
		return -EFBIG;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);

	pthread_rwlock_wrlock(&n->io);
	pthread_mutex_lock(&vol->lock);
	int r = vol->readonly ? -EROFS : vol_node_changeable(n);
	uint32_t old_size = file_size(n);
	if (r == 0)
		r = grow_chain(vol, n, clusters_for(vol, size));
	pthread_mutex_unlock(&vol->lock);

	if (r == 0 && size > old_size)
		r = for_runs(vol, &n->ext, old_size, (size_t)(size - old_size), run_zero, NULL);

	pthread_mutex_lock(&vol->lock);
	if (r == 0) {
		put_le32(n->de + DE_SIZE, (uint32_t)size);
		vol_touch(vol, n->de, FAT_TIME_M | FAT_TIME_C, &now);
		n->de[DE_ATTR] |= FAT_ATTR_ARCHIVE;
		vol_node_store(vol, n);
		r = shrink_chain(vol, n);
		int r2 = vol_commit(vol);
		r = r < 0 ? r : r2;
	} else if (r != -EROFS && vol_node_changeable(n) == 0) {
		shrink_chain(vol, n);
	}
	pthread_mutex_unlock(&vol->lock);
	pthread_rwlock_unlock(&n->io);
	return r;
}
