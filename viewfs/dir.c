/* Directory operations: mknod, mkdir, symlink, create, link, unlink, rmdir, rename.
 *
 * Where a change goes, by mode:
 *   move     SOURCE.
 *   merge    the original; an entry of SOURCE is read-only (EROFS), and a new entry needs an
 *            original directory to go into.
 *   cow      SOURCE, with whiteouts for deleted original entries, an opaque record for a
 *            directory made where a deleted original one was, and a copy-up of what is renamed
 *            or linked (a directory is not copied: it is recreated in the layer with a record
 *            pointing at its original, so renaming /usr costs one mkdir).
 *   mincow   the original when the real call succeeds; when it is refused (EACCES, EPERM,
 *            EROFS) as cow.
 * except= paths are the original in every mode; a rename or link across their boundary is
 * EXDEV, as between two file systems.
 *
 * Order of writes, for crashes: a record before the object it describes, a whiteout before the
 * layer's object it replaces is removed, and a whiteout removed only after its replacement
 * exists. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NEED_COPY_UP 1

/* What to make. */
struct newobj {
	mode_t mode;        /* type and permission bits (the kernel applied the umask) */
	dev_t rdev;
	const char *target; /* of a symlink */
	int oflags;         /* create(): real open flags; -1 otherwise */
	int fd;             /* create(): the open file */
};

static int make_real(int dirfd, const char *name, struct newobj *o)
{
	switch (o->mode & S_IFMT) {
	case S_IFDIR:
		return mkdirat(dirfd, name, o->mode & 07777) < 0 ? -errno : 0;
	case S_IFLNK:
		return symlinkat(o->target, dirfd, name) < 0 ? -errno : 0;
	case S_IFREG:
		if (o->oflags >= 0) {
			o->fd = openat(dirfd, name, o->oflags | O_CREAT | O_EXCL | O_NOFOLLOW,
				       o->mode & 07777);
			return o->fd < 0 ? -errno : 0;
		}
		/* mknod of a regular file */
		return mknodat(dirfd, name, o->mode, o->rdev) < 0 ? -errno : 0;
	default:
		return mknodat(dirfd, name, o->mode, o->rdev) < 0 ? -errno : 0;
	}
}

static bool child_excepted(const struct vnode *p, const char *name)
{
	const struct except_node *ec = except_child(p->except, name);
	return p->excepted || (ec && ec->terminal);
}

static bool whiteout_at(struct viewfs *fs, struct vnode *p, const char *name)
{
	return fs_union(fs) && (meta_flags(fs, p, name) & META_WHITEOUT);
}

/* Make a new entry name in p (ns write lock held) and look it up for the kernel. */
static int create_in(struct viewfs *fs, fuse_req_t req, struct vnode *p, const char *name,
		     struct newobj *o, struct fuse_entry_param *e, struct vnode **node,
		     enum layer *layer)
{
	o->fd = -1;
	if (!S_ISDIR(p->type))
		return -ENOTDIR;
	if (p->unlinked)
		return -ENOENT;
	struct resolved r;
	int rc = resolve(fs, p, name, &r);
	resolved_clear(&r);
	if (rc == 0)
		return -EEXIST;
	if (rc != -ENOENT)
		return rc;

