/* st_ino in the view (docs/viewfs-layer-format.md, "Inode numbers").
 *
 * The kernel, tar, rsync, git and `find -samefile` rely on st_ino naming one object for as long
 * as it exists. A union has two sources of numbers (the original and the layer, maybe on
 * different file systems, plus whatever is mounted below the original), so a number is the
 * object's own inode number with a file-system class in the top 8 bits:
 *   0       the file system of the original MOUNTPOINT (so an original keeps its number, folded
 *           only above 2^56, which no common file system reaches),
 *   1       the file system of SOURCE when it is another one,
 *   2..255  any other file system met below MOUNTPOINT, placed by a hash of its device number
 *           (stable for the boot, whatever order they are met in).
 * An object copied into the layer keeps the number of its origin through the `ino` key of its
 * record (lookup.c), so the number never changes on copy-up or remount. */
#include "fs.h"

#include "log.h"

#define INO_BITS 56
#define INO_MASK ((UINT64_C(1) << INO_BITS) - 1)

static unsigned class_of_dev(struct viewfs *fs, dev_t dev)
{
	if (dev == fs->lower_dev)
		return 0;
	if (dev == fs->upper_dev)
		return 1;
	/* Fibonacci hashing of the device number spreads major/minor pairs well. */
	unsigned start = 2 + (unsigned)(((uint64_t)dev * UINT64_C(0x9E3779B97F4A7C15)) >> 56) % 254;
	unsigned cls = start;
	pthread_mutex_lock(&fs->inum_lock);
	for (unsigned i = 0; i < 254; i++) {
		unsigned c = 2 + (start - 2 + i) % 254;
		if (!fs->inum_used[c]) {
			fs->inum_used[c] = true;
			fs->inum_class[c] = dev;
			cls = c;
			break;
		}
		if (fs->inum_class[c] == dev) {
			cls = c;
			break;
		}
	}
	/* More than 254 other file systems below one view: numbers of two of them may meet. */
	pthread_mutex_unlock(&fs->inum_lock);
	return cls;
}

uint64_t vfs_ino(struct viewfs *fs, dev_t dev, ino_t ino)
{
	uint64_t i = (uint64_t)ino;
	if (i > INO_MASK)
		i = (i ^ (i >> INO_BITS) * UINT64_C(0x9E3779B97F4A7C15)) & INO_MASK;
	if (i == 0)
		i = 1; /* 0 is "no inode" to readdir users */
	return ((uint64_t)class_of_dev(fs, dev) << INO_BITS) | i;
}
