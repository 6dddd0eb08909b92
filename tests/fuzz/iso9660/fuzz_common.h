/* What the iso9660 harnesses share: a read-only block device over the fuzzer's bytes, so the
 * reader runs exactly as it does under the daemon, through the block layer. */
#ifndef FUZZ_ISO9660_COMMON_H
#define FUZZ_ISO9660_COMMON_H

#include "block.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fuzz_bytes {
	const uint8_t *data;
};

static ssize_t fuzz_pread(struct vo_block *b, void *buf, size_t len, uint64_t off)
{
	/* the block layer has clipped the request to the device */
	memcpy(buf, ((struct fuzz_bytes *)b->priv)->data + off, len);
	return (ssize_t)len;
}

static ssize_t fuzz_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off)
{
	(void)b, (void)buf, (void)len, (void)off;
	return -EROFS;
}

static int fuzz_flush(struct vo_block *b)
{
	(void)b;
	return 0;
}

static void fuzz_close(struct vo_block *b)
{
	free(b->priv);
}

static const struct vo_block_ops fuzz_ops = {
	.pread = fuzz_pread, .pwrite = fuzz_pwrite, .flush = fuzz_flush, .close = fuzz_close,
};

static struct vo_block *fuzz_device(const uint8_t *data, size_t size)
{
	struct vo_block *b = vo_block_new(&fuzz_ops, "fuzz");
	struct fuzz_bytes *p = malloc(sizeof *p);
	if (!b || !p)
		abort();
	p->data = data;
	b->priv = p;
	b->size = size;
	b->readonly = true;
	return b;
}

#endif
