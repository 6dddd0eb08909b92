/* See fat_volume.h: opening and closing a volume, committing changes, nodes and their inode
 * numbers, attributes. */
#define _GNU_SOURCE
#include "fat_volume.h"

#include "fat_endian.h"
#include "fat_time.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Inode numbers. The root is 1. A directory is numbered by its first cluster, which never
 * changes while it exists, so renames keep its number for free. A file is numbered by where its
 * short entry lies on the volume (what Linux vfat calls i_pos): the same number after every
 * remount, and for as long as the file exists here even when the kernel forgets it. A renamed
 * file keeps its number: the maps ino_by_loc / loc_by_ino remember it at its new place, and a
 * new file at the old place then gets a number from the counter, never a taken one. */
#define INO_DIR_BASE 16ull
#define INO_FILE_BASE (1ull << 32)
#define INO_FRESH_BASE (1ull << 60)

static int dev_read(struct fat_volume *vol, void *buf, size_t len, uint64_t off)
{
	ssize_t r = vo_block_pread(vol->dev, buf, len, off);
	if (r < 0)
		return (int)r;
	return (size_t)r == len ? 0 : -EIO;
}

static int dev_write(struct fat_volume *vol, const void *buf, size_t len, uint64_t off)
{
	ssize_t r = vo_block_pwrite(vol->dev, buf, len, off);
	if (r < 0)
		return (int)r;
	return (size_t)r == len ? 0 : -EIO;
}

uint32_t vol_first_cluster(const struct fat_volume *vol, const uint8_t *de)
{
	return fat_de_first_cluster(de, vol->g.type == FAT32);
}

void vol_set_first_cluster(const struct fat_volume *vol, uint8_t *de, uint32_t c)
{
	fat_de_set_first_cluster(de, c, vol->g.type == FAT32);
}

void vol_touch(const struct fat_volume *vol, uint8_t *de, unsigned mask, const struct timespec *now)
{
	uint16_t date, time;
	uint8_t cs;
	fat_time_encode(now, vol->opt.utc, &date, &time, &cs);
	if (mask & FAT_TIME_M) {
		put_le16(de + DE_MTIME, time);
		put_le16(de + DE_MDATE, date);
	}
	if (mask & FAT_TIME_A)
		put_le16(de + DE_ADATE, date);
	if (mask & FAT_TIME_C) {
		de[DE_CTIME_CS] = cs;
		put_le16(de + DE_CTIME, time);
		put_le16(de + DE_CDATE, date);
	}
}

/* ------------------------------------------------------------------ inode numbers */

uint64_t vol_slot_location(const struct fat_volume *vol, const struct fat_node *dir,
			   uint32_t slot)
{
	uint64_t byte = (uint64_t)slot * FAT_ENTRY_SIZE;
	if (!dir->parent && vol->g.type != FAT32)
		return vol->g.root_offset + byte;
	uint32_t c = fat_extents_cluster(&dir->ext, (uint32_t)(byte / vol->g.cluster_size));
	return fat_cluster_offset(&vol->g, c) + byte % vol->g.cluster_size;
}

uint64_t vol_ino_for(struct fat_volume *vol, struct fat_node *dir, uint32_t slot,
		     const uint8_t *de)
{
	uint32_t first = vol_first_cluster(vol, de);
	if ((de[DE_ATTR] & FAT_ATTR_DIR) && fat_valid_cluster(&vol->fat, first))
		return INO_DIR_BASE + first;
	uint64_t loc = vol_slot_location(vol, dir, slot), ino;
	if (fat_u64map_get(&vol->ino_by_loc, loc, &ino))
		return ino;
	ino = INO_FILE_BASE + loc / FAT_ENTRY_SIZE;
	if (!fat_u64map_get(&vol->loc_by_ino, ino, NULL))
		return ino;
	/* a renamed file carries this number: take a fresh one and remember it here */
	ino = vol->next_ino++;
	if (fat_u64map_put(&vol->ino_by_loc, loc, ino) < 0 ||
	    fat_u64map_put(&vol->loc_by_ino, ino, loc) < 0)
		vo_warn("out of memory: inode numbers may change after a remount");
	return ino;
}

void vol_ino_dropped(struct fat_volume *vol, uint64_t loc)
{
	uint64_t ino;
	if (fat_u64map_get(&vol->ino_by_loc, loc, &ino)) {
		fat_u64map_del(&vol->ino_by_loc, loc);
		fat_u64map_del(&vol->loc_by_ino, ino);
	}
}

void vol_ino_moved(struct fat_volume *vol, uint64_t ino, uint64_t from, uint64_t to)
{
	vol_ino_dropped(vol, from);
	vol_ino_set(vol, ino, to);
}

void vol_ino_set(struct fat_volume *vol, uint64_t ino, uint64_t to)
{
	vol_ino_dropped(vol, to);
	if (ino == INO_FILE_BASE + to / FAT_ENTRY_SIZE)
		return;
	if (fat_u64map_put(&vol->ino_by_loc, to, ino) < 0 ||
	    fat_u64map_put(&vol->loc_by_ino, ino, to) < 0)
		vo_warn("out of memory: inode numbers may change after a remount");
}

