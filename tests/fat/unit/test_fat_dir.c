/* Unit tests of fsmods/fat/fat_dir.c: parsing a directory (long names accepted only with the
 * right sequence and checksum, labels, dot entries, deleted entries, the end mark), lookups that
 * ignore case and find short names, ~N collisions past ~9, free-slot search and reuse. */
#include "check.h"
#include "fat_dir.h"
#include "fat_endian.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct fat_codepage cp;

static size_t u16(const char *s, uint16_t *out)
{
	int n = fat_utf8_to_utf16(s, strlen(s), out, 1024);
	return n < 0 ? 0 : (size_t)n;
}

static void new_dir(struct fat_dir *d, uint32_t nslots, enum fat_shortname_mode mode)
{
	CHECK_EQ(fat_dir_init(d, calloc(nslots, 32), nslots, &cp, mode), 0);
}

/* Create name in d as the volume does; returns the short slot. */
static int32_t add(struct fat_dir *d, const char *name, uint8_t attr)
{
	uint16_t u[1024];
	uint8_t entries[FAT_LFN_MAX_SLOTS + 1][32];
	size_t n = u16(name, u);
	int k = fat_dir_build_entries(d, u, n, entries);
	if (k < 0)
		return k;
	entries[k - 1][DE_ATTR] = attr;
	int32_t first = fat_dir_find_free(d, (unsigned)k);
	if (first < 0)
		return -ENOSPC;
	return fat_dir_insert(d, (uint32_t)first, entries, (unsigned)k);
}

static int32_t find(const struct fat_dir *d, const char *name)
{
	uint16_t u[1024];
	size_t n = u16(name, u);
	return fat_dir_lookup(d, u, n);
}

/* Parse a copy of d's bytes as a fresh directory. */
static void reparse(const struct fat_dir *d, struct fat_dir *out)
{
	uint8_t *raw = malloc((size_t)d->nslots * 32);
	memcpy(raw, d->raw, (size_t)d->nslots * 32);
	CHECK_EQ(fat_dir_init(out, raw, d->nslots, &cp, d->mode), 0);
}

static void test_create_and_reparse(void)
{
	struct fat_dir d, e;
	new_dir(&d, 64, FAT_SN_MIXED);
	int32_t a = add(&d, "README.TXT", FAT_ATTR_ARCHIVE);
	int32_t b = add(&d, "A long name with spaces.text", FAT_ATTR_ARCHIVE);
	int32_t c = add(&d, "Sub", FAT_ATTR_DIR);
	int32_t u = add(&d, "été-наш-日本.txt", FAT_ATTR_ARCHIVE);
	CHECK_EQ(a, 0);  /* no long name: one slot */
	CHECK_EQ(b, 4);  /* 28 units: three long-name slots (1-3), then the short one */
	CHECK_EQ(c, 6);  /* "Sub": one long-name slot (mixed case), then the short one */
	CHECK(u > c);
	CHECK_EQ(d.nnames, 4);
	CHECK_EQ(d.nsubdirs, 1);
	CHECK(memcmp(fat_dir_slot(&d, 4), "ALONGN~1TEX", 11) == 0);
	reparse(&d, &e);
	CHECK_EQ(e.nnames, 4);
	CHECK_EQ(e.nsubdirs, 1);
	CHECK_STR(e.names[a]->name, "README.TXT");
	CHECK_STR(e.names[b]->name, "A long name with spaces.text");
	CHECK_STR(e.names[c]->name, "Sub");
	CHECK_STR(e.names[u]->name, "été-наш-日本.txt");
	CHECK_EQ(e.names[b]->first_slot, 0 + 1);
	CHECK_EQ(e.end, (uint32_t)u + 1);
	/* lookups ignore case, and find short names */
	CHECK_EQ(find(&e, "readme.txt"), a);
	CHECK_EQ(find(&e, "A LONG NAME WITH SPACES.TEXT"), b);
	CHECK_EQ(find(&e, "alongn~1.tex"), b);
	CHECK_EQ(find(&e, "SUB"), c);
	CHECK_EQ(find(&e, "ÉTÉ-НАШ-日本.TXT"), u);
	CHECK_EQ(find(&e, "nothere"), -1);
	fat_dir_free(&e);
	fat_dir_free(&d);
}

