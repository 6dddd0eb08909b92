/* Extended attributes: read from the object that serves a name; a change goes where every
 * other change goes (attr.c's rules: the layer after a copy-up in cow, the original when it
 * allows it in mincow, read-only entries of SOURCE in merge).
 *
 * One name is not stored but acted upon: setting "user.viewfs.mknod" to "c MAJOR MINOR" or
 * "b MAJOR MINOR" on a regular file makes it a virtual device node (vstat). The kernel refuses
 * mknod(2) of devices to every caller without CAP_MKNOD before a FUSE file system is asked, even
 * in a user namespace, so this is the door an unprivileged user (or a launcher that catches
 * mknod for its command) has to the virtual devices that mknod(2) gives root.
 *
 * The calls go through /proc/self/fd/N of the node's fd (or through the parent's fd and the
 * name with the l*xattr calls), because the fds nodes keep are O_PATH, which the f*xattr calls
 * do not accept. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define NEED_COPY_UP 1

/* A path for the l*xattr calls that names n's object in layer l without following a final
 * symlink: "/proc/self/fd/DIRFD/NAME", or "/proc/self/fd/FD" for a node with its own fd. */
static int xattr_path(struct vnode *n, enum layer l, char *buf, size_t len)
{
	const char *name;
	int at = node_at(n, l, &name);
	if (at < 0)
		return -ENOENT;
	if (*name)
		snprintf(buf, len, "/proc/self/fd/%d/%s", at, name);
	else
		snprintf(buf, len, "/proc/self/fd/%d", at);
	return 0;
}

static void vfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	char path[PATH_MAX + 64];
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ns_read(fs);
	ssize_t r = xattr_path(n, node_layer(n), path, sizeof path);
	if (r == 0) {
		r = lgetxattr(path, name, buf, size);
		if (r < 0)
			r = -errno;
	}
	ns_unlock(fs);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void vfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	char path[PATH_MAX + 64];
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ns_read(fs);
	ssize_t r = xattr_path(n, node_layer(n), path, sizeof path);
	if (r == 0) {
		r = llistxattr(path, buf, size);
		if (r < 0)
			r = -errno;
	}
	ns_unlock(fs);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

/* set (value != NULL) or remove an attribute (ns write lock held). */
static int change_locked(struct viewfs *fs, struct vnode *n, const char *name, const char *value,
			 size_t size, int flags)
{
	char path[PATH_MAX + 64];
	enum layer l;
	if (n->excepted) {
		l = LOWER;
	} else if (fs->mode == VIEWFS_MOVE) {
		l = UPPER;
	} else if (n->in_upper) {
		if (fs->mode == VIEWFS_MERGE)
			return -EROFS;
		l = UPPER;
	} else {
		l = LOWER;
	}
	int rc = xattr_path(n, l, path, sizeof path);
	if (rc < 0)
		return rc;
	bool real = l == UPPER || n->excepted || fs->mode == VIEWFS_MERGE ||
		    fs->mode == VIEWFS_MINCOW;
	if (real) {
		int r = value ? lsetxattr(path, name, value, size, flags) : lremovexattr(path, name);
		rc = r < 0 ? -errno : 0;
		if (rc == 0 || l == UPPER || n->excepted || fs->mode == VIEWFS_MERGE ||
		    !refused(-rc))
			return rc;
	}
	/* cow, or mincow refused: the change goes to a copy */
	if (S_ISDIR(n->type)) {
		rc = ensure_upper_dir(fs, n);
		if (rc < 0)
			return rc;
		if ((rc = xattr_path(n, UPPER, path, sizeof path)) < 0)
			return rc;
		int r = value ? lsetxattr(path, name, value, size, flags) : lremovexattr(path, name);
		return r < 0 ? -errno : 0;
	}
	return NEED_COPY_UP;
}

static void change(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		   size_t size, int flags)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	int rc;
	/* until done: each copy-up is progress, and a real file system never says EAGAIN here */
	for (;;) {
		ns_write(fs);
		rc = change_locked(fs, n, name, value, size, flags);
		ns_unlock(fs);
		if (rc != NEED_COPY_UP || (rc = copy_up(fs, n, -1)) < 0)
			break;
	}
	fuse_reply_err(req, -rc);
}

#define MKNOD_XATTR "user.viewfs.mknod"

