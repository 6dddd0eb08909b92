/* Unit tests of fsmods/fat/fat_bpb.c: the FAT type comes from the cluster count (never the label
 * string), the geometry is what the BPB fields imply, and every bad field is refused. */
#include "check.h"
#include "fat_bpb.h"
#include "fat_endian.h"

#include <string.h>

struct bpb_fields {
	unsigned bps, spc, reserved, nfats, root_entries, media;
	unsigned long long total;
	unsigned fatsz;
	bool fat32;
	unsigned root_cluster, fsinfo;
};

/* A boot sector with the given fields, as mkfs.vfat lays them out. */
static void make_boot(uint8_t *b, const struct bpb_fields *f)
{
	memset(b, 0, 4096);
	b[0] = 0xEB, b[1] = 0x3C, b[2] = 0x90;
	memcpy(b + 3, "mkfs.fat", 8);
	put_le16(b + 11, (uint16_t)f->bps);
	b[13] = (uint8_t)f->spc;
	put_le16(b + 14, (uint16_t)f->reserved);
	b[16] = (uint8_t)f->nfats;
	put_le16(b + 17, (uint16_t)f->root_entries);
	if (f->total < 65536 && !f->fat32)
		put_le16(b + 19, (uint16_t)f->total);
	else
		put_le32(b + 32, (uint32_t)f->total);
	b[21] = (uint8_t)f->media;
	if (f->fat32) {
		put_le32(b + 36, f->fatsz);
		put_le32(b + 44, f->root_cluster);
		put_le16(b + 48, (uint16_t)f->fsinfo);
		put_le16(b + 50, 6);
		b[66] = 0x29;
		memcpy(b + 71, "MYLABEL    ", 11);
		memcpy(b + 82, "FAT32   ", 8);
	} else {
		put_le16(b + 22, (uint16_t)f->fatsz);
		b[38] = 0x29;
		put_le32(b + 39, 0x12345678);
		memcpy(b + 43, "FLOPPY     ", 11);
		memcpy(b + 54, "FAT12   ", 8);
	}
	b[510] = 0x55, b[511] = 0xAA;
}

static const struct bpb_fields floppy = { 512, 1, 1, 2, 224, 0xF0, 2880, 9, false, 0, 0 };

static void test_floppy_geometry(void)
{
	uint8_t b[4096];
	struct fat_geometry g;
	char why[128];
	make_boot(b, &floppy);
	CHECK_EQ(fat_bpb_parse(b, 512, 1474560, &g, why, sizeof why), 0);
	CHECK_EQ(g.type, FAT12);
	CHECK_EQ(g.cluster_count, 2880 - 1 - 18 - 14);
	CHECK_EQ(g.cluster_size, 512);
	CHECK_EQ(g.fat_offset, 512);
	CHECK_EQ(g.fat_size, 9 * 512);
	CHECK_EQ(g.root_offset, 19 * 512);
	CHECK_EQ(g.root_entries, 224);
	CHECK_EQ(g.data_offset, 33 * 512);
	CHECK_EQ(g.state_offset, 37);
	CHECK_EQ(g.volume_id, 0x12345678);
	CHECK_STR(g.label, "FLOPPY");
	CHECK(g.mirrored);
}

/* A FAT12/16 layout with exactly `clusters` data clusters (spc 1, 1 reserved, 2 FATs). */
static void layout_with_clusters(uint8_t *b, unsigned clusters, unsigned fatsz)
{
	struct bpb_fields f = { 512, 1, 1, 2, 512, 0xF8, 0, fatsz, false, 0, 0 };
	f.total = 1 + 2ull * fatsz + 32 + clusters;
	make_boot(b, &f);
}

static void test_type_by_cluster_count_not_label(void)
{
	uint8_t b[4096];
	struct fat_geometry g;
	char why[128];
	layout_with_clusters(b, 4084, 12);
	memcpy(b + 54, "FAT16   ", 8); /* the label lies */
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), 0);
	CHECK_EQ(g.type, FAT12);
	CHECK_EQ(g.cluster_count, 4084);
	layout_with_clusters(b, 4085, 17);
	memcpy(b + 54, "FAT12   ", 8);
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), 0);
	CHECK_EQ(g.type, FAT16);
	layout_with_clusters(b, 65524, 256);
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), 0);
	CHECK_EQ(g.type, FAT16);
	/* 65525 clusters are FAT32 by count: a FAT16-style BPB is refused, not misread */
	layout_with_clusters(b, 65525, 256);
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), -1);
	CHECK(strstr(why, "FAT32") != NULL);
}

