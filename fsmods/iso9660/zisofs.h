/* zisofs: files compressed block by block with zlib, marked by a Rock Ridge ZF entry (version 1,
 * "pz", as mkzftree and the Linux kernel know it) or zisofs2 (ZF/Z2 version 2, "PZ", 64-bit
 * pointers, files beyond 4 GiB). The file data starts with a header and a table of block
 * pointers; a read inflates only the blocks it touches. Other zisofs2 algorithms (xz, lz4,
 * zstd, bzip2) are recognised and refused with EIO: no writer produces them by default, and each
 * would be another library for a format nobody uses. */
#ifndef ISO9660_ZISOFS_H
#define ISO9660_ZISOFS_H

#include "isofs.h"
#include "susp.h"

struct iso_zisofs {
	uint8_t version;          /* 1 or 2 */
	uint8_t log2_block;       /* 15..17 */
	uint8_t header_words;
	uint64_t size;            /* inflated size */
	uint64_t nblocks;
	/* The block pointer table, read on the first read (0 = not yet, 1 = loaded, -errno). */
	_Atomic int state;
	uint64_t *ptrs;           /* nblocks + 1 offsets into the compressed data */
};

/* From a ZF/Z2 entry: sets n->zisofs and n->size, or n->data_error for an algorithm or block
 * size we do not read. img->lock held (arena). */
void iso_zisofs_attach(struct iso_image *img, struct iso_node *n, const struct rr_info *rr);

ssize_t iso_zisofs_read(struct iso_image *img, struct iso_node *n, void *buf, size_t len,
			uint64_t off);

/* The compressed bytes [off, off+len) of a file, through its extents (file.c). */
int iso_read_stored(struct iso_image *img, const struct iso_node *n, void *buf, size_t len,
		    uint64_t off);

#endif
