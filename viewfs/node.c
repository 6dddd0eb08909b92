/* Nodes: one per object the kernel knows (see struct vnode in fs.h). The FUSE nodeid is the
 * node's address (the root is FUSE_ROOT_ID); a hash table keyed by the view's st_ino finds the
 * node of an object again, so hard links are one kernel inode.
 *
 * The table is a plain chained hash written here rather than taken from a library: it is about
 * fifty lines and needs a lock discipline of its own (table_lock, fs.h) that a generic container
 * would not give.
 *
 * References: the kernel's lookup count, one per child node (a child names its parent), and
 * short holds by operations. A node is freed when the count reaches zero. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t bucket(const struct viewfs *fs, uint64_t ino)
{
	return (size_t)((ino * UINT64_C(0x9E3779B97F4A7C15)) >> 20) & (fs->table_size - 1);
}

int node_table_init(struct viewfs *fs)
{
	fs->table_size = 4096;
	fs->table = calloc(fs->table_size, sizeof *fs->table);
	return fs->table ? 0 : -ENOMEM;
}

static void grow(struct viewfs *fs)
{
	size_t nsize = fs->table_size * 2;
	struct vnode **nt = calloc(nsize, sizeof *nt);
	if (!nt)
		return; /* longer chains, still correct */
	struct vnode **old = fs->table;
	size_t osize = fs->table_size;
	fs->table = nt;
	fs->table_size = nsize;
	for (size_t i = 0; i < osize; i++) {
		for (struct vnode *n = old[i], *next; n; n = next) {
			next = n->hnext;
			size_t b = bucket(fs, n->ino);
			n->hnext = nt[b];
			nt[b] = n;
		}
	}
	free(old);
}

struct vnode *node_find_locked(struct viewfs *fs, uint64_t ino)
{
	for (struct vnode *n = fs->table[bucket(fs, ino)]; n; n = n->hnext)
		if (n->ino == ino)
			return n;
	return NULL;
}

void node_insert_locked(struct viewfs *fs, struct vnode *n)
{
	if (fs->table_count + 1 > fs->table_size)
		grow(fs);
	size_t b = bucket(fs, n->ino);
	n->hnext = fs->table[b];
	fs->table[b] = n;
	n->hashed = true;
	fs->table_count++;
	/* every node the kernel may name is also on the list freed at unmount */
	n->all_next = fs->all;
	n->all_prev = NULL;
	if (fs->all)
		fs->all->all_prev = n;
	fs->all = n;
}

static void untrack_locked(struct viewfs *fs, struct vnode *n)
{
	if (n->all_prev)
		n->all_prev->all_next = n->all_next;
	else if (fs->all == n)
		fs->all = n->all_next;
	if (n->all_next)
		n->all_next->all_prev = n->all_prev;
	n->all_prev = n->all_next = NULL;
}

void node_unhash_locked(struct viewfs *fs, struct vnode *n)
{
	if (!n->hashed)
		return;
	for (struct vnode **pp = &fs->table[bucket(fs, n->ino)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	}
	n->hashed = false;
	n->hnext = NULL;
	fs->table_count--;
}

struct vnode *node_alloc(const char *name, mode_t type)
{
	struct vnode *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->type = type;
	atomic_init(&n->fd[LOWER], -1);
	atomic_init(&n->fd[UPPER], -1);
	pthread_mutex_init(&n->copyup_lock, NULL);
	return n;
}

void node_close_fds(struct vnode *n)
{
	for (int l = 0; l < 2; l++) {
		int fd = atomic_exchange(&n->fd[l], -1);
		if (fd >= 0) {
			close(fd);
			if (n->fs)
				atomic_fetch_sub(&n->fs->node_fds, 1);
		}
	}
}

void fd_counted(struct viewfs *fs, int delta)
{
	if (atomic_fetch_add(&fs->node_fds, delta) + delta > fs->fd_budget && delta > 0)
		atomic_store(&fs->evict_wanted, true);
}

void node_set_fd(struct viewfs *fs, struct vnode *n, enum layer l, int fd)
{
	struct stat st;
	n->fs = fs;
	if (fd >= 0 && fstat(fd, &st) == 0) {
		n->fd_dev[l] = st.st_dev;
		n->fd_ino[l] = st.st_ino;
	}
	int old = atomic_exchange(&n->fd[l], fd);
	if (old >= 0) {
		close(old);
		fd_counted(fs, -1);
	}
	if (fd >= 0)
		fd_counted(fs, 1);
}

/* Open n's directory in layer l again, the way lookup found it. */
static int reopen(struct vnode *n, enum layer l)
{
	struct viewfs *fs = n->fs;
	const int flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	int fd = -1;
	if (!fs || !n->parent || n->unlinked) {
		errno = ESTALE;
		return -1;
	}
	if (l == LOWER && n->in_upper && n->in_lower) {
		/* a renamed directory merges the original directory its record names */
		struct vrecord rec;
		if (meta_node_record(fs, n, &rec) > 0 && (rec.has & VREC_REDIRECT))
			fd = open_redirect(fs, rec.redirect);
		else
			fd = -2;
		vrecord_clear(&rec);
	} else {
		fd = -2;
	}
	if (fd == -2) {
		int pfd = node_fd(n->parent, l);
		if (pfd < 0)
			return -1;
		fd = self_entry(fs, pfd, n->name) ? fcntl(fs->lower_root, F_DUPFD_CLOEXEC, 0)
						   : openat(pfd, n->name, flags);
	}
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_dev != n->fd_dev[l] || st.st_ino != n->fd_ino[l]) {
		close(fd); /* replaced behind the view's back: not the directory the kernel knows */
		errno = ESTALE;
		return -1;
	}
	return fd;
}