	bool whiteout = false, try_lower = false;
	enum layer l = UPPER;
	if (child_excepted(p, name)) {
		if (!node_has_fd(p, LOWER))
			return -ENOENT;
		l = LOWER;
	} else {
		if (p == fs->root && strcmp(name, META_NAME) == 0)
			return -EINVAL;
		whiteout = whiteout_at(fs, p, name);
		switch (fs->mode) {
		case VIEWFS_MERGE:
			if (!p->in_lower || whiteout)
				return -EROFS;
			l = LOWER;
			break;
		case VIEWFS_MINCOW:
			try_lower = p->in_lower && !whiteout;
			break;
		default:
			break;
		}
	}
	if (try_lower) {
		rc = make_real(node_fd(p, LOWER), name, o);
		if (rc == 0)
			l = LOWER;
		else if (!refused(-rc))
			return rc;
	} else if (l == LOWER) {
		rc = make_real(node_fd(p, LOWER), name, o);
		if (rc < 0)
			return rc;
	}
	if (l == UPPER) {
		if (name_reserved(fs, p, name))
			return -EINVAL;
		if (fs_cowlike(fs) && (rc = ensure_upper_dir(fs, p)) < 0)
			return rc;
		if (!p->in_upper)
			return -EROFS;
		struct vrecord rec = { 0 };
		struct stat lst;
		mode_t m = o->mode;
		bool virtual_dev = fs->vstat && (S_ISCHR(m) || S_ISBLK(m));
		if (S_ISDIR(m) && lower_has(fs, p, name, &lst) && S_ISDIR(lst.st_mode))
			rec.has |= VREC_OPAQUE; /* rm -r d && mkdir d: an empty d */
		uid_t cu, cg;
		request_ids(req, &cu, &cg);
		bool root_daemon = geteuid() == 0;
		if (fs->vstat && !root_daemon && cu != geteuid()) {
			rec.uid = cu;
			rec.has |= VREC_UID;
		}
		if (fs->vstat && !root_daemon && cg != getegid()) {
			rec.gid = cg;
			rec.has |= VREC_GID;
		}
		if (S_ISREG(m) && (m & (S_ISUID | S_ISGID)) && fs_cowlike(fs)) {
			rec.mode = m & 07777;
			rec.has |= VREC_MODE;
			o->mode &= ~(mode_t)(S_ISUID | S_ISGID);
		}
		if (virtual_dev) {
			rec.type = m & S_IFMT;
			rec.rdev = o->rdev;
			rec.mode = m & 07777;
			rec.has |= VREC_TYPE | VREC_RDEV | VREC_MODE;
		}
		bool wrote = !vrecord_empty(&rec);
		/* a record left at a free name by a crash (written before its object, which never
		 * came) must not dress the new object */
		if (!wrote && (meta_flags(fs, p, name) & META_RECORD) &&
		    (rc = meta_write_record(fs, p, name, &rec)) < 0)
			return rc;
		if (wrote && (rc = meta_write_record(fs, p, name, &rec)) < 0) {
			vrecord_clear(&rec);
			return rc;
		}
		if (virtual_dev) {
			/* never a real device node in the layer: a plain file, the record says what
			 * it is (a layer mounted without nodev elsewhere must not open devices) */
			struct newobj f = { .mode = S_IFREG | (m & 0666), .oflags = -1 };
			rc = make_real(node_fd(p, UPPER), name, &f);
		} else {
			rc = make_real(node_fd(p, UPPER), name, o);
		}
		if (rc < 0 && wrote) {
			struct vrecord none = { 0 };
			meta_write_record(fs, p, name, &none);
		}
		vrecord_clear(&rec);
		if (rc < 0)
			return rc;
		/* the record holds the virtual owner; the real one is a courtesy for the host */
		if (fs->vstat && root_daemon &&
		    fchownat(node_fd(p, UPPER), name, cu, cg, AT_SYMLINK_NOFOLLOW) < 0)
			vo_debug("%s keeps the daemon's owner: %s", name, strerror(errno));
		if (whiteout && (rc = meta_clear_whiteout(fs, p, name)) < 0)
			return rc;
	}
	rc = lookup_entry(fs, p, name, e, node, true);
	if (rc < 0 && o->fd >= 0) {
		close(o->fd);
		o->fd = -1;
	}
	if (layer)
		*layer = l;
	return rc;
}

static void reply_made(fuse_req_t req, int rc, const struct fuse_entry_param *e)
{
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, e);
}

static void do_make(fuse_req_t req, fuse_ino_t parent, const char *name, struct newobj *o)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct fuse_entry_param e;
	ns_write(fs);
	int rc = create_in(fs, req, node_from_id(fs, parent), name, o, &e, NULL, NULL);
	ns_unlock(fs);
	reply_made(req, rc, &e);
}

static void vfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      dev_t rdev)
{
	struct newobj o = { .mode = mode, .rdev = rdev, .oflags = -1 };
	do_make(req, parent, name, &o);
}

static void vfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct newobj o = { .mode = S_IFDIR | (mode & 07777), .oflags = -1 };
	do_make(req, parent, name, &o);
}

static void vfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct newobj o = { .mode = S_IFLNK | 0777, .target = link, .oflags = -1 };
	do_make(req, parent, name, &o);
}

