/* libFuzzer harness for everything umfuse-ext2 does when it reads an image: volume.c (opening,
 * the feature policy, the size and root checks), nodes.c (inode fields, times, device numbers,
 * the in-inode attribute probe), dir.c over dirblock.c (directory indexes and iteration),
 * data.c (block maps, reads, SEEK_DATA/SEEK_HOLE) and xattr.c over acl.c — the daemon's own
 * files, linked as the daemon links them, on libext2fs. Most of the parsing of an ext2 image is
 * libext2fs'; what this harness adds to the dirblock and ACL harnesses is the glue the daemon
 * wrote around it (bounds on block numbers, sizes, inode numbers in entries).
 *
 * Input: one option byte (bit 0: POSIX ACLs as the kernel grants them, bit 1: a tiny metadata
 * cache), then the image's non-zero 1 KiB pieces, each after its position (3 bytes LE and a
 * spare byte). The image is laid in a file as long as its superblock says (at most 64 MiB;
 * what no piece covers reads as zeros), so an input holds just the metadata and small files,
 * and every mutation lands on bytes the image has. It is walked read-only: every directory (up to a bound) listed and looked up in, every
 * entry's inode read and stat'ed, files and symlinks read at both ends and sought, attributes
 * listed and read. */
#define _GNU_SOURCE
#include "daemon.h"
#include "e2fuse.h"
#include "log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_IMAGE (64u << 20)
#define UNIT 1024u          /* the input gives the image in pieces of this size ... */
#define CHUNK (4 + UNIT)    /* ... each after its position (in UNITs, 3 bytes LE + 1 spare) */
#define MAX_DIRS 64
#define MAX_ENTRIES 256
#define READ_LEN 65536

struct entry {
	char name[EXT2_NAME_LEN + 1];
	ext2_ino_t ino;
};

struct listing {
	struct entry *ents;
	unsigned count;
};

static int collect(void *arg, const char *name, size_t len, ext2_ino_t ino, int ftype,
		   uint64_t next)
{
	(void)ftype, (void)next;
	struct listing *l = arg;
	if (l->count == MAX_ENTRIES)
		return 1;
	struct entry *en = &l->ents[l->count++];
	memcpy(en->name, name, len);
	en->name[len] = '\0';
	en->ino = ino;
	return 0;
}

static char image_path[64];

static void remove_image(void)
{
	unlink(image_path);
}

/* The image file: the chunks where they belong, zeros elsewhere, as long as the superblock says
 * (at most MAX_IMAGE). */
static bool lay_out(const uint8_t *data, size_t size)
{
	int fd = open(image_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	uint64_t end = 0;
	bool ok = true;
	for (size_t at = 0; ok && size - at >= CHUNK; at += CHUNK) {
		const uint8_t *c = data + at;
		uint64_t off = (uint64_t)(c[0] | c[1] << 8 | c[2] << 16) * UNIT;
		if (off + UNIT > MAX_IMAGE)
			continue;
		ok = pwrite(fd, c + 4, UNIT, (off_t)off) == UNIT;
		if (off + UNIT > end)
			end = off + UNIT;
	}
	uint8_t sb[32];
	if (ok && pread(fd, sb, sizeof sb, 1024) == (ssize_t)sizeof sb) {
		uint64_t blocks = (uint64_t)sb[4] | (uint64_t)sb[5] << 8 | (uint64_t)sb[6] << 16 |
				  (uint64_t)sb[7] << 24;
		unsigned log = sb[24];
		uint64_t want = log <= 6 ? blocks << (10 + log) : 0;
		if (want > end)
			end = want < MAX_IMAGE ? want : MAX_IMAGE;
	}
	ok = ok && ftruncate(fd, (off_t)end) == 0;
	close(fd);
	return ok;
}

static void walk_file(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in, char *buf)
{
	struct node *n = node_get(e, ino);
	if (!n)
		return;
	uint64_t size = EXT2_I_SIZE(in), pos;
	(void)data_read(e, n, in, buf, READ_LEN, 0);
	if (size > READ_LEN)
		(void)data_read(e, n, in, buf, 4096, size - 4096);
	(void)data_seek(e, n, in, 0, SEEK_DATA, &pos);
	(void)data_seek(e, n, in, 0, SEEK_HOLE, &pos);
}

static void walk_xattrs(struct e2 *e, ext2_ino_t ino)
{
	char *list = NULL;
	size_t len = 0;
	if (xattr_list(e, ino, &list, &len) < 0)
		return;
	for (size_t at = 0; at < len; at += strlen(list + at) + 1) {
		void *value = NULL;
		size_t vlen = 0;
		if (xattr_get(e, ino, list + at, &value, &vlen) == 0)
			ext2fs_free_mem(&value);
	}
	free(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		vo_log_init("fuzz_ext2_image");
		vo_log_to_syslog(); /* the corruption messages would drown libFuzzer's own */
		snprintf(image_path, sizeof image_path, "/dev/shm/fuzz_ext2_image.%d", getpid());
		atexit(remove_image);
		ready = true;
	}
	if (size < 1 || !lay_out(data + 1, size - 1))
		return 0;
	struct e2 *e = calloc(1, sizeof *e);
	e->cfg.acl = 1;
	e->cfg.commit = 0;
	e->cfg.cache_size = (data[0] & 2) ? 64 << 10 : 4 << 20;
	e->cfg.timeout = 1;
	e->posix_acl = data[0] & 1;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->released_cond, NULL);
	e2_lock(e);
	if (e2_open(e, image_path, true) == VO_EXIT_OK) {
		static char buf[READ_LEN];
		static struct entry ents[MAX_ENTRIES];
		ext2_ino_t dirs[MAX_DIRS];
		unsigned ndirs = 0;
		dirs[ndirs++] = EXT2_ROOT_INO;
		for (unsigned d = 0; d < ndirs; d++) {
			struct listing l = { .ents = ents };
			if (dir_iterate(e, dirs[d], 0, collect, &l) < 0 && l.count == 0)
				continue;
			walk_xattrs(e, dirs[d]);
			for (unsigned i = 0; i < l.count; i++) {
				const struct entry *en = &ents[i];
				if (!strcmp(en->name, ".") || !strcmp(en->name, ".."))
					continue;
				ext2_ino_t found;
				if (dir_lookup(e, dirs[d], en->name, &found) < 0)
					continue;
				struct ext2_inode_large in;
				if (ino_read(e, found, &in) < 0)
					continue;
				struct stat st;
				ino_stat(e, found, &in, &st);
				if (S_ISDIR(st.st_mode)) {
					bool seen = false;
					for (unsigned k = 0; k < ndirs; k++)
						seen |= dirs[k] == found;
					if (!seen && ndirs < MAX_DIRS)
						dirs[ndirs++] = found;
				} else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
					walk_file(e, found, &in, buf);
					walk_xattrs(e, found);
				}
			}
		}
	}
	e2_close(e);
	node_table_free(e);
	e2_unlock(e);
	pthread_cond_destroy(&e->released_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
	return 0;
}
