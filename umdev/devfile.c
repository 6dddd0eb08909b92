/* See devfile.h: the FUSE low-level operations of a device file.
 *
 * The mount's root inode is the device itself, so every operation is on FUSE_ROOT_ID and there
 * is nothing to look up. Each open holds the extent it was given, so a re-read of the table
 * never moves an open file onto another partition (its I/O fails with EIO instead).
 *
 * What FUSE delivers of the block ioctls: on a regular file the kernel passes an ioctl in
 * "restricted" mode, moving only the bytes that the ioctl number itself encodes. So
 * BLKGETSIZE64 and BLKBSZGET (sizes in the number) and BLKRRPART and BLKFLSBUF (no data)
 * work; BLKGETSIZE, BLKSSZGET, BLKROGET/BLKROSET, BLKDISCARD, BLKZEROOUT and HDIO_GETGEO are
 * old-style numbers without a size, so their data cannot reach us or the caller: they get
 * ENOTTY, on which tools fall back to their regular-file path (st_size, 512-byte sectors,
 * fallocate for discard and zeroing, which FUSE does deliver). */
#define _GNU_SOURCE
#include "devfile.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct devfile *devfile_new(struct umdev_disk *disk, struct umdev_extent *e, mode_t mode,
			    uid_t uid, gid_t gid, const struct devfile_hooks *hooks, void *owner)
{
	struct devfile *df = calloc(1, sizeof *df);
	if (!df)
		return NULL;
	df->disk = disk;
	df->number = e->number;
	umdev_extent_get(e);
	df->extent = e;
	df->mode = mode & 07777;
	df->uid = uid;
	df->gid = gid;
	clock_gettime(CLOCK_REALTIME, &df->mtime);
	df->atime = df->ctime = df->mtime;
	df->hooks = hooks;
	df->owner = owner;
	pthread_mutex_init(&df->lock, NULL);
	return df;
}

void devfile_set_extent(struct devfile *df, struct umdev_extent *e)
{
	if (e)
		umdev_extent_get(e);
	pthread_mutex_lock(&df->lock);
	struct umdev_extent *old = df->extent;
	df->extent = e;
	clock_gettime(CLOCK_REALTIME, &df->ctime);
	pthread_mutex_unlock(&df->lock);
	umdev_extent_put(old);
}

void devfile_free(struct devfile *df)
{
	if (!df)
		return;
	while (df->opens) {
		struct devfile_open *o = df->opens;
		df->opens = o->next;
		umdev_extent_put(o->extent);
		free(o);
	}
	umdev_extent_put(df->extent);
	pthread_mutex_destroy(&df->lock);
	free(df);
}

static struct devfile *of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct umdev_extent *opened(struct fuse_file_info *fi)
{
	return ((struct devfile_open *)(uintptr_t)fi->fh)->extent;
}

static void fill_attr(struct devfile *df, struct stat *st)
{
	memset(st, 0, sizeof *st);
	pthread_mutex_lock(&df->lock);
	uint64_t length = df->extent ? df->extent->length : 0;
	st->st_mode = S_IFREG | df->mode;
	st->st_uid = df->uid;
	st->st_gid = df->gid;
	st->st_atim = df->atime;
	st->st_mtim = df->mtime;
	st->st_ctim = df->ctime;
	pthread_mutex_unlock(&df->lock);
	st->st_ino = FUSE_ROOT_ID;
	st->st_nlink = 1;
	st->st_size = (off_t)length;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)(length / 512);
	/* For the whole disk, show what the backing store really uses: a RAM disk's memory, a
	 * sparse image's allocated blocks (du on the device file then tells the truth). */
	uint64_t base;
	struct stat backing;
	int fd = df->number == 0 && df->disk->dev ? vo_block_fd(df->disk->dev, &base) : -1;
	if (fd >= 0 && fstat(fd, &backing) == 0 && S_ISREG(backing.st_mode))
		st->st_blocks = backing.st_blocks;
}

static void df_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Splice moves the data between the backing fd and /dev/fuse without a copy through
	 * our memory, when the kernel offers it. */
	unsigned want = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ;
	conn->want |= conn->capable & want;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static void df_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	struct stat st;
	fill_attr(of(req), &st);
	/* No attribute caching: a re-read of the table may change the size at any time. */
	fuse_reply_attr(req, &st, 0);
}

static void set_time(struct timespec *t, const struct timespec *given, bool now)
{
	if (now)
		clock_gettime(CLOCK_REALTIME, t);
	else
		*t = *given;
}

static void df_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	struct devfile *df = of(req);
	/* The kernel has checked the permissions (default_permissions). A size change is
	 * ignored: a device's size is its table's business, and O_TRUNC or dd's ftruncate on a
	 * block device leave it alone too. */
	pthread_mutex_lock(&df->lock);
	if (to_set & FUSE_SET_ATTR_MODE)
		df->mode = attr->st_mode & 07777;
	if (to_set & FUSE_SET_ATTR_UID)
		df->uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		df->gid = attr->st_gid;
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
		set_time(&df->atime, &attr->st_atim, to_set & FUSE_SET_ATTR_ATIME_NOW);
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
		set_time(&df->mtime, &attr->st_mtim, to_set & FUSE_SET_ATTR_MTIME_NOW);
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
		      FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME |
		      FUSE_SET_ATTR_MTIME_NOW))
		clock_gettime(CLOCK_REALTIME, &df->ctime);
	pthread_mutex_unlock(&df->lock);
	struct stat st;
	fill_attr(df, &st);
	fuse_reply_attr(req, &st, 0);
}

