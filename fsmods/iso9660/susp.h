/* System Use Sharing Protocol (SUSP 1.12) and the Rock Ridge entries carried in it (RRIP 1.12,
 * and 1.10 as older mkisofs wrote it), plus the zisofs ZF/Z2 entry.
 *
 * A record's System Use area is a chain of entries (two-letter signature, length, version,
 * payload) that may continue in "continuation areas" elsewhere on the device (CE). Everything is
 * decoded into one struct rr_info per record. Any entry whose length disagrees with its content,
 * a continuation outside the device or a chain of more than SUSP_MAX_CE areas marks the record
 * corrupt (the entry then answers EIO) rather than being half-trusted. */
#ifndef ISO9660_SUSP_H
#define ISO9660_SUSP_H

#include "isofs.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define SUSP_MAX_CE 32          /* continuation areas per record: real images use one or two */
#define RR_LINK_MAX 4095        /* a symlink target longer than PATH_MAX - 1 is refused */

enum rr_have {
	RR_PX = 1 << 0,   /* POSIX mode, nlink, uid, gid */
	RR_PN = 1 << 1,   /* device number */
	RR_SL = 1 << 2,   /* symlink target */
	RR_NM = 1 << 3,   /* alternate (POSIX) name */
	RR_CL = 1 << 4,   /* child link: this entry stands for a directory relocated elsewhere */
	RR_PL = 1 << 5,   /* parent link: ".." of a relocated directory */
	RR_RE = 1 << 6,   /* relocated: the real place of this directory is the CL entry */
	RR_TF = 1 << 7,   /* timestamps */
	RR_ZF = 1 << 8,   /* zisofs (ZF or Z2) */
	RR_SP = 1 << 9,   /* SUSP indicator (root "." only) */
	RR_ER = 1 << 10,  /* extension reference */
};
/* The entries whose presence in the root says "this image has Rock Ridge". */
#define RR_ROCK_SIGNS (RR_PX | RR_PN | RR_SL | RR_NM | RR_CL | RR_PL | RR_RE | RR_TF | RR_ER)

enum rr_time { RR_TIME_MODIFY = 1, RR_TIME_ACCESS = 2, RR_TIME_CHANGE = 4 };

struct rr_info {
	unsigned have;            /* enum rr_have */
	const char *corrupt;      /* why the area was rejected, or NULL */
	uint32_t mode, nlink, uid, gid;
	uint64_t rdev;
	unsigned times;           /* enum rr_time: which of the three TF gave */
	struct timespec mtime, atime, ctime;
	bool name_dot;            /* NM said "." or ".." (CURRENT/PARENT) */
	size_t name_len;
	char name[NAME_MAX + 2];  /* one byte more, to notice a name that is too long */
	size_t link_len;
	bool link_join;           /* the last SL component continues in the next one */
	char link[RR_LINK_MAX + 2];
	uint32_t cl_block, pl_block;
	/* ZF/Z2 */
	uint8_t zf_version;       /* 1: zisofs ("pz"), 2: zisofs2 */
	char zf_alg[2];
	uint8_t zf_header_words, zf_log2_block;
	uint64_t zf_size;
	uint8_t sp_skip;          /* LEN_SKP of an SP entry */
};

/* Decode the System Use area su[0..len) (LEN_SKP already skipped) into rr, following
 * continuation areas through img. rr is cleared first. Returns false when rr->corrupt is set. */
bool susp_parse(struct iso_image *img, const uint8_t *su, size_t len, struct rr_info *rr);

#endif
