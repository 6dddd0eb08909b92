/* Inodes: the table of those the kernel holds, and reading, writing, creating and freeing them.
 *
 * FUSE inode numbers are the ext2 inode numbers, so the table only has to count lookups: when
 * the last name of an inode goes away while the kernel still holds it (an open file, a cwd),
 * the inode stays allocated with a link count of 0 and is freed when the kernel forgets it
 * (or at unmount) — unlinked-but-open files keep working, with no ".fuse_hidden" files.
 * An open file pins the kernel's inode, so the lookup count alone says whether it is in use. */
#define _GNU_SOURCE
#include "e2fuse.h"

#include <errno.h>
#include <ext2fs/ext3_extents.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>

/* ---- the node table ---- */

static size_t bucket(const struct node_table *t, ext2_ino_t ino)
{
	return ((uint64_t)ino * 0x9E3779B97F4A7C15ULL >> 17) & (t->nbuckets - 1);
}

struct node *node_find(struct e2 *e, ext2_ino_t ino)
{
	struct node_table *t = &e->nodes;
	if (!t->nbuckets)
		return NULL;
	for (struct node *n = t->buckets[bucket(t, ino)]; n; n = n->hnext)
		if (n->ino == ino)
			return n;
	return NULL;
}

static void grow(struct node_table *t)
{
	size_t nb = t->nbuckets ? t->nbuckets * 2 : 1024;
	struct node **b = calloc(nb, sizeof *b);
	if (!b)
		return; /* keep the longer chains */
	struct node_table nt = { .buckets = b, .nbuckets = nb, .count = t->count };
	for (size_t i = 0; i < t->nbuckets; i++) {
		for (struct node *n = t->buckets[i], *next; n; n = next) {
			next = n->hnext;
			size_t k = bucket(&nt, n->ino);
			n->hnext = b[k];
			b[k] = n;
		}
	}
	free(t->buckets);
	*t = nt;
}

struct node *node_get(struct e2 *e, ext2_ino_t ino)
{
	struct node *n = node_find(e, ino);
	if (n)
		return n;
	struct node_table *t = &e->nodes;
	if (t->count >= t->nbuckets)
		grow(t);
	if (!t->nbuckets)
		return NULL;
	n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	n->ino = ino;
	size_t k = bucket(t, ino);
	n->hnext = t->buckets[k];
	t->buckets[k] = n;
	t->count++;
	return n;
}

void node_ref(struct e2 *e, ext2_ino_t ino)
{
	struct node *n = node_get(e, ino);
	if (n)
		n->nlookup++;
}

static void node_remove(struct e2 *e, struct node *n)
{
	struct node_table *t = &e->nodes;
	struct node **pp = &t->buckets[bucket(t, n->ino)];
	while (*pp != n)
		pp = &(*pp)->hnext;
	*pp = n->hnext;
	t->count--;
	(void)dir_index_flush(e, n->dindex); /* a failure was reported where it happened */
	dir_index_drop(e, n->dindex);
	free(n);
}

void node_forget(struct e2 *e, ext2_ino_t ino, uint64_t count)
{
	struct node *n = node_find(e, ino);
	if (!n)
		return;
	n->nlookup = count < n->nlookup ? n->nlookup - count : 0;
	if (n->nlookup > 0 || ino == EXT2_ROOT_INO)
		return;
	bool unlinked = n->unlinked;
	node_remove(e, n);
	if (unlinked) {
		ino_release(e, ino);
		e2_mark_dirty(e);
		e->unlinked_waiting--;
		e->released_total++;
		pthread_cond_broadcast(&e->released_cond);
	}
}

bool e2_wait_for_released(struct e2 *e)
{
	if (e->unlinked_waiting == 0 || e->single_thread)
		return false; /* nothing to wait for, or nobody else to read the FORGET */
	uint64_t before = e->released_total;
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_nsec += 200 * 1000 * 1000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	while (e->released_total == before &&
	       pthread_cond_timedwait(&e->released_cond, &e->lock, &deadline) == 0)
		;
	return e->released_total != before;
}

void node_release_unlinked(struct e2 *e)
{
	struct node_table *t = &e->nodes;
	for (size_t i = 0; i < t->nbuckets; i++) {
		for (struct node *n = t->buckets[i]; n; n = n->hnext) {
			if (n->unlinked) {
				n->unlinked = false;
				e->unlinked_waiting--;
				ino_release(e, n->ino);
				e2_mark_dirty(e);
			}
		}
	}
}

