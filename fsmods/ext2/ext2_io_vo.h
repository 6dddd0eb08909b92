/* The io_manager that runs libext2fs on the common block layer (see io_manager.c). */
#ifndef UMFUSE_EXT2_IO_VO_H
#define UMFUSE_EXT2_IO_VO_H

#include "bcache.h"

#include <ext2fs/ext2fs.h>

extern io_manager ext2_vo_io_manager;

/* Gives the cache a channel name for ext2fs_open2(name, ..., ext2_vo_io_manager, ...).
 * 0 or -EMFILE. */
int ext2_io_register(struct bcache *bc, char *name, size_t len);
void ext2_io_unregister(struct bcache *bc);

#endif
