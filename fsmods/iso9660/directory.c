/* Directories: records parsed into nodes, once per directory, then looked up through a hash
 * index. This is where the namespaces meet (Rock Ridge, Joliet, plain names), where the records
 * of a multi-extent file are joined, and where Rock Ridge relocation is undone: a CL entry
 * stands for the directory it points to, and the relocated directory itself (marked RE) is not
 * shown where the writer had to put it.
 *
 * Hostile records are bounded here: a record that overruns its sector or has impossible lengths
 * makes the whole directory EIO (its listing cannot be trusted past that point); a record whose
 * Rock Ridge area is corrupt, a CL that leads back up the tree or whose target does not point
 * back with PL, is one entry that answers EIO while its siblings stay readable. */
#include "isofs.h"
#include "names.h"
#include "ondisk.h"
#include "susp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* --- records --- */

int iso_record_parse(const uint8_t *p, size_t avail, uint64_t pos, struct iso_record *r)
{
	if (avail < DR_MIN_LENGTH)
		return -EIO;
	uint8_t len = p[DR_LENGTH], nl = p[DR_NAME_LENGTH];
	if (len < DR_MIN_LENGTH || len > avail || nl == 0 || DR_NAME + (size_t)nl > len)
		return -EIO;
	uint32_t extent = iso_le32(p + DR_EXTENT), xar = p[DR_XAR_LENGTH];
	if (extent > UINT32_MAX - xar)
		return -EIO;
	r->pos = pos;
	r->length = len;
	r->flags = p[DR_FLAGS];
	r->extent = extent + xar; /* the data follows the extended attribute record */
	r->data_length = iso_le32(p + DR_DATA_LENGTH);
	r->unit_size = p[DR_UNIT_SIZE];
	r->gap_size = p[DR_GAP_SIZE];
	r->date = iso_date7(p + DR_DATE);
	r->name = p + DR_NAME;
	r->name_len = nl;
	/* a padding byte follows a name of even length, so the System Use area starts even */
	size_t su = DR_NAME + (size_t)nl + (nl % 2 == 0);
	r->su = p + su;
	r->su_len = su < len ? len - su : 0;
	return 0;
}

bool iso_record_is_dot(const struct iso_record *r)
{
	return r->name_len == 1 && r->name[0] == 0;
}

bool iso_record_is_dotdot(const struct iso_record *r)
{
	return r->name_len == 1 && r->name[0] == 1;
}

/* The System Use area of a record, after the LEN_SKP bytes that SP asked us to skip. */
static bool parse_rr(struct iso_image *img, const struct iso_record *r, struct rr_info *rr)
{
	size_t skip = img->susp_skip < r->su_len ? img->susp_skip : r->su_len;
	return susp_parse(img, r->su + skip, r->su_len - skip, rr);
}

/* --- the directory table --- */

static uint32_t block_hash(uint32_t block)
{
	return block * 2654435761u;
}

struct iso_node *iso_dirtab_find(struct iso_image *img, uint32_t block)
{
	if (!img->dirtab)
		return NULL;
	for (uint32_t i = block_hash(block) & img->dirtab_mask;; i = (i + 1) & img->dirtab_mask) {
		struct iso_node *n = img->dirtab[i];
		if (!n)
			return NULL;
		if (n->extents[0].start / ISO_SECTOR == block)
			return n;
	}
}

int iso_dirtab_add(struct iso_image *img, uint32_t block, struct iso_node *n)
{
	if (img->dirtab_count + 1 > (img->dirtab_mask + 1) / 2) {
		uint32_t size = img->dirtab ? (img->dirtab_mask + 1) * 2 : 256;
		struct iso_node **t = calloc(size, sizeof *t);
		if (!t)
			return -ENOMEM;
		for (uint32_t i = 0; img->dirtab && i <= img->dirtab_mask; i++) {
			struct iso_node *m = img->dirtab[i];
			if (!m)
				continue;
			uint32_t j = block_hash((uint32_t)(m->extents[0].start / ISO_SECTOR)) & (size - 1);
			while (t[j])
				j = (j + 1) & (size - 1);
			t[j] = m;
		}
		free(img->dirtab);
		img->dirtab = t;
		img->dirtab_mask = size - 1;
	}
	uint32_t i = block_hash(block) & img->dirtab_mask;
	while (img->dirtab[i])
		i = (i + 1) & img->dirtab_mask;
	img->dirtab[i] = n;
	img->dirtab_count++;
	return 0;
}

