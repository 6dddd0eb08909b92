/* Resolving a name across the layers, and the except= paths.
 *
 * Which object a name of the view is (docs/viewfs-layer-format.md, "Which entry wins"):
 * an except= path is the original's; otherwise the layer's entry if there is one (a directory
 * merged with the original's directory unless its record says opaque, or redirected to another
 * original directory when it was renamed); otherwise the original's, unless a whiteout hides it.
 * Every step works on directory fds held by the nodes (never on paths rebuilt from the root),
 * and whiteouts and records come from the cached .- listing (metadir.c), so a lookup costs one
 * fstatat per layer that can hold the name, and no more. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------ except= */

const struct except_node *except_child(const struct except_node *e, const char *name)
{
	if (!e)
		return NULL;
	for (const struct except_node *c = e->child; c; c = c->next)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

int except_build(struct viewfs *fs)
{
	fs->except_root = calloc(1, sizeof *fs->except_root);
	if (!fs->except_root)
		return -ENOMEM;
	for (char **p = fs->cfg->except_paths; p && *p; p++) {
		struct except_node *e = fs->except_root;
		char *copy = strdup(*p), *save = NULL;
		if (!copy)
			return -ENOMEM;
		for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
			struct except_node *child = (struct except_node *)except_child(e, c);
			if (!child) {
				child = calloc(1, sizeof *child);
				if (!child || !(child->name = strdup(c))) {
					free(child);
					free(copy);
					return -ENOMEM;
				}
				child->next = e->child;
				e->child = child;
			}
			e = child;
		}
		e->terminal = true;
		free(copy);
	}
	return 0;
}

void except_free(struct except_node *e)
{
	while (e) {
		struct except_node *next = e->next;
		except_free(e->child);
		free(e->name);
		free(e);
		e = next;
	}
}

/* ------------------------------------------------------------------ resolving */

void resolved_clear(struct resolved *r)
{
	vrecord_clear(&r->rec);
}

/* The original directory a renamed directory merges: a path recorded by viewfs itself, opened
 * beneath the original's root without following symlinks, so that a record edited by hand can
 * never reach outside MOUNTPOINT. */
int open_redirect(struct viewfs *fs, const char *path)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, fs->lower_root, path + 1, &how, sizeof how);
}

bool lower_has(struct viewfs *fs, struct vnode *p, const char *name, struct stat *st)
{
	(void)fs;
	struct stat tmp;
	if (!p->in_lower || !node_has_fd(p, LOWER))
		return false;
	int fd = node_fd(p, LOWER);
	return fd >= 0 && fstatat(fd, name, st ? st : &tmp, AT_SYMLINK_NOFOLLOW) == 0;
}

bool self_entry(struct viewfs *fs, int dirfd, const char *name)
{
	struct stat st;
	return fs->mp_name && strcmp(name, fs->mp_name) == 0 && fstat(dirfd, &st) == 0 &&
	       st.st_dev == fs->mp_parent_dev && st.st_ino == fs->mp_parent_ino;
}

/* fstatat of name in a layer directory, without ever entering the view's own mount: a layer
 * that contains the mount point (SOURCE=/ on /unreal) shows the mount point as it was before
 * the mount: absent when it was a plain directory, the mount it covered when it was one. */
static int layer_stat(struct viewfs *fs, int dirfd, const char *name, struct stat *st, bool *self)
{
	*self = false;
	if (self_entry(fs, dirfd, name)) {
		if (!fs->mp_covers_mount) {
			errno = ENOENT;
			return -1;
		}
		*self = true;
		return fstat(fs->lower_root, st);
	}
	return fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW);
}

bool unreadable_is_empty(const struct viewfs *fs, int err)
{
	/* In a view with vstat in cow/mincow (the kernel has checked the caller against what the
	 * view shows), an original directory the user may not search or list (apt's partial/,
	 * 0700 _apt; /root) shows only what the layer adds: the daemon cannot see inside it, and
	 * failing every lookup there would refuse the virtual root what it may do (create its
	 * own files in it, in the layer). */
	return (err == EACCES || err == EPERM) && fs->in_view && fs->vstat && fs_cowlike(fs);
}

/* An original file with several names: once one of them was copied up (or had its metadata
 * changed) the index holds its copy and shared record under its view inode number, and every
 * name of it shows those (overlayfs's index). */
