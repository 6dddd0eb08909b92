/* See log.h. Kept deliberately tiny: a prefix, a level, and a destination switch. */
#include "log.h"

#include <fuse_log.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

static const char *progname = "viewos";
static bool debug_on;
static bool use_syslog;
/* vo_log_capture_begin(): where this thread's libfuse errors go instead (see log.h) */
static __thread char *capture_buf;
static __thread size_t capture_len;

static void vlog(int level, const char *fmt, va_list ap)
{
	if (level == LOG_DEBUG && !debug_on)
		return;
	if (use_syslog) {
		vsyslog(level, fmt, ap);
		return;
	}
	/* Build the line first so concurrent threads never interleave halves of lines. */
	char line[2048];
	int n = snprintf(line, sizeof line, "%s: ", progname);
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	size_t len = strlen(line);
	while (len > 0 && line[len - 1] == '\n')
		line[--len] = '\0';
	fprintf(stderr, "%s\n", line);
}

#define DEFINE_LOGGER(fn, level)                                                                   \
	void fn(const char *fmt, ...)                                                              \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(level, fmt, ap);                                                              \
		va_end(ap);                                                                        \
	}
DEFINE_LOGGER(vo_error, LOG_ERR)
DEFINE_LOGGER(vo_warn, LOG_WARNING)
DEFINE_LOGGER(vo_info, LOG_INFO)
DEFINE_LOGGER(vo_debug, LOG_DEBUG)

/* The caller makes the one line of a failure: it wants libfuse's reason, without libfuse's
 * "fuse: " and newline. Only the first error is kept, the cause; later ones follow from it. */
static void keep_first_error(const char *fmt, va_list ap)
{
	char line[1024];
	vsnprintf(line, sizeof line, fmt, ap);
	size_t len = strlen(line);
	while (len > 0 && line[len - 1] == '\n')
		line[--len] = '\0';
	const char *text = strncmp(line, "fuse: ", 6) == 0 ? line + 6 : line;
	snprintf(capture_buf, capture_len, "%s", text);
}

/* libfuse prefixes its messages with "fuse: " and ends them with a newline; keep its text,
 * but give it our program name and destination. */
static void fuse_log_bridge(enum fuse_log_level level, const char *fmt, va_list ap)
{
	if (capture_buf && level <= FUSE_LOG_ERR) {
		if (!capture_buf[0])
			keep_first_error(fmt, ap);
		return;
	}
	int l = level <= FUSE_LOG_ERR ? LOG_ERR : level == FUSE_LOG_WARNING ? LOG_WARNING
		: level == FUSE_LOG_DEBUG ? LOG_DEBUG : LOG_INFO;
	vlog(l, fmt, ap);
}

void vo_log_init(const char *name)
{
	const char *slash = strrchr(name, '/');
	progname = slash ? slash + 1 : name;
	fuse_set_log_func(fuse_log_bridge);
}

const char *vo_progname(void) { return progname; }
void vo_log_set_debug(bool on) { debug_on = on; }
bool vo_log_debug_enabled(void) { return debug_on; }

void vo_log_to_syslog(void)
{
	openlog(progname, LOG_PID, LOG_DAEMON);
	use_syslog = true;
}

void vo_log_capture_begin(char *buf, size_t len)
{
	buf[0] = '\0';
	capture_buf = buf;
	capture_len = len;
}

void vo_log_capture_end(void)
{
	capture_buf = NULL;
	capture_len = 0;
}
