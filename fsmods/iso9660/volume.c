/* Opening an image: which session, which volume descriptors, which of the three trees.
 *
 * Sessions. A multi-session disc has one ISO 9660 volume per session, each with its volume
 * descriptors 16 blocks after the session's start, each (in the usual case) a superset of the
 * one before. Without a CD's table of contents the sessions of an image file are found the way
 * xorriso emulates that table on files and disks: a session ends where its volume space ends
 * (counted from the session's start, as xorriso's per-session copies record it, or from block 0,
 * as mkisofs -C records it), and the next one starts at the next 32-block boundary. xorriso also
 * keeps a copy of the newest session's descriptors at block 16; when the chain that starts at
 * block 32 ends at that same volume, the copy is not counted as a session of its own. The last
 * session is mounted unless session=N or sbsector=N choose another.
 *
 * Trees. Rock Ridge (found by the SP entry of the root's "." record and any RRIP entry after it)
 * wins unless norock; then Joliet (a supplementary descriptor whose escape sequences name UCS-2)
 * unless nojoliet; then the plain ISO 9660 names. El Torito boot records are noted and ignored. */
#include "isofs.h"
#include "ondisk.h"
#include "susp.h"

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DESCRIPTORS 64   /* volume descriptors before the terminator: real images have 3-5 */
#define SESSION_ALIGN 32u    /* blocks: where xorriso and mkisofs -C put the next session */

int iso_dev_read(struct iso_image *img, void *buf, size_t len, uint64_t off)
{
	if (off > img->dev_size || len > img->dev_size - off)
		return -EIO;
	if (len == 0)
		return 0;
	ssize_t r = vo_block_pread(img->dev, buf, len, off);
	if (r < 0)
		return (int)r;
	return (size_t)r == len ? 0 : -EIO;
}

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

/* A primary volume descriptor at block lba? Leaves the sector in sec. */
static bool pvd_at(struct iso_image *img, uint64_t lba, uint8_t *sec)
{
	return lba <= UINT32_MAX && iso_dev_read(img, sec, ISO_SECTOR, lba * ISO_SECTOR) == 0 &&
	       sec[VD_TYPE] == VD_PRIMARY && memcmp(sec + VD_ID, "CD001", 5) == 0 &&
	       sec[VD_VERSION] == 1;
}

static uint64_t align_up(uint64_t v)
{
	return (v + SESSION_ALIGN - 1) / SESSION_ALIGN * SESSION_ALIGN;
}

struct chain {
	uint32_t *starts;
	unsigned count, cap;
	uint32_t last_root; /* root extent of the last session */
};

/* Follow the sessions from block first (see the comment at the top). */
static int walk_sessions(struct iso_image *img, uint32_t first, struct chain *c)
{
	uint8_t sec[ISO_SECTOR];
	uint64_t s = first;
	c->count = 0;
	while (pvd_at(img, s + ISO_VD_START, sec)) {
		if (c->count == c->cap) {
			unsigned cap = c->cap ? c->cap * 2 : 8;
			uint32_t *n = realloc(c->starts, cap * sizeof *n);
			if (!n)
				return -ENOMEM;
			c->starts = n;
			c->cap = cap;
		}
		c->starts[c->count++] = (uint32_t)s;
		c->last_root = iso_le32(sec + VD_ROOT_RECORD + DR_EXTENT);
		uint64_t space = iso_le32(sec + VD_VOLUME_SPACE);
		uint64_t relative = align_up(s + space), absolute = align_up(space);
		uint8_t probe[ISO_SECTOR];
		if (relative > s && pvd_at(img, relative + ISO_VD_START, probe))
			s = relative;
		else if (absolute > s && pvd_at(img, absolute + ISO_VD_START, probe))
			s = absolute;
		else
			break;
	}
	return 0;
}

