/* See disk.h: I/O through an extent. The bounds are the extent's, so a partition can never
 * reach outside itself, and every write is noted for the table re-read and the next flush. */
#include "disk.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>
#include <string.h>

static bool aligned(uint64_t off, uint64_t len, const void *buf)
{
	return ((off | len | (uintptr_t)buf) & (UMDEV_DIRECT_ALIGN - 1)) == 0;
}

/* pread/pwrite on the O_DIRECT fd; -EINVAL (the store refused the alignment) sends the
 * caller back to the buffered path. */
static ssize_t direct_io(struct umdev_disk *d, bool write, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = write ? pwrite(d->direct_fd, (char *)buf + done, len - done,
					   (off_t)(off + done))
				  : pread(d->direct_fd, (char *)buf + done, len - done,
					  (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return done ? (ssize_t)done : -errno;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	if (!write && done < len) /* the image shrank: what is not there reads as zeros */
		memset((char *)buf + done, 0, len - done);
	return write ? (ssize_t)done : (ssize_t)len;
}

/* Clip [off, off+*len) to the extent; false when it starts at or past the end. */
static bool clip(const struct umdev_extent *e, uint64_t off, uint64_t *len)
{
	if (off >= e->length)
		return false;
	if (*len > e->length - off)
		*len = e->length - off;
	return true;
}

ssize_t umdev_pread(struct umdev_disk *d, struct umdev_extent *e, void *buf, size_t len,
		    uint64_t off)
{
	if (umdev_extent_gone(e))
		return -EIO;
	uint64_t n = len;
	if (!clip(e, off, &n) || n == 0)
		return 0;
	if (!d->dev) {
		memset(buf, 0, (size_t)n);
		return (ssize_t)n;
	}
	if (d->direct_fd >= 0 && aligned(e->start + off, n, buf)) {
		ssize_t r = direct_io(d, false, buf, (size_t)n, e->start + off);
		if (r != -EINVAL)
			return r;
	}
	return vo_block_pread(d->dev, buf, (size_t)n, e->start + off);
}

ssize_t umdev_pwrite(struct umdev_disk *d, struct umdev_extent *e, const void *buf, size_t len,
		     uint64_t off)
{
	if (umdev_extent_gone(e))
		return -EIO;
	if (!d->dev) /* the null device takes everything, at any offset */
		return (ssize_t)len;
	if (vo_block_readonly(d->dev))
		return -EROFS;
	if (len == 0)
		return 0;
	uint64_t n = len;
	if (!clip(e, off, &n))
		return -ENOSPC;
	ssize_t r = -EINVAL;
	if (d->direct_fd >= 0 && aligned(e->start + off, n, buf))
		r = direct_io(d, true, (void *)buf, (size_t)n, e->start + off);
	if (r == -EINVAL)
		r = vo_block_pwrite(d->dev, buf, (size_t)n, e->start + off);
	if (r > 0)
		umdev_note_write(d, e->start + off, (uint64_t)r);
	return r;
}

static int discard(struct umdev_disk *d, struct umdev_extent *e, uint64_t off, uint64_t len,
		   bool zero)
{
	if (umdev_extent_gone(e))
		return -EIO;
	if (!d->dev)
		return 0;
	if (vo_block_readonly(d->dev))
		return -EROFS;
	if (len == 0 || !clip(e, off, &len))
		return 0;
	int r = zero ? vo_block_zero(d->dev, e->start + off, len)
		     : vo_block_trim(d->dev, e->start + off, len);
	if (r == 0)
		umdev_note_write(d, e->start + off, len);
	return r;
}

int umdev_trim(struct umdev_disk *d, struct umdev_extent *e, uint64_t off, uint64_t len)
{
	return discard(d, e, off, len, false);
}

int umdev_zero(struct umdev_disk *d, struct umdev_extent *e, uint64_t off, uint64_t len)
{
	return discard(d, e, off, len, true);
}

int umdev_flush(struct umdev_disk *d, bool always)
{
	if (!d->dev)
		return 0;
	if (!__atomic_exchange_n(&d->unflushed, false, __ATOMIC_ACQ_REL) && !always)
		return 0;
	int r = vo_block_flush(d->dev);
	if (r < 0) /* still not durable: the next flush must try again */
		__atomic_store_n(&d->unflushed, true, __ATOMIC_RELEASE);
	return r;
}

int umdev_extent_fd(struct umdev_disk *d, struct umdev_extent *e, uint64_t off, size_t *len,
		    uint64_t *abs_off)
{
	if (!d->dev || umdev_extent_gone(e))
		return -1;
	uint64_t base;
	int fd = vo_block_fd(d->dev, &base);
	uint64_t n = *len;
	if (fd < 0 || !clip(e, off, &n))
		return -1;
	*len = (size_t)n;
	*abs_off = base + e->start + off;
	return fd;
}
