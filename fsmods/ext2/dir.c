/* Directories: lookup, insert, remove, retarget, iterate, and the in-memory name index.
 *
 * libext2fs finds a name (ext2fs_lookup) and a free slot (ext2fs_link) by reading the whole
 * directory each time and removes one (ext2fs_unlink) the same way, so filling or emptying a
 * directory of n entries costs n^2. Here each directory the kernel asks about gets an index
 * (name -> inode, type, block), built by one pass over its blocks and kept up to date by every
 * change this daemon makes (it is the only writer); plain (linear) directories also keep the
 * free room of each block, so an insert goes straight to a block that has space.
 *
 * Indexed (htree) directories, which the kernel creates, keep their hash order: inserts into
 * them go through ext2fs_link, which knows the tree; removals and retargets edit the leaf block
 * in place, which does not disturb the tree. Directories this daemon creates stay linear (as
 * libext2fs makes them); the kernel reads them fine and e2fsck -D can index them.
 * Inline-data directories are only read (the file system is then mounted read-only). */
#define _GNU_SOURCE
#include "dirblock.h"
#include "e2fuse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { UNKNOWN_BLOCK = UINT32_MAX };

struct dent {
	struct dent *next;
	ext2_ino_t ino;
	uint32_t lblk; /* the block holding it, or UNKNOWN_BLOCK (a hint for htree dirs) */
	uint8_t ftype;
	uint8_t len;
	char name[];
};

struct dir_index {
	struct dent **buckets;
	size_t nbuckets, count;
	uint32_t nblocks;
	uint16_t *room;   /* linear directories: per block, the biggest record a new entry fits */
	uint32_t hint;    /* the block an insert tries first */
	bool htree, inline_data;
	/* The block last edited, kept here verified and written back later: a directory filled
	 * or emptied in order edits one block many times in a row, and each read costs a
	 * checksum verification and each write a checksum (4 KiB of crc32c). Written out before
	 * libext2fs touches the directory, at every commit, and when the index goes away. */
	ext2_ino_t ino;
	uint32_t cached_lblk;
	blk64_t cached_pblk;
	void *cached;
	bool cached_dirty;
	struct dir_index *dirty_prev, *dirty_next; /* e->dirty_dirs */
};

static uint64_t name_hash(const char *name, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 0x100000001b3ULL;
	return h;
}

static void dirty_unlink(struct e2 *e, struct dir_index *di)
{
	if (!di->cached_dirty)
		return;
	if (di->dirty_prev)
		di->dirty_prev->dirty_next = di->dirty_next;
	else
		e->dirty_dirs = di->dirty_next;
	if (di->dirty_next)
		di->dirty_next->dirty_prev = di->dirty_prev;
	di->dirty_prev = di->dirty_next = NULL;
	di->cached_dirty = false;
}

void dir_index_drop(struct e2 *e, struct dir_index *di)
{
	if (!di)
		return;
	dirty_unlink(e, di);
	for (size_t i = 0; i < di->nbuckets; i++) {
		for (struct dent *d = di->buckets[i], *next; d; d = next) {
			next = d->next;
			free(d);
		}
	}
	free(di->buckets);
	free(di->room);
	free(di->cached);
	free(di);
}

static struct dent **slot(struct dir_index *di, const char *name, size_t len)
{
	struct dent **pp = &di->buckets[name_hash(name, len) & (di->nbuckets - 1)];
	while (*pp && !((*pp)->len == len && memcmp((*pp)->name, name, len) == 0))
		pp = &(*pp)->next;
	return pp;
}

static int index_grow(struct dir_index *di)
{
	size_t nb = di->nbuckets ? di->nbuckets * 2 : 16;
	struct dent **b = calloc(nb, sizeof *b);
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < di->nbuckets; i++) {
		for (struct dent *d = di->buckets[i], *next; d; d = next) {
			next = d->next;
			size_t k = name_hash(d->name, d->len) & (nb - 1);
			d->next = b[k];
			b[k] = d;
		}
	}
	free(di->buckets);
	di->buckets = b;
	di->nbuckets = nb;
	return 0;
}