int dir_create_file(struct viewfs *fs, fuse_req_t req, struct vnode *p, const char *name,
		    mode_t mode, int flags, struct fuse_entry_param *e, int *fd_out,
		    struct vnode **node_out, enum layer *layer_out)
{
	struct newobj o = { .mode = S_IFREG | (mode & 07777), .oflags = real_open_flags(fs, flags) };
	ns_write(fs);
	int rc = create_in(fs, req, p, name, &o, e, node_out, layer_out);
	ns_unlock(fs);
	*fd_out = o.fd;
	return rc;
}

/* ------------------------------------------------------------------ link */

static int node_linkat(struct vnode *n, enum layer l, int dirfd, const char *name)
{
	const char *nm;
	int at = node_at(n, l, &nm);
	if (at < 0)
		return -ENOENT;
	if (*nm)
		return linkat(at, nm, dirfd, name, 0) < 0 ? -errno : 0;
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", at);
	return linkat(AT_FDCWD, path, dirfd, name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
}

static int link_locked(struct viewfs *fs, struct vnode *s, struct vnode *q, const char *name,
		       struct fuse_entry_param *e)
{
	if (S_ISDIR(s->type))
		return -EPERM;
	if (!S_ISDIR(q->type))
		return -ENOTDIR;
	struct resolved r;
	int rc = resolve(fs, q, name, &r);
	resolved_clear(&r);
	if (rc == 0)
		return -EEXIST;
	if (rc != -ENOENT)
		return rc;
	bool dst_excepted = child_excepted(q, name);
	if (s->excepted != dst_excepted)
		return -EXDEV;
	enum layer made = UPPER;
	bool whiteout = !dst_excepted && whiteout_at(fs, q, name);
	if (s->excepted) {
		rc = node_linkat(s, LOWER, node_fd(q, LOWER), name);
		made = LOWER;
	} else {
		switch (fs->mode) {
		case VIEWFS_MOVE:
			if (name_reserved(fs, q, name))
				return -EINVAL;
			rc = node_linkat(s, UPPER, node_fd(q, UPPER), name);
			if (rc == 0)
				meta_link_record(fs, s->parent, s->name, q, name);
			break;
		case VIEWFS_MERGE:
			if (s->in_upper || !q->in_lower || whiteout)
				return -EROFS;
			rc = node_linkat(s, LOWER, node_fd(q, LOWER), name);
			made = LOWER;
			break;
		case VIEWFS_MINCOW:
			if (!s->in_upper && q->in_lower && !whiteout) {
				rc = node_linkat(s, LOWER, node_fd(q, LOWER), name);
				if (rc == 0) {
					made = LOWER;
					break;
				}
				if (!refused(-rc) && rc != -EXDEV)
					return rc;
			}
			/* fall through */
		case VIEWFS_COW:
			if (!s->in_upper)
				return NEED_COPY_UP;
			if (name_reserved(fs, q, name))
				return -EINVAL;
			if ((rc = ensure_upper_dir(fs, q)) < 0)
				return rc;
			rc = node_linkat(s, UPPER, node_fd(q, UPPER), name);
			if (rc == 0 && !s->unlinked)
				rc = meta_link_record(fs, s->parent, s->name, q, name);
			if (rc == 0 && whiteout)
				rc = meta_clear_whiteout(fs, q, name);
			break;
		}
	}
	if (rc < 0)
		return rc;
	/* hard-linked now: the node keeps its own fd, its name alone may go */
	if (!node_has_fd(s, made))
		node_set_fd(fs, s, made, node_open(s, made, O_PATH));
	return lookup_entry(fs, q, name, e, NULL, true);
}

static void vfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *s = node_from_id(fs, ino), *q = node_from_id(fs, newparent);
	struct fuse_entry_param e;
	int rc = 0;
	for (int attempt = 0; attempt < 4; attempt++) {
		ns_write(fs);
		rc = link_locked(fs, s, q, newname, &e);
		ns_unlock(fs);
		if (rc != NEED_COPY_UP)
			break;
		if ((rc = copy_up(fs, s, -1)) < 0)
			break;
		rc = -EAGAIN;
	}
	reply_made(req, rc, &e);
}

/* ------------------------------------------------------------------ unlink, rmdir */

