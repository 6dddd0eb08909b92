/* The FUSE low-level operations of umfuse-iso9660: thin replies around the reader (isofs.h).
 *
 * Choices that make it fast:
 *  - A node id is the address of the node, so no operation looks anything up by number.
 *  - The image never changes under the mount, so entries and attributes are cached by the kernel
 *    for a day, negative lookups included, and every file keeps its page cache (keep_cache).
 *  - open and opendir answer ENOSYS when the kernel supports "no open": it then stops sending
 *    OPEN, RELEASE, OPENDIR and RELEASEDIR at all (files need no per-open state here), and caches
 *    directory listings (FOPEN_CACHE_DIR). On an older kernel they are ordinary opens.
 *  - readdirplus always (not "auto"): find and ls -l need every entry's attributes, which are
 *    in memory anyway, and this saves a LOOKUP per entry.
 *  - A read of a plain file is spliced from the image's fd when the source has one (file, memfd,
 *    umdev device file): the data goes from the page cache to the kernel without a copy here.
 *    NBD sources and zisofs files are read into a buffer. */
#define _GNU_SOURCE
#include "fuse_ops.h"

#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#define CACHE_SECONDS 86400.0
#define MAX_PIECES 8 /* extents one read may span: real files need 1 or 2 */

static struct iso_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct iso_node *node_of(struct iso_fs *fs, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? fs->img->root : (struct iso_node *)(uintptr_t)ino;
}