static void forget_open(struct devfile *df, struct devfile_open *o)
{
	pthread_mutex_lock(&df->lock);
	if (o->prev)
		o->prev->next = o->next;
	else
		df->opens = o->next;
	if (o->next)
		o->next->prev = o->prev;
	pthread_mutex_unlock(&df->lock);
	umdev_extent_put(o->extent);
	free(o);
}

static void df_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct devfile *df = of(req);
	pthread_mutex_lock(&df->lock);
	struct umdev_extent *e = df->extent;
	if (e)
		umdev_extent_get(e);
	pthread_mutex_unlock(&df->lock);
	if (!e || umdev_extent_gone(e)) {
		/* the partition has left the table: like opening a device that is not there */
		umdev_extent_put(e);
		fuse_reply_err(req, ENXIO);
		return;
	}
	struct devfile_open *o = calloc(1, sizeof *o);
	if (!o) {
		umdev_extent_put(e);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	o->extent = e;
	pthread_mutex_lock(&df->lock);
	o->next = df->opens;
	if (o->next)
		o->next->prev = o;
	df->opens = o;
	pthread_mutex_unlock(&df->lock);
	fi->fh = (uintptr_t)o;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	if (fuse_reply_open(req, fi) != 0) /* the opener was interrupted: no release will come */
		forget_open(df, o);
}

/* A buffer per serving thread, reused: a fresh 1 MiB buffer per request costs more in page
 * faults than the copy itself (and libfuse's own fallback for replies from an fd does just
 * that, since a 1 MiB reply does not fit the largest pipe an ordinary user may have). */
static pthread_key_t buffer_key;
static pthread_once_t buffer_once = PTHREAD_ONCE_INIT;

struct thread_buffer {
	size_t size;
	char *data; /* aligned for O_DIRECT (-o direct) */
};

static void free_buffer(void *p)
{
	struct thread_buffer *b = p;
	free(b->data);
	free(b);
}

static void make_buffer_key(void)
{
	pthread_key_create(&buffer_key, free_buffer);
}

static char *thread_buffer(size_t size)
{
	pthread_once(&buffer_once, make_buffer_key);
	struct thread_buffer *b = pthread_getspecific(buffer_key);
	if (b && b->size >= size)
		return b->data;
	size_t want = size < (1u << 20) ? (1u << 20) : size;
	struct thread_buffer *nb = malloc(sizeof *nb);
	if (!nb || posix_memalign((void **)&nb->data, UMDEV_DIRECT_ALIGN, want) != 0) {
		free(nb);
		return NULL;
	}
	nb->size = want;
	if (b)
		free_buffer(b);
	pthread_setspecific(buffer_key, nb);
	return nb->data;
}

static void df_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino;
	struct devfile *df = of(req);
	char *buf = thread_buffer(size);
	ssize_t r = buf ? umdev_pread(df->disk, opened(fi), buf, size, (uint64_t)off) : -ENOMEM;
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
}

static void df_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	(void)ino;
	struct devfile *df = of(req);
	struct umdev_extent *e = opened(fi);
	size_t size = fuse_buf_size(in);
	size_t n = size;
	uint64_t abs;
	/* straight from libfuse's buffer (or pipe) to the store's fd, unless the disk is read-only
	 * or uses O_DIRECT, which needs the data in aligned memory */
	bool readonly = df->disk->dev && vo_block_readonly(df->disk->dev);
	int fd = readonly || df->disk->direct_fd >= 0
			 ? -1 : umdev_extent_fd(df->disk, e, (uint64_t)off, &n, &abs);
	if (fd >= 0 && n > 0) {
		struct fuse_bufvec dst = FUSE_BUFVEC_INIT(n);
		dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		dst.buf[0].fd = fd;
		dst.buf[0].pos = (off_t)abs;
		ssize_t r = fuse_buf_copy(&dst, in, 0);
		if (r > 0)
			umdev_note_write(df->disk, abs, (uint64_t)r);
		if (r < 0)
			fuse_reply_err(req, (int)-r);
		else
			fuse_reply_write(req, (size_t)r);
		return;
	}
	/* The general path (NBD source, null device, errors and bounds): through memory. */
	const void *data = NULL;
	if (in->count == 1 && !(in->buf[0].flags & FUSE_BUF_IS_FD) && df->disk->direct_fd < 0) {
		data = (const char *)in->buf[0].mem + in->off;
	} else {
		char *buf = thread_buffer(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
		dst.buf[0].mem = buf;
		ssize_t c = fuse_buf_copy(&dst, in, 0);
		if (c < 0) {
			fuse_reply_err(req, (int)-c);
			return;
		}
		size = (size_t)c;
		data = buf;
	}
	ssize_t r = umdev_pwrite(df->disk, e, data, size, (uint64_t)off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

/* After a flush, fsync or close: re-read the table if a write touched it. A failed re-read
 * is logged by the owner; it does not fail the caller's close. */
static void reread_if_dirty(struct devfile *df)
{
	if (umdev_disk_table_dirty(df->disk))
		df->hooks->reread(df->owner, false);
}

static void df_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	struct devfile *df = of(req);
	int r = umdev_flush(df->disk, false); /* every close: sync only after our own writes */
	reread_if_dirty(df);
	fuse_reply_err(req, -r);
}

static void df_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	struct devfile *df = of(req);
	int r = umdev_flush(df->disk, true);
	reread_if_dirty(df);
	fuse_reply_err(req, -r);
}

