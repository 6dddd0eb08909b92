/* Fuzz zisofs decoding on its own: the header, the block pointer table and the inflation of the
 * blocks a read touches, for zisofs (version 1) and zisofs2, with the file's stored data in one
 * extent or split in two (as a multi-extent file is). In whole images (fuzz_image) a mutation
 * rarely lands in a compressed file's table; here every one does.
 *
 * Input: the ZF entry's fields — flags (bit 0: zisofs2, bit 1: take the algorithm from the next
 * two bytes instead of "pz"/"PZ"), the two algorithm bytes, header size in words, log2 of the
 * block size, the inflated size (8 bytes, little-endian; 32 bits of it for version 1), where
 * to split the data into two extents (2 bytes) — then the file's stored data, which is also the
 * whole device. */
#include "fuzz_common.h"
#include "isofs.h"
#include "ondisk.h"
#include "susp.h"
#include "zisofs.h"

#include <stdint.h>

#define HEADER 16
#define READ_LEN 70000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HEADER)
		return 0;
	static struct rr_info rr;
	static uint8_t buf[READ_LEN];
	const uint8_t *stored = data + HEADER;
	uint64_t stored_len = size - HEADER;
	struct iso_image img = { .dev = fuzz_device(stored, stored_len), .dev_size = stored_len };
	pthread_mutex_init(&img.lock, NULL);

	rr.have = RR_ZF;
	rr.zf_version = (data[0] & 1) ? 2 : 1;
	bool v2 = rr.zf_version == 2;
	rr.zf_alg[0] = (data[0] & 2) ? (char)data[1] : v2 ? 'P' : 'p';
	rr.zf_alg[1] = (data[0] & 2) ? (char)data[2] : v2 ? 'Z' : 'z';
	rr.zf_header_words = data[3];
	rr.zf_log2_block = data[4];
	rr.zf_size = iso_le64(data + 5);
	if (!v2)
		rr.zf_size &= UINT32_MAX;
	uint64_t split = iso_le16(data + 13);

	struct iso_extent ext[2];
	struct iso_node n = { .mode = S_IFREG | 0444, .extents = ext };
	if (split && split < stored_len) {
		ext[0] = (struct iso_extent){ .start = 0, .length = split };
		ext[1] = (struct iso_extent){ .start = split, .length = stored_len - split };
		n.nextents = 2;
	} else {
		ext[0] = (struct iso_extent){ .start = 0, .length = stored_len };
		n.nextents = 1;
	}
	pthread_mutex_lock(&img.lock);
	iso_zisofs_attach(&img, &n, &rr);
	pthread_mutex_unlock(&img.lock);

	(void)iso_read(&img, &n, buf, sizeof buf, 0);
	if (n.size > 3 * 32768)
		(void)iso_read(&img, &n, buf, 40000, n.size / 2 - 20000);
	if (n.size > 1000)
		(void)iso_read(&img, &n, buf, 1000, n.size - 1000);
	iso_arena_free(&img);
	pthread_mutex_destroy(&img.lock);
	vo_block_close(img.dev);
	return 0;
}