/* Before a name of a file the kernel knows goes away: keep its object by fd while it is in use,
 * as a file system keeps an unlinked inode (the kernel may still fstat it through an open file,
 * or write back its cached times, after the name is gone). A file nobody has open is let go at
 * once, so deleting frees its space at once. */
static void keep_object(struct viewfs *fs, struct vnode *n)
{
	if (!n || S_ISDIR(n->type))
		return;
	enum layer l = node_layer(n);
	pthread_mutex_lock(&fs->table_lock);
	bool in_use = n->handles != NULL;
	pthread_mutex_unlock(&fs->table_lock);
	if ((in_use || fs->writeback) && !node_has_fd(n, l))
		node_set_fd(fs, n, l, node_open(n, l, O_PATH));
}

/* The node of a name that is going away keeps its record for fstat of open files. */
static void mark_unlinked(struct vnode *n, struct vnode *p, const char *name,
			  const struct resolved *r)
{
	if (!n || n->parent != p || strcmp(n->name, name) != 0)
		return;
	vrecord_clear(&n->last_rec);
	if (r && r->has_rec)
		vrecord_copy(&n->last_rec, &r->rec);
	n->unlinked = true;
}

static int unlink_locked(struct viewfs *fs, struct vnode *p, const char *name)
{
	struct resolved r;
	int rc = resolve(fs, p, name, &r);
	if (rc < 0)
		return rc;
	if (S_ISDIR(r.type)) {
		resolved_clear(&r);
		return -EISDIR;
	}
	struct vnode *n = node_of_resolved(fs, p, name, &r);
	if (n && n->parent == p && strcmp(n->name, name) == 0)
		keep_object(fs, n);
	if (r.excepted) {
		rc = unlinkat(node_fd(p, LOWER), name, 0) < 0 ? -errno : 0;
		goto done;
	}
	switch (fs->mode) {
	case VIEWFS_MOVE:
		rc = unlinkat(node_fd(p, UPPER), name, 0) < 0 ? -errno : 0;
		if (rc == 0)
			meta_remove(fs, p, name);
		break;
	case VIEWFS_MERGE:
		if (r.in_upper) {
			rc = -EROFS;
			break;
		}
		rc = unlinkat(node_fd(p, LOWER), name, 0) < 0 ? -errno : 0;
		break;
	case VIEWFS_MINCOW:
		if (!r.in_upper) {
			rc = unlinkat(node_fd(p, LOWER), name, 0) < 0 ? -errno : 0;
			if (rc == 0) {
				meta_remove(fs, p, name);
				break;
			}
			if (!refused(-rc))
				break;
		}
		/* fall through */
	case VIEWFS_COW:
		rc = 0;
		if (lower_has(fs, p, name, NULL))
			rc = meta_set_whiteout(fs, p, name);
		if (rc == 0 && r.in_upper && unlinkat(node_fd(p, UPPER), name, 0) < 0)
			rc = -errno;
		if (rc == 0)
			rc = meta_remove(fs, p, name);
		break;
	}
done:
	if (rc == 0)
		mark_unlinked(n, p, name, &r);
	resolved_clear(&r);
	return rc;
}

static void vfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct viewfs *fs = fuse_req_userdata(req);
	ns_write(fs);
	int rc = unlink_locked(fs, node_from_id(fs, parent), name);
	ns_unlock(fs);
	fuse_reply_err(req, -rc);
}

