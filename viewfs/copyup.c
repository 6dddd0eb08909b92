/* Copy-up: making the layer's own copy of an original object before it is changed (cow, and
 * mincow when the real change is refused).
 *
 * A copy carries the data (holes stay holes; copy_file_range lets the file system share
 * extents), the mode, the access and modification times and the extended attributes; owners
 * only when the daemon runs as root. What a copy owned by the user cannot carry (setuid bits,
 * the original owner under vstat, a device node the user may not create) and the origin's inode
 * number go into the record. The copy is built in the work area (SOURCE/.-/.-), its record
 * written first, and then renamed into place: a crash leaves either the original or the whole
 * copy in the view, never half of it.
 *
 * A regular file with several names in the original (hard links) is copied once for all of
 * them: the copy goes into the index (SOURCE/.-/.-/index/INO, metadir.c) as well as to the
 * name, so that every other name shows it too, now and after a remount (lookup.c), and
 * "copying up" another of those names later only links the index's copy there.
 *
 * Directories are "copied" by creating an empty directory in the layer (it merges with the
 * original's); their contents stay where they are. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

void copy_xattrs(int from, int to)
{
	ssize_t len = flistxattr(from, NULL, 0);
	if (len <= 0)
		return;
	char *names = malloc((size_t)len);
	if (!names)
		return;
	len = flistxattr(from, names, (size_t)len);
	char *value = NULL;
	size_t cap = 0;
	for (ssize_t off = 0; len > 0 && off < len; off += (ssize_t)strlen(names + off) + 1) {
		const char *name = names + off;
		ssize_t vlen = fgetxattr(from, name, NULL, 0);
		if (vlen < 0)
			continue;
		if ((size_t)vlen > cap) {
			char *v = realloc(value, (size_t)vlen);
			if (!v)
				continue;
			value = v;
			cap = (size_t)vlen;
		}
		vlen = fgetxattr(from, name, value, cap);
		/* security.* and trusted.* may be refused to a user: the copy goes on without */
		if (vlen >= 0)
			fsetxattr(to, name, value, (size_t)vlen, 0);
	}
	free(value);
	free(names);
}

/* Copy the first `size` bytes, keeping holes. */
static int copy_data(int in, int out, off_t size)
{
	off_t pos = 0;
	while (pos < size) {
		off_t data = lseek(in, pos, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break; /* only a hole is left */
			data = pos;  /* no SEEK_DATA here: copy everything */
		}
		if (data >= size)
			break;
		off_t hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0 || hole > size)
			hole = size;
		off_t in_off = data, out_off = data;
		while (in_off < hole) {
			ssize_t n = copy_file_range(in, &in_off, out, &out_off, (size_t)(hole - in_off),
						    0);
			if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
				      errno == EOPNOTSUPP)) {
				/* no kernel copy between these files: copy through a buffer */
				static const size_t chunk = 1 << 20;
				char *buf = malloc(chunk);
				if (!buf)
					return -ENOMEM;
				while (in_off < hole) {
					size_t want = (size_t)(hole - in_off) < chunk
							      ? (size_t)(hole - in_off) : chunk;
					ssize_t r = pread(in, buf, want, in_off);
					if (r <= 0) {
						free(buf);
						return r < 0 ? -errno : -EIO;
					}
					for (ssize_t done = 0; done < r;) {
						ssize_t w = pwrite(out, buf + done, (size_t)(r - done),
								   out_off + done);
						if (w < 0) {
							free(buf);
							return -errno;
						}
						done += w;
					}
					in_off += r;
					out_off += r;
				}
				free(buf);
				break;
			}
			if (n < 0)
				return -errno;
			if (n == 0)
				return -EIO; /* the original shrank under us */
		}
		pos = hole;
	}
	return ftruncate(out, size) < 0 ? -errno : 0;
}

/* The record a copy needs: origin inode, and whatever the real copy cannot show. */
static void copy_record(struct viewfs *fs, struct vnode *n, const struct stat *orig,
			mode_t real_mode, uid_t real_uid, gid_t real_gid, struct vrecord *rec)
{
	rec->ino = n->ino;
	rec->has |= VREC_INO;
	if (!(rec->has & VREC_MODE) && (orig->st_mode & 07777) != (real_mode & 07777)) {
		rec->mode = orig->st_mode & 07777;
		rec->has |= VREC_MODE;
	}
	if (fs->vstat && !(rec->has & VREC_UID) && orig->st_uid != real_uid) {
		rec->uid = orig->st_uid;
		rec->has |= VREC_UID;
	}
	if (fs->vstat && !(rec->has & VREC_GID) && orig->st_gid != real_gid) {
		rec->gid = orig->st_gid;
		rec->has |= VREC_GID;
	}
}

