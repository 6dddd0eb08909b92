/* The file system as a whole: opening it (and deciding whether it may be written), commits,
 * the committer thread, statfs, unmount, and the translation of libext2fs errors to errno.
 *
 * Write policy. libext2fs writes ext2/3/4 metadata correctly for the features listed in
 * writable_*[] below; for anything else (inline_data, encryption, casefolding, quotas, bigalloc,
 * MMP, verity, unknown features) the mount is made read-only with a message naming the
 * features, because writing without them would leave a file system e2fsck complains about.
 * The journal is never written (libext2fs has no journalling) and never replayed: a journal that
 * needs recovery makes the mount refuse, saying how to recover, unless -o ro,norecovery asks to
 * see the file system as it is without the journal. */
#define _GNU_SOURCE
#include "e2fuse.h"
#include "ext2_io_vo.h"
#include "log.h"
#include "daemon.h"

#include <e2p/e2p.h>
#include <errno.h>
#include <et/com_err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <time.h>

/* Features whose every write libext2fs (and this daemon) keeps consistent. */
static const uint32_t writable_compat = EXT2_FEATURE_COMPAT_DIR_PREALLOC |
	EXT2_FEATURE_COMPAT_IMAGIC_INODES | EXT3_FEATURE_COMPAT_HAS_JOURNAL |
	EXT2_FEATURE_COMPAT_EXT_ATTR | EXT2_FEATURE_COMPAT_RESIZE_INODE |
	EXT2_FEATURE_COMPAT_DIR_INDEX | EXT2_FEATURE_COMPAT_LAZY_BG |
	EXT4_FEATURE_COMPAT_SPARSE_SUPER2 | EXT4_FEATURE_COMPAT_FAST_COMMIT |
	EXT4_FEATURE_COMPAT_STABLE_INODES | EXT4_FEATURE_COMPAT_ORPHAN_FILE;
static const uint32_t writable_incompat = EXT2_FEATURE_INCOMPAT_FILETYPE |
	EXT3_FEATURE_INCOMPAT_RECOVER | EXT2_FEATURE_INCOMPAT_META_BG |
	EXT3_FEATURE_INCOMPAT_EXTENTS | EXT4_FEATURE_INCOMPAT_64BIT |
	EXT4_FEATURE_INCOMPAT_FLEX_BG | EXT4_FEATURE_INCOMPAT_CSUM_SEED |
	EXT4_FEATURE_INCOMPAT_LARGEDIR;
static const uint32_t writable_ro_compat = EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER |
	EXT2_FEATURE_RO_COMPAT_LARGE_FILE | EXT4_FEATURE_RO_COMPAT_HUGE_FILE |
	EXT4_FEATURE_RO_COMPAT_GDT_CSUM | EXT4_FEATURE_RO_COMPAT_DIR_NLINK |
	EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE | EXT4_FEATURE_RO_COMPAT_METADATA_CSUM |
	EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT;

/* "a b c" for the feature bits in mask of the given kind (E2P_FEATURE_*). */
static void feature_names(int kind, uint32_t mask, char *out, size_t len)
{
	out[0] = '\0';
	for (int bit = 0; bit < 32; bit++) {
		if (!(mask & (1U << bit)))
			continue;
		size_t used = strlen(out);
		snprintf(out + used, len - used, "%s%s", used ? " " : "",
			 e2p_feature2string(kind, 1U << bit));
	}
}

/* The superblock straight from the device, for messages about images libext2fs refused. */
static bool raw_super(struct vo_block *dev, struct ext2_super_block *sb)
{
	return vo_block_pread(dev, sb, sizeof *sb, SUPERBLOCK_OFFSET) == (ssize_t)sizeof *sb &&
	       sb->s_magic == EXT2_SUPER_MAGIC;
}

