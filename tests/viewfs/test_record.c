/* Unit tests of the viewfs layer record format (viewfs/record.c, docs/viewfs-layer-format.md):
 * what vufs writes parses, what viewfs writes parses back to the same record, and anything
 * malformed is reported as corrupt instead of half-read. */
#include "check.h"
#include "record.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int parse(const char *text, struct vrecord *rec)
{
	char err[128];
	return vrecord_parse(text, strlen(text), rec, err, sizeof err);
}

static void test_vufs_record(void)
{
	struct vrecord rec;
	CHECK_EQ(parse("type=c\nmode=0644\nuid=0\ngid=5\nrdev=1,3\nctime=1700000000,12\n", &rec), 0);
	CHECK_EQ(rec.has, VREC_TYPE | VREC_MODE | VREC_UID | VREC_GID | VREC_RDEV | VREC_CTIME);
	CHECK_EQ(rec.type, S_IFCHR);
	CHECK_EQ(rec.mode, 0644);
	CHECK_EQ(rec.uid, 0);
	CHECK_EQ(rec.gid, 5);
	CHECK_EQ(major(rec.rdev), 1);
	CHECK_EQ(minor(rec.rdev), 3);
	CHECK_EQ(rec.ctime.tv_sec, 1700000000);
	CHECK_EQ(rec.ctime.tv_nsec, 12);
	vrecord_clear(&rec);
	/* '-' is a regular file to vufs; the last line may lack its newline */
	CHECK_EQ(parse("type=-\nmode=04755", &rec), 0);
	CHECK_EQ(rec.type, S_IFREG);
	CHECK_EQ(rec.mode, 04755);
	vrecord_clear(&rec);
}

static void test_extensions_round_trip(void)
{
	struct vrecord rec = { 0 }, back;
	rec.has = VREC_INO | VREC_OPAQUE | VREC_MODE;
	rec.ino = (UINT64_C(1) << 56) | 12345;
	rec.mode = 01777;
	vrecord_set_redirect(&rec, "/usr/lib/a\nb\\c\x7f" "d");
	size_t len;
	char *text = vrecord_format(&rec, &len);
	CHECK(text != NULL);
	CHECK(strstr(text, "redirect=/usr/lib/a\\nb\\\\c\\x7fd\n") != NULL);
	CHECK(strstr(text, "mode=01777\n") != NULL);
	CHECK_EQ(parse(text, &back), 0);
	CHECK_EQ(back.has, rec.has);
	CHECK_EQ(back.ino, rec.ino);
	CHECK_EQ(back.mode, 01777);
	CHECK_STR(back.redirect, rec.redirect);
	free(text);
	vrecord_clear(&rec);
	vrecord_clear(&back);
}

static void test_unknown_keys_are_kept(void)
{
	struct vrecord rec;
	CHECK_EQ(parse("dev=8,1\nmode=0600\nfuture_key=x y z\n", &rec), 0);
	CHECK_EQ(rec.has, VREC_MODE);
	size_t len;
	char *text = vrecord_format(&rec, &len);
	CHECK_STR(text, "mode=0600\ndev=8,1\nfuture_key=x y z\n");
	free(text);
	vrecord_clear(&rec);
}

static void test_empty_record(void)
{
	struct vrecord rec;
	CHECK_EQ(parse("", &rec), 0);
	CHECK(vrecord_empty(&rec));
	CHECK_EQ(parse("\n\nopaque=0\n", &rec), 0);
	CHECK(vrecord_empty(&rec));
	size_t len;
	char *text = vrecord_format(&rec, &len);
	CHECK_EQ(len, 0);
	free(text);
	vrecord_clear(&rec);
}

