/* The FUSE low-level operations of umfuse-fat: each one turns a kernel request into a call of
 * the volume (fat_volume.h) and one reply. The kernel's node id of a file is the address of its
 * fat_node (the root is FUSE_ROOT_ID); st_ino is the node's own stable number.
 *
 * Hidden, system and archive attributes (and read-only) are shown as the extended attribute
 * user.fat.attributes, a comma-separated list (docs/fat.md). */
#define _GNU_SOURCE
#include "fat_fuse.h"

#include "fat_endian.h"
#include "fat_volume.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

/* Only this mount changes the image (it is locked), so the kernel may cache names and
 * attributes for long. A name looked up in another case than it is stored gets no caching:
 * after a rename or unlink of the real name the kernel must ask again. */
static const double CACHE_TIMEOUT = 60.0;

#define XATTR_NAME "user.fat.attributes"

/* --- stale names: the kernel is told to drop them, from a thread of their own ---
 * The notification takes the parent directory's lock in the kernel, which the request that
 * caused it still holds until we reply: sent from the request's own thread it would deadlock. */
struct stale {
	fuse_ino_t parent;
	char *name;
	struct stale *next;
};
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct stale *head, **tail;
	struct fuse_session *se;
	pthread_t thread;
	bool running, stop;
} notifier = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &notifier.head,
	       NULL, 0, false, false };

static fuse_ino_t id_of(struct fat_volume *vol, struct fat_node *n);

/* FUSE_NOTIFY_INC_EPOCH (protocol 7.44, Linux 6.16): every dentry cached before it is looked
 * up again. The kernel takes no lock for it, so it can be sent before the reply, and the
 * syscall that changed the name returns with no stale name left. libfuse 3.14 predates it:
 * the message is the bare notification header. */
enum { NOTIFY_INC_EPOCH = 8 };
static int epoch_state; /* 0 untried, 1 works, -1 refused by this kernel */

static bool bump_epoch(struct fuse_session *se)
{
	if (epoch_state < 0 || !se)
		return false;
	struct {
		uint32_t len;
		int32_t code;
		uint64_t unique;
	} h = { sizeof h, NOTIFY_INC_EPOCH, 0 };
	bool ok = write(fuse_session_fd(se), &h, sizeof h) == (ssize_t)sizeof h;
	epoch_state = ok ? 1 : -1;
	return ok;
}

static void queue_stale(struct fat_volume *vol, struct fat_node *parent, const char *name)
{
	if (bump_epoch(notifier.se))
		return;
	struct stale *st = malloc(sizeof *st);
	if (!st || !(st->name = strdup(name))) {
		free(st);
		return; /* the dentry then lives out its timeout */
	}
	st->parent = id_of(vol, parent);
	st->next = NULL;
	pthread_mutex_lock(&notifier.lock);
	*notifier.tail = st;
	notifier.tail = &st->next;
	pthread_cond_signal(&notifier.cond);
	pthread_mutex_unlock(&notifier.lock);
}

static void *notifier_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&notifier.lock);
	for (;;) {
		while (!notifier.head && !notifier.stop)
			pthread_cond_wait(&notifier.cond, &notifier.lock);
		struct stale *st = notifier.head;
		if (!st)
			break;
		notifier.head = st->next;
		if (!notifier.head)
			notifier.tail = &notifier.head;
		pthread_mutex_unlock(&notifier.lock);
		if (!notifier.stop)
			fuse_lowlevel_notify_inval_entry(notifier.se, st->parent, st->name,
							 strlen(st->name));
		free(st->name);
		free(st);
		pthread_mutex_lock(&notifier.lock);
	}
	pthread_mutex_unlock(&notifier.lock);
	return NULL;
}

int fat_fuse_attach(struct fat_volume *vol, struct fuse_session *se)
{
	notifier.se = se;
	notifier.stop = false;
	if (pthread_create(&notifier.thread, NULL, notifier_main, NULL) != 0)
		return -EAGAIN;
	notifier.running = true;
	pthread_mutex_lock(&vol->lock);
	vol->stale_name = queue_stale;
	pthread_mutex_unlock(&vol->lock);
	return 0;
}