static int index_add(struct dir_index *di, const char *name, size_t len, ext2_ino_t ino,
		     int ftype, uint32_t lblk)
{
	if (di->count >= di->nbuckets && index_grow(di) < 0)
		return -ENOMEM;
	struct dent **pp = slot(di, name, len);
	if (*pp) { /* a duplicate name on disk: the first one wins, as in a lookup */
		return 0;
	}
	struct dent *d = malloc(sizeof *d + len + 1);
	if (!d)
		return -ENOMEM;
	d->next = NULL;
	d->ino = ino;
	d->lblk = lblk;
	d->ftype = (uint8_t)ftype;
	d->len = (uint8_t)len;
	memcpy(d->name, name, len);
	d->name[len] = '\0';
	*pp = d;
	di->count++;
	return 0;
}

static void index_del(struct dir_index *di, const char *name, size_t len)
{
	struct dent **pp = slot(di, name, len);
	if (*pp) {
		struct dent *d = *pp;
		*pp = d->next;
		free(d);
		di->count--;
	}
}

static struct dirblock make_db(struct e2 *e, void *buf)
{
	return (struct dirblock){
		.buf = buf,
		.size = e->fs->blocksize,
		.tail = ext2fs_has_feature_metadata_csum(e->fs->super),
		.filetype = ext2fs_has_feature_filetype(e->fs->super),
	};
}

/* Read logical block lblk of a directory. -ENOENT for a hole (htree directories may have
 * them), -EIO for a corrupt block. */
static int read_block(struct e2 *e, ext2_ino_t dir, struct node *n, struct ext2_inode_large *in,
		      uint64_t lblk, void *buf, blk64_t *pblkp)
{
	uint64_t pblk, len;
	bool uninit;
	int r = data_map(e, n, in, lblk, 1, &pblk, &len, &uninit);
	if (r < 0)
		return r;
	if (pblk == 0 || uninit)
		return -ENOENT;
	errcode_t err = ext2fs_read_dir_block4(e->fs, pblk, buf, 0, dir);
	if (err)
		return -e2_errno(e, err, "reading a directory block", dir);
	if (pblkp)
		*pblkp = pblk;
	return 0;
}

static int write_block(struct e2 *e, ext2_ino_t dir, blk64_t pblk, void *buf)
{
	errcode_t err = ext2fs_write_dir_block4(e->fs, pblk, buf, 0, dir);
	if (err)
		return -e2_errno(e, err, "writing a directory block", dir);
	e2_mark_dirty(e);
	return 0;
}

static int cache_flush(struct e2 *e, struct dir_index *di)
{
	if (!di || !di->cached_dirty)
		return 0;
	int r = write_block(e, di->ino, di->cached_pblk, di->cached);
	if (r == 0)
		dirty_unlink(e, di);
	return r;
}

static void cache_mark_dirty(struct e2 *e, struct dir_index *di)
{
	if (!di->cached_dirty) {
		di->cached_dirty = true;
		di->dirty_prev = NULL;
		di->dirty_next = e->dirty_dirs;
		if (e->dirty_dirs)
			e->dirty_dirs->dirty_prev = di;
		e->dirty_dirs = di;
	}
	e2_mark_dirty(e);
}

/* Logical block lblk of the directory, through its one-block cache. */
static int cache_load(struct e2 *e, struct node *n, struct dir_index *di,
		      struct ext2_inode_large *in, uint32_t lblk, void **bufp, blk64_t *pblkp)
{
	if (di->cached && di->cached_lblk == lblk) {
		*bufp = di->cached;
		if (pblkp)
			*pblkp = di->cached_pblk;
		return 0;
	}
	int r = cache_flush(e, di);
	if (r < 0)
		return r;
	if (!di->cached && !(di->cached = malloc(e->fs->blocksize)))
		return -ENOMEM;
	di->cached_lblk = UNKNOWN_BLOCK;
	if ((r = read_block(e, di->ino, n, in, lblk, di->cached, &di->cached_pblk)) < 0)
		return r;
	di->cached_lblk = lblk;
	*bufp = di->cached;
	if (pblkp)
		*pblkp = di->cached_pblk;
	return 0;
}

int dir_index_flush(struct e2 *e, struct dir_index *di)
{
	return cache_flush(e, di);
}

