/* umfuse-ext2: ext2, ext3 and ext4 as a FUSE file system, read-write, on libext2fs.
 *
 *   umfuse-ext2 [-o OPTIONS] SOURCE MOUNTPOINT
 *
 * SOURCE is any block source of the common layer (an image file, a umdev device file,
 * mem:SIZE, an nbd:// or nbd+unix:// URI); libext2fs reaches it through io_manager.c. FUSE
 * inode numbers are the ext2 inode numbers, so ls -i, find -inum and hard-link detection see
 * the real ones. Permissions are checked by the kernel as on a native mount
 * (default_permissions, POSIX ACLs); an unprivileged user can mount an image they own and sees
 * the real owners of its files.
 *
 * What it does: everything a user does on ext4 — files, holes, SEEK_DATA/SEEK_HOLE, fallocate
 * and punch hole, directories of any size, rename with RENAME_NOREPLACE/RENAME_EXCHANGE, hard
 * and symbolic links, device nodes, FIFOs, sockets, nanosecond times, xattrs and ACLs, statfs
 * — keeping the file system clean for e2fsck after any workload and after unmount.
 *
 * What it leaves out, and why:
 *  - the journal: libext2fs cannot write through it. It is left empty and intact; a journal
 *    that needs recovery is never ignored (the mount refuses and says how to recover). So
 *    after a crash, run e2fsck -fy, as for ext2; fsync'ed files are safe (fsync commits
 *    everything) and so are closed ones if only the daemon died (a close writes the file's
 *    changes to the source, see op_flush).
 *  - writing inline_data, encrypted, casefolded, verity, quota, project, bigalloc or MMP file
 *    systems: libext2fs (or this daemon) does not keep them consistent, so they are mounted
 *    read-only, with a message.
 *  - new directories are plain (linear) lists, as libext2fs makes them, indexed in memory by
 *    the daemon; existing htree directories keep their index when written.
 *  - ioctls (chattr flags), file locks beyond what the kernel emulates, O_TMPFILE.
 */
#define _GNU_SOURCE
#include "daemon.h"
#include "e2fuse.h"
#include "log.h"
#include "options.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const struct vo_opt options[] = {
	{ "rw+", VO_OPT_ALIAS, 0, 0, 0, "rw", NULL, NULL },   /* View-OS: rw,force */
	{ "force", VO_OPT_ALIAS, 0, 0, 0, "rw", NULL, NULL }, /* View-OS: confirms rw */
	{ "norecovery", VO_OPT_FLAG, offsetof(struct e2_config, norecovery), 1, 0, NULL, NULL,
	  "with ro: mount even if the journal needs recovery (shows the state without it)" },
	{ "noload", VO_OPT_ALIAS, 0, 0, 0, "norecovery", NULL, NULL },
	{ "acl", VO_OPT_BOOL, offsetof(struct e2_config, acl), 0, 0, NULL, NULL,
	  "POSIX ACLs: enforced and inherited (default on; acl=0 or noacl to disable)" },
	{ "noacl", VO_OPT_FLAG, offsetof(struct e2_config, acl), 0, 0, NULL, NULL, NULL },
	{ "user_xattr", VO_OPT_FLAG, offsetof(struct e2_config, user_xattr), 1, 0, NULL, NULL,
	  NULL },
	{ "writeback", VO_OPT_BOOL, offsetof(struct e2_config, writeback), 0, 0, NULL, NULL,
	  "let the kernel cache writes (writeback_cache); default off" },
	{ "commit", VO_OPT_UINT, offsetof(struct e2_config, commit), 0, 0, NULL, "SECONDS",
	  "make changes durable at least this often (default 5, 0 = only on fsync and "
	  "unmount; a close still writes what the file changed)" },
	{ "flush", VO_OPT_BOOL, offsetof(struct e2_config, flush), 0, 0, NULL, NULL,
	  "a close writes what the file changed to the source (default on; flush=0: only "
	  "commits, fsync and unmount write)" },
	{ "cache_size", VO_OPT_SIZE, offsetof(struct e2_config, cache_size), 1, 0, NULL, "SIZE",
	  "memory for cached metadata blocks (default 64M)" },
	{ "timeout", VO_OPT_UINT, offsetof(struct e2_config, timeout), 0, 0, NULL, "SECONDS",
	  "how long the kernel may trust names and attributes (default 86400: nothing else "
	  "changes the file system)" },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	.name = E2_NAME,
	.args_usage = "SOURCE MOUNTPOINT",
	.summary = "Mounts an ext2/ext3/ext4 file system (read-write) from an image, a device "
		   "file or an NBD export.",
	.options = options,
	.min_positional = 2,
	.max_positional = 2,
};

