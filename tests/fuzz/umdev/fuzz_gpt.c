/* libFuzzer harness for the GPT parser past its checksums: the input is a disk whose sector 0
 * is made a protective MBR and whose primary and backup headers (LBA 1 and the last LBA) get
 * their entry-array and header CRC32s recomputed before the scan, so the fuzzer explores the
 * header fields, the entries and the primary/backup comparison rather than CRC32. Seeds:
 * make-seeds, from GPTs made by sfdisk. */
#include "fuzz_common.h"

#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_header(struct fuzz_disk *d, uint64_t lba)
{
	if ((lba + 1) * UMDEV_SECTOR > d->size)
		return;
	uint8_t *h = d->bytes + lba * UMDEV_SECTOR;
	uint64_t entries_lba = umdev_le64(h + 72);
	uint32_t n = umdev_le32(h + 80), esize = umdev_le32(h + 84);
	uint64_t bytes = (uint64_t)n * esize;
	if (entries_lba < d->size / UMDEV_SECTOR && bytes <= d->size - entries_lba * UMDEV_SECTOR)
		put32(h + 88, (uint32_t)crc32(0, d->bytes + entries_lba * UMDEV_SECTOR, (uInt)bytes));
	uint32_t hsize = umdev_le32(h + 12);
	if (hsize >= 92 && hsize <= UMDEV_SECTOR) {
		memset(h + 16, 0, 4);
		put32(h + 16, (uint32_t)crc32(0, h, hsize));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_disk d;
	if (fuzz_disk_from(&d, data, size) < 0)
		return 0;
	if (d.size >= UMDEV_SECTOR) {
		uint8_t *mbr = d.bytes;
		mbr[510] = 0x55;
		mbr[511] = 0xaa;
		mbr[0x1be] = 0;
		mbr[0x1be + 4] = 0xee;
		fix_header(&d, 1);
		fix_header(&d, d.size / UMDEV_SECTOR - 1);
	}
	fuzz_scan_and_check(&d);
	free(d.bytes);
	return 0;
}