/* The block where the session to mount starts. */
static int choose_session(struct iso_image *img, char *err, size_t errlen)
{
	uint8_t sec[ISO_SECTOR];
	if (img->opt.has_sbsector) {
		if (!pvd_at(img, (uint64_t)img->opt.sbsector + ISO_VD_START, sec))
			return fail(err, errlen, -EINVAL, "no ISO 9660 volume starts at block %u "
				    "(sbsector=%u)", img->opt.sbsector, img->opt.sbsector);
		img->session_start = img->opt.sbsector;
		return 0;
	}
	if (!pvd_at(img, ISO_VD_START, sec)) {
		if (iso_dev_read(img, sec, ISO_SECTOR, ISO_VD_START * ISO_SECTOR) == 0 &&
		    memcmp(sec + 9, "CDROM", 5) == 0)
			return fail(err, errlen, -EINVAL, "High Sierra images are not supported");
		return fail(err, errlen, -EINVAL, "not an ISO 9660 image (no primary volume "
			    "descriptor at block 16)");
	}
	uint32_t root16 = iso_le32(sec + VD_ROOT_RECORD + DR_EXTENT);
	struct chain c = { 0 };
	int r = 0;
	if (pvd_at(img, SESSION_ALIGN + ISO_VD_START, sec)) {
		r = walk_sessions(img, SESSION_ALIGN, &c);
		if (r == 0 && (c.count == 0 || c.last_root != root16))
			c.count = 0; /* not xorriso's layout after all */
	}
	if (r == 0 && c.count == 0)
		r = walk_sessions(img, 0, &c);
	if (r < 0) {
		free(c.starts);
		return fail(err, errlen, r, "out of memory");
	}
	unsigned want = img->opt.session ? img->opt.session : c.count;
	if (want > c.count) {
		free(c.starts);
		/* in the option's terms: session=N counts from 0 */
		return fail(err, errlen, -EINVAL, "session=%u does not exist (the image has %u "
			    "session%s: session=0 to session=%u)", want - 1, c.count,
			    c.count == 1 ? "" : "s", c.count - 1);
	}
	img->session_start = c.starts[want - 1];
	img->session_index = want;
	img->session_count = c.count;
	free(c.starts);
	return 0;
}

struct descriptors {
	uint8_t pvd[ISO_SECTOR], svd[ISO_SECTOR];
	bool have_pvd, have_joliet;
};

static void read_descriptors(struct iso_image *img, struct descriptors *d)
{
	uint8_t sec[ISO_SECTOR];
	for (unsigned i = 0; i < MAX_DESCRIPTORS; i++) {
		uint64_t lba = (uint64_t)img->session_start + ISO_VD_START + i;
		if (iso_dev_read(img, sec, ISO_SECTOR, lba * ISO_SECTOR) < 0 ||
		    memcmp(sec + VD_ID, "CD001", 5) != 0 || sec[VD_TYPE] == VD_TERMINATOR)
			break;
		if (sec[VD_TYPE] == VD_PRIMARY && !d->have_pvd) {
			memcpy(d->pvd, sec, ISO_SECTOR);
			d->have_pvd = true;
		} else if (sec[VD_TYPE] == VD_SUPPLEMENTARY && !d->have_joliet &&
			   sec[VD_ESCAPES] == '%' && sec[VD_ESCAPES + 1] == '/' &&
			   (sec[VD_ESCAPES + 2] == '@' || sec[VD_ESCAPES + 2] == 'C' ||
			    sec[VD_ESCAPES + 2] == 'E')) {
			memcpy(d->svd, sec, ISO_SECTOR);
			d->have_joliet = true;
		} else if (sec[VD_TYPE] == VD_BOOT &&
			   memcmp(sec + 7, "EL TORITO SPECIFICATION", 23) == 0) {
			img->has_eltorito = true;
		}
	}
}

/* The root directory record of a descriptor, checked against the device. */
static int root_record(struct iso_image *img, const uint8_t *vd, struct iso_record *root,
		       const char *which, char *err, size_t errlen)
{
	uint64_t pos = (uint64_t)img->session_start * ISO_SECTOR; /* not a real address: unused */
	if (iso_le16(vd + VD_BLOCK_SIZE) != ISO_SECTOR)
		return fail(err, errlen, -EINVAL, "%s volume descriptor: logical block size %u is "
			    "not supported (only 2048)", which, iso_le16(vd + VD_BLOCK_SIZE));
	if (iso_record_parse(vd + VD_ROOT_RECORD, 34, pos, root) < 0 ||
	    !(root->flags & DRF_DIRECTORY) || root->data_length == 0)
		return fail(err, errlen, -EINVAL, "%s volume descriptor: invalid root directory "
			    "record", which);
	uint64_t at = (uint64_t)root->extent * ISO_SECTOR;
	if (at > img->dev_size || root->data_length > img->dev_size - at)
		return fail(err, errlen, -EINVAL, "%s root directory lies outside the image "
			    "(truncated image?)", which);
	return 0;
}

/* The 14-byte CD-XA record that mkisofs -XA puts before the System Use entries ("XA" at 6). */
#define XA_RECORD 14

/* Rock Ridge: the SP entry opens the System Use area of the root's "." record, or follows its
 * CD-XA record (then SP's LEN_SKP says to skip that record in every other one too). Returns
 * true and fills rr (the root's own attributes) when the tree has Rock Ridge. */
