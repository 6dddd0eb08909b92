/* The view launcher: a command with its own root (`viewfs [-o OPTS] SOURCE / -- COMMAND`), and
 * joining a running view (`viewfs --enter PID`). Split by concern:
 *   launcher.c   the flow: the daemon in the launching process, the command in a child
 *   namespace.c  the user namespace and its id maps (subordinate ids through newuidmap)
 *   rootfs.c     the FUSE mount made inside the view, the real /proc /sys /dev /run and
 *                except= paths bound into it, pivot_root
 *   enter.c      --enter
 *   devnodes.c   mknod of device nodes in a view (seccomp user notification) */
#ifndef VIEWFS_VIEW_H
#define VIEWFS_VIEW_H

#include "config.h"
#include "options.h"

#include <stdbool.h>
#include <sys/types.h>

/* Is this command line a view (a command to run) rather than a plain mount? */
bool view_requested(const struct vo_cmdline *cl);
/* Run the view; returns viewfs's exit status (the command's). */
int view_main(struct viewfs_config *cfg, struct vo_cmdline *cl);
/* viewfs --enter PID [-- COMMAND...]: argv after "--enter". Returns only on failure. */
int view_enter(int argc, char **argv);

/* ---- namespace.c ---- */

/* How the ids of the view map onto the user's. */
struct view_ids {
	bool userns;           /* a user namespace is made (the launcher is not root) */
	bool vroot;            /* the command runs as uid 0/gid 0 of the view */
	bool subordinate;      /* the user's /etc/subuid and /etc/subgid ranges are used */
	uid_t uid;             /* the user's own ids */
	gid_t gid;
	unsigned long sub_uid, n_uid, sub_gid, n_gid;
	/* Why a virtual root gets a single map (the view says so once it runs); "" otherwise. */
	char single_why[160];
};

/* Decide the maps (reads /etc/subuid, /etc/subgid; looks for newuidmap/newgidmap). */
void view_ids_plan(struct view_ids *ids, bool vroot);
/* Write the maps of the user namespace child is in (from outside it). 0, or -1 after a
 * one-line error. A virtual root without subordinate ids gets a one-line warning saying what
 * does not work. */
int view_ids_map(const struct view_ids *ids, pid_t child);
/* In the child, after the maps: become the view's uid/gid. 0 or -1 after a message. */
int view_ids_become(const struct view_ids *ids);

/* ---- devnodes.c ---- */

/* In the child, last before exec: hand mknod of device nodes to the launcher. The listener
 * fd, or -1 (after a message) when it cannot. */
int devnodes_filter(void);
/* In the launcher: do the caught mknods until stop_fd is readable or the view is gone. */
void devnodes_serve(int listener, int stop_fd);

/* ---- rootfs.c ---- */

#define VIEW_MAX_BINDS 64

/* Real trees to put into the view: detached copies (open_tree) taken before the FUSE mount
 * covers anything. */
struct view_binds {
	int n;
	int fd[VIEW_MAX_BINDS];
	char *where[VIEW_MAX_BINDS];  /* path inside the view ("/proc") */
	bool required[VIEW_MAX_BINDS]; /* except= paths must exist in the view; /proc etc. may not */
};

/* Copy the mount trees at host_path (recursive) for binding at where. required: a failure is an
 * error (message, -1); otherwise a missing path is skipped. */
int rootfs_clone(struct view_binds *b, const char *host_path, const char *where, bool required);
/* Open /dev/fuse and mount it at staging (inside the view's namespaces). The fd, or -1 after a
 * message. */
int rootfs_mount_fuse(const char *staging, const char *source, uid_t uid, gid_t gid);
/* Put each copy at staging + where. 0 or -1 after a message. */
int rootfs_attach(struct view_binds *b, const char *staging);
void rootfs_binds_free(struct view_binds *b);
/* Make staging the root of the mount namespace (pivot_root) and drop the old root. */
int rootfs_pivot(const char *staging);

#endif