int node_fd(struct vnode *n, enum layer l)
{
	int fd = atomic_load(&n->fd[l]);
	if (n->fs)
		atomic_store_explicit(&n->last_use, atomic_fetch_add(&n->fs->tick, 1),
				      memory_order_relaxed);
	if (fd != FD_EVICTED) {
		if (fd < 0)
			errno = ENOENT;
		return fd;
	}
	int nfd = reopen(n, l);
	if (nfd < 0)
		return -1;
	int expected = FD_EVICTED;
	if (!atomic_compare_exchange_strong(&n->fd[l], &expected, nfd)) {
		close(nfd); /* another thread reopened it meanwhile */
		return expected;
	}
	fd_counted(n->fs, 1);
	return nfd;
}

struct candidate {
	struct vnode *n;
	uint64_t used;
};

static int by_use(const void *a, const void *b)
{
	uint64_t x = ((const struct candidate *)a)->used, y = ((const struct candidate *)b)->used;
	return x < y ? -1 : x > y;
}

void node_evict_fds(struct viewfs *fs)
{
	/* ns write lock held: no other thread is using any node's fd */
	atomic_store(&fs->evict_wanted, false);
	pthread_mutex_lock(&fs->table_lock);
	size_t cap = 0, count = 0;
	for (struct vnode *n = fs->all; n; n = n->all_next)
		cap++;
	struct candidate *c = calloc(cap ? cap : 1, sizeof *c);
	for (struct vnode *n = fs->all; c && n; n = n->all_next) {
		if (!S_ISDIR(n->type) || n == fs->root || n->unlinked || !n->parent || !n->fs)
			continue;
		struct metadir *m = atomic_load(&n->meta);
		if (n->fd[LOWER] < 0 && n->fd[UPPER] < 0 && (!m || m->fd < 0))
			continue;
		c[count].n = n;
		c[count].used = atomic_load_explicit(&n->last_use, memory_order_relaxed);
		count++;
	}
	pthread_mutex_unlock(&fs->table_lock);
	if (!c)
		return;
	qsort(c, count, sizeof *c, by_use);
	/* down to half the budget, so that evictions stay rare */
	for (size_t i = 0; i < count && atomic_load(&fs->node_fds) > fs->fd_budget / 2; i++) {
		for (int l = 0; l < 2; l++) {
			int fd = atomic_load(&c[i].n->fd[l]);
			if (fd >= 0) {
				atomic_store(&c[i].n->fd[l], FD_EVICTED);
				close(fd);
				fd_counted(fs, -1);
			}
		}
		struct metadir *m = atomic_load(&c[i].n->meta);
		if (m && meta_evict_fd(m))
			fd_counted(fs, -1);
	}
	free(c);
}