void fat_fuse_detach(struct fat_volume *vol)
{
	pthread_mutex_lock(&vol->lock);
	vol->stale_name = NULL;
	pthread_mutex_unlock(&vol->lock);
	if (!notifier.running)
		return;
	pthread_mutex_lock(&notifier.lock);
	notifier.stop = true;
	pthread_cond_signal(&notifier.cond);
	pthread_mutex_unlock(&notifier.lock);
	pthread_join(notifier.thread, NULL);
	notifier.running = false;
}

static struct fat_volume *vol_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fat_node *node_of(struct fat_volume *vol, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? vol->root : (struct fat_node *)(uintptr_t)ino;
}

static fuse_ino_t id_of(struct fat_volume *vol, struct fat_node *n)
{
	return n == vol->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

/* Attributes with vol->lock held: a directory's link count needs its entries read. */
static void node_attr(struct fat_volume *vol, struct fat_node *n, struct stat *st)
{
	if (n->is_dir && !n->dir && !n->deleted)
		vol_load_dir(vol, n);
	vol_stat(vol, n, st);
}

static void fill_entry(struct fat_volume *vol, struct fat_node *n, bool exact,
		       struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = id_of(vol, n);
	e->attr_timeout = e->entry_timeout = exact ? CACHE_TIMEOUT : 0;
	node_attr(vol, n, &e->attr);
}

static void reply_entry(fuse_req_t req, struct fat_volume *vol, struct fat_node *n, bool exact)
{
	struct fuse_entry_param e;
	pthread_mutex_lock(&vol->lock);
	fill_entry(vol, n, exact, &e);
	pthread_mutex_unlock(&vol->lock);
	if (fuse_reply_entry(req, &e) != 0) {
		/* the kernel did not take the reference after all */
		pthread_mutex_lock(&vol->lock);
		vol_node_forget(vol, n, 1);
		pthread_mutex_unlock(&vol->lock);
	}
}

static void f_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* 1 MiB requests where the kernel allows them (max_pages) */
	conn->max_write = 1 << 20;
	conn->max_readahead = conn->max_readahead > (1u << 20) ? conn->max_readahead : 1u << 20;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
	/* reads are answered by splice from the source file (see f_read) */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	/* but requests are read plainly: splicing them in costs every small request a syscall */
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_MOVE);

}

static void f_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fat_volume *vol = vol_of(req);
	struct fat_node *n;
	bool exact = false;
	int r = fat_vol_lookup(vol, node_of(vol, parent), name, &n, &exact);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, vol, n, exact);
}

static void f_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct fat_volume *vol = vol_of(req);
	pthread_mutex_lock(&vol->lock);
	vol_node_forget(vol, node_of(vol, ino), nlookup);
	pthread_mutex_unlock(&vol->lock);
	fuse_reply_none(req);
}

static void f_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fat_volume *vol = vol_of(req);
	pthread_mutex_lock(&vol->lock);
	for (size_t i = 0; i < count; i++)
		vol_node_forget(vol, node_of(vol, forgets[i].ino), forgets[i].nlookup);
	pthread_mutex_unlock(&vol->lock);
	fuse_reply_none(req);
}

static void f_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct fat_volume *vol = vol_of(req);
	struct stat st;
	pthread_mutex_lock(&vol->lock);
	node_attr(vol, node_of(vol, ino), &st);
	pthread_mutex_unlock(&vol->lock);
	fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

/* chmod as Linux vfat: only the write bits mean something (the read-only attribute); r and x
 * must stay as the mount options make them, and a change that FAT cannot hold is ignored
 * without an error, as the kernel does ("too old behaviour" to change, says fs/fat). */
static void apply_mode(struct fat_volume *vol, struct fat_node *n, mode_t mode)
{
	struct stat cur;
	vol_stat(vol, n, &cur);
	unsigned mask = n->is_dir ? vol->opt.dmask : vol->opt.fmask;
	mode_t perm = mode & 0777 & ~mask;
	if ((perm & 0555) != (cur.st_mode & 0555))
		return;
	mode_t w = perm & 0222, all_w = 0222 & ~mask;
	bool can_hold_ro = !n->is_dir || vol->opt.rodir;
	if (w == 0 && can_hold_ro)
		n->de[DE_ATTR] |= FAT_ATTR_RO;
	else if (w == all_w)
		n->de[DE_ATTR] &= (uint8_t)~FAT_ATTR_RO;
}

