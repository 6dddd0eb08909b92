/* Unit tests of the device model (umdev/disk.h) on a mem: store: bounds of partition I/O, the
 * dirty flag after writes to the table areas, re-reads that add, move and remove partitions,
 * extents that go stale, the null device, names and sizes. */
#include "check.h"
#include "disk.h"
#include "synth.h"

#include <errno.h>
#include <stdio.h>

static struct umdev_disk *mem_disk(uint64_t size)
{
	char spec[64], err[256];
	snprintf(spec, sizeof spec, "mem:%llu", (unsigned long long)size);
	struct vo_block *b = vo_block_open(spec, 0, err, sizeof err);
	CHECK(b != NULL);
	return umdev_disk_new(b, 0, true);
}

/* Write an MBR sector through the whole-disk extent, as fdisk would. */
static void write_mbr(struct umdev_disk *d, const uint32_t (*parts)[2], int n)
{
	struct synth_disk s = synth_new(1);
	s.bytes[510] = 0x55;
	s.bytes[511] = 0xaa;
	for (int i = 0; i < n; i++)
		if (parts[i][1])
			synth_mbr_entry(&s, 0, i, 0x83, parts[i][0], parts[i][1]);
	struct umdev_extent *whole = umdev_disk_get(d, 0);
	CHECK_EQ(umdev_pwrite(d, whole, s.bytes, 512, 0), 512);
	umdev_extent_put(whole);
	free(s.bytes);
}

static int count_kind(const struct umdev_changes *ch, enum umdev_change_kind k)
{
	int n = 0;
	for (size_t i = 0; i < ch->count; i++)
		n += ch->items[i].kind == k;
	return n;
}

static void test_rescan_adds_moves_and_removes(void)
{
	struct umdev_disk *d = mem_disk(8u << 20);
	struct umdev_changes ch = { 0 };
	CHECK_EQ(umdev_disk_rescan(d, &ch), 0);
	CHECK_EQ(ch.count, 0);
	umdev_changes_clear(&ch);

	const uint32_t two[2][2] = { { 2048, 2048 }, { 4096, 2048 } };
	CHECK(!umdev_disk_table_dirty(d));
	write_mbr(d, two, 2);
	CHECK(umdev_disk_table_dirty(d));
	CHECK_EQ(umdev_disk_rescan(d, &ch), 0);
	CHECK(!umdev_disk_table_dirty(d));
	CHECK_EQ(count_kind(&ch, UMDEV_ADDED), 2);
	umdev_changes_clear(&ch);

	struct umdev_extent *p1 = umdev_disk_get(d, 1), *p2 = umdev_disk_get(d, 2);
	CHECK(p1 && p2);
	CHECK_EQ(p2->start, 4096u * 512);

	/* partition 2 grows, partition 1 stays: 1 keeps its extent, 2 gets a new one */
	const uint32_t moved[2][2] = { { 2048, 2048 }, { 4096, 4096 } };
	write_mbr(d, moved, 2);
	CHECK_EQ(umdev_disk_rescan(d, &ch), 0);
	CHECK_EQ(ch.count, 1);
	CHECK(ch.count == 1 && ch.items[0].kind == UMDEV_MOVED && ch.items[0].number == 2);
	umdev_changes_clear(&ch);
	CHECK(!umdev_extent_gone(p1));
	CHECK(umdev_extent_gone(p2));
	char buf[512];
	CHECK_EQ(umdev_pread(d, p2, buf, sizeof buf, 0), -EIO);
	CHECK_EQ(umdev_pwrite(d, p2, buf, sizeof buf, 0), -EIO);
	struct umdev_extent *p2new = umdev_disk_get(d, 2);
	CHECK(p2new && p2new->length == 4096u * 512);

	/* partition 1 removed */
	const uint32_t one[2][2] = { { 0, 0 }, { 4096, 4096 } };
	write_mbr(d, one, 2);
	CHECK_EQ(umdev_disk_rescan(d, &ch), 0);
	CHECK(ch.count == 1 && ch.items[0].kind == UMDEV_REMOVED && ch.items[0].number == 1);
	umdev_changes_clear(&ch);
	CHECK(umdev_extent_gone(p1));
	CHECK(umdev_disk_get(d, 1) == NULL);

	umdev_extent_put(p1);
	umdev_extent_put(p2);
	umdev_extent_put(p2new);
	umdev_disk_free(d);
}