static int resolve_alias(struct viewfs *fs, struct resolved *r)
{
	char key[VREC_KEY_MAX + 1];
	if (r->has_rec && (r->rec.has & VREC_LINK))
		snprintf(key, sizeof key, "%s", r->rec.link);
	else
		meta_index_key(vfs_ino(fs, r->lst.st_dev, r->lst.st_ino), key);
	if (!r->has_rec) {
		int rc = meta_index_record(fs, key, &r->rec);
		if (rc < 0)
			return rc;
		r->has_rec = rc > 0;
	}
	if (meta_index_has_data(fs, key)) {
		int rc = meta_index_stat(fs, key, &r->st);
		if (rc < 0)
			return rc;
		r->alias = true;
		if (!r->has_rec || !(r->rec.has & VREC_LINK)) {
			vrecord_set_link(&r->rec, key); /* no record of its own: the copy's key */
			r->has_rec = true;
		}
	}
	return 0;
}

int resolve(struct viewfs *fs, struct vnode *p, const char *name, struct resolved *r)
{
	memset(r, 0, sizeof *r);
	if (!S_ISDIR(p->type))
		return -ENOTDIR;
	const struct except_node *ec = except_child(p->except, name);
	if (p->excepted || (ec && ec->terminal)) {
		r->excepted = true;
		int lfd = node_fd(p, LOWER);
		if (lfd < 0)
			return -ENOENT;
		if (layer_stat(fs, lfd, name, &r->st, &r->self[LOWER]) < 0)
			return -errno;
		r->in_lower = true;
		r->lst = r->st;
		r->type = r->st.st_mode & S_IFMT;
		r->ino = vfs_ino(fs, r->st.st_dev, r->st.st_ino);
		return 0;
	}
	r->except = ec;
	if (p == fs->root && strcmp(name, META_NAME) == 0)
		return -ENOENT; /* the layer's metadata, and whatever the original has there */

	/* a directory whose whiteouts cannot be read shows nothing rather than what they hide */
	int merr = meta_listing_error(fs, p);
	if (merr < 0)
		return merr;
	unsigned mf = meta_flags(fs, p, name);
	bool whiteout = (mf & META_WHITEOUT) && fs->mode != VIEWFS_MOVE;
	if (p->in_upper) {
		int ufd = node_fd(p, UPPER);
		if (ufd < 0)
			return -errno;
		if (layer_stat(fs, ufd, name, &r->st, &r->self[UPPER]) == 0)
			r->in_upper = true;
		else if (errno != ENOENT)
			return -errno;
	}
	if (p->in_lower && !whiteout && (!r->in_upper || S_ISDIR(r->st.st_mode))) {
		struct stat lst;
		bool self;
		int lfd = node_fd(p, LOWER);
		if (lfd >= 0 && layer_stat(fs, lfd, name, &lst, &self) == 0) {
			r->self[LOWER] = self;
			if (!r->in_upper) {
				r->in_lower = true;
				r->st = r->lst = lst;
			} else if (S_ISDIR(lst.st_mode)) {
				r->in_lower = true;
				r->lst = lst;
			}
		} else if (errno != ENOENT && !r->in_upper && !unreadable_is_empty(fs, errno)) {
			return -errno;
		}
	}
	if (!r->in_upper && !r->in_lower) {
		/* a directory on the way to an except= path that the layer does not have (move
		 * mode, or a deleted one): it leads there and shows nothing else of the original */
		struct stat lst;
		bool self;
		int lfd = ec && !ec->terminal && node_has_fd(p, LOWER) ? node_fd(p, LOWER) : -1;
		if (lfd < 0 || layer_stat(fs, lfd, name, &lst, &self) < 0 || !S_ISDIR(lst.st_mode) ||
		    self)
			return -ENOENT;
		r->st = lst;
		r->type = S_IFDIR;
		r->ino = vfs_ino(fs, lst.st_dev, lst.st_ino);
		return 0;
	}

	if (mf & META_RECORD) {
		int rc = meta_record(fs, p, name, &r->rec);
		if (rc < 0)
			return rc;
		r->has_rec = rc > 0;
	}
	if (r->in_upper && S_ISDIR(r->st.st_mode) && r->has_rec) {
		if (r->rec.has & VREC_OPAQUE) {
			r->in_lower = false;
		} else if (r->rec.has & VREC_REDIRECT) {
			int fd = open_redirect(fs, r->rec.redirect);
			r->in_lower = fd >= 0 && fstat(fd, &r->lst) == 0 && S_ISDIR(r->lst.st_mode);
			if (fd >= 0)
				close(fd);
		}
	}
	if (!r->in_upper && S_ISREG(r->lst.st_mode) && r->lst.st_nlink > 1) {
		int rc = resolve_alias(fs, r);
		if (rc < 0)
			return rc;
	}
	r->type = r->st.st_mode & S_IFMT;
	if (r->has_rec && (r->rec.has & VREC_TYPE) && S_ISREG(r->st.st_mode))
		r->type = r->rec.type;
	if (r->has_rec && (r->rec.has & VREC_INO))
		r->ino = r->rec.ino;
	else if (r->in_lower)
		r->ino = vfs_ino(fs, r->lst.st_dev, r->lst.st_ino);
	else
		r->ino = vfs_ino(fs, r->st.st_dev, r->st.st_ino);
	return 0;
}

