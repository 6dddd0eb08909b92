/* Unit tests for common/options.c: the -o parser every daemon uses. */
#include "check.h"

#include "log.h"
#include "options.h"

#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

struct cfg {
	int mode;
	int vstat;
	unsigned uid;
	unsigned umask;
	uint64_t size;
	char *label;
	struct vo_strlist except;
	int wok;
};

enum { MOVE = 1, MERGE, COW };

static const struct vo_opt opts[] = {
	{ "move", VO_OPT_FLAG, offsetof(struct cfg, mode), MOVE, 1, NULL, NULL, "move mode" },
	{ "merge", VO_OPT_FLAG, offsetof(struct cfg, mode), MERGE, 1, NULL, NULL, "merge mode" },
	{ "cow", VO_OPT_FLAG, offsetof(struct cfg, mode), COW, 1, NULL, NULL, "cow mode" },
	{ "bind", VO_OPT_ALIAS, 0, 0, 0, "move", NULL, NULL },
	{ "rw+", VO_OPT_ALIAS, 0, 0, 0, "rw", NULL, NULL },
	{ "vstat", VO_OPT_BOOL, offsetof(struct cfg, vstat), 0, 0, NULL, NULL, "virtual stat" },
	{ "uid", VO_OPT_UINT, offsetof(struct cfg, uid), 0, 0, NULL, "N", "owner" },
	{ "umask", VO_OPT_OCTAL, offsetof(struct cfg, umask), 0, 0, NULL, "MASK", "umask" },
	{ "size", VO_OPT_SIZE, offsetof(struct cfg, size), 512, 0, NULL, "SIZE", "size" },
	{ "label", VO_OPT_STRING, offsetof(struct cfg, label), 0, 0, NULL, "TEXT", "label" },
	{ "except", VO_OPT_LIST, offsetof(struct cfg, except), 0, 0, NULL, "PATH", "except" },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	.name = "testd", .args_usage = "SOURCE MOUNTPOINT", .summary = "a test",
	.options = opts, .min_positional = 2, .max_positional = 2, .accepts_command = true,
};

/* Parse a NULL-terminated argument list; returns what vo_cmdline_parse returned. */
static int parse(struct cfg *c, struct vo_cmdline *cl, char **argv)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	memset(c, 0, sizeof *c);
	return vo_cmdline_parse(&info, c, argc, argv, cl);
}

static void free_cfg(struct cfg *c, struct vo_cmdline *cl)
{
	free(c->label);
	vo_strlist_free(&c->except);
	vo_cmdline_free(cl);
}

static bool has_fuse_opt(const struct vo_cmdline *cl, const char *s)
{
	for (int i = 0; i < cl->fuse_args.argc; i++)
		if (strstr(cl->fuse_args.argv[i], s))
			return true;
	return false;
}

static void test_values_of_every_type(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *argv[] = { "testd", "-o", "cow,vstat,uid=1000,umask=022,size=100M,label=hello",
			 "-o", "except=/tmp:/var/tmp", "-oexcept=/home", "src", "mnt", NULL };
	CHECK_EQ(parse(&c, &cl, argv), 0);
	CHECK_EQ(c.mode, COW);
	CHECK_EQ(c.vstat, 1);
	CHECK_EQ(c.uid, 1000);
	CHECK_EQ(c.umask, 022);
	CHECK_EQ(c.size, 100ULL << 20);
	CHECK_STR(c.label, "hello");
	CHECK_EQ(c.except.count, 3);
	CHECK_STR(c.except.items[0], "/tmp");
	CHECK_STR(c.except.items[1], "/var/tmp");
	CHECK_STR(c.except.items[2], "/home");
	CHECK_EQ(cl.npositional, 2);
	CHECK_STR(cl.positional[0], "src");
	CHECK_STR(cl.positional[1], "mnt");
	free_cfg(&c, &cl);
}

static void test_bare_size_counts_sectors(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *argv[] = { "testd", "-o", "size=2048", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv), 0);
	CHECK_EQ(c.size, 2048 * 512);
	free_cfg(&c, &cl);
}

static void test_unknown_option_is_an_error(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *argv[] = { "testd", "-o", "cow,frobnicate", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv), -1);
	free_cfg(&c, &cl);
	char *argv2[] = { "testd", "--frob", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv2), -1);
	free_cfg(&c, &cl);
}

static void test_two_modes_are_an_error(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *argv[] = { "testd", "-o", "cow", "-o", "merge", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv), -1);
	free_cfg(&c, &cl);
	/* the same mode twice, or through its alias, is fine */
	char *argv2[] = { "testd", "-o", "move,bind,move", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv2), 0);
	CHECK_EQ(c.mode, MOVE);
	free_cfg(&c, &cl);
}

static void test_malformed_values_are_errors(void)
{
	static char *bad[] = { "uid=abc", "uid=", "uid=-1", "umask=9", "size=garbage", "size=10Q",
			       "size=", "label", "vstat=maybe", "cow=1", "bind=x",
			       "max_threads=0", "size=99999999999999999999" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct cfg c;
		struct vo_cmdline cl;
		char *argv[] = { "testd", "-o", bad[i], "a", "b", NULL };
		int r = parse(&c, &cl, argv);
		if (r != -1)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK_EQ(r, -1);
		free_cfg(&c, &cl);
	}
}

