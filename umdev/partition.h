/* Partition tables as libumdev reads them: MBR (primary, extended/logical) and GPT.
 *
 * The scanner is pure: it reads through a callback, never opens anything, and returns a
 * table (partitions, the byte ranges that hold the table itself, and diagnostics). The daemons,
 * the nbdkit plugin, the unit tests and the fuzz harnesses all call the same umdev_scan().
 *
 * Numbering is Linux's: MBR primary slots are 1-4 (empty slots stay holes), logical partitions
 * are numbered from 5 in chain order, GPT entry i (1-based) is partition i (empty entries stay
 * holes). Sectors are 512 bytes; disks with 4096-byte logical sectors are not supported.
 *
 * Written here rather than taken from libblkid or libfdisk, which read partition tables well:
 * both want a file descriptor (our disks may be NBD URIs read through the block layer), neither
 * says where the table lies on the disk (the live re-read needs exactly that: which writes
 * touch it), and neither reports why a GPT was refused or which header it used. The formats
 * are small and fixed; the parsers are fuzzed (tests/fuzz/umdev). */
#ifndef UMDEV_PARTITION_H
#define UMDEV_PARTITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define UMDEV_SECTOR 512u

/* Read len bytes at byte offset off; returns len, fewer at the end of the disk, or -errno. */
typedef ssize_t (*umdev_read_fn)(void *ctx, void *buf, size_t len, uint64_t off);

enum umdev_scheme {
	UMDEV_SCHEME_NONE, /* no partition table (or one too damaged to use) */
	UMDEV_SCHEME_MBR,
	UMDEV_SCHEME_GPT,
};

struct umdev_partition {
	unsigned number;        /* 1.. as Linux numbers it */
	uint64_t start, length; /* bytes */
	uint8_t mbr_type;       /* MBR: the type byte; GPT: 0 */
	bool extended;          /* MBR: the container of the logical partitions */
	bool logical;           /* MBR: inside the extended partition */
	uint8_t type_guid[16];  /* GPT, as stored (mixed endian) */
	uint64_t attributes;    /* GPT */
	char name[108];         /* GPT: the UTF-16 name as UTF-8 (36 units, up to 3 bytes each) */
};

/* A byte range of the disk that holds (part of) the partition table: a write there means the
 * table may have changed. */
struct umdev_range {
	uint64_t start, length;
};

enum umdev_msg_level { UMDEV_MSG_INFO, UMDEV_MSG_WARNING };

struct umdev_msg {
	enum umdev_msg_level level;
	char text[200];
};

struct umdev_table {
	enum umdev_scheme scheme;
	size_t count;
	struct umdev_partition *parts; /* sorted by number */
	size_t nareas;
	struct umdev_range *areas;
	size_t nmsgs;
	struct umdev_msg *msgs;
};

/* Scan a disk of disk_size bytes. Always fills *t (scheme NONE when there is no usable table);
 * returns 0, or -errno when reading failed (t then holds what was found before the error).
 * Damaged or odd tables are not errors: they are described in t->msgs. */
int umdev_scan(umdev_read_fn read, void *ctx, uint64_t disk_size, struct umdev_table *t);
void umdev_table_clear(struct umdev_table *t);

/* Does [off, off+len) overlap an area of the table (or the places where a new table would be
 * written: the first 34 and the last 33 sectors)? t may be NULL: those fixed places only. */
#define UMDEV_HEAD_BYTES (34u * UMDEV_SECTOR)
#define UMDEV_TAIL_BYTES (33u * UMDEV_SECTOR)
bool umdev_table_touches(const struct umdev_table *t, uint64_t disk_size, uint64_t off,
			 uint64_t len);

const struct umdev_partition *umdev_table_find(const struct umdev_table *t, unsigned number);
const char *umdev_scheme_name(enum umdev_scheme s);

/* --- for the scanners (mbr.c, gpt.c) --- */
struct umdev_partition *umdev_table_add(struct umdev_table *t, unsigned number, uint64_t start,
					uint64_t length);
/* Add partition `number` given in sectors, after checking it against the disk: one that
 * starts past the end is dropped (NULL), one that ends past it is truncated; both reported. */
struct umdev_partition *umdev_table_add_checked(struct umdev_table *t, unsigned number,
						uint64_t start_sector, uint64_t sectors,
						uint64_t disk_sectors);
void umdev_table_add_area(struct umdev_table *t, uint64_t start, uint64_t length);
void umdev_table_msg(struct umdev_table *t, enum umdev_msg_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Read exactly len bytes or fail: -EIO for a short read (past the end of the disk). */
int umdev_read_exact(umdev_read_fn read, void *ctx, void *buf, size_t len, uint64_t off);

int umdev_scan_mbr(umdev_read_fn read, void *ctx, uint64_t disk_size, const uint8_t *sector0,
		   struct umdev_table *t);
int umdev_scan_gpt(umdev_read_fn read, void *ctx, uint64_t disk_size, struct umdev_table *t);

/* Little-endian fields of on-disk structures. */
static inline uint16_t umdev_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t umdev_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t umdev_le64(const uint8_t *p)
{
	return (uint64_t)umdev_le32(p) | (uint64_t)umdev_le32(p + 4) << 32;
}

#endif
