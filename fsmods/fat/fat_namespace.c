/* The namespace operations of fat_volume.h: lookup, create (files and directories), unlink,
 * rmdir and rename (within and across directories, replacing, RENAME_NOREPLACE and
 * RENAME_EXCHANGE), as Linux vfat does them.
 *
 * Every operation checks everything that can fail before it changes anything, so an error
 * leaves memory and disk as they were; its changes reach the disk in the order that keeps a
 * crash harmless: a new cluster is chained before an entry points at it, and an entry is gone
 * before its clusters are freed (a crash then leaves lost clusters, never shared ones). */
#define _GNU_SOURCE
#include "fat_volume.h"

#include "fat_endian.h"
#include "log.h"

#include <errno.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A name from the kernel for a new entry, as UTF-16, checked as Linux vfat does (EINVAL for
 * what FAT forbids, trailing dots dropped). */
static int new_name(const char *name, uint16_t *u, size_t *n)
{
	int r = fat_utf8_to_utf16(name, strlen(name), u, FAT_NAME_UTF8_MAX);
	if (r < 0)
		return r == -ENAMETOOLONG ? r : -EINVAL;
	*n = (size_t)r;
	return fat_name_check(u, n);
}

/* The slot of an existing entry called name in d: the name as given first (so that whatever a
 * listing shows, even from a damaged image, can be opened), then without trailing dots (as
 * Linux vfat compares). Nothing is refused: a name FAT forbids simply is not there. */
static int32_t find_name(const struct fat_dir *d, const char *name)
{
	uint16_t u[FAT_NAME_UTF8_MAX];
	int n = fat_utf8_to_utf16(name, strlen(name), u, FAT_NAME_UTF8_MAX);
	if (n <= 0)
		return n == -ENAMETOOLONG ? n : -ENOENT;
	int32_t slot = fat_dir_lookup(d, u, (size_t)n);
	size_t stripped = (size_t)n;
	while (slot < 0 && stripped && u[stripped - 1] == '.')
		stripped--;
	if (slot < 0 && stripped && stripped < (size_t)n)
		slot = fat_dir_lookup(d, u, stripped);
	return slot < 0 ? -ENOENT : slot;
}

static int usable_dir(struct fat_volume *vol, struct fat_node *dir)
{
	if (!dir->is_dir)
		return -ENOTDIR;
	if (dir->deleted)
		return -ENOENT;
	return vol_load_dir(vol, dir);
}

/* A directory whose entries are about to change: not when read-only, nor when its clusters
 * are claimed by something else too (fat_claims.h). */
static int changeable_dir(struct fat_volume *vol, struct fat_node *dir)
{
	int r = vol->readonly ? -EROFS : usable_dir(vol, dir);
	return r < 0 ? r : dir->chain_shared ? -EIO : 0;
}

int fat_vol_lookup(struct fat_volume *vol, struct fat_node *dir, const char *name,
		   struct fat_node **out, bool *exact)
{
	pthread_mutex_lock(&vol->lock);
	int r = usable_dir(vol, dir);
	int32_t slot = r == 0 ? find_name(dir->dir, name) : r;
	r = slot < 0 ? (int)slot : 0;
	if (r == 0) {
		struct fat_node *child = vol_child(vol, dir, (uint32_t)slot, &r);
		if (child) {
			child->nlookup++;
			child->refs--;
			*exact = strcmp(dir->dir->names[slot]->name, name) == 0;
			*out = child;
		}
	}
	pthread_mutex_unlock(&vol->lock);
	return r;
}

/* Find k free slots in dir, growing it by whole clusters when it is full (the fixed root of
 * FAT12/16 cannot grow: ENOSPC, as a full disk). */
static int32_t room_for(struct fat_volume *vol, struct fat_node *dir, unsigned k)
{
	struct fat_dir *d = dir->dir;
	int32_t slot;
	while ((slot = fat_dir_find_free(d, k)) < 0) {
		if (!dir->parent && vol->g.type != FAT32)
			return -ENOSPC;
		uint32_t per_cluster = vol->g.cluster_size / FAT_ENTRY_SIZE;
		if (d->nslots + per_cluster > FAT_DIR_MAX_SLOTS)
			return -ENOSPC;
		uint32_t last = fat_extents_last(&dir->ext);
		struct fat_extents added = { 0 };
		int r = vol_alloc(vol, last, 1, &added);
		if (r < 0) {
			fat_extents_free(&added);
			return r;
		}
		uint32_t c = added.v[0].start;
		fat_extents_free(&added);
		/* zeroed before it is linked in (the commit writes the FAT after this) */
		r = vol_zero_clusters(vol, c, 1);
		if (r == 0)
			r = fat_extents_append(&dir->ext, c);
		if (r == 0)
			r = fat_dir_grow(d, d->nslots + per_cluster);
		if (r < 0) {
			/* undo: unchain the cluster again */
			struct fat_extents one = { 0 };
			fat_extents_append(&one, c);
			fat_free_extents(&vol->fat, &one);
			fat_extents_free(&one);
			if (fat_extents_last(&dir->ext) == c)
				dir->ext.v[dir->ext.n - 1].count--, dir->ext.total--;
			if (dir->ext.n && dir->ext.v[dir->ext.n - 1].count == 0)
				dir->ext.n--;
			if (last)
				fat_set(&vol->fat, last, FAT_EOC);
			return r;
		}
	}
	return slot;
}