static void report_open_error(struct e2 *e, errcode_t err)
{
	const char *src = e->source;
	struct ext2_super_block sb;
	char names[512];
	switch (err) {
	case EXT2_ET_BAD_MAGIC:
		vo_error("cannot mount %s: not an ext2/ext3/ext4 file system (no superblock magic)",
			 src);
		return;
	case EXT2_ET_SHORT_READ:
		vo_error("cannot mount %s: the image is truncated (a read past its end)", src);
		return;
	case EXT2_ET_UNSUPP_FEATURE:
		/* libext2fs opens a journal device only when asked to: it is not a file system */
		if (raw_super(e->dev, &sb) &&
		    (sb.s_feature_incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV)) {
			vo_error("cannot mount %s: it is an external journal device, not a file "
				 "system", src);
			return;
		}
		if (raw_super(e->dev, &sb)) {
			feature_names(E2P_FEATURE_INCOMPAT,
				      sb.s_feature_incompat & ~EXT2_LIB_FEATURE_INCOMPAT_SUPP,
				      names, sizeof names);
			vo_error("cannot mount %s: unsupported file system features: %s", src,
				 names);
			return;
		}
		break;
	case EXT2_ET_JOURNAL_UNSUPP_VERSION:
	case EXT2_ET_CORRUPT_SUPERBLOCK:
	case EXT2_ET_SB_CSUM_INVALID:
	case EXT2_ET_GDESC_BAD_BLOCK_MAP:
	case EXT2_ET_GDESC_BAD_INODE_MAP:
	case EXT2_ET_GDESC_BAD_INODE_TABLE:
	case EXT2_ET_BAD_DESC_SIZE:
	case EXT2_ET_UNEXPECTED_BLOCK_SIZE:
		vo_error("cannot mount %s: the file system is corrupt (%s): run e2fsck %s", src,
			 error_message(err), src);
		return;
	default:
		break;
	}
	vo_error("cannot mount %s: %s", src, error_message(err));
}

/* Blocks the kernel does not count as capacity in statfs (bsddf): superblocks, descriptors,
 * bitmaps, inode tables and the journal. mke2fs records it; older images get it computed. */
static uint64_t compute_overhead(ext2_filsys fs)
{
	struct ext2_super_block *sb = fs->super;
	if (sb->s_overhead_clusters)
		return (uint64_t)sb->s_overhead_clusters * EXT2FS_CLUSTER_RATIO(fs);
	uint64_t o = sb->s_first_data_block;
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		blk64_t super = 0, old_desc = 0, new_desc = 0;
		blk_t used = 0;
		ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used);
		o += used + 2 + fs->inode_blocks_per_group;
	}
	if (ext2fs_has_feature_journal(sb) && sb->s_journal_inum) {
		struct ext2_inode j;
		if (ext2fs_read_inode(fs, sb->s_journal_inum, &j) == 0)
			o += EXT2_I_SIZE(&j) / fs->blocksize;
	}
	return o;
}

/* The largest file size: extent files address 2^32 blocks; block-mapped ones what twelve
 * direct and three levels of indirect blocks reach; both within what i_blocks can count. */
static uint64_t compute_max_file_size(ext2_filsys fs)
{
	uint64_t bs = fs->blocksize, limit;
	if (ext2fs_has_feature_extents(fs->super)) {
		limit = (((uint64_t)1 << 32) - 1) * bs;
	} else {
		uint64_t a = bs / 4;
		limit = (12 + a + a * a + a * a * a) * bs;
	}
	if (!ext2fs_has_feature_huge_file(fs->super)) {
		uint64_t iblocks_limit = (((uint64_t)1 << 32) - 1) * 512;
		if (limit > iblocks_limit)
			limit = iblocks_limit;
	}
	return limit;
}

static int cmp_zone(const void *a, const void *b)
{
	const struct e2_zone *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* The metadata runs of every group (see e2_bad_blocks), sorted and merged. */
static int build_meta_zones(struct e2 *e)
{
	ext2_filsys fs = e->fs;
	size_t cap = (size_t)fs->group_desc_count * 5 + 1, n = 0;
	struct e2_zone *z = calloc(cap, sizeof *z);
	if (!z)
		return -ENOMEM;
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		blk64_t super = 0, old_desc = 0, new_desc = 0;
		blk_t used = 0;
		ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used);
		if (super || g == 0)
			z[n++] = (struct e2_zone){ super ? super : fs->super->s_first_data_block, 1 };
		if (old_desc)
			z[n++] = (struct e2_zone){ old_desc, fs->desc_blocks +
						   fs->super->s_reserved_gdt_blocks };
		if (new_desc)
			z[n++] = (struct e2_zone){ new_desc, 1 };
		z[n++] = (struct e2_zone){ ext2fs_block_bitmap_loc(fs, g), 1 };
		z[n++] = (struct e2_zone){ ext2fs_inode_bitmap_loc(fs, g), 1 };
		if (n == cap) /* never: five runs a group at most */
			break;
		z[n++] = (struct e2_zone){ ext2fs_inode_table_loc(fs, g), fs->inode_blocks_per_group };
	}
	qsort(z, n, sizeof *z, cmp_zone);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (m && z[i].start <= z[m - 1].start + z[m - 1].len) {
			uint64_t end = z[i].start + z[i].len;
			if (end > z[m - 1].start + z[m - 1].len)
				z[m - 1].len = end - z[m - 1].start;
		} else {
			z[m++] = z[i];
		}
	}
	e->meta = z;
	e->nmeta = m;
	return 0;
}

