/* The block layer: the one seam between a driver (or a umdev device) and the bytes below it.
 *
 * A source is named by a string:
 *   PATH                              an image file, a block device, or a umdev device file
 *   mem:SIZE                          a sparse RAM disk (a memfd: untouched blocks cost nothing,
 *                                     trim frees memory, and the fd can be shared with nbdkit)
 *   nbd://HOST[:PORT]/EXPORT          an NBD export over TCP (libnbd)
 *   nbd+unix:///EXPORT?socket=PATH    an NBD export over a Unix socket (libnbd)
 * and vo_block_slice() makes a window of another source (a partition).
 *
 * All calls are thread-safe and positional (pread/pwrite style). Reads that reach the end of
 * the device are short; a write that starts at or past the end fails with -ENOSPC and one that
 * straddles it writes what fits, as a kernel block device does. Errors are negative errno. */
#ifndef VIEWOS_BLOCK_H
#define VIEWOS_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct vo_block;

enum {
	VO_BLOCK_RDONLY = 1 << 0, /* open for reading only */
	VO_BLOCK_LOCK = 1 << 1,   /* take an advisory lock (exclusive for rw, shared for ro) so
	                             two daemons never write one image at once */
};

/* Open SPEC. On failure returns NULL and writes "SPEC: why" into err. */
struct vo_block *vo_block_open(const char *spec, unsigned flags, char *err, size_t errlen);

/* A window [offset, offset+length) of parent; holds a reference to parent. Fails (NULL, err)
 * when the window does not lie within parent. */
struct vo_block *vo_block_slice(struct vo_block *parent, uint64_t offset, uint64_t length,
				char *err, size_t errlen);

ssize_t vo_block_pread(struct vo_block *b, void *buf, size_t len, uint64_t off);
ssize_t vo_block_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off);
int vo_block_flush(struct vo_block *b);                     /* durable before it returns */
int vo_block_trim(struct vo_block *b, uint64_t off, uint64_t len);  /* advisory discard */
int vo_block_zero(struct vo_block *b, uint64_t off, uint64_t len);  /* reads back as zeros */

uint64_t vo_block_size(const struct vo_block *b);
bool vo_block_readonly(const struct vo_block *b);
const char *vo_block_name(const struct vo_block *b);
/* The fd behind a file or memory source (for sharing or copy_file_range), or -1; for a slice,
 * the parent's fd, with the slice's offset in *offset. */
int vo_block_fd(const struct vo_block *b, uint64_t *offset);

void vo_block_close(struct vo_block *b); /* drops a reference; the last one flushes nothing:
                                            call vo_block_flush first when it matters */

/* --- for backends (block_*.c) --- */
struct vo_block_ops {
	ssize_t (*pread)(struct vo_block *b, void *buf, size_t len, uint64_t off);
	ssize_t (*pwrite)(struct vo_block *b, const void *buf, size_t len, uint64_t off);
	int (*flush)(struct vo_block *b);
	int (*trim)(struct vo_block *b, uint64_t off, uint64_t len);
	int (*zero)(struct vo_block *b, uint64_t off, uint64_t len);
	void (*close)(struct vo_block *b);
};

struct vo_block {
	const struct vo_block_ops *ops;
	uint64_t size;
	bool readonly;
	int refs;               /* atomic */
	char *name;
	int fd;                 /* file and memory backends, else -1 */
	uint64_t offset;        /* slices: start within parent */
	struct vo_block *parent;/* slices */
	void *priv;             /* backend state */
};

struct vo_block *vo_block_new(const struct vo_block_ops *ops, const char *name);
int vo_block_zero_by_writing(struct vo_block *b, uint64_t off, uint64_t len);

struct vo_block *vo_block_open_file(const char *path, unsigned flags, char *err, size_t errlen);
struct vo_block *vo_block_open_mem(const char *spec, unsigned flags, char *err, size_t errlen);
struct vo_block *vo_block_open_nbd(const char *uri, unsigned flags, char *err, size_t errlen);

#endif
