/* Unit tests of fsmods/fat/fat_names.c: UTF-8 <-> UTF-16, which names FAT accepts, case
 * folding, code pages, short-name generation (basis, ~N tails up to ~10 and beyond, NT case
 * flags for each shortname= mode), how short names are shown, LFN checksums and packing. */
#include "check.h"
#include "fat_endian.h"
#include "fat_names.h"

#include <errno.h>
#include <string.h>

static size_t u16(const char *s, uint16_t *out)
{
	int n = fat_utf8_to_utf16(s, strlen(s), out, 1024);
	return n < 0 ? 0 : (size_t)n;
}

static const char *u8(const uint16_t *u, size_t n)
{
	static char buf[4096];
	fat_utf16_to_utf8(u, n, buf);
	return buf;
}

static void test_utf8_utf16(void)
{
	uint16_t u[1024];
	CHECK_EQ(u16("abc", u), 3);
	CHECK_EQ(fat_utf8_to_utf16("\xc3\xa9", 2, u, 10), 1); /* é */
	CHECK_EQ(u[0], 0xE9);
	CHECK_EQ(fat_utf8_to_utf16("\xe6\x97\xa5", 3, u, 10), 1); /* 日 */
	CHECK_EQ(u[0], 0x65E5);
	CHECK_EQ(fat_utf8_to_utf16("\xf0\x9f\x98\x80", 4, u, 10), 2); /* U+1F600: a pair */
	CHECK_EQ(u[0], 0xD83D);
	CHECK_EQ(u[1], 0xDE00);
	CHECK_STR(u8(u, 2), "\xf0\x9f\x98\x80");
	CHECK_STR(u8((uint16_t[]){ 0x65E5, 0x672C, 0xE9 }, 3), "日本é");
	/* malformed: overlong, encoded surrogate, truncated, stray continuation, too big */
	CHECK_EQ(fat_utf8_to_utf16("\xc0\xaf", 2, u, 10), -EINVAL);
	CHECK_EQ(fat_utf8_to_utf16("\xed\xa0\x80", 3, u, 10), -EINVAL);
	CHECK_EQ(fat_utf8_to_utf16("\xe6\x97", 2, u, 10), -EINVAL);
	CHECK_EQ(fat_utf8_to_utf16("\x80", 1, u, 10), -EINVAL);
	CHECK_EQ(fat_utf8_to_utf16("\xf4\x90\x80\x80", 4, u, 10), -EINVAL);
	CHECK_EQ(fat_utf8_to_utf16("abcd", 4, u, 3), -ENAMETOOLONG);
	/* an unpaired surrogate on disk shows as U+FFFD */
	CHECK_STR(u8((uint16_t[]){ 'a', 0xD800, 'b' }, 3), "a\xef\xbf\xbd" "b");
}

static void test_name_check(void)
{
	uint16_t u[1024];
	size_t n = u16("file...", u);
	CHECK_EQ(fat_name_check(u, &n), 0);
	CHECK_EQ(n, 4); /* trailing dots dropped, as Linux vfat */
	n = u16("...", u);
	CHECK_EQ(fat_name_check(u, &n), -EINVAL);
	n = u16("trailing ", u);
	CHECK_EQ(fat_name_check(u, &n), -EINVAL);
	n = u16(" leading and inner spaces", u);
	CHECK_EQ(fat_name_check(u, &n), 0);
	const char *bad[] = { "a*b", "a?b", "a<b", "a>b", "a|b", "a\"b", "a:b", "a\\b", "a\tb" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		n = u16(bad[i], u);
		CHECK_EQ(fat_name_check(u, &n), -EINVAL);
	}
	const char *good[] = { "a+b,c;d=e[f]", "été", "日本語", "#$%&'()-@^_`{}~!" };
	for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
		n = u16(good[i], u);
		CHECK_EQ(fat_name_check(u, &n), 0);
	}
	char long_name[300];
	memset(long_name, 'x', 255);
	long_name[255] = 0;
	n = u16(long_name, u);
	CHECK_EQ(fat_name_check(u, &n), 0);
	long_name[255] = 'y', long_name[256] = 0;
	n = u16(long_name, u);
	CHECK_EQ(fat_name_check(u, &n), -ENAMETOOLONG);
}

