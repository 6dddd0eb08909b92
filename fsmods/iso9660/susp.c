/* See susp.h. Written from SUSP 1.12 / RRIP 1.12 and the zisofs notes of libisofs: each entry's
 * length is checked against what its signature needs before a byte of it is used. */
#include "susp.h"

#include "ondisk.h"

#include <string.h>
#include <sys/sysmacros.h>

/* NM and SL flags */
enum {
	NM_CONTINUE = 1, NM_CURRENT = 2, NM_PARENT = 4,
	SL_CONTINUE = 1, SL_CURRENT = 2, SL_PARENT = 4, SL_ROOT = 8,
};

struct continuation {
	bool set;
	uint32_t block, offset, length;
};

static void corrupt(struct rr_info *rr, const char *why)
{
	if (!rr->corrupt)
		rr->corrupt = why;
}

static void append_name(struct rr_info *rr, const uint8_t *s, size_t n)
{
	if (n > NAME_MAX - rr->name_len) {
		corrupt(rr, "Rock Ridge name longer than 255 bytes");
		return;
	}
	memcpy(rr->name + rr->name_len, s, n);
	rr->name_len += n;
}

static void append_link(struct rr_info *rr, const char *s, size_t n)
{
	if (n > RR_LINK_MAX - rr->link_len) {
		corrupt(rr, "symlink target longer than 4095 bytes");
		return;
	}
	memcpy(rr->link + rr->link_len, s, n);
	rr->link_len += n;
}

/* SL: a list of components (flags, length, text). A component flagged CONTINUE is joined with the
 * next one without a '/', also across SL entries: that is how targets longer than one entry, or
 * one component longer than 255 bytes, are recorded. */
static void parse_sl(struct rr_info *rr, const uint8_t *d, size_t len)
{
	size_t p = 1; /* d[0] is the entry's own CONTINUE flag: what matters is per component */
	while (p < len) {
		if (len - p < 2 || d[p + 1] > len - p - 2) {
			corrupt(rr, "SL component overruns its entry");
			return;
		}
		uint8_t cflags = d[p], clen = d[p + 1];
		const char *text = (const char *)d + p + 2;
		size_t tlen = clen;
		if (cflags & SL_CURRENT) {
			text = ".", tlen = 1;
		} else if (cflags & SL_PARENT) {
			text = "..", tlen = 2;
		} else if (cflags & SL_ROOT) {
			text = "", tlen = 0;
		}
		if (!rr->link_join) {
			/* a new component: separate it from the previous one */
			if (cflags & SL_ROOT) {
				if (rr->link_len == 0 || rr->link[rr->link_len - 1] != '/')
					append_link(rr, "/", 1);
			} else if (rr->link_len > 0 && rr->link[rr->link_len - 1] != '/') {
				append_link(rr, "/", 1);
			}
		}
		append_link(rr, text, tlen);
		rr->link_join = (cflags & SL_CONTINUE) != 0;
		p += 2u + clen;
	}
}

static void parse_tf(struct rr_info *rr, const uint8_t *d, size_t len)
{
	if (len < 1) {
		corrupt(rr, "TF entry too short");
		return;
	}
	uint8_t flags = d[0];
	size_t stamp = (flags & 0x80) ? 17 : 7, at = 1;
	/* bits 0..6 in order: creation, modify, access, attributes, backup, expiration, effective */
	for (int bit = 0; bit < 7; bit++) {
		if (!(flags & (1 << bit)))
			continue;
		if (len - at < stamp) {
			corrupt(rr, "TF entry shorter than its flags say");
			return;
		}
		struct timespec t = stamp == 17 ? iso_date17(d + at) : iso_date7(d + at);
		if (bit == 1) {
			rr->mtime = t;
			rr->times |= RR_TIME_MODIFY;
		} else if (bit == 2) {
			rr->atime = t;
			rr->times |= RR_TIME_ACCESS;
		} else if (bit == 3) {
			rr->ctime = t;
			rr->times |= RR_TIME_CHANGE;
		}
		at += stamp;
	}
	rr->have |= RR_TF;
}

static void parse_zf(struct rr_info *rr, bool z2, uint8_t version, const uint8_t *d, size_t len)
{
	if (len != 12) {
		corrupt(rr, "ZF entry of the wrong length");
		return;
	}
	rr->have |= RR_ZF;
	rr->zf_version = z2 ? 2 : version;
	rr->zf_alg[0] = (char)d[0];
	rr->zf_alg[1] = (char)d[1];
	rr->zf_header_words = d[2];
	rr->zf_log2_block = d[3];
	/* version 1: both-endian 32-bit size; version 2: 64-bit little-endian */
	rr->zf_size = rr->zf_version == 1 ? iso_le32(d + 4) : iso_le64(d + 4);
}

