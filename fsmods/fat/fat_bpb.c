/* See fat_bpb.h. The checks follow the Microsoft FAT specification (FAT type from the count of
 * clusters, never from the label string) and refuse what would make later arithmetic lie. */
#include "fat_bpb.h"

#include "fat_endian.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int refuse(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int refuse(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (why && whylen)
		vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -1;
}

static bool power_of_two(uint32_t v)
{
	return v && !(v & (v - 1));
}

int fat_bpb_parse(const uint8_t *b, size_t len, uint64_t device_size, struct fat_geometry *g,
		  char *why, size_t whylen)
{
	memset(g, 0, sizeof *g);
	if (len < 512 || device_size < 512)
		return refuse(why, whylen, "too small to hold a boot sector");
	/* A jump instruction or the 0x55AA signature: a cheap first filter against random data
	 * (DOS 1.x floppies without the signature still start with a jump). */
	bool jump = b[0] == 0xEB || b[0] == 0xE9;
	bool signature = b[510] == 0x55 && b[511] == 0xAA;
	if (!jump && !signature)
		return refuse(why, whylen, "no boot sector signature");

	uint32_t bps = le16(b + 11);
	uint32_t spc = b[13];
	uint32_t reserved = le16(b + 14);
	uint32_t nfats = b[16];
	uint32_t root_entries = le16(b + 17);
	uint64_t total = le16(b + 19);
	uint8_t media = b[21];
	uint32_t fatsz = le16(b + 22);
	if (total == 0)
		total = le32(b + 32);
	bool fat32_layout = fatsz == 0;
	if (fat32_layout)
		fatsz = le32(b + 36);

	if (!power_of_two(bps) || bps < 512 || bps > 4096)
		return refuse(why, whylen, "bytes per sector is %u", bps);
	if (bps > len)
		return refuse(why, whylen, "sector size %u exceeds what was read", bps);
	if (!power_of_two(spc) || spc > 128)
		return refuse(why, whylen, "sectors per cluster is %u", spc);
	if ((uint64_t)bps * spc > 65536)
		return refuse(why, whylen, "clusters of %u bytes are too large",
			      (unsigned)((uint64_t)bps * spc));
	if (reserved == 0)
		return refuse(why, whylen, "no reserved sectors");
	if (nfats == 0 || nfats > 4)
		return refuse(why, whylen, "%u copies of the FAT", nfats);
	if (media != 0xF0 && media < 0xF8)
		return refuse(why, whylen, "media byte 0x%02X", media);
	if (fatsz == 0)
		return refuse(why, whylen, "FAT size is 0");
	if (total == 0)
		return refuse(why, whylen, "total sector count is 0");

	uint64_t root_sectors = ((uint64_t)root_entries * 32 + bps - 1) / bps;
	uint64_t meta = reserved + (uint64_t)nfats * fatsz + root_sectors;
	if (meta >= total)
		return refuse(why, whylen, "the FATs and root directory fill the whole volume");
	uint64_t clusters = (total - meta) / spc;
	if (clusters == 0)
		return refuse(why, whylen, "no data clusters");

	/* The count decides, as the specification says, never the label string. One exception,
	 * shared with Linux and dosfstools: a BPB in the FAT32 layout (no 16-bit FAT size) is
	 * FAT32 even below 65525 clusters, since mkfs.vfat -F 32 makes such small volumes. */
	enum fat_type type = fat32_layout ? FAT32 : clusters < 4085 ? FAT12 : FAT16;
	if (type == FAT32) {
		if (root_entries != 0)
			return refuse(why, whylen, "FAT32 with a fixed root directory");
		if (clusters > FAT32_MAX_CLUSTERS)
			return refuse(why, whylen, "%llu clusters are too many for FAT32",
				      (unsigned long long)clusters);
		if (le16(b + 42) != 0)
			return refuse(why, whylen, "unknown FAT32 version %u.%u", b[43], b[42]);
	} else {
		if (clusters >= 65525)
			return refuse(why, whylen,
				      "%llu clusters need FAT32 but the BPB has a FAT12/16 layout",
				      (unsigned long long)clusters);
		if (root_entries == 0)
			return refuse(why, whylen, "no root directory entries");
	}

	uint64_t need = type == FAT12 ? ((clusters + 2) * 3 + 1) / 2
		      : (clusters + 2) * (type == FAT16 ? 2 : 4);
	if (need > (uint64_t)fatsz * bps)
		return refuse(why, whylen, "a FAT of %u sectors cannot map %llu clusters", fatsz,
			      (unsigned long long)clusters);
	if (total * bps > device_size)
		return refuse(why, whylen,
			      "the source (%llu bytes) is smaller than the file system (%llu bytes)",
			      (unsigned long long)device_size, (unsigned long long)(total * bps));

	g->type = type;
	g->sector_size = bps;
	g->cluster_size = bps * spc;
	g->reserved_sectors = reserved;
	g->nfats = nfats;
	g->fat_offset = (uint64_t)reserved * bps;
	g->fat_size = (uint64_t)fatsz * bps;
	g->fat_used = need;
	g->root_entries = root_entries;
	g->root_offset = g->fat_offset + (uint64_t)nfats * g->fat_size;
	g->data_offset = (meta) * bps;
	g->cluster_count = (uint32_t)clusters;
	g->total_bytes = total * bps;
	g->media = media;
	g->mirrored = true;
	g->active_fat = 0;

	const uint8_t *ext = b + (type == FAT32 ? 64 : 36); /* drive number, state, signature... */
	g->state_offset = (uint32_t)(ext - b) + 1;
	if (ext[2] == 0x29 || ext[2] == 0x28) {
		g->volume_id = le32(ext + 3);
		if (ext[2] == 0x29) {
			memcpy(g->label, ext + 7, 11);
			for (int i = 10; i >= 0 && (g->label[i] == ' ' || g->label[i] == 0); i--)
				g->label[i] = 0;
		}
	}

	if (type == FAT32) {
		uint16_t flags = le16(b + 40);
		if (flags & 0x80) {
			g->mirrored = false;
			g->active_fat = flags & 0x0F;
			if (g->active_fat >= nfats)
				return refuse(why, whylen, "active FAT %u of %u", g->active_fat, nfats);
		}
		g->root_cluster = le32(b + 44);
		if (g->root_cluster < 2 || g->root_cluster > g->cluster_count + 1)
			return refuse(why, whylen, "root cluster %u lies outside the volume",
				      g->root_cluster);
		uint32_t fsinfo = le16(b + 48);
		g->fsinfo_sector = fsinfo > 0 && fsinfo < reserved && fsinfo != 0xFFFF ? fsinfo : 0;
	}
	return 0;
}

int fat_fsinfo_parse(const uint8_t *s, size_t len, struct fat_fsinfo *fi)
{
	fi->free_count = fi->next_free = FSINFO_UNKNOWN;
	if (len < 512 || le32(s) != 0x41615252 || le32(s + 484) != 0x61417272 ||
	    le32(s + 508) != 0xAA550000)
		return -1;
	fi->free_count = le32(s + 488);
	fi->next_free = le32(s + 492);
	return 0;
}

void fat_fsinfo_update(uint8_t *s, const struct fat_fsinfo *fi)
{
	put_le32(s, 0x41615252);
	put_le32(s + 484, 0x61417272);
	put_le32(s + 488, fi->free_count);
	put_le32(s + 492, fi->next_free);
	put_le32(s + 508, 0xAA550000);
}
