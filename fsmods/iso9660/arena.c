/* The image's memory: nodes, names, listings and zisofs tables are allocated from chunks that
 * all go at once when the image is closed. Nothing is freed earlier (see isofs.h), so a bump
 * allocator is all it takes, and it costs one malloc per 256 KiB instead of one per entry. */
#include "isofs.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE (256u << 10)

struct iso_arena_chunk {
	struct iso_arena_chunk *next;
	size_t used, size;
	max_align_t data[];
};

void *iso_arena_alloc(struct iso_image *img, size_t size)
{
	size = (size + 15) & ~(size_t)15;
	struct iso_arena_chunk *c = img->arena;
	if (!c || c->size - c->used < size) {
		/* Big requests get a chunk of their own, put behind the current one so that the
		   space left in it is not lost. */
		size_t want = size > CHUNK_SIZE / 4 ? size : CHUNK_SIZE;
		struct iso_arena_chunk *n = malloc(sizeof *n + want);
		if (!n)
			return NULL;
		n->size = want;
		n->used = 0;
		if (c && want != CHUNK_SIZE) {
			n->next = c->next;
			c->next = n;
		} else {
			n->next = c;
			img->arena = n;
		}
		c = n;
	}
	void *p = (char *)c->data + c->used;
	c->used += size;
	memset(p, 0, size);
	return p;
}

char *iso_arena_strndup(struct iso_image *img, const char *s, size_t len)
{
	char *p = iso_arena_alloc(img, len + 1);
	if (p) {
		memcpy(p, s, len);
		p[len] = '\0';
	}
	return p;
}

void iso_arena_free(struct iso_image *img)
{
	while (img->arena) {
		struct iso_arena_chunk *next = img->arena->next;
		free(img->arena);
		img->arena = next;
	}
}