static int layer_open(struct viewfs *fs, const struct resolved *r, enum layer l, int dirfd,
		      const char *name, int flags)
{
	if (r->self[l])
		return fcntl(fs->lower_root, F_DUPFD_CLOEXEC, 0);
	return openat(dirfd, name, flags);
}

/* Open the O_PATH fds a new node of r keeps. */
static int resolve_fds(struct viewfs *fs, struct vnode *p, const char *name,
		       const struct resolved *r, int fds[2])
{
	fds[LOWER] = fds[UPPER] = -1;
	bool dir = S_ISDIR(r->type);
	const int dflags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	/* Other files keep an fd only when hard-linked: their name alone may go away while the
	 * object lives on under another one. Everything else is reached through the parent. */
	bool own = dir || r->st.st_nlink > 1;
	int flags = dir ? dflags : O_PATH | O_NOFOLLOW | O_CLOEXEC;

	if (r->in_upper && own) {
		fds[UPPER] = layer_open(fs, r, UPPER, node_fd(p, UPPER), name, flags);
		if (fds[UPPER] < 0)
			return -errno;
	}
	if (r->alias) {
		/* the copy in the index serves it: reached by its own fd, as hard links are */
		fds[UPPER] = meta_index_open(fs, r->rec.link, O_PATH);
		if (fds[UPPER] < 0)
			return -errno;
	}
	if (r->in_lower && (dir || (own && !r->in_upper))) {
		if (dir && r->in_upper && r->has_rec && (r->rec.has & VREC_REDIRECT))
			fds[LOWER] = open_redirect(fs, r->rec.redirect);
		else
			fds[LOWER] = layer_open(fs, r, LOWER, node_fd(p, LOWER), name, flags);
		if (fds[LOWER] < 0) {
			int e = errno;
			if (fds[UPPER] >= 0)
				close(fds[UPPER]);
			fds[UPPER] = -1;
			return -e;
		}
	}
	if (dir && r->except && fds[LOWER] < 0 && node_has_fd(p, LOWER)) {
		int pfd = node_fd(p, LOWER);
		if (pfd >= 0 && !self_entry(fs, pfd, name)) /* only to reach the except= path */
			fds[LOWER] = openat(pfd, name, dflags);
	}
	return 0;
}

static bool obj_is(const struct node_obj *o, const struct stat *st)
{
	return o->known && o->dev == st->st_dev && o->ino == st->st_ino;
}

/* Does an existing node stand for what r resolved? Directories have exactly one name; other
 * files are shared by all their names (hard links are one kernel inode) -- but only by names
 * of the same real object. The view's number is not enough: it may come from a record's
 * `ino=`, which the user may have edited, and two objects that claim one number must stay two
 * files (the second one shows its own data under that number, never the first one's). The
 * object is the one that serves the name: the layer's (an index copy for an original name of
 * a copied-up hard link), or the original's when the name shows the original -- which a node
 * copied up since still knows, so that another original name of it finds it. */
static bool node_matches(const struct vnode *n, const struct resolved *r, const struct vnode *p,
			 const char *name)
{
	if (n->type != r->type || n->excepted != r->excepted || n->gone)
		return false;
	if (!S_ISDIR(r->type))
		return r->in_upper || r->alias ? obj_is(&n->obj[UPPER], &r->st)
					       : obj_is(&n->obj[LOWER], &r->lst);
	return n->parent == p && !n->unlinked && strcmp(n->name, name) == 0 &&
	       n->in_upper == r->in_upper && n->in_lower == r->in_lower;
}

void entry_fill(struct viewfs *fs, struct fuse_entry_param *e, struct vnode *n,
		const struct stat *st)
{
	memset(e, 0, sizeof *e);
	e->ino = node_id(fs, n);
	e->attr = *st;
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
}

static void attr_of_resolved(struct viewfs *fs, const struct resolved *r, struct stat *st)
{
	*st = r->st;
	apply_record(fs, st, r->has_rec ? &r->rec : NULL,
		     S_ISDIR(r->type) && r->in_upper && r->in_lower);
	st->st_ino = r->ino;
}

static struct vnode *find_match_locked(struct viewfs *fs, const struct resolved *r,
				       const struct vnode *p, const char *name)
{
	for (struct vnode *n = node_find_locked(fs, r->ino); n; n = n->hnext)
		if (n->ino == r->ino && node_matches(n, r, p, name))
			return n;
	return NULL;
}