static void f_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		      struct fuse_file_info *fi)
{
	(void)fi;
	struct fat_volume *vol = vol_of(req);
	struct fat_node *n = node_of(vol, ino);
	int r = 0;
	if (vol->readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* FAT stores no owner and no set-id or sticky bits: asking for them is EPERM */
	if (((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != vol->opt.uid) ||
	    ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != vol->opt.gid) ||
	    ((to_set & FUSE_SET_ATTR_MODE) && (attr->st_mode & 07000))) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		r = n->is_dir ? -EISDIR : fat_file_truncate(vol, n, (uint64_t)attr->st_size);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct stat st;
	pthread_mutex_lock(&vol->lock);
	if (n->parent && n->parent->chain_shared) {
		/* its entry lies in clusters something else claims too: it cannot change */
		pthread_mutex_unlock(&vol->lock);
		fuse_reply_err(req, EIO);
		return;
	}
	if (n->parent) { /* the root has no entry to keep anything in */
		bool changed = false;
		if (to_set & FUSE_SET_ATTR_MODE) {
			apply_mode(vol, n, attr->st_mode);
			changed = true;
		}
		if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
			const struct timespec *t = to_set & FUSE_SET_ATTR_MTIME_NOW ? &now
										    : &attr->st_mtim;
			vol_touch(vol, n->de, FAT_TIME_M, t);
			changed = true;
		}
		if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
			const struct timespec *t = to_set & FUSE_SET_ATTR_ATIME_NOW ? &now
										    : &attr->st_atim;
			vol_touch(vol, n->de, FAT_TIME_A, t);
			changed = true;
		}
		if (changed || (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
			vol_touch(vol, n->de, FAT_TIME_C, &now);
			vol_node_store(vol, n);
			r = vol_commit(vol);
		}
	}
	node_attr(vol, n, &st);
	pthread_mutex_unlock(&vol->lock);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

static void do_create(fuse_req_t req, fuse_ino_t parent, const char *name, bool is_dir,
		      struct fuse_file_info *fi)
{
	struct fat_volume *vol = vol_of(req);
	struct fat_node *n;
	int r = fat_vol_create(vol, node_of(vol, parent), name, is_dir, &n);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (!fi) {
		reply_entry(req, vol, n, true);
		return;
	}
	struct fuse_entry_param e;
	pthread_mutex_lock(&vol->lock);
	n->nopen++;
	n->refs++;
	fill_entry(vol, n, true, &e);
	pthread_mutex_unlock(&vol->lock);
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) != 0) {
		pthread_mutex_lock(&vol->lock);
		n->nopen--;
		vol_node_put(vol, n);
		vol_node_forget(vol, n, 1);
		pthread_mutex_unlock(&vol->lock);
	}
}

static void f_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	if (!S_ISREG(mode)) { /* FAT holds no devices, FIFOs or sockets */
		fuse_reply_err(req, EPERM);
		return;
	}
	do_create(req, parent, name, false, NULL);
}

static void f_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)mode;
	do_create(req, parent, name, true, NULL);
}

static void f_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     struct fuse_file_info *fi)
{
	(void)mode;
	do_create(req, parent, name, false, fi);
}

static void f_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fat_volume *vol = vol_of(req);
	fuse_reply_err(req, -fat_vol_unlink(vol, node_of(vol, parent), name));
}

static void f_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fat_volume *vol = vol_of(req);
	fuse_reply_err(req, -fat_vol_rmdir(vol, node_of(vol, parent), name));
}

static void f_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		     const char *newname, unsigned int flags)
{
	struct fat_volume *vol = vol_of(req);
	fuse_reply_err(req, -fat_vol_rename(vol, node_of(vol, parent), name,
					    node_of(vol, newparent), newname, flags));
}

static void f_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	fuse_reply_err(req, EPERM); /* FAT has no hard links (Linux vfat says EPERM too) */
}

static void f_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent, (void)name;
	fuse_reply_err(req, EPERM); /* nor symbolic links */
}

