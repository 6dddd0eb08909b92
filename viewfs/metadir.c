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
 * Every change is written aside in the work area and renamed into place, so a crash leaves the
 * old or the new file, never half of one. A file with several names (hard links) has one
 * metadata for all of them: its names' records say `link=KEY` and the metadata is the shared
 * record SOURCE/.-/.-/index/KEY + 0x7F, replaced by a rename like any other (rewriting one
 * record file hard-linked under every name, as viewfs once did, could only be done in place).
 * The index also holds the layer's copy of an original file that has several names in the
 * original (index/KEY, KEY its view inode number): every name of it shows that copy once one
 * of them was copied up (lookup.c), as overlayfs's index does.
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
#include <sys/random.h>
#include <unistd.h>

#define RECORD_MARK '\x7f'
#define KEY_MAX (NAME_MAX + 2)
#define INDEX_NAME "index"

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

void meta_record_file(const char *name, char file[NAME_MAX + 3])
{
	char key[KEY_MAX];
	record_key(name, key);
	record_file(key, file);
}

bool name_reserved(struct viewfs *fs, struct vnode *d, const char *name)
{
	size_t len = strlen(name);
	if (d == fs->root && strcmp(name, META_NAME) == 0)
		return true;
	return len > 0 && name[len - 1] == RECORD_MARK;
}

/* ------------------------------------------------------------------ files of the layer */

