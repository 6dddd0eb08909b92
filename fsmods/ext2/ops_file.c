/* FUSE operations on file contents: open, read, write, flush, fsync, fallocate, lseek.
 *
 * open is answered ENOSYS when the kernel allows it (FUSE_CAP_NO_OPEN_SUPPORT): no per-open
 * state exists here (an open file pins its inode in the kernel, which is all the
 * unlink-while-open case needs), so the kernel stops sending open and release, and keeps its
 * page cache across opens. It still sends FLUSH at every close: see op_flush. */
#define _GNU_SOURCE
#include "e2fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct e2 *e = e2_of(req);
	if (e->readonly && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (e->no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* close(): the changes to a file that was written go to the source (not made durable: fsync
 * does that), so a daemon killed after a close loses nothing of it. Without open there is no
 * per-open state, so the mark is per inode (node->written, set by create, write, fallocate and
 * truncate): a close that follows no change — every close of a file only read — writes
 * nothing, but still costs the kernel's round trip; with -o flush=0 the answer is ENOSYS and
 * the kernel stops sending FLUSH. */
void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct e2 *e = e2_of(req);
	if (!e->cfg.flush) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	int r = 0;
	e2_lock(e);
	struct node *n = node_find(e, e2_ino(ino));
	if (n && n->written) {
		r = e2_writeout(e);
		if (r == 0)
			n->written = false;
	}
	e2_unlock(e);
	fuse_reply_err(req, -r);
}

void op_read(fuse_req_t req, fuse_ino_t fino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	struct e2 *e = e2_of(req);
	ext2_ino_t ino = e2_ino(fino);
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	e2_lock(e);
	struct ext2_inode_large in;
	ssize_t r = ino_read(e, ino, &in);
	struct node *n = r == 0 ? node_get(e, ino) : NULL;
	if (r == 0 && !n)
		r = -ENOMEM;
	if (r == 0 && LINUX_S_ISDIR(in.i_mode))
		r = -EISDIR;
	if (r == 0)
		r = data_read(e, n, &in, buf, size, (uint64_t)off);
	if (r >= 0)
		ino_atime_on_access(e, ino, &in);
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

void op_write(fuse_req_t req, fuse_ino_t fino, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi)
{
	(void)fi;
	struct e2 *e = e2_of(req);
	ext2_ino_t ino = e2_ino(fino);
	e2_lock(e);
	struct ext2_inode_large in;
	ssize_t r = e->readonly ? -EROFS : ino_read(e, ino, &in);
	struct node *n = r == 0 ? node_get(e, ino) : NULL;
	if (r == 0 && !n)
		r = -ENOMEM;
	if (r == 0 && !LINUX_S_ISREG(in.i_mode))
		r = -EINVAL;
	while (r == 0 || r == -ENOSPC) {
		r = data_write(e, n, &in, fuse_req_ctx(req), buf, size, (uint64_t)off);
		if (r != -ENOSPC || !e2_wait_for_released(e) || (r = ino_read(e, ino, &in)) < 0)
			break;
	}
	/* A short write tells a writer what was taken. But the kernel's writeback takes a short
	 * reply to a page flush for the whole (and drops the pages): the rest would be lost with
	 * fsync saying all is well. There, what did not fit is an error. */
	if (e->writeback_cache && r >= 0 && (size_t)r < size)
		r = (uint64_t)off + size > e->max_file_size ? -EFBIG : -ENOSPC;
	if (r > 0)
		n->written = true;
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	struct e2 *e = e2_of(req);
	e2_lock(e);
	/* the data went to the device when written; what it depends on goes now */
	int r = e2_commit(e);
	e2_unlock(e);
	fuse_reply_err(req, -r);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	op_fsync(req, ino, datasync, fi);
}

void op_fallocate(fuse_req_t req, fuse_ino_t fino, int mode, off_t offset, off_t length,
		  struct fuse_file_info *fi)
{
	(void)fi;
	struct e2 *e = e2_of(req);
	ext2_ino_t ino = e2_ino(fino);
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	e2_lock(e);
	struct ext2_inode_large in;
	int r = e->readonly ? -EROFS : ino_read(e, ino, &in);
	struct node *n = r == 0 ? node_get(e, ino) : NULL;
	if (r == 0 && !n)
		r = -ENOMEM;
	if (r == 0 && !LINUX_S_ISREG(in.i_mode))
		r = -ENODEV;
	uint64_t old_size = r == 0 ? EXT2_I_SIZE(&in) : 0;
	while (r == 0 || r == -ENOSPC) {
		r = data_fallocate(e, n, &in, fuse_req_ctx(req), mode, (uint64_t)offset,
				   (uint64_t)length);
		if (r != -ENOSPC || !e2_wait_for_released(e) || (r = ino_read(e, ino, &in)) < 0)
			break;
	}
	if (r == 0) {
		bool contents = (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) ||
				EXT2_I_SIZE(&in) != old_size;
		ino_touch(&in, contents, true);
		ino_kill_suid(&in, fuse_req_ctx(req), false);
		r = ino_write(e, ino, &in);
		n->written = true;
	}
	e2_unlock(e);
	fuse_reply_err(req, -r);
}

void op_lseek(fuse_req_t req, fuse_ino_t fino, off_t off, int whence, struct fuse_file_info *fi)
{
	(void)fi;
	struct e2 *e = e2_of(req);
	ext2_ino_t ino = e2_ino(fino);
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL); /* the kernel handles the others itself */
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	if (e->writeback_cache) {
		/* pages the kernel has not written yet are invisible here, so holes cannot be
		 * told from data: let the kernel treat the whole file as data (what POSIX
		 * allows when a file system does not track holes) */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	uint64_t result = 0;
	e2_lock(e);
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	struct node *n = r == 0 ? node_get(e, ino) : NULL;
	if (r == 0 && !n)
		r = -ENOMEM;
	if (r == 0)
		r = data_seek(e, n, &in, (uint64_t)off, whence, &result);
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_lseek(req, (off_t)result);
}
