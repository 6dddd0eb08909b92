/* Unit tests of the umfuse-iso9660 reader's pure parts: name mapping (plain, Joliet), dates,
 * directory records and the SUSP / Rock Ridge decoder, including continuation areas read from a
 * memory device and every length check a hostile image could trip. Whole images made by
 * xorriso are the pytest suite's business (tests/iso9660). */
#define _GNU_SOURCE
#include "check.h"

#include "block.h"
#include "isofs.h"
#include "names.h"
#include "ondisk.h"
#include "susp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

static struct rr_info rr;

/* ------------------------------------------------------------------ names */

static const char *mapped(const char *raw, bool off)
{
	static char out[300];
	iso_name_map((const uint8_t *)raw, strlen(raw), off, out);
	return out;
}

static void test_plain_names_are_mapped_like_linux(void)
{
	CHECK_STR(mapped("README.TXT;1", false), "readme.txt");
	CHECK_STR(mapped("MAKEFILE.;1", false), "makefile");
	CHECK_STR(mapped("ARCHIVE.TAR;2", false), "archive.tar.2"); /* only ;1 is dropped */
	CHECK_STR(mapped("NOVERSION", false), "noversion");
	CHECK_STR(mapped("TRAILING.", false), "trailing.");
	CHECK_STR(mapped("A;1", false), "a");
	CHECK_STR(mapped("README.TXT;1", true), "README.TXT;1");
	CHECK_STR(mapped("MAKEFILE.;1", true), "MAKEFILE.;1");
}

static const char *joliet(const uint8_t *raw, size_t len)
{
	static char out[ISO_NAME_BUF];
	iso_name_joliet(raw, len, out);
	return out;
}

static void test_joliet_names_become_utf8(void)
{
	static const uint8_t hello[] = { 0, 'H', 0, 'i', 0, ';', 0, '1' };
	CHECK_STR(joliet(hello, sizeof hello), "Hi");
	static const uint8_t dots[] = { 0, 'a', 0, 'b', 0, '.', 0, '.' };
	CHECK_STR(joliet(dots, sizeof dots), "ab");
	static const uint8_t ete[] = { 0x00, 0xe9, 0x00, 't', 0x65, 0xe5 }; /* é t 日 */
	CHECK_STR(joliet(ete, sizeof ete), "\xc3\xa9t\xe6\x97\xa5");
	static const uint8_t emoji[] = { 0xd8, 0x3d, 0xde, 0x00 };          /* U+1F600 */
	CHECK_STR(joliet(emoji, sizeof emoji), "\xf0\x9f\x98\x80");
	static const uint8_t lone[] = { 0xd8, 0x3d, 0x00, 'x' };           /* a lone high half */
	CHECK_STR(joliet(lone, sizeof lone), "\xef\xbf\xbdx");
	static const uint8_t odd[] = { 0, 'o', 0, 'k', 0x41 };              /* an odd last byte */
	CHECK_STR(joliet(odd, sizeof odd), "ok");
	uint8_t cjk[2 * 100];                                                /* 100 x U+65E5 */
	for (int i = 0; i < 100; i++)
		cjk[2 * i] = 0x65, cjk[2 * i + 1] = 0xe5;
	const char *cut = joliet(cjk, sizeof cjk);
	CHECK_EQ(strlen(cut), 255); /* 85 whole characters of 3 bytes */
	CHECK(memcmp(cut + 252, "\xe6\x97\xa5", 3) == 0);
}

static void test_names_linux_cannot_hold_are_invalid(void)
{
	char n255[256], n256[257];
	memset(n255, 'x', 255);
	memset(n256, 'x', 256);
	CHECK(iso_name_valid(n255, 255));
	CHECK(!iso_name_valid(n256, 256));
	CHECK(!iso_name_valid("", 0));
	CHECK(!iso_name_valid(".", 1));
	CHECK(!iso_name_valid("..", 2));
	CHECK(iso_name_valid("...", 3));
	CHECK(!iso_name_valid("a/b", 3));
	CHECK(!iso_name_valid("a\0b", 3));
}

