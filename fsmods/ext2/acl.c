/* See acl.h. The rules are those of POSIX.1e as Linux applies them (acl(5)); written here
 * because libacl works on files by path, not on a value about to be stored. */
#include "acl.h"

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>

enum {
	XATTR_VERSION = 2,
	HEADER = 4,
	ENTRY = 8,
	TAG_USER_OBJ = 0x01,
	TAG_USER = 0x02,
	TAG_GROUP_OBJ = 0x04,
	TAG_GROUP = 0x08,
	TAG_MASK = 0x10,
	TAG_OTHER = 0x20,
};

static unsigned get16(const unsigned char *p)
{
	return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

int acl_count(const void *value, size_t size)
{
	const unsigned char *p = value;
	if (!value || size < HEADER || (size - HEADER) % ENTRY)
		return -EINVAL;
	if ((uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24) != XATTR_VERSION)
		return -EINVAL;
	size_t n = (size - HEADER) / ENTRY;
	if (n > 65536)
		return -EINVAL;
	int have_user_obj = 0, have_group_obj = 0, have_other = 0;
	for (size_t i = 0; i < n; i++) {
		switch (get16(p + HEADER + i * ENTRY)) {
		case TAG_USER_OBJ: have_user_obj++; break;
		case TAG_GROUP_OBJ: have_group_obj++; break;
		case TAG_OTHER: have_other++; break;
		case TAG_USER: case TAG_GROUP: case TAG_MASK: break;
		default: return -EINVAL;
		}
	}
	if (have_user_obj != 1 || have_group_obj != 1 || have_other != 1)
		return -EINVAL;
	return (int)n;
}

static unsigned char *entry(void *value, int i)
{
	return (unsigned char *)value + HEADER + (size_t)i * ENTRY;
}

int acl_inherit(void *value, size_t size, mode_t *mode)
{
	int n = acl_count(value, size);
	if (n < 0)
		return n;
	mode_t m = *mode & 0777;
	unsigned char *group_obj = NULL, *mask = NULL;
	int extended = 0;
	for (int i = 0; i < n; i++) {
		unsigned char *e = entry(value, i);
		unsigned perm = get16(e + 2);
		switch (get16(e)) {
		case TAG_USER_OBJ:
			perm &= (m >> 6) & 7;
			put16(e + 2, perm);
			m = (m & ~(mode_t)S_IRWXU) | (mode_t)perm << 6;
			break;
		case TAG_OTHER:
			perm &= m & 7;
			put16(e + 2, perm);
			m = (m & ~(mode_t)S_IRWXO) | perm;
			break;
		case TAG_GROUP_OBJ:
			group_obj = e;
			break;
		case TAG_MASK:
			mask = e;
			extended = 1;
			break;
		default: /* named users and groups */
			extended = 1;
			break;
		}
	}
	/* the group bits of the mode go with the mask when there is one, else the owning group */
	unsigned char *g = mask ? mask : group_obj;
	unsigned perm = get16(g + 2) & ((m >> 3) & 7);
	put16(g + 2, perm);
	m = (m & ~(mode_t)S_IRWXG) | (mode_t)perm << 3;
	*mode = (*mode & ~(mode_t)0777) | m;
	return extended;
}

int acl_chmod(void *value, size_t size, mode_t mode)
{
	int n = acl_count(value, size);
	if (n < 0)
		return n;
	unsigned char *group_obj = NULL, *mask = NULL;
	for (int i = 0; i < n; i++) {
		unsigned char *e = entry(value, i);
		switch (get16(e)) {
		case TAG_USER_OBJ: put16(e + 2, (mode >> 6) & 7); break;
		case TAG_OTHER: put16(e + 2, mode & 7); break;
		case TAG_GROUP_OBJ: group_obj = e; break;
		case TAG_MASK: mask = e; break;
		default: break;
		}
	}
	put16((mask ? mask : group_obj) + 2, (mode >> 3) & 7);
	return 0;
}

int acl_mode(const void *value, size_t size, mode_t *perm)
{
	int n = acl_count(value, size);
	if (n < 0)
		return n;
	unsigned user_obj = 0, group_obj = 0, other = 0, mask = 0;
	int extended = 0, has_mask = 0;
	for (int i = 0; i < n; i++) {
		const unsigned char *e = (const unsigned char *)value + HEADER + (size_t)i * ENTRY;
		unsigned p = get16(e + 2) & 7;
		switch (get16(e)) {
		case TAG_USER_OBJ: user_obj = p; break;
		case TAG_GROUP_OBJ: group_obj = p; break;
		case TAG_OTHER: other = p; break;
		case TAG_MASK: mask = p; has_mask = 1; extended = 1; break;
		default: extended = 1; break;
		}
	}
	*perm = (mode_t)(user_obj << 6 | (has_mask ? mask : group_obj) << 3 | other);
	return extended;
}
