/* The bytes of an ISO 9660 image, as ECMA-119, SUSP 1.12, RRIP 1.12, Joliet and zisofs lay them
 * out: offsets of the fields this driver reads and the small decoders for them.
 *
 * ISO 9660 stores most numbers twice ("both-endian": little-endian then big-endian). We read the
 * little-endian half only, as every reader in practice does; a mismatch between the halves is
 * not a reason to refuse an image that is otherwise readable. */
#ifndef ISO9660_ONDISK_H
#define ISO9660_ONDISK_H

#include <stdint.h>
#include <time.h>

#define ISO_SECTOR 2048u          /* logical sector; directory records never cross one */
#define ISO_VD_START 16u          /* first volume descriptor, relative to the session start */

/* Volume descriptors (ECMA-119 8.1). */
enum {
	VD_BOOT = 0,              /* El Torito boot record: not ours to interpret, ignored */
	VD_PRIMARY = 1,
	VD_SUPPLEMENTARY = 2,     /* Joliet when its escape sequences say UCS-2 */
	VD_PARTITION = 3,
	VD_TERMINATOR = 255,
};
#define VD_TYPE 0
#define VD_ID 1                   /* "CD001" */
#define VD_VERSION 6
#define VD_VOLUME_ID 40           /* 32 a-characters (d1-characters for Joliet) */
#define VD_VOLUME_SPACE 80        /* both-endian 32: blocks in the volume */
#define VD_ESCAPES 88             /* SVD: 32 bytes of escape sequences */
#define VD_BLOCK_SIZE 128         /* both-endian 16: logical block size */
#define VD_ROOT_RECORD 156        /* 34-byte directory record of the root */

/* Directory record (ECMA-119 9.1). */
#define DR_LENGTH 0
#define DR_XAR_LENGTH 1           /* extended attribute record, in logical blocks */
#define DR_EXTENT 2               /* both-endian 32: first logical block */
#define DR_DATA_LENGTH 10         /* both-endian 32: bytes */
#define DR_DATE 18                /* 7 bytes */
#define DR_FLAGS 25
#define DR_UNIT_SIZE 26           /* interleaved files: file unit size ... */
#define DR_GAP_SIZE 27            /* ... and interleave gap, in blocks */
#define DR_NAME_LENGTH 32
#define DR_NAME 33
#define DR_MIN_LENGTH 34          /* the fixed part plus a one-byte name */

enum {
	DRF_HIDDEN = 1 << 0,      /* "existence": shown anyway, as Linux does by default */
	DRF_DIRECTORY = 1 << 1,
	DRF_ASSOCIATED = 1 << 2,  /* Apple resource forks and the like: not shown */
	DRF_RECORD = 1 << 3,
	DRF_PROTECTION = 1 << 4,
	DRF_MULTI_EXTENT = 1 << 7, /* another record of the same file follows */
};

static inline uint16_t iso_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t iso_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t iso_le64(const uint8_t *p)
{
	return (uint64_t)iso_le32(p) | (uint64_t)iso_le32(p + 4) << 32;
}

/* Dates: the 7-byte form of directory records and RRIP TF (years since 1900, month, day, hour,
 * minute, second, offset from GMT in 15-minute units) and the 17-byte form of volume descriptors
 * and long-form TF ("YYYYMMDDHHMMSScc" in ASCII, then the offset). Out-of-range fields give the
 * epoch rather than garbage. */
struct timespec iso_date7(const uint8_t *p);
struct timespec iso_date17(const uint8_t *p);

#endif
