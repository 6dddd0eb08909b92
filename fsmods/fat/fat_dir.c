/* See fat_dir.h. */
#include "fat_dir.h"

#include "fat_endian.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint32_t fat_de_first_cluster(const uint8_t *e, bool fat32)
{
	/* FAT12/16 keep other things in the high word (OS/2 extended attributes): ignore it */
	return (fat32 ? (uint32_t)le16(e + DE_FIRST_HI) << 16 : 0) | le16(e + DE_FIRST_LO);
}

void fat_de_set_first_cluster(uint8_t *e, uint32_t c, bool fat32)
{
	if (fat32)
		put_le16(e + DE_FIRST_HI, (uint16_t)(c >> 16));
	put_le16(e + DE_FIRST_LO, (uint16_t)c);
}

static uint32_t sfn_hash(const uint8_t *sfn)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < 11; i++)
		h = (h ^ sfn[i]) * 16777619u;
	return h;
}

static bool is_lfn(const uint8_t *e)
{
	return (e[DE_ATTR] & 0x3F) == FAT_ATTR_LFN;
}

static void name_free(struct fat_dir_name *nm)
{
	if (nm) {
		free(nm->key);
		free(nm->name);
		free(nm);
	}
}

static void index_insert(struct fat_dir *d, uint32_t slot)
{
	struct fat_dir_name *nm = d->names[slot];
	uint32_t mask = d->nbuckets - 1;
	nm->next = d->buckets[nm->hash & mask];
	d->buckets[nm->hash & mask] = (int32_t)slot;
	nm->sfn_next = d->sfn_buckets[nm->sfn_hash & mask];
	d->sfn_buckets[nm->sfn_hash & mask] = (int32_t)slot;
}

static void index_unlink(struct fat_dir *d, uint32_t slot)
{
	struct fat_dir_name *nm = d->names[slot];
	uint32_t mask = d->nbuckets - 1;
	int32_t *p = &d->buckets[nm->hash & mask];
	while (*p >= 0 && *p != (int32_t)slot)
		p = &d->names[*p]->next;
	if (*p == (int32_t)slot)
		*p = nm->next;
	p = &d->sfn_buckets[nm->sfn_hash & mask];
	while (*p >= 0 && *p != (int32_t)slot)
		p = &d->names[*p]->sfn_next;
	if (*p == (int32_t)slot)
		*p = nm->sfn_next;
}

/* Keep the tables at most half full. */
static int index_reserve(struct fat_dir *d, uint32_t want)
{
	if (want * 2 <= d->nbuckets)
		return 0;
	uint32_t nb = d->nbuckets ? d->nbuckets : 16;
	while (want * 2 > nb)
		nb *= 2;
	int32_t *b = malloc(nb * sizeof *b), *sb = malloc(nb * sizeof *sb);
	if (!b || !sb) {
		free(b);
		free(sb);
		return -ENOMEM;
	}
	memset(b, 0xFF, nb * sizeof *b);
	memset(sb, 0xFF, nb * sizeof *sb);
	free(d->buckets);
	free(d->sfn_buckets);
	d->buckets = b;
	d->sfn_buckets = sb;
	d->nbuckets = nb;
	for (uint32_t s = 0; s < d->nslots; s++)
		if (d->names[s])
			index_insert(d, s);
	return 0;
}

/* Make the name shown for an entry safe for the kernel: no '/' or NUL, never "." or "..",
 * and a lone surrogate becomes U+FFFD here, so that the name shown (in UTF-8) is also the name
 * indexed and can be looked up again. */
static void sanitize(uint16_t *u, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (u[i] == '/' || u[i] == 0)
			u[i] = '_';
		else if (u[i] >= 0xD800 && u[i] < 0xDC00 && i + 1 < n && u[i + 1] >= 0xDC00 &&
			 u[i + 1] < 0xE000)
			i++; /* a proper pair */
		else if (u[i] >= 0xD800 && u[i] < 0xE000)
			u[i] = 0xFFFD;
	}
	if ((n == 1 && u[0] == '.') || (n == 2 && u[0] == '.' && u[1] == '.'))
		u[0] = '_';
}

/* Index the name whose entries span [first, slot]: the long name in u (n units, n == 0 when
 * the short name stands alone). */
