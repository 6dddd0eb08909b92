/* FUSE operations on names: lookup/forget, create, mknod, mkdir, symlink, link, unlink, rmdir,
 * rename and readlink. Link counts, ctime and the parents' mtime/ctime change at once, as on
 * ext4; the kernel has already checked permissions (default_permissions). */
#define _GNU_SOURCE
#include "e2fuse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int e2_fill_entry(struct e2 *e, ext2_ino_t ino, struct fuse_entry_param *ep)
{
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r < 0)
		return r;
	memset(ep, 0, sizeof *ep);
	ep->ino = e2_fuse_ino(ino);
	ep->generation = in.i_generation;
	ep->attr_timeout = e->timeout;
	ep->entry_timeout = e->timeout;
	ino_stat(e, ino, &in, &ep->attr);
	node_ref(e, ino);
	return 0;
}

static bool name_ok(const char *name, int *err)
{
	size_t len = strlen(name);
	if (len > EXT2_NAME_LEN) {
		*err = ENAMETOOLONG;
		return false;
	}
	return true;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct e2 *e = e2_of(req);
	struct fuse_entry_param ep;
	int err;
	if (!name_ok(name, &err)) {
		fuse_reply_err(req, err);
		return;
	}
	e2_lock(e);
	ext2_ino_t ino;
	int r = dir_lookup(e, e2_ino(parent), name, &ino);
	if (r == -ENOENT) {
		/* a negative entry the kernel may keep: nobody else changes this file system */
		memset(&ep, 0, sizeof ep);
		ep.entry_timeout = e->timeout;
		r = 0;
	} else if (r == 0) {
		r = e2_fill_entry(e, ino, &ep);
	}
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, &ep);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct e2 *e = e2_of(req);
	e2_lock(e);
	node_forget(e, e2_ino(ino), nlookup);
	e2_unlock(e);
	fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct e2 *e = e2_of(req);
	e2_lock(e);
	for (size_t i = 0; i < count; i++)
		node_forget(e, e2_ino(forgets[i].ino), forgets[i].nlookup);
	e2_unlock(e);
	fuse_reply_none(req);
}

/* A symlink's target: in i_block when it fits (a fast symlink), else in one data block. */
static int store_symlink(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in,
			 const char *target)
{
	size_t len = strlen(target);
	if (len >= e->fs->blocksize)
		return -ENAMETOOLONG;
	if (len < sizeof in->i_block) {
		memset(in->i_block, 0, sizeof in->i_block);
		memcpy(in->i_block, target, len);
		in->i_size = (__u32)len;
		return ino_write(e, ino, in);
	}
	if (ext2fs_has_feature_extents(e->fs->super)) {
		memset(in->i_block, 0, sizeof in->i_block);
		in->i_flags |= EXT4_EXTENTS_FL; /* ext2fs_extent_open2 writes the header */
	}
	struct node *n = node_get(e, ino);
	if (!n)
		return -ENOMEM;
	int64_t got = data_alloc(e, n, in, 0, 1, false, false);
	if (got < 0)
		return (int)got;
	uint64_t pblk, mlen;
	bool un;
	int r = data_map(e, n, in, 0, 1, &pblk, &mlen, &un);
	if (r < 0)
		return r;
	char *block = calloc(1, e->fs->blocksize);
	if (!block)
		return -ENOMEM;
	memcpy(block, target, len);
	r = bcache_write_direct(e->cache, pblk, 1, block);
	free(block);
	if (r < 0)
		return r;
	in->i_size = (__u32)len;
	return ino_write(e, ino, in);
}

struct new_node {
	mode_t mode;
	dev_t rdev;
	const char *target; /* symlinks */
};

