/* Unit tests of the volume (fsmods/fat/fat_volume.c, fat_namespace.c, fat_file.c) without
 * FUSE, on real images made by mkfs.vfat and checked by fsck.fat -n after every change:
 * the dirty flag, ENOSPC that loses nothing, unlinked-but-open files, inode numbers that stay,
 * and corrupt chains that give EIO and leave the image exactly as it was. */
#define _GNU_SOURCE
#include "check.h"
#include "fat_endian.h"
#include "fat_volume.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static char img[128];

static void make_image(const char *mkfs_args, const char *size)
{
	char cmd[512];
	unlink(img);
	snprintf(cmd, sizeof cmd, "truncate -s %s %s && mkfs.vfat %s %s >/dev/null", size, img,
		 mkfs_args, img);
	CHECK_EQ(system(cmd), 0);
}

static int fsck_status(void)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "fsck.fat -n %s >/tmp/fat-unit-fsck.log 2>&1", img);
	int st = system(cmd);
	if (st != 0 && system("cat /tmp/fat-unit-fsck.log >&2") != 0)
		fprintf(stderr, "(the fsck.fat log could not be shown)\n");
	return st;
}

static struct fat_volume *open_vol(bool ro)
{
	struct fat_mount_options o = { .uid = 0, .gid = 0, .fmask = 022, .dmask = 022,
				       .codepage = 437, .shortname = FAT_SN_MIXED, .readonly = ro,
				       .commit = 1 };
	char err[256];
	struct vo_block *b = vo_block_open(img, ro ? VO_BLOCK_RDONLY : 0, err, sizeof err);
	if (!b) {
		fprintf(stderr, "open: %s\n", err);
		exit(1);
	}
	struct fat_volume *v = fat_volume_open(b, &o, err, sizeof err);
	if (!v) { /* nothing after this can be checked */
		fprintf(stderr, "open: %s\n", err);
		exit(1);
	}
	return v;
}

static uint8_t boot_state(const struct fat_volume *v_for_offset)
{
	uint8_t b[512];
	int fd = open(img, O_RDONLY);
	CHECK_EQ(pread(fd, b, 512, 0), 512);
	close(fd);
	return b[v_for_offset->g.state_offset];
}

static struct fat_node *create(struct fat_volume *v, struct fat_node *d, const char *name,
			       bool is_dir)
{
	struct fat_node *n = NULL;
	CHECK_EQ(fat_vol_create(v, d, name, is_dir, &n), 0);
	return n;
}

static struct fat_node *lookup(struct fat_volume *v, struct fat_node *d, const char *name)
{
	struct fat_node *n = NULL;
	bool exact;
	return fat_vol_lookup(v, d, name, &n, &exact) == 0 ? n : NULL;
}

static void forget(struct fat_volume *v, struct fat_node *n)
{
	pthread_mutex_lock(&v->lock);
	vol_node_forget(v, n, n->nlookup);
	pthread_mutex_unlock(&v->lock);
}

/* The whole image (16 MiB, as the tests that compare it make it). */
static char *read_image(void)
{
	char *buf = calloc(1, 16 << 20);
	int fd = open(img, O_RDONLY);
	CHECK_EQ(pread(fd, buf, 16 << 20, 0), 16 << 20);
	close(fd);
	return buf;
}

static void test_dirty_flag_and_clean_close(void)
{
	make_image("-F 16", "16M");
	struct fat_volume *v = open_vol(false);
	CHECK_EQ(boot_state(v) & 1, 1); /* set on disk while mounted */
	uint32_t off = v->g.state_offset;
	struct fat_node *f = create(v, v->root, "hello.txt", false);
	CHECK_EQ(fat_file_write(v, f, "hello", 5, 0), 5);
	CHECK_EQ(fat_volume_close(v), 0);
	uint8_t b[512];
	int fd = open(img, O_RDONLY);
	CHECK_EQ(pread(fd, b, 512, 0), 512);
	close(fd);
	CHECK_EQ(b[off] & 1, 0);
	CHECK_EQ(fsck_status(), 0);

	/* a volume that was dirty before stays dirty for fsck to see */
	fd = open(img, O_RDWR);
	b[off] |= 1;
	CHECK_EQ(pwrite(fd, b, 512, 0), 512);
	close(fd);
	v = open_vol(false);
	CHECK(v->was_dirty);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(boot_state(&(struct fat_volume){ .g.state_offset = off }) & 1, 1);

	/* read-only never writes: the image is byte for byte what it was */
	char *before = read_image(), *after;
	v = open_vol(true);
	CHECK(v->readonly);
	struct fat_node *n = NULL;
	CHECK_EQ(fat_vol_create(v, v->root, "x", false, &n), -EROFS);
	CHECK_EQ(fat_volume_close(v), 0);
	after = read_image();
	CHECK(memcmp(before, after, 16 << 20) == 0);
	free(before);
	free(after);
}