void node_table_free(struct e2 *e)
{
	struct node_table *t = &e->nodes;
	for (size_t i = 0; i < t->nbuckets; i++) {
		for (struct node *n = t->buckets[i], *next; n; n = next) {
			next = n->hnext;
			dir_index_drop(e, n->dindex); /* written back by e2_close already */
			free(n);
		}
	}
	free(t->buckets);
	memset(t, 0, sizeof *t);
}

/* ---- inode fields ---- */

int ino_read(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in)
{
	memset(in, 0, sizeof *in);
	errcode_t r = ext2fs_read_inode_full(e->fs, ino, (struct ext2_inode *)in, sizeof *in);
	if (r)
		return -e2_errno(e, r, "reading the inode", ino);
	/* a size no file of this file system can have is corruption (as e2fsck says), not a
	 * file of petabytes of holes to read through */
	if (LINUX_S_ISREG(in->i_mode) && EXT2_I_SIZE(in) > e->max_file_size) {
		e2_errno(e, EXT2_ET_INODE_CORRUPTED, "the size is beyond the largest possible",
			 ino);
		return -EIO;
	}
	return 0;
}

int ino_write(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in)
{
	errcode_t r = ext2fs_write_inode_full(e->fs, ino, (struct ext2_inode *)in, sizeof *in);
	if (r)
		return -e2_errno(e, r, "writing the inode", ino);
	e2_mark_dirty(e);
	return 0;
}

uid_t ino_uid(const struct ext2_inode_large *in)
{
	return in->i_uid | (uid_t)in->osd2.linux2.l_i_uid_high << 16;
}

gid_t ino_gid(const struct ext2_inode_large *in)
{
	return in->i_gid | (gid_t)in->osd2.linux2.l_i_gid_high << 16;
}

void ino_set_uid(struct ext2_inode_large *in, uid_t uid)
{
	in->i_uid = (__u16)uid;
	in->osd2.linux2.l_i_uid_high = (__u16)(uid >> 16);
}

void ino_set_gid(struct ext2_inode_large *in, gid_t gid)
{
	in->i_gid = (__u16)gid;
	in->osd2.linux2.l_i_gid_high = (__u16)(gid >> 16);
}

/* Device numbers as the kernel stores them: the old 16-bit form in i_block[0] when it fits,
 * else the new 32-bit form in i_block[1]. */
dev_t ino_rdev(const struct ext2_inode_large *in)
{
	uint32_t old = in->i_block[0], nw = in->i_block[1];
	if (old)
		return makedev((old >> 8) & 0xff, old & 0xff);
	return makedev((nw & 0xfff00) >> 8, (nw & 0xff) | ((nw >> 12) & 0xfff00));
}

static void set_rdev(struct ext2_inode_large *in, dev_t dev)
{
	unsigned ma = major(dev), mi = minor(dev);
	if (ma < 256 && mi < 256) {
		in->i_block[0] = (ma << 8) | mi;
		in->i_block[1] = 0;
	} else {
		in->i_block[0] = 0;
		in->i_block[1] = (mi & 0xff) | (ma << 8) | ((mi & ~0xffU) << 12);
		in->i_block[2] = 0;
	}
}

/* Times: 32 bits of seconds in the base inode; with a large inode, an extra word holds two
 * more bits of seconds (years up to 2446) and the nanoseconds. */
static bool has_field(const struct ext2_inode_large *in, size_t end)
{
	return EXT2_GOOD_OLD_INODE_SIZE + (size_t)in->i_extra_isize >= end;
}

#define FIELD_END(f) (offsetof(struct ext2_inode_large, f) + sizeof(((struct ext2_inode_large *)0)->f))

static void time_fields(struct ext2_inode_large *in, enum ino_time which, __u32 **base,
			__u32 **extra, size_t *extra_end)
{
	switch (which) {
	default:
	case T_ATIME:
		*base = &in->i_atime, *extra = &in->i_atime_extra;
		*extra_end = FIELD_END(i_atime_extra);
		break;
	case T_MTIME:
		*base = &in->i_mtime, *extra = &in->i_mtime_extra;
		*extra_end = FIELD_END(i_mtime_extra);
		break;
	case T_CTIME:
		*base = &in->i_ctime, *extra = &in->i_ctime_extra;
		*extra_end = FIELD_END(i_ctime_extra);
		break;
	case T_CRTIME:
		*base = &in->i_crtime, *extra = &in->i_crtime_extra;
		*extra_end = FIELD_END(i_crtime_extra);
		break;
	}
}

