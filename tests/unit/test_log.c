/* Unit tests for common/log.c: one prefixed line per message on stderr, debug only when asked,
 * and libfuse's own messages routed through the same path. */
#define _GNU_SOURCE
#include "check.h"

#include "log.h"

#include <fuse_log.h>
#include <stdlib.h>
#include <unistd.h>

/* Run fn with stderr redirected to a temporary file; return what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
	static char buf[4096];
	char path[] = "/tmp/viewos-log-XXXXXX";
	int fd = mkstemp(path);
	fflush(stderr);
	int saved = dup(2);
	dup2(fd, 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return buf;
}

static void emit_levels(void)
{
	vo_error("cannot open %s: %s", "/x/disk.img", "No such file or directory");
	vo_warn("warned");
	vo_info("informed\n"); /* a trailing newline is not doubled */
	vo_debug("debugged");
}

static void test_messages_are_one_prefixed_line_each(void)
{
	vo_log_init("/usr/bin/umfuse-test");
	vo_log_set_debug(false);
	CHECK_STR(capture_stderr(emit_levels),
		  "umfuse-test: cannot open /x/disk.img: No such file or directory\n"
		  "umfuse-test: warned\n"
		  "umfuse-test: informed\n");
	CHECK_STR(vo_progname(), "umfuse-test");
}

static void test_debug_only_with_d(void)
{
	vo_log_init("d");
	vo_log_set_debug(true);
	CHECK(vo_log_debug_enabled());
	CHECK(strstr(capture_stderr(emit_levels), "d: debugged\n") != NULL);
	vo_log_set_debug(false);
	CHECK(strstr(capture_stderr(emit_levels), "debugged") == NULL);
}

static void emit_from_libfuse(void)
{
	fuse_log(FUSE_LOG_ERR, "fuse: bad mount point `%s': %s\n", "/mnt", "No such file");
}

static void test_libfuse_messages_use_our_prefix(void)
{
	vo_log_init("umdev-mbr");
	CHECK_STR(capture_stderr(emit_from_libfuse),
		  "umdev-mbr: fuse: bad mount point `/mnt': No such file\n");
}

static char captured[256];

static void emit_while_capturing(void)
{
	vo_log_capture_begin(captured, sizeof captured);
	fuse_log(FUSE_LOG_ERR, "fuse: invalid parameter in option `%s'\n", "max_read=abc");
	fuse_log(FUSE_LOG_ERR, "fuse: a second error follows from the first\n");
	fuse_log(FUSE_LOG_INFO, "fuse: not an error\n");
	vo_error("our own");
	vo_log_capture_end();
	fuse_log(FUSE_LOG_ERR, "fuse: after the capture\n");
}

static void test_capture_keeps_libfuse_first_error_for_one_line(void)
{
	vo_log_init("vo-testfs");
	CHECK_STR(capture_stderr(emit_while_capturing),
		  "vo-testfs: fuse: not an error\n"
		  "vo-testfs: our own\n"
		  "vo-testfs: fuse: after the capture\n");
	CHECK_STR(captured, "invalid parameter in option `max_read=abc'");
}

static void emit_long(void)
{
	char big[5000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	vo_error("%s", big);
}

static void test_overlong_message_is_cut_not_overflowed(void)
{
	vo_log_init("n");
	char *out = capture_stderr(emit_long);
	CHECK(strncmp(out, "n: xxxx", 7) == 0);
	CHECK(strlen(out) < 2100);
	CHECK(out[strlen(out) - 1] == '\n');
}

int main(void)
{
	RUN(test_messages_are_one_prefixed_line_each);
	RUN(test_debug_only_with_d);
	RUN(test_libfuse_messages_use_our_prefix);
	RUN(test_overlong_message_is_cut_not_overflowed);
	RUN(test_capture_keeps_libfuse_first_error_for_one_line);
	return CHECK_DONE();
}
