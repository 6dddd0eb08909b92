/* One device file on the file system: the regular file that is its mount point (created when
 * missing, removed again when we created it), its FUSE session, and the thread that serves it.
 * A umdev daemon holds one for the disk and one per partition; each has its own session so
 * that partitions can come and go while the others keep serving.
 *
 * Signals: the daemon blocks everything in its threads before starting any. The loop's workers
 * (common/loop.h) take only SIGUSR1, which interrupts their wait for a request when the loop
 * ends; with -s the serving thread unblocks only SIGUSR1, which devmount_stop() sends it. */
#ifndef UMDEV_DEVMOUNT_H
#define UMDEV_DEVMOUNT_H

#include "devfile.h"
#include "options.h"

#include <pthread.h>
#include <stdbool.h>

struct devmount {
	char *path;
	bool created;          /* we created the file: remove it when done */
	bool is_disk;          /* the daemon ends when this one's loop ends */
	bool detached;         /* lazily unmounted by us (its partition left the table) */
	bool loop_done;        /* atomic: the serving loop has returned */
	struct devfile *df;    /* owned */
	struct fuse_session *se;
	struct vo_loop *loop;  /* owned; NULL with -s (libfuse's single-threaded loop) */
	const struct vo_cmdline *cl;
	pthread_t thread;
	struct devmount *next;
};

/* Install the SIGUSR1 handler that interrupts serving loops (once, before any thread):
 * vo_loop_init_signals(). */
void devmount_init_signals(void);

/* Check that path can be a device file: a regular file that is not already a mount point, or
 * a missing name in a directory we can write. 0, or -1 after writing why into err. */
int devmount_check_path(const char *path, char *err, size_t errlen);

/* Create (if missing) and mount path, and serve df there from a new thread. Takes df. NULL
 * after writing why into err (df is freed then). extra_opts: as vo_mount(). */
struct devmount *devmount_start(const struct vo_cmdline *cl, const char *path,
				const char *fsname, struct devfile *df, bool is_disk,
				const char *extra_opts, char *err, size_t errlen);

/* The partition left the table: unmount lazily (open files keep being served, with EIO) and
 * remove the file if we created it. The loop ends when the last opener closes. */
void devmount_detach(struct devmount *m);
bool devmount_finished(const struct devmount *m);

/* End serving (at once if the loop still runs), unmount, remove the file if we created it,
 * and free everything. */
void devmount_stop(struct devmount *m);

#endif