static void parse_entry(struct rr_info *rr, const uint8_t *e, struct continuation *ce)
{
	const char a = (char)e[0], b = (char)e[1];
	const uint8_t version = e[3], *d = e + 4;
	const size_t len = e[2] - 4u;
#define SIG(x, y) (a == (x) && b == (y))
	if (SIG('C', 'E')) {
		if (len != 24) {
			corrupt(rr, "CE entry of the wrong length");
			return;
		}
		ce->set = true;
		ce->block = iso_le32(d);
		ce->offset = iso_le32(d + 8);
		ce->length = iso_le32(d + 16);
	} else if (SIG('S', 'P')) {
		if (len == 3 && d[0] == 0xbe && d[1] == 0xef) {
			rr->have |= RR_SP;
			rr->sp_skip = d[2];
		}
	} else if (SIG('E', 'R')) {
		rr->have |= RR_ER;
	} else if (SIG('P', 'X')) {
		if (len != 32 && len != 40) { /* RRIP 1.10; 1.12 adds the serial number */
			corrupt(rr, "PX entry of the wrong length");
			return;
		}
		rr->have |= RR_PX;
		rr->mode = iso_le32(d);
		rr->nlink = iso_le32(d + 8);
		rr->uid = iso_le32(d + 16);
		rr->gid = iso_le32(d + 24);
	} else if (SIG('P', 'N')) {
		if (len != 16) {
			corrupt(rr, "PN entry of the wrong length");
			return;
		}
		rr->have |= RR_PN;
		/* Writers disagree on the two words: libisofs (xorriso) stores the high and low
		   halves of glibc's 64-bit dev_t, so a high word of 0 is the rule and the low word
		   holds the whole number; mkisofs/genisoimage store major and minor. A device
		   number needs a high half only past major 4095 or minor 2^20, which real devices
		   do not reach, so a nonzero high word means major and minor. */
		uint32_t high = iso_le32(d), low = iso_le32(d + 8);
		rr->rdev = high == 0 ? low : makedev(high, low);
	} else if (SIG('S', 'L')) {
		if (len < 1) {
			corrupt(rr, "SL entry too short");
			return;
		}
		rr->have |= RR_SL;
		parse_sl(rr, d, len);
	} else if (SIG('N', 'M')) {
		if (len < 1) {
			corrupt(rr, "NM entry too short");
			return;
		}
		rr->have |= RR_NM;
		if (d[0] & (NM_CURRENT | NM_PARENT))
			rr->name_dot = true;
		else
			append_name(rr, d + 1, len - 1);
	} else if (SIG('C', 'L')) {
		if (len != 8) {
			corrupt(rr, "CL entry of the wrong length");
			return;
		}
		rr->have |= RR_CL;
		rr->cl_block = iso_le32(d);
	} else if (SIG('P', 'L')) {
		if (len != 8) {
			corrupt(rr, "PL entry of the wrong length");
			return;
		}
		rr->have |= RR_PL;
		rr->pl_block = iso_le32(d);
	} else if (SIG('R', 'E')) {
		rr->have |= RR_RE;
	} else if (SIG('T', 'F')) {
		parse_tf(rr, d, len);
	} else if (SIG('Z', 'F') || SIG('Z', '2')) {
		parse_zf(rr, SIG('Z', '2'), version, d, len);
	}
	/* Everything else (RR, PD, ES, SF, AA/AL of libisofs, ...) carries nothing we show. */
#undef SIG
}

/* One System Use field or continuation area; an ST entry ends it early. */
static void parse_area(struct rr_info *rr, const uint8_t *a, size_t len, struct continuation *ce)
{
	size_t i = 0;
	while (len - i >= 4 && !rr->corrupt) {
		uint8_t elen = a[i + 2];
		if (elen < 4) {
			/* zero padding at the end of the field is allowed; anything else is not */
			for (size_t j = i; j < len; j++)
				if (a[j] != 0) {
					corrupt(rr, "SUSP entry with a length below 4");
					return;
				}
			return;
		}
		if (elen > len - i) {
			corrupt(rr, "SUSP entry overruns its area");
			return;
		}
		if (a[i] == 'S' && a[i + 1] == 'T')
			return;
		parse_entry(rr, a + i, ce);
		i += elen;
	}
}

bool susp_parse(struct iso_image *img, const uint8_t *su, size_t len, struct rr_info *rr)
{
	/* Reset field by field: the two buffers are large and need no clearing. */
	rr->have = 0;
	rr->corrupt = NULL;
	rr->mode = rr->nlink = rr->uid = rr->gid = 0;
	rr->rdev = 0;
	rr->times = 0;
	rr->name_dot = false;
	rr->name_len = rr->link_len = 0;
	rr->link_join = false;
	rr->cl_block = rr->pl_block = 0;
	rr->zf_version = 0;
	rr->sp_skip = 0;

	struct continuation ce = { 0 };
	parse_area(rr, su, len, &ce);
	uint8_t area[ISO_SECTOR];
	for (int n = 0; ce.set && !rr->corrupt; n++) {
		struct continuation cur = ce;
		ce.set = false;
		if (n == SUSP_MAX_CE) {
			corrupt(rr, "too many SUSP continuation areas (a loop?)");
			break;
		}
		if (cur.offset >= ISO_SECTOR || cur.length > ISO_SECTOR - cur.offset) {
			corrupt(rr, "SUSP continuation area crosses a block");
			break;
		}
		if (!img || iso_dev_read(img, area, cur.length,
					 (uint64_t)cur.block * ISO_SECTOR + cur.offset) < 0) {
			corrupt(rr, "SUSP continuation area outside the image");
			break;
		}
		parse_area(rr, area, cur.length, &ce);
	}
	rr->name[rr->name_len] = '\0';
	rr->link[rr->link_len] = '\0';
	return rr->corrupt == NULL;
}