/* --- building a listing --- */

struct listing {
	struct iso_dirent *ents;
	uint32_t count, cap;
	struct iso_node *dir;
	const char *dir_name_hint; /* for warnings */
};

static int add_entry(struct iso_image *img, struct listing *l, const char *name, size_t len,
		     struct iso_node *n)
{
	if (l->count == l->cap) {
		uint32_t cap = l->cap ? l->cap * 2 : 32;
		struct iso_dirent *e = realloc(l->ents, cap * sizeof *e);
		if (!e)
			return -ENOMEM;
		l->ents = e;
		l->cap = cap;
	}
	char *copy = iso_arena_strndup(img, name, len);
	if (!copy)
		return -ENOMEM;
	l->ents[l->count++] = (struct iso_dirent){
		.name = copy, .namelen = (uint32_t)len, .hash = iso_name_hash(name, len), .node = n,
	};
	return 0;
}

static struct iso_node *new_node(struct iso_image *img, struct iso_node *parent, uint64_t ino,
				 uint64_t start, uint64_t length)
{
	struct iso_node *n = iso_arena_alloc(img, sizeof *n);
	struct iso_extent *e = iso_arena_alloc(img, sizeof *e);
	if (!n || !e)
		return NULL;
	n->parent = parent;
	n->ino = ino;
	e->start = start;
	e->length = length;
	n->extents = e;
	n->nextents = 1;
	return n;
}

static int append_extent(struct iso_image *img, struct iso_node *n, const struct iso_record *r)
{
	/* Multi-extent files have a handful of extents (4 GiB each): copying is fine. */
	struct iso_extent *e = iso_arena_alloc(img, (n->nextents + 1) * sizeof *e);
	if (!e)
		return -ENOMEM;
	memcpy(e, n->extents, n->nextents * sizeof *e);
	e[n->nextents].start = (uint64_t)r->extent * ISO_SECTOR;
	e[n->nextents].length = r->data_length;
	n->extents = e;
	n->nextents++;
	if (!n->zisofs && !n->data_error)
		n->size += r->data_length;
	return 0;
}

static bool is_ancestor_or_self(struct iso_node *dir, uint32_t block)
{
	for (struct iso_node *a = dir;; a = a->parent) {
		if (a->extents[0].start / ISO_SECTOR == block)
			return true;
		if (a->parent == a)
			return false;
	}
}

/* A CL entry: the directory relocated to `block`. Its attributes come from its own "." record,
 * and its ".." must carry a PL back to dir, or this is not the relocation it claims to be. */
static struct iso_node *relocated_dir(struct iso_image *img, struct iso_node *dir,
				      const struct iso_record *cl_rec, uint32_t block,
				      const char **why)
{
	struct iso_node *n = iso_dirtab_find(img, block);
	if (is_ancestor_or_self(dir, block)) {
		*why = "CL entry that leads back up the tree";
		return NULL;
	}
	if (n)
		return n; /* already known: reached twice means the image lies; show it once */

	uint8_t sec[ISO_SECTOR];
	struct iso_record dot, dotdot;
	uint64_t at = (uint64_t)block * ISO_SECTOR;
	if (iso_dev_read(img, sec, ISO_SECTOR, at) < 0 ||
	    iso_record_parse(sec, ISO_SECTOR, at, &dot) < 0 || !iso_record_is_dot(&dot) ||
	    !(dot.flags & DRF_DIRECTORY) || dot.extent != block ||
	    iso_record_parse(sec + dot.length, ISO_SECTOR - dot.length, at + dot.length, &dotdot) < 0 ||
	    !iso_record_is_dotdot(&dotdot)) {
		*why = "CL entry that does not point at a directory";
		return NULL;
	}
	struct rr_info *rr = img->rr_target;
	uint32_t dir_block = (uint32_t)(dir->extents[0].start / ISO_SECTOR);
	if (!parse_rr(img, &dotdot, rr) || !(rr->have & RR_PL) || rr->pl_block != dir_block) {
		*why = "relocated directory whose PL does not lead back";
		return NULL;
	}
	n = new_node(img, dir, at, at, dot.data_length);
	if (!n || iso_dirtab_add(img, block, n) < 0) {
		*why = "out of memory";
		return NULL;
	}
	iso_node_defaults(img, n, cl_rec, true);
	if (parse_rr(img, &dot, rr))
		iso_node_apply_rr(img, n, rr, true);
	n->size = dot.data_length;
	return n;
}

