/* File I/O: open, create, read, write, flush, fsync, fallocate, copy_file_range, lseek.
 *
 * An open file is a real fd on the object that serves it: the layer's copy, or the original
 * (read-only opens in union modes, every open in mincow that the original allows, and merge's
 * changes). An open for writing of an original file in cow copies it up first (O_TRUNC copies
 * nothing). After that the daemon only moves bytes between the kernel and that fd: reads are
 * spliced from it, writes copied into it, and no lock is taken.
 *
 * With the kernel's write-back cache the kernel may read pages of a file opened write-only and
 * keeps track of the end of file itself, so real files are opened read-write and without
 * O_APPEND (the kernel sends each append at its offset). O_DIRECT reaches the real file: its
 * reads and writes bypass the page cache of the view and of the file system below, through
 * aligned buffers. Byte-range and flock locks are left to the kernel, which keeps them for the
 * processes of the view (the daemon implements no lock operation). */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIRECT_ALIGN 4096

int real_open_flags(struct viewfs *fs, int flags)
{
	flags &= ~(O_CREAT | O_EXCL | O_NOCTTY);
	if (fs->writeback) {
		if ((flags & O_ACCMODE) == O_WRONLY)
			flags = (flags & ~O_ACCMODE) | O_RDWR;
		flags &= ~O_APPEND;
	}
	return flags | O_CLOEXEC;
}

struct vhandle *handle_new(struct viewfs *fs, struct vnode *n, int fd, enum layer layer,
			   bool direct)
{
	struct vhandle *h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	h->node = n;
	h->fd = fd;
	h->layer = layer;
	h->direct = direct;
	pthread_mutex_lock(&fs->table_lock);
	h->next = n->handles;
	n->handles = h;
	n->refs++; /* getattr of an unlinked file goes through its handles */
	pthread_mutex_unlock(&fs->table_lock);
	return h;
}

static void handle_free(struct viewfs *fs, struct vhandle *h)
{
	struct vnode *n = h->node;
	pthread_mutex_lock(&fs->table_lock);
	for (struct vhandle **pp = &n->handles; *pp; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	}
	pthread_mutex_unlock(&fs->table_lock);
	close(h->fd);
	free(h);
	node_unref(fs, n, 1);
}

/* A retry of a write open after its file was copied up. */
#define NEED_COPY_UP 1

/* Which layer an open uses, and open it there (ns read lock held). */
static int open_locked(struct viewfs *fs, struct vnode *n, int flags, int *fd, enum layer *l)
{
	bool wr = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
	int rflags = real_open_flags(fs, flags);
	enum layer layer;
	if (n->excepted)
		layer = LOWER;
	else if (fs->mode == VIEWFS_MOVE)
		layer = UPPER;
	else if (n->in_upper)
		layer = UPPER;
	else
		layer = LOWER;
	if (wr && !n->excepted && n->in_upper && fs->mode == VIEWFS_MERGE)
		return -EROFS;
	if (wr && !n->excepted && !n->in_upper && fs->mode == VIEWFS_COW)
		return NEED_COPY_UP;

	*l = layer;
	*fd = node_open(n, layer, rflags);
	if (*fd < 0 && errno == EACCES && (rflags & O_ACCMODE) != (flags & O_ACCMODE)) {
		/* write-only file: the write-back cache then cannot fill partial pages */
		*fd = node_open(n, layer, (rflags & ~O_ACCMODE) | (flags & O_ACCMODE));
	}
	if (*fd >= 0)
		return 0;
	int e = errno;
	if (wr && fs->mode == VIEWFS_MINCOW && layer == LOWER && !n->excepted && refused(e))
		return NEED_COPY_UP;
	return -e;
}