static int index_name(struct fat_dir *d, uint32_t first, uint32_t slot, uint16_t *u, size_t n)
{
	const uint8_t *e = fat_dir_slot(d, slot);
	uint16_t shortname[12];
	if (n == 0) {
		n = fat_sfn_display(d->cp, d->mode, e + DE_NAME, e[DE_LCASE], shortname);
		u = shortname;
		if (n == 0) {
			shortname[0] = '_';
			n = 1;
		}
	}
	sanitize(u, n);
	struct fat_dir_name *nm = calloc(1, sizeof *nm);
	uint16_t *key = malloc(n * sizeof *key);
	char *name = malloc(3 * n + 1);
	if (!nm || !key || !name || index_reserve(d, d->nnames + 1) < 0) {
		free(nm);
		free(key);
		free(name);
		return -ENOMEM;
	}
	fat_name_fold(u, n, key);
	fat_utf16_to_utf8(u, n, name);
	nm->first_slot = first;
	nm->keylen = (uint16_t)n;
	nm->key = key;
	nm->name = name;
	nm->hash = fat_name_hash(key, n);
	nm->sfn_hash = sfn_hash(e + DE_NAME);
	d->names[slot] = nm;
	d->nnames++;
	index_insert(d, slot);
	if (e[DE_ATTR] & FAT_ATTR_DIR)
		d->nsubdirs++;
	return 0;
}

int fat_dir_init(struct fat_dir *d, uint8_t *raw, uint32_t nslots, const struct fat_codepage *cp,
		 enum fat_shortname_mode mode)
{
	memset(d, 0, sizeof *d);
	d->raw = raw;
	d->nslots = nslots;
	d->cp = cp;
	d->mode = mode;
	d->dotdot_slot = -1;
	d->end = nslots;
	d->names = calloc(nslots ? nslots : 1, sizeof *d->names);
	if (!d->names || index_reserve(d, 8) < 0)
		return -ENOMEM;

	/* the long name being gathered */
	uint16_t lfn[FAT_LFN_MAX_SLOTS * FAT_LFN_CHARS];
	unsigned expect = 0; /* the sequence number the next long-name entry must carry */
	unsigned count = 0;  /* entries in the name */
	uint8_t csum = 0;
	uint32_t first = 0;
	bool have = false;

	for (uint32_t s = 0; s < nslots; s++) {
		const uint8_t *e = fat_dir_slot(d, s);
		if (e[0] == 0x00) {
			d->end = s;
			break;
		}
		if (e[0] == 0xE5) {
			have = false;
			continue;
		}
		if (is_lfn(e)) {
			unsigned ord = e[0] & 0x3F;
			if (e[0] & 0x40) {
				have = ord >= 1 && ord <= FAT_LFN_MAX_SLOTS;
				count = expect = ord;
				csum = e[13];
				first = s;
			} else if (!have || ord != expect - 1 || e[13] != csum) {
				have = false;
				continue;
			} else {
				expect = ord;
			}
			if (have)
				fat_lfn_unpack(e, lfn + (ord - 1) * FAT_LFN_CHARS);
			continue;
		}
		bool use_lfn = have && expect == 1 && csum == fat_lfn_checksum(e + DE_NAME);
		have = false;
		if (e[DE_ATTR] & FAT_ATTR_VOLUME)
			continue; /* the volume label (or a volume-and-directory entry, which is invalid) */
		if (e[0] == '.' && (memcmp(e, ".          ", 11) == 0 ||
				    memcmp(e, "..         ", 11) == 0)) {
			if (e[1] == '.')
				d->dotdot_slot = (int32_t)s;
			continue;
		}
		size_t n = 0;
		if (use_lfn) {
			size_t total = (size_t)count * FAT_LFN_CHARS;
			while (n < total && lfn[n] != 0x0000)
				n++;
			if (n == 0 || n > FAT_NAME_MAX)
				n = 0; /* an empty or overlong long name: show the short one */
		}
		if (index_name(d, use_lfn && n ? first : s, s, lfn, n) < 0)
			return -ENOMEM;
	}
	d->free_hint = 0;
	return 0;
}

void fat_dir_free(struct fat_dir *d)
{
	if (d->names)
		for (uint32_t s = 0; s < d->nslots; s++)
			name_free(d->names[s]);
	free(d->names);
	free(d->buckets);
	free(d->sfn_buckets);
	free(d->raw);
	memset(d, 0, sizeof *d);
}