static bool detect_rock(struct iso_image *img, const struct iso_record *root, struct rr_info *rr)
{
	uint8_t sec[ISO_SECTOR];
	struct iso_record dot;
	uint64_t at = (uint64_t)root->extent * ISO_SECTOR;
	if (iso_dev_read(img, sec, ISO_SECTOR, at) < 0 ||
	    iso_record_parse(sec, ISO_SECTOR, at, &dot) < 0 || !iso_record_is_dot(&dot))
		return false;
	size_t sp = 0;
	if (dot.su_len >= XA_RECORD + 7 && dot.su[6] == 'X' && dot.su[7] == 'A')
		sp = XA_RECORD;
	if (dot.su_len < sp + 7 || dot.su[sp] != 'S' || dot.su[sp + 1] != 'P')
		return false;
	if (!susp_parse(img, dot.su + sp, dot.su_len - sp, rr)) {
		vo_warn("%s: the root's Rock Ridge entries are corrupt (%s): Rock Ridge ignored",
			vo_block_name(img->dev), rr->corrupt);
		return false;
	}
	if (!(rr->have & RR_SP) || !(rr->have & RR_ROCK_SIGNS))
		return false;
	img->susp_skip = rr->sp_skip;
	return true;
}

static int make_root(struct iso_image *img, const struct iso_record *rec, const struct rr_info *rr)
{
	struct iso_node *n = iso_arena_alloc(img, sizeof *n);
	struct iso_extent *e = iso_arena_alloc(img, sizeof *e);
	if (!n || !e)
		return -ENOMEM;
	e->start = (uint64_t)rec->extent * ISO_SECTOR;
	e->length = rec->data_length;
	n->extents = e;
	n->nextents = 1;
	n->ino = e->start;
	n->parent = n;
	iso_node_defaults(img, n, rec, true);
	if (rr)
		iso_node_apply_rr(img, n, rr, true);
	n->size = rec->data_length;
	img->root = n;
	return iso_dirtab_add(img, rec->extent, n);
}

int iso_image_open(struct vo_block *dev, const struct iso_options *opt, struct iso_image **out,
		   char *err, size_t errlen)
{
	struct iso_image *img = calloc(1, sizeof *img);
	struct descriptors *d = calloc(1, sizeof *d);
	if (!img || !d) {
		free(img);
		free(d);
		vo_block_close(dev);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	pthread_mutex_init(&img->lock, NULL);
	img->dev = dev;
	img->dev_size = vo_block_size(dev);
	img->opt = *opt;
	img->rr_entry = malloc(sizeof *img->rr_entry);
	img->rr_target = malloc(sizeof *img->rr_target);
	int r = 0;
	if (!img->rr_entry || !img->rr_target)
		r = fail(err, errlen, -ENOMEM, "out of memory");
	else if (img->dev_size < (ISO_VD_START + 2) * (uint64_t)ISO_SECTOR)
		r = fail(err, errlen, -EINVAL, "not an ISO 9660 image (only %llu bytes)",
			 (unsigned long long)img->dev_size);
	else
		r = choose_session(img, err, errlen);
	if (r == 0) {
		read_descriptors(img, d);
		if (!d->have_pvd)
			r = fail(err, errlen, -EINVAL, "no primary volume descriptor in the session "
				 "at block %u", img->session_start);
	}
	struct iso_record proot, jroot;
	if (r == 0)
		r = root_record(img, d->pvd, &proot, "primary", err, errlen);
	if (r == 0 && d->have_joliet && root_record(img, d->svd, &jroot, "Joliet", err, errlen) < 0) {
		vo_warn("%s: %s: Joliet ignored", vo_block_name(dev), err);
		d->have_joliet = false;
	}
	if (r == 0) {
		img->has_joliet = d->have_joliet;
		img->has_rock = detect_rock(img, &proot, img->rr_target);
		memcpy(img->volume_id, d->pvd + VD_VOLUME_ID, 32);
		for (int i = 31; i >= 0 && img->volume_id[i] == ' '; i--)
			img->volume_id[i] = '\0';
		img->volume_blocks = iso_le32(d->pvd + VD_VOLUME_SPACE);
		if (img->has_rock && !opt->norock) {
			img->ns = ISO_NS_ROCK;
			r = make_root(img, &proot, img->rr_target);
		} else if (img->has_joliet && !opt->nojoliet) {
			img->ns = ISO_NS_JOLIET;
			r = make_root(img, &jroot, NULL);
		} else {
			img->ns = ISO_NS_PLAIN;
			r = make_root(img, &proot, NULL);
		}
		if (r < 0)
			fail(err, errlen, r, "out of memory");
		img->relaxed = opt->check == 'r' || (opt->check == 0 && img->ns == ISO_NS_JOLIET);
	}
	free(d);
	if (r < 0) {
		iso_image_close(img);
		return r;
	}
	*out = img;
	return 0;
}

void iso_image_close(struct iso_image *img)
{
	if (!img)
		return;
	iso_arena_free(img);
	free(img->dirtab);
	free(img->rr_entry);
	free(img->rr_target);
	pthread_mutex_destroy(&img->lock);
	vo_block_close(img->dev);
	free(img);
}
