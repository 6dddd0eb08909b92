/* FUSE operations on attributes: getattr, setattr (chmod, chown, truncate, utimens), statfs and
 * the extended attribute calls. setuid/setgid are cleared here on write, truncate and chown
 * (FUSE_CAP_HANDLE_KILLPRIV): left to the kernel, every write would cost it a getxattr of
 * security.capability and a getattr round trip first. */
#define _GNU_SOURCE
#include "e2fuse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

void op_getattr(fuse_req_t req, fuse_ino_t fino, struct fuse_file_info *fi)
{
	(void)fi;
	struct e2 *e = e2_of(req);
	ext2_ino_t ino = e2_ino(fino);
	struct ext2_inode_large in;
	struct stat st;
	e2_lock(e);
	int r = ino_read(e, ino, &in);
	if (r == 0)
		ino_stat(e, ino, &in, &st);
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, e->timeout);
}

static struct timespec chosen_time(const struct stat *attr, int to_set, int now_flag, bool atime)
{
	if (to_set & now_flag)
		return e2_now();
	return atime ? attr->st_atim : attr->st_mtim;
}

static int do_setattr(fuse_req_t req, struct e2 *e, ext2_ino_t ino, const struct stat *attr,
		      int to_set, struct stat *out)
{
	if (e->readonly)
		return -EROFS;
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r < 0)
		return r;
	if ((to_set & FUSE_SET_ATTR_MODE) && !LINUX_S_ISLNK(in.i_mode)) {
		/* the access ACL follows the mode (it rewrites the inode: read it again) */
		if ((r = xattr_chmod_acl(e, ino, attr->st_mode & 07777)) < 0 ||
		    (r = ino_read(e, ino, &in)) < 0)
			return r;
		in.i_mode = (__u16)((in.i_mode & S_IFMT) | (attr->st_mode & 07777));
	}
	if (to_set & FUSE_SET_ATTR_UID)
		ino_set_uid(&in, attr->st_uid);
	if (to_set & FUSE_SET_ATTR_GID)
		ino_set_gid(&in, attr->st_gid);
	if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) && !(to_set & FUSE_SET_ATTR_MODE))
		ino_kill_suid(&in, fuse_req_ctx(req), true);
	bool size_changed = false;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (LINUX_S_ISDIR(in.i_mode))
			return -EISDIR;
		if (!LINUX_S_ISREG(in.i_mode))
			return -EINVAL;
		uint64_t size = (uint64_t)attr->st_size;
		if (size != EXT2_I_SIZE(&in)) {
			struct node *n = node_get(e, ino);
			if (!n)
				return -ENOMEM;
			if ((r = data_truncate(e, n, &in, size)) < 0)
				return r;
			n->written = true; /* O_TRUNC and ftruncate: the close writes it out */
			size_changed = true;
			if (!(to_set & FUSE_SET_ATTR_MODE))
				ino_kill_suid(&in, fuse_req_ctx(req), false);
		}
	}
	if (to_set & FUSE_SET_ATTR_ATIME)
		ino_set_time(&in, T_ATIME, chosen_time(attr, to_set, FUSE_SET_ATTR_ATIME_NOW, true));
	if (to_set & FUSE_SET_ATTR_MTIME)
		ino_set_time(&in, T_MTIME, chosen_time(attr, to_set, FUSE_SET_ATTR_MTIME_NOW, false));
	else if (size_changed)
		ino_touch(&in, true, false);
	if (to_set & FUSE_SET_ATTR_CTIME)
		ino_set_time(&in, T_CTIME, attr->st_ctim);
	else
		ino_touch(&in, false, true);
	if ((r = ino_write(e, ino, &in)) < 0)
		return r;
	ino_stat(e, ino, &in, out);
	return 0;
}

void op_setattr(fuse_req_t req, fuse_ino_t fino, struct stat *attr, int to_set,
		struct fuse_file_info *fi)
{
	(void)fi;
	struct e2 *e = e2_of(req);
	struct stat st;
	e2_lock(e);
	int r = do_setattr(req, e, e2_ino(fino), attr, to_set, &st);
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, e->timeout);
}

void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct e2 *e = e2_of(req);
	struct statvfs st;
	e2_lock(e);
	e2_statfs(e, &st);
	e2_unlock(e);
	fuse_reply_statfs(req, &st);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		 size_t size, int flags)
{
	struct e2 *e = e2_of(req);
	e2_lock(e);
	int r = -EROFS;
	while (!e->readonly &&
	       (r = xattr_set(e, e2_ino(ino), name, value, size, flags)) == -ENOSPC &&
	       e2_wait_for_released(e))
		;
	e2_unlock(e);
	fuse_reply_err(req, -r);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct e2 *e = e2_of(req);
	void *value = NULL;
	size_t len = 0;
	e2_lock(e);
	int r = xattr_get(e, e2_ino(ino), name, &value, &len);
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
	ext2fs_free_mem(&value);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct e2 *e = e2_of(req);
	char *list = NULL;
	size_t len = 0;
	e2_lock(e);
	int r = xattr_list(e, e2_ino(ino), &list, &len);
	e2_unlock(e);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
	free(list);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct e2 *e = e2_of(req);
	e2_lock(e);
	int r = e->readonly ? -EROFS : xattr_remove(e, e2_ino(ino), name);
	e2_unlock(e);
	fuse_reply_err(req, -r);
}
