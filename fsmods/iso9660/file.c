/* Reading file data: a file is a list of extents (one, or several for a multi-extent file beyond
 * 4 GiB), so a read at any offset is a walk down that short list and one device read per piece:
 * no state, no scan of the image, nothing shared between threads. */
#include "isofs.h"
#include "zisofs.h"

#include <errno.h>

/* Map [off, off+len) of the stored data (the extents laid end to end) onto the device. */
static int map_stored(struct iso_image *img, const struct iso_node *n, uint64_t off, size_t len,
		      struct iso_piece *pieces, int max)
{
	int count = 0;
	uint64_t skip = off;
	for (uint32_t i = 0; i < n->nextents && len > 0 && count < max; i++) {
		const struct iso_extent *e = &n->extents[i];
		if (skip >= e->length) {
			skip -= e->length;
			continue;
		}
		uint64_t take = e->length - skip;
		if (take > len)
			take = len;
		uint64_t at = e->start + skip;
		if (at > img->dev_size || take > img->dev_size - at)
			return -EIO; /* an extent that runs off the image */
		pieces[count].dev_off = at;
		pieces[count].len = (size_t)take;
		count++;
		len -= (size_t)take;
		skip = 0;
	}
	return count;
}

int iso_map(struct iso_image *img, const struct iso_node *n, uint64_t off, size_t len,
	    struct iso_piece *pieces, int max)
{
	if (n->data_error)
		return -n->data_error;
	if (off >= n->size)
		return 0;
	if (len > n->size - off)
		len = (size_t)(n->size - off);
	return map_stored(img, n, off, len, pieces, max);
}

int iso_read_stored(struct iso_image *img, const struct iso_node *n, void *buf, size_t len,
		    uint64_t off)
{
	char *dst = buf;
	while (len > 0) {
		struct iso_piece p[8];
		int np = map_stored(img, n, off, len, p, 8);
		if (np < 0)
			return np;
		if (np == 0)
			return -EIO; /* asked beyond the stored data: the metadata lied */
		for (int i = 0; i < np; i++) {
			int r = iso_dev_read(img, dst, p[i].len, p[i].dev_off);
			if (r < 0)
				return r;
			dst += p[i].len;
			off += p[i].len;
			len -= p[i].len;
		}
	}
	return 0;
}

ssize_t iso_read(struct iso_image *img, struct iso_node *n, void *buf, size_t len, uint64_t off)
{
	if (n->data_error)
		return -n->data_error;
	if (n->zisofs)
		return iso_zisofs_read(img, n, buf, len, off);
	if (off >= n->size)
		return 0;
	if (len > n->size - off)
		len = (size_t)(n->size - off);
	int r = iso_read_stored(img, n, buf, len, off);
	return r < 0 ? r : (ssize_t)len;
}