void ino_set_time(struct ext2_inode_large *in, enum ino_time which, struct timespec ts)
{
	__u32 *base, *extra;
	size_t end;
	time_fields(in, which, &base, &extra, &end);
	if (which == T_CRTIME && !has_field(in, FIELD_END(i_crtime)))
		return;
	int64_t sec = ts.tv_sec;
	*base = (__u32)sec;
	if (has_field(in, end)) {
		uint32_t epoch = (uint32_t)((sec - (int32_t)(uint32_t)sec) >> 32) & EXT4_EPOCH_MASK;
		*extra = epoch | ((uint32_t)ts.tv_nsec << EXT4_EPOCH_BITS);
	}
}

struct timespec ino_get_time(const struct ext2_inode_large *in, enum ino_time which)
{
	__u32 *base, *extra;
	size_t end;
	time_fields((struct ext2_inode_large *)in, which, &base, &extra, &end);
	struct timespec ts = { .tv_sec = (int32_t)*base, .tv_nsec = 0 };
	if (has_field(in, end)) {
		ts.tv_sec += (int64_t)(*extra & EXT4_EPOCH_MASK) << 32;
		ts.tv_nsec = *extra >> EXT4_EPOCH_BITS;
		if (ts.tv_nsec > 999999999)
			ts.tv_nsec = 999999999;
	}
	return ts;
}

struct timespec e2_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts;
}

void ino_touch(struct ext2_inode_large *in, bool mtime, bool ctime)
{
	struct timespec now = e2_now();
	if (mtime)
		ino_set_time(in, T_MTIME, now);
	if (ctime)
		ino_set_time(in, T_CTIME, now);
}

void ino_stat(struct e2 *e, ext2_ino_t ino, const struct ext2_inode_large *in, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_mode = in->i_mode;
	st->st_nlink = in->i_links_count;
	st->st_uid = ino_uid(in);
	st->st_gid = ino_gid(in);
	st->st_size = (off_t)EXT2_I_SIZE(in);
	st->st_blksize = e->fs->blocksize;
	st->st_blocks = (blkcnt_t)ext2fs_get_stat_i_blocks(e->fs, (struct ext2_inode *)in);
	if (LINUX_S_ISCHR(in->i_mode) || LINUX_S_ISBLK(in->i_mode))
		st->st_rdev = ino_rdev(in);
	st->st_atim = ino_get_time(in, T_ATIME);
	st->st_mtim = ino_get_time(in, T_MTIME);
	st->st_ctim = ino_get_time(in, T_CTIME);
}

int e2_file_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return EXT2_FT_REG_FILE;
	case S_IFDIR: return EXT2_FT_DIR;
	case S_IFCHR: return EXT2_FT_CHRDEV;
	case S_IFBLK: return EXT2_FT_BLKDEV;
	case S_IFIFO: return EXT2_FT_FIFO;
	case S_IFSOCK: return EXT2_FT_SOCK;
	case S_IFLNK: return EXT2_FT_SYMLINK;
	default: return EXT2_FT_UNKNOWN;
	}
}

bool ino_has_no_xattrs(struct e2 *e, ext2_ino_t ino)
{
	unsigned isize = EXT2_INODE_SIZE(e->fs->super);
	unsigned char small[1024], *buf = isize <= sizeof small ? small : malloc(isize);
	if (!buf)
		return false;
	bool none = false;
	if (ext2fs_read_inode_full(e->fs, ino, (struct ext2_inode *)buf, (int)isize) == 0) {
		const struct ext2_inode_large *in = (const struct ext2_inode_large *)buf;
		none = ext2fs_file_acl_block(e->fs, (struct ext2_inode *)buf) == 0;
		unsigned at = EXT2_GOOD_OLD_INODE_SIZE + in->i_extra_isize;
		if (none && isize > EXT2_GOOD_OLD_INODE_SIZE && at + 4 <= isize) {
			uint32_t magic = (uint32_t)buf[at] | (uint32_t)buf[at + 1] << 8 |
					 (uint32_t)buf[at + 2] << 16 | (uint32_t)buf[at + 3] << 24;
			none = magic != EXT2_EXT_ATTR_MAGIC;
		}
	}
	if (buf != small)
		free(buf);
	return none;
}

/* ---- creating and freeing ---- */

static void init_extent_header(struct ext2_inode_large *in)
{
	struct ext3_extent_header *eh = (struct ext3_extent_header *)in->i_block;
	memset(in->i_block, 0, sizeof in->i_block);
	eh->eh_magic = ext2fs_cpu_to_le16(EXT3_EXT_MAGIC);
	eh->eh_entries = 0;
	eh->eh_depth = 0;
	eh->eh_max = ext2fs_cpu_to_le16((sizeof in->i_block - sizeof *eh) /
					sizeof(struct ext3_extent));
	in->i_flags |= EXT4_EXTENTS_FL;
}