static void vfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	int fd = -1, rc = 0;
	enum layer layer = LOWER;
	/* until done: each copy-up is progress, and a real file system never says EAGAIN here */
	for (;;) {
		ns_read(fs);
		rc = open_locked(fs, n, fi->flags, &fd, &layer);
		ns_unlock(fs);
		if (rc != NEED_COPY_UP || (rc = copy_up(fs, n, (fi->flags & O_TRUNC) ? 0 : -1)) < 0)
			break;
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	bool direct = (fi->flags & O_DIRECT) != 0;
	struct vhandle *h = handle_new(fs, n, fd, layer, direct);
	if (!h) {
		close(fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = direct;
	fi->keep_cache = !direct;
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(fs, h); /* the opener was interrupted */
}

static void vfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *p = node_from_id(fs, parent), *n = NULL;
	struct fuse_entry_param e;
	int fd = -1;
	enum layer layer = UPPER;
	int rc = dir_create_file(fs, req, p, name, mode, fi->flags, &e, &fd, &n, &layer);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	bool direct = (fi->flags & O_DIRECT) != 0;
	struct vhandle *h = handle_new(fs, n, fd, layer, direct);
	if (!h) {
		close(fd);
		node_unref(fs, n, 1);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = direct;
	fi->keep_cache = !direct;
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		handle_free(fs, h);
		node_unref(fs, n, 1);
	}
}

static struct vhandle *handle_of(struct fuse_file_info *fi)
{
	return (struct vhandle *)(uintptr_t)fi->fh;
}

#define SMALL_READ (64u << 10) /* on the worker's stack */

static void vfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino;
	struct vhandle *h = handle_of(fi);
	if (h->direct)
		viewfs_serve_yield();
	if (h->direct) {
		void *buf = NULL;
		if (posix_memalign(&buf, DIRECT_ALIGN, size ? size : DIRECT_ALIGN) != 0) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		ssize_t r = pread(h->fd, buf, size, off);
		if (r < 0)
			fuse_reply_err(req, errno);
		else
			fuse_reply_buf(req, buf, (size_t)r);
		free(buf);
		return;
	}
	if (off == 0) {
		/* The first read of a file: most files are small, and for them a read into a
		 * buffer and one write to the device is two system calls, where splicing takes
		 * four (fd to pipe, header, pipe to device, and the pipe's setup). A file longer
		 * than the buffer is spliced after all; what was read stays in the page cache. */
		char small[SMALL_READ];
		size_t want = size < sizeof small ? size : sizeof small;
		ssize_t r = pread(h->fd, small, want, 0);
		if (r < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		if ((size_t)r < want || want == size) {
			fuse_reply_buf(req, small, (size_t)r);
			return;
		}
	}
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = h->fd;
	bv.buf[0].pos = off;
	fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

static void vfs_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			  struct fuse_file_info *fi)
{
	(void)ino;
	struct vhandle *h = handle_of(fi);
	size_t size = fuse_buf_size(in);
	ssize_t r;
	if (h->direct)
		viewfs_serve_yield();
	if (h->direct) {
		/* the request's data is not aligned in memory: bounce it */
		void *buf = NULL;
		if (posix_memalign(&buf, DIRECT_ALIGN, size ? size : DIRECT_ALIGN) != 0) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		struct fuse_bufvec mem = FUSE_BUFVEC_INIT(size);
		mem.buf[0].mem = buf;
		r = fuse_buf_copy(&mem, in, 0);
		if (r >= 0)
			r = pwrite(h->fd, buf, (size_t)r, off) < 0 ? -errno : r;
		free(buf);
	} else {
		struct fuse_bufvec out = FUSE_BUFVEC_INIT(size);
		out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		out.buf[0].fd = h->fd;
		out.buf[0].pos = off;
		r = fuse_buf_copy(&out, in, 0);
	}
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void vfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	/* Nothing to do at close: data went to the real file at each write (the kernel writes
	 * back its cache before it flushes, with or without this call), and locks are the
	 * kernel's. ENOSYS tells the kernel to stop sending FLUSH: one round trip less per
	 * close. Write errors of the file system below show at fsync. */
	fuse_reply_err(req, ENOSYS);
}

static void vfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_free(fuse_req_userdata(req), handle_of(fi));
	fuse_reply_err(req, 0);
}

static void vfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	int fd = handle_of(fi)->fd;
	viewfs_serve_yield();
	int r = datasync ? fdatasync(fd) : fsync(fd);
	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void vfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			  struct fuse_file_info *fi)
{
	(void)ino;
	viewfs_serve_yield();
	int r = fallocate(handle_of(fi)->fd, mode, off, len);
	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void vfs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
				struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
				struct fuse_file_info *fi_out, size_t len, int flags)
{
	(void)ino_in, (void)ino_out;
	viewfs_serve_yield();
	ssize_t r = copy_file_range(handle_of(fi_in)->fd, &off_in, handle_of(fi_out)->fd, &off_out,
				    len, (unsigned)flags);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)r);
}

static void vfs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	(void)ino;
	struct viewfs *fs = fuse_req_userdata(req);
	if (fs->writeback) {
		/* Data written moments ago may still be only in the kernel's write-back cache, and
		 * the kernel does not flush it before asking: the real file's holes could hide it
		 * (cp would skip it). ENOSYS makes the kernel answer from the file size itself. */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	off_t r = lseek(handle_of(fi)->fd, off, whence);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

void file_ops(struct fuse_lowlevel_ops *ops)
{
	ops->open = vfs_open;
	ops->create = vfs_create;
	ops->read = vfs_read;
	ops->write_buf = vfs_write_buf;
	ops->flush = vfs_flush;
	ops->release = vfs_release;
	ops->fsync = vfs_fsync;
	ops->fallocate = vfs_fallocate;
	ops->copy_file_range = vfs_copy_file_range;
	ops->lseek = vfs_lseek;
}