int layer_open_regular(int dirfd, const char *name, int flags)
{
	/* The layer is the user's to edit: what should be a record, a journal or a whiteout may
	 * be a FIFO (an open would wait for a writer forever and stall the mount), a device (an
	 * open reaches its driver), a socket or a symlink. So the name is opened O_PATH, which
	 * opens nothing, and only a regular file is opened for real, through that very fd. */
	int pfd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return -1;
	struct stat st;
	if (fstat(pfd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(pfd);
		errno = EINVAL;
		return -1;
	}
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", pfd);
	int fd = open(path, (flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_NOCTTY | O_CLOEXEC);
	int e = errno;
	close(pfd);
	errno = e;
	return fd;
}

int meta_whiteout_at(struct viewfs *fs, int mfd, const char *name)
{
	int fd = openat(mfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (errno != EEXIST)
		return -errno;
	struct stat st;
	if (fstatat(mfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISREG(st.st_mode))
		return 0; /* any regular file is a whiteout */
	if (S_ISDIR(st.st_mode))
		return -EISDIR; /* children's metadata: the callers replace it on purpose */
	/* a FIFO, socket, device or symlink that the user put there: replaced, never opened */
	char tmp[64];
	if ((fd = work_create(fs, tmp, sizeof tmp, 0644)) < 0)
		return fd;
	close(fd);
	if (renameat(fs->work_fd, tmp, mfd, name) < 0) {
		int e = errno;
		unlinkat(fs->work_fd, tmp, 0);
		return -e;
	}
	return 0;
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

/* Read the listing of the metadata directory fd (-1: there is none) into *out; the fd is owned
 * and counted by the result, or closed on failure. 0 or -errno: a listing that could not be
 * read whole is no listing at all (it would show deleted entries again). */
static int meta_read(struct viewfs *fs, int fd, bool is_root, struct metadir **out)
{
	*out = NULL;
	struct metadir *m = calloc(1, sizeof *m);
	if (!m) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	m->fd = fd;
	m->fs = fs;
	if (fd < 0) {
		*out = m;
		return 0;
	}
	fd_counted(fs, 1);
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!dir) {
		int e = errno;
		if (dfd >= 0)
			close(dfd);
		meta_free(m);
		return -e;
	}
	int rc = 0;
	struct dirent *de;
	for (errno = 0; (de = readdir(dir)); errno = 0) {
		const char *nm = de->d_name;
		if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
			continue;
		if (is_root && strcmp(nm, META_NAME) == 0)
			continue; /* the work area */
		unsigned char t = de->d_type;
		if (t == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(fd, nm, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				if (errno == ENOENT)
					continue; /* gone meanwhile */
				break;
			}
			t = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
		}
		size_t len = strlen(nm);
		struct metaent *e = NULL;
		unsigned flag = 0;
		if (t == DT_DIR) {
			e = ment_add(m, nm);
			flag = META_SUBDIR;
		} else if (t == DT_REG && len > 0 && nm[len - 1] == RECORD_MARK) {
			char key[KEY_MAX];
			memcpy(key, nm, len - 1);
			key[len - 1] = '\0';
			e = ment_add(m, key);
			flag = META_RECORD;
		} else if (t == DT_REG) {
			e = ment_add(m, nm);
			flag = META_WHITEOUT;
		} else {
			continue; /* a FIFO, socket, symlink...: means nothing (the format) */
		}
		if (!e) {
			errno = ENOMEM;
			break;
		}
		e->flags |= flag;
	}
	if (errno != 0)
		rc = -errno;
	closedir(dir);
	if (rc < 0) {
		meta_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

/* Leftovers of a crash in the work area: half-written copies and records, and the children's
 * metadata of a directory whose whiteout replaced it; never part of the view. */
static void clean_work_area(struct viewfs *fs)
{
	int dfd = openat(fs->work_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!dir) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(dir)))
		if (strncmp(de->d_name, "tmp.", 4) == 0)
			meta_remove_tree(fs->work_fd, de->d_name);
	closedir(dir);
}

/* The root's listing, the work area and the index. */
int meta_init(struct viewfs *fs)
{
	/* merge never writes SOURCE (it may be read-only), move only records of vstat */
	bool writable = !fs->readonly && (fs_cowlike(fs) || (fs->vstat && fs->mode == VIEWFS_MOVE));
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
		clean_work_area(fs);
	}
	int jr = mfd >= 0 ? journal_replay(fs, mfd) : 0;
	if (jr < 0) {
		close(mfd);
		return jr;
	}
	/* The index is read also on a read-only layer: its copies and shared records are the
	 * view's. The root's listing and the index are read before the mount: one that is there but
	 * cannot be read (not a directory, a symlink, no permission, an I/O error) fails the
	 * mount (the caller names SOURCE/.- and the reason), rather than show what the
	 * whiteouts hide or the original's data where the index holds the copy. */
	int wfd = fs->work_fd >= 0 ? fcntl(fs->work_fd, F_DUPFD_CLOEXEC, 0)
		  : mfd >= 0 ? openat(mfd, META_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
			     : -1;
	int rc = wfd < 0 && mfd >= 0 && errno != ENOENT ? -errno : 0;
	int ifd = wfd >= 0 ? openat(wfd, INDEX_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
			   : -1;
	if (ifd < 0 && wfd >= 0 && errno != ENOENT)
		rc = -errno;
	if (wfd >= 0)
		close(wfd);
	if (rc == 0)
		rc = meta_read(fs, ifd, false, &fs->index);
	else if (ifd >= 0)
		close(ifd);
	if (rc < 0) {
		if (mfd >= 0)
			close(mfd);
		return rc;
	}
	struct metadir *m;
	if ((rc = meta_read(fs, mfd, true, &m)) < 0)
		return rc;
	atomic_store(&fs->root->meta, m);
	return 0;
}

/* The path of d from the view's root ("a/b/"), for messages only. */
static void dir_path(struct viewfs *fs, struct vnode *d, char *path, size_t size)
{
	const char *parts[64];
	int np = 0;
	size_t len = 0;
	path[0] = '\0';
	for (struct vnode *n = d; n && n != fs->root && np < 64; n = n->parent)
		parts[np++] = n->name;
	while (np-- > 0 && len < size)
		len += (size_t)snprintf(path + len, size - len, "%s/", parts[np]);
}

/* d's listing, read on first use (*err 0), or NULL: d has no metadata (excepted; *err 0), or
 * its listing cannot be read now (*err = -errno). A listing that failed is not kept: the next
 * use tries again (the failure may pass: fds or memory ran short), and until one succeeds the
 * directory answers EIO (meta_listing_error): read as empty, its whiteouts would be ignored
 * and deleted entries would show again. */
static struct metadir *meta_load(struct viewfs *fs, struct vnode *d, int *err)
{
	*err = 0;
	struct metadir *m = atomic_load(&d->meta);
	if (m)
		return m;
	if (d->excepted || !d->parent)
		return NULL;
	struct metadir *pm = meta_load(fs, d->parent, err);
	if (*err < 0)
		return NULL;
	pthread_mutex_lock(&fs->meta_lock);
	m = atomic_load(&d->meta);
	if (!m) {
		struct metaent *e = ment_find(pm, d->name);
		int fd = -1;
		if (e && (e->flags & META_SUBDIR)) {
			/* the parent's listing says it is there: not opening it is a failure,
			 * not an absence */
			int pfd = meta_fd(fs, d->parent, pm);
			fd = pfd < 0 ? -1 : openat(pfd, d->name, O_PATH | O_DIRECTORY | O_NOFOLLOW |
						   O_CLOEXEC);
			if (fd < 0)
				*err = -errno;
		}
		if (*err == 0)
			*err = meta_read(fs, fd, false, &m);
		if (*err == 0)
			atomic_store(&d->meta, m);
	}
	pthread_mutex_unlock(&fs->meta_lock);
	if (*err < 0 && atomic_fetch_add(&fs->corrupt_logged, 1) < 20) {
		char path[PATH_MAX];
		dir_path(fs, d, path, sizeof path);
		vo_error("cannot read the layer metadata %s/%s/%s: %s: its entries give EIO",
			 fs->source, META_NAME, path, strerror(-*err));
	}
	return m;
}

struct metadir *meta_get(struct viewfs *fs, struct vnode *d)
{
	int err;
	return meta_load(fs, d, &err);
}

int meta_listing_error(struct viewfs *fs, struct vnode *d)
{
	int err;
	meta_load(fs, d, &err);
	return err == -ENOMEM ? err : err < 0 ? -EIO : 0;
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
	char path[PATH_MAX];
	dir_path(fs, d, path, sizeof path);
	vo_error("corrupt layer record %s/%s/%s%s\\x7f: %s", fs->source, META_NAME, path, name, why);
}

/* Read and parse the record file `file` of the directory mfd. 0, -ENOENT, -ENOMEM, or -EIO
 * with why. *shared: the file has several links (written by an earlier viewfs). */
static int read_record(int mfd, const char *file, struct vrecord *rec, bool *shared, char *why,
		       size_t whylen)
{
	memset(rec, 0, sizeof *rec);
	if (mfd < 0) {
		/* the listing named it, so its directory was there: not a record that is gone */
		snprintf(why, whylen, "cannot open its directory: %s", strerror(errno));
		return -EIO;
	}
	int fd = layer_open_regular(mfd, file, O_RDONLY);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		snprintf(why, whylen, "%s", errno == EINVAL ? "not a regular file" : strerror(errno));
		return -EIO;
	}
	struct stat st;
	*shared = fstat(fd, &st) == 0 && st.st_nlink > 1;
	char *buf = malloc(VREC_MAX_SIZE + 1);
	ssize_t total = 0, r = 0;
	while (buf && total <= VREC_MAX_SIZE &&
	       (r = read(fd, buf + total, (size_t)(VREC_MAX_SIZE + 1 - total))) > 0)
		total += r;
	int e = errno;
	close(fd);
	if (!buf)
		return -ENOMEM;
	if (r < 0) {
		free(buf);
		snprintf(why, whylen, "%s", strerror(e));
		return -EIO;
	}
	int rc = vrecord_parse(buf, (size_t)total, rec, why, whylen);
	free(buf);
	return rc < 0 ? -EIO : 0;
}

static int load_record(struct viewfs *fs, struct vnode *d, struct metadir *m,
		       struct metaent *e, const char *name)
{
	char file[KEY_MAX + 1], why[128];
	record_file(e->name, file);
	int rc = read_record(meta_fd(fs, d, m), file, &e->rec, &e->rec_shared, why, sizeof why);
	if (rc == -ENOENT) {
		e->flags &= ~(unsigned)META_RECORD;
		return 0;
	}
	if (rc == -EIO)
		report_corrupt(fs, d, name, why);
	return rc;
}

/* ------------------------------------------------------------------ the index */

static int index_fd(const struct viewfs *fs)
{
	return fs->index ? atomic_load(&fs->index->fd) : -1;
}

void meta_index_key(uint64_t ino, char key[VREC_KEY_MAX + 1])
{
	snprintf(key, VREC_KEY_MAX + 1, "%" PRIu64, ino);
}

/* A key for a file born in the layer: random, so that it never meets an original's number nor
 * a key of a copy of this layer made elsewhere. */
static int new_key(struct viewfs *fs, char key[VREC_KEY_MAX + 1])
{
	for (int tries = 0; tries < 16; tries++) {
		uint64_t r;
		if (getrandom(&r, sizeof r, 0) != sizeof r)
			return -EIO;
		snprintf(key, VREC_KEY_MAX + 1, "l%016" PRIx64, r);
		if (!ment_find(fs->index, key))
			return 0;
	}
	return -EEXIST;
}

/* The index directory, made on first use (ns write lock held). */
static int index_dir(struct viewfs *fs)
{
	if (index_fd(fs) >= 0)
		return index_fd(fs);
	if (fs->work_fd < 0 || !fs->index)
		return -EROFS;
	if (mkdirat(fs->work_fd, INDEX_NAME, 0700) < 0 && errno != EEXIST)
		return -errno;
	int fd = openat(fs->work_fd, INDEX_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	atomic_store(&fs->index->fd, fd);
	fd_counted(fs, 1);
	return fd;
}

static struct metaent *index_entry(struct viewfs *fs, const char *key, unsigned flag)
{
	struct metaent *e = ment_find(fs->index, key);
	return e && (e->flags & flag) ? e : NULL;
}

bool meta_index_has_data(struct viewfs *fs, const char *key)
{
	return index_entry(fs, key, META_WHITEOUT) != NULL;
}

int meta_index_stat(struct viewfs *fs, const char *key, struct stat *st)
{
	if (index_fd(fs) < 0 || fstatat(index_fd(fs), key, st, AT_SYMLINK_NOFOLLOW) < 0)
		return index_fd(fs) < 0 ? -ENOENT : -errno;
	return S_ISREG(st->st_mode) ? 0 : -EIO;
}

int meta_index_open(struct viewfs *fs, const char *key, int flags)
{
	if (index_fd(fs) < 0) {
		errno = ENOENT;
		return -1;
	}
	return openat(index_fd(fs), key, flags | O_NOFOLLOW | O_CLOEXEC);
}

int meta_index_record(struct viewfs *fs, const char *key, struct vrecord *rec)
{
	memset(rec, 0, sizeof *rec);
	struct metaent *e = index_entry(fs, key, META_RECORD);
	if (!e)
		return 0;
	int rc = 1;
	pthread_mutex_lock(&fs->meta_lock);
	if (!e->rec_loaded) {
		char file[KEY_MAX + 1], why[128];
		record_file(key, file);
		bool shared;
		e->rec_error = read_record(index_fd(fs), file, &e->rec, &shared, why, sizeof why);
		if (e->rec_error == -ENOENT) {
			e->flags &= ~(unsigned)META_RECORD;
			e->rec_error = 0;
			rc = 0;
		} else if (e->rec_error == -EIO && atomic_fetch_add(&fs->corrupt_logged, 1) < 20) {
			vo_error("corrupt layer record %s/%s/%s/%s/%s\\x7f: %s", fs->source, META_NAME,
				 META_NAME, INDEX_NAME, key, why);
		}
		e->rec_loaded = rc == 1;
	}
	if (rc == 1 && e->rec_error)
		rc = e->rec_error;
	else if (rc == 1 && vrecord_copy(rec, &e->rec) < 0)
		rc = -ENOMEM;
	pthread_mutex_unlock(&fs->meta_lock);
	if (rc == 1) {
		vrecord_set_link(rec, key);
		if (!rec->link) {
			vrecord_clear(rec);
			rc = -ENOMEM;
		}
	}
	return rc;
}

/* Replace the shared record of key (ns write lock held); unchanged content is not written. */
int meta_index_write(struct viewfs *fs, const char *key, const struct vrecord *rec)
{
	struct vrecord r;
	if (vrecord_copy(&r, rec) < 0)
		return -ENOMEM;
	vrecord_set_link(&r, NULL);
	struct metaent *e = index_entry(fs, key, META_RECORD);
	size_t len, olen;
	char *buf = vrecord_format(&r, &len);
	char *old = e && e->rec_loaded && !e->rec_error ? vrecord_format(&e->rec, &olen) : NULL;
	bool same = buf && old && len == olen && memcmp(buf, old, len) == 0;
	free(old);
	int rc = buf ? 0 : -ENOMEM;
	int ifd = rc == 0 && !same ? index_dir(fs) : -1;
	if (rc == 0 && !same && ifd < 0)
		rc = ifd;
	if (rc == 0 && !same) {
		char file[KEY_MAX + 1];
		record_file(key, file);
		rc = meta_write_aside(fs, ifd, file, buf, len);
	}
	free(buf);
	if (rc == 0 && !same) {
		e = ment_add(fs->index, key);
		if (!e) {
			rc = -ENOMEM;
		} else {
			vrecord_clear(&e->rec);
			e->rec = r;
			memset(&r, 0, sizeof r);
			e->flags |= META_RECORD;
			e->rec_loaded = true;
			e->rec_error = 0;
		}
	}
	vrecord_clear(&r);
	return rc;
}

int meta_index_add_data(struct viewfs *fs, int fromdir, const char *from, const char *key)
{
	int ifd = index_dir(fs);
	if (ifd < 0)
		return ifd;
	if (linkat(fromdir, from, ifd, key, 0) < 0)
		return -errno;
	struct metaent *e = ment_add(fs->index, key);
	if (!e)
		return -ENOMEM;
	e->flags |= META_WHITEOUT;
	return 0;
}

int meta_index_link(struct viewfs *fs, const char *key, int dirfd, const char *name)
{
	if (index_fd(fs) < 0)
		return -ENOENT;
	return linkat(index_fd(fs), key, dirfd, name, 0) < 0 ? -errno : 0;
}

void meta_index_release(struct viewfs *fs, const char *key)
{
	struct metaent *e = index_entry(fs, key, META_RECORD);
	if (!e || meta_index_has_data(fs, key))
		return;
	char file[KEY_MAX + 1];
	record_file(key, file);
	if (unlinkat(index_fd(fs), file, 0) == 0 || errno == ENOENT)
		ment_clear_flag(fs->index, key, META_RECORD);
}

/* The name's own record, not following link= (ns lock held): 1, 0 or -errno. */
static int name_record(struct viewfs *fs, struct vnode *d, const char *name, struct vrecord *rec)
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

int meta_record(struct viewfs *fs, struct vnode *d, const char *name, struct vrecord *rec)
{
	int rc = name_record(fs, d, name, rec);
	if (rc <= 0 || !(rec->has & VREC_LINK))
		return rc;
	/* one of several names: the metadata is the shared record */
	char key[VREC_KEY_MAX + 1];
	snprintf(key, sizeof key, "%s", rec->link);
	vrecord_clear(rec);
	rc = meta_index_record(fs, key, rec);
	if (rc == 0) {
		report_corrupt(fs, d, name, "its shared record is missing from the index");
		rc = -EIO;
	}
	return rc;
}

int meta_name_record_text(struct viewfs *fs, struct vnode *d, const char *name, char **text)
{
	struct vrecord rec;
	*text = NULL;
	int rc = name_record(fs, d, name, &rec);
	if (rc <= 0)
		return rc;
	size_t len;
	*text = vrecord_format(&rec, &len);
	vrecord_clear(&rec);
	return *text ? 1 : -ENOMEM;
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
	int rc = meta_record(fs, n->parent, n->name, rec);
	if (rc == 0 && n->index_key)
		rc = meta_index_record(fs, n->index_key, rec); /* an original name of a shared file */
	return rc;
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

int meta_write_aside(struct viewfs *fs, int dirfd, const char *name, const char *buf, size_t len)
{
	char tmp[64];
	int fd = work_create(fs, tmp, sizeof tmp, 0644);
	if (fd < 0)
		return fd;
	int rc = write_all(fd, buf, len);
	close(fd);
	if (rc == 0 && renameat(fs->work_fd, tmp, dirfd, name) < 0)
		rc = -errno;
	if (rc < 0)
		unlinkat(fs->work_fd, tmp, 0);
	return rc;
}

/* A record file hard-linked under several names, as viewfs wrote them before the index: its
 * new content goes to a shared record, and the file gets `link=KEY` appended in one write(2)
 * (a rename would split it from its other names, and a rewrite could be cut short; a record
 * with link= is read for that key alone). */
static int convert_linked_record(struct viewfs *fs, int mfd, const char *file,
				 const struct vrecord *rec, struct vrecord *named)
{
	char key[VREC_KEY_MAX + 1];
	int rc = 0;
	if (rec->has & VREC_INO)
		meta_index_key(rec->ino, key);
	else
		rc = new_key(fs, key);
	if (rc == 0)
		rc = meta_index_write(fs, key, rec);
	if (rc < 0)
		return rc;
	char line[VREC_KEY_MAX + 8];
	int n = snprintf(line, sizeof line, "link=%s\n", key);
	int fd = layer_open_regular(mfd, file, O_WRONLY | O_APPEND);
	if (fd < 0)
		return errno == EINVAL ? -EIO : -errno;
	ssize_t w = write(fd, line, (size_t)n);
	rc = w == n ? 0 : w < 0 ? -errno : -EIO;
	close(fd);
	if (rc == 0)
		vrecord_set_link(named, key);
	return rc;
}

/* The name's record file becomes rec (rec has no link=, or only link=). */
static int write_name_record(struct viewfs *fs, struct vnode *d, const char *name,
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
	struct vrecord named = { 0 };
	int rc = 0;
	bool converted = false;
	struct stat st;
	if (exists && !(rec->has & VREC_LINK) &&
	    fstatat(mfd, file, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink > 1) {
		struct vrecord cur;
		int has = name_record(fs, d, name, &cur);
		if (has > 0 && !(cur.has & VREC_LINK)) {
			rc = vrecord_copy(&named, &cur) < 0 ? -ENOMEM : 0;
			if (rc == 0)
				rc = convert_linked_record(fs, mfd, file, rec, &named);
			converted = true;
		}
		vrecord_clear(&cur);
	}
	if (!converted) {
		size_t len;
		char *buf = vrecord_format(rec, &len);
		rc = buf ? meta_write_aside(fs, mfd, file, buf, len) : -ENOMEM;
		free(buf);
		if (rc == 0 && vrecord_copy(&named, rec) < 0)
			rc = -ENOMEM;
	}
	if (rc < 0) {
		vrecord_clear(&named);
		return rc;
	}
	e = ment_add(meta_get(fs, d), key);
	if (!e) {
		vrecord_clear(&named);
		return -ENOMEM;
	}
	vrecord_clear(&e->rec);
	e->flags |= META_RECORD;
	e->rec_error = 0;
	e->rec = named;
	e->rec_loaded = true;
	e->rec_shared = converted;
	return 0;
}

int meta_write_record(struct viewfs *fs, struct vnode *d, const char *name,
		      const struct vrecord *rec)
{
	/* A record without link= is the name's own (a caller that means the shared record got it
	 * from meta_record, link= included): a new object at a name that a crash left a record
	 * at must not change another file's shared record. */
	if (!(rec->has & VREC_LINK))
		return write_name_record(fs, d, name, rec);
	/* one of several names: the shared record first, then the name's pointer to it */
	int rc = meta_index_write(fs, rec->link, rec);
	if (rc < 0)
		return rc;
	struct vrecord cur;
	int has = name_record(fs, d, name, &cur);
	bool pointed = has > 0 && cur.has == VREC_LINK && !cur.extra &&
		       strcmp(cur.link, rec->link) == 0;
	vrecord_clear(&cur);
	if (has < 0 && has != -EIO)
		return has;
	if (pointed)
		return 0;
	struct vrecord ptr = { 0 };
	vrecord_set_link(&ptr, rec->link);
	rc = ptr.link ? write_name_record(fs, d, name, &ptr) : -ENOMEM;
	vrecord_clear(&ptr);
	return rc;
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
	struct stat lst;
	if (!(rec->has & VREC_LINK) && !n->in_upper && S_ISREG(n->type) && fs_union(fs) &&
	    node_stat(n, LOWER, &lst) == 0 && lst.st_nlink > 1) {
		/* an original with several names: every name shows the change (the shared record
		 * of its inode number, lookup.c) */
		char key[VREC_KEY_MAX + 1];
		meta_index_key(n->ino, key);
		struct vrecord shared;
		if (vrecord_copy(&shared, rec) < 0)
			return -ENOMEM;
		vrecord_set_link(&shared, key);
		int rc = shared.link ? meta_write_record(fs, n->parent, n->name, &shared) : -ENOMEM;
		vrecord_clear(&shared);
		if (rc == 0 && !n->index_key && !(n->index_key = strdup(key)))
			rc = -ENOMEM;
		return rc;
	}
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
	int rc = meta_whiteout_at(fs, mfd, name);
	if (rc < 0)
		return rc;
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

int meta_remove_tree(int parent, const char *name)
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
		int r = meta_remove_tree(dirfd(dir), de->d_name);
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
		int r = meta_remove_tree(mfd, name);
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

int meta_share_record(struct viewfs *fs, struct vnode *s, struct vnode *d2, const char *n2,
		      char **key)
{
	struct vrecord rec;
	*key = NULL;
	int rc = meta_node_record(fs, s, &rec);
	if (rc < 0)
		return rc;
	if (!(rec.has & VREC_LINK)) {
		/* the first second name: s's metadata becomes the shared record (a file from
		 * the original is known by its inode number, one born in the layer by a new key) */
		char k[VREC_KEY_MAX + 1];
		rc = 0;
		if (rec.has & VREC_INO)
			meta_index_key(rec.ino, k);
		else
			rc = new_key(fs, k);
		if (rc == 0) {
			vrecord_set_link(&rec, k);
			rc = rec.link ? meta_write_node_record(fs, s, &rec) : -ENOMEM;
		}
	}
	if (rc >= 0)
		rc = meta_write_record(fs, d2, n2, &rec);
	if (rc >= 0) {
		*key = strdup(rec.link);
		rc = *key ? 0 : -ENOMEM;
	}
	vrecord_clear(&rec);
	return rc;
}

int meta_whiteout_replacing_children(struct viewfs *fs, struct vnode *d, const char *name)
{
	struct metadir *m = meta_get(fs, d);
	struct metaent *e = ment_find(m, name);
	if (!e || !(e->flags & META_SUBDIR))
		return meta_set_whiteout(fs, d, name);
	int mfd = meta_fd(fs, d, m);
	if (mfd < 0)
		return -errno;
	char tmp[64];
	int fd = work_create(fs, tmp, sizeof tmp, 0644);
	if (fd < 0)
		return fd;
	close(fd);
	/* one rename: the name shows its old children (all deleted) or nothing, never the
	 * original's children again */
	if (renameat2(fs->work_fd, tmp, mfd, name, RENAME_EXCHANGE) < 0) {
		int err = errno;
		unlinkat(fs->work_fd, tmp, 0);
		return -err;
	}
	e->flags = (e->flags & ~(unsigned)META_SUBDIR) | META_WHITEOUT;
	meta_remove_tree(fs->work_fd, tmp); /* what is left after a crash goes at the next mount */
	return 0;
}