/* The first cluster a ".." entry names for dir (0 for the root, even on FAT32). */
static uint32_t dotdot_cluster(struct fat_volume *vol, struct fat_node *dir)
{
	return dir->parent ? vol_first_cluster(vol, dir->de) : 0;
}

/* A new directory's first cluster: "." and ".." and nothing else. */
static int init_dir_cluster(struct fat_volume *vol, uint32_t c, struct fat_node *parent,
			    const struct timespec *now)
{
	uint8_t *buf = calloc(1, vol->g.cluster_size);
	if (!buf)
		return -ENOMEM;
	uint8_t *dot = buf, *dotdot = buf + FAT_ENTRY_SIZE;
	memcpy(dot, ".          ", 11);
	memcpy(dotdot, "..         ", 11);
	dot[DE_ATTR] = dotdot[DE_ATTR] = FAT_ATTR_DIR;
	vol_touch(vol, dot, FAT_TIME_M | FAT_TIME_A | FAT_TIME_C, now);
	vol_touch(vol, dotdot, FAT_TIME_M | FAT_TIME_A | FAT_TIME_C, now);
	vol_set_first_cluster(vol, dot, c);
	vol_set_first_cluster(vol, dotdot, dotdot_cluster(vol, parent));
	ssize_t w = vo_block_pwrite(vol->dev, buf, vol->g.cluster_size,
				    fat_cluster_offset(&vol->g, c));
	free(buf);
	return w < 0 ? (int)w : (size_t)w == vol->g.cluster_size ? 0 : -EIO;
}

/* A directory's contents changed: its mtime and ctime, as Linux does (not kept when its
 * entry lies in clusters shared with something else: vol_node_store refuses to write there). */
static void dir_touched(struct fat_volume *vol, struct fat_node *dir, const struct timespec *now)
{
	if (!dir->parent)
		return;
	vol_touch(vol, dir->de, FAT_TIME_M | FAT_TIME_C, now);
	vol_node_store(vol, dir);
}

int fat_vol_create(struct fat_volume *vol, struct fat_node *dir, const char *name, bool is_dir,
		   struct fat_node **out)
{
	uint16_t u[FAT_NAME_UTF8_MAX];
	uint8_t entries[FAT_LFN_MAX_SLOTS + 1][FAT_ENTRY_SIZE];
	size_t n;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);

	pthread_mutex_lock(&vol->lock);
	uint32_t cluster = 0;
	int r = changeable_dir(vol, dir);
	if (r == 0)
		r = new_name(name, u, &n);
	if (r == 0 && (fat_dir_lookup(dir->dir, u, n) >= 0 || find_name(dir->dir, name) >= 0))
		r = -EEXIST;
	int k = r == 0 ? fat_dir_build_entries(dir->dir, u, n, entries) : r;
	if (k < 0) {
		r = k;
		goto out;
	}
	if (is_dir) {
		struct fat_extents one = { 0 };
		r = vol_alloc(vol, 0, 1, &one);
		cluster = r == 0 ? one.v[0].start : 0;
		fat_extents_free(&one);
		if (r == 0)
			r = init_dir_cluster(vol, cluster, dir, &now);
		if (r < 0)
			goto undo;
	}
	int32_t slot = room_for(vol, dir, (unsigned)k);
	if (slot < 0) {
		r = slot;
		goto undo;
	}
	uint8_t *e = entries[k - 1];
	e[DE_ATTR] = is_dir ? FAT_ATTR_DIR : FAT_ATTR_ARCHIVE;
	vol_touch(vol, e, FAT_TIME_M | FAT_TIME_A | FAT_TIME_C, &now);
	vol_set_first_cluster(vol, e, cluster);
	int32_t short_slot = fat_dir_insert(dir->dir, (uint32_t)slot, entries, (unsigned)k);
	if (short_slot < 0) {
		r = short_slot;
		goto undo;
	}
	vol_dir_changed(vol, dir);
	dir_touched(vol, dir, &now);
	r = vol_commit(vol);
	/* a new entry at a place an old, renamed file once had must not inherit its number */
	struct fat_node *child = vol_child(vol, dir, (uint32_t)short_slot, &r);
	if (child) {
		child->nlookup++;
		child->refs--;
		*out = child;
		r = 0;
	}
	goto out;
