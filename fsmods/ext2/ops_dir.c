/* FUSE operations on directory listings: opendir, readdir, readdirplus.
 *
 * readdirplus hands the kernel every entry's attributes with its name, so `ls -l` and
 * `find -ls` cost one request per buffer instead of one lookup per name. On a read-only mount
 * opendir is answered ENOSYS when the kernel allows it, and the kernel then caches listings
 * itself. Not on a read-write one: the kernel's listing cache can keep a listing made before a
 * change under a stamp taken after it (a second reader starting to fill the cache re-stamps it
 * while the first one's reply is still on its way), and a listing right after a rename into a
 * directory then missed the new name while others listed that directory (found by the load
 * test; tests/reliability/test_ext2_listing_cache.py). */
#define _GNU_SOURCE
#include "e2fuse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct e2 *e = e2_of(req);
	if (e->readonly) {
		if (e->no_opendir) {
			fuse_reply_err(req, ENOSYS);
			return;
		}
		fi->keep_cache = 1;
		fi->cache_readdir = 1;
	}
	fuse_reply_open(req, fi);
}

struct listing {
	fuse_req_t req;
	struct e2 *e;
	char *buf;
	size_t size, used;
	bool plus;
	int err;
};

static mode_t mode_of_type(int ftype)
{
	switch (ftype) {
	case EXT2_FT_REG_FILE: return S_IFREG;
	case EXT2_FT_DIR: return S_IFDIR;
	case EXT2_FT_CHRDEV: return S_IFCHR;
	case EXT2_FT_BLKDEV: return S_IFBLK;
	case EXT2_FT_FIFO: return S_IFIFO;
	case EXT2_FT_SOCK: return S_IFSOCK;
	case EXT2_FT_SYMLINK: return S_IFLNK;
	default: return 0;
	}
}

static int add_entry(void *arg, const char *name_in, size_t namelen, ext2_ino_t ino, int ftype,
		     uint64_t next)
{
	struct listing *l = arg;
	char name[EXT2_NAME_LEN + 1];
	memcpy(name, name_in, namelen);
	name[namelen] = '\0';
	size_t room = l->size - l->used;
	if (!l->plus) {
		struct stat st = { .st_ino = ino, .st_mode = mode_of_type(ftype) };
		size_t need = fuse_add_direntry(l->req, l->buf + l->used, room, name, &st,
						(off_t)next);
		if (need > room)
			return 1;
		l->used += need;
		return 0;
	}
	struct fuse_entry_param ep;
	memset(&ep, 0, sizeof ep);
	bool dots = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
	struct ext2_inode_large in;
	/* "." and ".." get no inode in the kernel (and no lookup count); neither does an entry
	 * whose inode cannot be read, which then fails when it is looked up */
	if (!dots && ino_read(l->e, ino, &in) == 0) {
		ep.ino = e2_fuse_ino(ino);
		ep.generation = in.i_generation;
		ep.attr_timeout = ep.entry_timeout = l->e->timeout;
		ino_stat(l->e, ino, &in, &ep.attr);
	} else {
		ep.attr.st_ino = ino;
		ep.attr.st_mode = mode_of_type(ftype);
	}
	size_t need = fuse_add_direntry_plus(l->req, l->buf + l->used, room, name, &ep,
					     (off_t)next);
	if (need > room)
		return 1;
	l->used += need;
	if (ep.ino)
		node_ref(l->e, ino);
	return 0;
}

static void list(fuse_req_t req, fuse_ino_t fino, size_t size, off_t off, bool plus)
{
	struct e2 *e = e2_of(req);
	ext2_ino_t ino = e2_ino(fino);
	struct listing l = { .req = req, .e = e, .size = size, .plus = plus };
	l.buf = malloc(size ? size : 1);
	if (!l.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	e2_lock(e);
	int r = dir_iterate(e, ino, (uint64_t)off, add_entry, &l);
	if (r == 0 && off == 0) {
		struct ext2_inode_large in;
		if (ino_read(e, ino, &in) == 0)
			ino_atime_on_access(e, ino, &in);
	}
	e2_unlock(e);
	if (r < 0 && l.used == 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, l.buf, l.used);
	free(l.buf);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	(void)fi;
	list(req, ino, size, off, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	list(req, ino, size, off, true);
}
