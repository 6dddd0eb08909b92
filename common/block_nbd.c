/* NBD sources through libnbd: nbd://, nbds://, nbd+unix://, nbds+unix:// URIs.
 * One connection; libnbd's synchronous calls are thread-safe (it serialises them). Requests
 * are split at the server's maximum block size so large FUSE reads never exceed it. */
#include "block.h"

#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nbd_priv {
	struct nbd_handle *nbd;
	uint64_t max_request;
	bool can_flush, can_trim, can_zero;
};

static int nbd_errno(void)
{
	int e = nbd_get_errno();
	return e ? -e : -EIO;
}

static ssize_t nbdb_pread(struct vo_block *b, void *buf, size_t len, uint64_t off)
{
	struct nbd_priv *p = b->priv;
	for (size_t done = 0; done < len;) {
		size_t n = len - done < p->max_request ? len - done : (size_t)p->max_request;
		if (nbd_pread(p->nbd, (char *)buf + done, n, off + done, 0) < 0)
			return nbd_errno();
		done += n;
	}
	return (ssize_t)len;
}

static ssize_t nbdb_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off)
{
	struct nbd_priv *p = b->priv;
	for (size_t done = 0; done < len;) {
		size_t n = len - done < p->max_request ? len - done : (size_t)p->max_request;
		if (nbd_pwrite(p->nbd, (const char *)buf + done, n, off + done, 0) < 0)
			return nbd_errno();
		done += n;
	}
	return (ssize_t)len;
}

static int nbdb_flush(struct vo_block *b)
{
	struct nbd_priv *p = b->priv;
	if (!p->can_flush) /* the server says writes are durable without it */
		return 0;
	return nbd_flush(p->nbd, 0) < 0 ? nbd_errno() : 0;
}

static int nbdb_trim(struct vo_block *b, uint64_t off, uint64_t len)
{
	struct nbd_priv *p = b->priv;
	if (!p->can_trim)
		return 0;
	while (len > 0) {
		uint64_t n = len < (1u << 30) ? len : (1u << 30);
		if (nbd_trim(p->nbd, n, off, 0) < 0)
			return nbd_errno();
		off += n;
		len -= n;
	}
	return 0;
}

static int nbdb_zero(struct vo_block *b, uint64_t off, uint64_t len)
{
	struct nbd_priv *p = b->priv;
	if (!p->can_zero)
		return vo_block_zero_by_writing(b, off, len);
	while (len > 0) {
		uint64_t n = len < (1u << 30) ? len : (1u << 30);
		if (nbd_zero(p->nbd, n, off, 0) < 0)
			return nbd_errno();
		off += n;
		len -= n;
	}
	return 0;
}

static void nbdb_close(struct vo_block *b)
{
	struct nbd_priv *p = b->priv;
	nbd_shutdown(p->nbd, 0);
	nbd_close(p->nbd);
	free(p);
}

static const struct vo_block_ops nbd_ops = {
	.pread = nbdb_pread,
	.pwrite = nbdb_pwrite,
	.flush = nbdb_flush,
	.trim = nbdb_trim,
	.zero = nbdb_zero,
	.close = nbdb_close,
};

struct vo_block *vo_block_open_nbd(const char *uri, unsigned flags, char *err, size_t errlen)
{
	struct nbd_priv *p = calloc(1, sizeof *p);
	struct vo_block *b = NULL;
	if (!p) {
		snprintf(err, errlen, "%s: out of memory", uri);
		return NULL;
	}
	p->nbd = nbd_create();
	if (!p->nbd || nbd_connect_uri(p->nbd, uri) < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s", uri, nbd_get_error());
		goto fail;
	}
	int64_t size = nbd_get_size(p->nbd);
	if (size < 0) {
		snprintf(err, errlen, "%s: cannot get the export size: %s", uri, nbd_get_error());
		goto fail;
	}
	int server_ro = nbd_is_read_only(p->nbd);
	if (server_ro == 1 && !(flags & VO_BLOCK_RDONLY)) {
		snprintf(err, errlen, "%s: the export is read-only (try -o ro)", uri);
		goto fail;
	}
	int64_t max = nbd_get_block_size(p->nbd, LIBNBD_SIZE_MAXIMUM);
	p->max_request = max > 0 ? (uint64_t)max : 32u << 20; /* the protocol's safe limit */
	if (p->max_request > (32u << 20))
		p->max_request = 32u << 20;
	p->can_flush = nbd_can_flush(p->nbd) == 1;
	p->can_trim = nbd_can_trim(p->nbd) == 1;
	p->can_zero = nbd_can_zero(p->nbd) == 1;

	b = vo_block_new(&nbd_ops, uri);
	if (!b) {
		snprintf(err, errlen, "%s: out of memory", uri);
		goto fail;
	}
	b->priv = p;
	b->size = (uint64_t)size;
	b->readonly = flags & VO_BLOCK_RDONLY;
	return b;
fail:
	if (p->nbd)
		nbd_close(p->nbd);
	free(p);
	return NULL;
}
