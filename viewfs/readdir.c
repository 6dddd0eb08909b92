/* Listings: the union of a directory's layers, each name once.
 *
 * The layer's entries come first (they win), then the original's that are neither present in
 * the layer nor deleted by a whiteout, then the except= names that live in this directory. The
 * layer's metadata directory (.- at the root) never shows. d_type and d_ino are what stat would
 * say: a record's type and inode number, and the original's number for a merged directory.
 *
 * A listing is taken when the directory is opened (and again on rewinddir) and served from
 * memory by index, so telldir/seekdir positions stay valid while entries are added or removed,
 * and a name added meanwhile is never returned twice. With readdirplus each entry is looked up
 * as it is returned, which fills the kernel's caches for `ls -l` and `find -ls` in one pass.
 * (The names already listed are found through a few lines of open addressing, written here
 * because the entries array doubles as the hash table's storage.) */
#include "fs.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct dent {
	char *name;
	uint64_t ino;
	unsigned char type; /* DT_* */
	bool upper_dir;     /* a layer directory that may merge with the original's */
};

struct dirhandle {
	struct dirhandle *prev, *next; /* every open listing, freed at unmount if need be */
	pthread_mutex_t lock;
	struct dent *ents;
	size_t n, cap;
	bool built, consumed;
	/* names seen so far (open addressing, indexes into ents + 1) */
	size_t *slots;
	size_t nslots;
};

static size_t name_hash(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(0x100000001b3);
	}
	return (size_t)h;
}

static void dh_clear(struct dirhandle *dh)
{
	for (size_t i = 0; i < dh->n; i++)
		free(dh->ents[i].name);
	free(dh->ents);
	free(dh->slots);
	dh->ents = NULL;
	dh->slots = NULL;
	dh->n = dh->cap = dh->nslots = 0;
	dh->built = false;
}

static struct dent *dh_find(struct dirhandle *dh, const char *name)
{
	if (!dh->nslots)
		return NULL;
	for (size_t i = name_hash(name) & (dh->nslots - 1);; i = (i + 1) & (dh->nslots - 1)) {
		if (!dh->slots[i])
			return NULL;
		struct dent *d = &dh->ents[dh->slots[i] - 1];
		if (strcmp(d->name, name) == 0)
			return d;
	}
}

static int dh_rehash(struct dirhandle *dh, size_t nslots)
{
	size_t *slots = calloc(nslots, sizeof *slots);
	if (!slots)
		return -ENOMEM;
	for (size_t k = 0; k < dh->n; k++) {
		size_t i = name_hash(dh->ents[k].name) & (nslots - 1);
		while (slots[i])
			i = (i + 1) & (nslots - 1);
		slots[i] = k + 1;
	}
	free(dh->slots);
	dh->slots = slots;
	dh->nslots = nslots;
	return 0;
}

static int dh_add(struct dirhandle *dh, const char *name, uint64_t ino, unsigned char type)
{
	if (dh->n == dh->cap) {
		size_t cap = dh->cap ? dh->cap * 2 : 64;
		struct dent *e = realloc(dh->ents, cap * sizeof *e);
		if (!e)
			return -ENOMEM;
		dh->ents = e;
		dh->cap = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	dh->ents[dh->n] = (struct dent){ .name = copy, .ino = ino, .type = type };
	dh->n++;
	if (dh->n * 2 > dh->nslots)
		return dh_rehash(dh, dh->nslots ? dh->nslots * 2 : 128);
	size_t i = name_hash(name) & (dh->nslots - 1);
	while (dh->slots[i])
		i = (i + 1) & (dh->nslots - 1);
	dh->slots[i] = dh->n;
	return 0;
}

static unsigned char dtype_of(mode_t m)
{
	return (unsigned char)((m & S_IFMT) >> 12);
}

/* Call fn for each entry of the directory behind the O_PATH fd (not "." and ".."). */
static int each_entry(int fd, int (*fn)(void *ctx, struct dirent *de), void *ctx)
{
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	DIR *dir = fdopendir(dfd);
	if (!dir) {
		close(dfd);
		return -errno;
	}
	int rc = 0;
	struct dirent *de;
	errno = 0;
	while (rc == 0 && (de = readdir(dir))) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
			continue;
		rc = fn(ctx, de);
	}
	if (rc == 0 && errno)
		rc = -errno;
	closedir(dir);
	return rc;
}

struct build {
	struct viewfs *fs;
	struct vnode *d;
	struct dirhandle *dh;
	int fd;          /* the layer directory being listed */
	dev_t dev;       /* of that directory */
	bool upper;
};

