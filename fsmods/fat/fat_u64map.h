/* A small hash map from 64-bit keys to 64-bit values (open addressing, linear probing,
 * deletion by backward shift). The volume keeps the inode numbers of renamed files in two of
 * them; written here because glibc offers no deletable hash table and the need is twenty lines. */
#ifndef FAT_U64MAP_H
#define FAT_U64MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fat_u64map {
	uint64_t *keys, *values; /* key 0 marks an empty cell: 0 is never a key */
	size_t cap, count;       /* cap is a power of two */
};

bool fat_u64map_get(const struct fat_u64map *m, uint64_t key, uint64_t *value);
int fat_u64map_put(struct fat_u64map *m, uint64_t key, uint64_t value); /* 0 or -ENOMEM */
void fat_u64map_del(struct fat_u64map *m, uint64_t key);
void fat_u64map_free(struct fat_u64map *m);

#endif
