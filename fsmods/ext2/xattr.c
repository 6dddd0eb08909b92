/* Extended attributes through libext2fs' xattr handles (in-inode area and attribute block;
 * libext2fs converts POSIX ACL values between the kernel's form and ext4's on-disk form), and
 * the ACL upkeep of acl.h. The namespaces are those ext4 offers: user., trusted., security.
 * and the two ACLs; anything else is EOPNOTSUPP, as on ext4. */
#define _GNU_SOURCE
#include "acl.h"
#include "e2fuse.h"
#include "log.h"

#include <errno.h>
#include <et/com_err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

int xattr_remove(struct e2 *e, ext2_ino_t ino, const char *name);

static bool supported_name(struct e2 *e, const char *name)
{
	if (strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0 ||
	    strncmp(name, "security.", 9) == 0)
		return name[strcspn(name, ".") + 1] != '\0';
	if (strcmp(name, ACL_XATTR_ACCESS) == 0 || strcmp(name, ACL_XATTR_DEFAULT) == 0)
		return e->posix_acl;
	return false;
}

static int open_xattrs(struct e2 *e, ext2_ino_t ino, struct ext2_xattr_handle **h)
{
	errcode_t err = ext2fs_xattrs_open(e->fs, ino, h);
	if (err == EXT2_ET_MISSING_EA_FEATURE)
		return -EOPNOTSUPP;
	if (err)
		return -e2_errno(e, err, "opening the extended attributes", ino);
	err = ext2fs_xattrs_read(*h);
	if (err) {
		ext2fs_xattrs_close(h);
		/* a name or value on disk cannot be too long for the caller (E2BIG, ERANGE): it
		 * is corruption */
		if (err == EXT2_ET_EA_BAD_NAME_LEN || err == EXT2_ET_EA_BAD_VALUE_SIZE) {
			vo_error("%s: inode %u: reading the extended attributes: %s", e->source, ino,
				 error_message(err));
			return -EIO;
		}
		return -e2_errno(e, err, "reading the extended attributes", ino);
	}
	return 0;
}

static int get_raw(struct e2 *e, ext2_ino_t ino, const char *name, void **value, size_t *size)
{
	if (ino_has_no_xattrs(e, ino))
		return -ENODATA; /* the kernel asks for security.capability on every write */
	struct ext2_xattr_handle *h;
	int r = open_xattrs(e, ino, &h);
	if (r < 0)
		return r;
	void *v = NULL;
	size_t len = 0;
	errcode_t err = ext2fs_xattr_get(h, name, &v, &len);
	ext2fs_xattrs_close(&h);
	if (err == EXT2_ET_EA_KEY_NOT_FOUND)
		return -ENODATA;
	if (err)
		return -e2_errno(e, err, "reading an extended attribute", ino);
	*value = v;
	*size = len;
	return 0;
}

int xattr_get(struct e2 *e, ext2_ino_t ino, const char *name, void **value, size_t *size)
{
	if (!supported_name(e, name))
		return -EOPNOTSUPP;
	return get_raw(e, ino, name, value, size);
}

/* An xattr change is an inode change: ctime moves. */
static int touch_ctime(struct e2 *e, ext2_ino_t ino)
{
	struct ext2_inode_large in;
	int r = ino_read(e, ino, &in);
	if (r < 0)
		return r;
	ino_touch(&in, false, true);
	return ino_write(e, ino, &in);
}

static int set_raw(struct e2 *e, ext2_ino_t ino, const char *name, const void *value,
		   size_t size, int flags)
{
	struct ext2_xattr_handle *h;
	int r = open_xattrs(e, ino, &h);
	if (r < 0)
		return r;
	if (flags & (XATTR_CREATE | XATTR_REPLACE)) {
		void *old = NULL;
		size_t oldlen;
		errcode_t err = ext2fs_xattr_get(h, name, &old, &oldlen);
		if (err == 0)
			ext2fs_free_mem(&old);
		if (err == 0 && (flags & XATTR_CREATE))
			r = -EEXIST;
		else if (err == EXT2_ET_EA_KEY_NOT_FOUND && (flags & XATTR_REPLACE))
			r = -ENODATA;
		else if (err && err != EXT2_ET_EA_KEY_NOT_FOUND)
			r = -e2_errno(e, err, "reading an extended attribute", ino);
	}
	if (r == 0) {
		errcode_t err = ext2fs_xattr_set(h, name, value, size);
		if (err)
			r = -e2_errno(e, err, "writing an extended attribute", ino);
	}
	errcode_t err = ext2fs_xattrs_close(&h);
	if (r == 0 && err)
		r = -e2_errno(e, err, "writing the extended attributes", ino);
	e2_mark_dirty(e);
	return r < 0 ? r : touch_ctime(e, ino);
}

/* The kernel leaves it to the file system to make the mode follow a new access ACL (as
 * ext4's posix_acl_update_mode does); an ACL the mode expresses fully is not stored. */
static int set_access_acl(struct e2 *e, ext2_ino_t ino, const void *value, size_t size,
			  int flags)
{
	mode_t perm;
	int extended = acl_mode(value, size, &perm);
	if (extended < 0)
		return -EINVAL;
	int r;
	if (extended) {
		r = set_raw(e, ino, ACL_XATTR_ACCESS, value, size, flags);
	} else {
		r = xattr_remove(e, ino, ACL_XATTR_ACCESS);
		if (r == -ENODATA)
			r = (flags & XATTR_REPLACE) ? -ENODATA : 0;
	}
	if (r < 0)
		return r;
	struct ext2_inode_large in;
	if ((r = ino_read(e, ino, &in)) < 0)
		return r;
	in.i_mode = (__u16)((in.i_mode & ~0777) | perm);
	ino_touch(&in, false, true);
	return ino_write(e, ino, &in);
}

