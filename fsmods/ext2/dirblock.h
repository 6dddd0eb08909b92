/* One ext2/3/4 directory block, as bytes: walking its records, finding, inserting, removing
 * and retargeting an entry, and how much room it has left.
 *
 * A record is: inode (le32), rec_len (le16), name_len (u8), file_type (u8), name. rec_len
 * chains the records to the end of the block; an unused record has inode 0. With
 * metadata_csum the last 12 bytes are a fake record (the tail) holding the block's checksum,
 * which libext2fs computes when the block is written. With a 64 KiB block, rec_len 65535 (or 0)
 * stands for 65536.
 *
 * These functions know nothing of libext2fs or of the file system around the block, so the
 * unit tests and the fuzz harness (tests/fuzz/ext2) drive them with raw bytes. Every record is
 * checked before use: a corrupt block gives -EIO, never a read outside the buffer or a loop. */
#ifndef UMFUSE_EXT2_DIRBLOCK_H
#define UMFUSE_EXT2_DIRBLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dirblock {
	unsigned char *buf;
	unsigned size;   /* the block size */
	bool tail;       /* metadata_csum: the last 12 bytes are the checksum tail */
	bool filetype;   /* the filetype feature: file_type is meaningful */
};

struct dirent_view {
	unsigned off, rec_len;
	uint32_t ino;
	const char *name;
	unsigned name_len;
	int file_type;
};

/* The space a record with a name of this length needs. */
static inline unsigned dirblock_rec_len(unsigned name_len)
{
	return (8 + name_len + 3) & ~3U;
}

/* Calls fn for every record in use (inode != 0); stops when fn returns nonzero and returns
 * that value. 0 when walked to the end, -EIO when the block is malformed. */
typedef int (*dirblock_fn)(void *arg, const struct dirent_view *de);
int dirblock_walk(const struct dirblock *db, dirblock_fn fn, void *arg);

/* The biggest record a new entry could occupy (0 if none): compare with dirblock_rec_len.
 * -EIO if malformed. */
int dirblock_room(const struct dirblock *db);

/* 0, -ENOSPC (no room in this block) or -EIO. */
int dirblock_insert(struct dirblock *db, const char *name, unsigned len, uint32_t ino,
		    int file_type);
/* 0, -ENOENT or -EIO. */
int dirblock_remove(struct dirblock *db, const char *name, unsigned len);
int dirblock_find(const struct dirblock *db, const char *name, unsigned len,
		  struct dirent_view *out);
int dirblock_retarget(struct dirblock *db, const char *name, unsigned len, uint32_t ino,
		      int file_type);

#endif
