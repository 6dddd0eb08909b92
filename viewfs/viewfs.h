/* viewfs as a library: what the `viewfs` command (main.c) and a launcher that gives a command
 * its own root (views) need to set up, mount and serve a view.
 *
 * The original tree and the layer are passed as directory fds opened BEFORE the mount: the
 * daemon reaches the real files only through them (and fds derived from them), never through a
 * path that could lead into its own mount. A launcher opens them, enters its namespaces, and
 * calls viewfs_mount()/viewfs_serve() on whatever mount point it likes. */
#ifndef VIEWFS_VIEWFS_H
#define VIEWFS_VIEWFS_H

#include "config.h"
#include "daemon.h" /* common/ */

#include <fuse_lowlevel.h>
#include <stdbool.h>

struct viewfs;

/* Build the state of a view. cfg has passed viewfs_config_check() and must outlive the
 * result. lower_fd is the original (the mount point's directory), layer_fd is SOURCE: both
 * directory fds (O_PATH is enough); on success the result owns them. mountpoint (its path, or
 * NULL when the layer cannot contain it) lets the view leave out its own mount point, so that
 * a layer containing it (SOURCE=/ on /unreal) never leads the daemon into its own mount.
 * source is SOURCE's name for messages. Creates SOURCE/.- in cow and mincow. NULL after a
 * one-line error; *status is the exit code. */
struct viewfs *viewfs_new(struct viewfs_config *cfg, int lower_fd, int layer_fd, bool readonly,
			  const char *source, const char *mountpoint, int *status);
void viewfs_free(struct viewfs *fs);

const struct fuse_lowlevel_ops *viewfs_ops(void);

/* Mount at mountpoint (vo_mount with the options the view needs). NULL after a message. */
struct fuse_session *viewfs_mount(struct viewfs *fs, struct vo_cmdline *cl, const char *fsname,
				  const char *mountpoint);

/* Serve se until it is unmounted or a signal ends it (SIGTERM, SIGINT, SIGHUP), with up to
 * max_threads threads (1: single-threaded; 0: the default). 0 or -errno. */
int viewfs_serve(struct fuse_session *se, unsigned max_threads);
/* The same; own_signals false leaves the signals to the caller (a launcher waiting for its
 * command), which ends the loop with viewfs_serve_stop() (from any thread). */
int viewfs_serve_ex(struct fuse_session *se, unsigned max_threads, bool own_signals);
void viewfs_serve_stop(struct fuse_session *se);
/* The session fs is served through, when a launcher made it itself (NULL when it ends). */
void viewfs_set_session(struct viewfs *fs, struct fuse_session *se);

/* Mount, report readiness (vo_detach_ready), serve until unmounted or signalled, unmount.
 * Returns an exit code. */
int viewfs_run(struct viewfs *fs, struct vo_cmdline *cl, const char *fsname,
	       const char *mountpoint);

/* Open SOURCE and MOUNTPOINT as viewfs_new() wants them, refusing a layer inside the mount point
 * (unless under an except= path: the original would show the layer's own files) and a layer
 * that is the mount point. 0, or an exit code after a one-line error. */
int viewfs_open_dirs(const struct viewfs_config *cfg, const char *source, const char *mountpoint,
		     int *layer_fd, int *lower_fd);

#endif
