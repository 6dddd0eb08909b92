/* The internals every part of the viewfs daemon shares: the file-system state, the node (one
 * per object the kernel knows), the layer metadata cache, and the functions each file of the
 * daemon offers the others. The split follows Linux's fs/overlayfs:
 *
 *   config.c   -o options and modes          inum.c     st_ino numbering
 *   node.c     node table, references        lookup.c   resolving a name across the layers
 *   metadir.c  SOURCE/.-: whiteouts, records copyup.c   copying an original object up
 *   dir.c      create/link/unlink/rename     readdir.c  merged listings
 *   attr.c     getattr/setattr/vstat/access  xattr.c    extended attributes
 *   file.c     open and file I/O             ops.c      the FUSE operation table, init
 *   journal.c  the rename journal in the work area (a crash mid-rename is finished at mount)
 *   mount.c    set-up and mount (callable from a launcher, see viewfs.h)
 *   serve.c    the serving loop (leader/follower threads)
 *
 * Locking, in the order they may be taken:
 *   node->copyup_lock  (one regular file being copied into the layer: no other lock held)
 *   fs->ns_lock        (rwlock: read to look at names, nodes and the layer; write to change
 *                       them. File data I/O on open handles takes no lock at all.)
 *   fs->meta_lock      (filling a directory's cached .- listing or a record under a read lock)
 *   fs->table_lock     (the node hash table and reference counts)
 * A copy-up is done without ns_lock for the data and with the write lock for the rename into
 * place, so copying a large file never stalls lookups elsewhere. */
#ifndef VIEWFS_FS_H
#define VIEWFS_FS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"
#include "record.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <limits.h>
#include <sys/stat.h>

enum layer { LOWER = 0, UPPER = 1 };

/* The except= paths as a trie of names: a directory node on such a path points into it. */
struct except_node {
	char *name;
	bool terminal; /* this path (and everything under it) is the original */
	struct except_node *child, *next;
};

/* One name in the cached listing of SOURCE/.-/DIR. */
enum {
	META_WHITEOUT = 1u << 0, /* regular file .-/DIR/NAME: NAME is deleted */
	META_RECORD = 1u << 1,   /* .-/DIR/NAME\x7f (or the long-name form): a record */
	META_SUBDIR = 1u << 2,   /* directory .-/DIR/NAME: metadata of NAME's children */
};
struct metaent {
	struct metaent *next;
	unsigned flags;
	bool rec_loaded;
	bool rec_shared;       /* a hard-linked record: another name may rewrite it, read it anew */
	int rec_error;         /* -EIO when the record is corrupt */
	struct vrecord rec;
	char name[];           /* the view name (for records of long names: their key) */
};
struct metadir {
	/* O_PATH fd of SOURCE/.-/DIR: -1 when it does not exist, FD_EVICTED when closed to save
	 * fds (metadir.c reopens it through the parent's) */
	_Atomic int fd;
	struct viewfs *fs;
	size_t nbuckets, count;
	struct metaent **buckets;
};

struct vhandle;
struct dirhandle;

struct vnode {
	struct vnode *hnext;   /* hash chain, keyed by ino */
	struct vnode *all_prev, *all_next; /* every node, for the final clean-up */
	uint64_t ino;          /* st_ino in the view (inum.c) */
	uint64_t refs;         /* kernel lookups + children + temporary holds (table_lock) */
	struct vnode *parent;  /* the directory of `name` (for hard links: the last name used) */
	char *name;
	mode_t type;           /* S_IFMT as the view shows it */
	bool in_upper;         /* the layer holds it (for non-directories: serves it) */
	bool in_lower;         /* the original holds it and shows through */
	bool excepted;         /* at or under an except= path: always the original */
	bool unlinked;         /* its last known name was removed */
	/* Its last name was removed: the object is gone (or lives on only through open fds), and
	 * its inode number may already name a new file of the layer -- which must never be taken
	 * for this node (lookup.c, node_matches). */
	bool gone;
	bool hashed;           /* in the table (false once replaced by a newer node) */
	const struct except_node *except; /* directories on an except= path */
	/* O_PATH fds: directories always, other files when hard-linked or unlinked. -1: not in
	 * that layer; FD_EVICTED: closed to stay within the fd limit, reopened by node_fd(). */
	_Atomic int fd[2];
	dev_t fd_dev[2];       /* what fd[] named, to check a reopen finds the same directory */
	ino_t fd_ino[2];
	/* Non-directories: the real objects the node stands for, the original's (LOWER) and the
	 * layer's (UPPER; for an original name of a copied-up hard link, the index's copy). A
	 * name found again is given this node only when it is one of these objects (lookup.c,
	 * node_matches): the view's number alone comes from a record the user may edit, and a
	 * forged one must never make a name show another file's data. */
	struct node_obj {
		bool known;
		dev_t dev;
		ino_t ino;
	} obj[2];
	_Atomic uint64_t last_use;
	struct viewfs *fs;
	pthread_mutex_t copyup_lock;
	struct metadir *_Atomic meta; /* directories: .- listing, loaded on first use */
	struct vhandle *handles;      /* open files, for getattr after unlink (table_lock) */
	struct vrecord last_rec;      /* record of an unlinked node (getattr after unlink) */
	/* The index entry (SOURCE/.-/.-/index/KEY) that holds this file's shared record, and its
	 * data when it is a copied-up original with several names: set when the file has several
	 * names (hard links), NULL otherwise. */
	char *index_key;
};