static void test_relaxed_comparison_folds_ascii_case_only(void)
{
	CHECK(iso_name_hash("ReadMe", 6) == iso_name_hash("README", 6));
	CHECK(iso_name_equal("ReadMe", 6, "README", 6, true));
	CHECK(!iso_name_equal("ReadMe", 6, "README", 6, false));
	CHECK(!iso_name_equal("\xc3\xa9", 2, "\xc3\x89", 2, true)); /* é and É: not ASCII */
	CHECK(!iso_name_equal("abc", 3, "abcd", 4, true));
}

/* ------------------------------------------------------------------ dates */

static void test_seven_byte_dates(void)
{
	static const uint8_t epoch[7] = { 70, 1, 1, 0, 0, 0, 0 };
	CHECK_EQ(iso_date7(epoch).tv_sec, 0);
	static const uint8_t y2k[7] = { 100, 1, 1, 0, 0, 0, 0 };
	CHECK_EQ(iso_date7(y2k).tv_sec, 946684800);
	static const uint8_t plus1h[7] = { 100, 1, 1, 1, 0, 0, 4 };   /* 01:00 at GMT+1 */
	CHECK_EQ(iso_date7(plus1h).tv_sec, 946684800);
	static const uint8_t minus[7] = { 100, 1, 1, 0, 0, 0, (uint8_t)-8 }; /* GMT-2 */
	CHECK_EQ(iso_date7(minus).tv_sec, 946684800 + 7200);
	static const uint8_t leap[7] = { 124, 2, 29, 12, 30, 15, 0 };
	CHECK_EQ(iso_date7(leap).tv_sec, 1709209815);
	static const uint8_t far[7] = { 199, 8, 1, 0, 0, 0, 0 };      /* 2099, past 2038 */
	CHECK_EQ(iso_date7(far).tv_sec, 4089225600LL);
	static const uint8_t bad_month[7] = { 100, 13, 1, 0, 0, 0, 0 };
	CHECK_EQ(iso_date7(bad_month).tv_sec, 0);
	static const uint8_t bad_zone[7] = { 100, 1, 1, 0, 0, 0, 100 }; /* ignored */
	CHECK_EQ(iso_date7(bad_zone).tv_sec, 946684800);
}

static void test_seventeen_byte_dates(void)
{
	uint8_t d[17];
	memcpy(d, "2000010112000050", 16);
	d[16] = (uint8_t)-8;
	struct timespec t = iso_date17(d);
	CHECK_EQ(t.tv_sec, 946728000 + 7200);
	CHECK_EQ(t.tv_nsec, 500000000);
	memcpy(d, "0000000000000000", 16);
	d[16] = 0;
	CHECK_EQ(iso_date17(d).tv_sec, 0); /* "not specified" */
	memcpy(d, "20x0010112000050", 16);
	CHECK_EQ(iso_date17(d).tv_sec, 0);
}

/* ------------------------------------------------------------------ records */

