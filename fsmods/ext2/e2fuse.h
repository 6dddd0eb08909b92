/* What the parts of umfuse-ext2 share: the mounted file system, its node table, and the
 * functions each file (one concern each) offers the others.
 *
 *   umfuse-ext2.c  options, start/stop, the table of FUSE operations
 *   volume.c       open/close the file system, feature policy, commit, statfs, errors
 *   bcache.c       metadata block cache;  io_manager.c  libext2fs on the block layer
 *   nodes.c        inodes the kernel knows (lookup counts, deferred release), attributes
 *   dir.c          directories: lookup, insert, remove, iterate, per-directory name index
 *   dirblock.c     the format of one directory block (pure; unit-tested and fuzzed)
 *   data.c         file data: block mapping, read, write, truncate, fallocate, seek
 *   xattr.c        extended attributes; acl.c  POSIX ACL rules (pure: inheritance, chmod)
 *   ops_*.c        the FUSE low-level operations, one file per family
 *
 * Locking: libext2fs is not thread-safe, so every call into it (and every use of the node
 * table, the directory indexes and the block cache) happens under e2->lock. The kernel side is
 * kept fast instead: long attribute/entry timeouts (this daemon is the only writer), negative
 * entries cached, readdirplus, keep_cache, 1 MiB requests, and no open/release traffic.
 * docs/ext2.md tells the whole story. */
#ifndef UMFUSE_EXT2_E2FUSE_H
#define UMFUSE_EXT2_E2FUSE_H

#include "bcache.h"
#include "block.h"

#include <ext2fs/ext2fs.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#define E2_NAME "umfuse-ext2"

/* -o options of the daemon (see the table in umfuse-ext2.c). */
struct e2_config {
	int norecovery;         /* with ro: mount even if the journal needs recovery */
	int writeback;          /* kernel writeback cache */
	int acl;                /* POSIX ACLs (default on) */
	int user_xattr;         /* accepted for fstab compatibility: user xattrs are always on */
	unsigned commit;        /* seconds between automatic commits; 0 = only on fsync/unmount */
	int flush;              /* a close writes what the file changed (default on) */
	uint64_t cache_size;    /* metadata cache, bytes */
	unsigned timeout;       /* attribute/entry timeout, seconds */
};

struct dir_index;

/* An inode the kernel holds (lookup count > 0), or one we are working on. */
struct node {
	ext2_ino_t ino;
	uint64_t nlookup;
	bool unlinked;            /* link count reached 0: free it when the kernel forgets it */
	struct dir_index *dindex; /* directories: the name index, built on first use */
	/* the last extent found by data_map (valid until the block map changes) */
	bool map_valid, map_uninit;
	uint64_t map_lblk, map_len, map_pblk;
	bool map_checked;         /* data_check_tree found the whole map sound */
	bool written;             /* created, written or resized since the last FLUSH of it */
	struct node *hnext;
};

struct node_table {
	struct node **buckets;
	size_t nbuckets, count;
};

struct e2 {
	ext2_filsys fs;
	struct vo_block *dev;
	struct bcache *cache;
	char *source;
	pthread_mutex_t lock;
	struct e2_config cfg;
	bool readonly;
	bool opened;              /* e2_open succeeded */
	bool marked;              /* marked "not clean" (at the kernel's INIT): close may write */
	bool writeback_cache;     /* granted by the kernel in init */
	bool posix_acl;           /* granted by the kernel in init */
	bool noatime;
	bool no_open, no_opendir; /* the kernel may skip open/opendir (we keep no state) */
	double timeout;
	uint64_t overhead_blocks; /* statfs: metadata blocks not counted as capacity */
	uint64_t resv_blocks;     /* statfs: what the kernel keeps back from f_bavail */
	uint64_t max_file_size;
	/* Where the superblocks, descriptors, bitmaps and inode tables are: blocks no file may
	 * map (sorted, disjoint runs) */
	struct e2_zone { uint64_t start, len; } *meta;
	size_t nmeta;
	uint32_t next_generation;
	uint16_t mount_state;     /* s_state before we marked it "not clean" */
	struct node_table nodes;
	/* the committer thread */
	pthread_t committer;
	bool committer_running, stopping;
	pthread_cond_t commit_cond;
	bool dirty;               /* something changed since the last commit */
	/* inodes unlinked while the kernel held them, freed on its FORGET */
	uint64_t unlinked_waiting, released_total;
	struct dir_index *dirty_dirs;  /* directories whose cached block awaits writing */
	pthread_cond_t released_cond;
	bool single_thread;
};

static inline void e2_lock(struct e2 *e)
{
	pthread_mutex_lock(&e->lock);
}

static inline void e2_unlock(struct e2 *e)
{
	pthread_mutex_unlock(&e->lock);
}

