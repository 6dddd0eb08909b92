/* The ISO 9660 reader behind umfuse-iso9660: an image opened through the block layer, its tree
 * of nodes built lazily one directory at a time, and reads that go straight to file extents.
 *
 * It knows nothing of FUSE, so the unit tests and the fuzz harnesses drive it directly.
 *
 * Why a parser of our own (and not libcdio's libiso9660 or libarchive): the driver needs direct
 * access to each file's extents for random reads, Rock Ridge relocation (CL/PL/RE), zisofs,
 * multi-extent files, a choice of session and of namespace (norock/nojoliet/map/check) and
 * strict bounds on every hostile field. libarchive reads an image as a stream (no random access
 * to a file's extents at all); libiso9660 gives extents but none of relocation, zisofs or session
 * choice, and reading a directory through it re-parses it on every call. The formats are small
 * and well specified, so a compact reader that checks every length is the safer part to own;
 * libarchive (bsdtar) serves as the independent oracle in the tests. zlib inflates zisofs.
 *
 * Memory: nodes, names and listings live in an arena that is freed with the image. A node is
 * never freed before that, so its address can serve as the FUSE node id and a FORGET needs no
 * work. A hostile image cannot make this unbounded: every directory is parsed at most once and
 * its size is capped (ISO_MAX_DIR_BYTES). */
#ifndef ISO9660_ISOFS_H
#define ISO9660_ISOFS_H

#include "block.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Larger directories are refused with EIO: 64 MiB of records is over a million entries, far
 * beyond any real disc, and it bounds what a forged directory length can make us allocate. */
#define ISO_MAX_DIR_BYTES (64u << 20)

/* Mount options that change how the image is read (the kernel's isofs names and meanings). */
struct iso_options {
	bool norock;        /* ignore Rock Ridge */
	bool nojoliet;      /* ignore Joliet */
	bool map_off;       /* map=off: plain ISO 9660 names as recorded ("FILE.TXT;1") */
	char check;         /* 'r' relaxed (case-insensitive lookup), 's' strict, 0 = default:
	                       relaxed for Joliet, strict otherwise (as Linux) */
	unsigned session;   /* 1-based session to mount (the option's session=N is N + 1);
			       0 = the last one */
	bool has_sbsector;  /* sbsector=N: the session starts at block N */
	uint32_t sbsector;
	/* Owner and permissions for trees without Rock Ridge. */
	uid_t uid;
	gid_t gid;
	mode_t fmode, dmode;
};

enum iso_namespace { ISO_NS_PLAIN, ISO_NS_JOLIET, ISO_NS_ROCK };

/* A run of file data on the device, in bytes. */
struct iso_extent {
	uint64_t start, length;
};

struct iso_zisofs;
struct iso_dir;
struct rr_info;

struct iso_node {
	struct iso_node *parent;
	uint64_t ino;              /* st_ino: the byte address of the node's first directory
	                              record (a directory: of its "." record), stable across mounts */
	uint64_t size;             /* st_size (the inflated size of a zisofs file) */
	uint64_t rdev;
	struct timespec atime, mtime, ctime;
	uint32_t mode, nlink, uid, gid;
	int error;                 /* a corrupt entry: lookups of it fail with this errno */
	int data_error;            /* data we cannot read (an interleaved file, an unknown zisofs
	                              algorithm): stat works, reads fail with this errno */
	uint32_t nextents;
	struct iso_extent *extents;   /* the file's data, or the directory's records */
	char *symlink;
	struct iso_zisofs *zisofs;    /* set for a zisofs-compressed regular file */
	/* Directories: the listing, parsed at most once (0 = not yet, 1 = loaded, -errno). */
	_Atomic int dir_state;
	struct iso_dir *dir;
};

/* One entry of a directory, in on-disk order (which is what readdir returns). */
struct iso_dirent {
	const char *name;
	uint32_t namelen;
	uint32_t hash;             /* of the case-folded name, for relaxed and strict lookups */
	struct iso_node *node;
};

struct iso_dir {
	uint32_t count;
	struct iso_dirent *ents;
	uint32_t hmask;            /* hash index: hmask + 1 slots holding entry index + 1 */
	uint32_t *htab;
};

struct iso_arena_chunk;