static void f_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fat_volume *vol = vol_of(req);
	struct fat_node *n = node_of(vol, ino);
	/* An unlinked file whose clusters were taken back for space (vol_release_deleted):
	 * ESTALE makes the kernel look the path up again, so the open finds what the name means
	 * now (a rename's new file, or ENOENT) instead of a file without its data. */
	pthread_mutex_lock(&vol->lock);
	bool released = n->released;
	pthread_mutex_unlock(&vol->lock);
	if (released) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	/* libfuse asks the kernel for atomic O_TRUNC: the truncation is ours to do */
	if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
		int r = fat_file_truncate(vol, n, 0);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
	}
	pthread_mutex_lock(&vol->lock);
	if (n->released) { /* taken back meanwhile, by another thread */
		pthread_mutex_unlock(&vol->lock);
		fuse_reply_err(req, ESTALE);
		return;
	}
	n->nopen++;
	n->refs++;
	vol_node_reopened(vol, n);
	/* a chain shorter than the size (damage): each read reaches us as asked, so what the
	 * chain holds reads back and only what lies past it fails (the page cache would turn
	 * the first short read into a smaller file) */
	bool short_chain = !n->is_dir && (uint64_t)n->ext.total * vol->g.cluster_size <
						 le32(n->de + DE_SIZE);
	pthread_mutex_unlock(&vol->lock);
	fi->keep_cache = 1; /* nobody else changes the image under us */
	fi->direct_io = short_chain;
	if (fuse_reply_open(req, fi) != 0) {
		pthread_mutex_lock(&vol->lock);
		n->nopen--;
		vol_node_put(vol, n);
		pthread_mutex_unlock(&vol->lock);
	}
}

static void f_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct fat_volume *vol = vol_of(req);
	struct fat_node *n = node_of(vol, ino);
	pthread_mutex_lock(&vol->lock);
	n->nopen--;
	vol_release_deleted(vol, n); /* the last close of an unlinked file frees its clusters */
	vol_node_put(vol, n);
	pthread_mutex_unlock(&vol->lock);
	fuse_reply_err(req, 0);
}

/* A read from an image file or a memory source: the bytes go from the source's page cache to
 * the kernel by splice, never through a buffer here. Up to this many runs of clusters per
 * request; a read that needs more goes through a buffer instead: a short answer is EOF to the
 * kernel, so the rest of the file would read as missing. */
#define SPLICE_RUNS 64

static bool read_by_splice(fuse_req_t req, struct fat_volume *vol, struct fat_node *n,
			   size_t size, off_t off)
{
	uint64_t base;
	int fd = vo_block_fd(vol->dev, &base);
	if (fd < 0)
		return false;
	struct fat_run runs[SPLICE_RUNS];
	size_t nruns;
	ssize_t r = fat_file_map(vol, n, (uint64_t)off, size, runs, SPLICE_RUNS, &nruns);
	if (r < 0) {
		fuse_reply_err(req, (int)-r);
		return true;
	}
	if (nruns == SPLICE_RUNS && (size_t)r < size) {
		fat_file_unmap(n); /* more runs than fit: maybe not the end of the file */
		return false;
	}
	/* fuse_bufvec ends in buf[1]: several runs need a vector allocated with room for them
	 * (indexing past buf[0] of one declared inside another struct is out of bounds) */
	struct fuse_bufvec one = FUSE_BUFVEC_INIT(0), *bv = &one;
	size_t bytes = sizeof *bv + (nruns > 1 ? nruns - 1 : 0) * sizeof bv->buf[0];
	if (nruns > 1 && !(bv = malloc(bytes))) {
		fat_file_unmap(n);
		fuse_reply_err(req, ENOMEM);
		return true;
	}
	memset(bv, 0, bytes);
	bv->count = nruns ? nruns : 1;
	for (size_t i = 0; i < nruns; i++) {
		struct fuse_buf *b = &bv->buf[i];
		b->size = runs[i].len;
		b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		b->fd = fd;
		b->pos = (off_t)(base + runs[i].pos);
	}
	if (nruns)
		fuse_reply_data(req, bv, 0);
	else
		fuse_reply_buf(req, NULL, 0);
	if (bv != &one)
		free(bv);
	fat_file_unmap(n); /* held until the bytes were spliced */
	return true;
}

