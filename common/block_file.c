/* Block backends on a file descriptor: image files, block devices, umdev device files (which
 * are regular files on a FUSE mount), and mem:SIZE, which is a memfd: the kernel gives us a
 * sparse, thread-safe store whose holes read as zeros, whose punched holes return memory, and
 * whose fd can be handed to nbdkit so both sides see the same bytes. */
#define _GNU_SOURCE
#include "block.h"

#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_priv {
	bool is_blockdev;
};

static ssize_t fd_pread(struct vo_block *b, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(b->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return done ? (ssize_t)done : -errno;
		}
		if (r == 0) /* the file shrank under us: what is not there reads as zeros */
			break;
		done += (size_t)r;
	}
	if (done < len)
		memset((char *)buf + done, 0, len - done);
	return (ssize_t)len;
}

static ssize_t fd_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pwrite(b->fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return done ? (ssize_t)done : -errno;
		}
		if (r == 0)
			return done ? (ssize_t)done : -ENOSPC;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static int fd_flush(struct vo_block *b)
{
	return fdatasync(b->fd) < 0 ? -errno : 0;
}

static int fd_trim(struct vo_block *b, uint64_t off, uint64_t len)
{
	struct file_priv *p = b->priv;
	if (p->is_blockdev) {
		uint64_t range[2] = { off, len };
		if (ioctl(b->fd, BLKDISCARD, range) == 0)
			return 0;
	} else if (fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			     (off_t)len) == 0) {
		return 0;
	}
	/* Discard is advisory: a store that cannot do it keeps the data, which is allowed. */
	return errno == EOPNOTSUPP || errno == ENOTTY || errno == ENOSYS || errno == EINVAL ? 0
											   : -errno;
}

static int fd_zero(struct vo_block *b, uint64_t off, uint64_t len)
{
	struct file_priv *p = b->priv;
	if (p->is_blockdev) {
		uint64_t range[2] = { off, len };
		if (ioctl(b->fd, BLKZEROOUT, range) == 0)
			return 0;
	} else {
		if (fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) == 0)
			return 0;
		/* a punched hole reads as zeros too, and frees the space */
		if (fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) == 0)
			return 0;
	}
	return vo_block_zero_by_writing(b, off, len);
}

static void fd_close(struct vo_block *b)
{
	close(b->fd);
	free(b->priv);
}

static const struct vo_block_ops fd_ops = {
	.pread = fd_pread,
	.pwrite = fd_pwrite,
	.flush = fd_flush,
	.trim = fd_trim,
	.zero = fd_zero,
	.close = fd_close,
};

static struct vo_block *wrap_fd(int fd, const char *name, uint64_t size, bool readonly,
				bool blockdev, char *err, size_t errlen)
{
	struct vo_block *b = vo_block_new(&fd_ops, name);
	struct file_priv *p = calloc(1, sizeof *p);
	if (!b || !p) {
		snprintf(err, errlen, "%s: out of memory", name);
		free(p);
		if (b)
			vo_block_close(b);
		close(fd);
		return NULL;
	}
	p->is_blockdev = blockdev;
	b->priv = p;
	b->fd = fd;
	b->size = size;
	b->readonly = readonly;
	return b;
}

struct vo_block *vo_block_open_file(const char *path, unsigned flags, char *err, size_t errlen)
{
	bool ro = flags & VO_BLOCK_RDONLY;
	int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s%s", path, strerror(errno),
			 !ro && (errno == EACCES || errno == EROFS) ? " (try -o ro)" : "");
		return NULL;
	}
	struct stat st;
	uint64_t size = 0;
	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: is a directory, not an image or a device", path);
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
			snprintf(err, errlen, "cannot get the size of %s: %s", path, strerror(errno));
			goto fail;
		}
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		off_t end = lseek(fd, 0, SEEK_END);
		if (end < 0) {
			snprintf(err, errlen, "%s: not an image or a device (cannot seek)", path);
			goto fail;
		}
		size = (uint64_t)end;
	}
	if (flags & VO_BLOCK_LOCK) {
		if (flock(fd, (ro ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
			snprintf(err, errlen, "%s is in use by another program%s", path,
				 ro ? " that writes it" : "");
			goto fail;
		}
	}
	return wrap_fd(fd, path, size, ro, S_ISBLK(st.st_mode), err, errlen);
fail:
	close(fd);
	return NULL;
}

struct vo_block *vo_block_open_mem(const char *spec, unsigned flags, char *err, size_t errlen)
{
	uint64_t size;
	if (vo_parse_size(spec + 4, 1, &size) < 0 || size == 0) {
		snprintf(err, errlen, "%s: expected mem:SIZE with a size such as 64M or 2G", spec);
		return NULL;
	}
	int fd = memfd_create(spec, MFD_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot create memory store: %s", spec, strerror(errno));
		return NULL;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		snprintf(err, errlen, "%s: cannot size memory store: %s", spec, strerror(errno));
		close(fd);
		return NULL;
	}
	/* Read-only makes little sense for fresh zeros, but honour it. */
	return wrap_fd(fd, spec, size, flags & VO_BLOCK_RDONLY, false, err, errlen);
}