/* One directory entry (not "." or ".."): the node it names, or NULL when it is not shown. */
static struct iso_node *make_node(struct iso_image *img, struct iso_node *dir,
				  const struct iso_record *r, struct rr_info *rr, bool rr_ok)
{
	bool is_dir = (r->flags & DRF_DIRECTORY) != 0;
	struct iso_node *n;
	if (rr && rr_ok && (rr->have & RR_CL)) {
		const char *why = NULL;
		n = relocated_dir(img, dir, r, rr->cl_block, &why);
		if (n)
			return n;
		iso_warn(img, "directory record at byte %llu: %s", (unsigned long long)r->pos, why);
		n = new_node(img, dir, r->pos, 0, 0);
		if (n) {
			iso_node_defaults(img, n, r, true);
			n->error = EIO;
		}
		return n;
	}
	uint64_t start = (uint64_t)r->extent * ISO_SECTOR;
	if (is_dir) {
		if (is_ancestor_or_self(dir, r->extent)) {
			iso_warn(img, "directory record at byte %llu leads back up the tree",
				 (unsigned long long)r->pos);
			n = new_node(img, dir, r->pos, 0, 0);
			if (n) {
				iso_node_defaults(img, n, r, true);
				n->error = EIO;
			}
			return n;
		}
		n = iso_dirtab_find(img, r->extent);
		if (n)
			return n; /* a second record for a known directory: the same node */
		n = new_node(img, dir, start, start, r->data_length);
		if (!n || iso_dirtab_add(img, r->extent, n) < 0)
			return NULL;
	} else {
		n = new_node(img, dir, r->pos, start, r->data_length);
		if (!n)
			return NULL;
	}
	iso_node_defaults(img, n, r, is_dir);
	n->size = r->data_length;
	if (rr) {
		if (rr_ok) {
			iso_node_apply_rr(img, n, rr, is_dir);
		} else {
			iso_warn(img, "directory record at byte %llu: %s", (unsigned long long)r->pos,
				 rr->corrupt);
			n->error = EIO;
		}
	}
	if (!is_dir && (r->unit_size || r->gap_size) && !n->error) {
		/* Interleaved files: no writer has made them since the 1990s. */
		iso_warn(img, "file at byte %llu is interleaved, which is not supported",
			 (unsigned long long)r->pos);
		n->data_error = EIO;
	}
	return n;
}

static int build_index(struct iso_image *img, struct iso_node *dir, struct listing *l)
{
	struct iso_dir *d = iso_arena_alloc(img, sizeof *d);
	if (!d)
		return -ENOMEM;
	uint32_t slots = 8;
	while (slots < l->count * 2u)
		slots *= 2;
	d->count = l->count;
	d->ents = iso_arena_alloc(img, (l->count ? l->count : 1) * sizeof *d->ents);
	d->htab = iso_arena_alloc(img, slots * sizeof *d->htab);
	if (!d->ents || !d->htab)
		return -ENOMEM;
	if (l->count)
		memcpy(d->ents, l->ents, l->count * sizeof *d->ents);
	d->hmask = slots - 1;
	for (uint32_t i = 0; i < l->count; i++) {
		uint32_t s = d->ents[i].hash & d->hmask;
		while (d->htab[s])
			s = (s + 1) & d->hmask;
		d->htab[s] = i + 1;
	}
	dir->dir = d;
	return 0;
}