static int rmdir_locked(struct viewfs *fs, struct vnode *p, const char *name)
{
	struct fuse_entry_param e;
	struct vnode *n;
	/* a node for the directory (the kernel has one; take a hold while we use it) */
	int rc = lookup_entry(fs, p, name, &e, &n, true);
	if (rc < 0)
		return rc;
	if (!S_ISDIR(n->type)) {
		rc = -ENOTDIR;
		goto out;
	}
	if (n->excepted) {
		rc = unlinkat(node_fd(p, LOWER), name, AT_REMOVEDIR) < 0 ? -errno : 0;
		goto done;
	}
	rc = dir_empty_in_view(fs, n);
	if (rc == 0)
		rc = -ENOTEMPTY;
	if (rc < 0)
		goto out;
	rc = 0;
	switch (fs->mode) {
	case VIEWFS_MOVE:
		rc = unlinkat(node_fd(p, UPPER), name, AT_REMOVEDIR) < 0 ? -errno : 0;
		if (rc == 0)
			meta_remove(fs, p, name);
		break;
	case VIEWFS_MERGE:
		if (n->in_upper) {
			rc = -EROFS;
			break;
		}
		rc = unlinkat(node_fd(p, LOWER), name, AT_REMOVEDIR) < 0 ? -errno : 0;
		break;
	case VIEWFS_MINCOW:
		if (!n->in_upper) {
			rc = unlinkat(node_fd(p, LOWER), name, AT_REMOVEDIR) < 0 ? -errno : 0;
			if (rc == 0) {
				meta_remove(fs, p, name);
				break;
			}
			/* refused, or not empty because of deleted entries: a whiteout */
			if (!refused(-rc) && rc != -ENOTEMPTY && rc != -EEXIST)
				break;
		}
		/* fall through */
	case VIEWFS_COW:
		rc = meta_remove(fs, p, name);
		if (rc == 0 && lower_has(fs, p, name, NULL))
			rc = meta_set_whiteout(fs, p, name);
		if (rc == 0 && n->in_upper && unlinkat(node_fd(p, UPPER), name, AT_REMOVEDIR) < 0)
			rc = -errno;
		break;
	}
done:
	if (rc == 0)
		n->unlinked = true;
out:
	node_unref(fs, n, 1);
	return rc;
}

static void vfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct viewfs *fs = fuse_req_userdata(req);
	ns_write(fs);
	int rc = rmdir_locked(fs, node_from_id(fs, parent), name);
	ns_unlock(fs);
	fuse_reply_err(req, -rc);
}

/* ------------------------------------------------------------------ rename */

struct rename_op {
	struct vnode *p, *q;
	const char *a, *b;
	unsigned flags;
	struct vnode *s, *d;       /* the nodes of a and of b (d NULL when b does not exist) */
	struct resolved rs, rd;
	bool have_d;
	struct vnode *copy;        /* NEED_COPY_UP: this one first */
};

/* After a directory arrived at name in q: which original directory it merges with. */
static int fix_dir_record(struct viewfs *fs, struct vnode *q, const char *name,
			  const char *lower)
{
	struct vrecord rec;
	int has = meta_record(fs, q, name, &rec);
	if (has < 0)
		return has;
	struct stat lst;
	if (lower) {
		char *abs = NULL;
		if (asprintf(&abs, "/%s", lower) < 0) {
			vrecord_clear(&rec);
			return -ENOMEM;
		}
		vrecord_set_redirect(&rec, abs);
		free(abs);
		rec.has &= ~(unsigned)VREC_OPAQUE;
	} else {
		vrecord_set_redirect(&rec, NULL);
		if (lower_has(fs, q, name, &lst) && S_ISDIR(lst.st_mode))
			rec.has |= VREC_OPAQUE;
		else
			rec.has &= ~(unsigned)VREC_OPAQUE;
	}
	int rc = meta_write_record(fs, q, name, &rec);
	vrecord_clear(&rec);
	return rc;
}

static void rename_nodes(struct viewfs *fs, struct rename_op *op)
{
	bool exchange = op->flags & RENAME_EXCHANGE;
	if (op->d && !exchange)
		mark_unlinked(op->d, op->q, op->b, &op->rd);
	struct vnode *s = op->s, *d = exchange ? op->d : NULL;
	if (s)
		node_set_name(fs, s, op->q, op->b);
	if (d)
		node_set_name(fs, d, op->p, op->a);
}