int32_t fat_dir_lookup(const struct fat_dir *d, const uint16_t *u, size_t n)
{
	uint16_t key[FAT_NAME_MAX];
	if (n == 0 || n > FAT_NAME_MAX)
		return -1;
	fat_name_fold(u, n, key);
	uint32_t h = fat_name_hash(key, n);
	for (int32_t s = d->buckets[h & (d->nbuckets - 1)]; s >= 0; s = d->names[s]->next) {
		const struct fat_dir_name *nm = d->names[s];
		if (nm->hash == h && nm->keylen == n && memcmp(nm->key, key, n * sizeof *key) == 0)
			return s;
	}
	uint8_t sfn[11];
	if (fat_sfn_of_query(d->cp, u, n, sfn))
		return fat_dir_find_sfn(d, sfn);
	return -1;
}

int32_t fat_dir_find_sfn(const struct fat_dir *d, const uint8_t sfn[11])
{
	uint32_t h = sfn_hash(sfn);
	for (int32_t s = d->sfn_buckets[h & (d->nbuckets - 1)]; s >= 0; s = d->names[s]->sfn_next)
		if (d->names[s]->sfn_hash == h && memcmp(fat_dir_slot(d, (uint32_t)s), sfn, 11) == 0)
			return s;
	return -1;
}

static bool slot_free(const struct fat_dir *d, uint32_t s)
{
	return s >= d->end || fat_dir_slot(d, s)[0] == 0xE5;
}

int32_t fat_dir_find_free(struct fat_dir *d, unsigned k)
{
	uint32_t run = 0;
	bool first_free_seen = false;
	for (uint32_t s = d->free_hint; s < d->nslots; s++) {
		if (!slot_free(d, s)) {
			run = 0;
			continue;
		}
		if (!first_free_seen) {
			d->free_hint = s; /* everything before is in use */
			first_free_seen = true;
		}
		if (s >= d->end) /* the rest is all free */
			return d->nslots - s + run >= k ? (int32_t)(s - run) : -1;
		if (++run == k)
			return (int32_t)(s - k + 1);
	}
	if (!first_free_seen)
		d->free_hint = d->nslots;
	return -1;
}

int fat_dir_grow(struct fat_dir *d, uint32_t nslots)
{
	if (nslots <= d->nslots)
		return 0;
	uint8_t *raw = realloc(d->raw, (size_t)nslots * FAT_ENTRY_SIZE);
	if (!raw)
		return -ENOMEM;
	d->raw = raw;
	memset(raw + (size_t)d->nslots * FAT_ENTRY_SIZE, 0,
	       (size_t)(nslots - d->nslots) * FAT_ENTRY_SIZE);
	struct fat_dir_name **names = realloc(d->names, nslots * sizeof *names);
	if (!names)
		return -ENOMEM;
	memset(names + d->nslots, 0, (nslots - d->nslots) * sizeof *names);
	d->names = names;
	/* end stays: when the directory was full it is the old size, the first new slot */
	if (d->free_hint > d->nslots)
		d->free_hint = d->nslots;
	d->nslots = nslots;
	return 0;
}

int fat_dir_build_entries(struct fat_dir *d, const uint16_t *u, size_t n,
			  uint8_t entries[][FAT_ENTRY_SIZE])
{
	struct fat_sfn_plan plan;
	fat_sfn_plan(d->cp, d->mode, u, n, &plan);
	uint8_t sfn[11];
	memcpy(sfn, plan.name, 11);
	if (plan.need_tail) {
		/* ~1, ~2, ... as Windows 95 and mtools do; a run of names with one basis goes on
		 * from the last tail given rather than testing every taken one again */
		unsigned k = memcmp(d->last_basis, plan.name, 11) == 0 ? d->last_tail : 0;
		unsigned tried = 0;
		do {
			if (++tried > 999999)
				return -EEXIST;
			k = k >= 999999 ? 1 : k + 1;
			fat_sfn_tail(&plan, k, sfn);
		} while (fat_dir_find_sfn(d, sfn) >= 0);
		memcpy(d->last_basis, plan.name, 11);
		d->last_tail = k;
	}
	unsigned nlfn = plan.need_lfn ? fat_lfn_slots(n) : 0;
	uint8_t csum = fat_lfn_checksum(sfn);
	for (unsigned i = 0; i < nlfn; i++)
		fat_lfn_pack(entries[i], u, n, nlfn - i, csum); /* the highest number comes first */
	uint8_t *e = entries[nlfn];
	memset(e, 0, FAT_ENTRY_SIZE);
	memcpy(e + DE_NAME, sfn, 11);
	e[DE_LCASE] = plan.need_lfn ? 0 : plan.lcase;
	return (int)nlfn + 1;
}