/* ------------------------------------------------------------------ nodes */

static struct fat_node *node_new(struct fat_volume *vol)
{
	struct fat_node *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	pthread_rwlock_init(&n->io, NULL);
	n->next = vol->nodes;
	if (vol->nodes)
		vol->nodes->prev = n;
	vol->nodes = n;
	vol->nnodes++;
	return n;
}

static void pend_remove(struct fat_volume *vol, struct fat_node *n)
{
	if (!n->pending)
		return;
	if (n->pend_prev)
		n->pend_prev->pend_next = n->pend_next;
	else
		vol->pending = n->pend_next;
	if (n->pend_next)
		n->pend_next->pend_prev = n->pend_prev;
	n->pend_prev = n->pend_next = NULL;
	n->pending = false;
}

static void node_destroy(struct fat_volume *vol, struct fat_node *n)
{
	pend_remove(vol, n);
	if (n->prev)
		n->prev->next = n->next;
	else
		vol->nodes = n->next;
	if (n->next)
		n->next->prev = n->prev;
	vol->nnodes--;
	if (n->dir) {
		fat_dir_free(n->dir);
		free(n->dir);
	}
	fat_extents_free(&n->ext);
	pthread_rwlock_destroy(&n->io);
	free(n);
}

void vol_node_get(struct fat_node *n)
{
	n->refs++;
}

void vol_node_lookup_ref(struct fat_node *n)
{
	n->nlookup++;
}

/* Free nodes nobody refers to any more, walking up through parents. */
static void node_maybe_free(struct fat_volume *vol, struct fat_node *n)
{
	while (n && n != vol->root && n->refs == 0 && n->nlookup == 0) {
		struct fat_node *parent = n->parent;
		if (n->deleted)
			vol_release_deleted(vol, n);
		else if (parent && parent->dir && parent->dir->names[n->slot] &&
			 parent->dir->names[n->slot]->node == n)
			parent->dir->names[n->slot]->node = NULL;
		if (n->dirty_listed) {
			/* write what it still owes before it goes */
			size_t lo, hi;
			if (n->dir && !n->deleted && fat_dir_take_dirty(n->dir, &lo, &hi))
				vol_write_dir_range(vol, n, lo, hi);
			for (size_t i = 0; i < vol->ndirty; i++)
				if (vol->dirty_dirs[i] == n)
					vol->dirty_dirs[i] = vol->dirty_dirs[--vol->ndirty];
		}
		node_destroy(vol, n);
		if (!parent)
			break;
		parent->refs--;
		n = parent;
	}
}

void vol_node_put(struct fat_volume *vol, struct fat_node *n)
{
	if (!n)
		return;
	n->refs--;
	node_maybe_free(vol, n);
}

void vol_node_forget(struct fat_volume *vol, struct fat_node *n, uint64_t count)
{
	n->nlookup = count > n->nlookup ? 0 : n->nlookup - count;
	node_maybe_free(vol, n);
}

static uint32_t clusters_for_size(const struct fat_volume *vol, uint32_t size)
{
	return (uint32_t)(((uint64_t)size + vol->g.cluster_size - 1) / vol->g.cluster_size);
}

struct fat_node *vol_child(struct fat_volume *vol, struct fat_node *dir, uint32_t slot, int *err)
{
	struct fat_dir_name *nm = dir->dir->names[slot];
	if (nm->node) {
		struct fat_node *n = nm->node;
		n->refs++;
		return n;
	}
	struct fat_node *n = node_new(vol);
	if (!n) {
		*err = -ENOMEM;
		return NULL;
	}
	n->parent = dir;
	dir->refs++;
	n->slot = slot;
	memcpy(n->de, fat_dir_slot(dir->dir, slot), FAT_ENTRY_SIZE);
	n->is_dir = (n->de[DE_ATTR] & FAT_ATTR_DIR) != 0;
	uint32_t first = vol_first_cluster(vol, n->de);
	if (fat_chain_extents(&vol->fat, first, &n->ext) < 0 || (n->is_dir && first == 0)) {
		n->chain_bad = true;
		fat_extents_reset(&n->ext);
		vo_warn("%s: the cluster chain of '%s' is broken (starts at %u): reading it gives "
			"an I/O error; run fsck.fat", vo_block_name(vol->dev), nm->name, first);
	} else if (fat_claims_touch(&vol->claims, &n->ext)) {
		n->chain_shared = true;
		vo_warn("%s: '%s' shares clusters with another file or directory: it can be read "
			"but not changed; run fsck.fat", vo_block_name(vol->dev), nm->name);
	} else if (!n->is_dir && n->ext.total != clusters_for_size(vol, le32(n->de + DE_SIZE))) {
		/* The FAT and the entry disagree (fsck.fat would cut one to the other): which
		 * clusters past the size are the file's, or where the rest of it is, nobody
		 * knows, so nothing about it is changed. (A write to a file with too few
		 * clusters would also be counted by fsck.fat differently from the FAT.) */
		n->size_mismatch = true;
		vo_warn("%s: the size of '%s' (%u bytes) disagrees with its %u clusters: it can be "
			"read but not changed; run fsck.fat", vo_block_name(vol->dev), nm->name,
			le32(n->de + DE_SIZE), n->ext.total);
	}
	n->ino = vol_ino_for(vol, dir, slot, n->de);
	n->refs = 1;
	nm->node = n;
	return n;
}