int dir_flush_all(struct e2 *e)
{
	int err = 0;
	while (e->dirty_dirs) {
		int r = cache_flush(e, e->dirty_dirs);
		if (r < 0) {
			err = r;
			dirty_unlink(e, e->dirty_dirs); /* reported; do not loop on it */
		}
	}
	return err;
}

struct build_ctx {
	struct e2 *e;
	struct dir_index *di;
	uint32_t lblk;
	int err;
};

static int build_one(void *arg, const struct dirent_view *de)
{
	struct build_ctx *c = arg;
	if (de->ino > c->e->fs->super->s_inodes_count)
		return -EIO;
	int r = index_add(c->di, de->name, de->name_len, de->ino, de->file_type, c->lblk);
	return r < 0 ? r : 0;
}

static int build_inline_one(ext2_ino_t dir, int entry, struct ext2_dir_entry *dirent,
			    int offset, int blocksize, char *buf, void *priv)
{
	(void)dir, (void)entry, (void)offset, (void)blocksize, (void)buf;
	struct build_ctx *c = priv;
	if (dirent->inode == 0)
		return 0;
	int r = index_add(c->di, dirent->name, ext2fs_dirent_name_len(dirent), dirent->inode,
			  ext2fs_dirent_file_type(dirent), UNKNOWN_BLOCK);
	if (r < 0) {
		c->err = r;
		return DIRENT_ABORT;
	}
	return 0;
}

/* The blocks of a directory, from its size. A size that claims more blocks than the inode has
 * allocated (i_blocks) is corruption, as e2fsck says; taken at its word it would have every
 * listing walk millions of holes, and the index allocate for each of them. i_blocks itself is
 * no bound (with huge_file it has 48 bits), so the size must also fit in the file system, whose
 * blocks the image holds (a shorter image is refused at mount). */
static int dir_nblocks(struct e2 *e, ext2_ino_t dir, const struct ext2_inode_large *in,
		       uint64_t *nblocks)
{
	uint64_t bs = e->fs->blocksize;
	uint64_t allocated = ext2fs_get_stat_i_blocks(e->fs, (struct ext2_inode *)in) * 512 / bs;
	*nblocks = EXT2_I_SIZE(in) / bs;
	if (*nblocks > allocated || *nblocks > ext2fs_blocks_count(e->fs->super) ||
	    *nblocks > UINT32_MAX - 1) {
		e2_errno(e, EXT2_ET_DIR_CORRUPTED, "the directory's size is beyond its blocks", dir);
		return -EIO;
	}
	return 0;
}

static int build_index(struct e2 *e, ext2_ino_t dir, struct node *n, struct dir_index **out)
{
	struct ext2_inode_large in;
	int r = ino_read(e, dir, &in);
	if (r < 0)
		return r;
	if (!LINUX_S_ISDIR(in.i_mode))
		return -ENOTDIR;
	struct dir_index *di = calloc(1, sizeof *di);
	if (!di || index_grow(di) < 0) {
		dir_index_drop(e, di);
		return -ENOMEM;
	}
	di->ino = dir;
	di->cached_lblk = UNKNOWN_BLOCK;
	struct build_ctx c = { .e = e, .di = di };
	if (in.i_flags & EXT4_INLINE_DATA_FL) {
		di->inline_data = true;
		errcode_t err = ext2fs_dir_iterate2(e->fs, dir, DIRENT_FLAG_INCLUDE_INLINE_DATA,
						    NULL, build_inline_one, &c);
		if (err || c.err) {
			dir_index_drop(e, di);
			return err ? -e2_errno(e, err, "reading an inline directory", dir) : c.err;
		}
		*out = di;
		return 0;
	}
	di->htree = (in.i_flags & EXT2_INDEX_FL) != 0;
	uint64_t nblocks;
	if ((r = dir_nblocks(e, dir, &in, &nblocks)) < 0) {
		dir_index_drop(e, di);
		return r;
	}
	di->nblocks = (uint32_t)nblocks;
	di->room = calloc(nblocks ? nblocks : 1, sizeof *di->room);
	void *buf = malloc(e->fs->blocksize);
	if (!di->room || !buf) {
		free(buf);
		dir_index_drop(e, di);
		return -ENOMEM;
	}
	for (uint32_t b = 0; b < di->nblocks; b++) {
		r = read_block(e, dir, n, &in, b, buf, NULL);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			break;
		struct dirblock db = make_db(e, buf);
		c.lblk = b;
		r = dirblock_walk(&db, build_one, &c);
		if (r < 0) {
			e2_errno(e, EXT2_ET_DIR_CORRUPTED, "reading a directory block", dir);
			r = -EIO;
			break;
		}
		int room = dirblock_room(&db);
		di->room[b] = (uint16_t)(room > 0 ? (room > 65535 ? 65535 : room) : 0);
	}
	free(buf);
	if (r < 0 && r != -ENOENT) {
		dir_index_drop(e, di);
		return r;
	}
	*out = di;
	return 0;
}

