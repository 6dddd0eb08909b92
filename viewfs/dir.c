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
 * exists. A new name of a file (ln) makes its metadata the index's shared record first
 * (metadir.c). A rename whose metadata cannot follow its data in a safe order (over an
 * existing name, or of a directory) is journaled (journal.c). rmdir of a directory that shows
 * original children turns their metadata into its whiteout in one rename. */
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

/* A file whose copy is in the index counts its names in its shared record (the copy's own
 * link count counts the index and only the names that have a layer entry). A crash between a
 * name's change and this leaves the count one off, nothing else. */
static void count_names(struct viewfs *fs, const char *key, int delta)
{
	struct vrecord rec;
	if (!key || !meta_index_has_data(fs, key) || meta_index_record(fs, key, &rec) <= 0)
		return;
	if (rec.has & VREC_NLINK) {
		rec.nlink = delta < 0 && rec.nlink == 0 ? 0 : rec.nlink + (uint64_t)(int64_t)delta;
		meta_index_write(fs, key, &rec);
	}
	vrecord_clear(&rec);
}

/* Before the layer's data gets the new name: the name's record, pointing at the file's shared
 * record (which it becomes now if it is not yet), so that the new name has its metadata from
 * the first moment and a later change through any name is one write aside. */
static int share_for_link(struct viewfs *fs, struct vnode *s, struct vnode *q, const char *name)
{
	if (fs->work_fd < 0 || s->unlinked)
		return 0; /* a layer that takes no records; a file with no name left */
	char *key = NULL;
	int rc = meta_share_record(fs, s, q, name, &key);
	if (rc == 0) {
		free(s->index_key);
		s->index_key = key;
	}
	return rc;
}

