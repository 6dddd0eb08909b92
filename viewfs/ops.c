/* The FUSE operation table, the kernel capabilities viewfs asks for, and the operations that
 * belong to no other file: lookup, forget, readlink.
 *
 * Capabilities, each measured by tests/bench/bench_viewfs.py:
 *   write-back cache    (-o writeback, off by default) the kernel gathers small writes into
 *                       pages and keeps size and mtime itself. Off by default because the
 *                       kernel does not always send its mtime back: the layer's files then
 *                       keep the time of the write-back, a little later than the view showed;
 *                       measured, it bought nothing on the benchmark's workloads;
 *   splice              file data read moves from the real fd to the kernel without a copy;
 *   readdirplus         a listing also fills the kernel's name and attribute caches;
 *   max_write 1 MiB     the largest write the kernel sends (it allows 256 pages here);
 *   parallel dirops     lookups in one directory run side by side;
 *   symlink cache       symlink targets stay in the kernel's page cache.
 * Locks (POSIX and flock) are left to the kernel: they work between the processes using the
 * view, which is what a single-user view needs. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ns_read(struct viewfs *fs)
{
	if (pthread_rwlock_rdlock(&fs->ns_lock) != 0)
		abort();
}

void ns_write(struct viewfs *fs)
{
	if (pthread_rwlock_wrlock(&fs->ns_lock) != 0)
		abort();
	if (atomic_load(&fs->evict_wanted))
		node_evict_fds(fs); /* the write lock: no other thread uses a node's fd */
}

void ns_unlock(struct viewfs *fs)
{
	pthread_rwlock_unlock(&fs->ns_lock);
	if (atomic_load(&fs->evict_wanted)) {
		/* too many directory fds: close some as soon as no thread uses them */
		if (pthread_rwlock_wrlock(&fs->ns_lock) != 0)
			abort();
		if (atomic_load(&fs->evict_wanted))
			node_evict_fds(fs);
		pthread_rwlock_unlock(&fs->ns_lock);
	}
}

static void vfs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct viewfs *fs = userdata;
	if (fs->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		fs->writeback = false;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	/* Requests are read into memory, not spliced: measured, splicing them bought nothing for
	 * 1 MiB writes and costs a syscall on every small request. */
	conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* a symlink never changes in place (a new target is a new symlink): cache targets */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	conn->want &= ~(unsigned)(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
	/* The kernel clears setuid/setgid on write, truncate and chown with a setattr: that
	 * reaches real bits and virtual ones (records) alike. */
	conn->want &= ~(unsigned)FUSE_CAP_HANDLE_KILLPRIV;
	conn->max_write = 1u << 20;
	conn->time_gran = 1;
}

static void reply_lookup(fuse_req_t req, struct viewfs *fs, int rc, struct fuse_entry_param *e)
{
	if (rc == -ENOENT && fs->timeout > 0) {
		/* a negative entry: tar and make look up many names that do not exist */
		memset(e, 0, sizeof *e);
		e->entry_timeout = fs->timeout;
		fuse_reply_entry(req, e);
	} else if (rc < 0) {
		fuse_reply_err(req, -rc);
	} else {
		fuse_reply_entry(req, e);
	}
}

static void vfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *p = node_from_id(fs, parent);
	struct fuse_entry_param e;
	ns_read(fs);
	int rc = lookup_entry(fs, p, name, &e, NULL, false);
	ns_unlock(fs);
	if (rc == -EAGAIN) {
		ns_write(fs);
		rc = lookup_entry(fs, p, name, &e, NULL, true);
		ns_unlock(fs);
	}
	reply_lookup(req, fs, rc, &e);
}

static void vfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct viewfs *fs = fuse_req_userdata(req);
	node_unref(fs, node_from_id(fs, ino), nlookup);
	fuse_reply_none(req);
}

static void vfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct viewfs *fs = fuse_req_userdata(req);
	for (size_t i = 0; i < count; i++)
		node_unref(fs, node_from_id(fs, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void vfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct viewfs *fs = fuse_req_userdata(req);
	struct vnode *n = node_from_id(fs, ino);
	char buf[PATH_MAX + 1];
	ns_read(fs);
	const char *name;
	int at = node_at(n, node_layer(n), &name);
	ssize_t len = at < 0 ? -1 : readlinkat(at, name, buf, sizeof buf - 1);
	int e = at < 0 ? ENOENT : errno;
	ns_unlock(fs);
	if (len < 0) {
		fuse_reply_err(req, e);
		return;
	}
	buf[len] = '\0';
	fuse_reply_readlink(req, buf);
}

static struct fuse_lowlevel_ops ops_table;

static void fill_ops(void)
{
	struct fuse_lowlevel_ops *ops = &ops_table;
	ops->init = vfs_init;
	ops->lookup = vfs_lookup;
	ops->forget = vfs_forget;
	ops->forget_multi = vfs_forget_multi;
	ops->readlink = vfs_readlink;
	attr_ops(ops);
	dir_ops(ops);
	readdir_ops(ops);
	xattr_ops(ops);
	file_ops(ops);
}

const struct fuse_lowlevel_ops *viewfs_ops(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, fill_ops);
	return &ops_table;
}