int vol_load_dir(struct fat_volume *vol, struct fat_node *d)
{
	if (d->dir)
		return 0;
	if (d->chain_bad || d->deleted)
		return -EIO;
	size_t bytes;
	bool fixed_root = !d->parent && vol->g.type != FAT32;
	if (fixed_root)
		bytes = (size_t)vol->g.root_entries * FAT_ENTRY_SIZE;
	else
		bytes = (size_t)d->ext.total * vol->g.cluster_size;
	/* 65536 entries at most; a chain far longer is damage, not a directory */
	if (bytes > (size_t)FAT_DIR_MAX_SLOTS * FAT_ENTRY_SIZE + vol->g.cluster_size)
		return -EIO;
	uint8_t *raw = malloc(bytes ? bytes : 1);
	struct fat_dir *dir = calloc(1, sizeof *dir);
	if (!raw || !dir) {
		free(raw);
		free(dir);
		return -ENOMEM;
	}
	int r = 0;
	if (fixed_root) {
		r = dev_read(vol, raw, bytes, vol->g.root_offset);
	} else {
		size_t at = 0;
		for (size_t i = 0; i < d->ext.n && r == 0; i++) {
			size_t len = (size_t)d->ext.v[i].count * vol->g.cluster_size;
			r = dev_read(vol, raw + at, len, fat_cluster_offset(&vol->g, d->ext.v[i].start));
			at += len;
		}
	}
	if (r == 0)
		r = fat_dir_init(dir, raw, (uint32_t)(bytes / FAT_ENTRY_SIZE), &vol->cp,
				 vol->opt.shortname);
	else
		free(raw);
	if (r < 0) {
		if (dir->raw)
			fat_dir_free(dir);
		free(dir);
		return r == -ENOMEM ? r : -EIO;
	}
	d->dir = dir;
	return 0;
}

/* ------------------------------------------------------------------ writing back */

int vol_write_dir_range(struct fat_volume *vol, struct fat_node *d, size_t lo, size_t hi)
{
	if (!d->parent && vol->g.type != FAT32)
		return dev_write(vol, d->dir->raw + lo, hi - lo, vol->g.root_offset + lo);
	uint32_t cs = vol->g.cluster_size;
	while (lo < hi) {
		uint32_t index = (uint32_t)(lo / cs);
		size_t within = lo % cs, len = cs - within;
		if (len > hi - lo)
			len = hi - lo;
		if (index >= d->ext.total)
			return -EIO;
		uint32_t c = fat_extents_cluster(&d->ext, index);
		int r = dev_write(vol, d->dir->raw + lo, len, fat_cluster_offset(&vol->g, c) + within);
		if (r < 0)
			return r;
		lo += len;
	}
	return 0;
}

static void list_dirty(struct fat_volume *vol, struct fat_node *d)
{
	if (d->dirty_listed)
		return;
	if (vol->ndirty == vol->dirty_cap) {
		size_t cap = vol->dirty_cap ? vol->dirty_cap * 2 : 8;
		struct fat_node **v = realloc(vol->dirty_dirs, cap * sizeof *v);
		if (!v) {
			/* cannot list it: write the change at once instead */
			size_t lo, hi;
			if (fat_dir_take_dirty(d->dir, &lo, &hi))
				vol_write_dir_range(vol, d, lo, hi);
			return;
		}
		vol->dirty_dirs = v;
		vol->dirty_cap = cap;
	}
	vol->dirty_dirs[vol->ndirty++] = d;
	d->dirty_listed = true;
}

int vol_node_store(struct fat_volume *vol, struct fat_node *n)
{
	if (n->deleted || !n->parent || !n->parent->dir)
		return 0;
	if (n->parent->chain_shared)
		return -EIO;
	memcpy(fat_dir_slot(n->parent->dir, n->slot), n->de, FAT_ENTRY_SIZE);
	fat_dir_mark_dirty(n->parent->dir, n->slot, 1);
	list_dirty(vol, n->parent);
	return 0;
}

int vol_node_changeable(const struct fat_node *n)
{
	if (n->chain_bad || n->chain_shared || n->size_mismatch ||
	    (n->parent && n->parent->chain_shared))
		return -EIO;
	return 0;
}

/* Bytes [lo, hi) of the FAT to one copy on disk. A block in which the copies disagreed at
 * mount goes to the copy in use only (see compare_fat_copies). */
