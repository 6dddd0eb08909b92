/* SOURCE/.-: whiteouts, records and the work area (docs/viewfs-layer-format.md).
 *
 * Every directory of the view that has a counterpart SOURCE/.-/DIR gets one cached listing of
 * it, read on first use: afterwards "is NAME deleted?" and "has NAME a record?" cost a hash
 * lookup instead of two failed syscalls per name, which is what makes a lookup in a union as
 * cheap as in a plain directory. Whether SOURCE/.-/DIR exists at all is known from the parent's
 * listing, so directories without metadata (nearly all of them) cost no syscall either. The
 * daemon is the only writer of the layer while it is mounted (as with overlayfs), so the cache
 * is kept exact by the changes below instead of being re-read.
 *
 * A record's file name is its object's name plus byte 0x7F; when that would exceed 255 bytes
 * (a 255-byte name), it is 0x7F, 32 hex digits of a 128-bit FNV-1a hash of the name, and 0x7F.
 *
 * The listing is a small chained hash of names, written here: a library container would not
 * save code next to the flags and lazily parsed records each name carries. */
#include "fs.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RECORD_MARK '\x7f'
#define KEY_MAX (NAME_MAX + 2)

/* ------------------------------------------------------------------ names and keys */

static void record_key(const char *name, char key[KEY_MAX])
{
	size_t len = strlen(name);
	if (len < NAME_MAX) {
		memcpy(key, name, len + 1);
		return;
	}
	unsigned __int128 h = ((unsigned __int128)UINT64_C(0x6c62272e07bb0142) << 64) |
			      UINT64_C(0x62b821756295c58d);
	const unsigned __int128 prime = ((unsigned __int128)1 << 88) | 0x13b;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		h ^= *p;
		h *= prime;
	}
	snprintf(key, KEY_MAX, "%c%016" PRIx64 "%016" PRIx64, RECORD_MARK, (uint64_t)(h >> 64),
		 (uint64_t)h);
}

static void record_file(const char *key, char file[KEY_MAX + 1])
{
	snprintf(file, KEY_MAX + 1, "%s%c", key, RECORD_MARK);
}

bool name_reserved(struct viewfs *fs, struct vnode *d, const char *name)
{
	size_t len = strlen(name);
	if (d == fs->root && strcmp(name, META_NAME) == 0)
		return true;
	return len > 0 && name[len - 1] == RECORD_MARK;
}

/* ------------------------------------------------------------------ the cached listing */

static size_t hash_name(const char *s, size_t nbuckets)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(0x100000001b3);
	}
	return (size_t)h & (nbuckets - 1);
}

static struct metaent *ment_find(struct metadir *m, const char *key)
{
	if (!m || !m->nbuckets)
		return NULL;
	for (struct metaent *e = m->buckets[hash_name(key, m->nbuckets)]; e; e = e->next)
		if (strcmp(e->name, key) == 0)
			return e;
	return NULL;
}