static void test_corrupt_records(void)
{
	static const char *const bad[] = {
		"mode=0999\n", "mode=\n", "mode=-1\n", "mode=010000\n", "uid=abc\n",
		"uid=4294967295\n", "gid=99999999999\n", "type=x\n", "type=cc\n", "rdev=1\n",
		"rdev=1,\n", "ctime=1,1000000000\n", "ino=0\n", "ino=18446744073709551616\n",
		"opaque=2\n", "redirect=relative\n", "redirect=/a/../b\n", "redirect=/a//b\n",
		"redirect=/\n", "redirect=/a\\q\n", "no equals sign\n", "=value\n", "Mode=0644\n",
		"link=\n", "link=../x\n", "link=a/b\n", "link=ABC\n",
		"link=123456789012345678901234567890123\n", "nlink=x\n", "nlink=4294967296\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct vrecord rec;
		char err[128] = "";
		int r = vrecord_parse(bad[i], strlen(bad[i]), &rec, err, sizeof err);
		if (r != -1)
			fprintf(stderr, "accepted: %s", bad[i]);
		CHECK_EQ(r, -1);
		CHECK(err[0] != '\0');
	}
	struct vrecord rec;
	char err[128];
	CHECK_EQ(vrecord_parse("mode=0644\0uid=1\n", 16, &rec, err, sizeof err), -1);
	char *big = malloc(VREC_MAX_SIZE + 2);
	memset(big, '\n', VREC_MAX_SIZE + 1);
	CHECK_EQ(vrecord_parse(big, VREC_MAX_SIZE + 1, &rec, err, sizeof err), -1);
	free(big);
}

static void test_shared_record_keys_round_trip(void)
{
	struct vrecord rec, back;
	CHECK_EQ(parse("mode=0600\nlink=l0123456789abcdef\nnlink=3\n", &rec), 0);
	CHECK_EQ(rec.has, VREC_MODE | VREC_LINK | VREC_NLINK);
	CHECK_STR(rec.link, "l0123456789abcdef");
	CHECK_EQ(rec.nlink, 3);
	size_t len;
	char *text = vrecord_format(&rec, &len);
	CHECK_EQ(parse(text, &back), 0);
	CHECK_STR(back.link, rec.link);
	CHECK_EQ(back.nlink, 3);
	free(text);
	vrecord_set_link(&back, NULL);
	CHECK_EQ(back.has, VREC_MODE | VREC_NLINK);
	struct vrecord copy;
	CHECK_EQ(vrecord_copy(&copy, &rec), 0);
	CHECK(copy.link != rec.link);
	CHECK_STR(copy.link, "l0123456789abcdef");
	vrecord_clear(&copy);
	vrecord_clear(&rec);
	vrecord_clear(&back);
}

static void test_escape_round_trip(void)
{
	const char *text = "mode=0644\nredirect=/a\\nb\n\x7f";
	char *esc = vrecord_escape(text);
	CHECK(esc != NULL);
	CHECK(strchr(esc, '\n') == NULL);
	char *back = vrecord_unescape(esc, strlen(esc));
	CHECK_STR(back, text);
	free(esc);
	free(back);
	CHECK(vrecord_unescape("a\\q", 3) == NULL);
	char *p = vrecord_parse_path("/x/y", 4);
	CHECK_STR(p, "/x/y");
	free(p);
	CHECK(vrecord_parse_path("/x/../y", 7) == NULL);
}

static void test_copy(void)
{
	struct vrecord rec, copy;
	CHECK_EQ(parse("redirect=/x\nzz=1\nuid=7\n", &rec), 0);
	CHECK_EQ(vrecord_copy(&copy, &rec), 0);
	CHECK_STR(copy.redirect, "/x");
	CHECK_STR(copy.extra, "zz=1\n");
	CHECK(copy.redirect != rec.redirect);
	vrecord_clear(&rec);
	CHECK_EQ(copy.uid, 7);
	vrecord_clear(&copy);
}

int main(void)
{
	RUN(test_vufs_record);
	RUN(test_extensions_round_trip);
	RUN(test_unknown_keys_are_kept);
	RUN(test_empty_record);
	RUN(test_corrupt_records);
	RUN(test_copy);
	RUN(test_shared_record_keys_round_trip);
	RUN(test_escape_round_trip);
	return CHECK_DONE();
}
