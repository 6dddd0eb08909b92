/* The life of every viewos daemon, written once:
 *   parse options -> detach (the parent waits) -> open the source and build the state ->
 *   mount -> tell the parent "ready" -> serve -> unmount -> flush and tear down.
 *
 * The launching command therefore returns only when the mount is usable, or after printing the
 * one-line error of the child with nothing left mounted. SIGTERM, SIGINT, SIGHUP and
 * `fusermount3 -u` all end the loop the same way, so the daemon always flushes before exit.
 *
 * vo_daemon_main() covers the usual "SOURCE MOUNTPOINT" daemon; daemons with several mounts
 * (umdev) or a launcher (viewfs) use the pieces below it directly. */
#ifndef VIEWOS_DAEMON_H
#define VIEWOS_DAEMON_H

#include "options.h"

#include <fuse_lowlevel.h>

/* Exit codes, as mount(8) uses them. */
enum {
	VO_EXIT_OK = 0,
	VO_EXIT_USAGE = 1,  /* bad option or argument */
	VO_EXIT_SOURCE = 2, /* the source (image, device, directory) cannot be used */
	VO_EXIT_MOUNT = 32, /* the mount itself failed */
};

struct vo_daemon_ops {
	/* Open the source and build the state. Runs in the process that will serve (after the
	 * fork) so that threads and handles belong to it; stderr still reaches the user. Report
	 * with vo_error() and return an exit code; VO_EXIT_OK on success. May add options for
	 * libfuse to cl->fuse_args (e.g. "-odefault_permissions"). */
	int (*start)(void *cfg, struct vo_cmdline *cl, void **state);
	const struct fuse_lowlevel_ops *ll_ops;
	/* After unmount and after ll_ops->destroy: flush to the source and free everything. */
	void (*stop)(void *state);
};

int vo_daemon_main(const struct vo_daemon_info *info, const struct vo_daemon_ops *ops, void *cfg,
		   int argc, char **argv);

/* --- the pieces --- */

/* Unless cl->foreground, fork: the parent waits until the child calls vo_detach_ready() (exit 0)
 * or exits (its status is passed on). Returns in the child, or at once in the foreground. */
void vo_detach_begin(const struct vo_cmdline *cl);
/* The mount is ready: release the parent, and when detached, move stdio to /dev/null and the
 * log to syslog. Harmless in the foreground. */
void vo_detach_ready(void);

/* Create a session and mount it at mountpoint (a directory, or a regular file for a device).
 * Adds fsname=SOURCE and subtype=NAME unless given, and ro when cl->readonly. NULL after a
 * one-line error. extra_opts (may be NULL) is a comma list added for this mount only. */
struct fuse_session *vo_mount(struct vo_cmdline *cl, const char *fsname, const char *mountpoint,
			      const struct fuse_lowlevel_ops *ops, void *userdata,
			      const char *extra_opts);
/* vo_mount() that writes its one line ("cannot mount PATH: why", without the program name)
 * into err instead of logging it, for a caller that adds context. */
struct fuse_session *vo_mount_err(struct vo_cmdline *cl, const char *fsname,
				  const char *mountpoint, const struct fuse_lowlevel_ops *ops,
				  void *userdata, const char *extra_opts, char *err, size_t errlen);
/* Serve until unmounted or signalled (SIGTERM, SIGINT, SIGHUP), with the handlers of those
 * signals installed meanwhile: from the calling thread with -s (libfuse's single-threaded
 * loop), else with vo_loop (loop.h), up to cl->max_threads workers. Returns 0 or -errno. */
int vo_serve(struct fuse_session *se, const struct vo_cmdline *cl);
/* Unmount (if still mounted) and destroy the session. */
void vo_unmount(struct fuse_session *se);

#endif