undo:
	if (cluster) {
		struct fat_extents one = { 0 };
		fat_extents_append(&one, cluster);
		fat_free_extents(&vol->fat, &one);
		fat_extents_free(&one);
		vol_commit(vol);
	}
out:
	pthread_mutex_unlock(&vol->lock);
	return r;
}

/* The entry at slot of dir is about to be removed or renamed by the kernel under `name`; if it
 * is stored under another spelling, the kernel's dentry for that one goes stale. */
static void spelled(struct fat_volume *vol, struct fat_node *dir, int32_t slot, const char *name)
{
	if (slot >= 0 && vol->stale_name && strcmp(dir->dir->names[slot]->name, name) != 0)
		vol->stale_name(vol, dir, dir->dir->names[slot]->name);
}

/* The entry of name in dir, for a change: its slot, or -errno. */
static int32_t find_entry(struct fat_volume *vol, struct fat_node *dir, const char *name)
{
	int r = changeable_dir(vol, dir);
	return r < 0 ? r : find_name(dir->dir, name);
}

int fat_vol_unlink(struct fat_volume *vol, struct fat_node *dir, const char *name)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	pthread_mutex_lock(&vol->lock);
	int32_t slot = find_entry(vol, dir, name);
	int r = slot < 0 ? (int)slot : 0;
	struct fat_node *n = NULL;
	if (r == 0)
		n = vol_child(vol, dir, (uint32_t)slot, &r);
	if (n && n->is_dir)
		r = -EISDIR;
	else if (n && vol_node_changeable(n) < 0)
		r = -EIO; /* freeing a broken chain could free clusters of other files */
	if (r == 0) {
		uint64_t loc = vol_slot_location(vol, dir, (uint32_t)slot);
		spelled(vol, dir, slot, name);
		fat_dir_remove(dir->dir, (uint32_t)slot);
		vol_dir_changed(vol, dir);
		dir_touched(vol, dir, &now);
		vol_ino_dropped(vol, loc);
		n->deleted = true;
		vol_touch(vol, n->de, FAT_TIME_C, &now);
		r = vol_commit(vol);
		/* its clusters go now, or with the last close */
		vol_release_deleted(vol, n);
	}
	vol_node_put(vol, n);
	pthread_mutex_unlock(&vol->lock);
	return r;
}

int fat_vol_rmdir(struct fat_volume *vol, struct fat_node *dir, const char *name)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	pthread_mutex_lock(&vol->lock);
	int32_t slot = find_entry(vol, dir, name);
	int r = slot < 0 ? (int)slot : 0;
	struct fat_node *n = NULL;
	if (r == 0)
		n = vol_child(vol, dir, (uint32_t)slot, &r);
	if (n && !n->is_dir)
		r = -ENOTDIR;
	else if (n && n->chain_shared)
		r = -EIO; /* its clusters are someone else's too: they must not be freed */
	if (r == 0)
		r = vol_load_dir(vol, n);
	if (r == 0 && n->dir->nnames > 0)
		r = -ENOTEMPTY;
	if (r == 0) {
		spelled(vol, dir, slot, name);
		fat_dir_remove(dir->dir, (uint32_t)slot);
		vol_dir_changed(vol, dir);
		dir_touched(vol, dir, &now);
		n->deleted = true;
		r = vol_commit(vol);
		vol_release_deleted(vol, n); /* nobody can open a removed directory's entries */
	}
	vol_node_put(vol, n);
	pthread_mutex_unlock(&vol->lock);
	return r;
}

/* Is node a or one of its ancestors the directory d? */
static bool is_within(const struct fat_node *a, const struct fat_node *d)
{
	for (; a; a = a->parent)
		if (a == d)
			return true;
	return false;
}

/* A directory moved to a new parent: its ".." entry follows. */
static int repoint_dotdot(struct fat_volume *vol, struct fat_node *moved, struct fat_node *parent)
{
	int r = vol_load_dir(vol, moved);
	if (r < 0)
		return r;
	if (moved->dir->dotdot_slot < 0)
		return 0;
	uint8_t *e = fat_dir_slot(moved->dir, (uint32_t)moved->dir->dotdot_slot);
	vol_set_first_cluster(vol, e, dotdot_cluster(vol, parent));
	fat_dir_mark_dirty(moved->dir, (uint32_t)moved->dir->dotdot_slot, 1);
	vol_dir_changed(vol, moved);
	return 0;
}

