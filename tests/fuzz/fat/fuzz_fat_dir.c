/* libFuzzer harness: directory entries and long names (fat_dir.c, fat_names.c). The input is
 * a directory's bytes; its first byte also chooses the short-name mode and the OEM code page
 * short names are shown in (437, 850, 852, 866 or 1252, whose undefined bytes test the
 * display of bytes a code page has no character for). Every name found must be valid UTF-8 without '/' and be found again by
 * a case-insensitive lookup; then names are added (with ~N tails) and removed, and a parse of
 * the result must agree with the index kept in memory. */
#include "fat_dir.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned codepages[] = { 437, 850, 852, 866, 1252 };
#define NCODEPAGES (sizeof codepages / sizeof *codepages)
static struct fat_codepage cps[NCODEPAGES];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	char why[64];
	fat_names_init();
	for (size_t i = 0; i < NCODEPAGES; i++)
		if (fat_codepage_load(&cps[i], codepages[i], why, sizeof why) < 0)
			abort(); /* the harness would test less than it says */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t nslots = (uint32_t)(size / 32);
	if (nslots == 0 || nslots > 4096)
		return 0;
	uint8_t *raw = malloc((size_t)nslots * 32);
	memcpy(raw, data, (size_t)nslots * 32);
	struct fat_dir d;
	enum fat_shortname_mode mode = (enum fat_shortname_mode)(data[0] % 4);
	const struct fat_codepage *cp = &cps[(data[0] >> 2) % NCODEPAGES];
	if (fat_dir_init(&d, raw, nslots, cp, mode) < 0) {
		fat_dir_free(&d);
		return 0;
	}
	uint16_t u[FAT_NAME_UTF8_MAX];
	for (int32_t s = fat_dir_next(&d, 0); s >= 0; s = fat_dir_next(&d, (uint32_t)s + 1)) {
		const char *name = d.names[s]->name;
		if (strchr(name, '/') || !*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			abort();
		int n = fat_utf8_to_utf16(name, strlen(name), u, FAT_NAME_UTF8_MAX);
		if (n <= 0)
			abort(); /* what we show must be valid UTF-8 */
		if (fat_dir_lookup(&d, u, (size_t)n) < 0)
			abort(); /* and must be found again */
	}
	/* add names that collide in their short forms, then remove every other entry */
	uint8_t entries[FAT_LFN_MAX_SLOTS + 1][32];
	for (int i = 0; i < 12; i++) {
		char name[64];
		snprintf(name, sizeof name, "A Long Colliding Name %d.txt", i);
		int n = fat_utf8_to_utf16(name, strlen(name), u, FAT_NAME_UTF8_MAX);
		if (fat_dir_lookup(&d, u, (size_t)n) >= 0)
			continue;
		int k = fat_dir_build_entries(&d, u, (size_t)n, entries);
		if (k < 0)
			continue;
		int32_t first = fat_dir_find_free(&d, (unsigned)k);
		if (first < 0 && fat_dir_grow(&d, d.nslots + 64) == 0)
			first = fat_dir_find_free(&d, (unsigned)k);
		if (first >= 0 && fat_dir_insert(&d, (uint32_t)first, entries, (unsigned)k) >= 0 &&
		    fat_dir_lookup(&d, u, (size_t)n) < 0)
			abort();
	}
	int odd = 0;
	for (int32_t s = fat_dir_next(&d, 0); s >= 0; s = fat_dir_next(&d, (uint32_t)s + 1))
		if (odd++ & 1)
			fat_dir_remove(&d, (uint32_t)s);
	/* the bytes, parsed afresh, hold the same names */
	uint8_t *copy = malloc((size_t)d.nslots * 32);
	memcpy(copy, d.raw, (size_t)d.nslots * 32);
	struct fat_dir e;
	if (fat_dir_init(&e, copy, d.nslots, cp, mode) == 0) {
		if (e.nnames != d.nnames)
			abort();
		for (int32_t s = fat_dir_next(&d, 0); s >= 0; s = fat_dir_next(&d, (uint32_t)s + 1))
			if (!e.names[s] || strcmp(e.names[s]->name, d.names[s]->name) != 0)
				abort();
	}
	fat_dir_free(&e);
	fat_dir_free(&d);
	return 0;
}