/* "c 1 3" on a regular file: record it as that device (ns write lock held). */
static int make_virtual_device(struct viewfs *fs, struct vnode *n, const char *value, size_t size)
{
	char buf[64], type;
	unsigned maj, min;
	int used = 0;
	if (!fs->vstat)
		return -ENOTSUP;
	if (n->excepted || fs->mode == VIEWFS_MERGE)
		return -EROFS;
	if (size == 0 || size >= sizeof buf)
		return -EINVAL;
	memcpy(buf, value, size);
	buf[size] = '\0';
	if (sscanf(buf, "%c %u %u%n", &type, &maj, &min, &used) != 3 || buf[used] != '\0' ||
	    (type != 'c' && type != 'b'))
		return -EINVAL;
	if (!S_ISREG(n->type))
		return -EINVAL;
	struct stat st;
	if (node_getattr(fs, n, &st) < 0 || st.st_size != 0)
		return -EINVAL; /* a placeholder: an empty regular file */
	struct vrecord rec;
	int has = meta_node_record(fs, n, &rec);
	if (has < 0)
		return has;
	rec.type = type == 'c' ? S_IFCHR : S_IFBLK;
	rec.rdev = makedev(maj, min);
	rec.has |= VREC_TYPE | VREC_RDEV;
	clock_gettime(CLOCK_REALTIME, &rec.ctime);
	rec.has |= VREC_CTIME;
	int rc = meta_write_node_record(fs, n, &rec);
	vrecord_clear(&rec);
	return rc;
}

/* The invalidation of a name, done by a helper thread that the request waits for at most a
 * second. The kernel takes the directory's lock for it; a process holding that lock may be
 * waiting for the file's lock, which the caller of our setxattr holds until we reply (an unlink
 * of that very name): after the second the reply goes first, the caller lets go, and the
 * invalidation follows. */
struct inval_job {
	struct viewfs *fs;
	struct vnode *parent; /* a reference, dropped by the thread */
	char *name;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool done, abandoned;
};

static void inval_job_free(struct inval_job *j)
{
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cv);
	free(j->name);
	free(j);
}

static void *inval_thread(void *arg)
{
	struct inval_job *j = arg;
	fuse_lowlevel_notify_inval_entry(j->fs->se, node_id(j->fs, j->parent), j->name,
					 strlen(j->name));
	node_unref(j->fs, j->parent, 1);
	pthread_mutex_lock(&j->lock);
	j->done = true;
	bool abandoned = j->abandoned;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->lock);
	if (abandoned)
		inval_job_free(j);
	return NULL;
}

static void inval_before_reply(struct viewfs *fs, struct vnode *parent, const char *name)
{
	struct inval_job *j = calloc(1, sizeof *j);
	char *copy = strdup(name);
	pthread_attr_t attr;
	pthread_t t;
	if (!j || !copy) {
		free(j);
		free(copy);
		node_unref(fs, parent, 1);
		return;
	}
	/* the kernel may need requests answered while it waits for the directory: another
	 * thread reads them from now on (serve.c) */
	viewfs_serve_yield();
	*j = (struct inval_job){ .fs = fs, .parent = parent, .name = copy };
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cv, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, inval_thread, j) != 0) {
		pthread_attr_destroy(&attr);
		node_unref(fs, parent, 1);
		inval_job_free(j);
		return;
	}
	pthread_attr_destroy(&attr);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	pthread_mutex_lock(&j->lock);
	while (!j->done && pthread_cond_timedwait(&j->cv, &j->lock, &until) == 0)
		;
	bool done = j->done;
	if (!done)
		j->abandoned = true;
	pthread_mutex_unlock(&j->lock);
	if (done)
		inval_job_free(j);
}

static void vfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	if (strcmp(name, MKNOD_XATTR) == 0) {
		struct viewfs *fs = fuse_req_userdata(req);
		struct vnode *n = node_from_id(fs, ino), *parent = NULL;
		char *name_copy = NULL;
		ns_write(fs);
		int rc = make_virtual_device(fs, n, value, size);
		if (rc == 0 && n->parent && (name_copy = strdup(n->name))) {
			parent = n->parent;
			node_ref(fs, parent);
		}
		ns_unlock(fs);
		/* The kernel's inode is a regular file and cannot change type: make it look the
		 * name up again (the lookup gives a new node of the new type), before the reply, so
		 * that the caller's next stat finds the device (its old inode's attributes, dropped
		 * by the setxattr, would otherwise come back as another type: EIO). */
		if (parent && fs->se)
			inval_before_reply(fs, parent, name_copy);
		else if (parent)
			node_unref(fs, parent, 1);
		free(name_copy);
		fuse_reply_err(req, -rc);
		return;
	}
	change(req, ino, name, value, size, flags);
}

static void vfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	change(req, ino, name, NULL, 0, 0);
}

void xattr_ops(struct fuse_lowlevel_ops *ops)
{
	ops->getxattr = vfs_getxattr;
	ops->listxattr = vfs_listxattr;
	ops->setxattr = vfs_setxattr;
	ops->removexattr = vfs_removexattr;
}