/* May the user write n's original (it may not read it)? Keeps errno of a refusal. */
static bool may_write(struct vnode *n)
{
	const char *name;
	int at = node_at(n, LOWER, &name);
	int e = errno;
	bool ok = at >= 0 && faccessat(at, name, W_OK, AT_EACCESS | (*name ? 0 : AT_EMPTY_PATH)) == 0;
	errno = e;
	return ok;
}

/* The layer serves n from the index's copy but its name has no entry in the layer: an original
 * name of a file with several names, one of which was copied up (ns lock held). */
static bool alias_name(struct viewfs *fs, struct vnode *n)
{
	if (!n->index_key || !meta_index_has_data(fs, n->index_key) || n->unlinked)
		return false;
	struct stat st;
	int pfd = n->parent->in_upper ? node_fd(n->parent, UPPER) : -1;
	return pfd < 0 || fstatat(pfd, n->name, &st, AT_SYMLINK_NOFOLLOW) < 0;
}

/* Give such a name its entry: its record pointing at the shared one, then a link of the
 * index's copy (ns write lock held). */
static int link_up(struct viewfs *fs, struct vnode *n)
{
	int rc = ensure_upper_dir(fs, n->parent);
	struct vrecord rec;
	if (rc == 0 && (rc = meta_node_record(fs, n, &rec)) >= 0) {
		if (!(rec.has & VREC_LINK))
			vrecord_set_link(&rec, n->index_key);
		rc = rec.link ? meta_write_node_record(fs, n, &rec) : -ENOMEM;
		vrecord_clear(&rec);
	}
	int pfd = rc == 0 ? node_fd(n->parent, UPPER) : -1;
	if (rc == 0 && pfd < 0)
		rc = -errno;
	if (rc == 0)
		rc = meta_index_link(fs, n->index_key, pfd, n->name);
	return rc;
}

/* Put the copy tmp (in the work area) in place for n: record first, then the copy; for a file
 * with several names in the original, the shared record, the index's copy, then the name
 * (ns write lock held). *placed: tmp is gone. */
static int place_copy(struct viewfs *fs, struct vnode *n, const char *tmp, struct vrecord *rec,
		      bool shared, nlink_t nlink, bool *placed)
{
	char key[VREC_KEY_MAX + 1];
	meta_index_key(n->ino, key);
	int rc = ensure_upper_dir(fs, n->parent);
	if (rc == 0 && shared && meta_index_has_data(fs, key)) {
		/* another name was copied up meanwhile (a node that did not know): use its copy */
		free(n->index_key);
		n->index_key = strdup(key);
		return n->index_key ? link_up(fs, n) : -ENOMEM;
	}
	if (rc == 0 && shared) {
		vrecord_set_link(rec, key);
		rec->nlink = nlink;
		rec->has |= VREC_NLINK;
		if (!rec->link)
			rc = -ENOMEM;
	}
	if (rc == 0)
		rc = meta_write_node_record(fs, n, rec);
	if (rc == 0 && shared)
		rc = meta_index_add_data(fs, fs->work_fd, tmp, key);
	int pfd = rc == 0 ? node_fd(n->parent, UPPER) : -1;
	if (rc == 0 && (pfd < 0 || renameat2(fs->work_fd, tmp, pfd, n->name, RENAME_NOREPLACE) < 0))
		rc = -errno;
	if (rc == 0)
		*placed = true;
	if (rc == 0 && shared && !n->index_key && !(n->index_key = strdup(key)))
		rc = -ENOMEM;
	return rc;
}