static int write_fat_range(struct fat_volume *vol, uint32_t copy, size_t lo, size_t hi)
{
	uint64_t at = vol->g.fat_offset + copy * vol->g.fat_size;
	if (copy == vol->g.active_fat || !vol->fat_differs)
		return dev_write(vol, vol->fat.raw + lo, hi - lo, at + lo);
	size_t pos = lo;
	while (pos < hi) {
		size_t b = pos / FAT_DIRTY_BLOCK, end = (b + 1) * FAT_DIRTY_BLOCK;
		if (end > hi)
			end = hi;
		bool skip = vol->fat_differs[b / 8] & (1u << (b % 8));
		if (!skip) {
			int r = dev_write(vol, vol->fat.raw + pos, end - pos, at + pos);
			if (r < 0)
				return r;
		}
		pos = end;
	}
	return 0;
}

/* Where the other FAT copies disagree with the one in use, block by block: damage (a sector
 * lost in one copy) or a crash between the writes of two copies. Writing the block in use over
 * every copy, as Linux does, would spread a damaged sector over the good copies that fsck.fat
 * repairs it from, so such blocks are written to the copy in use only. Read-write mounts of
 * mirrored FATs only; a copy that cannot be read counts as disagreeing everywhere. */
static int compare_fat_copies(struct fat_volume *vol)
{
	if (!vol->g.mirrored || vol->g.nfats < 2)
		return 0;
	size_t len = (size_t)vol->g.fat_used;
	size_t nblocks = (len + FAT_DIRTY_BLOCK - 1) / FAT_DIRTY_BLOCK;
	uint8_t *copy = malloc(len);
	uint8_t *differs = calloc(nblocks / 8 + 1, 1);
	if (!copy || !differs) {
		free(copy);
		free(differs);
		return -ENOMEM;
	}
	bool any = false;
	for (uint32_t i = 0; i < vol->g.nfats; i++) {
		if (i == vol->g.active_fat)
			continue;
		uint64_t at = vol->g.fat_offset + i * vol->g.fat_size;
		bool unreadable = dev_read(vol, copy, len, at) < 0;
		for (size_t b = 0; b < nblocks; b++) {
			size_t lo = b * FAT_DIRTY_BLOCK, n = len - lo < FAT_DIRTY_BLOCK ? len - lo
										  : FAT_DIRTY_BLOCK;
			if (unreadable || memcmp(copy + lo, vol->fat.raw + lo, n) != 0) {
				differs[b / 8] |= (uint8_t)(1u << (b % 8));
				any = true;
			}
		}
	}
	free(copy);
	if (any)
		vol->fat_differs = differs;
	else
		free(differs);
	return 0;
}

/* Write everything changed since the last write-back: directories first, then every FAT copy.
 * That order keeps a crash between the two harmless: an entry removed and its clusters given
 * to a new file leave, at worst, clusters marked used that nothing points at (lost, as fsck
 * says) or an entry whose chain ends early (fsck truncates it) — never two files sharing one
 * cluster. */
int vol_writeback(struct fat_volume *vol)
{
	int result = 0;
	size_t lo, hi;
	for (size_t i = 0; i < vol->ndirty; i++) {
		struct fat_node *d = vol->dirty_dirs[i];
		d->dirty_listed = false;
		if (!d->dir || !fat_dir_take_dirty(d->dir, &lo, &hi) || d->deleted)
			continue;
		int r = vol_write_dir_range(vol, d, lo, hi);
		if (r < 0 && result == 0)
			result = r;
	}
	vol->ndirty = 0;
	while (fat_table_take_dirty(&vol->fat, &lo, &hi)) {
		if (hi > vol->g.fat_used)
			hi = vol->g.fat_used; /* the padding past the last entry is not on disk */
		for (uint32_t i = 0; i < vol->g.nfats && lo < hi; i++) {
			if (!vol->g.mirrored && i != vol->g.active_fat)
				continue;
			int r = write_fat_range(vol, i, lo, hi);
			if (r < 0 && result == 0)
				result = r;
		}
	}
	if (result < 0)
		vo_error("%s: writing metadata failed: %s", vo_block_name(vol->dev),
			 strerror(-result));
	return result;
}

int vol_commit(struct fat_volume *vol)
{
	(void)vol; /* the flusher (or fsync, or the unmount) writes it within a second */
	return 0;
}

static void *flusher_main(void *arg)
{
	struct fat_volume *vol = arg;
	pthread_mutex_lock(&vol->lock);
	while (!vol->flusher_stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += vol->opt.commit;
		pthread_cond_timedwait(&vol->flusher_cond, &vol->lock, &until);
		if (vol->ndirty || vol->fat.ndirty)
			vol_writeback(vol);
	}
	pthread_mutex_unlock(&vol->lock);
	return NULL;
}

void vol_dir_changed(struct fat_volume *vol, struct fat_node *d)
{
	list_dirty(vol, d);
}