/* Move node n (whose entry is at its slot in its parent) to newdir, under new entries already
 * built; the slot for them was found by room_for. The old entry is removed after the new one is
 * written, as Linux does. */
static int move_entry(struct fat_volume *vol, struct fat_node *n, struct fat_node *newdir,
		      uint8_t entries[][FAT_ENTRY_SIZE], unsigned k, uint32_t first,
		      const struct timespec *now)
{
	struct fat_node *olddir = n->parent;
	uint64_t from = vol_slot_location(vol, olddir, n->slot);
	/* everything but the name and its case flags stays what it was */
	uint8_t *e = entries[k - 1];
	memcpy(e + DE_ATTR, n->de + DE_ATTR, 1);
	memcpy(e + DE_CTIME_CS, n->de + DE_CTIME_CS, FAT_ENTRY_SIZE - DE_CTIME_CS);
	vol_touch(vol, e, FAT_TIME_C, now);
	int32_t slot = fat_dir_insert(newdir->dir, first, entries, k);
	if (slot < 0) /* only -ENOMEM: the old entry stays, the file is where it was */
		return slot;
	fat_dir_remove(olddir->dir, n->slot);
	newdir->dir->names[slot]->node = n;
	memcpy(n->de, fat_dir_slot(newdir->dir, (uint32_t)slot), FAT_ENTRY_SIZE);
	if (newdir != olddir) {
		newdir->refs++;
		n->parent = newdir;
		olddir->refs--; /* the kernel holds it through the rename: it is not freed here */
	}
	n->slot = (uint32_t)slot;
	vol_dir_changed(vol, olddir);
	vol_dir_changed(vol, newdir);
	if (!n->is_dir)
		vol_ino_moved(vol, n->ino, from, vol_slot_location(vol, newdir, n->slot));
	return 0;
}

static int rename_exchange(struct fat_volume *vol, struct fat_node *a, struct fat_node *b,
			   const struct timespec *now)
{
	struct fat_node *pa = a->parent, *pb = b->parent;
	if ((a->is_dir && is_within(pb, a)) || (b->is_dir && is_within(pa, b)))
		return -EINVAL;
	if (pa != pb && ((a->is_dir && a->chain_shared) || (b->is_dir && b->chain_shared)))
		return -EIO; /* a ".." to rewrite in clusters that are someone else's too */
	int r = 0;
	if (pa != pb) {
		if (a->is_dir && (r = repoint_dotdot(vol, a, pb)) < 0)
			return r;
		if (b->is_dir && (r = repoint_dotdot(vol, b, pa)) < 0) {
			repoint_dotdot(vol, a, pa);
			return r;
		}
	}
	uint64_t la = vol_slot_location(vol, pa, a->slot), lb = vol_slot_location(vol, pb, b->slot);
	/* Each name now leads to the other file: a moves to b's entry (b's name and case flags,
	 * a's attributes, times, clusters and size) and b to a's. */
	uint8_t na[FAT_ENTRY_SIZE], nb[FAT_ENTRY_SIZE];
	memcpy(na, b->de, FAT_ENTRY_SIZE);
	na[DE_ATTR] = a->de[DE_ATTR];
	memcpy(na + DE_CTIME_CS, a->de + DE_CTIME_CS, FAT_ENTRY_SIZE - DE_CTIME_CS);
	memcpy(nb, a->de, FAT_ENTRY_SIZE);
	nb[DE_ATTR] = b->de[DE_ATTR];
	memcpy(nb + DE_CTIME_CS, b->de + DE_CTIME_CS, FAT_ENTRY_SIZE - DE_CTIME_CS);
	memcpy(a->de, na, FAT_ENTRY_SIZE);
	memcpy(b->de, nb, FAT_ENTRY_SIZE);
	uint32_t sa = a->slot;
	a->slot = b->slot;
	b->slot = sa;
	a->parent = pb; /* each parent loses one child and gains one: references stay even */
	b->parent = pa;
	pa->dir->names[b->slot]->node = b;
	pb->dir->names[a->slot]->node = a;
	if (pa != pb && a->is_dir != b->is_dir) {
		pa->dir->nsubdirs += b->is_dir ? 1u : (uint32_t)-1;
		pb->dir->nsubdirs += a->is_dir ? 1u : (uint32_t)-1;
	}
	vol_touch(vol, a->de, FAT_TIME_C, now);
	vol_touch(vol, b->de, FAT_TIME_C, now);
	vol_node_store(vol, a);
	vol_node_store(vol, b);
	if (!a->is_dir)
		vol_ino_set(vol, a->ino, lb);
	if (!b->is_dir)
		vol_ino_set(vol, b->ino, la);
	if (a->is_dir)
		vol_ino_dropped(vol, la);
	if (b->is_dir)
		vol_ino_dropped(vol, lb);
	return 0;
}