/* An open file. */
struct vhandle {
	struct vhandle *next;
	struct vnode *node;
	int fd;
	enum layer layer;      /* where fd is */
	bool direct;           /* opened with O_DIRECT: aligned bounce buffers, no splice */
};

struct viewfs {
	struct viewfs_config *cfg;
	char *source;          /* SOURCE as given, for messages */
	int mode;
	bool vstat, wok, readonly, writeback, volatile_layer;
	bool in_view;  /* the root of a view (launcher.c): the kernel checks every caller's
			* permissions against what the view shows (default_permissions) */
	double timeout;
	int lower_root, upper_root; /* O_PATH fds opened before the mount */
	int work_fd;           /* SOURCE/.-/.- (temporary files), -1 when the layer is read-only */
	/* SOURCE/.-/.-/index: its cached listing (shared records, copies of hard links); its fd
	 * is -1 until the directory exists */
	struct metadir *index;
	dev_t lower_dev, upper_dev;
	uid_t uid;             /* the daemon's own ids: owners of what it creates */
	gid_t gid;
	struct except_node *except_root;
	struct vnode *root;
	pthread_rwlock_t ns_lock;
	pthread_mutex_t meta_lock;
	pthread_mutex_t table_lock;
	struct vnode **table;
	struct vnode *all;
	struct dirhandle *dirhandles;
	size_t table_size, table_count;
	pthread_mutex_t inum_lock;
	dev_t inum_class[256]; /* st_dev per class (inum.c) */
	bool inum_used[256];
	atomic_uint_fast64_t tmp_counter;
	/* The mount point as a name in its parent directory: where a layer that contains the
	 * mount point would lead the daemon into its own mount (lookup.c, self_entry()). */
	char *mp_name;
	dev_t mp_parent_dev;
	ino_t mp_parent_ino;
	bool mp_covers_mount;  /* the mount point was itself a mount: show that one instead */
	struct fuse_session *se; /* for notifications to the kernel */
	/* Directory fds of nodes (node.c): how many are open, how many may be */
	atomic_long node_fds;
	long fd_budget;
	atomic_bool evict_wanted;
	atomic_uint_fast64_t tick;
	atomic_int corrupt_logged;
};

/* Locking helpers (abort on error: a broken lock is a bug, not a condition to report). */
void ns_read(struct viewfs *fs);
void ns_write(struct viewfs *fs);
void ns_unlock(struct viewfs *fs);

/* Modes, as questions. */
static inline bool fs_union(const struct viewfs *fs) { return viewfs_mode_is_union(fs->mode); }
static inline bool fs_cowlike(const struct viewfs *fs)
{
	return viewfs_mode_writes_layer(fs->mode);
}
/* The errors after which mincow does virtually what it could not do for real. */
static inline bool refused(int err) { return err == EACCES || err == EPERM || err == EROFS; }

/* --- inum.c --- */
uint64_t vfs_ino(struct viewfs *fs, dev_t dev, ino_t ino);

/* --- node.c --- */
int node_table_init(struct viewfs *fs);
void node_table_free(struct viewfs *fs);
struct vnode *node_alloc(const char *name, mode_t type);
/* The node for a FUSE nodeid. */
struct vnode *node_from_id(struct viewfs *fs, fuse_ino_t id);
fuse_ino_t node_id(struct viewfs *fs, struct vnode *n);
/* Find by view ino (no reference taken; table_lock held by caller). */
struct vnode *node_find_locked(struct viewfs *fs, uint64_t ino);
void node_insert_locked(struct viewfs *fs, struct vnode *n);
void node_unhash_locked(struct viewfs *fs, struct vnode *n);
void node_ref(struct viewfs *fs, struct vnode *n);
void node_unref(struct viewfs *fs, struct vnode *n, uint64_t count);
/* Change the name of n (ns write lock held). */
int node_set_name(struct viewfs *fs, struct vnode *n, struct vnode *parent, const char *name);
/* The directory fd through which n's object in `layer` is reached, and the name to use with it
 * (for a node that holds its own fd: that fd and ""). -1 if n is not in that layer. */