static int get_index(struct e2 *e, ext2_ino_t dir, struct dir_index **out, struct node **np)
{
	struct node *n = node_get(e, dir);
	if (!n)
		return -ENOMEM;
	if (!n->dindex) {
		int r = build_index(e, dir, n, &n->dindex);
		if (r < 0)
			return r;
	}
	*out = n->dindex;
	if (np)
		*np = n;
	return 0;
}

int dir_lookup(struct e2 *e, ext2_ino_t dir, const char *name, ext2_ino_t *ino)
{
	struct dir_index *di;
	int r = get_index(e, dir, &di, NULL);
	if (r < 0)
		return r;
	struct dent *d = *slot(di, name, strlen(name));
	if (!d)
		return -ENOENT;
	*ino = d->ino;
	return 0;
}

/* Find the block holding name (trying its recorded block first) and load it in the cache. */
static int locate(struct e2 *e, struct node *n, struct dir_index *di, struct dent *d,
		  struct ext2_inode_large *in, void **bufp, uint32_t *lblkp)
{
	int r;
	if (d->lblk != UNKNOWN_BLOCK) {
		r = cache_load(e, n, di, in, d->lblk, bufp, NULL);
		if (r == 0) {
			struct dirblock db = make_db(e, *bufp);
			if (dirblock_find(&db, d->name, d->len, NULL) == 0) {
				*lblkp = d->lblk;
				return 0;
			}
		}
		if (r < 0 && r != -ENOENT)
			return r;
	}
	/* an htree insert may have moved it: look everywhere */
	for (uint32_t b = 0; b < di->nblocks; b++) {
		r = cache_load(e, n, di, in, b, bufp, NULL);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			return r;
		struct dirblock db = make_db(e, *bufp);
		if (dirblock_find(&db, d->name, d->len, NULL) == 0) {
			d->lblk = b;
			*lblkp = b;
			return 0;
		}
	}
	e2_errno(e, EXT2_ET_DIR_CORRUPTED, "a name in the index is missing from the directory",
		 di->ino);
	return -EIO;
}

static void set_room(struct e2 *e, struct dir_index *di, uint32_t lblk, void *buf)
{
	if (!di->room || lblk >= di->nblocks)
		return;
	struct dirblock db = make_db(e, buf);
	int room = dirblock_room(&db);
	di->room[lblk] = (uint16_t)(room > 0 ? (room > 65535 ? 65535 : room) : 0);
}

/* Apply op to the block holding name, write it back. */
enum edit { EDIT_REMOVE, EDIT_RETARGET };

static int edit_entry(struct e2 *e, ext2_ino_t dir, const char *name, enum edit op,
		      ext2_ino_t ino, int ftype)
{
	struct dir_index *di;
	struct node *n;
	int r = get_index(e, dir, &di, &n);
	if (r < 0)
		return r;
	size_t len = strlen(name);
	struct dent *d = *slot(di, name, len);
	if (!d)
		return -ENOENT;
	if (di->inline_data)
		return -EROFS;
	struct ext2_inode_large in;
	if ((r = ino_read(e, dir, &in)) < 0)
		return r;
	void *buf;
	uint32_t lblk;
	if ((r = locate(e, n, di, d, &in, &buf, &lblk)) < 0)
		return r;
	struct dirblock db = make_db(e, buf);
	r = op == EDIT_REMOVE ? dirblock_remove(&db, name, (unsigned)len)
			      : dirblock_retarget(&db, name, (unsigned)len, ino, ftype);
	if (r < 0)
		return r;
	cache_mark_dirty(e, di);
	if (op == EDIT_REMOVE) {
		index_del(di, name, len);
		set_room(e, di, lblk, buf);
	} else {
		d->ino = ino;
		d->ftype = (uint8_t)ftype;
	}
	return 0;
}