static int rename_cow(struct viewfs *fs, struct rename_op *op)
{
	bool exchange = op->flags & RENAME_EXCHANGE;
	struct vnode *s = op->s, *d = op->d;
	int rc;

	if (!S_ISDIR(s->type) && !s->in_upper) {
		op->copy = s;
		return NEED_COPY_UP;
	}
	if (exchange && !S_ISDIR(d->type) && !d->in_upper) {
		op->copy = d;
		return NEED_COPY_UP;
	}
	if (name_reserved(fs, op->q, op->b) || (exchange && name_reserved(fs, op->p, op->a)))
		return -EINVAL;
	if (S_ISDIR(s->type) && (rc = ensure_upper_dir(fs, s)) < 0)
		return rc;
	if (exchange && S_ISDIR(d->type) && (rc = ensure_upper_dir(fs, d)) < 0)
		return rc;
	if ((rc = ensure_upper_dir(fs, op->q)) < 0)
		return rc;
	/* where the directories' original content is, before they move */
	char *s_lower = S_ISDIR(s->type) && s->in_lower ? lower_path(fs, s) : NULL;
	char *d_lower = exchange && S_ISDIR(d->type) && d->in_lower ? lower_path(fs, d) : NULL;

	/* A file's record and the whiteout of its original name are in place BEFORE the data is
	 * renamed to a free name, so that a crash at any point shows the file at one name with its
	 * metadata: the whiteout is hidden by the layer's copy still at a, and the record is
	 * hard-linked to b (meaningless until the data arrives; a keeps its own) and unlinked from
	 * a after the rename. (Over an existing b, the record has to follow the data: b's own
	 * metadata, or none, stays until b is replaced. docs/reliability.md names that window.) */
	bool link_record = !exchange && !op->have_d && !S_ISDIR(s->type) &&
			   (meta_flags(fs, op->p, op->a) & META_RECORD) &&
			   !(meta_flags(fs, op->q, op->b) & META_RECORD);
	bool whiteout_first = !exchange && !S_ISDIR(s->type) &&
			      !(meta_flags(fs, op->p, op->a) & META_WHITEOUT) &&
			      lower_has(fs, op->p, op->a, NULL);
	struct vrecord none = { 0 };
	if (whiteout_first && (rc = meta_set_whiteout(fs, op->p, op->a)) < 0)
		goto out;
	if (link_record && (rc = meta_link_record(fs, op->p, op->a, op->q, op->b)) < 0) {
		if (whiteout_first)
			meta_clear_whiteout(fs, op->p, op->a);
		goto out;
	}
	if (renameat2(node_fd(op->p, UPPER), op->a, node_fd(op->q, UPPER), op->b,
		      exchange ? RENAME_EXCHANGE : 0) < 0) {
		rc = -errno;
		if (link_record)
			meta_write_record(fs, op->q, op->b, &none);
		if (whiteout_first)
			meta_clear_whiteout(fs, op->p, op->a);
		goto out;
	}
	if (!exchange && op->have_d && !link_record)
		meta_remove(fs, op->q, op->b); /* the metadata of what was replaced */
	if (link_record && (rc = meta_write_record(fs, op->p, op->a, &none)) < 0)
		goto out;
	if (!exchange && (rc = meta_clear_whiteout(fs, op->q, op->b)) < 0)
		goto out;
	if ((rc = meta_move(fs, op->p, op->a, op->q, op->b, exchange)) < 0)
		goto out;
	if (S_ISDIR(s->type) && (rc = fix_dir_record(fs, op->q, op->b, s_lower)) < 0)
		goto out;
	if (exchange && S_ISDIR(d->type) && (rc = fix_dir_record(fs, op->p, op->a, d_lower)) < 0)
		goto out;
	if (!exchange && lower_has(fs, op->p, op->a, NULL))
		rc = meta_set_whiteout(fs, op->p, op->a);
out:
	free(s_lower);
	free(d_lower);
	return rc;
}

