/* See dirblock.h. Written here rather than through libext2fs' dir_iterate because the daemon
 * needs positions (for readdir cookies and its name index), insertion into one chosen block,
 * and removal without scanning the whole directory, which libext2fs does not offer. */
#include "dirblock.h"

#include <errno.h>
#include <string.h>

enum { TAIL_SIZE = 12, HEADER = 8 };

static unsigned get16(const unsigned char *p)
{
	return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static unsigned get_rec_len(const struct dirblock *db, const unsigned char *p)
{
	unsigned len = get16(p + 4);
	if (db->size < 65536)
		return len;
	if (len == 65535 || len == 0)
		return db->size;
	return (len & 65532) | ((len & 3) << 16);
}

static void set_rec_len(const struct dirblock *db, unsigned char *p, unsigned len)
{
	if (db->size >= 65536 && len == 65536)
		put16(p + 4, 65535);
	else if (db->size >= 65536)
		put16(p + 4, (len & 65532) | ((len >> 16) & 3));
	else
		put16(p + 4, len);
}

/* The end of the area records may use. */
static unsigned usable_end(const struct dirblock *db)
{
	return db->tail ? db->size - TAIL_SIZE : db->size;
}

static bool is_tail(const struct dirblock *db, unsigned off, const unsigned char *p)
{
	return db->tail && off == db->size - TAIL_SIZE && get32(p) == 0 &&
	       get16(p + 4) == TAIL_SIZE && get16(p + 6) == 0xDE00;
}

/* Decode the record at off; -EIO unless it lies within the block and is self-consistent. */
static int record(const struct dirblock *db, unsigned off, struct dirent_view *de)
{
	if (off % 4 || off + HEADER > db->size)
		return -EIO;
	const unsigned char *p = db->buf + off;
	unsigned rec_len = get_rec_len(db, p);
	if (rec_len < HEADER || rec_len % 4 || rec_len > db->size - off)
		return -EIO;
	de->off = off;
	de->rec_len = rec_len;
	de->ino = get32(p);
	de->name_len = p[6];
	de->file_type = db->filetype ? (p[7] & 7) : 0;
	de->name = (const char *)p + HEADER;
	if (de->ino && (de->name_len == 0 || HEADER + de->name_len > rec_len))
		return -EIO;
	return 0;
}

/* Every record of the block is well-formed. Edits check this first: an edit must never
 * leave a block that reads worse than before. */
static int validate(const struct dirblock *db)
{
	struct dirent_view de;
	for (unsigned off = 0; off < db->size; off += de.rec_len)
		if (record(db, off, &de) < 0)
			return -EIO;
	return 0;
}

int dirblock_walk(const struct dirblock *db, dirblock_fn fn, void *arg)
{
	struct dirent_view de;
	for (unsigned off = 0; off < db->size; off += de.rec_len) {
		if (record(db, off, &de) < 0)
			return -EIO;
		if (de.ino == 0)
			continue;
		int r = fn(arg, &de);
		if (r)
			return r;
	}
	return 0;
}

/* Room a new entry could use in this record: all of an unused record, the slack after the
 * name of a used one; never the checksum tail. */
static unsigned record_room(const struct dirblock *db, const struct dirent_view *de)
{
	if (is_tail(db, de->off, db->buf + de->off))
		return 0;
	unsigned end = de->off + de->rec_len;
	if (end > usable_end(db))
		return 0; /* a record overlapping the tail: leave it alone */
	if (de->ino == 0)
		return de->rec_len;
	return de->rec_len - dirblock_rec_len(de->name_len);
}

int dirblock_room(const struct dirblock *db)
{
	struct dirent_view de;
	unsigned best = 0;
	for (unsigned off = 0; off < db->size; off += de.rec_len) {
		if (record(db, off, &de) < 0)
			return -EIO;
		unsigned room = record_room(db, &de);
		if (room > best)
			best = room;
	}
	return (int)best;
}

static void write_entry(const struct dirblock *db, unsigned char *p, const char *name,
			unsigned len, uint32_t ino, int file_type)
{
	put32(p, ino);
	p[6] = (unsigned char)len;
	p[7] = db->filetype ? (unsigned char)file_type : 0;
	memcpy(p + HEADER, name, len);
}

int dirblock_insert(struct dirblock *db, const char *name, unsigned len, uint32_t ino,
		    int file_type)
{
	unsigned need = dirblock_rec_len(len);
	if (validate(db) < 0)
		return -EIO;
	struct dirent_view de;
	for (unsigned off = 0; off < db->size; off += de.rec_len) {
		if (record(db, off, &de) < 0)
			return -EIO;
		if (record_room(db, &de) < need)
			continue;
		unsigned char *p = db->buf + off;
		if (de.ino == 0) {
			write_entry(db, p, name, len, ino, file_type);
			return 0;
		}
		/* split: the used record keeps what its name needs, the new one takes the rest */
		unsigned used = dirblock_rec_len(de.name_len);
		unsigned char *q = p + used;
		set_rec_len(db, p, used);
		set_rec_len(db, q, de.rec_len - used);
		write_entry(db, q, name, len, ino, file_type);
		return 0;
	}
	return -ENOSPC;
}

static bool same_name(const struct dirent_view *de, const char *name, unsigned len)
{
	return de->ino && de->name_len == len && memcmp(de->name, name, len) == 0;
}

int dirblock_find(const struct dirblock *db, const char *name, unsigned len,
		  struct dirent_view *out)
{
	struct dirent_view de;
	for (unsigned off = 0; off < db->size; off += de.rec_len) {
		if (record(db, off, &de) < 0)
			return -EIO;
		if (same_name(&de, name, len)) {
			if (out)
				*out = de;
			return 0;
		}
	}
	return -ENOENT;
}

int dirblock_remove(struct dirblock *db, const char *name, unsigned len)
{
	struct dirent_view de, prev = { .rec_len = 0 };
	bool have_prev = false;
	if (validate(db) < 0)
		return -EIO;
	for (unsigned off = 0; off < db->size; off += de.rec_len) {
		if (record(db, off, &de) < 0)
			return -EIO;
		if (same_name(&de, name, len)) {
			if (have_prev && !is_tail(db, de.off, db->buf + de.off)) {
				/* the previous record absorbs this one, as ext2/3/4 do */
				set_rec_len(db, db->buf + prev.off, prev.rec_len + de.rec_len);
			} else {
				put32(db->buf + off, 0); /* the first record of a block: mark unused */
			}
			return 0;
		}
		prev = de;
		have_prev = true;
	}
	return -ENOENT;
}

int dirblock_retarget(struct dirblock *db, const char *name, unsigned len, uint32_t ino,
		      int file_type)
{
	struct dirent_view de;
	int r = validate(db) < 0 ? -EIO : dirblock_find(db, name, len, &de);
	if (r < 0)
		return r;
	unsigned char *p = db->buf + de.off;
	put32(p, ino);
	p[7] = db->filetype ? (unsigned char)file_type : 0;
	return 0;
}