static void test_partition_bounds(void)
{
	struct umdev_disk *d = mem_disk(8u << 20);
	const uint32_t two[2][2] = { { 2048, 2048 }, { 4096, 2048 } };
	write_mbr(d, two, 2);
	umdev_disk_rescan(d, NULL);
	struct umdev_extent *p1 = umdev_disk_get(d, 1), *whole = umdev_disk_get(d, 0);
	uint64_t len = 2048u * 512;

	/* the last byte lands at the right disk offset */
	CHECK_EQ(umdev_pwrite(d, p1, "Z", 1, len - 1), 1);
	char c = 0;
	CHECK_EQ(umdev_pread(d, whole, &c, 1, 2048u * 512 + len - 1), 1);
	CHECK_EQ(c, 'Z');
	/* past the end: ENOSPC, and the next partition's first byte is untouched */
	CHECK_EQ(umdev_pwrite(d, p1, "Y", 1, len), -ENOSPC);
	CHECK_EQ(umdev_pread(d, whole, &c, 1, 4096u * 512), 1);
	CHECK_EQ(c, 0);
	/* straddling the end: only what fits */
	CHECK_EQ(umdev_pwrite(d, p1, "ABCD", 4, len - 2), 2);
	CHECK_EQ(umdev_pread(d, whole, &c, 1, 4096u * 512), 1);
	CHECK_EQ(c, 0);
	/* reads past the end: 0 bytes; straddling: clipped */
	char buf[8];
	CHECK_EQ(umdev_pread(d, p1, buf, sizeof buf, len), 0);
	CHECK_EQ(umdev_pread(d, p1, buf, sizeof buf, len - 3), 3);
	/* writes inside a partition do not touch the table */
	CHECK(!umdev_disk_table_dirty(d));
	/* trim and zero are clipped too */
	CHECK_EQ(umdev_zero(d, p1, 0, len * 4), 0);
	CHECK_EQ(umdev_pread(d, whole, &c, 1, 4096u * 512 - 1), 1);
	CHECK_EQ(c, 0);
	umdev_extent_put(p1);
	umdev_extent_put(whole);
	umdev_disk_free(d);
}

static void test_writes_to_table_areas_mark_dirty(void)
{
	struct umdev_disk *d = mem_disk(8u << 20);
	umdev_disk_rescan(d, NULL);
	struct umdev_extent *whole = umdev_disk_get(d, 0);
	char z[512] = { 0 };
	CHECK_EQ(umdev_pwrite(d, whole, z, 512, 1u << 20), 512);
	CHECK(!umdev_disk_table_dirty(d));
	CHECK_EQ(umdev_pwrite(d, whole, z, 512, (8u << 20) - 512), 512); /* backup GPT */
	CHECK(umdev_disk_table_dirty(d));
	umdev_disk_rescan(d, NULL);
	CHECK_EQ(umdev_pwrite(d, whole, z, 512, 512 * 5), 512);           /* GPT entries */
	CHECK(umdev_disk_table_dirty(d));
	umdev_disk_rescan(d, NULL);
	CHECK_EQ(umdev_trim(d, whole, 0, 512), 0);
	CHECK(umdev_disk_table_dirty(d));
	umdev_extent_put(whole);
	umdev_disk_free(d);
}

/* An EBR in the middle of the disk is a table area too: the lock-free envelope check must send
 * a write there to the full check, and let writes elsewhere go. */