static void test_tails_past_nine(void)
{
	struct fat_dir d;
	new_dir(&d, 256, FAT_SN_MIXED);
	char name[64];
	int32_t slots[12];
	for (int i = 1; i <= 11; i++) {
		snprintf(name, sizeof name, "LongFileName%d.txt", i);
		slots[i] = add(&d, name, FAT_ATTR_ARCHIVE);
		CHECK(slots[i] >= 0);
	}
	CHECK(memcmp(fat_dir_slot(&d, (uint32_t)slots[1]), "LONGFI~1TXT", 11) == 0);
	CHECK(memcmp(fat_dir_slot(&d, (uint32_t)slots[9]), "LONGFI~9TXT", 11) == 0);
	CHECK(memcmp(fat_dir_slot(&d, (uint32_t)slots[10]), "LONGF~10TXT", 11) == 0);
	CHECK(memcmp(fat_dir_slot(&d, (uint32_t)slots[11]), "LONGF~11TXT", 11) == 0);
	/* a tail taken by an existing name is skipped, after a reparse too */
	struct fat_dir e;
	reparse(&d, &e);
	uint8_t sfn[11];
	memcpy(sfn, "LONGF~12TXT", 11);
	CHECK_EQ(fat_dir_find_sfn(&e, sfn), -1);
	int32_t s12 = add(&e, "LongFileName12.txt", FAT_ATTR_ARCHIVE);
	CHECK(memcmp(fat_dir_slot(&e, (uint32_t)s12), "LONGF~12TXT", 11) == 0);
	/* a freed tail is used again by a later name */
	fat_dir_remove(&e, (uint32_t)slots[3]);
	struct fat_dir f;
	reparse(&e, &f);
	int32_t again = add(&f, "LongFileName99.txt", FAT_ATTR_ARCHIVE);
	CHECK(memcmp(fat_dir_slot(&f, (uint32_t)again), "LONGFI~3TXT", 11) == 0);
	CHECK_EQ(again, slots[3]); /* into the freed slots */
	fat_dir_free(&f);
	fat_dir_free(&e);
	fat_dir_free(&d);
}

static void test_case_only_difference_is_one_name(void)
{
	struct fat_dir d;
	new_dir(&d, 16, FAT_SN_MIXED);
	int32_t s = add(&d, "MiXeD", FAT_ATTR_ARCHIVE);
	CHECK_EQ(find(&d, "mixed"), s);
	CHECK_EQ(find(&d, "MIXED"), s);
	fat_dir_free(&d);
}

static void test_winnt_flags_without_long_name(void)
{
	struct fat_dir d, e;
	new_dir(&d, 16, FAT_SN_WINNT);
	int32_t s = add(&d, "readme.txt", FAT_ATTR_ARCHIVE);
	CHECK_EQ(s, 0); /* one slot: no long name */
	CHECK_EQ(fat_dir_slot(&d, 0)[DE_LCASE], 0x18);
	reparse(&d, &e);
	CHECK_STR(e.names[0]->name, "readme.txt");
	fat_dir_free(&e);
	/* the same bytes in lower mode and win95 mode */
	uint8_t *raw = malloc(16 * 32);
	memcpy(raw, d.raw, 16 * 32);
	CHECK_EQ(fat_dir_init(&e, raw, 16, &cp, FAT_SN_WIN95), 0);
	CHECK_STR(e.names[0]->name, "README.TXT");
	fat_dir_free(&e);
	fat_dir_free(&d);
}

/* Hand-made entries: a short entry and long-name entries for it. */
static void put_short(uint8_t *e, const char *sfn, uint8_t attr)
{
	memset(e, 0, 32);
	memcpy(e, sfn, 11);
	e[DE_ATTR] = attr;
}

static void put_long(uint8_t *e, const char *name, unsigned ord, unsigned total,
		     const char *sfn)
{
	uint16_t u[256];
	size_t n = u16(name, u);
	fat_lfn_pack(e, u, n, ord, fat_lfn_checksum((const uint8_t *)sfn));
	if (ord != total)
		e[0] = (uint8_t)ord;
}

