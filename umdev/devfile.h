/* A device file: one FUSE mount whose root is a regular file that behaves like a block
 * device (the whole disk, or one partition). Every open gets direct I/O, so no page cache
 * stands between the views of the disk (other device files, NBD clients, file systems on top).
 *
 * The file's attributes (mode, owner, times) live in memory: chmod and chown on the device
 * file change them for the life of the daemon, as they did for View-OS's device nodes. */
#ifndef UMDEV_DEVFILE_H
#define UMDEV_DEVFILE_H

#include "disk.h"

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>

struct devfile_hooks {
	/* Re-read the partition table now: after a flush, fsync or close that followed writes
	 * to the table areas (force false: only when the disk says it is dirty), or on BLKRRPART
	 * (force true). Runs in a request thread of this device file's session. 0 or -errno. */
	int (*reread)(void *owner, bool force);
};

/* An open file: the extent it was given. Kept on a list so that opens the kernel never
 * released (the mount went away first) are freed with the device file. */
struct devfile_open {
	struct umdev_extent *extent;
	struct devfile_open *prev, *next;
};

struct devfile {
	struct umdev_disk *disk;
	unsigned number;               /* 0: the whole disk */
	pthread_mutex_t lock;          /* extent and attributes */
	struct umdev_extent *extent;   /* what new opens get; NULL once the partition is gone */
	struct devfile_open *opens;    /* open files, for the clean-up */
	mode_t mode;                   /* permission bits only */
	uid_t uid;
	gid_t gid;
	struct timespec atime, mtime, ctime;
	const struct devfile_hooks *hooks;
	void *owner;
};

/* e: the extent to serve (a reference is taken). */
struct devfile *devfile_new(struct umdev_disk *disk, struct umdev_extent *e, mode_t mode,
			    uid_t uid, gid_t gid, const struct devfile_hooks *hooks, void *owner);
/* The partition moved (a new extent) or left the table (NULL): opens from now on see that. */
void devfile_set_extent(struct devfile *df, struct umdev_extent *e);
void devfile_free(struct devfile *df);

extern const struct fuse_lowlevel_ops devfile_ops;

#endif
