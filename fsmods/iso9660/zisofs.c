/* See zisofs.h. Layout facts from libisofs' doc/zisofs_format.txt and zisofs2_format.txt:
 *   version 1: magic 37 E4 53 96 C9 DB D6 07, size (LE32), header size / 4, log2(block size),
 *              2 reserved bytes; then nblocks + 1 pointers of 4 bytes (LE);
 *   version 2: magic EF 22 55 A1 BC 1B 95 A0, header version, header size / 4, algorithm id,
 *              log2(block size), size (LE64), 4 padding bytes; then nblocks + 1 pointers of 8.
 * Pointers are offsets from the start of the file's stored data; equal neighbours mean a block
 * of zeros. Every pointer is checked before use, so a forged table gives EIO, not a wild read. */
#include "zisofs.h"

#include "ondisk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const uint8_t magic_v1[8] = { 0x37, 0xe4, 0x53, 0x96, 0xc9, 0xdb, 0xd6, 0x07 };
static const uint8_t magic_v2[8] = { 0xef, 0x22, 0x55, 0xa1, 0xbc, 0x1b, 0x95, 0xa0 };

static uint64_t stored_length(const struct iso_node *n)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < n->nextents; i++)
		total += n->extents[i].length;
	return total;
}

void iso_zisofs_attach(struct iso_image *img, struct iso_node *n, const struct rr_info *rr)
{
	bool zlib_v1 = rr->zf_version == 1 && rr->zf_alg[0] == 'p' && rr->zf_alg[1] == 'z';
	bool zlib_v2 = rr->zf_version == 2 && rr->zf_alg[0] == 'P' && rr->zf_alg[1] == 'Z';
	n->size = rr->zf_size;
	if (!(zlib_v1 || zlib_v2) || rr->zf_log2_block < 15 || rr->zf_log2_block > 17 ||
	    rr->zf_header_words != (zlib_v1 ? 4 : 6)) {
		/* st_size still says what the file holds; reading it is what we cannot do */
		n->data_error = EIO;
		return;
	}
	struct iso_zisofs *z = iso_arena_alloc(img, sizeof *z);
	if (!z) {
		n->data_error = ENOMEM;
		return;
	}
	z->version = zlib_v1 ? 1 : 2;
	z->log2_block = rr->zf_log2_block;
	z->header_words = rr->zf_header_words;
	z->size = rr->zf_size;
	uint64_t bs = 1ull << z->log2_block;
	z->nblocks = z->size / bs + (z->size % bs != 0);
	n->zisofs = z;
}

/* Read and check the header and the pointer table; returns 0 or -errno. img->lock held. */
static int load_table(struct iso_image *img, struct iso_node *n, struct iso_zisofs *z)
{
	uint8_t hdr[24];
	size_t hdr_len = z->header_words * 4u, psize = z->version == 1 ? 4 : 8;
	uint64_t stored = stored_length(n);
	if (stored < hdr_len || (stored - hdr_len) / psize < z->nblocks + 1)
		return -EIO; /* the table cannot even fit in the file */
	int r = iso_read_stored(img, n, hdr, hdr_len, 0);
	if (r < 0)
		return r;
	if (z->version == 1) {
		if (memcmp(hdr, magic_v1, 8) != 0 || iso_le32(hdr + 8) != z->size ||
		    hdr[12] != z->header_words || hdr[13] != z->log2_block)
			return -EIO;
	} else {
		if (memcmp(hdr, magic_v2, 8) != 0 || hdr[9] != z->header_words || hdr[10] != 1 ||
		    hdr[11] != z->log2_block || iso_le64(hdr + 12) != z->size)
			return -EIO;
	}
	size_t table_len = (size_t)(z->nblocks + 1) * psize;
	uint8_t *raw = malloc(table_len);
	uint64_t *ptrs = iso_arena_alloc(img, (size_t)(z->nblocks + 1) * sizeof *ptrs);
	if (!raw || !ptrs) {
		free(raw);
		return -ENOMEM;
	}
	r = iso_read_stored(img, n, raw, table_len, hdr_len);
	if (r == 0) {
		uint64_t bs = 1ull << z->log2_block;
		/* zlib's worst case for incompressible input is a few bytes per 16 KiB; allow a
		   generous margin but nothing a forged pointer could turn into a huge read */
		uint64_t max_block = bs + bs / 8 + 1024;
		for (uint64_t i = 0; i <= z->nblocks; i++) {
			ptrs[i] = psize == 4 ? iso_le32(raw + i * 4) : iso_le64(raw + i * 8);
			if (ptrs[i] > stored || (i == 0 && ptrs[0] < hdr_len + table_len) ||
			    (i > 0 && (ptrs[i] < ptrs[i - 1] || ptrs[i] - ptrs[i - 1] > max_block))) {
				r = -EIO;
				break;
			}
		}
	}
	free(raw);
	if (r == 0)
		z->ptrs = ptrs;
	return r;
}