/* An inode the bitmap calls free but that is in use (it has links and no deletion time): the
 * bitmap is damaged. */
static bool in_use_on_disk(struct e2 *e, ext2_ino_t ino, bool *is_dir)
{
	struct ext2_inode old;
	if (ext2fs_read_inode(e->fs, ino, &old) != 0 || old.i_links_count == 0 || old.i_dtime)
		return false;
	*is_dir = LINUX_S_ISDIR(old.i_mode);
	return true;
}

int ino_create(struct e2 *e, ext2_ino_t parent, mode_t mode, uid_t uid, gid_t gid, dev_t rdev,
	       ext2_ino_t *inop, struct ext2_inode_large *in)
{
	ext2_filsys fs = e->fs;
	ext2_ino_t ino;
	errcode_t r;
	/* a damaged inode bitmap must not make a new file overwrite one in use: such an inode
	 * is marked in use (the bitmap healed) and the next free one tried, a few times */
	for (int tries = 0;; tries++) {
		r = ext2fs_new_inode(fs, parent, (int)mode, NULL, &ino);
		if (r)
			return -e2_errno(e, r, "allocating an inode", parent);
		bool is_dir = false;
		if (!in_use_on_disk(e, ino, &is_dir))
			break;
		ext2fs_inode_alloc_stats2(fs, ino, +1, is_dir);
		e2_mark_dirty(e);
		if (tries == 1024) {
			e2_errno(e, EXT2_ET_INODE_ALLOC_FAIL, "the inode bitmap is damaged: it "
				 "calls inodes in use free", ino);
			return -EIO;
		}
	}

	unsigned isize = EXT2_INODE_SIZE(fs->super);
	memset(in, 0, sizeof *in);
	in->i_mode = (__u16)mode;
	ino_set_uid(in, uid);
	ino_set_gid(in, gid);
	in->i_links_count = S_ISDIR(mode) ? 2 : 1;
	if (isize > EXT2_GOOD_OLD_INODE_SIZE) {
		size_t extra = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
		if (extra > isize - EXT2_GOOD_OLD_INODE_SIZE)
			extra = isize - EXT2_GOOD_OLD_INODE_SIZE;
		in->i_extra_isize = (__u16)extra;
	}
	in->i_generation = e->next_generation++;
	struct timespec now = e2_now();
	ino_set_time(in, T_ATIME, now);
	ino_set_time(in, T_MTIME, now);
	ino_set_time(in, T_CTIME, now);
	ino_set_time(in, T_CRTIME, now);
	if ((S_ISREG(mode) || S_ISDIR(mode)) && ext2fs_has_feature_extents(fs->super))
		init_extent_header(in);
	if (S_ISCHR(mode) || S_ISBLK(mode))
		set_rdev(in, rdev);

	/* the whole on-disk inode, so nothing of a previous owner of the slot (such as its
	 * in-inode extended attributes) survives */
	unsigned char *full = calloc(1, isize);
	if (!full)
		return -ENOMEM;
	memcpy(full, in, isize < sizeof *in ? isize : sizeof *in);
	r = ext2fs_write_inode_full(fs, ino, (struct ext2_inode *)full, (int)isize);
	free(full);
	if (r)
		return -e2_errno(e, r, "writing a new inode", ino);
	ext2fs_inode_alloc_stats2(fs, ino, +1, S_ISDIR(mode));
	e2_mark_dirty(e);
	struct node *n = node_find(e, ino);
	if (n) { /* a node left from the inode's previous life */
		data_map_invalidate(n);
		n->map_checked = false;
		dir_index_drop(e, n->dindex);
		n->dindex = NULL;
	}
	*inop = ino;
	return 0;
}