static void test_fold_and_hash(void)
{
	uint16_t a[64], b[64], fa[64], fb[64];
	size_t na = u16("Été-наш-Straße.TXT", a), nb = u16("éTÉ-НАШ-STRAßE.txt", b);
	CHECK_EQ(na, nb);
	fat_name_fold(a, na, fa);
	fat_name_fold(b, nb, fb);
	CHECK(memcmp(fa, fb, na * 2) == 0);
	CHECK_EQ(fat_name_hash(fa, na), fat_name_hash(fb, nb));
	na = u16("abc", a), nb = u16("abd", b);
	fat_name_fold(a, na, fa);
	fat_name_fold(b, nb, fb);
	CHECK(memcmp(fa, fb, na * 2) != 0);
	/* a pair outside the BMP folds as a pair: Deseret small -> capital */
	na = u16("\xf0\x90\x90\xa8", a);
	nb = u16("\xf0\x90\x90\x80", b);
	fat_name_fold(a, na, fa);
	fat_name_fold(b, nb, fb);
	CHECK(memcmp(fa, fb, 4) == 0);
}

static void test_codepages(void)
{
	struct fat_codepage cp;
	char why[128];
	CHECK_EQ(fat_codepage_load(&cp, 437, why, sizeof why), 0);
	CHECK_EQ(cp.to_unicode[0x82], 0xE9);  /* é */
	CHECK_EQ(cp.to_unicode[0x90], 0xC9);  /* É */
	CHECK_EQ(cp.to_unicode['A'], 'A');
	CHECK_EQ(fat_codepage_to_oem(&cp, 0xE9), 0x82);
	CHECK_EQ(fat_codepage_to_oem(&cp, 0x65E5), -1);
	CHECK_EQ(fat_codepage_load(&cp, 850, why, sizeof why), 0);
	CHECK_EQ(fat_codepage_to_oem(&cp, 0xC0), 0xB7); /* À exists in 850, not in 437 */
	CHECK_EQ(fat_codepage_load(&cp, 866, why, sizeof why), 0);
	CHECK_EQ(fat_codepage_to_oem(&cp, 0x0410), 0x80); /* Cyrillic А */
	CHECK_EQ(fat_codepage_load(&cp, 999, why, sizeof why), -1);
	CHECK(strstr(why, "unknown code page 999") != NULL);
	CHECK_EQ(fat_codepage_load(&cp, 932, why, sizeof why), -1);
	CHECK(strstr(why, "double-byte") != NULL);
}

static void plan(const struct fat_codepage *cp, enum fat_shortname_mode mode, const char *name,
		 struct fat_sfn_plan *p)
{
	uint16_t u[1024];
	size_t n = u16(name, u);
	fat_sfn_plan(cp, mode, u, n, p);
}