/* Create name in parent: allocate, initialise, inherit ACLs, link. Under the lock. */
static int create_node(fuse_req_t req, struct e2 *e, ext2_ino_t parent, const char *name,
		       const struct new_node *nn, struct fuse_entry_param *ep)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int err;
	if (e->readonly)
		return -EROFS;
	if (!name_ok(name, &err))
		return -err;
	struct ext2_inode_large pin;
	int r = ino_read(e, parent, &pin);
	if (r < 0)
		return r;
	if (!LINUX_S_ISDIR(pin.i_mode))
		return -ENOTDIR;
	if (pin.i_links_count == 0)
		return -ENOENT; /* the directory was removed */
	ext2_ino_t existing;
	if ((r = dir_lookup(e, parent, name, &existing)) == 0)
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	mode_t mode = nn->mode;
	if (S_ISDIR(mode)) {
		struct ext2_inode_large probe = pin;
		if ((r = ino_dir_link_inc(e, &probe)) < 0)
			return r;
	}
	/* BSD group semantics under a setgid directory, as ext4 without grpid */
	gid_t gid = ctx->gid;
	if (pin.i_mode & S_ISGID) {
		gid = ino_gid(&pin);
		if (S_ISDIR(mode))
			mode |= S_ISGID;
	}
	ext2_ino_t ino;
	struct ext2_inode_large in;
	if ((r = ino_create(e, parent, mode, ctx->uid, gid, nn->rdev, &ino, &in)) < 0)
		return r;
	if (S_ISDIR(mode))
		r = dir_init(e, ino, &in, parent);
	else if (S_ISLNK(mode))
		r = store_symlink(e, ino, &in, nn->target);
	bool has_default = false;
	if (r == 0 && !S_ISLNK(mode))
		r = xattr_inherit_acl(e, parent, ino, &in, ctx->umask, &has_default);
	if (r == 0)
		r = dir_add(e, parent, name, ino, e2_file_type(mode));
	if (r < 0) {
		/* undo: the inode was never visible */
		if (ino_read(e, ino, &in) == 0) {
			in.i_links_count = 0;
			ino_write(e, ino, &in);
		}
		ino_release(e, ino);
		return r;
	}
	if ((r = ino_read(e, parent, &pin)) < 0)
		return r;
	if (S_ISDIR(mode))
		ino_dir_link_inc(e, &pin);
	ino_touch(&pin, true, true);
	if ((r = ino_write(e, parent, &pin)) < 0)
		return r;
	return e2_fill_entry(e, ino, ep);
}

static void reply_new(fuse_req_t req, fuse_ino_t parent, const char *name,
		      const struct new_node *nn)
{
	struct e2 *e = e2_of(req);
	struct fuse_entry_param ep;
	e2_lock(e);
	int r;
	while ((r = create_node(req, e, e2_ino(parent), name, nn, &ep)) == -ENOSPC &&
	       e2_wait_for_released(e))
		;
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, &ep);
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	if (!S_ISREG(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) && !S_ISFIFO(mode) &&
	    !S_ISSOCK(mode)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	struct new_node nn = { .mode = mode, .rdev = rdev };
	reply_new(req, parent, name, &nn);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct new_node nn = { .mode = S_IFDIR | (mode & 07777) };
	reply_new(req, parent, name, &nn);
}

void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct new_node nn = { .mode = S_IFLNK | 0777, .target = link };
	reply_new(req, parent, name, &nn);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi)
{
	struct e2 *e = e2_of(req);
	struct fuse_entry_param ep;
	struct new_node nn = { .mode = S_IFREG | (mode & 07777) };
	e2_lock(e);
	int r;
	while ((r = create_node(req, e, e2_ino(parent), name, &nn, &ep)) == -ENOSPC &&
	       e2_wait_for_released(e))
		;
	struct node *n = r == 0 ? node_find(e, e2_ino(ep.ino)) : NULL;
	if (n)
		n->written = true; /* a file created empty is on the source after its close too */
	e2_unlock(e);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = 0;
	fi->keep_cache = 1; /* this daemon is the only writer: the page cache stays valid */
	fuse_reply_create(req, &ep, fi);
}