void fat_dir_mark_dirty(struct fat_dir *d, uint32_t slot, uint32_t count)
{
	size_t lo = (size_t)slot * FAT_ENTRY_SIZE, hi = (size_t)(slot + count) * FAT_ENTRY_SIZE;
	if (d->dirty_lo >= d->dirty_hi) {
		d->dirty_lo = lo;
		d->dirty_hi = hi;
		return;
	}
	if (lo < d->dirty_lo)
		d->dirty_lo = lo;
	if (hi > d->dirty_hi)
		d->dirty_hi = hi;
}

bool fat_dir_take_dirty(struct fat_dir *d, size_t *lo, size_t *hi)
{
	if (d->dirty_lo >= d->dirty_hi)
		return false;
	*lo = d->dirty_lo;
	*hi = d->dirty_hi;
	d->dirty_lo = d->dirty_hi = 0;
	return true;
}

int32_t fat_dir_insert(struct fat_dir *d, uint32_t first, uint8_t entries[][FAT_ENTRY_SIZE],
		       unsigned k)
{
	if (first + k > d->nslots || k == 0)
		return -EINVAL;
	for (unsigned i = 0; i < k; i++)
		memcpy(fat_dir_slot(d, first + i), entries[i], FAT_ENTRY_SIZE);
	fat_dir_mark_dirty(d, first, k);
	if (first + k > d->end) {
		d->end = first + k;
		/* an end mark right after, so nothing left beyond the old end reads as entries */
		if (d->end < d->nslots && fat_dir_slot(d, d->end)[0] != 0x00) {
			fat_dir_slot(d, d->end)[0] = 0x00;
			fat_dir_mark_dirty(d, d->end, 1);
		}
	}
	uint32_t slot = first + k - 1;
	uint16_t lfn[FAT_LFN_MAX_SLOTS * FAT_LFN_CHARS];
	size_t n = 0;
	if (k > 1) {
		for (unsigned i = 0; i + 1 < k; i++)
			fat_lfn_unpack(entries[i], lfn + (k - 2 - i) * FAT_LFN_CHARS);
		while (n < (size_t)(k - 1) * FAT_LFN_CHARS && lfn[n] != 0x0000)
			n++;
	}
	int r = index_name(d, first, slot, lfn, n);
	return r < 0 ? r : (int32_t)slot;
}

void fat_dir_remove(struct fat_dir *d, uint32_t slot)
{
	struct fat_dir_name *nm = d->names[slot];
	if (!nm)
		return;
	index_unlink(d, slot);
	/* Long-name slots right before the entry that were not accepted as its name (a wrong
	 * checksum, a broken sequence) can have belonged to no other entry: a long name always
	 * ends at the short entry that follows it. They go with it rather than stay orphaned. */
	uint32_t first = nm->first_slot;
	while (first > 0) {
		const uint8_t *e = fat_dir_slot(d, first - 1);
		if (e[0] == 0 || e[0] == 0xE5 || (e[DE_ATTR] & 0x3F) != FAT_ATTR_LFN)
			break;
		first--;
	}
	for (uint32_t s = first; s <= slot; s++)
		fat_dir_slot(d, s)[0] = 0xE5;
	fat_dir_mark_dirty(d, first, slot - first + 1);
	if (fat_dir_slot(d, slot)[DE_ATTR] & FAT_ATTR_DIR)
		d->nsubdirs--;
	if (first < d->free_hint)
		d->free_hint = first;
	d->names[slot] = NULL;
	d->nnames--;
	name_free(nm);
}

int32_t fat_dir_next(const struct fat_dir *d, uint32_t from)
{
	for (uint32_t s = from; s < d->end && s < d->nslots; s++)
		if (d->names[s])
			return (int32_t)s;
	return -1;
}
