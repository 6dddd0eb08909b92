/* Synthetic partition tables for the C unit tests and the fuzz harnesses' own checks: MBR
 * entries, EBR chains and GPT headers written byte by byte from the formats' specifications,
 * so each test states exactly the table it reads. (The pytest suite uses tables made by
 * sfdisk; these cover the damaged and odd ones no tool makes.) */
#ifndef UMDEV_TEST_SYNTH_H
#define UMDEV_TEST_SYNTH_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

struct synth_disk {
	uint8_t *bytes;
	uint64_t size;
};

static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline struct synth_disk synth_new(uint64_t sectors)
{
	struct synth_disk d = { calloc(sectors, 512), sectors * 512 };
	return d;
}

static inline ssize_t synth_read(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct synth_disk *d = ctx;
	if (off >= d->size)
		return 0;
	if (len > d->size - off)
		len = (size_t)(d->size - off);
	memcpy(buf, d->bytes + off, len);
	return (ssize_t)len;
}

/* Entry `slot` (0-3) of the MBR-style sector at `lba`. */
static inline void synth_mbr_entry(struct synth_disk *d, uint64_t lba, int slot, uint8_t type,
				   uint32_t start, uint32_t sectors)
{
	uint8_t *s = d->bytes + lba * 512;
	uint8_t *e = s + 0x1be + 16 * slot;
	e[0] = 0;
	e[4] = type;
	put32(e + 8, start);
	put32(e + 12, sectors);
	s[510] = 0x55;
	s[511] = 0xaa;
}

/* A GPT header at lba (entries at entries_lba, alternate at alt) over an entry array. */
static inline void synth_gpt_header(struct synth_disk *d, uint64_t lba, uint64_t alt,
				    uint64_t entries_lba, uint32_t entries, uint64_t first,
				    uint64_t last)
{
	uint8_t *h = d->bytes + lba * 512;
	memset(h, 0, 512);
	memcpy(h, "EFI PART", 8);
	put32(h + 8, 0x00010000);
	put32(h + 12, 92);
	put64(h + 24, lba);
	put64(h + 32, alt);
	put64(h + 40, first);
	put64(h + 48, last);
	memset(h + 56, 0x42, 16); /* disk GUID */
	put64(h + 72, entries_lba);
	put32(h + 80, entries);
	put32(h + 84, 128);
	uint8_t *array = d->bytes + entries_lba * 512;
	put32(h + 88, (uint32_t)crc32(0, array, entries * 128));
	put32(h + 16, (uint32_t)crc32(0, h, 92));
}

/* GPT entry i (0-based) in the array at entries_lba. */
static inline void synth_gpt_entry(struct synth_disk *d, uint64_t entries_lba, uint32_t i,
				   uint64_t first, uint64_t last, const char *name)
{
	uint8_t *e = d->bytes + entries_lba * 512 + (uint64_t)i * 128;
	memset(e, 0x11, 16);      /* type GUID: anything non-zero */
	memset(e + 16, (int)i + 1, 16); /* unique GUID */
	put64(e + 32, first);
	put64(e + 40, last);
	for (size_t k = 0; name && name[k] && k < 36; k++)
		put16(e + 56 + 2 * k, (uint16_t)(unsigned char)name[k]);
}

/* A complete GPT disk: protective MBR, primary and backup with the same 128 entries, the
 * partitions as (first, last) LBA pairs. */
static inline void synth_gpt(struct synth_disk *d, const uint64_t (*parts)[2], int n)
{
	uint64_t sectors = d->size / 512;
	synth_mbr_entry(d, 0, 0, 0xee, 1, (uint32_t)(sectors - 1));
	for (int i = 0; i < n; i++) {
		synth_gpt_entry(d, 2, (uint32_t)i, parts[i][0], parts[i][1], "part");
		synth_gpt_entry(d, sectors - 33, (uint32_t)i, parts[i][0], parts[i][1], "part");
	}
	synth_gpt_header(d, 1, sectors - 1, 2, 128, 34, sectors - 34);
	synth_gpt_header(d, sectors - 1, 1, sectors - 33, 128, 34, sectors - 34);
}

#endif