static void test_directory_records_are_bounds_checked(void)
{
	uint8_t rec[64] = { 0 };
	struct iso_record r;
	rec[DR_LENGTH] = 40;
	rec[DR_XAR_LENGTH] = 2;
	rec[DR_EXTENT] = 100;
	rec[DR_DATA_LENGTH] = 0x34;
	rec[DR_DATA_LENGTH + 1] = 0x12;
	rec[DR_FLAGS] = DRF_DIRECTORY;
	rec[DR_NAME_LENGTH] = 2;
	memcpy(rec + DR_NAME, "AB", 2);
	CHECK_EQ(iso_record_parse(rec, sizeof rec, 5000, &r), 0);
	CHECK_EQ(r.extent, 102);      /* past the extended attribute record */
	CHECK_EQ(r.data_length, 0x1234);
	CHECK_EQ(r.pos, 5000);
	CHECK_EQ(r.su - rec, 36);     /* 33 + 2, plus the padding byte of an even name */
	CHECK_EQ(r.su_len, 4);
	CHECK(!iso_record_is_dot(&r) && !iso_record_is_dotdot(&r));
	CHECK_EQ(iso_record_parse(rec, 39, 0, &r), -EIO);       /* longer than what is left */
	rec[DR_NAME_LENGTH] = 8;
	CHECK_EQ(iso_record_parse(rec, sizeof rec, 0, &r), -EIO); /* the name overruns */
	rec[DR_NAME_LENGTH] = 0;
	CHECK_EQ(iso_record_parse(rec, sizeof rec, 0, &r), -EIO);
	rec[DR_NAME_LENGTH] = 1;
	rec[DR_LENGTH] = 20;
	CHECK_EQ(iso_record_parse(rec, sizeof rec, 0, &r), -EIO); /* below the minimum */
	rec[DR_LENGTH] = 34;
	rec[DR_NAME] = 1;
	CHECK_EQ(iso_record_parse(rec, sizeof rec, 0, &r), 0);
	CHECK(iso_record_is_dotdot(&r));
	CHECK_EQ(iso_record_parse(rec, 20, 0, &r), -EIO);
	memset(rec + DR_EXTENT, 0xff, 4);
	CHECK_EQ(iso_record_parse(rec, sizeof rec, 0, &r), -EIO); /* extent + XAR overflows */
}

/* ------------------------------------------------------------------ SUSP / Rock Ridge */

struct su {
	uint8_t b[8192];
	size_t n;
};

static void put(struct su *s, const char *sig, const void *payload, size_t len)
{
	s->b[s->n] = (uint8_t)sig[0];
	s->b[s->n + 1] = (uint8_t)sig[1];
	s->b[s->n + 2] = (uint8_t)(len + 4);
	s->b[s->n + 3] = 1;
	memcpy(s->b + s->n + 4, payload, len);
	s->n += len + 4;
}

static void both32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
		p[7 - i] = (uint8_t)(v >> (8 * i));
	}
}

static void test_rock_ridge_attributes_names_and_links(void)
{
	struct su s = { .n = 0 };
	uint8_t px[32];
	both32(px, 0100644);
	both32(px + 8, 3);
	both32(px + 16, 1234);
	both32(px + 24, 5678);
	put(&s, "PX", px, sizeof px);
	uint8_t tf[1 + 2 * 7] = { 0x06 }; /* modify and access, short form */
	static const uint8_t d1[7] = { 100, 1, 1, 0, 0, 0, 0 }, d2[7] = { 70, 1, 2, 0, 0, 0, 0 };
	memcpy(tf + 1, d1, 7);
	memcpy(tf + 8, d2, 7);
	put(&s, "TF", tf, sizeof tf);
	put(&s, "NM", "\x01long-", 6);          /* CONTINUE */
	put(&s, "NM", "\x00name", 5);
	/* SL: /usr/lo + cal (a component continued into the next SL entry) / .. */
	put(&s, "SL", "\x01\x08\x00\x00\x03usr\x01\x02lo", 12);
	put(&s, "SL", "\x00\x00\x03" "cal\x04\x00", 8);
	uint8_t pn[16];
	both32(pn, 0);
	both32(pn + 8, 0x10010301); /* glibc's dev_t of 259:65537 */
	put(&s, "PN", pn, sizeof pn);
	CHECK(susp_parse(NULL, s.b, s.n, &rr));
	CHECK_EQ(rr.have & (RR_PX | RR_TF | RR_NM | RR_SL | RR_PN), RR_PX | RR_TF | RR_NM | RR_SL | RR_PN);
	CHECK_EQ(rr.mode, 0100644);
	CHECK_EQ(rr.nlink, 3);
	CHECK_EQ(rr.uid, 1234);
	CHECK_EQ(rr.gid, 5678);
	CHECK_EQ(rr.times, RR_TIME_MODIFY | RR_TIME_ACCESS);
	CHECK_EQ(rr.mtime.tv_sec, 946684800);
	CHECK_EQ(rr.atime.tv_sec, 86400);
	CHECK_STR(rr.name, "long-name");
	CHECK_STR(rr.link, "/usr/local/..");
	CHECK_EQ(major(rr.rdev), 259);
	CHECK_EQ(minor(rr.rdev), 65537);
	/* genisoimage's way: major and minor in the two words */
	s.n = 0;
	both32(pn, 1);
	both32(pn + 8, 3);
	put(&s, "PN", pn, sizeof pn);
	CHECK(susp_parse(NULL, s.b, s.n, &rr));
	CHECK_EQ(major(rr.rdev), 1);
	CHECK_EQ(minor(rr.rdev), 3);
}