/* FUSE's root is node 1; ext2's root directory is inode 2 (inode 1 holds bad blocks and never
 * appears in a directory). Every other number is the same on both sides. */
static inline ext2_ino_t e2_ino(fuse_ino_t n)
{
	return n == FUSE_ROOT_ID ? EXT2_ROOT_INO : (ext2_ino_t)n;
}

static inline fuse_ino_t e2_fuse_ino(ext2_ino_t ino)
{
	return ino == EXT2_ROOT_INO ? FUSE_ROOT_ID : ino;
}

/* ---- volume.c ---- */
int e2_open(struct e2 *e, const char *source, bool readonly_requested);
/* A read-write mount is served: mark the file system "not clean" until unmount (a mount
 * that fails before the kernel's INIT leaves the image untouched). */
int e2_mark_mounted(struct e2 *e);
int e2_close(struct e2 *e);                 /* commit, mark clean, free; 0 or -errno */
int e2_commit(struct e2 *e);                /* make everything durable; under the lock */
/* Write every change to the source without making the source durable (what a close needs:
 * see op_flush). Under the lock. */
int e2_writeout(struct e2 *e);
void e2_mark_dirty(struct e2 *e);
int e2_errno(struct e2 *e, errcode_t err, const char *what, ext2_ino_t ino);
/* True when [pblk, pblk+len) is not all inside the file system's data area: outside the file
 * system, or overlapping its metadata (a damaged block map points there). */
bool e2_bad_blocks(struct e2 *e, uint64_t pblk, uint64_t len);
void e2_statfs(struct e2 *e, struct statvfs *st);
int e2_start_committer(struct e2 *e);
void e2_stop_committer(struct e2 *e);
/* How many blocks the caller may allocate: what the kernel's ext4 allows (non-root callers
 * leave the root reserve alone, nobody takes ext4's own small reserve for data). */
uint64_t e2_alloc_budget(struct e2 *e, const struct fuse_ctx *ctx);

/* ---- nodes.c ---- */
struct node *node_find(struct e2 *e, ext2_ino_t ino);
struct node *node_get(struct e2 *e, ext2_ino_t ino); /* find or create (lookup count 0) */
void node_ref(struct e2 *e, ext2_ino_t ino);
void node_forget(struct e2 *e, ext2_ino_t ino, uint64_t n);
void node_table_free(struct e2 *e);
void node_release_unlinked(struct e2 *e);   /* at unmount: free what the kernel still held */
/* ENOSPC while unlinked inodes wait for the kernel's FORGET (usually already queued, behind
 * the request that failed): wait for one to be freed, briefly. True: try again. */
bool e2_wait_for_released(struct e2 *e);

int ino_read(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in);
int ino_write(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in);
void ino_stat(struct e2 *e, ext2_ino_t ino, const struct ext2_inode_large *in, struct stat *st);
uid_t ino_uid(const struct ext2_inode_large *in);
gid_t ino_gid(const struct ext2_inode_large *in);
void ino_set_uid(struct ext2_inode_large *in, uid_t uid);
void ino_set_gid(struct ext2_inode_large *in, gid_t gid);
dev_t ino_rdev(const struct ext2_inode_large *in);
enum ino_time { T_ATIME, T_MTIME, T_CTIME, T_CRTIME };
void ino_set_time(struct ext2_inode_large *in, enum ino_time which, struct timespec ts);
struct timespec ino_get_time(const struct ext2_inode_large *in, enum ino_time which);
struct timespec e2_now(void);
void ino_touch(struct ext2_inode_large *in, bool mtime, bool ctime);
/* True when the inode has no extended attribute at all (no attribute block, no in-inode
 * attributes): lets the common case skip libext2fs' xattr machinery. */
bool ino_has_no_xattrs(struct e2 *e, ext2_ino_t ino);
/* Allocate and write a new inode (not yet linked anywhere). */
int ino_create(struct e2 *e, ext2_ino_t parent, mode_t mode, uid_t uid, gid_t gid, dev_t rdev,
	       ext2_ino_t *ino, struct ext2_inode_large *in);
/* Before the last link of an inode goes: can it be freed? -EIO when its block map or its
 * attribute block is damaged (freeing would release blocks that are not its own). */
int ino_check_release(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in);
/* Free an inode with no links: its blocks, its xattr block, its bitmap bit. */
int ino_release(struct e2 *e, ext2_ino_t ino);
/* The last name of ino went away (its link count, already written, is 0): free it now, or
 * when the kernel forgets it if it still holds it. */
int ino_unlinked(struct e2 *e, ext2_ino_t ino);
/* Directory link counts as ext4 keeps them (dir_nlink: 1 means "too many to count"). */
int ino_dir_link_inc(struct e2 *e, struct ext2_inode_large *dir);
void ino_dir_link_dec(struct ext2_inode_large *dir);
int e2_file_type(mode_t mode); /* EXT2_FT_* for a directory entry */
void ino_atime_on_access(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in);
/* Writing or truncating a file by someone without CAP_FSETID (here: not root) drops setuid,
 * and setgid when group-executable; chown drops them for everyone (as the kernel does). */