static void test_writes_to_an_ebr_mark_dirty(void)
{
	struct umdev_disk *d = mem_disk(16u << 20);
	struct umdev_extent *whole = umdev_disk_get(d, 0);
	struct synth_disk s = synth_new(32768);
	synth_mbr_entry(&s, 0, 0, 0x05, 8192, 16384);             /* extended at 4 MiB */
	synth_mbr_entry(&s, 8192, 0, 0x83, 2048, 2048);          /* logical 5 */
	synth_mbr_entry(&s, 8192, 1, 0x05, 8192, 4096);          /* link to the EBR at 8 MiB */
	synth_mbr_entry(&s, 16384, 0, 0x83, 2048, 2048);         /* logical 6 */
	CHECK_EQ(umdev_pwrite(d, whole, s.bytes, s.size, 0), (ssize_t)s.size);
	umdev_disk_rescan(d, NULL);
	struct umdev_extent *six = umdev_disk_get(d, 6);
	CHECK(six != NULL);
	umdev_extent_put(six);
	char z[512] = { 0 };
	CHECK_EQ(umdev_pwrite(d, whole, z, 512, 12u << 20), 512);  /* past the span */
	CHECK(!umdev_disk_table_dirty(d));
	CHECK_EQ(umdev_pwrite(d, whole, z, 512, 5u << 20), 512);   /* inside, not an EBR */
	CHECK(!umdev_disk_table_dirty(d));
	CHECK_EQ(umdev_pwrite(d, whole, z, 16, 16384u * 512 + 446), 16); /* the second EBR */
	CHECK(umdev_disk_table_dirty(d));
	struct umdev_changes ch = { 0 };
	umdev_disk_rescan(d, &ch);
	CHECK(ch.count == 1 && ch.items[0].kind == UMDEV_REMOVED && ch.items[0].number == 6);
	umdev_changes_clear(&ch);
	umdev_extent_put(whole);
	free(s.bytes);
	umdev_disk_free(d);
}

static void test_partscan_off_shows_no_partitions(void)
{
	char err[256];
	struct vo_block *b = vo_block_open("mem:8M", 0, err, sizeof err);
	struct umdev_disk *d = umdev_disk_new(b, 0, false);
	const uint32_t two[2][2] = { { 2048, 2048 }, { 4096, 2048 } };
	write_mbr(d, two, 2);
	CHECK(!umdev_disk_table_dirty(d));
	struct umdev_changes ch = { 0 };
	umdev_disk_rescan(d, &ch);
	CHECK_EQ(ch.count, 0);
	CHECK(umdev_disk_get(d, 1) == NULL);
	umdev_disk_free(d);
}

static void test_null_device(void)
{
	struct umdev_disk *d = umdev_disk_new(NULL, 0, true);
	struct umdev_extent *w = umdev_disk_get(d, 0);
	char buf[16] = "xxxxxxxxxxxxxxx";
	CHECK_EQ(umdev_pread(d, w, buf, sizeof buf, 0), 0);
	CHECK_EQ(umdev_pwrite(d, w, buf, sizeof buf, 12345), (ssize_t)sizeof buf);
	CHECK_EQ(umdev_flush(d, true), 0);
	umdev_extent_put(w);
	umdev_disk_free(d);

	d = umdev_disk_new(NULL, 1000, true);
	w = umdev_disk_get(d, 0);
	CHECK_EQ(umdev_pread(d, w, buf, sizeof buf, 990), 10);
	CHECK(buf[0] == 0 && buf[9] == 0 && buf[10] == 'x');
	CHECK_EQ(umdev_pwrite(d, w, buf, sizeof buf, 5000), (ssize_t)sizeof buf);
	umdev_extent_put(w);
	umdev_disk_free(d);
}

static void test_names_and_sizes(void)
{
	char *n = umdev_partition_name("/dev/hda", 1);
	CHECK_STR(n, "/dev/hda1");
	free(n);
	n = umdev_partition_name("/tmp/nvme0n1", 12);
	CHECK_STR(n, "/tmp/nvme0n1p12");
	free(n);
	char err[256];
	CHECK_EQ(umdev_check_ramdisk_size(0, err, sizeof err), -1);
	CHECK(strstr(err, "size=0") != NULL);
	CHECK_EQ(umdev_check_ramdisk_size(1000, err, sizeof err), -1);
	CHECK_EQ(umdev_check_ramdisk_size(512, err, sizeof err), 0);
}

int main(void)
{
	RUN(test_rescan_adds_moves_and_removes);
	RUN(test_partition_bounds);
	RUN(test_writes_to_table_areas_mark_dirty);
	RUN(test_writes_to_an_ebr_mark_dirty);
	RUN(test_partscan_off_shows_no_partitions);
	RUN(test_null_device);
	RUN(test_names_and_sizes);
	return CHECK_DONE();
}