static fuse_ino_t id_of(struct iso_fs *fs, const struct iso_node *n)
{
	return n == fs->img->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static void fill_entry(struct iso_fs *fs, const struct iso_node *n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = id_of(fs, n);
	e->attr_timeout = CACHE_SECONDS;
	e->entry_timeout = CACHE_SECONDS;
	iso_stat(fs->img, n, &e->attr);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct iso_fs *fs = userdata;
	if (fs->fd >= 0 && (conn->capable & FUSE_CAP_SPLICE_WRITE))
		conn->want |= FUSE_CAP_SPLICE_WRITE | (conn->capable & FUSE_CAP_SPLICE_MOVE);
	conn->want |= conn->capable & (FUSE_CAP_NO_OPEN_SUPPORT | FUSE_CAP_NO_OPENDIR_SUPPORT |
				       FUSE_CAP_CACHE_SYMLINKS);
	fs->no_open = conn->capable & FUSE_CAP_NO_OPEN_SUPPORT;
	fs->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct iso_fs *fs = fs_of(req);
	struct iso_node *dir = node_of(fs, parent), *n;
	int r;
	if (strcmp(name, ".") == 0) {
		n = dir, r = 0;
	} else if (strcmp(name, "..") == 0) {
		n = dir->parent, r = 0;
	} else {
		r = iso_lookup(fs->img, dir, name, &n);
	}
	if (r == -ENOENT) {
		/* cached as a negative entry: the image will not grow one */
		struct fuse_entry_param e = { .ino = 0, .entry_timeout = CACHE_SECONDS };
		fuse_reply_entry(req, &e);
		return;
	}
	if (r == 0 && n->error)
		r = -n->error;
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	struct fuse_entry_param e;
	fill_entry(fs, n, &e);
	fuse_reply_entry(req, &e);
}

/* Nodes live as long as the mount (see isofs.h): nothing to forget. */
static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino, (void)nlookup;
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count, (void)forgets;
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct iso_fs *fs = fs_of(req);
	struct iso_node *n = node_of(fs, ino);
	struct stat st;
	iso_stat(fs->img, n, &st);
	fuse_reply_attr(req, &st, CACHE_SECONDS);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct iso_node *n = node_of(fs_of(req), ino);
	if (!S_ISLNK(n->mode) || !n->symlink)
		fuse_reply_err(req, EINVAL);
	else
		fuse_reply_readlink(req, n->symlink);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct iso_fs *fs = fs_of(req);
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (fs->no_open) {
		fuse_reply_err(req, ENOSYS); /* "no open needed", see the top of the file */
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct iso_fs *fs = fs_of(req);
	const struct iso_dir *d;
	int r = iso_dir_get(fs->img, node_of(fs, ino), &d);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (fs->no_opendir) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	fi->keep_cache = 1;
	fi->cache_readdir = 1;
	fuse_reply_open(req, fi);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct iso_fs *fs = fs_of(req);
	struct iso_node *dir = node_of(fs, ino);
	const struct iso_dir *d;
	int r = iso_dir_get(fs->img, dir, &d);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	/* offset i: 0 is ".", 1 is "..", i >= 2 is entry i - 2; an entry's "off" is the next one */
	for (uint64_t i = off < 0 ? 0 : (uint64_t)off; i < (uint64_t)d->count + 2; i++) {
		const char *name;
		const struct iso_node *n;
		if (i < 2) {
			name = i == 0 ? "." : "..";
			n = i == 0 ? dir : dir->parent;
		} else {
			name = d->ents[i - 2].name;
			n = d->ents[i - 2].node;
		}
		size_t len;
		if (plus) {
			struct fuse_entry_param e;
			fill_entry(fs, n, &e);
			/* no node for "." and ".." (the kernel does not count them) nor for a
			   corrupt entry: the kernel then asks with LOOKUP, which answers EIO */
			if (i < 2 || n->error) {
				e.ino = 0;
				e.attr_timeout = e.entry_timeout = 0;
			}
			len = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						     (off_t)i + 1);
		} else {
			struct stat st = { .st_ino = n->ino, .st_mode = n->mode };
			len = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)i + 1);
		}
		if (len > size - used)
			break;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static void read_buffered(fuse_req_t req, struct iso_fs *fs, struct iso_node *n, size_t size,
			  off_t off)
{
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t r = iso_read(fs->img, n, buf, size, (uint64_t)off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	struct iso_fs *fs = fs_of(req);
	struct iso_node *n = node_of(fs, ino);
	if (!S_ISREG(n->mode) || off < 0) {
		fuse_reply_err(req, S_ISDIR(n->mode) ? EISDIR : EINVAL);
		return;
	}
	if (fs->fd < 0 || n->zisofs) {
		read_buffered(req, fs, n, size, off);
		return;
	}
	struct iso_piece p[MAX_PIECES];
	int np = iso_map(fs->img, n, (uint64_t)off, size, p, MAX_PIECES);
	if (np < 0) {
		fuse_reply_err(req, -np);
		return;
	}
	size_t mapped = 0;
	for (int i = 0; i < np; i++)
		mapped += p[i].len;
	uint64_t want = (uint64_t)off < n->size ? n->size - (uint64_t)off : 0;
	if (want > size)
		want = size;
	if (mapped != want) {
		read_buffered(req, fs, n, size, off); /* more pieces than the vector holds */
		return;
	}
	/* One piece is the rule; a read across the seam of a multi-extent file needs two. */
	struct fuse_bufvec one = FUSE_BUFVEC_INIT(0), *vec = &one;
	if (np > 1 && !(vec = malloc(sizeof *vec + (size_t)(np - 1) * sizeof vec->buf[0]))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memset(vec, 0, sizeof *vec + (size_t)(np - 1) * sizeof vec->buf[0]);
	vec->count = (size_t)np;
	for (int i = 0; i < np; i++) {
		struct fuse_buf *b = &vec->buf[i];
		b->size = p[i].len;
		b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
		b->fd = fs->fd;
		b->pos = (off_t)(fs->fd_offset + p[i].dev_off);
	}
	fuse_reply_data(req, vec, FUSE_BUF_SPLICE_MOVE);
	if (vec != &one)
		free(vec);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct iso_fs *fs = fs_of(req);
	struct statvfs sv;
	memset(&sv, 0, sizeof sv);
	sv.f_bsize = sv.f_frsize = 2048;
	sv.f_blocks = fs->img->volume_blocks ? fs->img->volume_blocks : fs->img->dev_size / 2048;
	sv.f_namemax = 255;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

/* --- everything that would change the image: it is read-only --- */

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)ino, (void)attr, (void)to_set, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	fuse_reply_err(req, EROFS);
}

static void op_remove(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino, (void)buf, (void)size, (void)off, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	(void)ino, (void)mode, (void)offset, (void)length, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops iso_fuse_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.read = op_read,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.statfs = op_statfs,
	/* no getxattr/listxattr: ENOSYS makes the kernel answer EOPNOTSUPP, as for isofs */
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_remove,
	.rmdir = op_remove,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.write = op_write,
	.create = op_create,
	.fallocate = op_fallocate,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
};
