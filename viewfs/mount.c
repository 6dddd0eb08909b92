/* Setting up a view: the state built from two directory fds, the mount, and the serving loop
 * (viewfs.h). Shared by the viewfs command and a launcher. */
#define _GNU_SOURCE
#include "viewfs.h"

#include "fs.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Is path inside dir (or dir itself)? Both absolute and canonical. Returns the rest ("" or
 * "/x/y") or NULL. */
static const char *inside(const char *path, const char *dir)
{
	if (strcmp(dir, "/") == 0)
		return path;
	size_t len = strlen(dir);
	if (strncmp(path, dir, len) != 0 || (path[len] != '/' && path[len] != '\0'))
		return NULL;
	return path + len;
}

static bool under_except(const struct viewfs_config *cfg, const char *rel)
{
	for (char **e = cfg->except_paths; e && *e; e++)
		if (inside(rel, *e))
			return true;
	return false;
}

int viewfs_open_dirs(const struct viewfs_config *cfg, const char *source, const char *mountpoint,
		     int *layer_fd, int *lower_fd)
{
	*layer_fd = *lower_fd = -1;
	int lfd = open(mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (lfd < 0) {
		vo_error("cannot mount on %s: %s", mountpoint, strerror(errno));
		return VO_EXIT_MOUNT;
	}
	int sfd = open(source, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0) {
		vo_error("cannot open layer %s: %s", source, strerror(errno));
		close(lfd);
		return VO_EXIT_SOURCE;
	}
	char rs[PATH_MAX], rm[PATH_MAX];
	int status = VO_EXIT_OK;
	if (!realpath(source, rs) || !realpath(mountpoint, rm)) {
		vo_error("cannot resolve %s: %s", source, strerror(errno));
		status = VO_EXIT_SOURCE;
	} else if (strcmp(rs, rm) == 0) {
		vo_error("cannot use %s as the layer of %s: it is the mount point itself", source,
			 mountpoint);
		status = VO_EXIT_SOURCE;
	} else if (inside(rs, rm) && !under_except(cfg, inside(rs, rm)) &&
		   viewfs_mode_is_union(cfg->mode)) {
		/* (in move mode the original is not shown: a layer inside it is harmless, e.g. a
		 * cage in /tmp entered as the root of a view) */
		vo_error("cannot use %s as the layer of %s: it is inside the mount point (except= "
			 "its path or put it elsewhere)", source, mountpoint);
		status = VO_EXIT_SOURCE;
	}
	if (status != VO_EXIT_OK) {
		close(lfd);
		close(sfd);
		return status;
	}
	*layer_fd = sfd;
	*lower_fd = lfd;
	return VO_EXIT_OK;
}

/* Where the mount point is as a name in its parent (lookup.c, self_entry()). Called before the
 * mount, so looking at the path is safe. */
static void note_mountpoint(struct viewfs *fs, const char *mountpoint, int lower_fd)
{
	char real[PATH_MAX];
	if (!mountpoint || !realpath(mountpoint, real) || strcmp(real, "/") == 0)
		return;
	char *slash = strrchr(real, '/');
	struct stat pst;
	*slash = '\0';
	if (stat(slash == real ? "/" : real, &pst) < 0)
		return;
	fs->mp_name = strdup(slash + 1);
	fs->mp_parent_dev = pst.st_dev;
	fs->mp_parent_ino = pst.st_ino;
	struct statx stx;
	if (statx(lower_fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) == 0)
		fs->mp_covers_mount = (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
				      (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

struct viewfs *viewfs_new(struct viewfs_config *cfg, int lower_fd, int layer_fd, bool readonly,
			  const char *source, const char *mountpoint, int *status)
{
	*status = VO_EXIT_SOURCE;
	struct stat lst, ust;
	if (fstat(lower_fd, &lst) < 0 || fstat(layer_fd, &ust) < 0) {
		vo_error("cannot use layer %s: %s", source, strerror(errno));
		return NULL;
	}
	struct viewfs *fs = calloc(1, sizeof *fs);
	if (!fs) {
		vo_error("out of memory");
		return NULL;
	}
	fs->cfg = cfg;
	fs->source = strdup(source ? source : "SOURCE");
	fs->mode = cfg->mode;
	fs->vstat = cfg->vstat;
	fs->in_view = cfg->in_view;
	fs->wok = cfg->wok;
	fs->readonly = readonly;
	fs->writeback = cfg->writeback && !readonly;
	fs->volatile_layer = cfg->volatile_layer;
	fs->timeout = cfg->timeout_s;
	fs->lower_dev = lst.st_dev;
	fs->upper_dev = ust.st_dev;
	fs->uid = geteuid();
	fs->gid = getegid();
	fs->work_fd = -1;
	note_mountpoint(fs, mountpoint, lower_fd);
	/* Directory fds of nodes may use three quarters of the fds the process may have; the rest
	 * is for open files, listings and copies. */
	struct rlimit fdl;
	fs->fd_budget = getrlimit(RLIMIT_NOFILE, &fdl) == 0 && fdl.rlim_max != RLIM_INFINITY
				? (long)fdl.rlim_max * 3 / 4 : 16384;
	if (fs->fd_budget < 32)
		fs->fd_budget = 32;
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* many lookups must not starve the occasional create */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&fs->ns_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&fs->meta_lock, NULL);
	pthread_mutex_init(&fs->table_lock, NULL);
	pthread_mutex_init(&fs->inum_lock, NULL);

	/* The daemon creates objects with exactly the modes the kernel asks for (the kernel has
	 * applied the caller's umask already). */
	umask(0);
	/* Directories keep an fd each: use what the system allows. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	struct vnode *root = node_alloc("", S_IFDIR);
	int rc = root ? node_table_init(fs) : -ENOMEM;
	if (rc == 0)
		rc = except_build(fs);
	if (rc < 0) {
		vo_error("out of memory");
		free(root);
		viewfs_free(fs);
		return NULL;
	}
	fs->root = root;
	fs->lower_root = lower_fd;
	fs->upper_root = layer_fd;
	root->fs = fs;
	root->fd[LOWER] = lower_fd; /* the root's fds are the caller's until start-up succeeds */
	root->fd[UPPER] = layer_fd;
	root->in_upper = true;
	root->in_lower = viewfs_mode_is_union(fs->mode);
	root->except = fs->except_root;
	root->refs = 1;
	root->ino = root->in_lower ? vfs_ino(fs, lst.st_dev, lst.st_ino)
				   : vfs_ino(fs, ust.st_dev, ust.st_ino);
	rc = meta_init(fs);
	if (rc < 0) {
		vo_error("cannot set up the layer metadata %s/%s: %s", source, META_NAME,
			 strerror(-rc));
		/* the fds stay the caller's on failure */
		root->fd[LOWER] = root->fd[UPPER] = -1;
		viewfs_free(fs);
		return NULL;
	}
	*status = VO_EXIT_OK;
	return fs;
}

void viewfs_free(struct viewfs *fs)
{
	if (!fs)
		return;
	readdir_free_all(fs);
	if (fs->table)
		node_table_free(fs);
	if (fs->root) {
		node_close_fds(fs->root);
		meta_free(atomic_load(&fs->root->meta));
		pthread_mutex_destroy(&fs->root->copyup_lock);
		vrecord_clear(&fs->root->last_rec);
		free(fs->root->name);
		free(fs->root);
	}
	meta_free(fs->index);
	if (fs->work_fd >= 0)
		close(fs->work_fd);
	except_free(fs->except_root);
	free(fs->mp_name);
	free(fs->source);
	pthread_rwlock_destroy(&fs->ns_lock);
	pthread_mutex_destroy(&fs->meta_lock);
	pthread_mutex_destroy(&fs->table_lock);
	pthread_mutex_destroy(&fs->inum_lock);
	free(fs);
}

void viewfs_set_session(struct viewfs *fs, struct fuse_session *se)
{
	fs->se = se;
}

static bool has_arg(const struct vo_cmdline *cl, const char *word)
{
	for (int i = 0; i < cl->fuse_args.argc; i++)
		if (strstr(cl->fuse_args.argv[i], word))
			return true;
	return false;
}

struct fuse_session *viewfs_mount(struct viewfs *fs, struct vo_cmdline *cl, const char *fsname,
				  const char *mountpoint)
{
	/* The daemon does every real operation with its own credentials. Run by root for other
	 * users (allow_other), that would let any of them read what only root may: the kernel
	 * then checks permissions against the view's owners and modes. */
	const char *extra = NULL;
	if (geteuid() == 0 && has_arg(cl, "allow_other") && !has_arg(cl, "default_permissions"))
		extra = "default_permissions";
	fs->se = vo_mount(cl, fsname, mountpoint, viewfs_ops(), fs, extra);
	return fs->se;
}

int viewfs_run(struct viewfs *fs, struct vo_cmdline *cl, const char *fsname,
	       const char *mountpoint)
{
	struct fuse_session *se = viewfs_mount(fs, cl, fsname, mountpoint);
	if (!se)
		return VO_EXIT_MOUNT;
	vo_detach_ready();
	int r = viewfs_serve(se, cl->single_thread ? 1 : cl->max_threads);
	vo_unmount(se);
	fs->se = NULL;
	if (r < 0) {
		vo_error("serving %s failed: %s", mountpoint, strerror(-r));
		return VO_EXIT_MOUNT;
	}
	return VO_EXIT_OK;
}
