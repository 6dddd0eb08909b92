/* Unit tests of the partition scanner (umdev/partition.h) on synthetic tables: the layouts
 * the tools make, and the damaged ones they do not (loops, bad checksums, hybrids). */
#include "check.h"
#include "partition.h"
#include "synth.h"

#include <stdio.h>

#define MIB_SECTORS 2048u

static struct umdev_table scan(struct synth_disk *d)
{
	struct umdev_table t;
	int r = umdev_scan(synth_read, d, d->size, &t);
	CHECK_EQ(r, 0);
	return t;
}

static bool has_msg(const struct umdev_table *t, const char *words)
{
	for (size_t i = 0; i < t->nmsgs; i++)
		if (strstr(t->msgs[i].text, words))
			return true;
	return false;
}

static void test_empty_disk_has_no_table(void)
{
	struct synth_disk d = synth_new(8 * MIB_SECTORS);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.scheme, UMDEV_SCHEME_NONE);
	CHECK_EQ(t.count, 0);
	CHECK(has_msg(&t, "0x55AA"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_four_primary_partitions(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	for (int i = 0; i < 4; i++)
		synth_mbr_entry(&d, 0, i, 0x83, 2048u + 4096u * (unsigned)i, 4096);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.scheme, UMDEV_SCHEME_MBR);
	CHECK_EQ(t.count, 4);
	for (unsigned i = 0; i < 4 && i < t.count; i++) {
		CHECK_EQ(t.parts[i].number, i + 1);
		CHECK_EQ(t.parts[i].start, (2048ull + 4096ull * i) * 512);
		CHECK_EQ(t.parts[i].length, 4096ull * 512);
		CHECK_EQ(t.parts[i].mbr_type, 0x83);
	}
	CHECK_EQ(t.nmsgs, 0);
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_empty_slots_stay_holes(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_mbr_entry(&d, 0, 0, 0x83, 2048, 2048);
	synth_mbr_entry(&d, 0, 2, 0x0c, 8192, 2048);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 2);
	CHECK(umdev_table_find(&t, 1) != NULL);
	CHECK(umdev_table_find(&t, 2) == NULL);
	CHECK(umdev_table_find(&t, 3) != NULL);
	umdev_table_clear(&t);
	free(d.bytes);
}

/* 3 primaries and an extended partition with 3 logicals, as fdisk lays them out: each EBR
 * one MiB before its logical partition, links relative to the extended partition. */
static void make_extended(struct synth_disk *d, uint8_t ext_type)
{
	synth_mbr_entry(d, 0, 0, 0x83, 2048, 2048);
	synth_mbr_entry(d, 0, 1, 0x83, 4096, 2048);
	synth_mbr_entry(d, 0, 2, 0x83, 6144, 2048);
	uint32_t ext = 8192;
	synth_mbr_entry(d, 0, 3, ext_type, ext, 12 * MIB_SECTORS);
	uint32_t ebr[3] = { ext, ext + 4096, ext + 8192 };
	for (int i = 0; i < 3; i++) {
		synth_mbr_entry(d, ebr[i], 0, 0x83, 2048, 1024u * (unsigned)(i + 1));
		if (i < 2)
			synth_mbr_entry(d, ebr[i], 1, 0x05, ebr[i + 1] - ext, 4096);
	}
}

static void test_logical_partitions_are_numbered_from_5(void)
{
	static const uint8_t types[] = { 0x05, 0x0f, 0x85 };
	for (size_t k = 0; k < sizeof types; k++) {
		struct synth_disk d = synth_new(32 * MIB_SECTORS);
		make_extended(&d, types[k]);
		struct umdev_table t = scan(&d);
		CHECK_EQ(t.scheme, UMDEV_SCHEME_MBR);
		CHECK_EQ(t.count, 7);
		const struct umdev_partition *ext = umdev_table_find(&t, 4);
		CHECK(ext && ext->extended && ext->length == 12ull * 1024 * 1024);
		for (unsigned n = 5; n <= 7; n++) {
			const struct umdev_partition *p = umdev_table_find(&t, n);
			CHECK(p != NULL);
			if (!p)
				continue;
			uint64_t ebr = 8192 + 4096 * (n - 5);
			CHECK_EQ(p->start, (ebr + 2048) * 512);
			CHECK_EQ(p->length, 1024ull * (n - 4) * 512);
			CHECK(p->logical);
			/* the EBR is a table area: a write there must trigger a re-read */
			CHECK(umdev_table_touches(&t, d.size, ebr * 512 + 446, 16));
			CHECK(!umdev_table_touches(&t, d.size, p->start, 4096));
		}
		CHECK(umdev_table_find(&t, 8) == NULL);
		CHECK_EQ(t.nmsgs, 0);
		umdev_table_clear(&t);
		free(d.bytes);
	}
}

static void test_ebr_loop_ends_with_a_warning(void)
{
	struct synth_disk d = synth_new(32 * MIB_SECTORS);
	make_extended(&d, 0x05);
	/* the third EBR links back to the first */
	synth_mbr_entry(&d, 8192 + 8192, 1, 0x05, 0, 4096);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 7); /* 1-3, the extended 4, logicals 5-7 once each */
	CHECK(has_msg(&t, "loops back"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_long_ebr_chain_is_bounded(void)
{
	/* 300 links, each EBR pointing at the next one sector further: the scanner stops */
	struct synth_disk d = synth_new(4 * MIB_SECTORS);
	synth_mbr_entry(&d, 0, 0, 0x05, 100, 3000);
	for (uint32_t i = 0; i < 300; i++)
		synth_mbr_entry(&d, 100 + i, 1, 0x05, i + 1, 1);
	struct umdev_table t = scan(&d);
	CHECK(has_msg(&t, "more than 256 links"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_boot_sector_is_not_a_partition_table(void)
{
	struct synth_disk d = synth_new(8 * MIB_SECTORS);
	synth_mbr_entry(&d, 0, 0, 0x83, 2048, 2048);
	d.bytes[0x1be + 16] = 0x21; /* a boot flag no MBR has: FAT boot code, say */
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.scheme, UMDEV_SCHEME_NONE);
	CHECK_EQ(t.count, 0);
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_partition_past_the_end_is_truncated_or_dropped(void)
{
	struct synth_disk d = synth_new(8 * MIB_SECTORS);
	synth_mbr_entry(&d, 0, 0, 0x83, 2048, 100000);   /* ends past the end */
	synth_mbr_entry(&d, 0, 1, 0x83, 1000000, 2048);  /* starts past the end */
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 1);
	const struct umdev_partition *p = umdev_table_find(&t, 1);
	CHECK(p && p->start + p->length == d.size);
	CHECK(has_msg(&t, "truncated"));
	CHECK(has_msg(&t, "starts past the end"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static const uint64_t ten[10][2] = {
	{ 2048, 4095 }, { 4096, 6143 }, { 6144, 8191 }, { 8192, 10239 }, { 10240, 12287 },
	{ 12288, 14335 }, { 14336, 16383 }, { 16384, 18431 }, { 18432, 20479 }, { 20480, 22527 },
};

static void test_gpt_ten_partitions(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 10);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.scheme, UMDEV_SCHEME_GPT);
	CHECK_EQ(t.count, 10);
	for (unsigned i = 0; i < 10 && i < t.count; i++) {
		CHECK_EQ(t.parts[i].number, i + 1);
		CHECK_EQ(t.parts[i].start, ten[i][0] * 512);
		CHECK_EQ(t.parts[i].length, (ten[i][1] - ten[i][0] + 1) * 512);
		CHECK_STR(t.parts[i].name, "part");
	}
	CHECK_EQ(t.nmsgs, 0);
	/* header, entries and backup are table areas */
	CHECK(umdev_table_touches(&t, d.size, 512, 1));
	CHECK(umdev_table_touches(&t, d.size, d.size - 512, 512));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_gpt_holes_keep_numbers(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 3);
	/* empty entry 2: partitions 1 and 3 remain */
	uint64_t sectors = d.size / 512;
	memset(d.bytes + 2 * 512 + 128, 0, 128);
	memset(d.bytes + (sectors - 33) * 512 + 128, 0, 128);
	synth_gpt_header(&d, 1, sectors - 1, 2, 128, 34, sectors - 34);
	synth_gpt_header(&d, sectors - 1, 1, sectors - 33, 128, 34, sectors - 34);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 2);
	CHECK(umdev_table_find(&t, 1) && umdev_table_find(&t, 3) && !umdev_table_find(&t, 2));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_gpt_damaged_primary_uses_backup(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 10);
	d.bytes[512 + 40] ^= 1; /* first usable LBA: the header CRC no longer matches */
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.scheme, UMDEV_SCHEME_GPT);
	CHECK_EQ(t.count, 10);
	CHECK(has_msg(&t, "primary GPT header is damaged: header checksum mismatch"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_gpt_damaged_entries_use_backup(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 10);
	d.bytes[2 * 512 + 40] ^= 1; /* an entry: the array CRC no longer matches */
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 10);
	CHECK(has_msg(&t, "entry array checksum mismatch"));
	const struct umdev_partition *p = umdev_table_find(&t, 1);
	CHECK(p && p->length == 2048 * 512); /* from the intact backup */
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_gpt_missing_backup_is_reported(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 10);
	memset(d.bytes + d.size - 512, 0, 512);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 10);
	CHECK(has_msg(&t, "backup GPT header"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_gpt_both_damaged_leaves_the_whole_disk(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 10);
	d.bytes[512] = 'X';
	d.bytes[d.size - 512] = 'X';
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.scheme, UMDEV_SCHEME_NONE);
	CHECK_EQ(t.count, 0);
	CHECK(has_msg(&t, "damaged GPT"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_hybrid_mbr_is_reported_and_gpt_used(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 2);
	synth_mbr_entry(&d, 0, 1, 0x0c, 2048, 2048);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.scheme, UMDEV_SCHEME_GPT);
	CHECK_EQ(t.count, 2);
	CHECK(has_msg(&t, "hybrid MBR"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_gpt_backup_not_at_end_after_resize(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 2);
	/* the image grew: same bytes, more sectors after them */
	uint8_t *bigger = calloc(32 * MIB_SECTORS, 512);
	memcpy(bigger, d.bytes, d.size);
	free(d.bytes);
	d.bytes = bigger;
	d.size = 32ull * MIB_SECTORS * 512;
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 2);
	CHECK(has_msg(&t, "not at the end of the disk"));
	umdev_table_clear(&t);
	free(d.bytes);
}

/* Found by fuzz_gpt: first 0, last 2^64-1 made last - first + 1 overflow to a 0-byte
 * partition. It must be cut at the end of the disk instead. */
static void test_gpt_entry_spanning_everything(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	static const uint64_t all[1][2] = { { 0, UINT64_MAX } };
	synth_gpt(&d, all, 1);
	struct umdev_table t = scan(&d);
	CHECK_EQ(t.count, 1);
	CHECK(t.count == 1 && t.parts[0].start == 0 && t.parts[0].length == d.size);
	CHECK(has_msg(&t, "truncated"));
	umdev_table_clear(&t);
	free(d.bytes);
}

static void test_tiny_disks(void)
{
	for (uint64_t size = 0; size <= 2048; size += 256) {
		struct synth_disk d = { calloc(1, size + 1), size };
		if (size >= 512) {
			d.bytes[510] = 0x55;
			d.bytes[511] = 0xaa;
			d.bytes[0x1be + 4] = 0xee;
		}
		struct umdev_table t;
		umdev_scan(synth_read, &d, d.size, &t);
		CHECK_EQ(t.count, 0);
		umdev_table_clear(&t);
		free(d.bytes);
	}
}

static void test_utf16_names(void)
{
	struct synth_disk d = synth_new(16 * MIB_SECTORS);
	synth_gpt(&d, ten, 1);
	uint64_t sectors = d.size / 512;
	uint8_t *name = d.bytes + 2 * 512 + 56;
	memset(name, 0, 72);
	put16(name, 0x00e9);     /* é */
	put16(name + 2, 0xd83d); /* U+1F600 as a surrogate pair */
	put16(name + 4, 0xde00);
	put16(name + 6, 'x');
	memcpy(d.bytes + (sectors - 33) * 512, d.bytes + 2 * 512, 128);
	synth_gpt_header(&d, 1, sectors - 1, 2, 128, 34, sectors - 34);
	synth_gpt_header(&d, sectors - 1, 1, sectors - 33, 128, 34, sectors - 34);
	struct umdev_table t = scan(&d);
	CHECK(t.count == 1 && strcmp(t.parts[0].name, "\xc3\xa9\xf0\x9f\x98\x80x") == 0);
	umdev_table_clear(&t);
	free(d.bytes);
}

int main(void)
{
	RUN(test_empty_disk_has_no_table);
	RUN(test_four_primary_partitions);
	RUN(test_empty_slots_stay_holes);
	RUN(test_logical_partitions_are_numbered_from_5);
	RUN(test_ebr_loop_ends_with_a_warning);
	RUN(test_long_ebr_chain_is_bounded);
	RUN(test_boot_sector_is_not_a_partition_table);
	RUN(test_partition_past_the_end_is_truncated_or_dropped);
	RUN(test_gpt_ten_partitions);
	RUN(test_gpt_holes_keep_numbers);
	RUN(test_gpt_damaged_primary_uses_backup);
	RUN(test_gpt_damaged_entries_use_backup);
	RUN(test_gpt_missing_backup_is_reported);
	RUN(test_gpt_both_damaged_leaves_the_whole_disk);
	RUN(test_hybrid_mbr_is_reported_and_gpt_used);
	RUN(test_gpt_backup_not_at_end_after_resize);
	RUN(test_gpt_entry_spanning_everything);
	RUN(test_tiny_disks);
	RUN(test_utf16_names);
	return CHECK_DONE();
}