static void ment_rehash(struct metadir *m, size_t nb)
{
	struct metaent **b = calloc(nb, sizeof *b);
	if (!b)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		for (struct metaent *e = m->buckets[i], *next; e; e = next) {
			next = e->next;
			size_t h = hash_name(e->name, nb);
			e->next = b[h];
			b[h] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = nb;
}

static struct metaent *ment_add(struct metadir *m, const char *key)
{
	struct metaent *e = ment_find(m, key);
	if (e)
		return e;
	if (m->count + 1 > m->nbuckets)
		ment_rehash(m, m->nbuckets ? m->nbuckets * 2 : 8);
	if (!m->nbuckets)
		return NULL;
	size_t len = strlen(key);
	e = calloc(1, sizeof *e + len + 1);
	if (!e)
		return NULL;
	memcpy(e->name, key, len + 1);
	size_t h = hash_name(key, m->nbuckets);
	e->next = m->buckets[h];
	m->buckets[h] = e;
	m->count++;
	return e;
}

static void ment_clear_flag(struct metadir *m, const char *key, unsigned flag)
{
	struct metaent *e = ment_find(m, key);
	if (!e)
		return;
	e->flags &= ~flag;
	if (flag & META_RECORD) {
		vrecord_clear(&e->rec);
		e->rec_loaded = false;
		e->rec_error = 0;
	}
	/* entries stay allocated until the listing is freed: they are few and small */
}

int meta_evict_fd(struct metadir *m)
{
	int fd = atomic_load(&m->fd);
	if (fd < 0)
		return 0;
	atomic_store(&m->fd, FD_EVICTED);
	close(fd);
	return 1;
}

/* The fd of d's metadata directory, reopened through the parent's if it was closed. */
static int meta_fd(struct viewfs *fs, struct vnode *d, struct metadir *m)
{
	if (!m)
		return -1;
	int fd = atomic_load(&m->fd);
	if (fd != FD_EVICTED)
		return fd;
	if (!d->parent)
		return -1;
	int pfd = meta_fd(fs, d->parent, meta_get(fs, d->parent));
	int nfd = pfd < 0 ? -1 : openat(pfd, d->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0)
		return -1;
	int expected = FD_EVICTED;
	if (!atomic_compare_exchange_strong(&m->fd, &expected, nfd)) {
		close(nfd);
		return expected;
	}
	fd_counted(fs, 1);
	return nfd;
}

void meta_free(struct metadir *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		for (struct metaent *e = m->buckets[i], *next; e; e = next) {
			next = e->next;
			vrecord_clear(&e->rec);
			free(e);
		}
	}
	free(m->buckets);
	if (m->fd >= 0) {
		close(m->fd);
		if (m->fs)
			fd_counted(m->fs, -1);
	}
	free(m);
}

/* Read the listing of the metadata directory fd (owned and counted by the result). */
static struct metadir *meta_read(struct viewfs *fs, int fd, bool is_root)
{
	struct metadir *m = calloc(1, sizeof *m);
	if (!m) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	m->fd = fd;
	m->fs = fs;
	if (fd >= 0)
		fd_counted(fs, 1);
	if (fd < 0)
		return m;
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!dir) {
		if (dfd >= 0)
			close(dfd);
		vo_warn("cannot read layer metadata: %s", strerror(errno));
		return m;
	}
	struct dirent *de;
	while ((de = readdir(dir))) {
		const char *nm = de->d_name;
		if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
			continue;
		if (is_root && strcmp(nm, META_NAME) == 0)
			continue; /* the work area */
		unsigned char t = de->d_type;
		if (t == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(fd, nm, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			t = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
		}
		size_t len = strlen(nm);
		struct metaent *e = NULL;
		if (t == DT_DIR) {
			if ((e = ment_add(m, nm)))
				e->flags |= META_SUBDIR;
		} else if (t == DT_REG && len > 0 && nm[len - 1] == RECORD_MARK) {
			char key[KEY_MAX];
			memcpy(key, nm, len - 1);
			key[len - 1] = '\0';
			if ((e = ment_add(m, key)))
				e->flags |= META_RECORD;
		} else if (t == DT_REG) {
			if ((e = ment_add(m, nm)))
				e->flags |= META_WHITEOUT;
		}
	}
	closedir(dir);
	return m;
}