bool e2_bad_blocks(struct e2 *e, uint64_t pblk, uint64_t len)
{
	uint64_t nblocks = ext2fs_blocks_count(e->fs->super);
	if (len == 0)
		return false;
	if (pblk < e->fs->super->s_first_data_block || pblk >= nblocks || len > nblocks - pblk)
		return true;
	/* the last run that starts before the end of the range */
	size_t lo = 0, hi = e->nmeta;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (e->meta[mid].start < pblk + len)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && e->meta[lo - 1].start + e->meta[lo - 1].len > pblk;
}

/* A group whose descriptor says its inodes (or blocks) were never used has its bitmap
 * computed instead of read: if that is not true, allocation hands out what is in use. Group 0
 * holds the root, so it never is; any other must at least count all its inodes free. */
static bool uninit_flags_sane(ext2_filsys fs)
{
	if (!ext2fs_has_group_desc_csum(fs))
		return true; /* the flags mean nothing without group checksums */
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		bool inode_uninit = ext2fs_bg_flags_test(fs, g, EXT2_BG_INODE_UNINIT);
		bool block_uninit = ext2fs_bg_flags_test(fs, g, EXT2_BG_BLOCK_UNINIT);
		if (g == 0 && (inode_uninit || block_uninit))
			return false;
		if (inode_uninit &&
		    ext2fs_bg_free_inodes_count(fs, g) != fs->super->s_inodes_per_group)
			return false;
	}
	return true;
}

static bool writable_or_say_why(struct e2 *e)
{
	struct ext2_super_block *sb = e->fs->super;
	char names[700];
	uint32_t c = sb->s_feature_compat & ~writable_compat;
	uint32_t i = sb->s_feature_incompat & ~writable_incompat;
	uint32_t r = sb->s_feature_ro_compat & ~writable_ro_compat;
	if (c | i | r) {
		char a[200], b[200], d[200];
		feature_names(E2P_FEATURE_COMPAT, c, a, sizeof a);
		feature_names(E2P_FEATURE_INCOMPAT, i, b, sizeof b);
		feature_names(E2P_FEATURE_RO_INCOMPAT, r, d, sizeof d);
		snprintf(names, sizeof names, "%s%s%s%s%s", a, *a && (*b || *d) ? " " : "", b,
			 *b && *d ? " " : "", d);
		vo_warn("%s: mounting read-only: writing a file system with %s is not supported",
			e->source, names);
		return false;
	}
	return true;
}

static int check_journal(struct e2 *e, bool *readonly)
{
	struct ext2_super_block *sb = e->fs->super;
	/* (an external journal device never gets here: ext2fs_open2 refuses it) */
	if (ext2fs_has_feature_journal_needs_recovery(sb)) {
		if (*readonly && e->cfg.norecovery) {
			vo_warn("%s: the journal needs recovery; showing the file system without it "
				"(norecovery)", e->source);
			return VO_EXIT_OK;
		}
		vo_error("cannot mount %s: the journal needs recovery: run 'e2fsck -E journal_only "
			 "%s' (or mount with -o ro,norecovery to look without it)", e->source,
			 e->source);
		return VO_EXIT_SOURCE;
	}
	bool orphans = sb->s_last_orphan != 0 || ext2fs_has_feature_orphan_present(sb);
	if (orphans && !*readonly) {
		vo_error("cannot mount %s read-write: it has orphan inodes to release (it was not "
			 "unmounted cleanly): run 'e2fsck %s' first", e->source, e->source);
		return VO_EXIT_SOURCE;
	}
	return VO_EXIT_OK;
}

