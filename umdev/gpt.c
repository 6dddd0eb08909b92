/* GPT partition tables (UEFI specification, chapter 5): a header at LBA 1 and a backup at the
 * end of the disk, each with a CRC32 of itself and of its entry array. Checked as the
 * specification asks and as Linux does (block/partitions/efi.c is the behaviour we match):
 *   - the primary is used when valid; a missing, damaged or different backup is reported;
 *   - a damaged primary with a valid backup: the backup is used, and reported;
 *   - neither valid: reported, no partitions, the whole disk stays usable.
 * Entry i (1-based) is partition i; all-zero type GUIDs are empty slots. The CRC is zlib's
 * crc32(), the same IEEE 802.3 polynomial the specification names. */
#include "partition.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define GPT_HEADER_MIN 92u
#define GPT_ENTRY_MIN 128u
#define GPT_ENTRY_MAX 4096u
#define GPT_ENTRIES_MAX_BYTES (1u << 20) /* 8192 entries of 128 bytes: far beyond any tool */

struct gpt_header {
	uint64_t my_lba, alternate_lba, first_usable, last_usable, entries_lba;
	uint32_t entries, entry_size, entries_crc;
	uint8_t disk_guid[16];
	uint8_t *array; /* entries * entry_size bytes, checked against entries_crc */
};

/* Read and check the header at lba: 0 when valid, 1 when not (why says what is wrong), -errno
 * when reading failed. */
static int read_header(umdev_read_fn read, void *ctx, uint64_t disk_sectors, uint64_t lba,
		       struct gpt_header *h, const char **why)
{
	memset(h, 0, sizeof *h);
	uint8_t s[UMDEV_SECTOR];
	if (lba == 0 || lba >= disk_sectors) {
		*why = "it would lie outside the disk";
		return 1;
	}
	int r = umdev_read_exact(read, ctx, s, sizeof s, lba * UMDEV_SECTOR);
	if (r < 0) {
		*why = "it cannot be read";
		return r;
	}
	if (memcmp(s, "EFI PART", 8) != 0) {
		*why = "no \"EFI PART\" signature";
		return 1;
	}
	uint32_t header_size = umdev_le32(s + 12);
	if (header_size < GPT_HEADER_MIN || header_size > UMDEV_SECTOR) {
		*why = "impossible header size";
		return 1;
	}
	uint32_t stored_crc = umdev_le32(s + 16);
	memset(s + 16, 0, 4);
	if ((uint32_t)crc32(0, s, header_size) != stored_crc) {
		*why = "header checksum mismatch";
		return 1;
	}
	h->my_lba = umdev_le64(s + 24);
	h->alternate_lba = umdev_le64(s + 32);
	h->first_usable = umdev_le64(s + 40);
	h->last_usable = umdev_le64(s + 48);
	memcpy(h->disk_guid, s + 56, 16);
	h->entries_lba = umdev_le64(s + 72);
	h->entries = umdev_le32(s + 80);
	h->entry_size = umdev_le32(s + 84);
	h->entries_crc = umdev_le32(s + 88);
	if (h->my_lba != lba) {
		*why = "the header does not name its own location";
		return 1;
	}
	if (h->first_usable > h->last_usable || h->last_usable >= disk_sectors) {
		*why = "its usable area lies outside the disk";
		return 1;
	}
	if (h->entry_size < GPT_ENTRY_MIN || h->entry_size > GPT_ENTRY_MAX ||
	    (h->entry_size & (h->entry_size - 1)) != 0) {
		*why = "impossible entry size";
		return 1;
	}
	if (h->entries == 0 || (uint64_t)h->entries * h->entry_size > GPT_ENTRIES_MAX_BYTES) {
		*why = "impossible number of entries";
		return 1;
	}
	size_t bytes = (size_t)h->entries * h->entry_size;
	uint64_t array_sectors = (bytes + UMDEV_SECTOR - 1) / UMDEV_SECTOR;
	if (h->entries_lba < 2 || h->entries_lba >= disk_sectors ||
	    array_sectors > disk_sectors - h->entries_lba) {
		*why = "its entry array lies outside the disk";
		return 1;
	}
	h->array = malloc(bytes);
	if (!h->array) {
		*why = "out of memory";
		return 1;
	}
	r = umdev_read_exact(read, ctx, h->array, bytes, h->entries_lba * UMDEV_SECTOR);
	if (r < 0) {
		*why = "its entry array cannot be read";
		free(h->array);
		h->array = NULL;
		return r;
	}
	if ((uint32_t)crc32(0, h->array, (uInt)bytes) != h->entries_crc) {
		*why = "entry array checksum mismatch";
		free(h->array);
		h->array = NULL;
		return 1;
	}
	return 0;
}

static void add_areas(struct umdev_table *t, const struct gpt_header *h)
{
	umdev_table_add_area(t, h->my_lba * UMDEV_SECTOR, UMDEV_SECTOR);
	umdev_table_add_area(t, h->entries_lba * UMDEV_SECTOR,
			     (uint64_t)h->entries * h->entry_size);
}

static bool same_table(const struct gpt_header *a, const struct gpt_header *b)
{
	return a->first_usable == b->first_usable && a->last_usable == b->last_usable &&
	       a->entries == b->entries && a->entry_size == b->entry_size &&
	       a->entries_crc == b->entries_crc && memcmp(a->disk_guid, b->disk_guid, 16) == 0;
}