/* The root's listing. */
int meta_init(struct viewfs *fs)
{
	bool writable = !fs->readonly && (fs_cowlike(fs) || fs->vstat);
	fs->work_fd = -1;
	int mfd = openat(fs->upper_root, META_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (mfd < 0 && errno == ENOENT && writable) {
		if (mkdirat(fs->upper_root, META_NAME, 0755) < 0 && errno != EEXIST)
			return -errno;
		mfd = openat(fs->upper_root, META_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW |
			     O_CLOEXEC);
	}
	if (mfd < 0 && (errno != ENOENT || writable))
		return -errno;
	if (mfd >= 0 && writable) {
		if (mkdirat(mfd, META_NAME, 0700) < 0 && errno != EEXIST) {
			int e = errno;
			close(mfd);
			return -e;
		}
		fs->work_fd = openat(mfd, META_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fs->work_fd < 0) {
			int e = errno;
			close(mfd);
			return -e;
		}
		/* leftovers of a crash: half-written copies and records, never part of the view */
		int dfd = openat(fs->work_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
		if (dir) {
			struct dirent *de;
			while ((de = readdir(dir)))
				if (strncmp(de->d_name, "tmp.", 4) == 0 &&
				    unlinkat(fs->work_fd, de->d_name, 0) < 0)
					unlinkat(fs->work_fd, de->d_name, AT_REMOVEDIR);
			closedir(dir);
		} else if (dfd >= 0) {
			close(dfd);
		}
	}
	struct metadir *m = meta_read(fs, mfd, true);
	if (!m)
		return -ENOMEM;
	atomic_store(&fs->root->meta, m);
	return 0;
}

struct metadir *meta_get(struct viewfs *fs, struct vnode *d)
{
	struct metadir *m = atomic_load(&d->meta);
	if (m)
		return m;
	if (d->excepted || !d->parent)
		return NULL;
	struct metadir *pm = meta_get(fs, d->parent);
	pthread_mutex_lock(&fs->meta_lock);
	m = atomic_load(&d->meta);
	if (!m) {
		struct metaent *e = ment_find(pm, d->name);
		int fd = -1, pfd = e && (e->flags & META_SUBDIR) ? meta_fd(fs, d->parent, pm) : -1;
		if (pfd >= 0)
			fd = openat(pfd, d->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		m = meta_read(fs, fd, false);
		atomic_store(&d->meta, m);
	}
	pthread_mutex_unlock(&fs->meta_lock);
	return m;
}

unsigned meta_flags(struct viewfs *fs, struct vnode *d, const char *name)
{
	struct metadir *m = meta_get(fs, d);
	if (!m || !m->count)
		return 0;
	unsigned flags = 0;
	struct metaent *e = ment_find(m, name);
	if (e)
		flags = e->flags & (META_WHITEOUT | META_SUBDIR);
	char key[KEY_MAX];
	record_key(name, key);
	e = ment_find(m, key);
	if (e)
		flags |= e->flags & META_RECORD;
	return flags;
}

/* ------------------------------------------------------------------ records */

void report_corrupt(struct viewfs *fs, struct vnode *d, const char *name, const char *why)
{
	if (atomic_fetch_add(&fs->corrupt_logged, 1) >= 20)
		return; /* a broken layer must not flood the log */
	char path[PATH_MAX] = "";
	size_t len = 0;
	/* the path of d, for the message only */
	const char *parts[64];
	int np = 0;
	for (struct vnode *n = d; n && n != fs->root && np < 64; n = n->parent)
		parts[np++] = n->name;
	while (np-- > 0 && len < sizeof path)
		len += (size_t)snprintf(path + len, sizeof path - len, "%s/", parts[np]);
	vo_error("corrupt layer record %s/%s/%s%s\\x7f: %s", fs->source, META_NAME, path, name, why);
}

static int load_record(struct viewfs *fs, struct vnode *d, struct metadir *m,
		       struct metaent *e, const char *name)
{
	char file[KEY_MAX + 1];
	record_file(e->name, file);
	int mfd = meta_fd(fs, d, m);
	int fd = mfd < 0 ? -1 : openat(mfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT) {
			e->flags &= ~(unsigned)META_RECORD;
			return 0;
		}
		report_corrupt(fs, d, name, strerror(errno));
		return -EIO;
	}
	struct stat st;
	e->rec_shared = fstat(fd, &st) == 0 && st.st_nlink > 1;
	char *buf = malloc(VREC_MAX_SIZE + 1);
	ssize_t total = 0, r = 0;
	while (buf && total <= VREC_MAX_SIZE &&
	       (r = read(fd, buf + total, (size_t)(VREC_MAX_SIZE + 1 - total))) > 0)
		total += r;
	close(fd);
	if (!buf)
		return -ENOMEM;
	if (r < 0) {
		free(buf);
		report_corrupt(fs, d, name, strerror(errno));
		return -EIO;
	}
	char err[128];
	int rc = vrecord_parse(buf, (size_t)total, &e->rec, err, sizeof err);
	free(buf);
	if (rc < 0) {
		report_corrupt(fs, d, name, err);
		return -EIO;
	}
	return 0;
}

int meta_record(struct viewfs *fs, struct vnode *d, const char *name, struct vrecord *rec)
{
	memset(rec, 0, sizeof *rec);
	struct metadir *m = meta_get(fs, d);
	char key[KEY_MAX];
	record_key(name, key);
	struct metaent *e = ment_find(m, key);
	if (!e || !(e->flags & META_RECORD))
		return 0;
	int rc = 0;
	pthread_mutex_lock(&fs->meta_lock);
	if (!e->rec_loaded || e->rec_shared) {
		vrecord_clear(&e->rec);
		e->rec_error = load_record(fs, d, m, e, name);
		e->rec_loaded = true;
	}
	if (e->rec_error)
		rc = e->rec_error;
	else if (e->flags & META_RECORD)
		rc = vrecord_copy(rec, &e->rec) < 0 ? -ENOMEM : 1;
	pthread_mutex_unlock(&fs->meta_lock);
	return rc;
}

int meta_node_record(struct viewfs *fs, struct vnode *n, struct vrecord *rec)
{
	if (n->excepted) {
		memset(rec, 0, sizeof *rec);
		return 0;
	}
	if (n->unlinked)
		return vrecord_copy(rec, &n->last_rec) < 0 ? -ENOMEM : !vrecord_empty(rec);
	if (n == fs->root)
		return meta_record(fs, n, "", rec);
	return meta_record(fs, n->parent, n->name, rec);
}

/* ------------------------------------------------------------------ changes */

static int ensure_metadir(struct viewfs *fs, struct vnode *d)
{
	struct metadir *m = meta_get(fs, d);
	if (!m)
		return -EROFS; /* excepted: the original has no layer metadata */
	if (m->fd >= 0 || m->fd == FD_EVICTED) {
		int fd = meta_fd(fs, d, m);
		return fd >= 0 ? fd : -errno;
	}
	if (fs->readonly)
		return -EROFS;
	int fd;
	if (d == fs->root) {
		if (mkdirat(fs->upper_root, META_NAME, 0755) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(fs->upper_root, META_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	} else {
		int pfd = ensure_metadir(fs, d->parent);
		if (pfd < 0)
			return pfd;
		struct metadir *pm = meta_get(fs, d->parent);
		if (mkdirat(pfd, d->name, 0755) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(pfd, d->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct metaent *e = fd >= 0 ? ment_add(pm, d->name) : NULL;
		if (e)
			e->flags |= META_SUBDIR;
	}
	if (fd < 0)
		return -errno;
	m->fd = fd;
	m->fs = fs;
	fd_counted(fs, 1);
	return fd;
}

void work_name(struct viewfs *fs, char *name, size_t namelen)
{
	snprintf(name, namelen, "tmp.%d.%" PRIuFAST64, (int)getpid(),
		 atomic_fetch_add(&fs->tmp_counter, 1));
}

int work_create(struct viewfs *fs, char *name, size_t namelen, mode_t mode)
{
	if (fs->work_fd < 0)
		return -EROFS;
	work_name(fs, name, namelen);
	int fd = openat(fs->work_fd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

int meta_write_record(struct viewfs *fs, struct vnode *d, const char *name,
		      const struct vrecord *rec)
{
	char key[KEY_MAX], file[KEY_MAX + 1];
	record_key(name, key);
	record_file(key, file);
	struct metadir *m = meta_get(fs, d);
	struct metaent *e = ment_find(m, key);
	bool exists = e && (e->flags & META_RECORD);

	if (vrecord_empty(rec)) {
		if (!exists)
			return 0;
		if (unlinkat(meta_fd(fs, d, m), file, 0) < 0 && errno != ENOENT)
			return -errno;
		ment_clear_flag(m, key, META_RECORD);
		return 0;
	}
	int mfd = ensure_metadir(fs, d);
	if (mfd < 0)
		return mfd;
	size_t len;
	char *buf = vrecord_format(rec, &len);
	if (!buf)
		return -ENOMEM;
	int rc = 0;
	struct stat st;
	if (exists && fstatat(mfd, file, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink > 1) {
		/* One record shared by hard links: a rename would split it, so rewrite it. */
		int fd = openat(mfd, file, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
		rc = fd < 0 ? -errno : write_all(fd, buf, len);
		if (fd >= 0)
			close(fd);
	} else {
		char tmp[64];
		int fd = work_create(fs, tmp, sizeof tmp, 0644);
		if (fd < 0) {
			rc = fd;
		} else {
			rc = write_all(fd, buf, len);
			close(fd);
			if (rc == 0 && renameat(fs->work_fd, tmp, mfd, file) < 0)
				rc = -errno;
			if (rc < 0)
				unlinkat(fs->work_fd, tmp, 0);
		}
	}
	free(buf);
	if (rc < 0)
		return rc;
	m = meta_get(fs, d);
	e = ment_add(m, key);
	if (!e)
		return -ENOMEM;
	vrecord_clear(&e->rec);
	e->flags |= META_RECORD;
	e->rec_error = 0;
	e->rec_loaded = vrecord_copy(&e->rec, rec) == 0;
	return 0;
}

int meta_write_node_record(struct viewfs *fs, struct vnode *n, const struct vrecord *rec)
{
	if (n->excepted)
		return -EROFS;
	if (n->unlinked) {
		/* nothing on disk names it any more: keep the change for fstat of open files */
		vrecord_clear(&n->last_rec);
		return vrecord_copy(&n->last_rec, rec) < 0 ? -ENOMEM : 0;
	}
	if (n == fs->root)
		return meta_write_record(fs, n, "", rec);
	return meta_write_record(fs, n->parent, n->name, rec);
}

int meta_set_whiteout(struct viewfs *fs, struct vnode *d, const char *name)
{
	struct metadir *m = meta_get(fs, d);
	struct metaent *e = ment_find(m, name);
	if (e && (e->flags & META_WHITEOUT))
		return 0;
	int mfd = ensure_metadir(fs, d);
	if (mfd < 0)
		return mfd;
	int fd = openat(mfd, name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	close(fd);
	e = ment_add(meta_get(fs, d), name);
	if (!e)
		return -ENOMEM;
	e->flags |= META_WHITEOUT;
	return 0;
}

int meta_clear_whiteout(struct viewfs *fs, struct vnode *d, const char *name)
{
	struct metadir *m = meta_get(fs, d);
	struct metaent *e = ment_find(m, name);
	if (!e || !(e->flags & META_WHITEOUT))
		return 0;
	if (unlinkat(meta_fd(fs, d, m), name, 0) < 0 && errno != ENOENT)
		return -errno;
	ment_clear_flag(m, name, META_WHITEOUT);
	return 0;
}

/* rm -r of name in dirfd, without following symlinks. */
static int remove_tree(int parent, const char *name)
{
	if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		int r = remove_tree(dirfd(dir), de->d_name);
		if (r < 0)
			rc = r;
	}
	closedir(dir);
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		rc = -errno;
	return rc;
}

int meta_remove(struct viewfs *fs, struct vnode *d, const char *name)
{
	struct metadir *m = meta_get(fs, d);
	if (!m || m->fd == -1)
		return 0;
	int mfd = meta_fd(fs, d, m);
	if (mfd < 0)
		return -errno;
	char key[KEY_MAX], file[KEY_MAX + 1];
	record_key(name, key);
	record_file(key, file);
	int rc = 0;
	struct metaent *e = ment_find(m, key);
	if (e && (e->flags & META_RECORD)) {
		if (unlinkat(mfd, file, 0) < 0 && errno != ENOENT)
			rc = -errno;
		ment_clear_flag(m, key, META_RECORD);
	}
	e = ment_find(m, name);
	if (e && (e->flags & META_SUBDIR)) {
		int r = remove_tree(mfd, name);
		if (r < 0)
			rc = r;
		ment_clear_flag(m, name, META_SUBDIR);
	}
	return rc;
}

/* Move (or exchange) one kind of metadata file between two listings. */
static int move_one(struct viewfs *fs, struct vnode *d1, const char *k1, const char *f1,
		    struct vnode *d2, const char *k2, const char *f2, unsigned flag, bool exchange)
{
	struct metadir *m1 = meta_get(fs, d1), *m2 = meta_get(fs, d2);
	struct metaent *e1 = ment_find(m1, k1), *e2 = ment_find(m2, k2);
	bool has1 = e1 && (e1->flags & flag), has2 = e2 && (e2->flags & flag);
	if (!has1 && !(exchange && has2))
		return 0;
	int fd1 = ensure_metadir(fs, d1), fd2 = ensure_metadir(fs, d2);
	if (fd1 < 0)
		return fd1;
	if (fd2 < 0)
		return fd2;
	m1 = meta_get(fs, d1);
	m2 = meta_get(fs, d2);
	if (has1 && has2 && exchange) {
		if (renameat2(fd1, f1, fd2, f2, RENAME_EXCHANGE) < 0)
			return -errno;
	} else if (has1) {
		if (renameat(fd1, f1, fd2, f2) < 0)
			return -errno;
	} else {
		if (renameat(fd2, f2, fd1, f1) < 0)
			return -errno;
	}
	/* the cache: swap (or move) the entries' state */
	struct vrecord r1 = { 0 }, r2 = { 0 };
	bool l1 = false, l2 = false;
	if ((e1 = ment_find(m1, k1)) && (e1->flags & flag)) {
		r1 = e1->rec;
		l1 = e1->rec_loaded && !e1->rec_error;
		memset(&e1->rec, 0, sizeof e1->rec);
		e1->flags &= ~flag;
		e1->rec_loaded = false;
		e1->rec_error = 0;
	}
	if (exchange && (e2 = ment_find(m2, k2)) && (e2->flags & flag)) {
		r2 = e2->rec;
		l2 = e2->rec_loaded && !e2->rec_error;
		memset(&e2->rec, 0, sizeof e2->rec);
		e2->flags &= ~flag;
		e2->rec_loaded = false;
		e2->rec_error = 0;
	} else if ((e2 = ment_find(m2, k2)) && (e2->flags & flag)) {
		ment_clear_flag(m2, k2, flag); /* replaced */
	}
	if (has1) {
		e2 = ment_add(m2, k2);
		if (e2) {
			e2->flags |= flag;
			vrecord_clear(&e2->rec);
			e2->rec = r1;
			e2->rec_loaded = l1;
			memset(&r1, 0, sizeof r1);
		}
	}
	if (exchange && has2) {
		e1 = ment_add(m1, k1);
		if (e1) {
			e1->flags |= flag;
			vrecord_clear(&e1->rec);
			e1->rec = r2;
			e1->rec_loaded = l2;
			memset(&r2, 0, sizeof r2);
		}
	}
	vrecord_clear(&r1);
	vrecord_clear(&r2);
	return 0;
}

int meta_move(struct viewfs *fs, struct vnode *d1, const char *n1, struct vnode *d2,
	      const char *n2, bool exchange)
{
	char k1[KEY_MAX], k2[KEY_MAX], f1[KEY_MAX + 1], f2[KEY_MAX + 1];
	record_key(n1, k1);
	record_key(n2, k2);
	record_file(k1, f1);
	record_file(k2, f2);
	int rc = move_one(fs, d1, k1, f1, d2, k2, f2, META_RECORD, exchange);
	if (rc == 0)
		rc = move_one(fs, d1, n1, n1, d2, n2, n2, META_SUBDIR, exchange);
	return rc;
}

int meta_link_record(struct viewfs *fs, struct vnode *d1, const char *n1, struct vnode *d2,
		     const char *n2)
{
	struct vrecord rec;
	int has = meta_record(fs, d1, n1, &rec);
	if (has <= 0)
		return has;
	char k1[KEY_MAX], k2[KEY_MAX], f1[KEY_MAX + 1], f2[KEY_MAX + 1];
	record_key(n1, k1);
	record_key(n2, k2);
	record_file(k1, f1);
	record_file(k2, f2);
	int fd2 = ensure_metadir(fs, d2);
	struct metadir *m1 = meta_get(fs, d1);
	int rc = 0;
	if (fd2 < 0)
		rc = fd2;
	else if (linkat(meta_fd(fs, d1, m1), f1, fd2, f2, 0) < 0)
		rc = -errno;
	if (rc == 0) {
		struct metaent *e1 = ment_find(m1, k1);
		if (e1)
			e1->rec_shared = true;
		struct metaent *e = ment_add(meta_get(fs, d2), k2);
		if (e) {
			vrecord_clear(&e->rec);
			e->flags |= META_RECORD;
			e->rec = rec;
			e->rec_loaded = true;
			e->rec_shared = true;
			e->rec_error = 0;
			return 0;
		}
	}
	vrecord_clear(&rec);
	return rc;
}