int node_at(struct vnode *n, enum layer layer, const char **name);
/* Open n's object in `layer` with flags (O_PATH allowed; other opens are of regular files
 * only: EIO when something else stands at the name now). */
int node_open(struct vnode *n, enum layer layer, int flags);
/* fstatat of n's object in layer. */
int node_stat(struct vnode *n, enum layer layer, struct stat *st);
#define FD_EVICTED (-2)
/* n's O_PATH fd in layer l, reopened through its parent if it was closed to save fds; -1 (with
 * errno) when n is not in that layer or the reopen fails. ns lock held. */
int node_fd(struct vnode *n, enum layer l);
static inline bool node_has_fd(const struct vnode *n, enum layer l) { return n->fd[l] != -1; }
/* An fd kept by a node or a listing was opened (+1) or closed (-1). */
void fd_counted(struct viewfs *fs, int delta);
/* Give n the fd for layer l (counted, identity noted for reopens). */
void node_set_fd(struct viewfs *fs, struct vnode *n, enum layer l, int fd);
/* Close the least recently used directory fds (ns write lock held). */
void node_evict_fds(struct viewfs *fs);
/* The layer that serves n's data and attributes. */
static inline enum layer node_layer(const struct vnode *n) { return n->in_upper ? UPPER : LOWER; }
void node_close_fds(struct vnode *n);
/* Note the real object behind n in layer l (see vnode.obj). */
static inline void node_note_obj(struct vnode *n, enum layer l, const struct stat *st)
{
	n->obj[l] = (struct node_obj){ .known = true, .dev = st->st_dev, .ino = st->st_ino };
}

/* --- lookup.c --- */
struct resolved {
	bool in_upper, in_lower;
	bool excepted;
	const struct except_node *except;
	struct stat st;         /* the serving object (upper if present, else lower) */
	struct stat lst;        /* the original's object when it shows through */
	bool has_rec;
	struct vrecord rec;
	uint64_t ino;
	mode_t type;
	bool self[2];           /* the entry of a layer is the mount point (shows what it covers) */
	/* An original name of a file with several names whose copy is in the index: the view
	 * shows that copy (st is the copy's stat, lst the original's), and rec.link its key. */
	bool alias;
};
int except_build(struct viewfs *fs);
void except_free(struct except_node *e);
const struct except_node *except_child(const struct except_node *e, const char *name);
/* Resolve name in directory p across the layers (ns lock held). 0 or -errno. */
int resolve(struct viewfs *fs, struct vnode *p, const char *name, struct resolved *r);
void resolved_clear(struct resolved *r);
/* Resolve and return the node with one more kernel reference, its entry filled (ns lock held
 * for reading or writing). */
int lookup_entry(struct viewfs *fs, struct vnode *p, const char *name,
		 struct fuse_entry_param *e, struct vnode **out, bool wlocked);
/* The node the kernel knows for a resolved name, without a new reference (NULL if none). */
struct vnode *node_of_resolved(struct viewfs *fs, struct vnode *p, const char *name,
			       const struct resolved *r);
/* The original directory of a directory node as a path from the lower root ("" for the root);
 * malloc'ed. Only for nodes whose in_lower is true. */
char *lower_path(struct viewfs *fs, struct vnode *n);
/* Does the original have `name` in p (and does it show through p)? */
bool lower_has(struct viewfs *fs, struct vnode *p, const char *name, struct stat *st);
/* Open a renamed directory's original (a redirect record's path) beneath the lower root. */
int open_redirect(struct viewfs *fs, const char *path);
/* Is name in the directory behind dirfd the view's own mount point? */
bool self_entry(struct viewfs *fs, int dirfd, const char *name);
void entry_fill(struct viewfs *fs, struct fuse_entry_param *e, struct vnode *n,
		const struct stat *st);

/* --- metadir.c --- */
#define META_NAME ".-"
int meta_init(struct viewfs *fs);
void meta_free(struct metadir *m);
/* Close d's metadata directory fd to save fds (ns write lock held); 1 if one was closed. */
int meta_evict_fd(struct metadir *m);
/* The cached listing of .-/DIR for directory d, loaded on first use (ns lock held); NULL when
 * there is none or it cannot be read (meta_listing_error). */
