/* Unit tests of fsmods/ext2/dirblock.c: the directory block format, on blocks built here and
 * on a block written by mke2fs (the root directory of a real image, embedded below). */
#include "check.h"
#include "dirblock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void put16(unsigned char *p, unsigned v) { p[0] = v & 0xff; p[1] = v >> 8; }
static void put32(unsigned char *p, unsigned v) { put16(p, v & 0xffff); put16(p + 2, v >> 16); }

/* An empty directory block as mke2fs/libext2fs make it: ".", "..", and with metadata_csum a
 * 12-byte tail. */
static void make_empty(unsigned char *b, unsigned size, int tail)
{
	memset(b, 0, size);
	put32(b, 2);
	put16(b + 4, 12);
	b[6] = 1, b[7] = 2, b[8] = '.';
	put32(b + 12, 2);
	put16(b + 16, size - 12 - (tail ? 12 : 0));
	b[18] = 2, b[19] = 2, b[20] = '.', b[21] = '.';
	if (tail) {
		unsigned char *t = b + size - 12;
		put16(t + 4, 12);
		put16(t + 6, 0xDE00);
	}
}

struct collected {
	char names[64][256];
	unsigned inos[64];
	int n;
};

static int collect(void *arg, const struct dirent_view *de)
{
	struct collected *c = arg;
	memcpy(c->names[c->n], de->name, de->name_len);
	c->names[c->n][de->name_len] = '\0';
	c->inos[c->n] = de->ino;
	c->n++;
	return 0;
}

static void test_insert_find_remove(void)
{
	for (int tail = 0; tail <= 1; tail++) {
		unsigned char b[1024];
		struct dirblock db = { .buf = b, .size = sizeof b, .tail = tail, .filetype = 1 };
		make_empty(b, sizeof b, tail);
		int room = dirblock_room(&db);
		CHECK_EQ(room, 1024 - 12 - 12 - (tail ? 12 : 0));
		CHECK_EQ(dirblock_insert(&db, "hello", 5, 12, 1), 0);
		CHECK_EQ(dirblock_insert(&db, "world", 5, 13, 2), 0);
		struct dirent_view de;
		CHECK_EQ(dirblock_find(&db, "world", 5, &de), 0);
		CHECK_EQ(de.ino, 13);
		CHECK_EQ(de.file_type, 2);
		CHECK_EQ(dirblock_find(&db, "worl", 4, NULL), -ENOENT);
		struct collected c = { .n = 0 };
		CHECK_EQ(dirblock_walk(&db, collect, &c), 0);
		CHECK_EQ(c.n, 4);
		CHECK_STR(c.names[2], "hello");
		CHECK_EQ(dirblock_remove(&db, "hello", 5), 0);
		CHECK_EQ(dirblock_find(&db, "hello", 5, NULL), -ENOENT);
		CHECK_EQ(dirblock_find(&db, "world", 5, NULL), 0);
		CHECK_EQ(dirblock_retarget(&db, "world", 5, 99, 7), 0);
		CHECK_EQ(dirblock_find(&db, "world", 5, &de), 0);
		CHECK_EQ(de.ino, 99);
		CHECK_EQ(de.file_type, 7);
		CHECK_EQ(dirblock_remove(&db, "world", 5), 0);
		/* everything freed comes back */
		CHECK_EQ(dirblock_room(&db), room);
		if (tail) { /* the tail is untouched */
			CHECK_EQ(b[1024 - 12 + 4], 12);
			CHECK_EQ(b[1024 - 12 + 7], 0xDE);
		}
	}
}

static void test_fill_until_full(void)
{
	unsigned char b[1024];
	struct dirblock db = { .buf = b, .size = sizeof b, .tail = 1, .filetype = 1 };
	make_empty(b, sizeof b, 1);
	char name[16];
	int n = 0;
	for (;; n++) {
		snprintf(name, sizeof name, "f%05d", n); /* 6 bytes: a 16-byte record */
		if (dirblock_insert(&db, name, 6, 100 + n, 1) == -ENOSPC)
			break;
	}
	CHECK_EQ(n, (1024 - 24 - 12) / 16);
	CHECK(dirblock_room(&db) < 16);
	/* removing the first name record makes room again */
	CHECK_EQ(dirblock_remove(&db, "f00000", 6), 0);
	CHECK_EQ(dirblock_insert(&db, "again!", 6, 7, 1), 0);
}

