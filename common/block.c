/* See block.h: the dispatch on the source name, bounds handling shared by every backend, and
 * slices. Backends only ever see requests that lie within the device. */
#include "block.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vo_block *vo_block_new(const struct vo_block_ops *ops, const char *name)
{
	struct vo_block *b = calloc(1, sizeof *b);
	if (!b)
		return NULL;
	b->ops = ops;
	b->refs = 1;
	b->fd = -1;
	b->name = strdup(name);
	if (!b->name) {
		free(b);
		return NULL;
	}
	return b;
}

struct vo_block *vo_block_open(const char *spec, unsigned flags, char *err, size_t errlen)
{
	if (strncmp(spec, "mem:", 4) == 0)
		return vo_block_open_mem(spec, flags, err, errlen);
	if (strncmp(spec, "nbd:", 4) == 0 || strncmp(spec, "nbd+", 4) == 0 ||
	    strncmp(spec, "nbds:", 5) == 0 || strncmp(spec, "nbds+", 5) == 0)
		return vo_block_open_nbd(spec, flags, err, errlen);
	return vo_block_open_file(spec, flags, err, errlen);
}

ssize_t vo_block_pread(struct vo_block *b, void *buf, size_t len, uint64_t off)
{
	if (off >= b->size || len == 0)
		return 0;
	if (len > b->size - off)
		len = (size_t)(b->size - off);
	return b->ops->pread(b, buf, len, off);
}

ssize_t vo_block_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off)
{
	if (b->readonly)
		return -EROFS;
	if (len == 0)
		return 0;
	if (off >= b->size)
		return -ENOSPC;
	if (len > b->size - off)
		len = (size_t)(b->size - off);
	return b->ops->pwrite(b, buf, len, off);
}

int vo_block_flush(struct vo_block *b)
{
	return b->readonly ? 0 : b->ops->flush(b);
}

/* Clip [off, off+len) to the device; returns false when nothing is left. */
static bool clip(const struct vo_block *b, uint64_t off, uint64_t *len)
{
	if (off >= b->size || *len == 0)
		return false;
	if (*len > b->size - off)
		*len = b->size - off;
	return true;
}

int vo_block_trim(struct vo_block *b, uint64_t off, uint64_t len)
{
	if (b->readonly)
		return -EROFS;
	if (!clip(b, off, &len))
		return 0;
	return b->ops->trim ? b->ops->trim(b, off, len) : 0; /* trim is advisory */
}

int vo_block_zero(struct vo_block *b, uint64_t off, uint64_t len)
{
	if (b->readonly)
		return -EROFS;
	if (!clip(b, off, &len))
		return 0;
	return b->ops->zero ? b->ops->zero(b, off, len) : vo_block_zero_by_writing(b, off, len);
}

int vo_block_zero_by_writing(struct vo_block *b, uint64_t off, uint64_t len)
{
	static const char zeros[65536];
	while (len > 0) {
		size_t n = len < sizeof zeros ? (size_t)len : sizeof zeros;
		ssize_t r = b->ops->pwrite(b, zeros, n, off);
		if (r < 0)
			return (int)r;
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	return 0;
}

uint64_t vo_block_size(const struct vo_block *b) { return b->size; }
bool vo_block_readonly(const struct vo_block *b) { return b->readonly; }
const char *vo_block_name(const struct vo_block *b) { return b->name; }

int vo_block_fd(const struct vo_block *b, uint64_t *offset)
{
	uint64_t off = 0;
	while (b->parent) {
		off += b->offset;
		b = b->parent;
	}
	if (offset)
		*offset = off;
	return b->fd;
}

void vo_block_close(struct vo_block *b)
{
	if (!b || __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (b->ops->close)
		b->ops->close(b);
	free(b->name);
	free(b);
}

/* --- slices: requests are already clipped to the slice, so only the offset moves --- */

static ssize_t slice_pread(struct vo_block *b, void *buf, size_t len, uint64_t off)
{
	return vo_block_pread(b->parent, buf, len, b->offset + off);
}

static ssize_t slice_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off)
{
	return vo_block_pwrite(b->parent, buf, len, b->offset + off);
}

static int slice_flush(struct vo_block *b) { return vo_block_flush(b->parent); }

static int slice_trim(struct vo_block *b, uint64_t off, uint64_t len)
{
	return vo_block_trim(b->parent, b->offset + off, len);
}

static int slice_zero(struct vo_block *b, uint64_t off, uint64_t len)
{
	return vo_block_zero(b->parent, b->offset + off, len);
}

static void slice_close(struct vo_block *b) { vo_block_close(b->parent); }

static const struct vo_block_ops slice_ops = {
	.pread = slice_pread,
	.pwrite = slice_pwrite,
	.flush = slice_flush,
	.trim = slice_trim,
	.zero = slice_zero,
	.close = slice_close,
};

struct vo_block *vo_block_slice(struct vo_block *parent, uint64_t offset, uint64_t length,
				char *err, size_t errlen)
{
	if (offset > parent->size || length > parent->size - offset) {
		snprintf(err, errlen, "%s: window at %llu of %llu bytes lies outside the device "
			 "(%llu bytes)", parent->name, (unsigned long long)offset,
			 (unsigned long long)length, (unsigned long long)parent->size);
		return NULL;
	}
	char name[512];
	snprintf(name, sizeof name, "%s[%llu+%llu]", parent->name, (unsigned long long)offset,
		 (unsigned long long)length);
	struct vo_block *b = vo_block_new(&slice_ops, name);
	if (!b) {
		snprintf(err, errlen, "%s: out of memory", parent->name);
		return NULL;
	}
	__atomic_add_fetch(&parent->refs, 1, __ATOMIC_ACQ_REL);
	b->parent = parent;
	b->offset = offset;
	b->size = length;
	b->readonly = parent->readonly;
	return b;
}