int copy_up(struct viewfs *fs, struct vnode *n, off_t keep)
{
	if (S_ISDIR(n->type)) {
		ns_write(fs);
		int rc = ensure_upper_dir(fs, n);
		ns_unlock(fs);
		return rc;
	}
	pthread_mutex_lock(&n->copyup_lock);
	int rc = 0, src = -1, tmpfd = -1;
	char *target = NULL;
	struct vrecord rec = { 0 };
	char tmp[64] = "";
	struct stat st;

	ns_read(fs);
	if (n->in_upper) {
		bool alias = alias_name(fs, n);
		ns_unlock(fs);
		if (alias) {
			ns_write(fs);
			rc = alias_name(fs, n) ? link_up(fs, n) : 0;
			ns_unlock(fs);
		}
		goto out;
	}
	if (n->excepted || fs->work_fd < 0) {
		ns_unlock(fs);
		rc = -EROFS;
		goto out;
	}
	if (node_stat(n, LOWER, &st) < 0) {
		rc = -errno;
		ns_unlock(fs);
		goto out;
	}
	int has = meta_node_record(fs, n, &rec);
	if (has < 0) {
		rc = has;
		ns_unlock(fs);
		goto out;
	}
	if (S_ISREG(st.st_mode)) {
		src = node_open(n, LOWER, O_RDONLY);
		/* In a view (the kernel has checked the caller's permission against what the view
		 * shows), an original the user may not read is copied without its content: the
		 * view's root may write to it (dpkg's lock, 0640 root; useradd rewriting
		 * /etc/shadow and /etc/gshadow), but what the host keeps secret stays secret, so
		 * the view's copy holds only what the view writes. A copy for O_TRUNC needs none of
		 * the content either: a file the user may write but not read (0200) can be
		 * truncated, as on the real file system. */
		if (src < 0 && !((fs->in_view || (keep == 0 && may_write(n))) &&
				 (errno == EACCES || errno == EPERM)))
			rc = -errno;
	} else if (S_ISLNK(st.st_mode)) {
		target = malloc((size_t)PATH_MAX + 1);
		const char *name;
		int at = node_at(n, LOWER, &name);
		ssize_t len = target ? readlinkat(at, name, target, PATH_MAX) : -1;
		if (len < 0)
			rc = target ? -errno : -ENOMEM;
		else
			target[len] = '\0';
	}
	ns_unlock(fs);
	if (rc < 0)
		goto out;

	/* Build the copy aside (a large file takes a while: other requests go on meanwhile). */
	if (st.st_size > 1 << 20)
		viewfs_serve_yield();
	uid_t ruid = geteuid();
	gid_t rgid = getegid();
	mode_t real_mode = st.st_mode & 0777; /* setuid/setgid stay in the record */
	struct timespec times[2] = { st.st_atim, st.st_mtim };
	if (S_ISREG(st.st_mode)) {
		tmpfd = work_create(fs, tmp, sizeof tmp, 0600);
		if (tmpfd < 0) {
			rc = tmpfd;
			tmp[0] = '\0';
			goto out;
		}
		off_t size = src < 0 ? 0 : keep < 0 || keep > st.st_size ? st.st_size : keep;
		rc = copy_data(src, tmpfd, size);
		if (rc == 0) {
			if (src >= 0)
				copy_xattrs(src, tmpfd);
			if (ruid == 0 && fchown(tmpfd, st.st_uid, st.st_gid) == 0) {
				ruid = st.st_uid;
				rgid = st.st_gid;
			}
			if (fchmod(tmpfd, real_mode) < 0 || futimens(tmpfd, times) < 0)
				rc = -errno;
			/* on disk before it is renamed in: after a power loss the view must hold
			 * the whole copy or the original, never an empty file (file systems with
			 * delayed allocation may write the rename first) */
			if (rc == 0 && size > 0 && !fs->volatile_layer && fdatasync(tmpfd) < 0)
				rc = -errno;
		}
	} else {
		work_name(fs, tmp, sizeof tmp);
		int r;
		if (S_ISLNK(st.st_mode)) {
			r = symlinkat(target, fs->work_fd, tmp);
		} else {
			r = mknodat(fs->work_fd, tmp, st.st_mode & (S_IFMT | 0777), st.st_rdev);
			if (r < 0 && (errno == EPERM || errno == EACCES) &&
			    (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) {
				/* a device the user may not create: a plain file and a record */
				r = mknodat(fs->work_fd, tmp, S_IFREG | (st.st_mode & 0666), 0);
				real_mode = st.st_mode & 0666;
				rec.type = st.st_mode & S_IFMT;
				rec.rdev = st.st_rdev;
				rec.has |= VREC_TYPE | VREC_RDEV;
			}
		}
		if (r < 0) {
			rc = -errno;
			tmp[0] = '\0';
			goto out;
		}
		if (ruid == 0 && fchownat(fs->work_fd, tmp, st.st_uid, st.st_gid,
					  AT_SYMLINK_NOFOLLOW) == 0) {
			ruid = st.st_uid;
			rgid = st.st_gid;
		}
		utimensat(fs->work_fd, tmp, times, AT_SYMLINK_NOFOLLOW);
		if (S_ISLNK(st.st_mode))
			real_mode = st.st_mode & 07777; /* symlinks have no mode to copy */
	}
	if (rc < 0)
		goto out;
	copy_record(fs, n, &st, real_mode, ruid, rgid, &rec);

	/* Put it in place: record first, then the copy. */
	bool shared = S_ISREG(st.st_mode) && st.st_nlink > 1 && fs_union(fs);
	ns_write(fs);
	if (n->in_upper || n->unlinked) {
		ns_unlock(fs);
		rc = n->in_upper ? 0 : -ENOENT;
		goto out;
	}
	bool placed = false;
	rc = place_copy(fs, n, tmp, &rec, shared, st.st_nlink, &placed);
	int pfd = rc == 0 ? node_fd(n->parent, UPPER) : -1;
	if (placed)
		tmp[0] = '\0';
	if (rc == 0) {
		/* Files already open on the original read the copy from now on: a later write
		 * through another descriptor must not leave them reading stale data. dup2 swaps
		 * the file under the descriptor number the handle holds, atomically. */
		pthread_mutex_lock(&fs->table_lock);
		for (struct vhandle *h = n->handles; h; h = h->next) {
			if (h->layer != LOWER)
				continue;
			int nfd = openat(pfd, n->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
					 (h->direct ? O_DIRECT : 0));
			if (nfd >= 0 && dup3(nfd, h->fd, O_CLOEXEC) >= 0)
				h->layer = UPPER;
			if (nfd >= 0)
				close(nfd);
		}
		pthread_mutex_unlock(&fs->table_lock);
		if (node_has_fd(n, LOWER)) {
			/* a hard-linked original: keep reaching the copy by fd too */
			node_set_fd(fs, n, UPPER, openat(pfd, n->name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
		}
		/* the copy is the node's object now: its other names find the node by it */
		struct stat cst;
		if (fstatat(pfd, n->name, &cst, AT_SYMLINK_NOFOLLOW) == 0)
			node_note_obj(n, UPPER, &cst);
		n->in_upper = true;
	}
	ns_unlock(fs);
out:
	if (tmp[0])
		unlinkat(fs->work_fd, tmp, 0);
	if (src >= 0)
		close(src);
	if (tmpfd >= 0)
		close(tmpfd);
	free(target);
	vrecord_clear(&rec);
	pthread_mutex_unlock(&n->copyup_lock);
	if (rc < 0 && rc != -ENOENT && rc != -EACCES)
		vo_debug("copy-up of %s failed: %s", n->name, strerror(-rc));
	return rc;
}

int ensure_upper_dir(struct viewfs *fs, struct vnode *d)
{
	if (d->in_upper)
		return 0;
	if (d->excepted || !d->parent || fs->work_fd < 0)
		return -EROFS;
	int rc = ensure_upper_dir(fs, d->parent);
	if (rc < 0)
		return rc;
	struct stat st;
	int lfd = node_fd(d, LOWER);
	if (lfd < 0 || fstat(lfd, &st) < 0)
		return -errno;
	/* The layer's directory must stay writable for the daemon whatever the original's mode:
	 * the difference goes into the record. */
	mode_t real_mode = (st.st_mode & 07777) | 0700;
	struct vrecord rec;
	int has = meta_node_record(fs, d, &rec);
	if (has < 0)
		return has;
	uid_t ruid = geteuid();
	gid_t rgid = getegid();
	if (ruid == 0) {
		ruid = st.st_uid;
		rgid = st.st_gid;
	}
	struct vrecord want;
	if (vrecord_copy(&want, &rec) < 0) {
		vrecord_clear(&rec);
		return -ENOMEM;
	}
	copy_record(fs, d, &st, real_mode, ruid, rgid, &want);
	/* a directory that merges with its original keeps the original's number without help */
	want.has &= ~(unsigned)VREC_INO;
	want.has |= rec.has & VREC_INO;
	want.ino = rec.ino;
	size_t l1, l2;
	char *a = vrecord_format(&want, &l1), *b = vrecord_format(&rec, &l2);
	if (!a || !b || l1 != l2 || memcmp(a, b, l1) != 0)
		rc = meta_write_node_record(fs, d, &want);
	free(a);
	free(b);
	vrecord_clear(&rec);
	vrecord_clear(&want);
	if (rc < 0)
		return rc;

	int pfd = node_fd(d->parent, UPPER);
	if (pfd < 0)
		return -errno;
	if (mkdirat(pfd, d->name, 0700) < 0 && errno != EEXIST)
		return -errno;
	int fd = openat(pfd, d->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int from = openat(lfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int to = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (from >= 0 && to >= 0)
		copy_xattrs(from, to);
	if (from >= 0)
		close(from);
	if (to >= 0)
		close(to);
	/* a root daemon keeps the owner; a layer that cannot store it keeps ours (best effort) */
	if (geteuid() == 0 && fchownat(pfd, d->name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		vo_debug("copy-up of %s keeps the daemon's owner: %s", d->name, strerror(errno));
	struct timespec times[2] = { st.st_atim, st.st_mtim };
	if (fchmodat(pfd, d->name, real_mode, 0) < 0 ||
	    utimensat(pfd, d->name, times, AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	node_set_fd(fs, d, UPPER, fd);
	d->in_upper = true;
	return 0;
}