static void test_hostile_long_names(void)
{
	uint8_t *raw = calloc(32, 32);
	const char *name = "A name of twenty-six units"; /* 26 units, 2 entries */
	/* 0-1: a good long name for GOOD */
	put_long(raw + 0, name, 2, 2, "GOOD       ");
	put_long(raw + 32, name, 1, 2, "GOOD       ");
	put_short(raw + 64, "GOOD       ", FAT_ATTR_ARCHIVE);
	/* 3-5: the checksum belongs to another short name */
	put_long(raw + 96, name, 2, 2, "OTHER      ");
	put_long(raw + 128, name, 1, 2, "OTHER      ");
	put_short(raw + 160, "BADSUM     ", FAT_ATTR_ARCHIVE);
	/* 6-7: the middle entry is missing */
	put_long(raw + 192, name, 2, 2, "HOLE       ");
	put_short(raw + 224, "HOLE       ", FAT_ATTR_ARCHIVE);
	/* 8-10: out of order */
	put_long(raw + 256, name, 1, 2, "ORDER      ");
	put_long(raw + 288, name, 2, 2, "ORDER      ");
	put_short(raw + 320, "ORDER      ", FAT_ATTR_ARCHIVE);
	/* 11: a label, 12-13: dot entries, 14: deleted, 15: an orphan long entry, 16: file */
	put_short(raw + 352, "MY LABEL   ", FAT_ATTR_VOLUME);
	put_short(raw + 384, ".          ", FAT_ATTR_DIR);
	put_short(raw + 416, "..         ", FAT_ATTR_DIR);
	put_short(raw + 448, "GONE       ", FAT_ATTR_ARCHIVE);
	raw[448] = 0xE5;
	put_long(raw + 480, "orphan", 1, 1, "NOBODY     ");
	put_short(raw + 512, "LAST    TXT", FAT_ATTR_ARCHIVE);
	/* 17: the end mark, 18: garbage after it that must not be read */
	put_short(raw + 576, "GARBAGE    ", FAT_ATTR_ARCHIVE);
	/* a 0x40 entry claiming 31 parts, and one of 0 parts, before ZERO: ignored */
	struct fat_dir d;
	CHECK_EQ(fat_dir_init(&d, raw, 32, &cp, FAT_SN_MIXED), 0);
	CHECK_EQ(d.nnames, 5);
	CHECK_STR(d.names[2]->name, name);
	CHECK_STR(d.names[5]->name, "BADSUM");
	CHECK_STR(d.names[7]->name, "HOLE");
	CHECK_STR(d.names[10]->name, "ORDER");
	CHECK_STR(d.names[16]->name, "LAST.TXT");
	CHECK_EQ(d.dotdot_slot, 13);
	CHECK(d.names[11] == NULL && d.names[14] == NULL && d.names[18] == NULL);
	CHECK_EQ(d.end, 17);
	/* removing an entry takes the long-name slots right before it that were not accepted as
	 * its name (they can belong to nothing else), and nothing before them */
	fat_dir_remove(&d, 5);
	CHECK_EQ(fat_dir_slot(&d, 3)[0], 0xE5);
	CHECK_EQ(fat_dir_slot(&d, 4)[0], 0xE5);
	CHECK_EQ(fat_dir_slot(&d, 1)[0], 0x01); /* GOOD's own long name stays */
	CHECK_STR(d.names[2]->name, name);
	fat_dir_remove(&d, 16);
	CHECK_EQ(fat_dir_slot(&d, 15)[0], 0xE5); /* the orphan */
	CHECK_EQ(fat_dir_slot(&d, 13)[0], '.'); /* the dot entries before the deleted slot */
	CHECK_EQ(d.nnames, 3);
	/* a new entry at the end seals the old garbage with a new end mark */
	uint8_t entries[FAT_LFN_MAX_SLOTS + 1][32];
	uint16_t u[16];
	int k = fat_dir_build_entries(&d, u, u16("NEW", u), entries);
	CHECK_EQ(k, 1);
	CHECK_EQ(fat_dir_insert(&d, 17, entries, 1), 17);
	CHECK_EQ(fat_dir_slot(&d, 18)[0], 0);
	fat_dir_free(&d);

	raw = calloc(4, 32);
	raw[0] = 0x40 | 31; /* more parts than a name can have */
	raw[11] = 0x0F;
	put_short(raw + 32, "A          ", 0);
	raw[64] = 0x40; /* zero parts */
	raw[64 + 11] = 0x0F;
	put_short(raw + 96, "B          ", 0);
	CHECK_EQ(fat_dir_init(&d, raw, 4, &cp, FAT_SN_MIXED), 0);
	CHECK_STR(d.names[1]->name, "A");
	CHECK_STR(d.names[3]->name, "B");
	fat_dir_free(&d);

	/* names the kernel must never see: '/' and NUL in a long name, a long name ".." */
	raw = calloc(4, 32);
	uint16_t evil[] = { 'a', '/', 'b', 0 };
	fat_lfn_pack(raw, evil, 3, 1, fat_lfn_checksum((const uint8_t *)"EVIL       "));
	put_short(raw + 32, "EVIL       ", 0);
	uint16_t dots[] = { '.', '.' };
	fat_lfn_pack(raw + 64, dots, 2, 1, fat_lfn_checksum((const uint8_t *)"DOTS       "));
	put_short(raw + 96, "DOTS       ", 0);
	CHECK_EQ(fat_dir_init(&d, raw, 4, &cp, FAT_SN_MIXED), 0);
	CHECK_STR(d.names[1]->name, "a_b");
	CHECK_STR(d.names[3]->name, "_.");
	fat_dir_free(&d);
}