int vol_zero_clusters(struct fat_volume *vol, uint32_t first, uint32_t count)
{
	return vo_block_zero(vol->dev, fat_cluster_offset(&vol->g, first),
			     (uint64_t)count * vol->g.cluster_size);
}

static void free_deleted(struct fat_volume *vol, struct fat_node *n)
{
	pend_remove(vol, n);
	n->released = true;
	if (n->ext.total == 0 || n->chain_bad || n->chain_shared || n->size_mismatch)
		return; /* never free what a broken chain points at: it may belong to others */
	fat_free_extents(&vol->fat, &n->ext);
	fat_extents_reset(&n->ext);
}

/* A file unlinked or replaced by a rename while nobody has it open may still be opened: the
 * kernel can have looked its name up just before (a reader racing a writer that replaces the
 * file) and send the open after, and that open must find the old data, as on a kernel file
 * system. So its clusters stay until the kernel forgets the node (it does as soon as nothing
 * holds it); meanwhile statfs counts them free and an allocation short of space takes them
 * back at once (an open that comes after that gets ESTALE, and the kernel then looks the
 * name up again). A removed directory's cluster goes at once: its entries are in memory. */
void vol_release_deleted(struct fat_volume *vol, struct fat_node *n)
{
	if (!n->deleted || n->nopen || n->released)
		return;
	if (!n->is_dir && n->nlookup) {
		if (!n->pending && n->ext.total && !n->chain_bad && !n->chain_shared &&
		    !n->size_mismatch) {
			n->pending = true;
			n->pend_prev = NULL;
			n->pend_next = vol->pending;
			if (vol->pending)
				vol->pending->pend_prev = n;
			vol->pending = n;
		}
		return;
	}
	free_deleted(vol, n);
}

void vol_node_reopened(struct fat_volume *vol, struct fat_node *n)
{
	pend_remove(vol, n);
}