static void test_fat32_geometry(void)
{
	uint8_t b[4096];
	struct fat_geometry g;
	char why[128];
	/* mkfs.vfat -F 32 of 64 MiB: 512-byte sectors, 1 per cluster, 32 reserved, FAT of 1009 */
	struct bpb_fields f = { 512, 1, 32, 2, 0, 0xF8, 131072, 1009, true, 2, 1 };
	make_boot(b, &f);
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), 0);
	CHECK_EQ(g.type, FAT32);
	CHECK_EQ(g.cluster_count, 131072 - 32 - 2 * 1009);
	CHECK_EQ(g.root_cluster, 2);
	CHECK_EQ(g.fsinfo_sector, 1);
	CHECK_EQ(g.state_offset, 65);
	CHECK_STR(g.label, "MYLABEL");
	CHECK_EQ(fat_cluster_offset(&g, 2), (32 + 2 * 1009) * 512);
	/* mkfs.vfat -F 32 -s 8 of 64 MiB: 16348 clusters, below the FAT32 minimum, but the
	 * layout says FAT32 (as Linux and dosfstools read it) */
	struct bpb_fields small = { 512, 8, 32, 2, 0, 0xF8, 131072, 128, true, 2, 1 };
	make_boot(b, &small);
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), 0);
	CHECK_EQ(g.type, FAT32);
	CHECK(g.cluster_count < 65525);
	make_boot(b, &f);
	/* mirroring switched off: only the active FAT counts */
	put_le16(b + 40, 0x81);
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), 0);
	CHECK(!g.mirrored);
	CHECK_EQ(g.active_fat, 1);
	put_le16(b + 40, 0x85);
	CHECK_EQ(fat_bpb_parse(b, 512, 64 << 20, &g, why, sizeof why), -1);
}

static void expect_refused(const uint8_t *b, uint64_t devsize, const char *word)
{
	struct fat_geometry g;
	char why[128] = "";
	CHECK_EQ(fat_bpb_parse(b, 4096, devsize, &g, why, sizeof why), -1);
	if (!strstr(why, word))
		fprintf(stderr, "  reason '%s' lacks '%s'\n", why, word);
	CHECK(strstr(why, word) != NULL);
}

static void test_bad_fields_are_refused(void)
{
	uint8_t b[4096];
	make_boot(b, &floppy);
	put_le16(b + 11, 1000);
	expect_refused(b, 1474560, "bytes per sector");
	make_boot(b, &floppy);
	put_le16(b + 11, 256);
	expect_refused(b, 1474560, "bytes per sector");
	make_boot(b, &floppy);
	b[13] = 3;
	expect_refused(b, 1474560, "sectors per cluster");
	make_boot(b, &floppy);
	b[13] = 0;
	expect_refused(b, 1474560, "sectors per cluster");
	make_boot(b, &floppy);
	put_le16(b + 14, 0);
	expect_refused(b, 1474560, "reserved");
	make_boot(b, &floppy);
	b[16] = 0;
	expect_refused(b, 1474560, "copies");
	make_boot(b, &floppy);
	b[21] = 0x12;
	expect_refused(b, 1474560, "media");
	make_boot(b, &floppy);
	put_le16(b + 19, 0);
	expect_refused(b, 1474560, "total");
	make_boot(b, &floppy);
	put_le16(b + 22, 1); /* one sector cannot map 2847 clusters */
	expect_refused(b, 1474560, "cannot map");
	make_boot(b, &floppy);
	put_le16(b + 17, 0);
	expect_refused(b, 1474560, "root directory");
	make_boot(b, &floppy);
	expect_refused(b, 1474560 / 2, "smaller than the file system");
	make_boot(b, &floppy);
	put_le16(b + 22, 2000); /* the FATs would fill the volume */
	expect_refused(b, 1474560, "fill");
	make_boot(b, &floppy);
	b[0] = 0, b[510] = 0;
	expect_refused(b, 1474560, "signature");

	struct bpb_fields f = { 512, 1, 32, 2, 0, 0xF8, 131072, 1009, true, 2, 1 };
	make_boot(b, &f);
	put_le16(b + 17, 512);
	expect_refused(b, 64 << 20, "fixed root");
	make_boot(b, &f);
	put_le32(b + 44, 200000);
	expect_refused(b, 64 << 20, "root cluster");
	make_boot(b, &f);
	put_le32(b + 44, 1);
	expect_refused(b, 64 << 20, "root cluster");
	make_boot(b, &f);
	put_le16(b + 42, 1);
	expect_refused(b, 64 << 20, "version");
	/* a sector size beyond what was read */
	make_boot(b, &floppy);
	put_le16(b + 11, 4096);
	struct fat_geometry g;
	char why[128];
	CHECK_EQ(fat_bpb_parse(b, 512, 1474560, &g, why, sizeof why), -1);
	CHECK_EQ(fat_bpb_parse(b, 100, 1474560, &g, why, sizeof why), -1);
}

static void test_fsinfo(void)
{
	uint8_t s[512] = { 0 };
	struct fat_fsinfo fi;
	CHECK_EQ(fat_fsinfo_parse(s, sizeof s, &fi), -1);
	CHECK_EQ(fi.free_count, FSINFO_UNKNOWN);
	fi.free_count = 1234;
	fi.next_free = 77;
	fat_fsinfo_update(s, &fi);
	CHECK_EQ(le32(s), 0x41615252);
	CHECK_EQ(le32(s + 484), 0x61417272);
	CHECK_EQ(le32(s + 508), 0xAA550000);
	struct fat_fsinfo back;
	CHECK_EQ(fat_fsinfo_parse(s, sizeof s, &back), 0);
	CHECK_EQ(back.free_count, 1234);
	CHECK_EQ(back.next_free, 77);
	s[484] ^= 1;
	CHECK_EQ(fat_fsinfo_parse(s, sizeof s, &back), -1);
}

int main(void)
{
	RUN(test_floppy_geometry);
	RUN(test_type_by_cluster_count_not_label);
	RUN(test_fat32_geometry);
	RUN(test_bad_fields_are_refused);
	RUN(test_fsinfo);
	return CHECK_DONE();
}