static int rename_locked(struct viewfs *fs, struct rename_op *op)
{
	bool exchange = op->flags & RENAME_EXCHANGE;
	int rc = resolve(fs, op->p, op->a, &op->rs);
	if (rc < 0)
		return rc;
	rc = resolve(fs, op->q, op->b, &op->rd);
	op->have_d = rc == 0;
	if (rc < 0 && rc != -ENOENT)
		return rc;
	if (exchange && !op->have_d)
		return -ENOENT;
	if ((op->flags & RENAME_NOREPLACE) && op->have_d)
		return -EEXIST;

	struct fuse_entry_param e;
	if ((rc = lookup_entry(fs, op->p, op->a, &e, &op->s, true)) < 0)
		return rc;
	if (op->have_d && (rc = lookup_entry(fs, op->q, op->b, &e, &op->d, true)) < 0)
		return rc;
	struct vnode *s = op->s, *d = op->d;
	if (s == d)
		return 0; /* two names of one file: nothing to do (POSIX) */
	/* a file with several names: the one being renamed is the one a copy-up must copy */
	if (!S_ISDIR(s->type) && (s->parent != op->p || strcmp(s->name, op->a) != 0) &&
	    (rc = node_set_name(fs, s, op->p, op->a)) < 0)
		return rc;
	if (d && !exchange && d->parent == op->q && strcmp(d->name, op->b) == 0)
		keep_object(fs, d);
	if (d && !exchange) {
		if (S_ISDIR(s->type) && !S_ISDIR(d->type))
			return -ENOTDIR;
		if (!S_ISDIR(s->type) && S_ISDIR(d->type))
			return -EISDIR;
		if (S_ISDIR(d->type)) {
			rc = dir_empty_in_view(fs, d);
			if (rc <= 0)
				return rc == 0 ? -ENOTEMPTY : rc;
		}
	}

	bool dst_excepted = child_excepted(op->q, op->b);
	if (s->excepted || dst_excepted) {
		if (s->excepted != dst_excepted)
			return -EXDEV;
		if (renameat2(node_fd(op->p, LOWER), op->a, node_fd(op->q, LOWER), op->b, op->flags) < 0)
			return -errno;
		rename_nodes(fs, op);
		return 0;
	}

	switch (fs->mode) {
	case VIEWFS_MOVE:
		if (renameat2(node_fd(op->p, UPPER), op->a, node_fd(op->q, UPPER), op->b, op->flags) < 0)
			return -errno;
		if (!exchange && op->have_d)
			meta_remove(fs, op->q, op->b);
		rc = meta_move(fs, op->p, op->a, op->q, op->b, exchange);
		break;
	case VIEWFS_MERGE:
		if (s->in_upper || (d && d->in_upper) || !op->q->in_lower ||
		    whiteout_at(fs, op->q, op->b))
			return -EROFS;
		if (renameat2(node_fd(op->p, LOWER), op->a, node_fd(op->q, LOWER), op->b, op->flags) < 0)
			return -errno;
		rc = 0;
		break;
	case VIEWFS_MINCOW:
		if (!s->in_upper && (!d || !d->in_upper) && op->q->in_lower &&
		    !whiteout_at(fs, op->q, op->b)) {
			if (renameat2(node_fd(op->p, LOWER), op->a, node_fd(op->q, LOWER), op->b,
				      op->flags) == 0) {
				if (!exchange && op->have_d)
					meta_remove(fs, op->q, op->b);
				rc = meta_move(fs, op->p, op->a, op->q, op->b, exchange);
				break;
			}
			rc = -errno;
			if (!refused(-rc) && rc != -EXDEV)
				return rc;
		}
		/* fall through */
	case VIEWFS_COW:
		rc = rename_cow(fs, op);
		break;
	default:
		rc = -EINVAL;
	}
	if (rc == 0)
		rename_nodes(fs, op);
	return rc;
}

static void vfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	struct viewfs *fs = fuse_req_userdata(req);
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL); /* RENAME_WHITEOUT: the view has no such thing */
		return;
	}
	int rc = 0;
	for (int attempt = 0; attempt < 4; attempt++) {
		struct rename_op op = { .p = node_from_id(fs, parent), .q = node_from_id(fs, newparent),
					.a = name, .b = newname, .flags = flags };
		ns_write(fs);
		rc = rename_locked(fs, &op);
		struct vnode *copy = op.copy;
		if (copy)
			node_ref(fs, copy);
		ns_unlock(fs);
		resolved_clear(&op.rs);
		resolved_clear(&op.rd);
		if (op.s)
			node_unref(fs, op.s, 1);
		if (op.d)
			node_unref(fs, op.d, 1);
		if (rc != NEED_COPY_UP)
			break;
		rc = copy_up(fs, copy, -1);
		node_unref(fs, copy, 1);
		if (rc < 0)
			break;
		rc = -EAGAIN;
	}
	fuse_reply_err(req, -rc);
}

void dir_ops(struct fuse_lowlevel_ops *ops)
{
	ops->mknod = vfs_mknod;
	ops->mkdir = vfs_mkdir;
	ops->symlink = vfs_symlink;
	ops->link = vfs_link;
	ops->unlink = vfs_unlink;
	ops->rmdir = vfs_rmdir;
	ops->rename = vfs_rename;
}
