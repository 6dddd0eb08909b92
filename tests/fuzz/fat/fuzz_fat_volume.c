/* libFuzzer harness: a whole volume (fat_volume.c, fat_namespace.c, fat_file.c) on an image
 * held in memory. It is opened read-write, every directory is walked, every entry's attributes
 * (times, sizes, modes) taken as getattr takes them and every file read, then
 * files and directories are created, written, renamed and removed, and the volume is closed.
 * Errors are fine; crashes, hangs, leaks and sanitizer reports are not. */
#include "block.h"
#include "fat_volume.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct membuf {
	uint8_t *data;
	size_t size;
};

static ssize_t m_pread(struct vo_block *b, void *buf, size_t len, uint64_t off)
{
	struct membuf *m = b->priv;
	if (off >= m->size)
		return 0;
	size_t n = len < m->size - off ? len : m->size - off;
	memcpy(buf, m->data + off, n);
	return (ssize_t)n;
}

static ssize_t m_pwrite(struct vo_block *b, const void *buf, size_t len, uint64_t off)
{
	struct membuf *m = b->priv;
	if (off >= m->size)
		return -ENOSPC;
	size_t n = len < m->size - off ? len : m->size - off;
	memcpy(m->data + off, buf, n);
	return (ssize_t)n;
}

static int m_flush(struct vo_block *b)
{
	(void)b;
	return 0;
}

static void m_close(struct vo_block *b)
{
	struct membuf *m = b->priv;
	free(m->data);
	free(m);
}

static const struct vo_block_ops mem_ops = {
	.pread = m_pread, .pwrite = m_pwrite, .flush = m_flush, .close = m_close,
};

static int walked;

static void walk(struct fat_volume *vol, struct fat_node *dir, int depth)
{
	if (depth > 6 || walked > 400)
		return;
	pthread_mutex_lock(&vol->lock);
	int r = vol_load_dir(vol, dir);
	char *names[64];
	int n = 0;
	if (r == 0)
		for (int32_t s = fat_dir_next(dir->dir, 0); s >= 0 && n < 64;
		     s = fat_dir_next(dir->dir, (uint32_t)s + 1))
			names[n++] = strdup(dir->dir->names[s]->name);
	pthread_mutex_unlock(&vol->lock);
	for (int i = 0; i < n; i++) {
		struct fat_node *child;
		bool exact;
		walked++;
		if (fat_vol_lookup(vol, dir, names[i], &child, &exact) == 0) {
			struct stat st;
			pthread_mutex_lock(&vol->lock);
			vol_stat(vol, child, &st); /* dates and times as the entry has them */
			pthread_mutex_unlock(&vol->lock);
			if (child->is_dir) {
				walk(vol, child, depth + 1);
			} else {
				char buf[8192];
				for (uint64_t off = 0; off < 65536; off += sizeof buf)
					if (fat_file_read(vol, child, buf, sizeof buf, off) <= 0)
						break;
			}
			pthread_mutex_lock(&vol->lock);
			vol_node_forget(vol, child, 1);
			pthread_mutex_unlock(&vol->lock);
		}
		free(names[i]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 512 || size > (4u << 20))
		return 0;
	struct membuf *m = malloc(sizeof *m);
	m->data = malloc(size);
	m->size = size;
	memcpy(m->data, data, size);
	struct vo_block *b = vo_block_new(&mem_ops, "fuzz");
	b->size = size;
	b->priv = m;
	struct fat_mount_options o = { .fmask = 022, .dmask = 022, .codepage = 437,
				       .shortname = FAT_SN_MIXED, .utc = true };
	char why[256];
	struct fat_volume *vol = fat_volume_open(b, &o, why, sizeof why);
	if (!vol)
		return 0;
	walked = 0;
	struct statvfs sv;
	vol_statfs(vol, &sv);
	walk(vol, vol->root, 0);
	struct fat_node *f, *d;
	if (fat_vol_create(vol, vol->root, "A new file with a long name.txt", false, &f) == 0) {
		static const char text[5000] = "some data";
		fat_file_write(vol, f, text, sizeof text, 0);
		fat_file_write(vol, f, text, 100, 20000);
		fat_file_truncate(vol, f, 3000);
		if (fat_vol_create(vol, vol->root, "dir", true, &d) == 0) {
			fat_vol_rename(vol, vol->root, "A new file with a long name.txt", d, "moved",
				       0);
			fat_vol_rename(vol, vol->root, "dir", vol->root, "DIR2", 0);
			fat_vol_unlink(vol, d, "moved");
			fat_vol_rmdir(vol, vol->root, "dir2");
			pthread_mutex_lock(&vol->lock);
			vol_node_forget(vol, d, 1);
			pthread_mutex_unlock(&vol->lock);
		}
		pthread_mutex_lock(&vol->lock);
		vol_node_forget(vol, f, 1);
		pthread_mutex_unlock(&vol->lock);
	}
	fat_volume_close(vol);
	return 0;
}
