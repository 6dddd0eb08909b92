/* The FUSE side of umfuse-iso9660 (see fuse_ops.c). */
#ifndef ISO9660_FUSE_OPS_H
#define ISO9660_FUSE_OPS_H

#include "isofs.h"

#include <fuse_lowlevel.h>
#include <stdbool.h>

struct iso_fs {
	struct iso_image *img;
	int fd;                /* the image's fd for zero-copy reads, or -1 (NBD) */
	uint64_t fd_offset;    /* where the image starts in it (a slice) */
	bool no_open, no_opendir; /* the kernel can do without OPEN / OPENDIR */
};

extern const struct fuse_lowlevel_ops iso_fuse_ops;

#endif