void op_link(fuse_req_t req, fuse_ino_t fino, fuse_ino_t newparent, const char *newname)
{
	struct e2 *e = e2_of(req);
	struct fuse_entry_param ep;
	ext2_ino_t ino = e2_ino(fino), dir = e2_ino(newparent);
	int err;
	if (!name_ok(newname, &err)) {
		fuse_reply_err(req, err);
		return;
	}
	e2_lock(e);
	struct ext2_inode_large in, din;
	int r = e->readonly ? -EROFS : ino_read(e, ino, &in);
	if (r == 0 && LINUX_S_ISDIR(in.i_mode))
		r = -EPERM;
	else if (r == 0 && in.i_links_count == 0)
		r = -ENOENT;
	else if (r == 0 && in.i_links_count >= EXT2_LINK_MAX)
		r = -EMLINK;
	if (r == 0 && (r = ino_read(e, dir, &din)) == 0 && din.i_links_count == 0)
		r = -ENOENT;
	if (r == 0)
		while ((r = dir_add(e, dir, newname, ino, e2_file_type(in.i_mode))) == -ENOSPC &&
		       e2_wait_for_released(e))
			;
	if (r == 0) {
		in.i_links_count++;
		ino_touch(&in, false, true);
		r = ino_write(e, ino, &in);
	}
	if (r == 0 && (r = ino_read(e, dir, &din)) == 0) {
		ino_touch(&din, true, true);
		r = ino_write(e, dir, &din);
	}
	if (r == 0)
		r = e2_fill_entry(e, ino, &ep);
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, &ep);
}

/* One link of ino is gone (its name already removed): count it, free the inode if it was the
 * last and nobody holds it. */
static int drop_link(struct e2 *e, ext2_ino_t ino, bool is_dir)
{
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r < 0)
		return r;
	if (is_dir)
		in.i_links_count = 0; /* its "." goes with it */
	else if (in.i_links_count > 0)
		in.i_links_count--;
	ino_touch(&in, false, true);
	if ((r = ino_write(e, ino, &in)) < 0)
		return r;
	return in.i_links_count == 0 ? ino_unlinked(e, ino) : 0;
}

static int touch_dir(struct e2 *e, ext2_ino_t dir, int link_delta)
{
	struct ext2_inode_large in;
	int r = ino_read(e, dir, &in);
	if (r < 0)
		return r;
	if (link_delta > 0)
		ino_dir_link_inc(e, &in);
	else if (link_delta < 0)
		ino_dir_link_dec(&in);
	ino_touch(&in, true, true);
	return ino_write(e, dir, &in);
}

static int remove_name(struct e2 *e, ext2_ino_t dir, const char *name, bool want_dir)
{
	if (e->readonly)
		return -EROFS;
	ext2_ino_t ino;
	int r = dir_lookup(e, dir, name, &ino);
	if (r < 0)
		return r;
	struct ext2_inode_large in;
	if ((r = ino_read(e, ino, &in)) < 0)
		return r;
	bool is_dir = LINUX_S_ISDIR(in.i_mode);
	if (want_dir && !is_dir)
		return -ENOTDIR;
	if (!want_dir && is_dir)
		return -EISDIR;
	if (is_dir) {
		if (strcmp(name, ".") == 0)
			return -EINVAL;
		if ((r = dir_is_empty(e, ino)) <= 0)
			return r < 0 ? r : -ENOTEMPTY;
	}
	if ((is_dir || in.i_links_count <= 1) && (r = ino_check_release(e, ino, &in)) < 0)
		return r;
	if ((r = dir_remove(e, dir, name)) < 0)
		return r;
	if ((r = touch_dir(e, dir, is_dir ? -1 : 0)) < 0)
		return r;
	return drop_link(e, ino, is_dir);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct e2 *e = e2_of(req);
	e2_lock(e);
	int r = remove_name(e, e2_ino(parent), name, false);
	e2_unlock(e);
	fuse_reply_err(req, -r);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct e2 *e = e2_of(req);
	e2_lock(e);
	int r = remove_name(e, e2_ino(parent), name, true);
	e2_unlock(e);
	fuse_reply_err(req, -r);
}

