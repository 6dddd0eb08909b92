/* Fuzz the whole reader (as fuzz_image does) on images given sparsely: only the sectors that
 * hold something, each with its block number. An image of a real tree is mostly file data that
 * the reader never parses; here the input is just the metadata (volume descriptors, path
 * tables, directories, continuation areas, the first sectors of files), so every mutation
 * lands on something the reader decodes, block numbers included, and a small input can claim
 * a large device (extents and continuation areas far away, sessions at 32-block boundaries).
 *
 * Input: an option byte (as fuzz_image), the device size in blocks (4 bytes, little-endian, at
 * most 2^22), then any number of (block number: 4 bytes LE, 2048 bytes of sector). Sectors not
 * given read as zeros; a sector given twice reads as the last one. */
#include "block.h"
#include "isofs.h"
#include "ondisk.h"
#include "log.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SECTOR 2048u
#define CHUNK (4 + SECTOR)
#define MAX_BLOCKS (1u << 22)
#define MAX_DIRS 256
#define READ_LEN 70000

struct sparse {
	const uint8_t *chunks;
	size_t nchunks;
};

static ssize_t sparse_pread(struct vo_block *b, void *buf, size_t len, uint64_t off)
{
	const struct sparse *s = b->priv;
	memset(buf, 0, len);
	for (size_t i = 0; i < s->nchunks; i++) {
		const uint8_t *c = s->chunks + i * CHUNK;
		uint64_t start = (uint64_t)iso_le32(c) * SECTOR, end = start + SECTOR;
		if (end <= off || start >= off + len)
			continue;
		uint64_t from = start > off ? start : off, to = end < off + len ? end : off + len;
		memcpy((uint8_t *)buf + (from - off), c + 4 + (from - start), (size_t)(to - from));
	}
	return (ssize_t)len;
}

static ssize_t sparse_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off)
{
	(void)b, (void)buf, (void)len, (void)off;
	return -EROFS;
}

static int sparse_flush(struct vo_block *b)
{
	(void)b;
	return 0;
}

static void sparse_close(struct vo_block *b)
{
	free(b->priv);
}

static const struct vo_block_ops sparse_ops = {
	.pread = sparse_pread, .pwrite = sparse_pwrite, .flush = sparse_flush, .close = sparse_close,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 5)
		return 0;
	static bool quiet;
	if (!quiet) {
		vo_log_init("fuzz_sparse");
		quiet = true;
	}
	uint8_t how = data[0];
	uint32_t blocks = iso_le32(data + 1) % MAX_BLOCKS;
	struct sparse *s = malloc(sizeof *s);
	struct vo_block *dev = vo_block_new(&sparse_ops, "fuzz");
	if (!s || !dev)
		abort();
	s->chunks = data + 5;
	s->nchunks = (size - 5) / CHUNK;
	dev->priv = s;
	dev->size = (uint64_t)blocks * SECTOR;
	dev->readonly = true;

	struct iso_options opt = {
		.norock = how & 1, .nojoliet = how & 2, .map_off = how & 4,
		.check = (how & 8) ? 'r' : 0, .session = (how >> 4) & 3,
		.fmode = 0444, .dmode = 0555,
	};
	struct iso_image *img;
	char err[256];
	if (iso_image_open(dev, &opt, &img, err, sizeof err) < 0)
		return 0;
	static uint8_t buf[READ_LEN];
	struct iso_node *queue[MAX_DIRS];
	unsigned head = 0, tail = 0;
	queue[tail++] = img->root;
	while (head < tail) {
		struct iso_node *dir = queue[head++];
		const struct iso_dir *d;
		if (iso_dir_get(img, dir, &d) < 0)
			continue;
		for (uint32_t i = 0; i < d->count; i++) {
			struct iso_node *n = d->ents[i].node, *found;
			struct stat st;
			iso_stat(img, n, &st);
			(void)iso_lookup(img, dir, d->ents[i].name, &found);
			if (n->error)
				continue;
			if (S_ISDIR(n->mode) && tail < MAX_DIRS)
				queue[tail++] = n;
			if (S_ISREG(n->mode)) {
				(void)iso_read(img, n, buf, 4096, 0);
				if (n->size > 4096)
					(void)iso_read(img, n, buf, 4096, n->size - 4096);
				struct iso_piece p[4];
				(void)iso_map(img, n, n->size / 2, 100000, p, 4);
			}
		}
	}
	iso_image_close(img);
	return 0;
}