int dir_remove(struct e2 *e, ext2_ino_t dir, const char *name)
{
	return edit_entry(e, dir, name, EDIT_REMOVE, 0, 0);
}

int dir_retarget(struct e2 *e, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype)
{
	return edit_entry(e, dir, name, EDIT_RETARGET, ino, ftype);
}

/* The directory now has nb blocks: grow the per-block room array with it (new blocks count as
 * full until measured). */
static int resize_room(struct dir_index *di, uint32_t nb)
{
	if (nb > di->nblocks) {
		uint16_t *room = realloc(di->room, nb * sizeof *room);
		if (!room)
			return -ENOMEM;
		memset(room + di->nblocks, 0, (nb - di->nblocks) * sizeof *room);
		di->room = room;
	}
	di->nblocks = nb;
	return 0;
}

/* Insert into an htree directory through libext2fs, which keeps the hash order. */
static int add_htree(struct e2 *e, ext2_ino_t dir, struct dir_index *di, struct node *n,
		     const char *name, ext2_ino_t ino, int ftype)
{
	int r = cache_flush(e, di); /* libext2fs reads the leaves itself */
	if (r < 0)
		return r;
	struct ext2_inode_large in;
	if ((r = ino_read(e, dir, &in)) < 0 || (r = data_check_tree(e, n, &in)) < 0)
		return r;
	/* and may split a leaf: the cached copy must not outlive that */
	di->cached_lblk = UNKNOWN_BLOCK;
	errcode_t err = ext2fs_link(e->fs, dir, name, ino, ftype);
	data_map_invalidate(n);
	if (err)
		return -e2_errno(e, err, "adding a name to an indexed directory", dir);
	r = ino_read(e, dir, &in);
	if (r < 0)
		return r;
	if (!(in.i_flags & EXT2_INDEX_FL))
		di->htree = false; /* libext2fs gave up the index: rebuild ours from scratch */
	e2_mark_dirty(e);
	/* a split adds blocks: the room array must follow, or a later removal in a new block
	 * writes past it */
	if ((r = resize_room(di, (uint32_t)(EXT2_I_SIZE(&in) / e->fs->blocksize))) < 0)
		return r;
	if (!di->htree) {
		dir_index_drop(e, n->dindex);
		n->dindex = NULL;
		return 0;
	}
	return index_add(di, name, strlen(name), ino, ftype, UNKNOWN_BLOCK);
}

/* A linear directory is full: add a block (libext2fs allocates, maps and formats it). */
static int expand(struct e2 *e, ext2_ino_t dir, struct dir_index *di, struct node *n)
{
	int r0 = cache_flush(e, di);
	if (r0 < 0)
		return r0;
	struct ext2_inode_large in;
	int r = ino_read(e, dir, &in);
	if (r < 0 || (r = data_check_tree(e, n, &in)) < 0)
		return r;
	errcode_t err = ext2fs_expand_dir(e->fs, dir);
	data_map_invalidate(n);
	if (err)
		return -e2_errno(e, err, "growing a directory", dir);
	e2_mark_dirty(e);
	r = ino_read(e, dir, &in);
	if (r < 0)
		return r;
	uint32_t nb = (uint32_t)(EXT2_I_SIZE(&in) / e->fs->blocksize);
	uint32_t old = di->nblocks;
	if ((r = resize_room(di, nb)) < 0)
		return r;
	/* measure the new block(s) */
	void *buf = malloc(e->fs->blocksize);
	if (!buf)
		return -ENOMEM;
	for (uint32_t b = old; b < nb; b++)
		if (read_block(e, dir, n, &in, b, buf, NULL) == 0)
			set_room(e, di, b, buf);
	free(buf);
	di->hint = nb ? nb - 1 : 0;
	return 0;
}

