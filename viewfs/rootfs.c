/* The root of a view, made inside the view's new mount namespace:
 *   1. copies of the real trees the view keeps (/proc, /sys, /dev, /run when it is a mount of
 *      its own, and the except= paths) are taken first, as detached mounts (open_tree), since
 *      the FUSE mount may cover their paths next;
 *   2. /dev/fuse is opened and mounted here (the kernel wants the fd opened in the namespace
 *      that mounts; the daemon outside then serves it, see launcher.c);
 *   3. the copies are moved onto their places inside the view (move_mount): real mounts, so
 *      /proc and the except= paths cost nothing through FUSE;
 *   4. pivot_root makes the view the root, and the old root is dropped from this namespace.
 * Written here, not taken from a library: it is a handful of system calls in a fixed order. */
#define _GNU_SOURCE
#include "view.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int rootfs_clone(struct view_binds *b, const char *host_path, const char *where, bool required)
{
	if (b->n >= VIEW_MAX_BINDS) {
		vo_error("cannot bind %s into the view: too many paths (at most %d)", where,
			 VIEW_MAX_BINDS);
		return -1;
	}
	int fd = open_tree(AT_FDCWD, host_path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (fd < 0) {
		if (!required && (errno == ENOENT || errno == ENOTDIR))
			return 0;
		vo_error("cannot bind %s into the view: %s", host_path, strerror(errno));
		return -1;
	}
	b->fd[b->n] = fd;
	b->where[b->n] = strdup(where);
	b->required[b->n] = required;
	b->n++;
	return 0;
}

int rootfs_mount_fuse(const char *staging, const char *source, uid_t uid, gid_t gid)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		vo_error("cannot open /dev/fuse: %s", strerror(errno));
		return -1;
	}
	/* default_permissions: the kernel checks each caller against the owners and modes the view
	 * shows (virtual root included); allow_other: every id of the view may use it, not only
	 * the one that mounted. */
	char opts[256];
	snprintf(opts, sizeof opts,
		 "fd=%d,rootmode=40000,user_id=%u,group_id=%u,default_permissions,allow_other", fd,
		 (unsigned)uid, (unsigned)gid);
	if (mount(source, staging, "fuse.viewfs", 0, opts) < 0) {
		vo_error("cannot mount the view on %s: %s", staging, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int rootfs_attach(struct view_binds *b, const char *staging)
{
	for (int i = 0; i < b->n; i++) {
		char target[4096];
		snprintf(target, sizeof target, "%s%s", strcmp(staging, "/") ? staging : "",
			 b->where[i]);
		if (move_mount(b->fd[i], "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
			if (!b->required[i] && (errno == ENOENT || errno == ENOTDIR))
				continue; /* e.g. no /proc in a cage: it stays without */
			vo_error("cannot bind %s into the view: %s", b->where[i], strerror(errno));
			return -1;
		}
	}
	return 0;
}

void rootfs_binds_free(struct view_binds *b)
{
	for (int i = 0; i < b->n; i++) {
		close(b->fd[i]);
		free(b->where[i]);
	}
	b->n = 0;
}

int rootfs_pivot(const char *staging)
{
	/* pivot_root(".", "."): the old root ends up stacked on the new one and is detached right
	 * away; no directory in the view is needed to park it. */
	if (chdir(staging) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
	    umount2(".", MNT_DETACH) < 0 || chdir("/") < 0) {
		vo_error("cannot make %s the root of the view: %s", staging, strerror(errno));
		return -1;
	}
	return 0;
}
