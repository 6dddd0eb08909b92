/* See fat_claims.h. */
#include "fat_claims.h"

#include "fat_dir.h"
#include "fat_endian.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct scan {
	struct fat_claims *c;
	const struct fat_table *t;
	const struct fat_geometry *g;
	fat_read_fn read;
	void *ctx;
	uint8_t *once;      /* claimed at least once */
	uint8_t *dir_seen;  /* directories already queued (a loop in the tree ends here) */
	uint8_t *scanned;   /* clusters whose entries were counted: a cluster that two damaged
			       directory chains share is read once, so the scan reads at most
			       the volume, whatever the damage */
	uint32_t *todo;     /* first clusters of directories still to read */
	size_t ntodo, cap;
	uint8_t *buf;       /* one cluster */
};

static bool bit(const uint8_t *map, uint32_t i)
{
	return map[i / 8] & (1u << (i % 8));
}

static void set_bit(uint8_t *map, uint32_t i)
{
	map[i / 8] |= (uint8_t)(1u << (i % 8));
}

static void claim(struct scan *s, uint32_t cluster)
{
	if (!fat_valid_cluster(s->t, cluster))
		return; /* names nothing on the volume: the chain is broken, not shared */
	if (!bit(s->once, cluster)) {
		set_bit(s->once, cluster);
	} else if (!bit(s->c->hands_off, cluster)) {
		set_bit(s->c->hands_off, cluster);
		s->c->contested++;
	}
}

static int queue_dir(struct scan *s, uint32_t first)
{
	if (!fat_valid_cluster(s->t, first) || bit(s->dir_seen, first))
		return 0;
	set_bit(s->dir_seen, first);
	if (s->ntodo == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uint32_t *v = realloc(s->todo, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		s->todo = v;
		s->cap = cap;
	}
	s->todo[s->ntodo++] = first;
	return 0;
}

/* The entries of len bytes of a directory: each live one claims its first cluster, and a
 * subdirectory is queued. Returns 1 at the directory's end mark, 0 to go on, or -ENOMEM. */
static int scan_entries(struct scan *s, const uint8_t *p, size_t len)
{
	bool fat32 = s->g->type == FAT32;
	for (size_t off = 0; off + FAT_ENTRY_SIZE <= len; off += FAT_ENTRY_SIZE) {
		const uint8_t *e = p + off;
		if (e[0] == 0)
			return 1; /* nothing after the end mark is read, by us or anyone */
		if (e[0] == 0xE5 || (e[DE_ATTR] & 0x3F) == FAT_ATTR_LFN)
			continue;
		if (memcmp(e, ".          ", 11) == 0 || memcmp(e, "..         ", 11) == 0)
			continue; /* they name the directory itself and its parent, not a claim */
		uint32_t first = fat_de_first_cluster(e, fat32);
		claim(s, first);
		if ((e[DE_ATTR] & FAT_ATTR_DIR) && queue_dir(s, first) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Read one directory (first cluster, or 0 for the fixed root of FAT12/16) and scan it. As far
 * as the driver reads a directory, and no further: the clusters its chain has before any
 * break, at most FAT_DIR_MAX_SLOTS entries. */
static int scan_dir(struct scan *s, uint32_t first)
{
	s->c->dirs++;
	if (first == 0) {
		size_t len = (size_t)s->g->root_entries * FAT_ENTRY_SIZE;
		uint8_t *root = malloc(len ? len : 1);
		if (!root)
			return -ENOMEM;
		int r = 0;
		if (s->read(s->ctx, root, len, s->g->root_offset) == 0)
			r = scan_entries(s, root, len);
		free(root);
		return r < 0 ? r : 0;
	}
	struct fat_extents ext = { 0 };
	int r = fat_chain_extents(s->t, first, &ext); /* on -EIO, the clusters before the break */
	if (r == -ENOMEM) {
		fat_extents_free(&ext);
		return r;
	}
	uint32_t cs = s->g->cluster_size, max = FAT_DIR_MAX_SLOTS * FAT_ENTRY_SIZE / cs + 1;
	r = 0;
	for (uint32_t i = 0; i < ext.total && i < max && r == 0; i++) {
		uint32_t c = fat_extents_cluster(&ext, i);
		if (bit(s->scanned, c))
			continue; /* its entries are counted (the FAT links count the sharing) */
		set_bit(s->scanned, c);
		if (s->read(s->ctx, s->buf, cs, fat_cluster_offset(s->g, c)) < 0)
			break; /* what cannot be read claims nothing */
		r = scan_entries(s, s->buf, cs);
	}
	fat_extents_free(&ext);
	return r < 0 ? r : 0;
}

int fat_claims_scan(struct fat_claims *c, const struct fat_table *t, const struct fat_geometry *g,
		    fat_read_fn read, void *ctx)
{
	memset(c, 0, sizeof *c);
	size_t bytes = t->nentries / 8 + 1;
	struct scan s = { .c = c, .t = t, .g = g, .read = read, .ctx = ctx };
	c->nentries = t->nentries;
	c->hands_off = calloc(bytes, 1);
	s.once = calloc(bytes, 1);
	s.dir_seen = calloc(bytes, 1);
	s.scanned = calloc(bytes, 1);
	s.buf = malloc(g->cluster_size);
	int r = c->hands_off && s.once && s.dir_seen && s.scanned && s.buf ? 0 : -ENOMEM;

	/* every link of the FAT claims the cluster it names */
	for (uint32_t i = 2; r == 0 && i < t->nentries; i++)
		claim(&s, fat_get(t, i));
	/* and every directory entry its first cluster, from the root down */
	if (r == 0 && g->type == FAT32) {
		claim(&s, g->root_cluster);
		r = queue_dir(&s, g->root_cluster);
	} else if (r == 0) {
		r = scan_dir(&s, 0);
	}
	while (r == 0 && s.ntodo)
		r = scan_dir(&s, s.todo[--s.ntodo]);
	/* a free cluster that something claims is never handed out */
	for (uint32_t i = 2; r == 0 && i < t->nentries; i++)
		if (bit(s.once, i) && fat_get(t, i) == FAT_FREE) {
			set_bit(c->hands_off, i);
			c->claimed_free++;
		}
	free(s.once);
	free(s.dir_seen);
	free(s.scanned);
	free(s.todo);
	free(s.buf);
	if (r < 0 || (c->contested == 0 && c->claimed_free == 0)) {
		/* nothing to keep away from: no bitmap to consult on every chain */
		free(c->hands_off);
		c->hands_off = NULL;
	}
	return r;
}

void fat_claims_free(struct fat_claims *c)
{
	free(c->hands_off);
	c->hands_off = NULL;
}

bool fat_claims_touch(const struct fat_claims *c, const struct fat_extents *e)
{
	if (!c->hands_off)
		return false;
	for (size_t i = 0; i < e->n; i++)
		for (uint32_t k = 0; k < e->v[i].count; k++)
			if (fat_claims_hands_off(c, e->v[i].start + k))
				return true;
	return false;
}