void ino_kill_suid(struct ext2_inode_large *in, const struct fuse_ctx *ctx, bool chown);

/* ---- dir.c ---- */
/* name_len <= 255 and no '/' is the caller's business. */
int dir_lookup(struct e2 *e, ext2_ino_t dir, const char *name, ext2_ino_t *ino);
int dir_add(struct e2 *e, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype);
int dir_remove(struct e2 *e, ext2_ino_t dir, const char *name);
int dir_retarget(struct e2 *e, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype);
int dir_set_dotdot(struct e2 *e, ext2_ino_t dir, ext2_ino_t parent);
int dir_is_empty(struct e2 *e, ext2_ino_t dir); /* 1, 0 or -errno */
/* Write the first block ("." and "..") of a new directory and map it. */
int dir_init(struct e2 *e, ext2_ino_t dir, struct ext2_inode_large *in, ext2_ino_t parent);
/* Call fn for each entry at or after position pos; fn returns nonzero to stop (the entry is then
 * not consumed). next is the position after the entry. */
typedef int (*dir_fn)(void *arg, const char *name, size_t namelen, ext2_ino_t ino, int ftype,
		      uint64_t next);
int dir_iterate(struct e2 *e, ext2_ino_t dir, uint64_t pos, dir_fn fn, void *arg);
/* Write the index's cached directory block back (a forgotten directory), or forget it unwritten
 * (a freed one: its blocks may already belong to someone else). */
int dir_index_flush(struct e2 *e, struct dir_index *di);
void dir_index_drop(struct e2 *e, struct dir_index *di);
int dir_flush_all(struct e2 *e);          /* before libext2fs flushes: see dir.c */

/* ---- data.c ---- */
int data_map(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t lblk,
	     uint64_t max, uint64_t *pblk, uint64_t *len, bool *uninit);
ssize_t data_read(struct e2 *e, struct node *n, struct ext2_inode_large *in, char *buf,
		  size_t size, uint64_t off);
ssize_t data_write(struct e2 *e, struct node *n, struct ext2_inode_large *in,
		   const struct fuse_ctx *ctx, const char *buf, size_t size, uint64_t off);
int data_truncate(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t size);
int data_fallocate(struct e2 *e, struct node *n, struct ext2_inode_large *in,
		   const struct fuse_ctx *ctx, int mode, uint64_t off, uint64_t len);
int data_seek(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t off,
	      int whence, uint64_t *result);
/* Allocate and map blocks [lblk, lblk+count) of a file that are holes; uninit: as unwritten
 * extents. Returns how many leading blocks are mapped (count on success) or -errno when not
 * even the first could be. */
int64_t data_alloc(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t lblk,
		   uint64_t count, bool uninit, bool zero);
void data_map_invalidate(struct node *n);
/* Every block an inode maps at or after logical block `from` (and every extent-tree or
 * indirect block) lies in the file system's data area: 0, or -EIO (said in the log). A change
 * through a damaged map would write into, or free, whatever it points at. */
int data_check_map(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in, uint64_t from);
/* The same for the whole map of a node, remembered until the node's inode is freed. */
int data_check_tree(struct e2 *e, struct node *n, struct ext2_inode_large *in);

/* ---- xattr.c ---- */
int xattr_get(struct e2 *e, ext2_ino_t ino, const char *name, void **value, size_t *size);
int xattr_set(struct e2 *e, ext2_ino_t ino, const char *name, const void *value, size_t size,
	      int flags);
int xattr_remove(struct e2 *e, ext2_ino_t ino, const char *name);
int xattr_list(struct e2 *e, ext2_ino_t ino, char **list, size_t *size);
/* POSIX ACL upkeep around create and chmod (see acl.h for the rules). A new inode of dir
 * gets dir's default ACL (and its mode masked by it) or, without one, the umask. */
int xattr_inherit_acl(struct e2 *e, ext2_ino_t dir, ext2_ino_t ino,
		      struct ext2_inode_large *in, mode_t umask, bool *has_default);
int xattr_chmod_acl(struct e2 *e, ext2_ino_t ino, mode_t mode);

/* ---- the FUSE operations (ops_*.c) ---- */
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		struct fuse_file_info *fi);
void op_readlink(fuse_req_t req, fuse_ino_t ino);
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi);
void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi);
void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		  struct fuse_file_info *fi);
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);
void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		 size_t size, int flags);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

/* Reply an entry for ino (read from disk) and count the lookup. Under the lock. */
int e2_fill_entry(struct e2 *e, ext2_ino_t ino, struct fuse_entry_param *ep);

static inline struct e2 *e2_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

#endif