static bool has_fuse_opt(const struct fuse_args *args, const char *name)
{
	size_t len = strlen(name);
	for (int i = 0; i < args->argc; i++) {
		const char *a = args->argv[i];
		if (strncmp(a, "-o", 2) == 0)
			a += 2;
		for (const char *p = a; (p = strstr(p, name)); p += len)
			if ((p == a || p[-1] == ',') && (p[len] == '\0' || p[len] == ','))
				return true;
	}
	return false;
}

static void e2_init(void *userdata, struct fuse_conn_info *conn)
{
	struct e2 *e = userdata;
	e2_lock(e);
	e2_mark_mounted(e);
	e2_unlock(e);
	conn->max_write = 1 << 20;
	/* nanoseconds where the inodes have room for them, else whole seconds */
	conn->time_gran = EXT2_INODE_SIZE(e->fs->super) > EXT2_GOOD_OLD_INODE_SIZE ? 1 : 1000000000;
	if (conn->max_background < 64)
		conn->max_background = 64;
	conn->congestion_threshold = conn->max_background * 3 / 4;
	if (e->cfg.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
		e->writeback_cache = true;
	}
	/* setuid/setgid are cleared here on write, truncate and chown (see ops_attr.c) — but
	 * with the writeback cache writes arrive later, without the writer's identity, so then
	 * the kernel does it (and sends the mode change) */
	if ((conn->capable & FUSE_CAP_HANDLE_KILLPRIV) && !e->writeback_cache)
		conn->want |= FUSE_CAP_HANDLE_KILLPRIV;
	else
		conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	/* open is answered ENOSYS (no per-open state), so O_TRUNC must reach us as a setattr */
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	/* nobody else writes: cached pages never go stale behind the kernel's back */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (e->cfg.acl && (conn->capable & FUSE_CAP_POSIX_ACL) &&
	    (conn->capable & FUSE_CAP_DONT_MASK)) {
		conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
		e->posix_acl = true;
	}
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	e->no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
	e->no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
}

static void e2_destroy(void *userdata)
{
	struct e2 *e = userdata;
	e2_lock(e);
	node_release_unlinked(e);
	e2_unlock(e);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ll_ops = {
	.init = e2_init,
	.destroy = e2_destroy,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
};

static int e2_start(void *cfgp, struct vo_cmdline *cl, void **statep)
{
	struct e2 *e = calloc(1, sizeof *e);
	if (!e) {
		vo_error("out of memory");
		return VO_EXIT_MOUNT;
	}
	e->cfg = *(struct e2_config *)cfgp;
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->released_cond, &ca);
	pthread_condattr_destroy(&ca);
	e->single_thread = cl->single_thread;
	e->timeout = e->cfg.timeout;
	e->noatime = has_fuse_opt(&cl->fuse_args, "noatime");
	int status = e2_open(e, cl->positional[0], cl->readonly);
	if (status != VO_EXIT_OK) {
		e2_close(e);
		pthread_cond_destroy(&e->released_cond);
		pthread_mutex_destroy(&e->lock);
		free(e);
		return status;
	}
	if (e->readonly)
		cl->readonly = true; /* the kernel mount says ro too */
	/* libext2fs runs under one lock: beyond two threads (one working, one taking the next
	 * request) workers only wake each other in turn, which costs more than it overlaps */
	if (!cl->max_threads)
		cl->max_threads = 2;
	fuse_opt_add_arg(&cl->fuse_args, "-odefault_permissions");
	struct node *root = node_get(e, EXT2_ROOT_INO);
	if (root)
		root->nlookup = 1; /* the kernel holds the root for the life of the mount */
	if (e2_start_committer(e) < 0)
		vo_warn("cannot start the commit thread: changes are written on fsync and unmount");
	*statep = e;
	return VO_EXIT_OK;
}

static void e2_stop(void *statep)
{
	struct e2 *e = statep;
	e2_stop_committer(e);
	e2_lock(e);
	if (e->fs && !e->readonly)
		node_release_unlinked(e);
	e2_close(e);
	node_table_free(e);
	e2_unlock(e);
	pthread_cond_destroy(&e->released_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

static const struct vo_daemon_ops ops = { .start = e2_start, .ll_ops = &ll_ops, .stop = e2_stop };

int main(int argc, char **argv)
{
	struct e2_config cfg = {
		.acl = 1,
		.commit = 5,
		.flush = 1,
		.cache_size = 64 << 20,
		.timeout = 86400,
	};
	return vo_daemon_main(&info, &ops, &cfg, argc, argv);
}
