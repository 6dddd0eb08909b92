/* The libext2fs io_manager that plugs the common block layer (common/block.h) into libext2fs,
 * through the metadata block cache (bcache.h). With it libext2fs works on any block source:
 * an image file, a umdev device file, mem:SIZE or an NBD export.
 *
 * libext2fs opens a channel by name; the name we give it ("viewos-bcache:N") refers to a cache
 * registered just before, because the source is opened by the daemon itself (to report errors
 * in its own words) and the io_manager interface has no other way to pass an object in. */
#include "ext2_io_vo.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "viewos-bcache:"
enum { SLOTS = 16 };

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bcache *registry[SLOTS];

int ext2_io_register(struct bcache *bc, char *name, size_t len)
{
	pthread_mutex_lock(&registry_lock);
	for (int i = 0; i < SLOTS; i++) {
		if (!registry[i]) {
			registry[i] = bc;
			pthread_mutex_unlock(&registry_lock);
			snprintf(name, len, PREFIX "%d", i);
			return 0;
		}
	}
	pthread_mutex_unlock(&registry_lock);
	return -EMFILE;
}

void ext2_io_unregister(struct bcache *bc)
{
	pthread_mutex_lock(&registry_lock);
	for (int i = 0; i < SLOTS; i++)
		if (registry[i] == bc)
			registry[i] = NULL;
	pthread_mutex_unlock(&registry_lock);
}

/* libext2fs error codes are either its own (com_err) codes or plain errno values. */
static errcode_t to_errcode(int r, bool reading)
{
	if (r == 0)
		return 0;
	if (r == -EIO && reading)
		return EXT2_ET_SHORT_READ;
	return (errcode_t)-r;
}

static struct bcache *cache_of(io_channel ch)
{
	return ch->private_data;
}

static errcode_t vo_open(const char *name, int flags, io_channel *channel)
{
	(void)flags; /* the source was opened read-only or read-write by the daemon */
	int slot;
	if (!name || sscanf(name, PREFIX "%d", &slot) != 1 || slot < 0 || slot >= SLOTS)
		return EXT2_ET_BAD_DEVICE_NAME;
	pthread_mutex_lock(&registry_lock);
	struct bcache *bc = registry[slot];
	pthread_mutex_unlock(&registry_lock);
	if (!bc)
		return EXT2_ET_BAD_DEVICE_NAME;

	io_channel ch = calloc(1, sizeof *ch);
	if (!ch)
		return EXT2_ET_NO_MEMORY;
	ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	ch->manager = ext2_vo_io_manager;
	ch->name = strdup(name);
	ch->block_size = (int)bcache_block_size(bc);
	ch->refcount = 1;
	ch->private_data = bc;
	if (!ch->name) {
		free(ch);
		return EXT2_ET_NO_MEMORY;
	}
	*channel = ch;
	return 0;
}

static errcode_t vo_close(io_channel ch)
{
	if (--ch->refcount > 0)
		return 0;
	/* the cache and the device belong to the daemon, which syncs and frees them */
	free(ch->name);
	free(ch);
	return 0;
}

static errcode_t vo_set_blksize(io_channel ch, int blksize)
{
	if (blksize <= 0)
		return EXT2_ET_INVALID_ARGUMENT;
	ch->block_size = blksize;
	return to_errcode(bcache_set_block_size(cache_of(ch), (unsigned)blksize), false);
}

/* A negative count is a byte count (libext2fs' convention). */
static errcode_t vo_read_blk64(io_channel ch, unsigned long long block, int count, void *data)
{
	struct bcache *bc = cache_of(ch);
	int r = count < 0
		? bcache_read_bytes(bc, block * (uint64_t)ch->block_size, (size_t)-count, data)
		: bcache_read(bc, block, (size_t)count, data);
	return to_errcode(r, true);
}

static errcode_t vo_write_blk64(io_channel ch, unsigned long long block, int count,
				const void *data)
{
	struct bcache *bc = cache_of(ch);
	int r = count < 0
		? bcache_write_bytes(bc, block * (uint64_t)ch->block_size, (size_t)-count, data)
		: bcache_write(bc, block, (size_t)count, data);
	return to_errcode(r, false);
}

static errcode_t vo_read_blk(io_channel ch, unsigned long block, int count, void *data)
{
	return vo_read_blk64(ch, block, count, data);
}

static errcode_t vo_write_blk(io_channel ch, unsigned long block, int count, const void *data)
{
	return vo_write_blk64(ch, block, count, data);
}

static errcode_t vo_write_byte(io_channel ch, unsigned long offset, int count, const void *data)
{
	if (count < 0)
		return EXT2_ET_INVALID_ARGUMENT;
	return to_errcode(bcache_write_bytes(cache_of(ch), offset, (size_t)count, data), false);
}

static errcode_t vo_flush(io_channel ch)
{
	return to_errcode(bcache_sync(cache_of(ch)), false);
}

static errcode_t vo_set_option(io_channel ch, const char *option, const char *arg)
{
	(void)ch, (void)option, (void)arg;
	return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t vo_discard(io_channel ch, unsigned long long block, unsigned long long count)
{
	struct bcache *bc = cache_of(ch);
	bcache_forget(bc, block, count);
	int r = vo_block_trim(bcache_device(bc), block * (uint64_t)ch->block_size,
			      count * (uint64_t)ch->block_size);
	return r == -EOPNOTSUPP ? EXT2_ET_UNIMPLEMENTED : to_errcode(r, false);
}

static errcode_t vo_zeroout(io_channel ch, unsigned long long block, unsigned long long count)
{
	return to_errcode(bcache_zero(cache_of(ch), block, count), false);
}

static struct struct_io_manager vo_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "viewos block layer",
	.open = vo_open,
	.close = vo_close,
	.set_blksize = vo_set_blksize,
	.read_blk = vo_read_blk,
	.write_blk = vo_write_blk,
	.flush = vo_flush,
	.write_byte = vo_write_byte,
	.set_option = vo_set_option,
	.read_blk64 = vo_read_blk64,
	.write_blk64 = vo_write_blk64,
	.discard = vo_discard,
	.zeroout = vo_zeroout,
};

io_manager ext2_vo_io_manager = &vo_manager;