static int link_in_layer(struct viewfs *fs, struct vnode *s, struct vnode *q, const char *name)
{
	int rc = share_for_link(fs, s, q, name);
	if (rc == 0)
		rc = node_linkat(s, UPPER, node_fd(q, UPPER), name);
	if (rc < 0 && fs->work_fd >= 0) {
		struct vrecord none = { 0 };
		meta_write_record(fs, q, name, &none); /* the record made for the link */
	} else if (rc == 0) {
		count_names(fs, s->index_key, 1);
	}
	return rc;
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
			rc = link_in_layer(fs, s, q, name);
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
			rc = link_in_layer(fs, s, q, name);
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
	int rc;
	/* until done: each copy-up is progress, and a real file system never says EAGAIN here */
	for (;;) {
		ns_write(fs);
		rc = link_locked(fs, s, q, newname, &e);
		ns_unlock(fs);
		if (rc != NEED_COPY_UP || (rc = copy_up(fs, s, -1)) < 0)
			break;
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
	/* no other name of it was left (an index copy is one more link: nlink 2) */
	if (!S_ISDIR(n->type) && r && r->st.st_nlink <= 1)
		n->gone = true;
}

/* The upper data's last name is going: its shared record, when nothing else needs it, goes
 * after it (a crash between leaves an unused record in the index, nothing in the view). */
static bool last_layer_name(struct viewfs *fs, struct vnode *p, const char *name,
			    const struct resolved *r)
{
	struct stat st;
	return r->in_upper && r->has_rec && (r->rec.has & VREC_LINK) &&
	       !meta_index_has_data(fs, r->rec.link) &&
	       fstatat(node_fd(p, UPPER), name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink == 1;
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
	bool release = false;
	if (r.excepted) {
		rc = unlinkat(node_fd(p, LOWER), name, 0) < 0 ? -errno : 0;
		goto done;
	}
	switch (fs->mode) {
	case VIEWFS_MOVE:
		release = last_layer_name(fs, p, name, &r);
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
		release = last_layer_name(fs, p, name, &r);
		if (lower_has(fs, p, name, NULL))
			rc = meta_set_whiteout(fs, p, name);
		if (rc == 0 && r.in_upper && unlinkat(node_fd(p, UPPER), name, 0) < 0)
			rc = -errno;
		if (rc == 0)
			rc = meta_remove(fs, p, name);
		break;
	}
	if (rc == 0 && r.has_rec && (r.rec.has & VREC_LINK)) {
		count_names(fs, r.rec.link, -1);
		if (release)
			meta_index_release(fs, r.rec.link);
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

/* Before a directory that merges an original one goes: it shows the layer's directory alone
 * (opaque, its number kept), which is as empty as the view was, so that no later step can show
 * the original's children again (ns write lock held). */
static int stop_merging(struct viewfs *fs, struct vnode *n)
{
	struct vrecord rec;
	int rc = meta_node_record(fs, n, &rec);
	if (rc < 0)
		return rc;
	vrecord_set_redirect(&rec, NULL);
	rec.has |= VREC_OPAQUE;
	if (!(rec.has & VREC_INO)) {
		rec.ino = n->ino;
		rec.has |= VREC_INO;
	}
	rc = meta_write_node_record(fs, n, &rec);
	vrecord_clear(&rec);
	return rc;
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
			rc = 0;
		}
		/* fall through */
	case VIEWFS_COW:
		/* In an order where a crash shows the empty directory or nothing: the layer's
		 * directory alone, then the whiteout in place of the children's metadata (one
		 * rename), then the layer's directory and the record go. */
		if (n->in_upper && n->in_lower)
			rc = stop_merging(fs, n);
		if (rc == 0 && lower_has(fs, p, name, NULL))
			rc = meta_whiteout_replacing_children(fs, p, name);
		if (rc == 0 && n->in_upper && unlinkat(node_fd(p, UPPER), name, AT_REMOVEDIR) < 0)
			rc = -errno;
		if (rc == 0)
			rc = meta_remove(fs, p, name);
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

/* rec as the record of a directory that arrived at name in q, with its original content at
 * lower (a path from the original's root, or NULL): which original directory it merges. */
static int dir_record_after_move(struct viewfs *fs, struct vrecord *rec, struct vnode *q,
				 const char *name, const char *lower)
{
	struct stat lst;
	if (lower) {
		char *abs = NULL;
		if (asprintf(&abs, "/%s", lower) < 0)
			return -ENOMEM;
		vrecord_set_redirect(rec, abs);
		free(abs);
		rec->has &= ~(unsigned)VREC_OPAQUE;
	} else {
		vrecord_set_redirect(rec, NULL);
		if (lower_has(fs, q, name, &lst) && S_ISDIR(lst.st_mode))
			rec->has |= VREC_OPAQUE;
		else
			rec->has &= ~(unsigned)VREC_OPAQUE;
	}
	return 0;
}

/* After a directory arrived at name in q: which original directory it merges with. */
static int fix_dir_record(struct viewfs *fs, struct vnode *q, const char *name,
			  const char *lower)
{
	struct vrecord rec;
	int has = meta_record(fs, q, name, &rec);
	if (has < 0)
		return has;
	int rc = dir_record_after_move(fs, &rec, q, name, lower);
	if (rc == 0)
		rc = meta_write_record(fs, q, name, &rec);
	vrecord_clear(&rec);
	return rc;
}

/* Does a name have metadata that a rename must move or replace? */
static bool has_metadata(struct viewfs *fs, struct vnode *d, const char *name)
{
	return meta_flags(fs, d, name) & (META_RECORD | META_SUBDIR);
}

/* Write the journal of the rename of op->a to op->b (before the data moves): the name record
 * b ends with (a's, for a directory in a union pointing at its original content s_lower),
 * whether a ends with a whiteout, and whether a's children's metadata moves. orig_from: the
 * data moves in the original, from there. */
static int journal_rename(struct viewfs *fs, struct rename_op *op, bool dir_in_union,
			  const char *s_lower, bool whiteout, const char *orig_from)
{
	struct journal j = { 0 };
	int rc = 0;
	j.from = view_path(fs, op->p, op->a);
	j.to = view_path(fs, op->q, op->b);
	j.orig_from = orig_from ? strdup(orig_from) : NULL;
	if (!j.from || !j.to || (orig_from && !j.orig_from))
		rc = -ENOMEM;
	if (rc == 0 && dir_in_union) {
		struct vrecord rec;
		rc = meta_record(fs, op->p, op->a, &rec);
		if (rc >= 0)
			rc = dir_record_after_move(fs, &rec, op->q, op->b, s_lower);
		size_t len;
		if (rc == 0 && !vrecord_empty(&rec) && !(j.record = vrecord_format(&rec, &len)))
			rc = -ENOMEM;
		vrecord_clear(&rec);
	} else if (rc == 0) {
		rc = meta_name_record_text(fs, op->p, op->a, &j.record);
		rc = rc > 0 ? 0 : rc;
	}
	j.whiteout = whiteout;
	j.children = meta_flags(fs, op->p, op->a) & META_SUBDIR;
	if (rc == 0)
		rc = journal_begin(fs, &j);
	journal_clear(&j);
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

/* NEED_COPY_UP for n (resolved as r): copy_up() gives an alias its own link of the index's
 * copy, which it finds by the node's key. */
static int want_copy(struct vnode *n, const struct resolved *r)
{
	if (r->alias && !n->index_key && !(n->index_key = strdup(r->rec.link)))
		return -ENOMEM;
	return NEED_COPY_UP;
}

static int rename_cow(struct viewfs *fs, struct rename_op *op)
{
	bool exchange = op->flags & RENAME_EXCHANGE;
	struct vnode *s = op->s, *d = op->d;
	int rc;

	/* files move in the layer: a copy first (an original name of a file whose copy is in
	 * the index gets its own link of that copy) */
	if (!S_ISDIR(s->type) && (!s->in_upper || op->rs.alias)) {
		op->copy = s;
		return want_copy(s, &op->rs);
	}
	if (exchange && !S_ISDIR(d->type) && (!d->in_upper || op->rd.alias)) {
		op->copy = d;
		return want_copy(d, &op->rd);
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
	 * a after the rename. Over an existing b, b's metadata has to stay until b is replaced,
	 * and a directory's children's metadata cannot move with it: those renames are journaled
	 * (journal.c), and a crash is finished at the next mount. */
	bool link_record = !exchange && !op->have_d && !S_ISDIR(s->type) &&
			   (meta_flags(fs, op->p, op->a) & META_RECORD) &&
			   !(meta_flags(fs, op->q, op->b) & META_RECORD);
	bool whiteout_first = !exchange && !S_ISDIR(s->type) &&
			      !(meta_flags(fs, op->p, op->a) & META_WHITEOUT) &&
			      lower_has(fs, op->p, op->a, NULL);
	bool journaled = !exchange && !link_record &&
			 (S_ISDIR(s->type) || has_metadata(fs, op->p, op->a) ||
			  has_metadata(fs, op->q, op->b));
	struct vrecord none = { 0 };
	if (whiteout_first && (rc = meta_set_whiteout(fs, op->p, op->a)) < 0)
		goto out;
	if (link_record && (rc = meta_link_record(fs, op->p, op->a, op->q, op->b)) < 0) {
		if (whiteout_first)
			meta_clear_whiteout(fs, op->p, op->a);
		goto out;
	}
	if (journaled && (rc = journal_rename(fs, op, S_ISDIR(s->type), s_lower,
					      lower_has(fs, op->p, op->a, NULL), NULL)) < 0) {
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
		if (journaled)
			journal_end(fs);
		goto out;
	}
	if (!exchange && op->have_d && !link_record) {
		/* the metadata of what was replaced */
		if (d && !S_ISDIR(d->type) && (op->rd.rec.has & VREC_LINK))
			count_names(fs, op->rd.rec.link, -1);
		meta_remove(fs, op->q, op->b);
	}
	if (link_record && (rc = meta_write_record(fs, op->p, op->a, &none)) < 0)
		goto out_moved;
	if (!exchange && (rc = meta_clear_whiteout(fs, op->q, op->b)) < 0)
		goto out_moved;
	if ((rc = meta_move(fs, op->p, op->a, op->q, op->b, exchange)) < 0)
		goto out_moved;
	if (S_ISDIR(s->type) && (rc = fix_dir_record(fs, op->q, op->b, s_lower)) < 0)
		goto out_moved;
	if (exchange && S_ISDIR(d->type) && (rc = fix_dir_record(fs, op->p, op->a, d_lower)) < 0)
		goto out_moved;
	if (!exchange && lower_has(fs, op->p, op->a, NULL))
		rc = meta_set_whiteout(fs, op->p, op->a);
out_moved:
	/* also after a failed step: the journal is for a crash, and one left behind would
	 * replay old metadata over later changes at the next mount */
	if (journaled)
		journal_end(fs);
out:
	free(s_lower);
	free(d_lower);
	return rc;
}

/* A rename within one layer (move mode, or mincow's real rename in the original): the data in
 * one rename, then the records of what was replaced and of what moved, journaled when there
 * are any. orig: the data is in the original. */
static int rename_plain(struct viewfs *fs, struct rename_op *op, bool orig)
{
	bool exchange = op->flags & RENAME_EXCHANGE;
	enum layer l = orig ? LOWER : UPPER;
	bool journaled = !exchange && (has_metadata(fs, op->p, op->a) ||
				       (op->have_d && has_metadata(fs, op->q, op->b)));
	int rc = 0;
	if (journaled) {
		char *from = NULL;
		if (orig) {
			char *pl = lower_path(fs, op->p);
			if (!pl || asprintf(&from, "/%s%s%s", pl, *pl ? "/" : "", op->a) < 0)
				from = NULL;
			free(pl);
			if (!from)
				return -ENOMEM;
		}
		rc = journal_rename(fs, op, false, NULL, false, from);
		free(from);
		if (rc < 0)
			return rc;
	}
	if (renameat2(node_fd(op->p, l), op->a, node_fd(op->q, l), op->b, op->flags) < 0) {
		rc = -errno;
		if (journaled)
			journal_end(fs);
		return rc;
	}
	if (!exchange && op->have_d)
		meta_remove(fs, op->q, op->b);
	rc = meta_move(fs, op->p, op->a, op->q, op->b, exchange);
	if (journaled)
		journal_end(fs); /* (also after a failure: see rename_cow) */
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
		rc = rename_plain(fs, op, false);
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
			rc = rename_plain(fs, op, true);
			if (rc == 0 || (!refused(-rc) && rc != -EXDEV))
				break;
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
	int rc;
	/* until done: each copy-up is progress, and a real file system never says EAGAIN here */
	for (;;) {
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