static int get_table(struct iso_image *img, struct iso_node *n, struct iso_zisofs *z)
{
	int st = atomic_load_explicit(&z->state, memory_order_acquire);
	if (st != 0)
		return st < 0 ? st : 0;
	pthread_mutex_lock(&img->lock);
	st = atomic_load_explicit(&z->state, memory_order_relaxed);
	if (st == 0) {
		int r = load_table(img, n, z);
		st = r < 0 ? r : 1;
		if (r < 0)
			iso_warn(img, "zisofs file at byte %llu: bad header or block pointers",
				 (unsigned long long)n->ino);
		atomic_store_explicit(&z->state, st, memory_order_release);
	}
	pthread_mutex_unlock(&img->lock);
	return st < 0 ? st : 0;
}

/* Inflate block b into out (exactly its inflated length, which the caller computed). */
static int inflate_block(struct iso_image *img, struct iso_node *n, struct iso_zisofs *z,
			 uint64_t b, uint8_t *out, size_t out_len)
{
	uint64_t start = z->ptrs[b], clen = z->ptrs[b + 1] - start;
	if (clen == 0) {
		memset(out, 0, out_len);
		return 0;
	}
	uint8_t *in = malloc((size_t)clen);
	if (!in)
		return -ENOMEM;
	int r = iso_read_stored(img, n, in, (size_t)clen, start);
	if (r == 0) {
		uLongf got = out_len;
		int zr = uncompress(out, &got, in, (uLong)clen);
		if (zr != Z_OK || got != out_len)
			r = -EIO;
	}
	free(in);
	return r;
}

ssize_t iso_zisofs_read(struct iso_image *img, struct iso_node *n, void *buf, size_t len,
			uint64_t off)
{
	struct iso_zisofs *z = n->zisofs;
	if (off >= z->size || len == 0)
		return 0;
	if (len > z->size - off)
		len = (size_t)(z->size - off);
	int r = get_table(img, n, z);
	if (r < 0)
		return r;
	const uint64_t bs = 1ull << z->log2_block;
	uint8_t *dst = buf, *tmp = NULL;
	size_t done = 0;
	while (done < len) {
		uint64_t pos = off + done, b = pos / bs, in_block = pos % bs;
		size_t block_len = (size_t)(z->size - b * bs < bs ? z->size - b * bs : bs);
		size_t want = block_len - (size_t)in_block;
		if (want > len - done)
			want = len - done;
		if (in_block == 0 && want == block_len) {
			/* the whole block is wanted: inflate straight into the reply */
			r = inflate_block(img, n, z, b, dst + done, block_len);
		} else {
			if (!tmp && !(tmp = malloc((size_t)bs))) {
				r = -ENOMEM;
				break;
			}
			r = inflate_block(img, n, z, b, tmp, block_len);
			if (r == 0)
				memcpy(dst + done, tmp + in_block, want);
		}
		if (r < 0)
			break;
		done += want;
	}
	free(tmp);
	/* All or nothing: FUSE takes a short read for the end of the file. */
	return r < 0 ? r : (ssize_t)done;
}