int dir_add(struct e2 *e, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype)
{
	struct dir_index *di;
	struct node *n;
	int r = get_index(e, dir, &di, &n);
	if (r < 0)
		return r;
	size_t len = strlen(name);
	if (len == 0 || len > EXT2_NAME_LEN)
		return len ? -ENAMETOOLONG : -ENOENT;
	if (*slot(di, name, len))
		return -EEXIST;
	if (di->inline_data)
		return -EROFS;
	if (!ext2fs_has_feature_filetype(e->fs->super))
		ftype = 0;
	if (di->htree)
		return add_htree(e, dir, di, n, name, ino, ftype);

	unsigned need = dirblock_rec_len((unsigned)len);
	struct ext2_inode_large in;
	if ((r = ino_read(e, dir, &in)) < 0)
		return r;
	for (int attempt = 0; attempt < 3; attempt++) {
		/* a block with room: the cached one if it has, else starting where the last
		 * insert went */
		uint32_t b = UINT32_MAX;
		if (di->cached_lblk < di->nblocks && di->room[di->cached_lblk] >= need)
			b = di->cached_lblk;
		for (uint32_t i = 0; b == UINT32_MAX && i < di->nblocks; i++) {
			uint32_t k = (di->hint + i) % di->nblocks;
			if (di->room[k] >= need)
				b = k;
		}
		if (b == UINT32_MAX) {
			if ((r = expand(e, dir, di, n)) < 0)
				break;
			if ((r = ino_read(e, dir, &in)) < 0)
				break;
			continue;
		}
		void *buf;
		r = cache_load(e, n, di, &in, b, &buf, NULL);
		if (r == -ENOENT) {
			di->room[b] = 0;
			attempt--;
			continue;
		}
		if (r < 0)
			break;
		struct dirblock db = make_db(e, buf);
		r = dirblock_insert(&db, name, (unsigned)len, ino, ftype);
		if (r == -ENOSPC) { /* the recorded room was stale */
			set_room(e, di, b, buf);
			attempt--;
			continue;
		}
		if (r < 0)
			break;
		cache_mark_dirty(e, di);
		set_room(e, di, b, buf);
		di->hint = b;
		r = index_add(di, name, len, ino, ftype, b);
		break;
	}
	return r;
}

int dir_set_dotdot(struct e2 *e, ext2_ino_t dir, ext2_ino_t parent)
{
	return dir_retarget(e, dir, "..", parent, EXT2_FT_DIR);
}

int dir_is_empty(struct e2 *e, ext2_ino_t dir)
{
	struct dir_index *di;
	int r = get_index(e, dir, &di, NULL);
	if (r < 0)
		return r;
	if (di->count > 2)
		return 0;
	for (size_t i = 0; i < di->nbuckets; i++)
		for (struct dent *d = di->buckets[i]; d; d = d->next)
			if (strcmp(d->name, ".") != 0 && strcmp(d->name, "..") != 0)
				return 0;
	return 1;
}

int dir_init(struct e2 *e, ext2_ino_t dir, struct ext2_inode_large *in, ext2_ino_t parent)
{
	ext2_filsys fs = e->fs;
	char *block = NULL;
	errcode_t err = ext2fs_new_dir_block(fs, dir, parent, &block);
	if (err)
		return -e2_errno(e, err, "formatting a directory block", dir);
	blk64_t goal = ext2fs_find_inode_goal(fs, dir, (struct ext2_inode *)in, 0), blk;
	err = ext2fs_new_block2(fs, goal, NULL, &blk);
	if (err) {
		ext2fs_free_mem(&block);
		return -e2_errno(e, err, "allocating a directory block", dir);
	}
	ext2fs_block_alloc_stats2(fs, blk, +1);
	if (in->i_flags & EXT4_EXTENTS_FL) {
		ext2_extent_handle_t h;
		err = ext2fs_extent_open2(fs, dir, (struct ext2_inode *)in, &h);
		if (!err) {
			err = ext2fs_extent_set_bmap(h, 0, blk, 0);
			ext2fs_extent_free(h);
		}
	} else {
		in->i_block[0] = (__u32)blk;
	}
	if (!err)
		err = ext2fs_iblk_add_blocks(fs, (struct ext2_inode *)in, 1);
	if (!err)
		err = ext2fs_inode_size_set(fs, (struct ext2_inode *)in, fs->blocksize);
	if (!err)
		err = ext2fs_write_dir_block4(fs, blk, block, 0, dir);
	ext2fs_free_mem(&block);
	if (err) {
		ext2fs_block_alloc_stats2(fs, blk, -1);
		return -e2_errno(e, err, "writing a new directory", dir);
	}
	e2_mark_dirty(e);
	return ino_write(e, dir, in);
}