struct vnode *node_of_resolved(struct viewfs *fs, struct vnode *p, const char *name,
			       const struct resolved *r)
{
	pthread_mutex_lock(&fs->table_lock);
	struct vnode *n = find_match_locked(fs, r, p, name);
	pthread_mutex_unlock(&fs->table_lock);
	return n;
}

int lookup_entry(struct viewfs *fs, struct vnode *p, const char *name,
		 struct fuse_entry_param *e, struct vnode **out, bool wlocked)
{
	struct resolved r;
	int rc = resolve(fs, p, name, &r);
	if (rc < 0)
		return rc;
	struct stat st;
	attr_of_resolved(fs, &r, &st);

	pthread_mutex_lock(&fs->table_lock);
	struct vnode *n = find_match_locked(fs, &r, p, name);
	if (n)
		n->refs++;
	pthread_mutex_unlock(&fs->table_lock);

	if (n && n->unlinked && !S_ISDIR(n->type)) {
		/* a name of a hard-linked file whose known name was removed: it becomes the
		 * node's name (a change, so under the write lock) */
		if (!wlocked) {
			node_unref(fs, n, 1);
			resolved_clear(&r);
			return -EAGAIN;
		}
		rc = node_set_name(fs, n, p, name);
		vrecord_clear(&n->last_rec);
		if (rc < 0) {
			node_unref(fs, n, 1);
			resolved_clear(&r);
			return rc;
		}
	}
	if (n) {
		if (n->in_upper != r.in_upper) {
			/* another name of a file already known (a hard link of the original that
			 * was copied up through its other name, or a name given after the last one
			 * was removed): the node's state is the truth */
			rc = node_getattr(fs, n, &st);
			if (rc < 0) {
				node_unref(fs, n, 1);
				resolved_clear(&r);
				return rc;
			}
		}
		resolved_clear(&r);
		entry_fill(fs, e, n, &st);
		if (out)
			*out = n;
		return 0;
	}

	int fds[2];
	rc = resolve_fds(fs, p, name, &r, fds);
	if (rc < 0) {
		resolved_clear(&r);
		return rc;
	}
	struct vnode *nn = node_alloc(name, r.type);
	if (!nn) {
		for (int l = 0; l < 2; l++)
			if (fds[l] >= 0)
				close(fds[l]);
		resolved_clear(&r);
		return -ENOMEM;
	}
	nn->ino = r.ino;
	nn->in_upper = r.in_upper || r.alias;
	if (r.has_rec && (r.rec.has & VREC_LINK) && !S_ISDIR(r.type))
		nn->index_key = strdup(r.rec.link); /* (NULL on ENOMEM: the name's record still has it) */
	nn->in_lower = r.in_lower;
	nn->excepted = r.excepted;
	nn->except = r.except;
	nn->fs = fs;
	if (r.in_upper || r.alias)
		node_note_obj(nn, UPPER, &r.st);
	if (r.in_lower)
		node_note_obj(nn, LOWER, &r.lst);
	for (int l = 0; l < 2; l++)
		if (fds[l] >= 0)
			node_set_fd(fs, nn, (enum layer)l, fds[l]);
	nn->parent = p;
	nn->refs = 1;
	resolved_clear(&r);

	pthread_mutex_lock(&fs->table_lock);
	n = find_match_locked(fs, &r, p, name);
	if (n) {
		/* another thread made it meanwhile */
		n->refs++;
	} else {
		p->refs++; /* the child names its parent */
		node_insert_locked(fs, nn);
		n = nn;
		nn = NULL;
	}
	pthread_mutex_unlock(&fs->table_lock);
	if (nn) {
		node_close_fds(nn);
		nn->parent = NULL;
		pthread_mutex_destroy(&nn->copyup_lock);
		free(nn->index_key);
		free(nn->name);
		free(nn);
	}
	entry_fill(fs, e, n, &st);
	if (out)
		*out = n;
	return 0;
}

char *lower_path(struct viewfs *fs, struct vnode *n)
{
	if (n == fs->root)
		return strdup("");
	if (n->in_upper && S_ISDIR(n->type)) {
		struct vrecord rec;
		if (meta_node_record(fs, n, &rec) > 0 && (rec.has & VREC_REDIRECT)) {
			char *p = strdup(rec.redirect + 1);
			vrecord_clear(&rec);
			return p;
		}
		vrecord_clear(&rec);
	}
	char *pp = lower_path(fs, n->parent);
	if (!pp)
		return NULL;
	char *out = NULL;
	if (asprintf(&out, "%s%s%s", pp, *pp ? "/" : "", n->name) < 0)
		out = NULL;
	free(pp);
	return out;
}