struct metadir *meta_get(struct viewfs *fs, struct vnode *d);
/* 0, or -EIO (-ENOMEM) when d's listing cannot be read: then nothing in d may be looked up
 * or listed (its whiteouts would be ignored). meta_flags() is 0 for such a directory. */
int meta_listing_error(struct viewfs *fs, struct vnode *d);
unsigned meta_flags(struct viewfs *fs, struct vnode *d, const char *name);
/* The record of name in d: 1 with *rec filled (caller clears), 0 if none, -EIO if corrupt. */
int meta_record(struct viewfs *fs, struct vnode *d, const char *name, struct vrecord *rec);
/* The record of node n itself (through its parent; the root's own record for the root). */
int meta_node_record(struct viewfs *fs, struct vnode *n, struct vrecord *rec);
/* Changes (ns write lock held). */
int meta_write_record(struct viewfs *fs, struct vnode *d, const char *name,
		      const struct vrecord *rec);
int meta_write_node_record(struct viewfs *fs, struct vnode *n, const struct vrecord *rec);
int meta_set_whiteout(struct viewfs *fs, struct vnode *d, const char *name);
int meta_clear_whiteout(struct viewfs *fs, struct vnode *d, const char *name);
/* Remove the record of name and the metadata of everything under it. */
int meta_remove(struct viewfs *fs, struct vnode *d, const char *name);
int meta_move(struct viewfs *fs, struct vnode *d1, const char *n1, struct vnode *d2,
	      const char *n2, bool exchange);
int meta_link_record(struct viewfs *fs, struct vnode *d1, const char *n1, struct vnode *d2,
		     const char *n2);
/* Before `ln n1 n2`: make n1's record the index's shared record (its name record says link=)
 * and give n2 a name record pointing at it, so that a change through either name is one
 * write-aside-and-rename of the shared record. The shared record's key in *key (caller frees). */
int meta_share_record(struct viewfs *fs, struct vnode *s, struct vnode *d2, const char *n2,
		      char **key);
/* The name record of name in d as it is on disk (a link= record is not followed), formatted:
 * 1 with *text (malloc'ed), 0 when there is none, -errno. */
int meta_name_record_text(struct viewfs *fs, struct vnode *d, const char *name, char **text);
/* rmdir: the whiteout of name replaces, in one rename, the directory of its children's
 * metadata (SOURCE/.-/DIR/name/), whose old content is then removed from the work area. */
int meta_whiteout_replacing_children(struct viewfs *fs, struct vnode *d, const char *name);
/* The index (SOURCE/.-/.-/index): KEY\x7f a shared record, KEY the copy of an original with
 * several names. Keys of originals are their view inode numbers (meta_index_key). */
void meta_index_key(uint64_t ino, char key[VREC_KEY_MAX + 1]);
/* The shared record of key: 1 (rec filled, rec->link = key), 0 when there is none, -EIO. */
int meta_index_record(struct viewfs *fs, const char *key, struct vrecord *rec);
bool meta_index_has_data(struct viewfs *fs, const char *key);
int meta_index_stat(struct viewfs *fs, const char *key, struct stat *st);
int meta_index_open(struct viewfs *fs, const char *key, int flags);
/* Link the copy at fromdir/from into the index as key's data. */
int meta_index_add_data(struct viewfs *fs, int fromdir, const char *from, const char *key);
/* Replace key's shared record (link= is not stored). */
int meta_index_write(struct viewfs *fs, const char *key, const struct vrecord *rec);
/* Link key's copy in the index to dirfd/name. */
int meta_index_link(struct viewfs *fs, const char *key, int dirfd, const char *name);
/* The last name of a file born in the layer is gone: drop its shared record. */
void meta_index_release(struct viewfs *fs, const char *key);
/* The record file's name of a name (name + 0x7F, or the hashed form for long names). */
void meta_record_file(const char *name, char file[NAME_MAX + 3]);
/* rm -r of name in the directory fd parent, without following symlinks. */
int meta_remove_tree(int parent, const char *name);
/* Open the regular file dirfd/name of the layer with flags (no O_CREAT): never a FIFO (no
 * open that blocks), device, socket or symlink -- those fail with EINVAL. */
int layer_open_regular(int dirfd, const char *name, int flags);
/* Make a whiteout at mfd/name (a regular file there already is one; a FIFO, socket, device or
 * symlink there is replaced without being opened; a directory gives EISDIR). */
