/* Logging for every viewos daemon: one line per message, prefixed with the program name.
 * Messages go to stderr while the daemon is in the foreground and to syslog once it has
 * detached; debug messages appear only with -d. libfuse's own messages are routed here too,
 * so a user never sees two styles of error. */
#ifndef VIEWOS_LOG_H
#define VIEWOS_LOG_H

#include <stdbool.h>
#include <stddef.h>

void vo_log_init(const char *progname);
const char *vo_progname(void);
void vo_log_set_debug(bool on);
bool vo_log_debug_enabled(void);
/* Switch from stderr to syslog (called when the daemon detaches). */
void vo_log_to_syslog(void);

/* Until vo_log_capture_end(), libfuse's error messages from this thread are not logged: the
 * first one is kept in buf (without libfuse's "fuse: " prefix; "" when there was none), for a
 * caller that reports the failure itself in one line (vo_mount). Other messages pass. */
void vo_log_capture_begin(char *buf, size_t len);
void vo_log_capture_end(void);

void vo_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vo_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vo_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vo_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