static void test_short_name_plans(void)
{
	struct fat_codepage cp;
	char why[128];
	struct fat_sfn_plan p;
	fat_codepage_load(&cp, 437, why, sizeof why);
	plan(&cp, FAT_SN_MIXED, "README.TXT", &p);
	CHECK(!p.need_lfn && !p.need_tail);
	CHECK(memcmp(p.name, "README  TXT", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "readme.txt", &p); /* mixed: a long name keeps the case */
	CHECK(p.need_lfn && !p.need_tail);
	CHECK(memcmp(p.name, "README  TXT", 11) == 0);
	plan(&cp, FAT_SN_WINNT, "readme.txt", &p); /* winnt: the NT flags keep it */
	CHECK(!p.need_lfn);
	CHECK_EQ(p.lcase, FAT_LCASE_BASE | FAT_LCASE_EXT);
	plan(&cp, FAT_SN_WINNT, "README.txt", &p);
	CHECK(!p.need_lfn);
	CHECK_EQ(p.lcase, FAT_LCASE_EXT);
	plan(&cp, FAT_SN_WINNT, "ReadMe.txt", &p);
	CHECK(p.need_lfn);
	plan(&cp, FAT_SN_WIN95, "readme", &p);
	CHECK(p.need_lfn);
	plan(&cp, FAT_SN_MIXED, "Makefile", &p);
	CHECK(p.need_lfn && !p.need_tail);
	CHECK(memcmp(p.name, "MAKEFILE   ", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "2024", &p);
	CHECK(!p.need_lfn);
	/* too long, several dots, leading dot, spaces, characters short names forbid */
	plan(&cp, FAT_SN_MIXED, "Long File Name.text", &p);
	CHECK(p.need_lfn && p.need_tail);
	CHECK(memcmp(p.name, "LONGFILETEX", 11) == 0);
	CHECK_EQ(p.base_len, 8);
	plan(&cp, FAT_SN_MIXED, "archive.tar.gz", &p);
	CHECK(memcmp(p.name, "ARCHIVE GZ ", 11) == 0);
	plan(&cp, FAT_SN_MIXED, ".bashrc", &p);
	CHECK(p.need_tail);
	CHECK(memcmp(p.name, "BASHRC     ", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "a+b.txt", &p);
	CHECK(p.need_tail); /* '+' is lossy in a short name */
	CHECK(memcmp(p.name, "A_B     TXT", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "日本.txt", &p);
	CHECK(p.need_tail);
	CHECK(memcmp(p.name, "__      TXT", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "été.txt", &p); /* representable in 437: no tail */
	CHECK(p.need_lfn && !p.need_tail);
	CHECK(memcmp(p.name, "\x90T\x90     TXT", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "...x", &p);
	CHECK(memcmp(p.name, "X          ", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "\xf0\x9f\x98\x80", &p); /* one emoji: one '_' */
	CHECK(memcmp(p.name, "_          ", 11) == 0);
}

static void test_numeric_tails(void)
{
	struct fat_codepage cp;
	char why[128];
	struct fat_sfn_plan p;
	uint8_t out[11];
	fat_codepage_load(&cp, 437, why, sizeof why);
	plan(&cp, FAT_SN_MIXED, "Long File Name.txt", &p);
	fat_sfn_tail(&p, 1, out);
	CHECK(memcmp(out, "LONGFI~1TXT", 11) == 0);
	fat_sfn_tail(&p, 9, out);
	CHECK(memcmp(out, "LONGFI~9TXT", 11) == 0);
	fat_sfn_tail(&p, 10, out);
	CHECK(memcmp(out, "LONGF~10TXT", 11) == 0);
	fat_sfn_tail(&p, 100, out);
	CHECK(memcmp(out, "LONG~100TXT", 11) == 0);
	fat_sfn_tail(&p, 999999, out);
	CHECK(memcmp(out, "L~999999TXT", 11) == 0);
	plan(&cp, FAT_SN_MIXED, "ab cd", &p); /* a short basis keeps its length */
	fat_sfn_tail(&p, 1, out);
	CHECK(memcmp(out, "ABCD~1     ", 11) == 0);
	fat_sfn_tail(&p, 12345, out);
	CHECK(memcmp(out, "AB~12345   ", 11) == 0);
}

static void test_short_name_display_and_query(void)
{
	struct fat_codepage cp;
	char why[128];
	uint16_t u[16];
	fat_codepage_load(&cp, 437, why, sizeof why);
	size_t n = fat_sfn_display(&cp, FAT_SN_MIXED, (const uint8_t *)"README  TXT", 0, u);
	CHECK_STR(u8(u, n), "README.TXT");
	n = fat_sfn_display(&cp, FAT_SN_MIXED, (const uint8_t *)"README  TXT", FAT_LCASE_BASE, u);
	CHECK_STR(u8(u, n), "readme.TXT");
	n = fat_sfn_display(&cp, FAT_SN_WINNT, (const uint8_t *)"README  TXT", 0x18, u);
	CHECK_STR(u8(u, n), "readme.txt");
	n = fat_sfn_display(&cp, FAT_SN_WIN95, (const uint8_t *)"README  TXT", 0x18, u);
	CHECK_STR(u8(u, n), "README.TXT");
	n = fat_sfn_display(&cp, FAT_SN_LOWER, (const uint8_t *)"README  TXT", 0, u);
	CHECK_STR(u8(u, n), "readme.txt");
	n = fat_sfn_display(&cp, FAT_SN_MIXED, (const uint8_t *)"NOEXT      ", 0, u);
	CHECK_STR(u8(u, n), "NOEXT");
	n = fat_sfn_display(&cp, FAT_SN_MIXED, (const uint8_t *)"\x05" "BC     TXT", 0, u);
	CHECK_EQ(u[0], 0x03C3); /* 0x05 stands for 0xE5, which is σ in 437 */
	n = fat_sfn_display(&cp, FAT_SN_MIXED, (const uint8_t *)"\x90T\x90     TXT", 0, u);
	CHECK_STR(u8(u, n), "ÉTÉ.TXT");

	uint8_t sfn[11];
	uint16_t q[32];
	size_t qn = u16("longfi~1.txt", q);
	CHECK(fat_sfn_of_query(&cp, q, qn, sfn));
	CHECK(memcmp(sfn, "LONGFI~1TXT", 11) == 0);
	qn = u16("long file.txt", q);
	CHECK(!fat_sfn_of_query(&cp, q, qn, sfn));
	qn = u16("toolongname.txt", q);
	CHECK(!fat_sfn_of_query(&cp, q, qn, sfn));

	CHECK(fat_sfn_valid((const uint8_t *)"README  TXT"));
	CHECK(fat_sfn_valid((const uint8_t *)"A~1        "));
	CHECK(!fat_sfn_valid((const uint8_t *)" ABC       "));
	CHECK(!fat_sfn_valid((const uint8_t *)"A*B        "));
	CHECK(!fat_sfn_valid((const uint8_t *)"A.B        "));
}

/* The checksum as the specification writes it: rotate right by one, add the next byte. */
static uint8_t reference_checksum(const uint8_t *name)
{
	unsigned sum = 0;
	for (int i = 0; i < 11; i++)
		sum = (((sum >> 1) | (sum << 7)) + name[i]) & 0xFF;
	return (uint8_t)sum;
}

static void test_lfn_checksum_and_packing(void)
{
	const char *names[] = { "README  TXT", "LONGFI~1TXT", "\x90T\x90     TXT", "A          " };
	for (size_t i = 0; i < 4; i++)
		CHECK_EQ(fat_lfn_checksum((const uint8_t *)names[i]),
			 reference_checksum((const uint8_t *)names[i]));
	CHECK(fat_lfn_checksum((const uint8_t *)"LONGFI~1TXT") !=
	      fat_lfn_checksum((const uint8_t *)"LONGFI~2TXT"));

	uint16_t u[64];
	size_t n = u16("A long name, 26 characters", u); /* 26 units: exactly two entries */
	CHECK_EQ(n, 26);
	CHECK_EQ(fat_lfn_slots(n), 2);
	CHECK_EQ(fat_lfn_slots(13), 1);
	CHECK_EQ(fat_lfn_slots(14), 2);
	CHECK_EQ(fat_lfn_slots(255), 20);
	uint8_t e1[32], e2[32];
	fat_lfn_pack(e1, u, n, 1, 0xAB);
	fat_lfn_pack(e2, u, n, 2, 0xAB);
	CHECK_EQ(e1[0], 0x01);
	CHECK_EQ(e2[0], 0x42); /* the last carries 0x40 */
	CHECK_EQ(e1[11], 0x0F);
	CHECK_EQ(e1[13], 0xAB);
	CHECK_EQ(le16(e1 + 26), 0);
	uint16_t back[13];
	fat_lfn_unpack(e2, back);
	CHECK(memcmp(back, u + 13, 13 * 2) == 0); /* full: no terminator */
	/* a shorter name: NUL after it, then 0xFFFF */
	n = u16("short", u);
	fat_lfn_pack(e1, u, n, 1, 0);
	CHECK_EQ(e1[0], 0x41);
	fat_lfn_unpack(e1, back);
	CHECK_EQ(back[4], 't');
	CHECK_EQ(back[5], 0x0000);
	CHECK_EQ(back[6], 0xFFFF);
	CHECK_EQ(back[12], 0xFFFF);
}

static void test_shortname_mode_parse(void)
{
	enum fat_shortname_mode m;
	CHECK_EQ(fat_shortname_mode_parse("winnt", &m), 0);
	CHECK_EQ(m, FAT_SN_WINNT);
	CHECK_EQ(fat_shortname_mode_parse("mixed", &m), 0);
	CHECK_EQ(m, FAT_SN_MIXED);
	CHECK_EQ(fat_shortname_mode_parse("WINNT", &m), -1);
	CHECK_EQ(fat_shortname_mode_parse("dos", &m), -1);
}

int main(void)
{
	fat_names_init();
	RUN(test_utf8_utf16);
	RUN(test_name_check);
	RUN(test_fold_and_hash);
	RUN(test_codepages);
	RUN(test_short_name_plans);
	RUN(test_numeric_tails);
	RUN(test_short_name_display_and_query);
	RUN(test_lfn_checksum_and_packing);
	RUN(test_shortname_mode_parse);
	fat_names_fini();
	return CHECK_DONE();
}