int e2_open(struct e2 *e, const char *source, bool readonly)
{
	char err[512];
	initialize_ext2_error_table(); /* error_message() in our own words for libext2fs codes */
	e->source = strdup(source);
	e->dev = vo_block_open(source, VO_BLOCK_LOCK | (readonly ? VO_BLOCK_RDONLY : 0), err,
			       sizeof err);
	if (!e->dev && !readonly) {
		/* a write-protected image is mounted read-only, as mount(8) does */
		e->dev = vo_block_open(source, VO_BLOCK_LOCK | VO_BLOCK_RDONLY, err, sizeof err);
		if (e->dev) {
			vo_warn("%s is write-protected, mounting read-only", source);
			readonly = true;
		} else {
			vo_block_open(source, VO_BLOCK_LOCK, err, sizeof err); /* the first error */
		}
	}
	if (!e->dev) {
		vo_error("%s", err);
		return VO_EXIT_SOURCE;
	}
	if (vo_block_readonly(e->dev))
		readonly = true;
	e->cache = bcache_new(e->dev, 1024, e->cfg.cache_size);
	char name[64];
	if (!e->cache || ext2_io_register(e->cache, name, sizeof name) < 0) {
		vo_error("cannot mount %s: out of memory", source);
		return VO_EXIT_SOURCE;
	}
	int flags = EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP | (readonly ? 0 : EXT2_FLAG_RW);
	errcode_t ret = ext2fs_open2(name, NULL, flags, 0, 0, ext2_vo_io_manager, &e->fs);
	if (ret == EXT2_ET_RO_UNSUPP_FEATURE && !readonly) {
		readonly = true;
		flags &= ~EXT2_FLAG_RW;
		ret = ext2fs_open2(name, NULL, flags, 0, 0, ext2_vo_io_manager, &e->fs);
		if (ret == 0)
			(void)writable_or_say_why(e);
	}
	if (ret) {
		e->fs = NULL;
		report_open_error(e, ret);
		return VO_EXIT_SOURCE;
	}
	ext2_filsys fs = e->fs;
	struct ext2_super_block *sb = fs->super;
	/* libext2fs keeps the last 4 inodes it read or wrote (a linear list); an operation here
	 * touches a parent, a child and a few more: a longer list saves re-reading inode table
	 * blocks and re-verifying checksums */
	ext2fs_create_inode_cache(fs, 128);

	uint64_t need = ext2fs_blocks_count(sb) * (uint64_t)fs->blocksize;
	if (need > vo_block_size(e->dev)) {
		vo_error("cannot mount %s: the image is truncated: the file system needs %llu bytes, "
			 "the image has %llu", source, (unsigned long long)need,
			 (unsigned long long)vo_block_size(e->dev));
		return VO_EXIT_SOURCE;
	}
	int status = check_journal(e, &readonly);
	if (status != VO_EXIT_OK)
		return status;
	if (!readonly && !writable_or_say_why(e))
		readonly = true;
	if (!readonly && ext2fs_has_feature_mmp(sb))
		readonly = true; /* reported by writable_or_say_why: MMP is not in the lists */

	struct ext2_inode root;
	ret = ext2fs_read_inode(fs, EXT2_ROOT_INO, &root);
	if (ret || !LINUX_S_ISDIR(root.i_mode) || root.i_links_count == 0) {
		vo_error("cannot mount %s: the file system is corrupt (%s): run e2fsck %s", source,
			 ret ? error_message(ret) : "the root inode is not a directory", source);
		return VO_EXIT_SOURCE;
	}
	if (!(sb->s_state & EXT2_VALID_FS) || (sb->s_state & EXT2_ERROR_FS))
		vo_warn("%s was not cleanly unmounted or has errors: running e2fsck is recommended",
			source);

	if (readonly) {
		fs->flags &= ~EXT2_FLAG_RW;
	} else {
		/* as the kernel does before it writes: descriptors that put a bitmap or an inode
		 * table outside its group (or on top of another) would have new inodes and blocks
		 * written over whatever is really there */
		ret = ext2fs_check_desc(fs);
		if (!ret && !uninit_flags_sane(fs))
			ret = EXT2_ET_GDESC_BAD_INODE_MAP;
		if (ret) {
			vo_error("cannot mount %s read-write: the group descriptors are corrupt (%s): "
				 "run e2fsck %s (or mount it read-only)", source, error_message(ret),
				 source);
			return VO_EXIT_SOURCE;
		}
		ret = ext2fs_read_bitmaps(fs);
		if (ret) {
			vo_error("cannot mount %s read-write: the allocation bitmaps are unreadable "
				 "(%s): run e2fsck %s", source, error_message(ret), source);
			return VO_EXIT_SOURCE;
		}
		/* as the kernel does: the primary superblock and descriptors only */
		fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	}
	if (build_meta_zones(e) < 0) {
		vo_error("cannot mount %s: out of memory", source);
		return VO_EXIT_SOURCE;
	}
	e->readonly = readonly;
	e->overhead_blocks = compute_overhead(fs);
	if (ext2fs_has_feature_extents(sb)) {
		uint64_t r = ext2fs_blocks_count(sb) / 50;
		e->resv_blocks = (r < 4096 ? r : 4096) * EXT2FS_CLUSTER_RATIO(fs);
	}
	e->max_file_size = compute_max_file_size(fs);
	e->opened = true;
	if (getrandom(&e->next_generation, sizeof e->next_generation, 0) < 0)
		e->next_generation = (uint32_t)time(NULL);
	return VO_EXIT_OK;
}

