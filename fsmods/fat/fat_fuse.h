/* The FUSE low-level operations of umfuse-fat (fat_fuse.c); the session's userdata is the
 * struct fat_volume. */
#ifndef FAT_FUSE_H
#define FAT_FUSE_H

#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdint.h>

extern const struct fuse_lowlevel_ops fat_ll_ops;

struct fat_volume;
/* Once mounted: names that go stale in the kernel's cache are invalidated through se (from a
 * thread of their own). fat_fuse_detach stops that before the session goes. */
int fat_fuse_attach(struct fat_volume *vol, struct fuse_session *se);
void fat_fuse_detach(struct fat_volume *vol);

/* user.fat.attributes: "readonly,hidden,system,archive" <-> attribute bits. */
size_t fat_attr_format(uint8_t attr, char *out, size_t len);
int fat_attr_parse(const char *value, size_t len, uint8_t *bits); /* 0 or -EINVAL */

#endif