int xattr_set(struct e2 *e, ext2_ino_t ino, const char *name, const void *value, size_t size,
	      int flags)
{
	if (!supported_name(e, name))
		return -EOPNOTSUPP;
	if (strlen(name) > 255)
		return -ERANGE;
	if (strcmp(name, ACL_XATTR_ACCESS) == 0)
		return set_access_acl(e, ino, value, size, flags);
	if (strcmp(name, ACL_XATTR_DEFAULT) == 0 && acl_count(value, size) < 0)
		return -EINVAL;
	return set_raw(e, ino, name, value, size, flags);
}

int xattr_remove(struct e2 *e, ext2_ino_t ino, const char *name)
{
	if (!supported_name(e, name))
		return -EOPNOTSUPP;
	struct ext2_xattr_handle *h;
	int r = open_xattrs(e, ino, &h);
	if (r < 0)
		return r;
	void *old = NULL;
	size_t oldlen;
	errcode_t err = ext2fs_xattr_get(h, name, &old, &oldlen);
	if (err == 0) {
		ext2fs_free_mem(&old);
		err = ext2fs_xattr_remove(h, name);
		if (err)
			r = -e2_errno(e, err, "removing an extended attribute", ino);
	} else {
		r = err == EXT2_ET_EA_KEY_NOT_FOUND ? -ENODATA
						    : -e2_errno(e, err, "reading an attribute", ino);
	}
	err = ext2fs_xattrs_close(&h);
	if (r == 0 && err)
		r = -e2_errno(e, err, "writing the extended attributes", ino);
	e2_mark_dirty(e);
	return r < 0 ? r : touch_ctime(e, ino);
}

struct list_ctx {
	struct e2 *e;
	char *buf;
	size_t len, cap;
	int err;
};

static int list_one(char *name, char *value, size_t value_len, void *data)
{
	(void)value, (void)value_len;
	struct list_ctx *c = data;
	if (!supported_name(c->e, name))
		return 0; /* system.data (inline data) and the like are not attributes */
	size_t n = strlen(name) + 1;
	if (c->len + n > c->cap) {
		size_t cap = (c->cap + n) * 2;
		char *b = realloc(c->buf, cap);
		if (!b) {
			c->err = -ENOMEM;
			return XATTR_ABORT;
		}
		c->buf = b;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, name, n);
	c->len += n;
	return 0;
}

int xattr_list(struct e2 *e, ext2_ino_t ino, char **list, size_t *size)
{
	struct ext2_xattr_handle *h;
	int r = ino_has_no_xattrs(e, ino) ? -EOPNOTSUPP : open_xattrs(e, ino, &h);
	if (r == -EOPNOTSUPP) {
		*list = NULL;
		*size = 0;
		return 0;
	}
	if (r < 0)
		return r;
	struct list_ctx c = { .e = e };
	errcode_t err = ext2fs_xattrs_iterate(h, list_one, &c);
	ext2fs_xattrs_close(&h);
	if (err || c.err) {
		free(c.buf);
		return c.err ? c.err : -e2_errno(e, err, "listing the extended attributes", ino);
	}
	*list = c.buf;
	*size = c.len;
	return 0;
}

int xattr_inherit_acl(struct e2 *e, ext2_ino_t dir, ext2_ino_t ino,
		      struct ext2_inode_large *in, mode_t umask, bool *has_default)
{
	*has_default = false;
	if (!e->posix_acl)
		return 0; /* the kernel applied the umask itself */
	void *def = NULL;
	size_t len = 0;
	int r = get_raw(e, dir, ACL_XATTR_DEFAULT, &def, &len);
	if (r == -ENODATA || r == -EOPNOTSUPP) {
		/* no default ACL: the umask applies, as it would have in the kernel */
		if (!(in->i_mode & umask & 0777))
			return 0;
		in->i_mode &= (__u16)~(umask & 0777);
		return ino_write(e, ino, in);
	}
	if (r < 0)
		return r;
	*has_default = true;
	if (LINUX_S_ISDIR(in->i_mode) && (r = set_raw(e, ino, ACL_XATTR_DEFAULT, def, len, 0)) < 0)
		goto out;
	mode_t mode = in->i_mode;
	r = acl_inherit(def, len, &mode);
	if (r < 0) {
		r = 0; /* a malformed default ACL is not inherited */
		goto out;
	}
	if (r == 1 && (r = set_raw(e, ino, ACL_XATTR_ACCESS, def, len, 0)) < 0)
		goto out;
	/* set_raw rewrote the inode (ctime); take its state and apply the masked mode */
	if ((r = ino_read(e, ino, in)) < 0)
		goto out;
	in->i_mode = (__u16)mode;
	r = ino_write(e, ino, in);
out:
	ext2fs_free_mem(&def);
	return r;
}

int xattr_chmod_acl(struct e2 *e, ext2_ino_t ino, mode_t mode)
{
	if (!e->posix_acl)
		return 0;
	void *acl = NULL;
	size_t len = 0;
	int r = get_raw(e, ino, ACL_XATTR_ACCESS, &acl, &len);
	if (r == -ENODATA || r == -EOPNOTSUPP)
		return 0;
	if (r < 0)
		return r;
	if (acl_chmod(acl, len, mode) == 0)
		r = set_raw(e, ino, ACL_XATTR_ACCESS, acl, len, 0);
	ext2fs_free_mem(&acl);
	return r;
}