uint32_t vol_free_clusters(const struct fat_volume *vol)
{
	uint64_t n = fat_table_takeable(&vol->fat);
	for (const struct fat_node *p = vol->pending; p; p = p->pend_next)
		n += p->ext.total;
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

int vol_alloc(struct fat_volume *vol, uint32_t last, uint32_t n, struct fat_extents *ext)
{
	int r = fat_alloc(&vol->fat, last, n, ext);
	if (r != -ENOSPC || !vol->pending)
		return r;
	while (vol->pending)
		free_deleted(vol, vol->pending);
	return fat_alloc(&vol->fat, last, n, ext);
}

/* ------------------------------------------------------------------ attributes */

static bool is_executable_name(const uint8_t *de)
{
	return memcmp(de + 8, "EXE", 3) == 0 || memcmp(de + 8, "COM", 3) == 0 ||
	       memcmp(de + 8, "BAT", 3) == 0;
}

void vol_stat(const struct fat_volume *vol, const struct fat_node *n, struct stat *st)
{
	memset(st, 0, sizeof *st);
	const uint8_t *de = n->de;
	st->st_ino = n->ino;
	st->st_uid = vol->opt.uid;
	st->st_gid = vol->opt.gid;
	st->st_blksize = vol->g.cluster_size;
	st->st_blocks = (blkcnt_t)((uint64_t)n->ext.total * vol->g.cluster_size / 512);
	if (n->is_dir) {
		st->st_mode = S_IFDIR | (0777 & ~vol->opt.dmask);
		if (vol->opt.rodir && (de[DE_ATTR] & FAT_ATTR_RO))
			st->st_mode &= ~0222u;
		st->st_nlink = n->deleted ? 0 : 2 + (n->dir ? n->dir->nsubdirs : 0);
		st->st_size = !n->parent && vol->g.type != FAT32
				      ? (off_t)vol->g.root_entries * FAT_ENTRY_SIZE
				      : (off_t)n->ext.total * vol->g.cluster_size;
	} else {
		st->st_mode = S_IFREG | (0777 & ~vol->opt.fmask);
		if (vol->opt.showexec && !is_executable_name(de))
			st->st_mode &= ~0111u;
		if (de[DE_ATTR] & FAT_ATTR_RO)
			st->st_mode &= ~0222u;
		st->st_nlink = n->deleted ? 0 : 1;
		st->st_size = le32(de + DE_SIZE);
	}
	if (!n->parent)
		return; /* the root has no entry, hence no times (Linux vfat shows 1970 too) */
	bool utc = vol->opt.utc;
	fat_time_decode(le16(de + DE_MDATE), le16(de + DE_MTIME), 0, utc, &st->st_mtim);
	fat_time_decode(le16(de + DE_ADATE), 0, 0, utc, &st->st_atim);
	if (le16(de + DE_CDATE))
		fat_time_decode(le16(de + DE_CDATE), le16(de + DE_CTIME), de[DE_CTIME_CS], utc,
				&st->st_ctim);
	else
		st->st_ctim = st->st_mtim;
}

void vol_statfs(const struct fat_volume *vol, struct statvfs *sv)
{
	memset(sv, 0, sizeof *sv);
	sv->f_bsize = sv->f_frsize = vol->g.cluster_size;
	sv->f_blocks = vol->g.cluster_count;
	sv->f_bfree = sv->f_bavail = vol_free_clusters(vol);
	sv->f_namemax = FAT_NAME_MAX;
}

/* ------------------------------------------------------------------ open and close */

/* FAT[1] bits that say "cleanly unmounted" (FAT16 and FAT32; Windows keeps them). */
static uint32_t clean_bit(const struct fat_volume *vol)
{
	return vol->g.type == FAT16 ? 0x8000 : vol->g.type == FAT32 ? 0x08000000 : 0;
}

static uint32_t raw_fat1(const struct fat_volume *vol)
{
	return vol->g.type == FAT16 ? le16(vol->fat.raw + 2) : le32(vol->fat.raw + 4);
}

static void set_raw_fat1(struct fat_volume *vol, uint32_t v)
{
	if (vol->g.type == FAT16)
		put_le16(vol->fat.raw + 2, (uint16_t)v);
	else
		put_le32(vol->fat.raw + 4, v);
	fat_table_mark_dirty(&vol->fat, 0, 8);
}

static int write_state(struct fat_volume *vol, bool dirty)
{
	if (dirty)
		vol->boot[vol->g.state_offset] |= FAT_STATE_DIRTY;
	else
		vol->boot[vol->g.state_offset] &= (uint8_t)~FAT_STATE_DIRTY;
	uint32_t bit = clean_bit(vol);
	if (bit) {
		uint32_t v = raw_fat1(vol);
		set_raw_fat1(vol, dirty ? v & ~bit : v | bit);
	}
	int r = dev_write(vol, vol->boot, vol->g.sector_size, 0);
	int r2 = vol_writeback(vol);
	return r < 0 ? r : r2;
}

/* The free count FSInfo gets. As Linux does, the count FSInfo had at mount is kept up to date
 * by what changed since, not replaced by the FAT's: on a damaged volume they differ (lost
 * clusters are used in the FAT, free in fsck.fat's count once it reclaims them), and
 * overwriting the count would add a problem to fsck's report that the damage did not make.
 * A missing or impossible count is replaced by the FAT's. */
static uint32_t fsinfo_count(const struct fat_volume *vol)
{
	if (vol->fsinfo_free > vol->g.cluster_count)
		return vol->fat.free_count;
	int64_t n = (int64_t)vol->fsinfo_free + vol->fat.free_count - vol->free_at_mount;
	return n < 0 ? 0 : n > vol->g.cluster_count ? vol->g.cluster_count : (uint32_t)n;
}

static int write_fsinfo(struct fat_volume *vol)
{
	if (vol->g.type != FAT32 || !vol->g.fsinfo_sector || vol->readonly)
		return 0;
	uint32_t ss = vol->g.sector_size;
	uint8_t *sec = malloc(ss);
	if (!sec)
		return -ENOMEM;
	uint64_t off = (uint64_t)vol->g.fsinfo_sector * ss;
	int r = dev_read(vol, sec, ss, off);
	struct fat_fsinfo fi;
	if (r == 0 && fat_fsinfo_parse(sec, ss, &fi) == 0) {
		fi.free_count = fsinfo_count(vol);
		/* the last cluster allocated, as the specification and Linux keep the hint (and
		 * mkfs.fat, whose 2 is the root's cluster); "unknown" when there is none */
		fi.next_free = vol->fat.last_alloc ? vol->fat.last_alloc : FSINFO_UNKNOWN;
		fat_fsinfo_update(sec, &fi);
		r = dev_write(vol, sec, ss, off);
	}
	free(sec);
	return r;
}

/* Does a FAT copy start as every FAT does: entry 0 all ones above the media byte? */
static bool fat0_ok(const struct fat_volume *vol, const uint8_t *raw)
{
	switch (vol->g.type) {
	case FAT12:
		return (le16(raw) & 0xF00) == 0xF00;
	case FAT16:
		return (le16(raw) & 0xFF00) == 0xFF00;
	case FAT32:
	default:
		return (le32(raw) & 0x0FFFFF00) == 0x0FFFFF00;
	}
}

/* The first FAT copy read (raw, len bytes) does not start as a FAT does while another copy
 * does: use that one instead, as fsck.fat does ("FATs differ - using second FAT"), so that the
 * driver and the checker see one volume. Returns whether raw now holds another copy. */
static bool pick_fat_copy(struct fat_volume *vol, uint8_t *raw, size_t len)
{
	if (!vol->g.mirrored || vol->g.nfats < 2 || fat0_ok(vol, raw))
		return false;
	uint8_t *other = malloc(len);
	bool found = false;
	for (uint32_t i = 0; other && i < vol->g.nfats && !found; i++) {
		if (i == vol->g.active_fat ||
		    dev_read(vol, other, len, vol->g.fat_offset + i * vol->g.fat_size) < 0 ||
		    !fat0_ok(vol, other))
			continue;
		memcpy(raw, other, len);
		vol->g.active_fat = i;
		found = true;
	}
	free(other);
	return found;
}

static int claims_read(void *ctx, void *buf, size_t len, uint64_t off)
{
	return dev_read(ctx, buf, len, off);
}

/* Before a read-write mount serves: which clusters two chains claim, or a chain claims while
 * the FAT calls them free (fat_claims.h). The allocator never takes the latter; nodes whose
 * chains hold either are read-only. */
static int find_cross_links(struct fat_volume *vol)
{
	int r = fat_claims_scan(&vol->claims, &vol->fat, &vol->g, claims_read, vol);
	if (r < 0)
		return r;
	vol->fat.avoid = vol->claims.hands_off;
	vol->fat.avoid_free = vol->claims.claimed_free;
	return 0;
}

static struct fat_volume *open_fail(struct fat_volume *vol, char *why, size_t whylen,
				    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static struct fat_volume *open_fail(struct fat_volume *vol, char *why, size_t whylen,
				    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	if (vol->root)
		node_destroy(vol, vol->root);
	fat_claims_free(&vol->claims);
	free(vol->fat_differs);
	fat_table_free(&vol->fat);
	free(vol->boot);
	pthread_mutex_destroy(&vol->lock);
	vo_block_close(vol->dev);
	free(vol);
	return NULL;
}

struct fat_volume *fat_volume_open(struct vo_block *dev, const struct fat_mount_options *opt,
				   char *why, size_t whylen)
{
	struct fat_volume *vol = calloc(1, sizeof *vol);
	if (!vol) {
		snprintf(why, whylen, "out of memory");
		vo_block_close(dev);
		return NULL;
	}
	vol->dev = dev;
	vol->opt = *opt;
	vol->readonly = opt->readonly || vo_block_readonly(dev);
	vol->next_ino = INO_FRESH_BASE;
	pthread_mutex_init(&vol->lock, NULL);
	fat_names_init();
	char reason[256];
	if (fat_codepage_load(&vol->cp, opt->codepage, reason, sizeof reason) < 0)
		return open_fail(vol, why, whylen, "%s", reason);

	uint8_t head[4096];
	uint64_t size = vo_block_size(dev);
	size_t want = size < sizeof head ? (size_t)size : sizeof head;
	memset(head, 0, sizeof head);
	if (want < 512)
		return open_fail(vol, why, whylen, "not a FAT file system (only %zu bytes)", want);
	int r = dev_read(vol, head, want, 0);
	if (r < 0)
		return open_fail(vol, why, whylen, "cannot read the boot sector: %s", strerror(-r));
	if (fat_bpb_parse(head, want, size, &vol->g, reason, sizeof reason) < 0)
		return open_fail(vol, why, whylen, "not a FAT file system (%s)", reason);

	vol->boot = malloc(vol->g.sector_size);
	size_t fat_bytes = (size_t)vol->g.fat_used;
	uint8_t *raw = malloc(fat_bytes + 4);
	if (!vol->boot || !raw) {
		free(raw);
		return open_fail(vol, why, whylen, "out of memory for a FAT of %zu bytes", fat_bytes);
	}
	memcpy(vol->boot, head, vol->g.sector_size);
	memset(raw + fat_bytes, 0, 4);
	r = dev_read(vol, raw, fat_bytes, vol->g.fat_offset + vol->g.active_fat * vol->g.fat_size);
	bool other_copy = r == 0 && pick_fat_copy(vol, raw, fat_bytes);
	if (r < 0 || fat_table_init(&vol->fat, vol->g.type, vol->g.cluster_count, raw,
				    fat_bytes + 4) < 0) {
		free(raw);
		return open_fail(vol, why, whylen, "cannot read the FAT: %s",
				 strerror(r < 0 ? -r : EINVAL));
	}

	vol->free_at_mount = vol->fat.free_count;
	vol->fsinfo_free = FSINFO_UNKNOWN;
	if (vol->g.type == FAT32 && vol->g.fsinfo_sector) {
		uint8_t *sec = malloc(vol->g.sector_size);
		struct fat_fsinfo fi;
		if (sec && dev_read(vol, sec, vol->g.sector_size,
				    (uint64_t)vol->g.fsinfo_sector * vol->g.sector_size) == 0 &&
		    fat_fsinfo_parse(sec, vol->g.sector_size, &fi) == 0) {
			vol->fsinfo_free = fi.free_count;
			/* the free count we trust is the one we counted (FSInfo's is only kept
			 * up to date, see fsinfo_count); the hint is only a hint
			 * (one outside the volume is ignored: the search starts at cluster 2) */
			fat_table_set_hint(&vol->fat, fi.next_free);
		}
		free(sec);
	}

	if (!vol->readonly && ((r = find_cross_links(vol)) < 0 ||
				(r = compare_fat_copies(vol)) < 0))
		return open_fail(vol, why, whylen, "cannot check the cluster chains: %s",
				 strerror(-r));

	struct fat_node *root = node_new(vol);
	if (!root)
		return open_fail(vol, why, whylen, "out of memory");
	vol->root = root;
	root->is_dir = true;
	root->ino = 1;
	root->nlookup = 1;
	root->de[DE_ATTR] = FAT_ATTR_DIR;
	memcpy(root->de, "           ", 11);
	if (vol->g.type == FAT32 &&
	    fat_chain_extents(&vol->fat, vol->g.root_cluster, &root->ext) < 0)
		return open_fail(vol, why, whylen,
				 "the root directory's cluster chain is broken (run fsck.fat)");
	root->chain_shared = fat_claims_touch(&vol->claims, &root->ext);
	r = vol_load_dir(vol, root);
	if (r < 0)
		return open_fail(vol, why, whylen, "cannot read the root directory: %s",
				 strerror(-r));

	/* dirty by either mark, as fsck.fat reads them: the boot sector's flag, or the
	 * clean-shutdown bit of FAT[1] cleared (FAT16 and FAT32) */
	vol->was_dirty = (vol->boot[vol->g.state_offset] & FAT_STATE_DIRTY) ||
			 (clean_bit(vol) && !(raw_fat1(vol) & clean_bit(vol)));
	if (!vol->readonly && !vol->was_dirty) {
		r = write_state(vol, true);
		if (r < 0)
			return open_fail(vol, why, whylen, "cannot mark the volume in use: %s",
					 strerror(-r));
		vol->state_set = true;
	}
	/* (said once the mount is sure to go ahead: a refusal is one line) */
	if (other_copy)
		vo_warn("%s: the first FAT is damaged (entry 0 is wrong): FAT copy %u is used, as "
			"fsck.fat does; run fsck.fat", vo_block_name(vol->dev),
			vol->g.active_fat + 1);
	if (vol->claims.contested || vol->claims.claimed_free)
		vo_warn("%s: %u clusters are claimed by two chains and %u free ones by a chain: "
			"what holds them is read-only and they are never allocated; run fsck.fat",
			vo_block_name(vol->dev), vol->claims.contested, vol->claims.claimed_free);
	if (vol->was_dirty)
		vo_warn("%s was not cleanly unmounted: some data may be damaged; run fsck.fat",
			vo_block_name(dev));
	if (!vol->readonly && vol->opt.commit) {
		pthread_cond_init(&vol->flusher_cond, NULL);
		if (pthread_create(&vol->flusher, NULL, flusher_main, vol) == 0)
			vol->flusher_running = true;
		else
			vo_warn("no write-back thread: changes reach %s at fsync and unmount only",
				vo_block_name(dev));
	}
	return vol;
}

int fat_volume_sync(struct fat_volume *vol)
{
	pthread_mutex_lock(&vol->lock);
	int r = vol_writeback(vol);
	int r2 = write_fsinfo(vol);
	pthread_mutex_unlock(&vol->lock);
	/* the flush may take long: other operations go on meanwhile (what they change is not
	 * what this fsync promised) */
	int r3 = vol->readonly ? 0 : vo_block_flush(vol->dev);
	return r < 0 ? r : r2 < 0 ? r2 : r3;
}

int fat_volume_close(struct fat_volume *vol)
{
	int result = 0;
	if (vol->flusher_running) {
		pthread_mutex_lock(&vol->lock);
		vol->flusher_stop = true;
		pthread_cond_signal(&vol->flusher_cond);
		pthread_mutex_unlock(&vol->lock);
		pthread_join(vol->flusher, NULL);
		pthread_cond_destroy(&vol->flusher_cond);
	}
	if (!vol->readonly) {
		/* files unlinked while open, still open at the end: their clusters go now */
		for (struct fat_node *n = vol->nodes; n; n = n->next)
			if (n->deleted) {
				n->nopen = 0;
				n->nlookup = 0; /* the kernel is gone */
				vol_release_deleted(vol, n);
			}
		result = vol_writeback(vol);
		int r = write_fsinfo(vol);
		if (r < 0 && result == 0)
			result = r;
		if (r == 0 && result == 0) /* the fsinfo must reach the disk before the flag goes */
			result = vo_block_flush(vol->dev);
		if (vol->state_set && result == 0)
			result = write_state(vol, false);
		r = vo_block_flush(vol->dev);
		if (r < 0 && result == 0)
			result = r;
	}
	while (vol->nodes)
		node_destroy(vol, vol->nodes);
	fat_claims_free(&vol->claims);
	free(vol->fat_differs);
	fat_table_free(&vol->fat);
	fat_u64map_free(&vol->ino_by_loc);
	fat_u64map_free(&vol->loc_by_ino);
	free(vol->dirty_dirs);
	free(vol->boot);
	pthread_mutex_destroy(&vol->lock);
	vo_block_close(vol->dev);
	free(vol);
	return result;
}