struct iso_image {
	struct vo_block *dev;
	uint64_t dev_size;
	struct iso_options opt;
	enum iso_namespace ns;
	bool relaxed;              /* case-insensitive lookups */
	unsigned susp_skip;        /* SUSP LEN_SKP from the root's SP entry */
	uint32_t session_start;    /* block of the mounted session */
	unsigned session_index, session_count; /* 1-based; 0/0 when chosen by sbsector */
	uint32_t volume_blocks;
	char volume_id[33];
	bool has_joliet, has_rock, has_eltorito;
	struct iso_node *root;

	pthread_mutex_t lock;      /* directory loading, the arena, the directory table */
	struct iso_arena_chunk *arena;
	/* Directory nodes by their first block, so a directory reached twice (a CL target, or a
	   hostile record that points at an ancestor) is one node: loops then show as loops. */
	struct iso_node **dirtab;
	uint32_t dirtab_mask, dirtab_count;
	atomic_uint warnings;
	struct rr_info *rr_entry, *rr_target; /* scratch for directory loading (under lock) */
};

/* Open the image on dev (which the image then owns). On failure returns -errno after writing
 * "why" into err (without the source name: the caller prefixes it). */
int iso_image_open(struct vo_block *dev, const struct iso_options *opt, struct iso_image **out,
		   char *err, size_t errlen);
void iso_image_close(struct iso_image *img);

/* The listing of a directory node, parsed on first use. 0 or -errno (-ENOTDIR, -EIO). */
int iso_dir_get(struct iso_image *img, struct iso_node *dir, const struct iso_dir **out);
/* Find name in dir: 0 and *out, -ENOENT, or the error of a corrupt directory. A corrupt entry
 * is returned with its error set: the caller decides what to show. */
int iso_lookup(struct iso_image *img, struct iso_node *dir, const char *name,
	       struct iso_node **out);

void iso_stat(const struct iso_image *img, const struct iso_node *n, struct stat *st);

/* Read file data: the bytes read (short only at the end of the file) or -errno. */
ssize_t iso_read(struct iso_image *img, struct iso_node *n, void *buf, size_t len, uint64_t off);

/* For zero-copy replies: the device ranges that hold [off, off+len) of a plain (not zisofs)
 * file, clipped to the file size. Fills up to max pieces and returns their number, or -errno
 * (-EIO when an extent lies outside the device). */
struct iso_piece {
	uint64_t dev_off;
	size_t len;
};
int iso_map(struct iso_image *img, const struct iso_node *n, uint64_t off, size_t len,
	    struct iso_piece *pieces, int max);

/* --- shared between the parser's files --- */

void *iso_arena_alloc(struct iso_image *img, size_t size); /* zeroed; img->lock held */
char *iso_arena_strndup(struct iso_image *img, const char *s, size_t len);
void iso_arena_free(struct iso_image *img);

/* Read len bytes at off from the device; a range that does not lie wholly on the device is
 * -EIO (a hostile extent), never a short read. */
int iso_dev_read(struct iso_image *img, void *buf, size_t len, uint64_t off);

/* Parse one directory record at p (avail bytes to the end of its sector). */
struct iso_record {
	uint64_t pos;              /* byte address on the device */
	uint8_t length, flags;
	uint32_t extent;           /* first block of the data (after the XAR) */
	uint32_t data_length;
	uint8_t unit_size, gap_size;
	struct timespec date;
	const uint8_t *name;
	uint8_t name_len;
	const uint8_t *su;         /* System Use area (before LEN_SKP is applied) */
	size_t su_len;
};
int iso_record_parse(const uint8_t *p, size_t avail, uint64_t pos, struct iso_record *r);
bool iso_record_is_dot(const struct iso_record *r);    /* "\0": the directory itself */
bool iso_record_is_dotdot(const struct iso_record *r); /* "\1": the parent */

/* Attributes of a node: the defaults for a tree without Rock Ridge (owner and modes from the
 * options, every time the record's date), then what the record's Rock Ridge entries say.
 * img->lock held (symlink targets and zisofs state go to the arena). */
void iso_node_defaults(struct iso_image *img, struct iso_node *n, const struct iso_record *r,
		       bool is_dir);
void iso_node_apply_rr(struct iso_image *img, struct iso_node *n, const struct rr_info *rr,
		       bool is_dir);

/* A warning about the image, at most ISO_MAX_WARNINGS per mount so that a hostile image cannot
 * flood the log. */
#define ISO_MAX_WARNINGS 20
void iso_warn(struct iso_image *img, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Directory nodes by first block (img->lock held). */
struct iso_node *iso_dirtab_find(struct iso_image *img, uint32_t block);
int iso_dirtab_add(struct iso_image *img, uint32_t block, struct iso_node *n);

#endif