static int type_of(struct e2 *e, ext2_ino_t ino, mode_t *mode)
{
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r == 0)
		*mode = in.i_mode;
	return r;
}

static int touch_ctime(struct e2 *e, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r < 0)
		return r;
	ino_touch(&in, false, true);
	return ino_write(e, ino, &in);
}

/* RENAME_EXCHANGE: the two names swap inodes. */
static int exchange(struct e2 *e, ext2_ino_t sdir, const char *sname, ext2_ino_t src,
		    mode_t smode, ext2_ino_t ddir, const char *dname, ext2_ino_t dst, mode_t dmode)
{
	int r;
	if ((r = dir_retarget(e, sdir, sname, dst, e2_file_type(dmode))) < 0)
		return r;
	if ((r = dir_retarget(e, ddir, dname, src, e2_file_type(smode))) < 0)
		return r;
	bool sdirp = S_ISDIR(smode), ddirp = S_ISDIR(dmode);
	if (sdir != ddir) {
		if (sdirp && (r = dir_set_dotdot(e, src, ddir)) < 0)
			return r;
		if (ddirp && (r = dir_set_dotdot(e, dst, sdir)) < 0)
			return r;
	}
	int delta = sdir != ddir ? (int)ddirp - (int)sdirp : 0;
	if ((r = touch_dir(e, sdir, delta)) < 0)
		return r;
	if (sdir != ddir && (r = touch_dir(e, ddir, -delta)) < 0)
		return r;
	if ((r = touch_ctime(e, src)) < 0)
		return r;
	return touch_ctime(e, dst);
}

