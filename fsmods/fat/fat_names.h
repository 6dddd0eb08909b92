/* The names layer: everything about FAT names that needs no disk.
 *   - UTF-8 (what the kernel gives and shows) <-> UTF-16 (what VFAT long names store);
 *   - which long names FAT accepts (forbidden characters, trailing dots and spaces, length);
 *   - case-insensitive comparison and hashing, as Windows does it: each code point upper-cased
 *     (through the C library's Unicode tables, the C.UTF-8 locale, not a table of our own);
 *   - OEM code pages for short names (437 by default), built from iconv at start-up;
 *   - short (8.3) names: the basis name, the ~N numeric tails, the Windows NT lower-case flags,
 *     how a short name is shown, and the checksum that ties long-name entries to it;
 *   - packing a long name into 13-character LFN entries and back.
 * Hand-written because Debian packages no FAT library (see umfuse-fat.c). Pure functions apart
 * from fat_names_init/fat_codepage_load, so the unit tests and fuzzers call them directly. */
#ifndef FAT_NAMES_H
#define FAT_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAT_NAME_MAX 255      /* UTF-16 units in a long name */
#define FAT_NAME_UTF8_MAX 1020 /* bytes its UTF-8 form may take (4 per surrogate pair) */
#define FAT_LFN_CHARS 13      /* UTF-16 units per long-name entry */
#define FAT_LFN_MAX_SLOTS 20  /* ceil(255 / 13) */

/* Load the locale used for case folding. Call once before any other function; idempotent. */
void fat_names_init(void);
void fat_names_fini(void);

/* UTF-8 (len bytes) to UTF-16. Returns the number of units, -EINVAL for malformed UTF-8 or an
 * encoded surrogate, -ENAMETOOLONG beyond max units. */
int fat_utf8_to_utf16(const char *s, size_t len, uint16_t *out, size_t max);
/* UTF-16 to NUL-terminated UTF-8; an unpaired surrogate becomes U+FFFD. out needs
 * 3 * n + 1 bytes. Returns the length in bytes. */
size_t fat_utf16_to_utf8(const uint16_t *u, size_t n, char *out);

/* Check a long name given by a user (UTF-16, *n units) as Linux vfat does: trailing dots are
 * dropped (*n shrinks), then it must be non-empty, not end in a space, hold no character
 * below 0x20 nor any of  " * / : < > ? \ |  and be at most 255 units long.
 * Returns 0, -EINVAL or -ENAMETOOLONG. */
int fat_name_check(const uint16_t *u, size_t *n);

/* Upper-case fold of a name, unit for unit where the fold stays in the same plane (it always
 * does for the Unicode case pairs FAT names meet). out has room for n units. */
void fat_name_fold(const uint16_t *u, size_t n, uint16_t *out);
uint32_t fat_name_hash(const uint16_t *folded, size_t n);

/* A single-byte OEM code page. */
struct fat_codepage {
	unsigned number;
	uint16_t to_unicode[256];   /* 0 where the byte means nothing */
	struct { uint16_t unicode; uint8_t oem; } from_unicode[128]; /* sorted, upper half only */
	unsigned nfrom;
};
/* Build code page `number` (437, 850, 852, 866, 1252, ...) from iconv. Returns 0, or -1 with
 * why ("unknown code page 999", "double-byte code pages are not supported"). */
int fat_codepage_load(struct fat_codepage *cp, unsigned number, char *why, size_t whylen);
/* The OEM byte for a BMP code point, or -1 when the code page has none. */
int fat_codepage_to_oem(const struct fat_codepage *cp, uint16_t unicode);

/* How short names are created and shown: the kernel vfat driver's shortname= modes. */
enum fat_shortname_mode {
	FAT_SN_MIXED, /* show as stored (NT flags honoured); long name unless all upper case */
	FAT_SN_LOWER, /* show in lower case; long name unless all upper case */
	FAT_SN_WIN95, /* show in upper case; long name unless all upper case */
	FAT_SN_WINNT, /* show as stored; no long name when each part is all lower or all upper */
};
int fat_shortname_mode_parse(const char *s, enum fat_shortname_mode *mode);

/* NT "lower case" flags in the short entry (byte 12). */
#define FAT_LCASE_BASE 0x08
#define FAT_LCASE_EXT 0x10

/* What a new name needs on disk. */
struct fat_sfn_plan {
	uint8_t name[11];  /* the short name, or the basis for a numeric tail */
	uint8_t lcase;     /* NT flags, only when !need_lfn */
	bool need_lfn;     /* long-name entries must carry the name */
	bool need_tail;    /* name is a basis: pick a ~N tail with fat_sfn_tail() */
	unsigned base_len; /* characters in the primary part of the basis (1..8) */
};
void fat_sfn_plan(const struct fat_codepage *cp, enum fat_shortname_mode mode, const uint16_t *u,
		  size_t n, struct fat_sfn_plan *p);
/* The basis with numeric tail k (1..999999): "LONGFI~1", ..., "LONGF~10", ... */
void fat_sfn_tail(const struct fat_sfn_plan *p, unsigned k, uint8_t out[11]);
/* The 11-byte short form of name if it is a valid 8.3 name in any case (for looking a file up
 * by its short name); false otherwise. */
bool fat_sfn_of_query(const struct fat_codepage *cp, const uint16_t *u, size_t n,
		      uint8_t out[11]);
/* A short entry's name as shown, in UTF-16 (at most 12 units). Returns its length. */
size_t fat_sfn_display(const struct fat_codepage *cp, enum fat_shortname_mode mode,
		       const uint8_t name[11], uint8_t lcase, uint16_t *out);
/* Is this 11-byte name valid on disk (what fsck.fat accepts)? */
bool fat_sfn_valid(const uint8_t name[11]);

/* The checksum of a short name that every long-name entry of it carries. */
uint8_t fat_lfn_checksum(const uint8_t name[11]);
/* Long-name entries needed for n units. */
static inline unsigned fat_lfn_slots(size_t n)
{
	return (unsigned)((n + FAT_LFN_CHARS - 1) / FAT_LFN_CHARS);
}
/* Fill directory entry e as long-name entry number ord (1-based, from the start of the name)
 * of the name u (n units); the entry with the highest number carries the 0x40 flag. */
void fat_lfn_pack(uint8_t e[32], const uint16_t *u, size_t n, unsigned ord, uint8_t checksum);
/* The 13 units an LFN entry holds. */
void fat_lfn_unpack(const uint8_t e[32], uint16_t out[FAT_LFN_CHARS]);

#endif