/* ---- iteration (readdir) ----
 * Positions are byte offsets in the directory: block * block size + offset in the block, of
 * the entry after the one returned, so a position stays valid while other entries come and
 * go. Inline directories (read-only) count entries instead. */

struct iter_ctx {
	dir_fn fn;
	void *arg;
	uint64_t base;   /* byte position of the block */
	uint64_t from;   /* skip records before this position */
	uint32_t ninodes;
	int stopped;
};

static int iter_one(void *arg, const struct dirent_view *de)
{
	struct iter_ctx *c = arg;
	uint64_t pos = c->base + de->off;
	if (pos < c->from)
		return 0;
	if (de->ino > c->ninodes)
		return -EIO;
	if (c->fn(c->arg, de->name, de->name_len, de->ino, de->file_type, pos + de->rec_len)) {
		c->stopped = 1;
		return 1;
	}
	return 0;
}

struct inline_iter {
	dir_fn fn;
	void *arg;
	uint64_t from, index;
	int stopped;
};

static int iter_inline_one(ext2_ino_t dir, int entry, struct ext2_dir_entry *dirent,
			   int offset, int blocksize, char *buf, void *priv)
{
	(void)dir, (void)entry, (void)offset, (void)blocksize, (void)buf;
	struct inline_iter *c = priv;
	if (dirent->inode == 0)
		return 0;
	c->index++;
	if (c->index <= c->from)
		return 0;
	if (c->fn(c->arg, dirent->name, ext2fs_dirent_name_len(dirent), dirent->inode,
		  ext2fs_dirent_file_type(dirent), c->index)) {
		c->stopped = 1;
		return DIRENT_ABORT;
	}
	return 0;
}

int dir_iterate(struct e2 *e, ext2_ino_t dir, uint64_t pos, dir_fn fn, void *arg)
{
	struct ext2_inode_large in;
	int r = ino_read(e, dir, &in);
	if (r < 0)
		return r;
	if (!LINUX_S_ISDIR(in.i_mode))
		return -ENOTDIR;
	if (in.i_flags & EXT4_INLINE_DATA_FL) {
		struct inline_iter c = { .fn = fn, .arg = arg, .from = pos };
		errcode_t err = ext2fs_dir_iterate2(e->fs, dir, DIRENT_FLAG_INCLUDE_INLINE_DATA,
						    NULL, iter_inline_one, &c);
		return err ? -e2_errno(e, err, "reading an inline directory", dir) : 0;
	}
	struct node *n = node_get(e, dir);
	if (!n)
		return -ENOMEM;
	unsigned bs = e->fs->blocksize;
	uint64_t nblocks;
	if ((r = dir_nblocks(e, dir, &in, &nblocks)) < 0)
		return r;
	void *buf = malloc(bs);
	if (!buf)
		return -ENOMEM;
	struct iter_ctx c = { .fn = fn, .arg = arg, .from = pos,
			      .ninodes = e->fs->super->s_inodes_count };
	struct dir_index *di = n->dindex;
	for (uint64_t b = pos / bs; b < nblocks && !c.stopped; b++) {
		void *block = buf;
		if (di && di->cached && di->cached_lblk == b) {
			block = di->cached; /* newer than what the device has */
		} else {
			r = read_block(e, dir, n, &in, b, buf, NULL);
			if (r == -ENOENT)
				continue;
			if (r < 0)
				break;
		}
		struct dirblock db = make_db(e, block);
		c.base = b * bs;
		r = dirblock_walk(&db, iter_one, &c);
		if (r < 0) {
			e2_errno(e, EXT2_ET_DIR_CORRUPTED, "reading a directory block", dir);
			r = -EIO;
			break;
		}
		r = 0;
	}
	free(buf);
	return r == -ENOENT ? 0 : r;
}