static unsigned char entry_type(struct build *b, struct dirent *de)
{
	if (de->d_type != DT_UNKNOWN)
		return de->d_type;
	struct stat st;
	if (fstatat(b->fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return DT_UNKNOWN;
	return dtype_of(st.st_mode);
}

static bool hidden_here(struct build *b, const char *name)
{
	if (b->d == b->fs->root && strcmp(name, META_NAME) == 0)
		return true;
	if (b->fd >= 0 && !b->fs->mp_covers_mount && self_entry(b->fs, b->fd, name))
		return true; /* the view's own mount point, as it was before the mount: absent */
	const struct except_node *ec = except_child(b->d->except, name);
	return ec && ec->terminal; /* listed from the original, below */
}

static int add_one(void *ctx, struct dirent *de)
{
	struct build *b = ctx;
	struct viewfs *fs = b->fs;
	if (hidden_here(b, de->d_name))
		return 0;
	unsigned mf = meta_flags(fs, b->d, de->d_name);
	struct dent *seen = dh_find(b->dh, de->d_name);
	unsigned char type = entry_type(b, de);
	uint64_t ino = vfs_ino(fs, b->dev, de->d_ino);
	if (!b->upper) {
		if (fs_union(fs) && (mf & META_WHITEOUT))
			return 0;
		if (seen) {
			/* a layer directory merged with this one shows the original's number */
			if (seen->upper_dir && type == DT_DIR)
				seen->ino = ino;
			return 0;
		}
	}
	bool merge_candidate = b->upper && type == DT_DIR;
	if (mf & META_RECORD) {
		struct vrecord rec;
		int has = meta_record(fs, b->d, de->d_name, &rec);
		if (has > 0) {
			if ((rec.has & VREC_TYPE) && type == DT_REG)
				type = dtype_of(rec.type);
			if (rec.has & VREC_INO) {
				ino = rec.ino;
				merge_candidate = false;
			}
			if (rec.has & (VREC_OPAQUE | VREC_REDIRECT))
				merge_candidate = false; /* number from its own origin (stat agrees) */
			vrecord_clear(&rec);
		}
	}
	int rc = dh_add(b->dh, de->d_name, ino, type);
	if (rc == 0)
		b->dh->ents[b->dh->n - 1].upper_dir = merge_candidate;
	return rc;
}

static int layer_listing(struct build *b, int fd, bool upper)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	b->fd = fd;
	b->dev = st.st_dev;
	b->upper = upper;
	return each_entry(fd, add_one, b);
}

static int build_listing(struct viewfs *fs, struct vnode *d, struct dirhandle *dh)
{
	dh_clear(dh);
	struct build b = { .fs = fs, .d = d, .dh = dh, .fd = -1 };
	struct stat st;
	int rc = node_getattr(fs, d, &st);
	if (rc < 0)
		return rc;
	uint64_t parent_ino = d->parent ? d->parent->ino : st.st_ino;
	if ((rc = dh_add(dh, ".", st.st_ino, DT_DIR)) < 0 ||
	    (rc = dh_add(dh, "..", parent_ino, DT_DIR)) < 0)
		return rc;
	if (d->excepted)
		return layer_listing(&b, node_fd(d, LOWER), false);
	/* without its whiteouts, the listing would show deleted entries again */
	if ((rc = meta_listing_error(fs, d)) < 0)
		return rc;
	if (d->in_upper && (rc = layer_listing(&b, node_fd(d, UPPER), true)) < 0)
		return rc;
	if (d->in_lower && (rc = layer_listing(&b, node_fd(d, LOWER), false)) < 0 &&
	    !unreadable_is_empty(fs, -rc))
		return rc;
	/* except= names of this directory: the original's, even in move mode; and the
	 * directories that lead to a deeper except= path (lookup.c shows them) */
	for (const struct except_node *c = d->except ? d->except->child : NULL; c; c = c->next) {
		struct stat cst;
		if (!node_has_fd(d, LOWER) || dh_find(dh, c->name))
			continue;
		if (fstatat(node_fd(d, LOWER), c->name, &cst, AT_SYMLINK_NOFOLLOW) == 0 &&
		    (c->terminal || S_ISDIR(cst.st_mode)) &&
		    (rc = dh_add(dh, c->name, vfs_ino(fs, cst.st_dev, cst.st_ino),
				 dtype_of(cst.st_mode))) < 0)
			return rc;
	}
	dh->built = true;
	return 0;
}

static int count_one(void *ctx, struct dirent *de)
{
	struct build *b = ctx;
	if (hidden_here(b, de->d_name))
		return 0;
	if (!b->upper && !b->d->excepted && fs_union(b->fs) &&
	    (meta_flags(b->fs, b->d, de->d_name) & META_WHITEOUT))
		return 0;
	return 1; /* stops the walk: not empty */
}

int dir_empty_in_view(struct viewfs *fs, struct vnode *d)
{
	struct build b = { .fs = fs, .d = d, .fd = -1 };
	int rc;
	if (d->excepted) {
		b.fd = node_fd(d, LOWER);
		rc = each_entry(node_fd(d, LOWER), count_one, &b);
		return rc < 0 ? rc : !rc;
	}
	if ((rc = meta_listing_error(fs, d)) < 0)
		return rc;
	if (d->in_upper) {
		b.upper = true;
		b.fd = node_fd(d, UPPER);
		if ((rc = each_entry(node_fd(d, UPPER), count_one, &b)) != 0)
			return rc < 0 ? rc : 0;
	}
	if (d->in_lower) {
		b.upper = false;
		b.fd = node_fd(d, LOWER);
		if ((rc = each_entry(node_fd(d, LOWER), count_one, &b)) != 0)
			return rc < 0 ? rc : 0;
	}
	for (const struct except_node *c = d->except ? d->except->child : NULL; c; c = c->next) {
		struct stat cst;
		if (c->terminal && node_has_fd(d, LOWER) &&
		    fstatat(node_fd(d, LOWER), c->name, &cst, AT_SYMLINK_NOFOLLOW) == 0)
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ the operations */

static void dirhandle_free(struct viewfs *fs, struct dirhandle *dh)
{
	pthread_mutex_lock(&fs->table_lock);
	if (dh->prev)
		dh->prev->next = dh->next;
	else
		fs->dirhandles = dh->next;
	if (dh->next)
		dh->next->prev = dh->prev;
	pthread_mutex_unlock(&fs->table_lock);
	dh_clear(dh);
	pthread_mutex_destroy(&dh->lock);
	free(dh);
}

static void vfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirhandle *dh = calloc(1, sizeof *dh);
	if (!dh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	struct viewfs *fs = fuse_req_userdata(req);
	pthread_mutex_init(&dh->lock, NULL);
	pthread_mutex_lock(&fs->table_lock);
	dh->next = fs->dirhandles;
	if (dh->next)
		dh->next->prev = dh;
	fs->dirhandles = dh;
	pthread_mutex_unlock(&fs->table_lock);
	fi->fh = (uint64_t)(uintptr_t)dh;
	/* The kernel may keep the listing of a directory that is one real directory (an original
	 * one, a layer one, or an except= one) across opens: it drops it when the directory
	 * changes through the view, and when the directory's mtime (the real one's, which any
	 * change below moves) differs after the attribute timeout. A merged directory shows one
	 * layer's mtime while both may change: it is listed anew each time. */
	struct vnode *d = node_from_id(fs, ino);
	ns_read(fs);
	bool one_dir = d->excepted || !(d->in_upper && d->in_lower);
	ns_unlock(fs);
	if (one_dir) {
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
	}
	if (fuse_reply_open(req, fi) == -ENOENT)
		dirhandle_free(fs, dh);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *d = node_from_id(fs, ino);
	struct dirhandle *dh = (struct dirhandle *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&dh->lock);
	int rc = 0;
	if (!dh->built || (off == 0 && dh->consumed)) {
		ns_read(fs);
		rc = build_listing(fs, d, dh);
		ns_unlock(fs);
		dh->consumed = false;
	}
	size_t pos = 0;
	for (size_t i = (size_t)off; rc == 0 && i < dh->n; i++) {
		struct dent *de = &dh->ents[i];
		size_t len;
		if (plus) {
			struct fuse_entry_param e = { 0 };
			struct vnode *n = NULL;
			bool dot = i < 2; /* "." and ".." are never looked up */
			if (!dot) {
				ns_read(fs);
				int r = lookup_entry(fs, d, de->name, &e, &n, false);
				ns_unlock(fs);
				if (r < 0) {
					/* gone meanwhile, or needs a change: the kernel looks it up */
					memset(&e, 0, sizeof e);
					n = NULL;
				}
			}
			if (!n) {
				e.attr.st_ino = de->ino;
				e.attr.st_mode = (mode_t)de->type << 12;
			}
			len = fuse_add_direntry_plus(req, buf + pos, size - pos, de->name, &e,
						     (off_t)i + 1);
			if (len > size - pos) {
				if (n)
					node_unref(fs, n, 1);
				break;
			}
		} else {
			struct stat st = { .st_ino = de->ino, .st_mode = (mode_t)de->type << 12 };
			len = fuse_add_direntry(req, buf + pos, size - pos, de->name, &st,
						(off_t)i + 1);
			if (len > size - pos)
				break;
		}
		pos += len;
	}
	dh->consumed = true;
	pthread_mutex_unlock(&dh->lock);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, pos);
	free(buf);
}

static void vfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void vfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			    struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void vfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	dirhandle_free(fuse_req_userdata(req), (struct dirhandle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

void readdir_free_all(struct viewfs *fs)
{
	/* after unmount: listings whose release never arrived */
	while (fs->dirhandles)
		dirhandle_free(fs, fs->dirhandles);
}

static void vfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)fi;
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *d = node_from_id(fs, ino);
	viewfs_serve_yield();
	ns_read(fs);
	int fd = openat(node_fd(d, node_layer(d)), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ns_unlock(fs);
	int rc = 0;
	if (fd < 0)
		rc = errno;
	else if ((datasync ? fdatasync(fd) : fsync(fd)) < 0)
		rc = errno;
	if (fd >= 0)
		close(fd);
	fuse_reply_err(req, rc);
}

void readdir_ops(struct fuse_lowlevel_ops *ops)
{
	ops->opendir = vfs_opendir;
	ops->readdir = vfs_readdir;
	ops->readdirplus = vfs_readdirplus;
	ops->releasedir = vfs_releasedir;
	ops->fsyncdir = vfs_fsyncdir;
}