int e2_mark_mounted(struct e2 *e)
{
	if (e->readonly || e->marked)
		return 0;
	struct ext2_super_block *sb = e->fs->super;
	e->mount_state = sb->s_state;
	sb->s_mnt_count++;
	sb->s_mtime = (__u32)time(NULL);
	sb->s_state &= (__u16)~EXT2_VALID_FS;
	ext2fs_mark_super_dirty(e->fs);
	errcode_t ret = ext2fs_flush2(e->fs, 0);
	if (ret) {
		vo_error("%s: marking the file system mounted failed: %s", e->source,
			 error_message(ret));
		return -EIO;
	}
	e->marked = true;
	return 0;
}

int e2_commit(struct e2 *e)
{
	if (e->readonly || !e->fs || !e->marked)
		return 0;
	int r = dir_flush_all(e); /* directory blocks held back by dir.c */
	ext2fs_mark_super_dirty(e->fs);
	errcode_t ret = ext2fs_flush2(e->fs, 0);
	if (ret) {
		vo_error("%s: writing the file system failed: %s", e->source, error_message(ret));
		return -EIO;
	}
	e->dirty = false;
	return r < 0 ? -EIO : 0;
}

/* The same writes as a commit, less the device flush: after it the source holds a consistent
 * file system (a copy of it passes e2fsck -fn), which survives the daemon being killed but not
 * yet the machine losing power. e->dirty stays set, so the committer (or fsync) still makes it
 * durable. */
int e2_writeout(struct e2 *e)
{
	if (e->readonly || !e->fs || !e->marked)
		return 0;
	int r = dir_flush_all(e);
	ext2fs_mark_super_dirty(e->fs);
	errcode_t ret = ext2fs_flush2(e->fs, EXT2_FLAG_FLUSH_NO_SYNC);
	if (ret) {
		vo_error("%s: writing the file system failed: %s", e->source, error_message(ret));
		return -EIO;
	}
	/* libext2fs wrote into the block cache: now to the source */
	int w = bcache_writeback(e->cache);
	if (w < 0) {
		vo_error("%s: writing the file system failed: %s", e->source, strerror(-w));
		return -EIO;
	}
	return r < 0 ? -EIO : 0;
}

void e2_mark_dirty(struct e2 *e)
{
	e->dirty = true;
}

int e2_close(struct e2 *e)
{
	int r = 0;
	if (e->fs && (!e->opened || (!e->readonly && !e->marked))) {
		/* a refused or failed mount writes nothing */
		ext2fs_free(e->fs);
		e->fs = NULL;
		e->opened = false;
	}
	if (e->fs) {
		if (!e->readonly) {
			if (dir_flush_all(e) < 0)
				r = -EIO;
			/* the state the file system had before we marked it "not clean" */
			e->fs->super->s_state = e->mount_state;
			ext2fs_mark_super_dirty(e->fs);
		}
		errcode_t ret = ext2fs_close2(e->fs, 0);
		if (ret) {
			vo_error("%s: writing the file system at unmount failed: %s", e->source,
				 error_message(ret));
			ext2fs_free(e->fs);
			r = -EIO;
		}
		e->fs = NULL;
	}
	if (e->cache) {
		if (e->opened && !e->readonly && bcache_sync(e->cache) < 0)
			r = -EIO;
		ext2_io_unregister(e->cache);
		bcache_free(e->cache);
		e->cache = NULL;
	}
	if (e->dev) {
		vo_block_close(e->dev);
		e->dev = NULL;
	}
	free(e->source);
	e->source = NULL;
	free(e->meta);
	e->meta = NULL;
	e->nmeta = 0;
	return r;
}

