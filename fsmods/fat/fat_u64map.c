/* See fat_u64map.h. */
#include "fat_u64map.h"

#include <errno.h>
#include <stdlib.h>

static size_t slot_of(const struct fat_u64map *m, uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdULL;
	key ^= key >> 33;
	return (size_t)key & (m->cap - 1);
}

bool fat_u64map_get(const struct fat_u64map *m, uint64_t key, uint64_t *value)
{
	if (!m->cap || key == 0)
		return false;
	for (size_t i = slot_of(m, key);; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == 0)
			return false;
		if (m->keys[i] == key) {
			if (value)
				*value = m->values[i];
			return true;
		}
	}
}

static int grow(struct fat_u64map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	uint64_t *keys = calloc(cap, sizeof *keys), *values = calloc(cap, sizeof *values);
	if (!keys || !values) {
		free(keys);
		free(values);
		return -ENOMEM;
	}
	struct fat_u64map old = *m;
	m->keys = keys;
	m->values = values;
	m->cap = cap;
	m->count = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.keys[i])
			fat_u64map_put(m, old.keys[i], old.values[i]);
	free(old.keys);
	free(old.values);
	return 0;
}

int fat_u64map_put(struct fat_u64map *m, uint64_t key, uint64_t value)
{
	if (key == 0)
		return -EINVAL;
	if ((m->count + 1) * 2 > m->cap && grow(m) < 0)
		return -ENOMEM;
	size_t i = slot_of(m, key);
	while (m->keys[i] != 0 && m->keys[i] != key)
		i = (i + 1) & (m->cap - 1);
	if (m->keys[i] == 0)
		m->count++;
	m->keys[i] = key;
	m->values[i] = value;
	return 0;
}

void fat_u64map_del(struct fat_u64map *m, uint64_t key)
{
	if (!m->cap || key == 0)
		return;
	size_t i = slot_of(m, key);
	while (m->keys[i] != key) {
		if (m->keys[i] == 0)
			return;
		i = (i + 1) & (m->cap - 1);
	}
	/* shift back the cells that probed past the hole */
	size_t j = i;
	for (;;) {
		m->keys[i] = 0;
		for (;;) {
			j = (j + 1) & (m->cap - 1);
			if (m->keys[j] == 0) {
				m->count--;
				return;
			}
			size_t home = slot_of(m, m->keys[j]);
			/* can the entry at j move to i? only if its home is not in (i, j] */
			if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
				break;
		}
		m->keys[i] = m->keys[j];
		m->values[i] = m->values[j];
		i = j;
	}
}

void fat_u64map_free(struct fat_u64map *m)
{
	free(m->keys);
	free(m->values);
	m->keys = m->values = NULL;
	m->cap = m->count = 0;
}