int meta_whiteout_at(struct viewfs *fs, int mfd, const char *name);
/* Write buf into a new file of the work area and rename it to dirfd/name. */
int meta_write_aside(struct viewfs *fs, int dirfd, const char *name, const char *buf, size_t len);
/* A new file in the work area (SOURCE/.-/.-): returns an fd open O_RDWR and its name. */
int work_create(struct viewfs *fs, char *name, size_t namelen, mode_t mode);
/* A name for something to be created in the work area. */
void work_name(struct viewfs *fs, char *name, size_t namelen);
/* Does a name need refusing in the layer (names ending in 0x7F are record names)? */
bool name_reserved(struct viewfs *fs, struct vnode *d, const char *name);

/* --- journal.c --- */
/* One rename whose metadata must follow its data (docs/viewfs-layer-format.md, "Atomicity"):
 * written before the data moves, removed once the metadata is in place; a journal found at
 * mount is finished (when the data had moved) or dropped (when it had not). */
struct journal {
	char *from, *to;      /* view paths of the two names ("/a/b") */
	char *orig_from;      /* the data moved in the original (mincow): its path there */
	char *record;         /* the name record `to` ends with (file text); NULL: none */
	bool whiteout;        /* `from` ends with a whiteout */
	bool children;        /* SOURCE/.-/from/ (children's metadata) ends at SOURCE/.-/to/ */
};
int journal_begin(struct viewfs *fs, const struct journal *j);
void journal_end(struct viewfs *fs);
void journal_clear(struct journal *j);
/* At mount, before the root's listing is read: finish or drop a journal left by a crash. 0, or
 * -errno when one is there but cannot be read (then no mount: a rename may be half done). */
int journal_replay(struct viewfs *fs, int meta_root);
/* The view path of name in directory d ("/a/b/name"); malloc'ed. */
char *view_path(struct viewfs *fs, struct vnode *d, const char *name);

/* --- copyup.c --- */
/* Copy non-directory n into the layer (no lock held by the caller). keep: bytes of data to
 * copy (-1: all, 0: none, as for O_TRUNC). */
int copy_up(struct viewfs *fs, struct vnode *n, off_t keep);
/* Make sure directory d exists in the layer, creating its parents (ns write lock held). */
int ensure_upper_dir(struct viewfs *fs, struct vnode *d);
/* Copy the extended attributes of one open file to another (best effort). */
void copy_xattrs(int from, int to);

/* --- attr.c --- */
/* The view's stat of n (ns lock held). */
int node_getattr(struct viewfs *fs, struct vnode *n, struct stat *st);
/* Apply a record on a real stat. */
void apply_record(struct viewfs *fs, struct stat *st, const struct vrecord *rec, bool merged_dir);
void attr_ops(struct fuse_lowlevel_ops *ops);

/* --- dir.c, readdir.c, xattr.c, file.c --- */
void dir_ops(struct fuse_lowlevel_ops *ops);
void readdir_ops(struct fuse_lowlevel_ops *ops);
void readdir_free_all(struct viewfs *fs);
void xattr_ops(struct fuse_lowlevel_ops *ops);
void file_ops(struct fuse_lowlevel_ops *ops);
/* Is the directory empty as the view shows it? 1 yes, 0 no, -errno. */
int dir_empty_in_view(struct viewfs *fs, struct vnode *d);
/* Create a regular file as create(2) does (dir.c), for file.c's create. */
int dir_create_file(struct viewfs *fs, fuse_req_t req, struct vnode *p, const char *name,
		    mode_t mode, int flags, struct fuse_entry_param *e, int *fd_out,
		    struct vnode **node_out, enum layer *layer_out);
/* Register an open file on its node (file.c). */
struct vhandle *handle_new(struct viewfs *fs, struct vnode *n, int fd, enum layer layer,
			   bool direct);
/* Open flags for a real file behind a kernel open (write-back cache rules, file.c). */
int real_open_flags(struct viewfs *fs, int flags);

/* The virtual owner of an object created by this request: the caller's ids (vstat). */
void request_ids(fuse_req_t req, uid_t *uid, gid_t *gid);

/* serve.c: about to do something slow (a copy-up, large I/O, fsync): let another thread read
 * the next requests meanwhile. */
void viewfs_serve_yield(void);
/* An original the user may not read is taken as empty (vstat in cow/mincow, see lookup.c). */
bool unreadable_is_empty(const struct viewfs *fs, int err);

/* Log a corrupt record once per run (a broken layer must not flood the log). */
void report_corrupt(struct viewfs *fs, struct vnode *d, const char *name, const char *why);

#endif
