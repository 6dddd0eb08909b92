/* The directory layer: one directory's entries held in memory as the bytes on disk plus an
 * index of its names.
 *
 * A directory is read once into raw (32 bytes per slot) and parsed: long-name entries are
 * gathered and accepted only when their sequence numbers run down to 1 and every one carries
 * the checksum of the short entry that follows (otherwise the short name is used, as every
 * FAT driver does with orphaned long names). Each live name is indexed twice, by its
 * upper-cased long name (case-insensitive lookup, as Windows and Linux vfat) and by its short
 * name (for the ~N tails and for lookups such as LONGFI~1.TXT).
 *
 * Changes edit raw and record the byte range they touched; the volume writes that range to the
 * directory's clusters at the end of the operation. No I/O here: unit tests and the fuzz
 * harness use it on plain buffers. Hand-written, see umfuse-fat.c. Not thread-safe. */
#ifndef FAT_DIR_H
#define FAT_DIR_H

#include "fat_names.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAT_ENTRY_SIZE 32
#define FAT_DIR_MAX_SLOTS 65536 /* a directory may hold at most 65536 entries */

/* Directory entry attributes. */
#define FAT_ATTR_RO 0x01
#define FAT_ATTR_HIDDEN 0x02
#define FAT_ATTR_SYSTEM 0x04
#define FAT_ATTR_VOLUME 0x08
#define FAT_ATTR_DIR 0x10
#define FAT_ATTR_ARCHIVE 0x20
#define FAT_ATTR_LFN 0x0F

/* Fields of a short directory entry. */
#define DE_NAME 0
#define DE_ATTR 11
#define DE_LCASE 12
#define DE_CTIME_CS 13
#define DE_CTIME 14
#define DE_CDATE 16
#define DE_ADATE 18
#define DE_FIRST_HI 20
#define DE_MTIME 22
#define DE_MDATE 24
#define DE_FIRST_LO 26
#define DE_SIZE 28

struct fat_dir_name {
	uint32_t first_slot; /* its first long-name slot, or its short slot when it has none */
	uint16_t keylen;
	uint16_t *key;       /* the name upper-cased, UTF-16 */
	char *name;          /* the name as shown, UTF-8 */
	uint32_t hash, sfn_hash;
	int32_t next, sfn_next; /* next short slot in the same bucket, -1 at the end */
	void *node;          /* the volume's in-memory node for this entry, if any */
};

struct fat_dir {
	uint8_t *raw;          /* nslots * 32 bytes */
	uint32_t nslots;
	struct fat_dir_name **names; /* by the slot of the short entry; NULL elsewhere */
	uint32_t nnames;
	int32_t *buckets, *sfn_buckets;
	uint32_t nbuckets;     /* a power of two */
	uint32_t end;          /* slots from here on are unused (the first 0x00 entry) */
	uint32_t free_hint;    /* no free slot lies before this one */
	int32_t dotdot_slot;   /* the ".." entry of a subdirectory, -1 if none */
	uint32_t nsubdirs;
	size_t dirty_lo, dirty_hi; /* byte range changed, lo >= hi if none */
	const struct fat_codepage *cp;
	enum fat_shortname_mode mode;
	uint8_t last_basis[11];  /* the last basis given a numeric tail, and that tail: */
	unsigned last_tail;      /* the next collision search starts after it */
};

/* Take ownership of raw (nslots slots) and index it. Returns 0 or -ENOMEM. */
int fat_dir_init(struct fat_dir *d, uint8_t *raw, uint32_t nslots, const struct fat_codepage *cp,
		 enum fat_shortname_mode mode);
void fat_dir_free(struct fat_dir *d);

static inline uint8_t *fat_dir_slot(const struct fat_dir *d, uint32_t slot)
{
	return d->raw + (size_t)slot * FAT_ENTRY_SIZE;
}

/* The short slot of the entry named u (n units, already checked), by long or short name,
 * ignoring case; -1 if none. */
int32_t fat_dir_lookup(const struct fat_dir *d, const uint16_t *u, size_t n);
/* The short slot whose short name is exactly sfn, -1 if none. */
int32_t fat_dir_find_sfn(const struct fat_dir *d, const uint8_t sfn[11]);

/* The first of k consecutive free slots, or -1 when the directory must grow first. */
int32_t fat_dir_find_free(struct fat_dir *d, unsigned k);
/* Make room for nslots slots in all (new slots are zero: unused). Returns 0 or -ENOMEM. */
int fat_dir_grow(struct fat_dir *d, uint32_t nslots);

/* Choose the short name for a new long name u (n units) and build its k entries (long-name
 * entries, then the short one, whose other fields are zero) into entries (room for
 * FAT_LFN_MAX_SLOTS + 1). Returns k, or -EEXIST when every numeric tail is taken. */
int fat_dir_build_entries(struct fat_dir *d, const uint16_t *u, size_t n,
			  uint8_t entries[][FAT_ENTRY_SIZE]);
/* Write k built entries at slot first (from fat_dir_find_free) and index the name; the short
 * entry is the last. Returns the short slot, or -ENOMEM. */
int32_t fat_dir_insert(struct fat_dir *d, uint32_t first, uint8_t entries[][FAT_ENTRY_SIZE],
		       unsigned k);
/* Mark the entry (short slot) and its long-name entries deleted and forget the name. */
void fat_dir_remove(struct fat_dir *d, uint32_t short_slot);

void fat_dir_mark_dirty(struct fat_dir *d, uint32_t slot, uint32_t count);
bool fat_dir_take_dirty(struct fat_dir *d, size_t *lo, size_t *hi);

/* The first short slot at or after from that holds a name, -1 if none. */
int32_t fat_dir_next(const struct fat_dir *d, uint32_t from);

/* Short-entry field helpers. */
uint32_t fat_de_first_cluster(const uint8_t *e, bool fat32);
void fat_de_set_first_cluster(uint8_t *e, uint32_t c, bool fat32);

#endif
