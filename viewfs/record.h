/* The metadata record of the layer format (docs/viewfs-layer-format.md): the `key=value` lines
 * of a file `SOURCE/.-/PATH` + 0x7F. Pure parsing and formatting, no I/O, so that the parser can
 * be unit-tested and fuzzed on its own (tests/viewfs/test_record.c, tests/fuzz/viewfs/). */
#ifndef VIEWFS_RECORD_H
#define VIEWFS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Largest record viewfs reads: anything bigger is corrupt (records are a few lines). */
#define VREC_MAX_SIZE 65536

enum vrec_field {
	VREC_TYPE = 1u << 0,     /* type= */
	VREC_MODE = 1u << 1,     /* mode= */
	VREC_UID = 1u << 2,      /* uid= */
	VREC_GID = 1u << 3,      /* gid= */
	VREC_RDEV = 1u << 4,     /* rdev= */
	VREC_CTIME = 1u << 5,    /* ctime= */
	VREC_INO = 1u << 6,      /* ino= (viewfs) */
	VREC_OPAQUE = 1u << 7,   /* opaque= (viewfs) */
	VREC_REDIRECT = 1u << 8, /* redirect= (viewfs) */
	VREC_LINK = 1u << 9,     /* link= (viewfs): the metadata is the index's shared record */
	VREC_NLINK = 1u << 10,   /* nlink= (viewfs): names of a file whose copy is in the index */
};

/* Longest index key of a link= value (decimal inode numbers, or 'l' and 16 hex digits). */
#define VREC_KEY_MAX 32

struct vrecord {
	unsigned has;           /* which of the fields below are set (enum vrec_field) */
	mode_t type;            /* S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO or S_IFSOCK */
	mode_t mode;            /* 07777 bits */
	uid_t uid;
	gid_t gid;
	dev_t rdev;
	struct timespec ctime;
	uint64_t ino;
	uint64_t nlink;
	char *redirect;         /* absolute path in the original, unescaped; malloc'ed */
	char *link;             /* index key: 1..VREC_KEY_MAX of [0-9a-z]; malloc'ed */
	char *extra;            /* lines of keys viewfs does not know, kept verbatim; malloc'ed */
};

/* Parse len bytes (not NUL-terminated). On success fills *rec (free with vrecord_clear) and
 * returns 0; on a corrupt record returns -1 and writes why into err. */
int vrecord_parse(const char *buf, size_t len, struct vrecord *rec, char *err, size_t errlen);

/* The file content for rec (malloc'ed, *len bytes, also NUL-terminated); NULL on ENOMEM.
 * A record with nothing set gives an empty string: the caller deletes the file instead. */
char *vrecord_format(const struct vrecord *rec, size_t *len);

bool vrecord_empty(const struct vrecord *rec);
void vrecord_clear(struct vrecord *rec);
/* Deep copy; returns 0 or -1 (ENOMEM). */
int vrecord_copy(struct vrecord *dst, const struct vrecord *src);
void vrecord_set_redirect(struct vrecord *rec, const char *path);
void vrecord_set_link(struct vrecord *rec, const char *key);
/* Is key a valid index key (what link= may hold)? */
bool vrecord_key_ok(const char *key, size_t len);

/* The escaping of redirect= values (\\, \n, \x7f), for other files of the layer that hold paths
 * and text on one line (the rename journal): malloc'ed, NULL on ENOMEM. */
char *vrecord_escape(const char *s);
/* Undo vrecord_escape on len bytes; NULL when the text is not validly escaped (or ENOMEM). */
char *vrecord_unescape(const char *s, size_t len);
/* Unescape and check an absolute path without empty, "." or ".." components (what redirect=
 * holds); NULL when it is not one. */
char *vrecord_parse_path(const char *s, size_t len);

#endif