static void node_free(struct vnode *n)
{
	/* files still open at unmount: the kernel's last releases may never have arrived */
	for (struct vhandle *h = n->handles, *next; h; h = next) {
		next = h->next;
		close(h->fd);
		free(h);
	}
	node_close_fds(n);
	meta_free(atomic_load(&n->meta));
	vrecord_clear(&n->last_rec);
	pthread_mutex_destroy(&n->copyup_lock);
	free(n->index_key);
	free(n->name);
	free(n);
}

struct vnode *node_from_id(struct viewfs *fs, fuse_ino_t id)
{
	return id == FUSE_ROOT_ID ? fs->root : (struct vnode *)(uintptr_t)id;
}

fuse_ino_t node_id(struct viewfs *fs, struct vnode *n)
{
	return n == fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

void node_ref(struct viewfs *fs, struct vnode *n)
{
	pthread_mutex_lock(&fs->table_lock);
	n->refs++;
	pthread_mutex_unlock(&fs->table_lock);
}

void node_unref(struct viewfs *fs, struct vnode *n, uint64_t count)
{
	pthread_mutex_lock(&fs->table_lock);
	while (n) {
		if (n->refs < count) {
			vo_error("reference count of %s below zero", n->name);
			n->refs = count;
		}
		n->refs -= count;
		if (n->refs > 0 || n == fs->root)
			break;
		node_unhash_locked(fs, n);
		untrack_locked(fs, n);
		struct vnode *parent = n->parent;
		node_free(n);
		n = parent;
		count = 1;
	}
	pthread_mutex_unlock(&fs->table_lock);
}

int node_set_name(struct viewfs *fs, struct vnode *n, struct vnode *parent, const char *name)
{
	char *copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	struct vnode *old = n->parent;
	if (parent != old) {
		node_ref(fs, parent);
		n->parent = parent;
	}
	free(n->name);
	n->name = copy;
	n->unlinked = false;
	if (old && old != parent)
		node_unref(fs, old, 1);
	return 0;
}

int node_at(struct vnode *n, enum layer layer, const char **name)
{
	if (node_has_fd(n, layer)) {
		*name = "";
		return node_fd(n, layer);
	}
	/* A removed name may already belong to another file (a rename over it, a new file): an
	 * unlinked node without an fd of its own has no way to its object left, and going by its
	 * old name would open, change or stat that other file -- a reader racing a rename over
	 * the name read the new file's bytes cut to the old file's size. */
	if (!n->parent || (n->unlinked && !S_ISDIR(n->type)))
		return -1;
	*name = n->name;
	return node_fd(n->parent, layer);
}

int node_open(struct vnode *n, enum layer layer, int flags)
{
	const char *name;
	int at = node_at(n, layer, &name);
	if (at < 0) {
		errno = ENOENT;
		return -1;
	}
	if (*name && (flags & O_PATH))
		return openat(at, name, flags | O_NOFOLLOW | O_CLOEXEC);
	if (*name) {
		/* The object behind a name may have been replaced since the lookup (the layer and
		 * the original are the user's to change): a FIFO put there must not block the
		 * daemon (with the namespace lock held), and no other kind of file than the
		 * regular file the kernel knows is opened for I/O. */
		int fd = openat(at, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
		struct stat st;
		if (fd < 0)
			return -1;
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			close(fd);
			errno = EIO;
			return -1;
		}
		/* O_NONBLOCK stays: it means nothing for a regular file's I/O, and clearing it
		 * would cost a syscall on every open */
		return fd;
	}
	if (flags & O_PATH)
		return fcntl(at, F_DUPFD_CLOEXEC, 0);
	/* reopen an O_PATH fd with real access modes: through its /proc/self/fd link */
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", at);
	return open(path, (flags & ~O_NOFOLLOW) | O_CLOEXEC);
}

int node_stat(struct vnode *n, enum layer layer, struct stat *st)
{
	const char *name;
	int at = node_at(n, layer, &name);
	if (at < 0) {
		errno = ENOENT;
		return -1;
	}
	return fstatat(at, name, st, AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH));
}

void node_table_free(struct viewfs *fs)
{
	/* After unmount the kernel sends no more forgets: free what is left, in any order
	 * (nothing is dereferenced any more). */
	for (struct vnode *n = fs->all, *next; n; n = next) {
		next = n->all_next;
		if (n != fs->root)
			node_free(n);
	}
	fs->all = NULL;
	free(fs->table);
	fs->table = NULL;
}