/* Parse the records of dir. img->lock held. */
static int load_dir(struct iso_image *img, struct iso_node *dir)
{
	if (dir->error)
		return -dir->error;
	const uint64_t start = dir->extents[0].start, length = dir->extents[0].length;
	if (length > ISO_MAX_DIR_BYTES) {
		iso_warn(img, "directory at block %llu claims %llu bytes: refused",
			 (unsigned long long)(start / ISO_SECTOR), (unsigned long long)length);
		return -EIO;
	}
	uint8_t *buf = malloc(length ? (size_t)length : 1);
	if (!buf)
		return -ENOMEM;
	int r = iso_dev_read(img, buf, (size_t)length, start);
	if (r < 0) {
		iso_warn(img, "directory at block %llu lies outside the image",
			 (unsigned long long)(start / ISO_SECTOR));
		free(buf);
		return r;
	}

	struct listing l = { .dir = dir };
	struct rr_info *rr = img->rr_entry;
	struct iso_node *pending = NULL; /* a multi-extent file waiting for its next record */
	struct iso_record prev = { 0 };
	char name[ISO_NAME_BUF];
	for (uint64_t off = 0; off < length && r == 0;) {
		size_t in_sector = (size_t)(off % ISO_SECTOR);
		size_t avail = ISO_SECTOR - in_sector;
		if (avail > length - off)
			avail = (size_t)(length - off);
		if (buf[off] == 0) { /* the rest of this sector is padding */
			off += ISO_SECTOR - in_sector;
			continue;
		}
		struct iso_record rec;
		if (iso_record_parse(buf + off, avail, start + off, &rec) < 0) {
			iso_warn(img, "directory record at byte %llu overruns its sector or is malformed",
				 (unsigned long long)(start + off));
			r = -EIO;
			break;
		}
		off += rec.length;
		if (iso_record_is_dot(&rec) || iso_record_is_dotdot(&rec))
			continue;
		if (pending) {
			bool same = rec.name_len == prev.name_len &&
				    memcmp(rec.name, prev.name, rec.name_len) == 0 &&
				    !(rec.flags & DRF_DIRECTORY);
			if (same) {
				r = append_extent(img, pending, &rec);
				if (!(rec.flags & DRF_MULTI_EXTENT))
					pending = NULL;
				continue;
			}
			/* the chain ended without its last record: keep what it had */
			pending = NULL;
		}
		if (rec.flags & DRF_ASSOCIATED)
			continue;

		bool rr_ok = true;
		if (img->ns == ISO_NS_ROCK) {
			rr_ok = parse_rr(img, &rec, rr);
			if (rr_ok && (rr->have & RR_RE))
				continue; /* shown at its CL entry */
			if (rr_ok && rr->name_dot)
				continue;
		}
		size_t len;
		if (img->ns == ISO_NS_JOLIET) {
			len = iso_name_joliet(rec.name, rec.name_len, name);
		} else if (rr_ok && img->ns == ISO_NS_ROCK && (rr->have & RR_NM)) {
			len = rr->name_len;
			memcpy(name, rr->name, len);
		} else {
			len = iso_name_map(rec.name, rec.name_len, img->opt.map_off, name);
		}
		if (!iso_name_valid(name, len)) {
			iso_warn(img, "directory record at byte %llu has a name Linux cannot show",
				 (unsigned long long)rec.pos);
			continue;
		}
		struct iso_node *n = make_node(img, dir, &rec,
					       img->ns == ISO_NS_ROCK ? rr : NULL, rr_ok);
		if (!n) {
			r = -ENOMEM;
			break;
		}
		r = add_entry(img, &l, name, len, n);
		if ((rec.flags & DRF_MULTI_EXTENT) && !(rec.flags & DRF_DIRECTORY) && !n->error) {
			pending = n;
			prev = rec;
		}
	}
	free(buf);
	if (r == 0)
		r = build_index(img, dir, &l);
	free(l.ents);
	return r;
}

int iso_dir_get(struct iso_image *img, struct iso_node *dir, const struct iso_dir **out)
{
	if (!S_ISDIR(dir->mode))
		return -ENOTDIR;
	int st = atomic_load_explicit(&dir->dir_state, memory_order_acquire);
	if (st == 0) {
		pthread_mutex_lock(&img->lock);
		st = atomic_load_explicit(&dir->dir_state, memory_order_relaxed);
		if (st == 0) {
			int r = load_dir(img, dir);
			st = r < 0 ? r : 1;
			atomic_store_explicit(&dir->dir_state, st, memory_order_release);
		}
		pthread_mutex_unlock(&img->lock);
	}
	if (st < 0)
		return st;
	*out = dir->dir;
	return 0;
}

int iso_lookup(struct iso_image *img, struct iso_node *dir, const char *name,
	       struct iso_node **out)
{
	const struct iso_dir *d;
	int r = iso_dir_get(img, dir, &d);
	if (r < 0)
		return r;
	size_t len = strlen(name);
	uint32_t h = iso_name_hash(name, len);
	struct iso_node *folded = NULL;
	for (uint32_t s = h & d->hmask; d->htab[s]; s = (s + 1) & d->hmask) {
		const struct iso_dirent *e = &d->ents[d->htab[s] - 1];
		if (e->hash != h)
			continue;
		if (iso_name_equal(e->name, e->namelen, name, len, false)) {
			*out = e->node;
			return 0;
		}
		if (img->relaxed && !folded && iso_name_equal(e->name, e->namelen, name, len, true))
			folded = e->node;
	}
	if (!folded)
		return -ENOENT;
	*out = folded;
	return 0;
}