static void f_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)fi;
	struct fat_volume *vol = vol_of(req);
	if (read_by_splice(req, vol, node_of(vol, ino), size, off))
		return;
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t r = fat_file_read(vol, node_of(vol, ino), buf, size, (uint64_t)off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void f_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	struct fat_volume *vol = vol_of(req);
	ssize_t r = fat_file_write(vol, node_of(vol, ino), buf, size, (uint64_t)off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void f_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	fuse_reply_err(req, -fat_volume_sync(vol_of(req)));
}

static void f_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fat_volume *vol = vol_of(req);
	struct fat_node *n = node_of(vol, ino);
	pthread_mutex_lock(&vol->lock);
	int r = n->deleted ? 0 : vol_load_dir(vol, n);
	pthread_mutex_unlock(&vol->lock);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_open(req, fi);
}

/* readdir and readdirplus: "." and ".." first (offsets 1 and 2), then each name by the slot of
 * its short entry (offset slot + 3), so a listing resumes where it stopped even when entries
 * come and go in between. */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct fat_volume *vol = vol_of(req);
	struct fat_node *d = node_of(vol, ino);
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	pthread_mutex_lock(&vol->lock);
	int r = d->deleted ? 0 : vol_load_dir(vol, d);
	if (r < 0 || d->deleted)
		goto done;
	for (; off < 2; off++) {
		struct fat_node *self = off == 0 ? d : d->parent ? d->parent : d;
		struct fuse_entry_param e = { .ino = 0 }; /* no lookup reference for . and .. */
		e.attr.st_ino = self->ino;
		e.attr.st_mode = S_IFDIR;
		const char *nm = off == 0 ? "." : "..";
		size_t need = plus ? fuse_add_direntry_plus(req, buf + used, size - used, nm, &e,
							   off + 1)
				   : fuse_add_direntry(req, buf + used, size - used, nm, &e.attr,
						       off + 1);
		if (need > size - used)
			goto done;
		used += need;
	}
	for (int32_t s = fat_dir_next(d->dir, (uint32_t)(off - 2)); s >= 0;
	     s = fat_dir_next(d->dir, (uint32_t)s + 1)) {
		const char *name = d->dir->names[s]->name;
		size_t need;
		if (plus) {
			struct fat_node *n = vol_child(vol, d, (uint32_t)s, &r);
			if (!n)
				goto done;
			struct fuse_entry_param e;
			fill_entry(vol, n, true, &e);
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, s + 3);
			if (need <= size - used)
				n->nlookup++;
			vol_node_put(vol, n);
		} else {
			const uint8_t *de = fat_dir_slot(d->dir, (uint32_t)s);
			struct stat st = { .st_mode = de[DE_ATTR] & FAT_ATTR_DIR ? S_IFDIR : S_IFREG };
			struct fat_node *n = d->dir->names[s]->node;
			st.st_ino = n ? n->ino : vol_ino_for(vol, d, (uint32_t)s, de);
			need = fuse_add_direntry(req, buf + used, size - used, name, &st, s + 3);
		}
		if (need > size - used)
			break;
		used += need;
	}
	r = 0;
done:
	pthread_mutex_unlock(&vol->lock);
	if (r < 0 && used == 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void f_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void f_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

static void f_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	fuse_reply_err(req, 0);
}

static void f_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	f_fsync(req, ino, datasync, fi);
}

static void f_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct fat_volume *vol = vol_of(req);
	struct statvfs sv;
	pthread_mutex_lock(&vol->lock);
	vol_statfs(vol, &sv);
	pthread_mutex_unlock(&vol->lock);
	fuse_reply_statfs(req, &sv);
}

/* --- user.fat.attributes --- */

static const struct { const char *word; uint8_t bit; } attr_words[] = {
	{ "readonly", FAT_ATTR_RO },
	{ "hidden", FAT_ATTR_HIDDEN },
	{ "system", FAT_ATTR_SYSTEM },
	{ "archive", FAT_ATTR_ARCHIVE },
};
#define NWORDS (sizeof attr_words / sizeof *attr_words)

size_t fat_attr_format(uint8_t attr, char *out, size_t len)
{
	size_t n = 0;
	out[0] = 0;
	for (size_t i = 0; i < NWORDS; i++)
		if (attr & attr_words[i].bit) {
			int w = snprintf(out + n, len - n, "%s%s", n ? "," : "", attr_words[i].word);
			if (w > 0 && (size_t)w < len - n)
				n += (size_t)w;
		}
	return n;
}

