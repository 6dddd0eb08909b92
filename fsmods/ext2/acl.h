/* POSIX ACL rules the file system has to apply itself once the kernel hands ACLs to FUSE
 * (FUSE_CAP_POSIX_ACL): the kernel enforces ACLs and converts setfacl's requests, but the
 * daemon must give a new inode the ACL it inherits from its directory's default ACL, and keep
 * the access ACL in step with chmod.
 *
 * ACLs are handled here in the form the kernel and libext2fs exchange ("system.posix_acl_*"
 * values): a little-endian header (version 2) followed by 8-byte entries (tag, perm, id).
 * Pure functions on bytes, with unit tests and a fuzz harness. */
#ifndef UMFUSE_EXT2_ACL_H
#define UMFUSE_EXT2_ACL_H

#include <stddef.h>
#include <sys/types.h>

#define ACL_XATTR_ACCESS "system.posix_acl_access"
#define ACL_XATTR_DEFAULT "system.posix_acl_default"

/* The number of entries of a well-formed ACL value, or -EINVAL. */
int acl_count(const void *value, size_t size);

/* A new inode inherits its directory's default ACL (value, modified in place): the permission
 * bits of *mode (the mode asked for at creation, without the umask) are intersected with the
 * ACL's owner, mask (or group) and other entries, and *mode becomes what they leave.
 * Returns 1 when the result needs an access ACL (it has named users/groups or a mask), 0 when
 * the mode bits say everything, -EINVAL when the value is malformed. */
int acl_inherit(void *value, size_t size, mode_t *mode);

/* Setting an access ACL sets the permission bits too: owner from the owner entry, group from
 * the mask (or the owning group), other from the other entry. Returns 1 when the ACL must be
 * stored (it has named users/groups or a mask), 0 when the mode says it all, -EINVAL. */
int acl_mode(const void *value, size_t size, mode_t *perm);

/* chmod on an inode with an access ACL: the owner, mask (or group) and other entries take
 * the new permission bits. 0 or -EINVAL. */
int acl_chmod(void *value, size_t size, mode_t mode);

#endif