static void test_write_read_back_after_reopen(void)
{
	make_image("-F 32 -s 8", "64M");
	struct fat_volume *v = open_vol(false);
	struct fat_node *d = create(v, v->root, "A Directory", true);
	struct fat_node *f = create(v, d, "Données été.bin", false);
	static char data[300000];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (char)(i * 7 + i / 4096);
	CHECK_EQ(fat_file_write(v, f, data, 100000, 0), 100000);
	CHECK_EQ(fat_file_write(v, f, data + 150000, 150000, 150000), 150000); /* a gap */
	CHECK_EQ(fat_file_truncate(v, f, 280000), 0);                         /* and up */
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);

	v = open_vol(false);
	d = lookup(v, v->root, "a directory");
	CHECK(d != NULL);
	f = d ? lookup(v, d, "DONNÉES ÉTÉ.BIN") : NULL;
	CHECK(f != NULL);
	if (f) {
		static char back[300000];
		CHECK_EQ(fat_file_read(v, f, back, sizeof back, 0), 280000);
		CHECK(memcmp(back, data, 100000) == 0);
		for (size_t i = 100000; i < 150000; i++)
			if (back[i] != 0) {
				CHECK(!"the gap reads as zeros");
				break;
			}
		CHECK(memcmp(back + 150000, data + 150000, 130000) == 0);
		/* contiguous: one run */
		CHECK_EQ(f->ext.n, 1);
	}
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);
}

static void test_enospc_loses_nothing(void)
{
	make_image("-F 12", "1440K");
	struct fat_volume *v = open_vol(false);
	struct fat_node *keep = create(v, v->root, "keep.txt", false);
	CHECK_EQ(fat_file_write(v, keep, "precious", 8, 0), 8);
	struct fat_node *big = create(v, v->root, "big", false);
	static char chunk[65536];
	memset(chunk, 'z', sizeof chunk);
	uint64_t off = 0;
	ssize_t w;
	while ((w = fat_file_write(v, big, chunk, sizeof chunk, off)) == (ssize_t)sizeof chunk)
		off += (uint64_t)w;
	CHECK(w > 0); /* the last write is short: what still fitted */
	off += (uint64_t)(w > 0 ? w : 0);
	CHECK_EQ(fat_file_write(v, big, chunk, 1, off), -ENOSPC);
	CHECK_EQ(v->fat.free_count, 0);
	CHECK_EQ(fat_file_truncate(v, keep, 100000), -ENOSPC); /* all or nothing */
	struct fat_node *n = NULL;
	CHECK_EQ(fat_vol_create(v, v->root, "newdir", true, &n), -ENOSPC);
	char buf[16];
	CHECK_EQ(fat_file_read(v, keep, buf, sizeof buf, 0), 8);
	CHECK(memcmp(buf, "precious", 8) == 0);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);

	/* the fixed root of FAT12 fills up too: ENOSPC, nothing half-written */
	make_image("-F 12 -r 16", "1440K");
	v = open_vol(false);
	int made = 0, r = 0;
	char name[32];
	for (int i = 0; i < 40 && r == 0; i++) {
		snprintf(name, sizeof name, "F%d", i);
		r = fat_vol_create(v, v->root, name, false, &n);
		made += r == 0;
	}
	CHECK_EQ(r, -ENOSPC);
	CHECK_EQ(made, 16);
	CHECK_EQ(fat_vol_create(v, v->root, "a long name needs slots", false, &n), -ENOSPC);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);
}