int fat_attr_parse(const char *value, size_t len, uint8_t *bits)
{
	*bits = 0;
	size_t i = 0;
	while (i < len) {
		size_t j = i;
		while (j < len && value[j] != ',')
			j++;
		size_t wl = j - i;
		/* tolerate a trailing newline and spaces (echo, setfattr) */
		while (wl && (value[i + wl - 1] == '\n' || value[i + wl - 1] == ' '))
			wl--;
		while (wl && value[i] == ' ')
			i++, wl--;
		if (wl) {
			size_t k = 0;
			for (; k < NWORDS; k++)
				if (strlen(attr_words[k].word) == wl &&
				    strncmp(attr_words[k].word, value + i, wl) == 0)
					break;
			if (k == NWORDS)
				return -EINVAL;
			*bits |= attr_words[k].bit;
		}
		i = j + 1;
	}
	return 0;
}

/* With -o noxattr every xattr call answers ENOSYS: the kernel then stops asking, also for the
 * security.capability it looks up before each write and chown. */
static void f_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fat_volume *vol = vol_of(req);
	if (vol->opt.noxattr) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (strcmp(name, XATTR_NAME) != 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	char value[64];
	pthread_mutex_lock(&vol->lock);
	size_t len = fat_attr_format(node_of(vol, ino)->de[DE_ATTR], value, sizeof value);
	pthread_mutex_unlock(&vol->lock);
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

static void f_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	(void)ino;
	if (vol_of(req)->opt.noxattr) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	static const char names[] = XATTR_NAME; /* with its NUL */
	if (size == 0)
		fuse_reply_xattr(req, sizeof names);
	else if (size < sizeof names)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, names, sizeof names);
}

static void f_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		       size_t size, int flags)
{
	struct fat_volume *vol = vol_of(req);
	struct fat_node *n = node_of(vol, ino);
	uint8_t bits;
	int r = 0;
	if (vol->opt.noxattr)
		r = -ENOSYS;
	else if (strcmp(name, XATTR_NAME) != 0)
		r = -ENOTSUP; /* FAT has room for no other attributes */
	else if (flags & XATTR_CREATE)
		r = -EEXIST; /* it always exists */
	else if (vol->readonly)
		r = -EROFS;
	else if (!n->parent)
		r = -EPERM; /* the root directory has no entry to keep them */
	else
		r = fat_attr_parse(value, size, &bits);
	if (r == 0) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		pthread_mutex_lock(&vol->lock);
		uint8_t settable = FAT_ATTR_RO | FAT_ATTR_HIDDEN | FAT_ATTR_SYSTEM | FAT_ATTR_ARCHIVE;
		if (n->parent->chain_shared) {
			r = -EIO; /* its entry lies in clusters something else claims too */
		} else {
			n->de[DE_ATTR] = (uint8_t)((n->de[DE_ATTR] & ~settable) | bits);
			vol_touch(vol, n->de, FAT_TIME_C, &now);
			r = vol_node_store(vol, n);
			if (r == 0)
				r = vol_commit(vol);
		}
		pthread_mutex_unlock(&vol->lock);
	}
	fuse_reply_err(req, -r);
}

static void f_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino;
	if (vol_of(req)->opt.noxattr) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	/* the attributes are always there; set them to "" to clear them */
	fuse_reply_err(req, strcmp(name, XATTR_NAME) == 0 ? EPERM : ENODATA);
}

const struct fuse_lowlevel_ops fat_ll_ops = {
	.init = f_init,
	.lookup = f_lookup,
	.forget = f_forget,
	.forget_multi = f_forget_multi,
	.getattr = f_getattr,
	.setattr = f_setattr,
	.mknod = f_mknod,
	.mkdir = f_mkdir,
	.unlink = f_unlink,
	.rmdir = f_rmdir,
	.symlink = f_symlink,
	.rename = f_rename,
	.link = f_link,
	.open = f_open,
	.read = f_read,
	.write = f_write,
	/* no .flush: every write is already in the source when it returns, and without it the
	 * kernel stops sending FLUSH on each close after the first ENOSYS */
	.release = f_release,
	.fsync = f_fsync,
	.opendir = f_opendir,
	.readdir = f_readdir,
	.readdirplus = f_readdirplus,
	.releasedir = f_releasedir,
	.fsyncdir = f_fsyncdir,
	.statfs = f_statfs,
	.setxattr = f_setxattr,
	.getxattr = f_getxattr,
	.listxattr = f_listxattr,
	.removexattr = f_removexattr,
	.create = f_create,
};