static void df_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct devfile *df = of(req);
	forget_open(df, (struct devfile_open *)(uintptr_t)fi->fh);
	reread_if_dirty(df);
	fuse_reply_err(req, 0);
}

static void df_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		     size_t in_bufsz, size_t out_bufsz)
{
	(void)ino, (void)arg, (void)flags, (void)in_buf, (void)in_bufsz;
	struct devfile *df = of(req);
	struct umdev_extent *e = opened(fi);
	int r;
	switch (cmd) {
	case BLKGETSIZE64: {
		uint64_t size = e->length;
		if (out_bufsz < sizeof size)
			break;
		fuse_reply_ioctl(req, 0, &size, sizeof size);
		return;
	}
	case BLKBSZGET: {
		int bsize = 4096; /* the kernel answers with an int although the number says size_t */
		if (out_bufsz < sizeof bsize)
			break;
		fuse_reply_ioctl(req, 0, &bsize, sizeof bsize);
		return;
	}
	case BLKRRPART:
		if (df->number != 0) { /* as Linux: only the whole disk has a table */
			fuse_reply_err(req, EINVAL);
			return;
		}
		r = umdev_flush(df->disk, true);
		if (r == 0)
			r = df->hooks->reread(df->owner, true);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_ioctl(req, 0, NULL, 0);
		return;
	case BLKFLSBUF:
		r = umdev_flush(df->disk, true);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_ioctl(req, 0, NULL, 0);
		return;
	default:
		break;
	}
	fuse_reply_err(req, ENOTTY);
}

static void df_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	(void)ino;
	struct devfile *df = of(req);
	struct umdev_extent *e = opened(fi);
	/* The modes and checks of fallocate on a Linux block device: punching a hole or zeroing
	 * a range of whole sectors inside the device; plain allocation makes no sense there. */
	int r;
	if (umdev_extent_gone(e)) {
		r = -EIO;
	} else if (off < 0 || len <= 0 || ((off | len) & (UMDEV_SECTOR - 1)) ||
		   (uint64_t)off + (uint64_t)len > e->length) {
		r = -EINVAL;
	} else if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
		/* a punched hole must read back as zeros: a trim does that on a file or a memfd
		 * (and frees the space); anything else gets an explicit zeroing */
		r = df->disk->trim_zeroes ? umdev_trim(df->disk, e, (uint64_t)off, (uint64_t)len)
					  : umdev_zero(df->disk, e, (uint64_t)off, (uint64_t)len);
	} else if ((mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE) {
		r = umdev_zero(df->disk, e, (uint64_t)off, (uint64_t)len);
	} else {
		r = -EOPNOTSUPP;
	}
	fuse_reply_err(req, -r);
}

static void df_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	(void)ino;
	struct devfile *df = of(req);
	struct umdev_extent *e = opened(fi);
	if (umdev_extent_gone(e)) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (off < 0 || (uint64_t)off >= e->length) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	size_t n = (size_t)(e->length - (uint64_t)off);
	uint64_t abs;
	int fd = umdev_extent_fd(df->disk, e, (uint64_t)off, &n, &abs);
	if (fd < 0) { /* no holes known: all data */
		fuse_reply_lseek(req, whence == SEEK_DATA ? off : (off_t)e->length);
		return;
	}
	off_t found = lseek(fd, (off_t)abs, whence);
	uint64_t base = abs - (uint64_t)off; /* the extent's first byte in the backing fd */
	if (found < 0 && errno != ENXIO) {
		fuse_reply_err(req, errno);
		return;
	}
	if (whence == SEEK_DATA) {
		if (found < 0 || (uint64_t)found >= base + e->length)
			fuse_reply_err(req, ENXIO);
		else
			fuse_reply_lseek(req, (off_t)((uint64_t)found - base));
	} else {
		uint64_t end = found < 0 ? base + e->length : (uint64_t)found;
		fuse_reply_lseek(req, (off_t)((end < base + e->length ? end : base + e->length) -
					      base));
	}
}

const struct fuse_lowlevel_ops devfile_ops = {
	.init = df_init,
	.getattr = df_getattr,
	.setattr = df_setattr,
	.open = df_open,
	.read = df_read,
	.write_buf = df_write_buf,
	.flush = df_flush,
	.fsync = df_fsync,
	.release = df_release,
	.ioctl = df_ioctl,
	.fallocate = df_fallocate,
	.lseek = df_lseek,
};