static void test_unlinked_open_file_keeps_clusters(void)
{
	make_image("-F 16", "16M");
	struct fat_volume *v = open_vol(false);
	struct fat_node *f = create(v, v->root, "open-then-unlinked", false);
	static char data[50000];
	memset(data, 'q', sizeof data);
	CHECK_EQ(fat_file_write(v, f, data, sizeof data, 0), (ssize_t)sizeof data);
	uint32_t free_before = v->fat.free_count;
	pthread_mutex_lock(&v->lock);
	f->nopen++, f->refs++; /* what open does */
	pthread_mutex_unlock(&v->lock);
	CHECK_EQ(fat_vol_unlink(v, v->root, "open-then-unlinked"), 0);
	CHECK(lookup(v, v->root, "open-then-unlinked") == NULL);
	CHECK_EQ(v->fat.free_count, free_before); /* still held */
	static char back[50000];
	CHECK_EQ(fat_file_read(v, f, back, sizeof back, 0), (ssize_t)sizeof back);
	CHECK(memcmp(back, data, sizeof data) == 0);
	CHECK_EQ(fat_file_write(v, f, "more", 4, sizeof data), 4); /* still writable */
	struct stat st;
	vol_stat(v, f, &st);
	CHECK_EQ(st.st_nlink, 0);
	pthread_mutex_lock(&v->lock);
	f->nopen--; /* what release does */
	vol_release_deleted(v, f);
	vol_node_put(v, f);
	pthread_mutex_unlock(&v->lock);
	/* the kernel still knows the node (it may yet open it): counted free, not yet freed */
	CHECK(vol_free_clusters(v) > free_before);
	CHECK_EQ(v->fat.free_count, free_before);
	forget(v, f);
	CHECK(v->fat.free_count > free_before);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);

	/* still open at the end: the close frees them, no lost clusters */
	v = open_vol(false);
	f = create(v, v->root, "open-at-exit", false);
	CHECK_EQ(fat_file_write(v, f, data, sizeof data, 0), (ssize_t)sizeof data);
	f->nopen++, f->refs++;
	CHECK_EQ(fat_vol_unlink(v, v->root, "open-at-exit"), 0);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);
}

/* An unlinked file nobody has open that the kernel still knows (it may yet open it) keeps
 * its clusters, counted free; an allocation short of space takes them back, and the node is
 * then released (an open of it gets ESTALE in fat_fuse.c). */
static void test_unlinked_known_file_gives_its_space_when_needed(void)
{
	make_image("-F 12", "1440K");
	struct fat_volume *v = open_vol(false);
	uint32_t free0 = vol_free_clusters(v);
	static char data[1000000];
	memset(data, 'k', sizeof data);
	struct fat_node *a = create(v, v->root, "known", false); /* nlookup 1, as after create */
	CHECK_EQ(fat_file_write(v, a, data, sizeof data, 0), (ssize_t)sizeof data);
	CHECK_EQ(fat_vol_unlink(v, v->root, "known"), 0);
	CHECK(a->pending && !a->released);
	CHECK_EQ(vol_free_clusters(v), free0);
	CHECK(v->fat.free_count < free0);
	struct fat_node *b = create(v, v->root, "needs the space", false);
	static char more[1200000];
	memset(more, 'm', sizeof more);
	CHECK_EQ(fat_file_write(v, b, more, sizeof more, 0), (ssize_t)sizeof more);
	CHECK(a->released && !a->pending);
	static char back[1200000];
	CHECK_EQ(fat_file_read(v, b, back, sizeof back, 0), (ssize_t)sizeof back);
	CHECK(memcmp(back, more, sizeof more) == 0);
	forget(v, a);
	forget(v, b);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);
}

static void test_inode_numbers_stay(void)
{
	make_image("-F 32", "64M");
	struct fat_volume *v = open_vol(false);
	struct fat_node *d = create(v, v->root, "dir", true);
	struct fat_node *f = create(v, v->root, "first", false);
	uint64_t dino = d->ino, fino = f->ino;
	forget(v, f);
	f = lookup(v, v->root, "first");
	CHECK_EQ(f->ino, fino); /* after the kernel forgot it */
	CHECK_EQ(fat_vol_rename(v, v->root, "first", d, "moved", 0), 0);
	CHECK_EQ(f->ino, fino);
	forget(v, f);
	struct fat_node *again = lookup(v, d, "moved");
	CHECK_EQ(again->ino, fino); /* renamed and forgotten: still its number */
	/* a new file where the old one was must not take its number */
	struct fat_node *g = create(v, v->root, "first", false);
	CHECK(g->ino != fino);
	/* a directory keeps its number through a rename */
	CHECK_EQ(fat_vol_rename(v, v->root, "dir", v->root, "dir2", 0), 0);
	CHECK_EQ(d->ino, dino);
	forget(v, d);
	forget(v, again);
	d = lookup(v, v->root, "dir2");
	CHECK_EQ(d->ino, dino);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);
}

