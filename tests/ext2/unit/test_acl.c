/* Unit tests of fsmods/ext2/acl.c: inheriting a default ACL, chmod on an access ACL and the
 * mode an access ACL implies, with the results acl(5) prescribes. (tests/ext2/test_xattr_acl.py
 * compares the whole daemon with the kernel's ext4 on the same setfacl operations.) */
#include "acl.h"
#include "check.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

struct ent { unsigned tag, perm, id; };

static size_t build(unsigned char *buf, const struct ent *e, int n)
{
	memset(buf, 0, 4);
	buf[0] = 2;
	for (int i = 0; i < n; i++) {
		unsigned char *p = buf + 4 + 8 * i;
		p[0] = e[i].tag & 0xff, p[1] = e[i].tag >> 8;
		p[2] = e[i].perm & 0xff, p[3] = e[i].perm >> 8;
		p[4] = e[i].id & 0xff, p[5] = (e[i].id >> 8) & 0xff, p[6] = 0, p[7] = 0;
	}
	return 4 + 8 * (size_t)n;
}

static unsigned perm_of(const unsigned char *buf, int n, unsigned tag)
{
	for (int i = 0; i < n; i++) {
		const unsigned char *p = buf + 4 + 8 * i;
		if ((unsigned)(p[0] | p[1] << 8) == tag)
			return p[2] | p[3] << 8;
	}
	return 999;
}

enum { UO = 1, U = 2, GO = 4, G = 8, M = 0x10, O = 0x20 };

static void test_inherit_with_named_user_keeps_acl_and_masks_group(void)
{
	/* setfacl -d -m u::rwx,u:1000:rwx,g::r-x,m::rwx,o::r-x DIR; touch DIR/f (mode 0666) */
	struct ent def[] = { { UO, 7, 0 }, { U, 7, 1000 }, { GO, 5, 0 }, { M, 7, 0 }, { O, 5, 0 } };
	unsigned char buf[64];
	size_t len = build(buf, def, 5);
	mode_t mode = S_IFREG | 0666;
	CHECK_EQ(acl_inherit(buf, len, &mode), 1);
	CHECK_EQ(mode, S_IFREG | 0664); /* owner rw-, mask rw- shows as group, other r-- */
	CHECK_EQ(perm_of(buf, 5, UO), 6);
	CHECK_EQ(perm_of(buf, 5, M), 6);
	CHECK_EQ(perm_of(buf, 5, O), 4);
	CHECK_EQ(perm_of(buf, 5, U), 7); /* named entries stay; the mask limits them */
	CHECK_EQ(perm_of(buf, 5, GO), 5);
}

static void test_inherit_minimal_acl_is_just_a_mode(void)
{
	/* setfacl -d -m u::rwx,g::---,o::--- DIR; mkdir DIR/d (mode 0777) */
	struct ent def[] = { { UO, 7, 0 }, { GO, 0, 0 }, { O, 0, 0 } };
	unsigned char buf[64];
	size_t len = build(buf, def, 3);
	mode_t mode = S_IFDIR | 0777;
	CHECK_EQ(acl_inherit(buf, len, &mode), 0);
	CHECK_EQ(mode, S_IFDIR | 0700);
}

static void test_chmod_updates_mask_not_group(void)
{
	struct ent acl[] = { { UO, 7, 0 }, { U, 7, 1000 }, { GO, 7, 0 }, { M, 7, 0 }, { O, 7, 0 } };
	unsigned char buf[64];
	size_t len = build(buf, acl, 5);
	CHECK_EQ(acl_chmod(buf, len, 0640), 0);
	CHECK_EQ(perm_of(buf, 5, UO), 6);
	CHECK_EQ(perm_of(buf, 5, M), 4);
	CHECK_EQ(perm_of(buf, 5, GO), 7);
	CHECK_EQ(perm_of(buf, 5, O), 0);
}

static void test_malformed_acls_are_rejected(void)
{
	unsigned char buf[64];
	struct ent no_other[] = { { UO, 7, 0 }, { GO, 7, 0 } };
	size_t len = build(buf, no_other, 2);
	mode_t mode = 0644;
	CHECK_EQ(acl_count(buf, len), -EINVAL);
	CHECK_EQ(acl_inherit(buf, len, &mode), -EINVAL);
	CHECK_EQ(acl_chmod(buf, len - 3, 0644), -EINVAL);
	struct ent bad_tag[] = { { UO, 7, 0 }, { 0x40, 7, 0 }, { GO, 7, 0 }, { O, 7, 0 } };
	len = build(buf, bad_tag, 4);
	CHECK_EQ(acl_count(buf, len), -EINVAL);
	buf[0] = 1; /* wrong version */
	CHECK_EQ(acl_count(buf, 4), -EINVAL);
	CHECK_EQ(acl_count(NULL, 0), -EINVAL);
}

static void test_mode_of_an_access_acl(void)
{
	struct ent ext[] = { { UO, 6, 0 }, { U, 4, 1001 }, { GO, 0, 0 }, { M, 4, 0 }, { O, 0, 0 } };
	unsigned char buf[64];
	size_t len = build(buf, ext, 5);
	mode_t perm;
	CHECK_EQ(acl_mode(buf, len, &perm), 1);
	CHECK_EQ(perm, 0640); /* the mask shows as the group bits */
	struct ent base[] = { { UO, 7, 0 }, { GO, 5, 0 }, { O, 1, 0 } };
	len = build(buf, base, 3);
	CHECK_EQ(acl_mode(buf, len, &perm), 0);
	CHECK_EQ(perm, 0751);
}

int main(void)
{
	RUN(test_mode_of_an_access_acl);
	RUN(test_inherit_with_named_user_keeps_acl_and_masks_group);
	RUN(test_inherit_minimal_acl_is_just_a_mode);
	RUN(test_chmod_updates_mask_not_group);
	RUN(test_malformed_acls_are_rejected);
	return check_failures ? 1 : 0;
}