int e2_errno(struct e2 *e, errcode_t err, const char *what, ext2_ino_t ino)
{
	if (err == 0)
		return 0;
	if (err > 0 && err < 4096)
		return (int)err; /* libext2fs passes errno values through */
	switch (err) {
	case EXT2_ET_NO_MEMORY:
		return ENOMEM;
	case EXT2_ET_RO_FILSYS:
		return EROFS;
	case EXT2_ET_BLOCK_ALLOC_FAIL:
	case EXT2_ET_INODE_ALLOC_FAIL:
	case EXT2_ET_DIR_NO_SPACE:
	case EXT2_ET_EA_NO_SPACE:
	case EXT2_ET_INLINE_DATA_NO_SPACE:
	case EXT2_ET_TOOSMALL:
		return ENOSPC;
	case EXT2_ET_FILE_NOT_FOUND:
		return ENOENT;
	case EXT2_ET_EA_KEY_NOT_FOUND:
		return ENODATA;
	case EXT2_ET_DIR_EXISTS:
	case EXT2_ET_FILE_EXISTS:
		return EEXIST;
	case EXT2_ET_FILE_TOO_BIG:
		return EFBIG;
	case EXT2_ET_NO_DIRECTORY:
		return ENOTDIR;
	case EXT2_ET_EA_BAD_NAME_LEN:
		return ERANGE;
	case EXT2_ET_EA_BAD_VALUE_SIZE:
		return E2BIG;
	case EXT2_ET_UNIMPLEMENTED:
	case EXT2_ET_OP_NOT_SUPPORTED:
	case EXT2_ET_EXTENT_NOT_SUPPORTED:
		return EOPNOTSUPP;
	default:
		/* corruption or an I/O error: say so once per occurrence, the caller gets EIO */
		vo_error("%s: inode %u: %s: %s", e->source, ino, what, error_message(err));
		return EIO;
	}
}

void e2_statfs(struct e2 *e, struct statvfs *st)
{
	struct ext2_super_block *sb = e->fs->super;
	uint64_t blocks = ext2fs_blocks_count(sb);
	uint64_t bfree = ext2fs_free_blocks_count(sb);
	uint64_t reserved = ext2fs_r_blocks_count(sb) + e->resv_blocks;
	memset(st, 0, sizeof *st);
	st->f_bsize = e->fs->blocksize;
	st->f_frsize = e->fs->blocksize;
	st->f_blocks = blocks > e->overhead_blocks ? blocks - e->overhead_blocks : 0;
	st->f_bfree = bfree;
	st->f_bavail = bfree > reserved ? bfree - reserved : 0;
	st->f_files = sb->s_inodes_count;
	st->f_ffree = sb->s_free_inodes_count;
	st->f_favail = st->f_ffree;
	st->f_namemax = EXT2_NAME_LEN;
	uint64_t fsid;
	memcpy(&fsid, sb->s_uuid, sizeof fsid);
	st->f_fsid = (unsigned long)(fsid ^ (fsid >> 32));
}

uint64_t e2_alloc_budget(struct e2 *e, const struct fuse_ctx *ctx)
{
	struct ext2_super_block *sb = e->fs->super;
	uint64_t bfree = ext2fs_free_blocks_count(sb);
	uint64_t keep = e->resv_blocks;
	bool privileged = ctx->uid == 0 || ctx->uid == sb->s_def_resuid ||
			  (sb->s_def_resgid != 0 && ctx->gid == sb->s_def_resgid);
	if (!privileged)
		keep += ext2fs_r_blocks_count(sb);
	return bfree > keep ? bfree - keep : 0;
}

/* The committer: every cfg.commit seconds, what changed becomes durable, as ext4's journal
 * commit interval bounds what a crash can lose. */
static void *committer_main(void *arg)
{
	struct e2 *e = arg;
	e2_lock(e);
	while (!e->stopping) {
		struct timespec deadline;
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += e->cfg.commit;
		int r = 0;
		while (!e->stopping && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&e->commit_cond, &e->lock, &deadline);
		if (!e->stopping && e->dirty)
			e2_commit(e);
	}
	e2_unlock(e);
	return NULL;
}

int e2_start_committer(struct e2 *e)
{
	if (e->readonly || e->cfg.commit == 0)
		return 0;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->commit_cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&e->committer, NULL, committer_main, e) != 0)
		return -EAGAIN;
	e->committer_running = true;
	return 0;
}

void e2_stop_committer(struct e2 *e)
{
	if (!e->committer_running)
		return;
	e2_lock(e);
	e->stopping = true;
	pthread_cond_signal(&e->commit_cond);
	e2_unlock(e);
	pthread_join(e->committer, NULL);
	pthread_cond_destroy(&e->commit_cond);
	e->committer_running = false;
}