/* Make the chain of `name` (in the root of the image) loop, by editing the image. */
static void corrupt_chain(const char *name, bool loop)
{
	struct fat_volume *v = open_vol(true);
	struct fat_node *f = lookup(v, v->root, name);
	uint32_t first = vol_first_cluster(v, f->de);
	uint64_t fat = v->g.fat_offset;
	enum fat_type type = v->g.type;
	uint64_t fat_size = v->g.fat_size;
	fat_volume_close(v);
	CHECK(type == FAT16);
	int fd = open(img, O_RDWR);
	uint8_t e[2];
	put_le16(e, loop ? (uint16_t)first : 0xFFF0 - 100); /* itself, or past the end */
	for (int copy = 0; copy < 2; copy++)
		CHECK_EQ(pwrite(fd, e, 2, fat + copy * fat_size + first * 2 + 2), 2);
	close(fd);
}

static char *slurp(size_t *len)
{
	int fd = open(img, O_RDONLY);
	struct stat st;
	fstat(fd, &st);
	char *b = malloc((size_t)st.st_size);
	CHECK_EQ(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static void test_corrupt_chains_give_eio_and_no_damage(void)
{
	for (int loop = 0; loop < 2; loop++) {
		make_image("-F 16", "16M");
		struct fat_volume *v = open_vol(false);
		struct fat_node *f = create(v, v->root, "victim", false);
		static char data[20000];
		CHECK_EQ(fat_file_write(v, f, data, sizeof data, 0), (ssize_t)sizeof data);
		create(v, v->root, "bystander", false);
		CHECK_EQ(fat_volume_close(v), 0);
		corrupt_chain("victim", loop);
		/* the dirty flag goes up and down; everything else must be as it was */
		v = open_vol(false);
		f = lookup(v, v->root, "victim");
		CHECK(f && f->chain_bad);
		char buf[100];
		CHECK_EQ(fat_file_read(v, f, buf, sizeof buf, 0), -EIO);
		CHECK_EQ(fat_file_write(v, f, "x", 1, 0), -EIO);
		CHECK_EQ(fat_file_truncate(v, f, 0), -EIO);
		CHECK_EQ(fat_vol_unlink(v, v->root, "victim"), -EIO);
		struct fat_node *by = lookup(v, v->root, "bystander");
		CHECK(by != NULL);
		CHECK_EQ(fat_volume_close(v), 0);
		size_t len;
		char *before = slurp(&len);
		v = open_vol(false);
		f = lookup(v, v->root, "victim");
		fat_file_write(v, f, "x", 1, 0);
		fat_vol_unlink(v, v->root, "victim");
		fat_vol_rename(v, v->root, "bystander", v->root, "victim", 0);
		CHECK_EQ(fat_volume_close(v), 0);
		size_t len2;
		char *after = slurp(&len2);
		CHECK(len == len2 && memcmp(before, after, len) == 0);
		free(before);
		free(after);
	}
}

static void test_rename_directory_updates_dotdot(void)
{
	make_image("-F 32", "64M");
	struct fat_volume *v = open_vol(false);
	struct fat_node *a = create(v, v->root, "a", true);
	struct fat_node *b = create(v, a, "b", true);
	struct fat_node *c = create(v, v->root, "c", true);
	create(v, b, "inside.txt", false);
	CHECK_EQ(fat_vol_rename(v, a, "b", c, "b-moved", 0), 0);
	CHECK(b->parent == c);
	CHECK_EQ(fat_vol_rename(v, c, "b-moved", b, "x", 0), -EINVAL); /* into itself */
	CHECK_EQ(fat_vol_rename(v, v->root, "c", b, "x", 0), -EINVAL);   /* into its child */
	CHECK_EQ(fat_vol_rename(v, c, "b-moved", v->root, "a", 0), 0);   /* over an empty dir */
	CHECK(lookup(v, v->root, "c") != NULL);
	CHECK_EQ(fat_vol_rmdir(v, v->root, "a"), -ENOTEMPTY);
	CHECK_EQ(fat_volume_close(v), 0);
	CHECK_EQ(fsck_status(), 0);
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/fat-unit-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(img, sizeof img, "%s/img", dir);
	fat_names_init();
	RUN(test_dirty_flag_and_clean_close);
	RUN(test_write_read_back_after_reopen);
	RUN(test_enospc_loses_nothing);
	RUN(test_unlinked_open_file_keeps_clusters);
	RUN(test_unlinked_known_file_gives_its_space_when_needed);
	RUN(test_inode_numbers_stay);
	RUN(test_corrupt_chains_give_eio_and_no_damage);
	RUN(test_rename_directory_updates_dotdot);
	fat_names_fini();
	unlink(img);
	rmdir(dir);
	return CHECK_DONE();
}