static int do_rename(struct e2 *e, ext2_ino_t sdir, const char *sname, ext2_ino_t ddir,
		     const char *dname, unsigned flags)
{
	if (e->readonly)
		return -EROFS;
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (strcmp(sname, ".") == 0 || strcmp(sname, "..") == 0 || strcmp(dname, ".") == 0 ||
	    strcmp(dname, "..") == 0)
		return -EINVAL;
	ext2_ino_t src, dst = 0;
	int r = dir_lookup(e, sdir, sname, &src);
	if (r < 0)
		return r;
	r = dir_lookup(e, ddir, dname, &dst);
	if (r < 0 && r != -ENOENT)
		return r;
	bool dst_exists = r == 0;
	if ((flags & RENAME_NOREPLACE) && dst_exists)
		return -EEXIST;
	if ((flags & RENAME_EXCHANGE) && !dst_exists)
		return -ENOENT;
	mode_t smode = 0, dmode = 0;
	if ((r = type_of(e, src, &smode)) < 0)
		return r;
	if (dst_exists && (r = type_of(e, dst, &dmode)) < 0)
		return r;
	if (dst_exists && dst == src)
		return 0; /* two names of one inode: nothing to do (POSIX) */
	if (flags & RENAME_EXCHANGE)
		return exchange(e, sdir, sname, src, smode, ddir, dname, dst, dmode);

	bool sdirp = S_ISDIR(smode), ddirp = dst_exists && S_ISDIR(dmode);
	if (dst_exists) {
		if (sdirp && !ddirp)
			return -ENOTDIR;
		if (!sdirp && ddirp)
			return -EISDIR;
		if (ddirp && (r = dir_is_empty(e, dst)) <= 0)
			return r < 0 ? r : -ENOTEMPTY;
		struct ext2_inode_large din;
		if ((r = ino_read(e, dst, &din)) < 0)
			return r;
		if ((ddirp || din.i_links_count <= 1) && (r = ino_check_release(e, dst, &din)) < 0)
			return r;
	}
	if (sdirp && sdir != ddir) {
		/* the target directory needs room for one more link unless one goes away */
		struct ext2_inode_large din;
		if ((r = ino_read(e, ddir, &din)) < 0)
			return r;
		if (!ddirp && (r = ino_dir_link_inc(e, &din)) < 0)
			return r;
	}
	/* the new name first, then the old one goes: a crash in between leaves two names */
	if (dst_exists)
		r = dir_retarget(e, ddir, dname, src, e2_file_type(smode));
	else
		r = dir_add(e, ddir, dname, src, e2_file_type(smode));
	if (r < 0)
		return r;
	if ((r = dir_remove(e, sdir, sname)) < 0)
		return r;
	if (sdirp && sdir != ddir && (r = dir_set_dotdot(e, src, ddir)) < 0)
		return r;
	/* link counts of the parents: a directory moving out takes its ".." along; a directory
	 * replaced in the target takes its own ".." away */
	int sdelta = 0, ddelta = 0;
	if (sdirp && sdir != ddir) {
		sdelta -= 1;
		ddelta += 1;
	}
	if (ddirp)
		ddelta -= 1;
	if (sdir == ddir) {
		if ((r = touch_dir(e, sdir, sdelta + ddelta)) < 0)
			return r;
	} else {
		if ((r = touch_dir(e, sdir, sdelta)) < 0 || (r = touch_dir(e, ddir, ddelta)) < 0)
			return r;
	}
	if ((r = touch_ctime(e, src)) < 0)
		return r;
	if (dst_exists)
		return drop_link(e, dst, ddirp);
	return 0;
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags)
{
	struct e2 *e = e2_of(req);
	int err;
	if (!name_ok(newname, &err)) {
		fuse_reply_err(req, err);
		return;
	}
	e2_lock(e);
	int r;
	while ((r = do_rename(e, e2_ino(parent), name, e2_ino(newparent), newname, flags)) ==
	       -ENOSPC && e2_wait_for_released(e))
		;
	e2_unlock(e);
	fuse_reply_err(req, -r);
}

void op_readlink(fuse_req_t req, fuse_ino_t fino)
{
	struct e2 *e = e2_of(req);
	ext2_ino_t ino = e2_ino(fino);
	char *target = NULL;
	e2_lock(e);
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r == 0 && !LINUX_S_ISLNK(in.i_mode))
		r = -EINVAL;
	uint64_t size = EXT2_I_SIZE(&in);
	if (r == 0 && size >= e->fs->blocksize && size >= sizeof in.i_block) {
		e2_errno(e, EXT2_ET_INODE_CORRUPTED, "a symlink longer than a block", ino);
		r = -EIO;
	}
	if (r == 0 && !(target = calloc(1, size + 1)))
		r = -ENOMEM;
	if (r == 0) {
		if (in.i_flags & EXT4_INLINE_DATA_FL) {
			struct node *n = node_get(e, ino);
			ssize_t got = n ? data_read(e, n, &in, target, size, 0) : -ENOMEM;
			r = got < 0 ? (int)got : 0;
		} else if (ext2fs_is_fast_symlink((struct ext2_inode *)&in)) {
			memcpy(target, in.i_block, size);
		} else {
			struct node *n = node_get(e, ino);
			uint64_t pblk, len;
			bool un;
			r = n ? data_map(e, n, &in, 0, 1, &pblk, &len, &un) : -ENOMEM;
			if (r == 0 && (pblk == 0 || un))
				r = -EIO;
			char *block = r == 0 ? malloc(e->fs->blocksize) : NULL;
			if (r == 0 && !block)
				r = -ENOMEM;
			if (r == 0 && (r = bcache_read_direct(e->cache, pblk, 1, block)) == 0)
				memcpy(target, block, size);
			free(block);
		}
	}
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_readlink(req, target);
	free(target);
}
