/* Attributes: getattr, setattr (chmod, chown, truncate, utimes), access and statfs, with the
 * virtual metadata of vstat.
 *
 * What the view shows is the serving object's stat with its record applied (type and device
 * number of a virtual node, mode bits, owner, the ctime of a virtual change) and the view's
 * st_ino. Where a change goes follows the mode:
 *   move      the layer (SOURCE is the real thing);
 *   merge     the original; an entry of SOURCE is read-only (EROFS);
 *   cow       the layer, after a copy-up; with vstat, chmod/chown of an original file only
 *             write a record (no data is copied);
 *   mincow    the original when the real call succeeds, otherwise as cow.
 * With vstat, a chmod or chown the real file system refuses succeeds in the record instead, and
 * setuid/setgid bits are never put on a real file of the layer. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

void request_ids(fuse_req_t req, uid_t *uid, gid_t *gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	*uid = ctx->uid;
	*gid = ctx->gid;
}

void apply_record(struct viewfs *fs, struct stat *st, const struct vrecord *rec, bool merged_dir)
{
	if (rec) {
		if ((rec->has & VREC_TYPE) && S_ISREG(st->st_mode)) {
			st->st_mode = rec->type | (st->st_mode & 07777);
			if (S_ISCHR(rec->type) || S_ISBLK(rec->type)) {
				st->st_rdev = (rec->has & VREC_RDEV) ? rec->rdev : 0;
				st->st_size = 0;
			}
		}
		if (rec->has & VREC_MODE)
			st->st_mode = (st->st_mode & S_IFMT) | (rec->mode & 07777);
		if (rec->has & VREC_UID)
			st->st_uid = rec->uid;
		if (rec->has & VREC_GID)
			st->st_gid = rec->gid;
		/* names of a file whose copy is in the index (its own count includes the index) */
		if ((rec->has & VREC_NLINK) && S_ISREG(st->st_mode))
			st->st_nlink = (nlink_t)rec->nlink;
		if ((rec->has & VREC_CTIME) &&
		    (rec->ctime.tv_sec > st->st_ctim.tv_sec ||
		     (rec->ctime.tv_sec == st->st_ctim.tv_sec &&
		      rec->ctime.tv_nsec > st->st_ctim.tv_nsec)))
			st->st_ctim = rec->ctime;
	}
	/* A merged directory's link count would count neither layer right; 1 tells find and
	 * friends "unknown", as overlayfs does. */
	if (merged_dir)
		st->st_nlink = 1;
	if (fs->wok && !S_ISLNK(st->st_mode))
		st->st_mode |= 0222;
}

/* fstat of an open file of n, for a file with no name left. */
static int stat_open_handle(struct viewfs *fs, struct vnode *n, struct stat *st)
{
	int rc = -ENOENT;
	pthread_mutex_lock(&fs->table_lock);
	if (n->handles)
		rc = fstat(n->handles->fd, st) < 0 ? -errno : 0;
	pthread_mutex_unlock(&fs->table_lock);
	return rc;
}

int node_getattr(struct viewfs *fs, struct vnode *n, struct stat *st)
{
	enum layer l = node_layer(n);
	int rc;
	if (n->unlinked && !S_ISDIR(n->type) && !node_has_fd(n, l))
		rc = stat_open_handle(fs, n, st); /* its name may be another file's by now */
	else
		rc = node_stat(n, l, st) < 0 ? -errno : 0;
	if (rc < 0 && !S_ISDIR(n->type))
		rc = stat_open_handle(fs, n, st);
	if (rc < 0)
		return rc;
	struct vrecord rec;
	int has = meta_node_record(fs, n, &rec);
	if (has < 0)
		return has;
	apply_record(fs, st, has ? &rec : NULL, S_ISDIR(n->type) && n->in_upper && n->in_lower);
	vrecord_clear(&rec);
	st->st_ino = n->ino;
	/* Deleted by a whiteout while open: the original still has its links, the view none. */
	if (n->unlinked && !n->in_upper && !n->excepted && fs_cowlike(fs))
		st->st_nlink = 0;
	return 0;
}

