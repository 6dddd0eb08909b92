/* libFuzzer harness for fsmods/ext2/dirblock.c: any bytes as a directory block (1 KiB to
 * 64 KiB, with and without the checksum tail) must be walked, searched and edited without a
 * read or write outside the block and without looping; edits keep the block walkable. */
#include "dirblock.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int count(void *arg, const struct dirent_view *de)
{
	(void)de;
	(*(int *)arg)++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned sizes[] = { 1024, 2048, 4096, 65536 };
	unsigned bs = sizes[data[0] & 3];
	int tail = (data[0] >> 2) & 1;
	unsigned char *buf = calloc(1, bs);
	memcpy(buf, data + 1, size - 1 < bs ? size - 1 : bs);
	struct dirblock db = { .buf = buf, .size = bs, .tail = tail, .filetype = 1 };
	int n = 0;
	int walked = dirblock_walk(&db, count, &n);
	dirblock_room(&db);
	dirblock_find(&db, "name", 4, NULL);
	if (dirblock_insert(&db, "inserted-name", 13, 1234, 1) == 0) {
		int m = 0;
		if (dirblock_walk(&db, count, &m) != 0 || (walked == 0 && m != n + 1))
			abort();
		if (dirblock_remove(&db, "inserted-name", 13) != 0)
			abort();
	}
	free(buf);
	return 0;
}