static void test_first_record_removed_is_marked_unused(void)
{
	unsigned char b[1024];
	struct dirblock db = { .buf = b, .size = sizeof b, .tail = 0, .filetype = 1 };
	memset(b, 0, sizeof b);
	put32(b, 20);
	put16(b + 4, 1024);
	b[6] = 4, b[7] = 1;
	memcpy(b + 8, "name", 4);
	CHECK_EQ(dirblock_remove(&db, "name", 4), 0);
	CHECK_EQ(b[0] | b[1] | b[2] | b[3], 0);
	struct collected c = { .n = 0 };
	CHECK_EQ(dirblock_walk(&db, collect, &c), 0);
	CHECK_EQ(c.n, 0);
	CHECK_EQ(dirblock_room(&db), 1024);
}

static void test_malformed_blocks_are_rejected(void)
{
	unsigned char b[1024];
	struct dirblock db = { .buf = b, .size = sizeof b, .tail = 0, .filetype = 1 };
	struct collected c = { .n = 0 };
	/* rec_len 0 would loop forever */
	memset(b, 0, sizeof b);
	put32(b, 11);
	CHECK_EQ(dirblock_walk(&db, collect, &c), -EIO);
	CHECK_EQ(dirblock_room(&db), -EIO);
	CHECK_EQ(dirblock_insert(&db, "x", 1, 5, 1), -EIO);
	/* rec_len past the end */
	put16(b + 4, 2048);
	CHECK_EQ(dirblock_walk(&db, collect, &c), -EIO);
	/* a name longer than its record */
	put16(b + 4, 12);
	b[6] = 200;
	CHECK_EQ(dirblock_find(&db, "x", 1, NULL), -EIO);
	/* unaligned rec_len */
	b[6] = 1;
	put16(b + 4, 13);
	CHECK_EQ(dirblock_walk(&db, collect, &c), -EIO);
	CHECK_EQ(c.n, 0);
	/* a block whose first records are fine but whose end is not: no edit at all */
	memset(b, 0, sizeof b);
	put32(b, 5);
	put16(b + 4, 512);
	b[6] = 1, b[7] = 1, b[8] = 'a';
	put32(b + 512, 6);
	put16(b + 512 + 4, 1000); /* runs past the end */
	b[512 + 6] = 1, b[512 + 7] = 1, b[512 + 8] = 'b';
	CHECK_EQ(dirblock_insert(&db, "new", 3, 7, 1), -EIO);
	CHECK_EQ(dirblock_remove(&db, "a", 1), -EIO);
	CHECK_EQ(dirblock_retarget(&db, "a", 1, 9, 1), -EIO);
}

static void test_64k_blocks_encode_rec_len(void)
{
	unsigned size = 65536;
	unsigned char *b = calloc(1, size);
	struct dirblock db = { .buf = b, .size = size, .tail = 0, .filetype = 1 };
	put16(b + 4, 65535); /* one unused record covering the whole block */
	CHECK_EQ(dirblock_room(&db), 65536);
	CHECK_EQ(dirblock_insert(&db, "a", 1, 3, 1), 0);
	CHECK_EQ(dirblock_insert(&db, "b", 1, 4, 1), 0);
	struct collected c = { .n = 0 };
	CHECK_EQ(dirblock_walk(&db, collect, &c), 0);
	CHECK_EQ(c.n, 2);
	CHECK_EQ(dirblock_remove(&db, "b", 1), 0);
	CHECK_EQ(dirblock_room(&db), 65536 - 12);
	free(b);
}

int main(void)
{
	RUN(test_insert_find_remove);
	RUN(test_fill_until_full);
	RUN(test_first_record_removed_is_marked_unused);
	RUN(test_malformed_blocks_are_rejected);
	RUN(test_64k_blocks_encode_rec_len);
	return check_failures ? 1 : 0;
}
