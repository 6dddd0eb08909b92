/* MBR partition tables: the four primary entries of sector 0 and the chain of extended boot
 * records (EBRs) that holds the logical partitions. Written from the on-disk format as Linux
 * reads it (block/partitions/msdos.c is the behaviour we match, not code we copy):
 *   - 0x55AA ends sector 0, and every entry's boot flag is 0x00 or 0x80; otherwise sector 0 is
 *     something else (a FAT boot sector, say) and the disk has no partitions;
 *   - an entry of type 0xEE makes it a GPT disk (gpt.c); 0xEE beside other entries is a hybrid;
 *   - types 0x05, 0x0F and 0x85 are extended partitions; inside the first one, each EBR holds a
 *     logical partition (start relative to that EBR) and a link to the next EBR (start relative
 *     to the extended partition); logical partitions are numbered from 5 in chain order. */
#include "partition.h"

#include <string.h>

#define MBR_ENTRIES 0x1be
#define MAX_LOGICAL 256 /* far beyond what any tool makes; ends loops and hostile chains */

struct mbr_entry {
	uint8_t boot, type;
	uint32_t start, sectors;
};

static struct mbr_entry entry_at(const uint8_t *sector, int i)
{
	const uint8_t *p = sector + MBR_ENTRIES + 16 * i;
	return (struct mbr_entry){ .boot = p[0], .type = p[4], .start = umdev_le32(p + 8),
				   .sectors = umdev_le32(p + 12) };
}

static bool has_signature(const uint8_t *sector)
{
	return sector[510] == 0x55 && sector[511] == 0xaa;
}

static bool is_extended(uint8_t type)
{
	return type == 0x05 || type == 0x0f || type == 0x85;
}

static int scan_logical(umdev_read_fn read, void *ctx, uint64_t disk_sectors, uint64_t ext_start,
			uint64_t ext_sectors, struct umdev_table *t)
{
	uint64_t visited[MAX_LOGICAL];
	unsigned number = 5;
	uint64_t ebr = ext_start;
	for (int hop = 0;; hop++) {
		if (hop == MAX_LOGICAL) {
			umdev_table_msg(t, UMDEV_MSG_WARNING, "the chain of logical partitions has "
					"more than %d links: the rest is ignored", MAX_LOGICAL);
			return 0;
		}
		for (int i = 0; i < hop; i++) {
			if (visited[i] == ebr) {
				umdev_table_msg(t, UMDEV_MSG_WARNING, "the chain of logical "
						"partitions loops back to sector %llu: it ends there",
						(unsigned long long)ebr);
				return 0;
			}
		}
		visited[hop] = ebr;
		if (ebr >= disk_sectors) {
			umdev_table_msg(t, UMDEV_MSG_WARNING, "an extended boot record lies past the "
					"end of the disk (sector %llu): the chain ends there",
					(unsigned long long)ebr);
			return 0;
		}
		uint8_t sector[UMDEV_SECTOR];
		int r = umdev_read_exact(read, ctx, sector, sizeof sector, ebr * UMDEV_SECTOR);
		if (r < 0)
			return r;
		umdev_table_add_area(t, ebr * UMDEV_SECTOR, UMDEV_SECTOR);
		if (!has_signature(sector)) {
			/* An extended partition without logical ones has a blank first EBR: normal. */
			if (hop > 0)
				umdev_table_msg(t, UMDEV_MSG_WARNING, "the extended boot record at sector "
						"%llu has no 0x55AA signature: the chain ends there",
						(unsigned long long)ebr);
			return 0;
		}
		bool have_next = false;
		uint64_t next = 0;
		for (int i = 0; i < 4; i++) {
			struct mbr_entry e = entry_at(sector, i);
			if (e.type == 0 || e.sectors == 0)
				continue;
			if (is_extended(e.type)) {
				if (!have_next) {
					have_next = true;
					next = ext_start + e.start;
				}
				continue;
			}
			uint64_t start = ebr + e.start;
			if (start < ext_start || start + e.sectors > ext_start + ext_sectors)
				umdev_table_msg(t, UMDEV_MSG_WARNING, "logical partition %u lies (partly) "
						"outside its extended partition", number);
			struct umdev_partition *p = umdev_table_add_checked(t, number, start, e.sectors,
									    disk_sectors);
			if (p) {
				p->mbr_type = e.type;
				p->logical = true;
				number++;
			}
		}
		if (!have_next)
			return 0;
		ebr = next;
	}
}

int umdev_scan_mbr(umdev_read_fn read, void *ctx, uint64_t disk_size, const uint8_t *sector0,
		   struct umdev_table *t)
{
	if (!has_signature(sector0)) {
		umdev_table_msg(t, UMDEV_MSG_INFO, "no partition table (sector 0 does not end with "
				"0x55AA)");
		return 0;
	}
	struct mbr_entry e[4];
	bool protective = false, others = false;
	for (int i = 0; i < 4; i++) {
		e[i] = entry_at(sector0, i);
		if (e[i].boot != 0 && e[i].boot != 0x80) {
			umdev_table_msg(t, UMDEV_MSG_INFO, "no partition table (sector 0 ends with "
					"0x55AA but entry %d has boot flag 0x%02x: a boot sector, not "
					"an MBR)", i + 1, e[i].boot);
			return 0;
		}
		if (e[i].type == 0xee)
			protective = true;
		else if (e[i].type != 0 && e[i].sectors != 0)
			others = true;
	}
	if (protective) {
		if (others)
			umdev_table_msg(t, UMDEV_MSG_WARNING, "hybrid MBR (a GPT protective entry "
					"beside MBR partitions): the GPT is used, the MBR entries are "
					"ignored");
		return umdev_scan_gpt(read, ctx, disk_size, t);
	}

	t->scheme = UMDEV_SCHEME_MBR;
	uint64_t disk_sectors = disk_size / UMDEV_SECTOR;
	bool followed_extended = false;
	for (int i = 0; i < 4; i++) {
		if (e[i].type == 0 || e[i].sectors == 0)
			continue;
		unsigned number = (unsigned)i + 1;
		struct umdev_partition *p = umdev_table_add_checked(t, number, e[i].start,
								    e[i].sectors, disk_sectors);
		if (!p)
			continue;
		p->mbr_type = e[i].type;
		if (!is_extended(e[i].type))
			continue;
		p->extended = true;
		if (followed_extended) {
			umdev_table_msg(t, UMDEV_MSG_WARNING, "partition %u is a second extended "
					"partition: its logical partitions are ignored", number);
			continue;
		}
		followed_extended = true;
		uint64_t ext_sectors = p->length / UMDEV_SECTOR;
		int r = scan_logical(read, ctx, disk_sectors, e[i].start, ext_sectors, t);
		if (r < 0)
			return r;
	}
	return 0;
}