static void test_relocation_and_zisofs_entries(void)
{
	struct su s = { .n = 0 };
	uint8_t cl[8];
	both32(cl, 77);
	put(&s, "CL", cl, 8);
	put(&s, "RE", "", 0);
	put(&s, "ZF", "pz\x04\x0f\x80\xa9\x03\x00\x00\x03\xa9\x80", 12);
	CHECK(susp_parse(NULL, s.b, s.n, &rr));
	CHECK_EQ(rr.cl_block, 77);
	CHECK(rr.have & RR_RE);
	CHECK_EQ(rr.zf_version, 1);
	CHECK_EQ(rr.zf_log2_block, 15);
	CHECK_EQ(rr.zf_size, 240000);
	s.n = 0;
	put(&s, "Z2", "PZ\x06\x11\x00\x00\x00\x00\x01\x00\x00\x00", 12);
	CHECK(susp_parse(NULL, s.b, s.n, &rr));
	CHECK_EQ(rr.zf_version, 2);
	CHECK_EQ(rr.zf_size, 1ull << 32);
}

static void test_padding_and_st_end_an_area(void)
{
	struct su s = { .n = 0 };
	put(&s, "NM", "\x00one", 4);
	s.n += 3; /* zero padding */
	CHECK(susp_parse(NULL, s.b, s.n, &rr));
	CHECK_STR(rr.name, "one");
	s.n = 0;
	put(&s, "NM", "\x00two", 4);
	put(&s, "ST", "", 0);
	s.b[s.n] = 0xff; /* garbage after ST is not read */
	s.n += 8;
	CHECK(susp_parse(NULL, s.b, s.n, &rr));
	CHECK_STR(rr.name, "two");
}

static void test_bad_lengths_mark_the_area_corrupt(void)
{
	struct su s = { .n = 0 };
	put(&s, "NM", "\x00x", 2);
	s.b[2] = 3; /* an entry length below 4 */
	CHECK(!susp_parse(NULL, s.b, s.n, &rr) && rr.corrupt);
	s.n = 0;
	put(&s, "NM", "\x00x", 2);
	s.b[2] = 40; /* overruns the area */
	CHECK(!susp_parse(NULL, s.b, s.n, &rr));
	s.n = 0;
	put(&s, "PX", "0123456789012345678901234567", 28);
	CHECK(!susp_parse(NULL, s.b, s.n, &rr));
	s.n = 0;
	put(&s, "SL", "\x00\x00\x09short", 8); /* a component longer than its entry */
	CHECK(!susp_parse(NULL, s.b, s.n, &rr));
	s.n = 0;
	put(&s, "TF", "\x0e\x01\x02", 3);      /* three stamps announced, none there */
	CHECK(!susp_parse(NULL, s.b, s.n, &rr));
	s.n = 0;
	char name[250];
	memset(name, 'n', sizeof name);
	name[0] = 1;
	put(&s, "NM", name, 200);
	put(&s, "NM", name, 60); /* 199 + 59 > 255 */
	CHECK(!susp_parse(NULL, s.b, s.n, &rr));
	CHECK_STR(rr.corrupt, "Rock Ridge name longer than 255 bytes");
	s.n = 0;
	uint8_t sl[250] = { 1 };
	for (int i = 0; i < 20; i++) {
		sl[1] = 1, sl[2] = 240;   /* one 240-byte component, continued */
		memset(sl + 3, 'p', 240);
		put(&s, "SL", sl, 243);
	}
	CHECK(!susp_parse(NULL, s.b, s.n, &rr));
	CHECK_STR(rr.corrupt, "symlink target longer than 4095 bytes");
}