/* UTF-16LE (with surrogate pairs) to UTF-8; stops at NUL; invalid units become '?'. */
static void name_to_utf8(const uint8_t *utf16, size_t units, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < units; i++) {
		uint32_t c = umdev_le16(utf16 + 2 * i);
		if (c == 0)
			break;
		if (c >= 0xd800 && c < 0xdc00 && i + 1 < units) {
			uint32_t lo = umdev_le16(utf16 + 2 * (i + 1));
			if (lo >= 0xdc00 && lo < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				i++;
			} else {
				c = '?';
			}
		} else if (c >= 0xd800 && c < 0xe000) {
			c = '?';
		}
		uint8_t b[4];
		size_t n;
		if (c < 0x80) {
			b[0] = (uint8_t)c;
			n = 1;
		} else if (c < 0x800) {
			b[0] = (uint8_t)(0xc0 | c >> 6);
			b[1] = (uint8_t)(0x80 | (c & 0x3f));
			n = 2;
		} else if (c < 0x10000) {
			b[0] = (uint8_t)(0xe0 | c >> 12);
			b[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
			b[2] = (uint8_t)(0x80 | (c & 0x3f));
			n = 3;
		} else {
			b[0] = (uint8_t)(0xf0 | c >> 18);
			b[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3f));
			b[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
			b[3] = (uint8_t)(0x80 | (c & 0x3f));
			n = 4;
		}
		if (o + n >= outlen)
			break;
		memcpy(out + o, b, n);
		o += n;
	}
	out[o] = '\0';
}

static void add_entries(struct umdev_table *t, const struct gpt_header *h, uint64_t disk_sectors)
{
	static const uint8_t unused[16];
	for (uint32_t i = 0; i < h->entries; i++) {
		const uint8_t *e = h->array + (size_t)i * h->entry_size;
		if (memcmp(e, unused, 16) == 0)
			continue;
		unsigned number = i + 1;
		uint64_t first = umdev_le64(e + 32), last = umdev_le64(e + 40);
		if (first > last) {
			umdev_table_msg(t, UMDEV_MSG_WARNING, "GPT entry %u ends before it starts: "
					"ignored", number);
			continue;
		}
		/* last - first + 1 overflows only for the whole 64-bit range: saturate, and let
		 * the check below cut it at the end of the disk */
		uint64_t sectors = last - first + 1 ? last - first + 1 : UINT64_MAX;
		struct umdev_partition *p = umdev_table_add_checked(t, number, first, sectors,
								    disk_sectors);
		if (!p)
			continue;
		memcpy(p->type_guid, e, 16);
		p->attributes = umdev_le64(e + 48);
		name_to_utf8(e + 56, 36, p->name, sizeof p->name);
	}
}

int umdev_scan_gpt(umdev_read_fn read, void *ctx, uint64_t disk_size, struct umdev_table *t)
{
	uint64_t disk_sectors = disk_size / UMDEV_SECTOR;
	struct gpt_header primary, backup;
	const char *primary_why = NULL, *backup_why = NULL;
	int rp = read_header(read, ctx, disk_sectors, 1, &primary, &primary_why);
	uint64_t backup_lba = rp == 0 ? primary.alternate_lba : disk_sectors - 1;
	int rb = read_header(read, ctx, disk_sectors, backup_lba, &backup, &backup_why);

	const struct gpt_header *used = NULL;
	if (rp == 0) {
		used = &primary;
		add_areas(t, &primary);
		if (rb != 0)
			umdev_table_msg(t, UMDEV_MSG_WARNING, "the backup GPT header (LBA %llu) is "
					"missing or damaged: %s; the primary is used",
					(unsigned long long)backup_lba, backup_why);
		else if (!same_table(&primary, &backup))
			umdev_table_msg(t, UMDEV_MSG_WARNING, "the primary and backup GPT differ; "
					"the primary is used");
		if (primary.alternate_lba != disk_sectors - 1)
			umdev_table_msg(t, UMDEV_MSG_WARNING, "the backup GPT header is not at the "
					"end of the disk (LBA %llu, the disk ends at %llu): was the "
					"image resized?", (unsigned long long)primary.alternate_lba,
					(unsigned long long)(disk_sectors - 1));
	} else if (rb == 0) {
		used = &backup;
		umdev_table_msg(t, UMDEV_MSG_WARNING, "the primary GPT header is damaged: %s; the "
				"backup (LBA %llu) is used", primary_why,
				(unsigned long long)backup_lba);
	} else {
		umdev_table_msg(t, UMDEV_MSG_WARNING, "damaged GPT: the primary header (%s) and the "
				"backup (%s) are both unusable; only the whole disk is available",
				primary_why, backup_why);
	}
	if (rb == 0)
		add_areas(t, &backup);

	if (used) {
		t->scheme = UMDEV_SCHEME_GPT;
		add_entries(t, used, disk_sectors);
	} else {
		t->scheme = UMDEV_SCHEME_NONE;
	}
	free(primary.array);
	free(backup.array);
	/* An I/O error (not a damaged table) is the caller's business. */
	return rp < 0 ? rp : rb < 0 && rp != 0 ? rb : 0;
}