static void test_generic_options_pass_to_fuse(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *argv[] = { "testd", "-o", "ro,allow_other,fsname=x,noatime,defaults,_netdev,x-foo=1",
			 "-f", "-s", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv), 0);
	CHECK(cl.readonly);
	CHECK(cl.foreground);
	CHECK(cl.single_thread);
	CHECK(has_fuse_opt(&cl, "allow_other"));
	CHECK(has_fuse_opt(&cl, "fsname=x"));
	CHECK(has_fuse_opt(&cl, "noatime"));
	CHECK(!has_fuse_opt(&cl, "defaults"));
	CHECK(!has_fuse_opt(&cl, "x-foo"));
	free_cfg(&c, &cl);
}

static void test_rw_plus_alias_undoes_ro(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *argv[] = { "testd", "-o", "ro,rw+", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv), 0);
	CHECK(!cl.readonly);
	free_cfg(&c, &cl);
}

static void test_quotes_and_backslash_keep_commas(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *argv[] = { "testd", "-o", "label='a,b',cow", "-o", "except=/x\\,y", "a", "b", NULL };
	CHECK_EQ(parse(&c, &cl, argv), 0);
	CHECK_STR(c.label, "a,b");
	CHECK_EQ(c.mode, COW);
	CHECK_EQ(c.except.count, 1);
	CHECK_STR(c.except.count ? c.except.items[0] : NULL, "/x,y");
	free_cfg(&c, &cl);
}

static void test_positional_counts_and_command(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *one[] = { "testd", "a", NULL };
	CHECK_EQ(parse(&c, &cl, one), -1);
	free_cfg(&c, &cl);
	char *three[] = { "testd", "a", "b", "c", NULL };
	CHECK_EQ(parse(&c, &cl, three), -1);
	free_cfg(&c, &cl);
	char *cmd[] = { "testd", "-o", "cow", "a", "/", "--", "sh", "-c", "-o x", NULL };
	CHECK_EQ(parse(&c, &cl, cmd), 0);
	CHECK(cl.command != NULL);
	if (cl.command) {
		CHECK_STR(cl.command[0], "sh");
		CHECK_STR(cl.command[1], "-c");
		CHECK_STR(cl.command[2], "-o x");
		CHECK(cl.command[3] == NULL);
	}
	free_cfg(&c, &cl);
}

static void test_help_and_version_ask_to_exit(void)
{
	struct cfg c;
	struct vo_cmdline cl;
	char *h[] = { "testd", "--help", NULL };
	CHECK_EQ(parse(&c, &cl, h), 1);
	free_cfg(&c, &cl);
	char *v[] = { "testd", "-V", NULL };
	CHECK_EQ(parse(&c, &cl, v), 1);
	free_cfg(&c, &cl);
}

static void test_parse_size(void)
{
	uint64_t v = 0;
	CHECK_EQ(vo_parse_size("512", 1, &v), 0);
	CHECK_EQ(v, 512);
	CHECK_EQ(vo_parse_size("512", 512, &v), 0);
	CHECK_EQ(v, 512 * 512);
	CHECK_EQ(vo_parse_size("4k", 512, &v), 0);
	CHECK_EQ(v, 4096);
	CHECK_EQ(vo_parse_size("10M", 1, &v), 0);
	CHECK_EQ(v, 10 << 20);
	CHECK_EQ(vo_parse_size("2GiB", 1, &v), 0);
	CHECK_EQ(v, 2ULL << 30);
	CHECK_EQ(vo_parse_size("1TB", 1, &v), 0);
	CHECK_EQ(v, 1ULL << 40);
	CHECK_EQ(vo_parse_size("100B", 512, &v), 0);
	CHECK_EQ(v, 100);
	CHECK_EQ(vo_parse_size("", 1, &v), -1);
	CHECK_EQ(vo_parse_size("M", 1, &v), -1);
	CHECK_EQ(vo_parse_size("-5", 1, &v), -1);
	CHECK_EQ(vo_parse_size("5X", 1, &v), -1);
	CHECK_EQ(vo_parse_size("5MX", 1, &v), -1);
	CHECK_EQ(vo_parse_size("16777216T", 1, &v), -1); /* 2^64: overflow */
}

int main(void)
{
	vo_log_init("testd");
	/* --help and --version print to stdout; keep the test log readable */
	RUN(test_values_of_every_type);
	RUN(test_bare_size_counts_sectors);
	RUN(test_unknown_option_is_an_error);
	RUN(test_two_modes_are_an_error);
	RUN(test_malformed_values_are_errors);
	RUN(test_generic_options_pass_to_fuse);
	RUN(test_rw_plus_alias_undoes_ro);
	RUN(test_quotes_and_backslash_keep_commas);
	RUN(test_positional_counts_and_command);
	RUN(test_help_and_version_ask_to_exit);
	RUN(test_parse_size);
	return CHECK_DONE();
}