static void vfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	struct stat st;
	ns_read(fs);
	int rc = node_getattr(fs, n, &st);
	ns_unlock(fs);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

/* ------------------------------------------------------------------ the real calls */

static void proc_path(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

static int real_chmod(struct vnode *n, enum layer l, mode_t mode)
{
	const char *name;
	int at = node_at(n, l, &name);
	if (at < 0)
		return -ENOENT;
	if (*name)
		return fchmodat(at, name, mode, 0) < 0 ? -errno : 0;
	char p[64];
	proc_path(at, p, sizeof p);
	return chmod(p, mode) < 0 ? -errno : 0;
}

static int real_chown(struct vnode *n, enum layer l, uid_t uid, gid_t gid)
{
	const char *name;
	int at = node_at(n, l, &name);
	if (at < 0)
		return -ENOENT;
	return fchownat(at, name, uid, gid, AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH)) < 0
		       ? -errno : 0;
}

static int real_utimens(struct vnode *n, enum layer l, const struct timespec ts[2], int fd)
{
	if (fd >= 0)
		return futimens(fd, ts) < 0 ? -errno : 0;
	const char *name;
	int at = node_at(n, l, &name);
	if (at < 0)
		return -ENOENT;
	if (*name)
		return utimensat(at, name, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	char p[64];
	proc_path(at, p, sizeof p);
	return utimensat(AT_FDCWD, p, ts, 0) < 0 ? -errno : 0;
}

static int real_truncate(struct vnode *n, enum layer l, off_t size, int fd)
{
	if (fd >= 0)
		return ftruncate(fd, size) < 0 ? -errno : 0;
	if (S_ISDIR(n->type))
		return -EISDIR;
	int f = node_open(n, l, O_WRONLY);
	if (f < 0)
		return -errno;
	int rc = ftruncate(f, size) < 0 ? -errno : 0;
	close(f);
	return rc;
}

/* ------------------------------------------------------------------ setattr */

struct change {
	int to_set;
	const struct stat *attr;
	int fd;            /* the open file the change came through (-1), in layer fd_layer */
	enum layer fd_layer;
};

/* Setuid/setgid bits never go on a real file of the layer: they live in the record. A
 * directory of the layer stays writable for its owner, the daemon (a copy-up into it must
 * not fail because the view made it read-only); its mode in the view is in the record. */
static mode_t real_mode_bits(struct viewfs *fs, struct vnode *n, enum layer l, mode_t mode)
{
	bool layer_copy = l == UPPER && fs_cowlike(fs);
	if ((layer_copy || fs->vstat) && !S_ISDIR(n->type))
		mode &= ~(mode_t)(S_ISUID | S_ISGID);
	if (layer_copy && S_ISDIR(n->type))
		mode |= 0700;
	return mode & 07777;
}

static void record_touch(struct vrecord *rec)
{
	clock_gettime(CLOCK_REALTIME, &rec->ctime);
	rec->has |= VREC_CTIME;
}

/* Mode and owner, on the real object in layer l, falling back to the record (vstat, or setuid
 * bits in the layer). real == false: record only (cow+vstat on an original file). */
static int set_mode_owner(struct viewfs *fs, struct vnode *n, enum layer l, const struct change *c,
			  bool real)
{
	struct vrecord rec;
	int has = meta_node_record(fs, n, &rec);
	if (has < 0)
		return has;
	struct vrecord before;
	if (vrecord_copy(&before, &rec) < 0) {
		vrecord_clear(&rec);
		return -ENOMEM;
	}
	bool may_record = (fs->vstat || (l == UPPER && fs_cowlike(fs))) && !n->excepted &&
			  fs->mode != VIEWFS_MERGE;
	bool virtual_change = false;
	int rc = 0;

	if (c->to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (c->to_set & FUSE_SET_ATTR_UID) ? c->attr->st_uid : (uid_t)-1;
		gid_t gid = (c->to_set & FUSE_SET_ATTR_GID) ? c->attr->st_gid : (gid_t)-1;
		int r = real ? real_chown(n, l, uid, gid) : -EPERM;
		if (r == 0) {
			if (uid != (uid_t)-1)
				rec.has &= ~(unsigned)VREC_UID;
			if (gid != (gid_t)-1)
				rec.has &= ~(unsigned)VREC_GID;
		} else if (fs->vstat && may_record && (r == -EPERM || r == -EACCES || r == -EROFS)) {
			if (uid != (uid_t)-1) {
				rec.uid = uid;
				rec.has |= VREC_UID;
			}
			if (gid != (gid_t)-1) {
				rec.gid = gid;
				rec.has |= VREC_GID;
			}
			virtual_change = true;
		} else {
			rc = r;
		}
	}
	bool early = false; /* the record was written before the real chmod: first */
	struct vrecord first = { 0 };
	if (rc == 0 && (c->to_set & FUSE_SET_ATTR_MODE)) {
		mode_t want = c->attr->st_mode & 07777;
		if (S_ISLNK(n->type)) {
			rc = -EOPNOTSUPP;
		} else {
			mode_t realm = real_mode_bits(fs, n, l, want);
			if (real && may_record && (realm != want || (rec.has & VREC_TYPE))) {
				/* the view's mode is the record's: written first, so that a crash
				 * before the real chmod already shows the new mode, never the real
				 * bits without the virtual ones */
				if (vrecord_copy(&first, &rec) < 0) {
					rc = -ENOMEM;
				} else {
					first.mode = want;
					first.has |= VREC_MODE;
					if (virtual_change)
						record_touch(&first);
					rc = meta_write_node_record(fs, n, &first);
					early = rc == 0;
				}
			}
			int r = rc < 0 ? rc : real ? real_chmod(n, l, realm) : -EPERM;
			if (r == 0 && realm == want && !(rec.has & VREC_TYPE)) {
				rec.has &= ~(unsigned)VREC_MODE;
			} else if (r == 0 && may_record) {
				rec.mode = want;
				rec.has |= VREC_MODE;
			} else if (r != 0 && fs->vstat && may_record &&
				   (r == -EPERM || r == -EACCES || r == -EROFS)) {
				rec.mode = want;
				rec.has |= VREC_MODE;
				virtual_change = true;
			} else if (r != 0) {
				rc = r;
			} else {
				rec.has &= ~(unsigned)VREC_MODE;
			}
		}
	}
	if (rc < 0 && early)
		meta_write_node_record(fs, n, &before); /* the chmod failed: the record as it was */
	if (rc == 0) {
		if (virtual_change)
			record_touch(&rec);
		/* write only what changed: most chmods of layer files need no record at all */
		size_t l1 = 0, l2 = 0;
		char *a = vrecord_format(&rec, &l1);
		char *b = vrecord_format(early ? &first : &before, &l2);
		if (!a || !b || l1 != l2 || memcmp(a, b, l1) != 0)
			rc = meta_write_node_record(fs, n, &rec);
		free(a);
		free(b);
	}
	vrecord_clear(&rec);
	vrecord_clear(&before);
	vrecord_clear(&first);
	return rc;
}

static int set_size_times(struct viewfs *fs, struct vnode *n, enum layer l, const struct change *c)
{
	(void)fs;
	int fd = c->fd >= 0 && c->fd_layer == l ? c->fd : -1;
	if (c->to_set & FUSE_SET_ATTR_SIZE) {
		int r = real_truncate(n, l, c->attr->st_size, fd);
		if (r < 0)
			return r;
	}
	if (c->to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
		if (c->to_set & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (c->to_set & FUSE_SET_ATTR_ATIME)
			ts[0] = c->attr->st_atim;
		if (c->to_set & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (c->to_set & FUSE_SET_ATTR_MTIME)
			ts[1] = c->attr->st_mtim;
		int r = real_utimens(n, l, ts, fd);
		if (r < 0)
			return r;
	}
	return 0;
}

static int apply_all(struct viewfs *fs, struct vnode *n, enum layer l, const struct change *c)
{
	int rc = 0;
	if (c->to_set & FUSE_SET_ATTR_SIZE) {
		struct change s = *c;
		s.to_set = FUSE_SET_ATTR_SIZE;
		rc = set_size_times(fs, n, l, &s);
	}
	if (rc == 0 && (c->to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
		rc = set_mode_owner(fs, n, l, c, true);
	if (rc == 0 && (c->to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct change t = *c;
		t.to_set &= ~FUSE_SET_ATTR_SIZE;
		rc = set_size_times(fs, n, l, &t);
	}
	return rc;
}

#define NEED_COPY_UP 1

/* Would the kernel let the daemon make this chown on a copy it makes (a file of its own)? As
 * chown(2) decides it (CAP_CHOWN, or the owner keeping the owner and choosing one of its
 * groups), so that a chown that must fail does not first leave a useless copy in the layer. */
static int chown_allowed(const struct change *c)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3];
	if (syscall(SYS_capget, &hdr, caps) == 0 ? (caps[0].effective & (1u << CAP_CHOWN)) != 0
						 : geteuid() == 0)
		return 0;
	uid_t uid = (c->to_set & FUSE_SET_ATTR_UID) ? c->attr->st_uid : (uid_t)-1;
	gid_t gid = (c->to_set & FUSE_SET_ATTR_GID) ? c->attr->st_gid : (gid_t)-1;
	if (uid != (uid_t)-1 && uid != geteuid())
		return -EPERM;
	if (gid == (gid_t)-1 || gid == getegid())
		return 0;
	int n = getgroups(0, NULL);
	gid_t *groups = n > 0 ? calloc((size_t)n, sizeof *groups) : NULL;
	n = groups ? getgroups(n, groups) : 0;
	int rc = -EPERM;
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			rc = 0;
	free(groups);
	return rc;
}

/* One attempt at the change (ns write lock held). Returns NEED_COPY_UP when the file must be
 * copied into the layer first (the caller does it without the lock and tries again). */
static int setattr_locked(struct viewfs *fs, struct vnode *n, const struct change *c, off_t *keep)
{
	const int ownership = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
	if (n->excepted)
		return apply_all(fs, n, LOWER, c);
	switch (fs->mode) {
	case VIEWFS_MOVE:
		return apply_all(fs, n, UPPER, c);
	case VIEWFS_MERGE:
		if (n->in_upper)
			return -EROFS;
		return apply_all(fs, n, LOWER, c);
	case VIEWFS_MINCOW:
		if (!n->in_upper) {
			int rc = apply_all(fs, n, LOWER, c);
			if (!refused(-rc))
				return rc;
			/* as cow from here: the real call was refused */
		}
		/* fall through */
	case VIEWFS_COW:
		if (!n->in_upper) {
			if (fs->vstat && !(c->to_set & ~ownership & ~FUSE_SET_ATTR_CTIME))
				return set_mode_owner(fs, n, LOWER, c, false);
			if (S_ISDIR(n->type)) {
				int rc = ensure_upper_dir(fs, n);
				if (rc < 0)
					return rc;
			} else {
				int rc = 0;
				if (c->to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
					rc = chown_allowed(c);
				if (rc < 0)
					return rc;
				*keep = -1;
				if (c->to_set & FUSE_SET_ATTR_SIZE)
					*keep = c->attr->st_size;
				return NEED_COPY_UP;
			}
		}
		return apply_all(fs, n, UPPER, c);
	}
	return -EINVAL;
}

static void vfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	struct change c = { .to_set = to_set, .attr = attr, .fd = -1 };
	if (fi && fi->fh) {
		struct vhandle *h = (struct vhandle *)(uintptr_t)fi->fh;
		c.fd = h->fd;
		c.fd_layer = h->layer;
	}
	struct stat st;
	int rc;
	/* until done: each copy-up is progress, and a real file system never says EAGAIN here */
	for (;;) {
		off_t keep = -1;
		ns_write(fs);
		rc = setattr_locked(fs, n, &c, &keep);
		if (rc == NEED_COPY_UP) {
			ns_unlock(fs);
			rc = copy_up(fs, n, keep);
			if (rc < 0)
				break;
			continue;
		}
		if (rc == 0)
			rc = node_getattr(fs, n, &st);
		ns_unlock(fs);
		break;
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

/* ------------------------------------------------------------------ access, statfs */

/* Permission check against virtual attributes, as the kernel's generic_permission would. */
static int virtual_access(fuse_req_t req, const struct stat *st, int mask)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	mode_t m = st->st_mode;
	if (ctx->uid == 0) {
		if ((mask & X_OK) && !S_ISDIR(m) && !(m & 0111))
			return -EACCES;
		return 0;
	}
	unsigned bits;
	if (ctx->uid == st->st_uid) {
		bits = (m >> 6) & 7;
	} else {
		bool in_group = ctx->gid == st->st_gid;
		gid_t groups[64];
		int ng = in_group ? 0 : fuse_req_getgroups(req, 64, groups);
		for (int i = 0; i < ng && i < 64; i++)
			if (groups[i] == st->st_gid)
				in_group = true;
		bits = in_group ? (m >> 3) & 7 : m & 7;
	}
	if (((mask & R_OK) && !(bits & 4)) || ((mask & W_OK) && !(bits & 2)) ||
	    ((mask & X_OK) && !(bits & 1)))
		return -EACCES;
	return 0;
}

static void vfs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	if (fs->wok)
		mask &= ~W_OK;
	if (mask == F_OK) {
		fuse_reply_err(req, 0);
		return;
	}
	ns_read(fs);
	int rc = 0;
	struct vrecord rec;
	int has = meta_node_record(fs, n, &rec);
	if (has < 0) {
		rc = has;
	} else if ((mask & W_OK) && fs->mode == VIEWFS_MERGE && n->in_upper &&
		   !(S_ISDIR(n->type) && n->in_lower)) {
		rc = -EROFS;
	} else if (has && (rec.has & (VREC_MODE | VREC_UID | VREC_GID | VREC_TYPE))) {
		struct stat st;
		rc = node_getattr(fs, n, &st);
		if (rc == 0)
			rc = virtual_access(req, &st, mask);
	} else {
		const char *name;
		enum layer l = node_layer(n);
		if (fs->mode == VIEWFS_MERGE && S_ISDIR(n->type) && n->in_lower)
			l = LOWER; /* new entries of a merged directory go to the original */
		int at = node_at(n, l, &name);
		if (at < 0)
			rc = -ENOENT;
		else if (faccessat(at, name, mask, AT_EACCESS | (*name ? 0 : AT_EMPTY_PATH)) < 0)
			rc = -errno;
	}
	if (has > 0)
		vrecord_clear(&rec);
	ns_unlock(fs);
	fuse_reply_err(req, -rc);
}

static void vfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct viewfs *fs = fuse_req_userdata(req);
	struct statvfs sv;
	int fd = fs->mode == VIEWFS_MERGE ? fs->lower_root : fs->upper_root;
	if (fstatvfs(fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

void attr_ops(struct fuse_lowlevel_ops *ops)
{
	ops->getattr = vfs_getattr;
	ops->setattr = vfs_setattr;
	ops->access = vfs_access;
	ops->statfs = vfs_statfs;
}