int fat_vol_rename(struct fat_volume *vol, struct fat_node *dir, const char *name,
		   struct fat_node *newdir, const char *newname, unsigned flags)
{
	uint16_t nu[FAT_NAME_UTF8_MAX];
	uint8_t entries[FAT_LFN_MAX_SLOTS + 1][FAT_ENTRY_SIZE];
	size_t nn;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;

	pthread_mutex_lock(&vol->lock);
	struct fat_node *src = NULL, *dst = NULL;
	int32_t s = find_entry(vol, dir, name), t = -1;
	int r = s < 0 ? (int)s : 0;
	if (r == 0)
		r = changeable_dir(vol, newdir);
	if (r == 0)
		r = new_name(newname, nu, &nn);
	if (r == 0) {
		t = fat_dir_lookup(newdir->dir, nu, nn);
		if (t < 0)
			t = find_name(newdir->dir, newname);
		if (t < 0)
			t = -1;
		src = vol_child(vol, dir, (uint32_t)s, &r);
	}
	if (r == 0 && t >= 0 && !(newdir == dir && t == s))
		dst = vol_child(vol, newdir, (uint32_t)t, &r);
	if (r < 0)
		goto out;

	if (flags & RENAME_EXCHANGE) {
		if (!dst) {
			r = newdir == dir && t == s ? 0 : -ENOENT;
		} else {
			spelled(vol, dir, s, name);
			spelled(vol, newdir, t, newname);
			r = rename_exchange(vol, src, dst, &now);
		}
		if (r == 0) {
			dir_touched(vol, dir, &now);
			dir_touched(vol, newdir, &now);
			r = vol_commit(vol);
		}
		goto out;
	}
	if (dst) {
		if (flags & RENAME_NOREPLACE) {
			r = -EEXIST;
			goto out;
		}
		if (src->is_dir && !dst->is_dir)
			r = -ENOTDIR;
		else if (!src->is_dir && dst->is_dir)
			r = -EISDIR;
		else if (dst->is_dir && (r = vol_load_dir(vol, dst)) == 0 && dst->dir->nnames)
			r = -ENOTEMPTY;
		if (r == 0 && (dst->chain_bad || dst->chain_shared || dst->size_mismatch))
			r = -EIO; /* replacing it would free its clusters */
		if (r < 0)
			goto out;
	} else if (t >= 0 && strcmp(dir->dir->names[s]->name, newname) == 0) {
		goto out; /* the very same name: nothing to do */
	}
	if (src->is_dir && newdir != dir) {
		if (is_within(newdir, src)) {
			r = -EINVAL;
			goto out;
		}
		if (src->chain_bad || src->chain_shared) {
			r = -EIO; /* its ".." cannot be rewritten */
			goto out;
		}
	}

	int k = fat_dir_build_entries(newdir->dir, nu, nn, entries);
	int32_t first = k < 0 ? k : room_for(vol, newdir, (unsigned)k);
	if (first < 0) {
		r = first;
		goto out;
	}
	if (src->is_dir && newdir != dir && (r = repoint_dotdot(vol, src, newdir)) < 0)
		goto out;
	spelled(vol, dir, s, name);
	if (dst)
		spelled(vol, newdir, t, newname);
	if (dst) {
		uint64_t loc = vol_slot_location(vol, newdir, dst->slot);
		fat_dir_remove(newdir->dir, dst->slot);
		vol_ino_dropped(vol, loc);
		dst->deleted = true;
		vol_touch(vol, dst->de, FAT_TIME_C, &now);
	}
	r = move_entry(vol, src, newdir, entries, (unsigned)k, (uint32_t)first, &now);
	dir_touched(vol, dir, &now);
	dir_touched(vol, newdir, &now);
	int rc = vol_commit(vol);
	r = r < 0 ? r : rc;
	if (dst)
		vol_release_deleted(vol, dst); /* a replaced directory is empty: its cluster goes */
out:
	vol_node_put(vol, dst);
	vol_node_put(vol, src);
	pthread_mutex_unlock(&vol->lock);
	return r;
}