static void test_free_slots_and_removal(void)
{
	struct fat_dir d;
	new_dir(&d, 8, FAT_SN_MIXED);
	int32_t a = add(&d, "A", 0), b = add(&d, "B", 0), c = add(&d, "C", 0);
	CHECK(a == 0 && b == 1 && c == 2);
	CHECK_EQ(fat_dir_find_free(&d, 5), 3);
	CHECK_EQ(fat_dir_find_free(&d, 6), -1); /* must grow */
	fat_dir_remove(&d, 1);
	CHECK_EQ(fat_dir_slot(&d, 1)[0], 0xE5);
	CHECK_EQ(find(&d, "B"), -1);
	CHECK_EQ(d.nnames, 2);
	CHECK_EQ(fat_dir_find_free(&d, 1), 1);  /* the hole */
	CHECK_EQ(fat_dir_find_free(&d, 2), 3);  /* too small: after the last entry */
	CHECK_EQ(fat_dir_grow(&d, 16), 0);
	CHECK_EQ(fat_dir_find_free(&d, 10), 3);
	CHECK_EQ(find(&d, "C"), 2); /* still indexed after growing */
	/* removing a long-named entry frees all its slots */
	int32_t l = add(&d, "a rather long name.txt", 0);
	CHECK_EQ(d.names[l]->first_slot, 3);
	fat_dir_remove(&d, (uint32_t)l);
	for (uint32_t s = 3; s <= (uint32_t)l; s++)
		CHECK_EQ(fat_dir_slot(&d, s)[0], 0xE5);
	size_t lo, hi;
	CHECK(fat_dir_take_dirty(&d, &lo, &hi));
	CHECK_EQ(lo, 0);
	CHECK_EQ(hi, ((size_t)l + 1) * 32);
	fat_dir_free(&d);
}

static void test_full_directory_grows(void)
{
	struct fat_dir d, e;
	new_dir(&d, 4, FAT_SN_MIXED);
	for (const char *n = "ABCD"; *n; n++) {
		char name[2] = { *n, 0 };
		CHECK(add(&d, name, 0) >= 0);
	}
	CHECK_EQ(d.end, 4); /* full: no end mark */
	CHECK_EQ(fat_dir_find_free(&d, 1), -1);
	CHECK_EQ(fat_dir_grow(&d, 8), 0);
	CHECK_EQ(fat_dir_find_free(&d, 1), 4);
	CHECK_EQ(fat_dir_find_free(&d, 4), 4);
	CHECK_EQ(fat_dir_find_free(&d, 5), -1);
	/* a name of 21 slots needs the directory to grow more than once */
	char big[256];
	memset(big, 'n', 255);
	big[255] = 0;
	uint16_t u[256];
	uint8_t entries[FAT_LFN_MAX_SLOTS + 1][32];
	int k = fat_dir_build_entries(&d, u, u16(big, u), entries);
	CHECK_EQ(k, 21);
	while (fat_dir_find_free(&d, (unsigned)k) < 0)
		CHECK_EQ(fat_dir_grow(&d, d.nslots + 4), 0);
	CHECK_EQ(d.nslots, 28);
	int32_t first = fat_dir_find_free(&d, (unsigned)k);
	CHECK_EQ(first, 4);
	CHECK_EQ(fat_dir_insert(&d, (uint32_t)first, entries, (unsigned)k), 24);
	reparse(&d, &e);
	CHECK_STR(e.names[24]->name, big);
	CHECK_EQ(e.nnames, 5);
	fat_dir_free(&e);
	fat_dir_free(&d);
}

static void test_many_names_hash_growth(void)
{
	struct fat_dir d;
	new_dir(&d, 4096, FAT_SN_MIXED);
	char name[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, "file-%04d.data", i);
		CHECK(add(&d, name, 0) >= 0);
	}
	CHECK_EQ(d.nnames, 1000);
	int found = 0;
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, "FILE-%04d.DATA", i);
		found += find(&d, name) >= 0;
	}
	CHECK_EQ(found, 1000);
	fat_dir_free(&d);
}

int main(void)
{
	char why[128];
	fat_names_init();
	fat_codepage_load(&cp, 437, why, sizeof why);
	RUN(test_create_and_reparse);
	RUN(test_tails_past_nine);
	RUN(test_case_only_difference_is_one_name);
	RUN(test_winnt_flags_without_long_name);
	RUN(test_hostile_long_names);
	RUN(test_free_slots_and_removal);
	RUN(test_full_directory_grows);
	RUN(test_many_names_hash_growth);
	fat_names_fini();
	return CHECK_DONE();
}