/* A device in memory for the continuation areas. */
static struct iso_image *memory_image(struct vo_block **dev)
{
	char err[256];
	*dev = vo_block_open("mem:64K", 0, err, sizeof err);
	CHECK(*dev != NULL);
	struct iso_image *img = calloc(1, sizeof *img);
	img->dev = *dev;
	img->dev_size = vo_block_size(*dev);
	return img;
}

static void put_ce(struct su *s, uint32_t block, uint32_t offset, uint32_t len)
{
	uint8_t ce[24];
	both32(ce, block);
	both32(ce + 8, offset);
	both32(ce + 16, len);
	put(s, "CE", ce, sizeof ce);
}

static void test_continuation_areas_are_followed_and_bounded(void)
{
	struct vo_block *dev;
	struct iso_image *img = memory_image(&dev);
	struct su area = { .n = 0 }, s = { .n = 0 };
	put(&area, "NM", "\x00" "continued", 10);
	CHECK_EQ(vo_block_pwrite(dev, area.b, area.n, 3 * 2048 + 100), (ssize_t)area.n);
	put(&s, "PX", (uint8_t[32]){ 0 }, 32);
	put_ce(&s, 3, 100, (uint32_t)area.n);
	CHECK(susp_parse(img, s.b, s.n, &rr));
	CHECK_STR(rr.name, "continued");
	CHECK(rr.have & RR_PX);

	/* a continuation area whose CE points at itself: stopped, not followed forever */
	area.n = 0;
	put_ce(&area, 5, 0, 28);
	CHECK_EQ(vo_block_pwrite(dev, area.b, area.n, 5 * 2048), (ssize_t)area.n);
	s.n = 0;
	put_ce(&s, 5, 0, 28);
	CHECK(!susp_parse(img, s.b, s.n, &rr));
	CHECK_STR(rr.corrupt, "too many SUSP continuation areas (a loop?)");

	s.n = 0;
	put_ce(&s, 1000, 0, 100); /* beyond the 64 KiB device */
	CHECK(!susp_parse(img, s.b, s.n, &rr));
	CHECK_STR(rr.corrupt, "SUSP continuation area outside the image");
	s.n = 0;
	put_ce(&s, 3, 2000, 100); /* across a block boundary */
	CHECK(!susp_parse(img, s.b, s.n, &rr));
	CHECK_STR(rr.corrupt, "SUSP continuation area crosses a block");
	free(img);
	vo_block_close(dev);
}

int main(void)
{
	RUN(test_plain_names_are_mapped_like_linux);
	RUN(test_joliet_names_become_utf8);
	RUN(test_names_linux_cannot_hold_are_invalid);
	RUN(test_relaxed_comparison_folds_ascii_case_only);
	RUN(test_seven_byte_dates);
	RUN(test_seventeen_byte_dates);
	RUN(test_directory_records_are_bounds_checked);
	RUN(test_rock_ridge_attributes_names_and_links);
	RUN(test_relocation_and_zisofs_entries);
	RUN(test_padding_and_st_end_an_area);
	RUN(test_bad_lengths_mark_the_area_corrupt);
	RUN(test_continuation_areas_are_followed_and_bounded);
	return CHECK_DONE();
}