int ino_release(struct e2 *e, ext2_ino_t ino)
{
	ext2_filsys fs = e->fs;
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r < 0)
		return r;
	struct node *n = node_find(e, ino);
	bool map_checked = n && n->map_checked;
	if (n) { /* nothing cached about the old inode may outlive it */
		data_map_invalidate(n);
		n->map_checked = false;
		dir_index_drop(e, n->dindex); /* unwritten: the blocks are being freed */
		n->dindex = NULL;
	}
	bool has_blocks = ext2fs_inode_has_valid_blocks2(fs, (struct ext2_inode *)&in);
	blk64_t acl_block = ext2fs_file_acl_block(fs, (struct ext2_inode *)&in);
	in.i_links_count = 0;
	in.i_size = 0;
	in.i_size_high = 0;
	in.i_dtime = (__u32)time(NULL);
	/* Whatever a damaged inode cannot give back (a block map or an attribute block that is
	 * corrupt) stays allocated — a leak, which e2fsck reclaims — but the inode itself is
	 * always freed: a half-freed inode (no name, still in use, or in use with a deletion
	 * time) is worse than a leak. libext2fs takes every block it frees off i_blocks and
	 * stops when the count would go below zero; the count goes with the inode, so a wrong
	 * one on disk must not keep the blocks: it starts from the largest value. */
	errcode_t err;
	if (has_blocks || acl_block) {
		in.i_blocks = UINT32_MAX;
		if (ext2fs_has_feature_huge_file(fs->super))
			in.osd2.linux2.l_i_blocks_hi = UINT16_MAX;
	}
	if (has_blocks && (map_checked || data_check_map(e, ino, &in, 0) == 0)) {
		err = ext2fs_punch(fs, ino, (struct ext2_inode *)&in, NULL, 0, ~0ULL);
		if (err)
			e2_errno(e, err, "freeing the blocks of a deleted inode (what is left of "
				 "them stays allocated)", ino);
	}
	if (acl_block) {
		err = e2_bad_blocks(e, acl_block, 1) ? EXT2_ET_BAD_EA_BLOCK_NUM
						      : ext2fs_free_ext_attr(fs, ino, &in);
		if (err)
			e2_errno(e, err, "freeing the attribute block of a deleted inode (it stays "
				 "allocated)", ino);
		ext2fs_file_acl_block_set(fs, (struct ext2_inode *)&in, 0);
	}
	in.i_blocks = 0;
	in.osd2.linux2.l_i_blocks_hi = 0;
	if ((r = ino_write(e, ino, &in)) < 0)
		return r;
	ext2fs_inode_alloc_stats2(fs, ino, -1, LINUX_S_ISDIR(in.i_mode));
	e2_mark_dirty(e);
	return 0;
}

int ino_check_release(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in)
{
	blk64_t acl = ext2fs_file_acl_block(e->fs, (struct ext2_inode *)in);
	if (acl && e2_bad_blocks(e, acl, 1)) {
		e2_errno(e, EXT2_ET_BAD_EA_BLOCK_NUM, "the attribute block is damaged: not "
			 "deleting the inode", ino);
		return -EIO;
	}
	struct node *n = node_find(e, ino); /* the kernel holds what it unlinks: usually found */
	return n ? data_check_tree(e, n, in) : data_check_map(e, ino, in, 0);
}

int ino_unlinked(struct e2 *e, ext2_ino_t ino)
{
	struct node *n = node_find(e, ino);
	if (n && n->nlookup > 0) {
		if (!n->unlinked)
			e->unlinked_waiting++;
		n->unlinked = true;
		return 0;
	}
	return ino_release(e, ino);
}

int ino_dir_link_inc(struct e2 *e, struct ext2_inode_large *dir)
{
	if (dir->i_links_count == 1)
		return 0; /* already "too many to count" */
	if (dir->i_links_count >= EXT2_LINK_MAX - 1) {
		/* ext4 lets only indexed directories of a dir_nlink file system overflow */
		if ((dir->i_flags & EXT2_INDEX_FL) && ext2fs_has_feature_dir_nlink(e->fs->super)) {
			dir->i_links_count = 1;
			return 0;
		}
		return -EMLINK;
	}
	dir->i_links_count++;
	return 0;
}

void ino_dir_link_dec(struct ext2_inode_large *dir)
{
	if (dir->i_links_count > 2)
		dir->i_links_count--;
}

/* relatime: atime moves when it is older than mtime or ctime, or a day old. */
void ino_atime_on_access(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in)
{
	if (e->readonly || e->noatime)
		return;
	struct timespec a = ino_get_time(in, T_ATIME), m = ino_get_time(in, T_MTIME),
			c = ino_get_time(in, T_CTIME), now = e2_now();
	bool stale = a.tv_sec < m.tv_sec || (a.tv_sec == m.tv_sec && a.tv_nsec <= m.tv_nsec) ||
		     a.tv_sec < c.tv_sec || (a.tv_sec == c.tv_sec && a.tv_nsec <= c.tv_nsec) ||
		     now.tv_sec - a.tv_sec >= 24 * 3600;
	if (!stale)
		return;
	ino_set_time(in, T_ATIME, now);
	ino_write(e, ino, in);
}

void ino_kill_suid(struct ext2_inode_large *in, const struct fuse_ctx *ctx, bool chown)
{
	if (!LINUX_S_ISREG(in->i_mode) || (!chown && ctx->uid == 0))
		return;
	__u16 mode = in->i_mode & (__u16)~S_ISUID;
	if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		mode &= (__u16)~S_ISGID;
	in->i_mode = mode;
}
