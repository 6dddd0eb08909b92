/* The volume: a FAT file system opened on a block source, its in-memory nodes (files and
 * directories the kernel knows), and the operations the FUSE glue calls.
 *
 * Layers underneath: fat_bpb (boot sector), fat_table (the FAT in memory), fat_dir (one
 * directory's entries and names), fat_names, fat_time. Hand-written, see umfuse-fat.c.
 *
 * Concurrency: one mutex (vol->lock) covers all metadata — the FAT, directories, nodes, the
 * inode-number maps. File data moves outside it: each node has an rwlock (io) that reads take
 * shared and writes and truncations take exclusively, always before vol->lock, never after.
 *
 * Durability: file data goes to the source before a write returns. What an operation changes
 * in the FAT and in directories is written back within opt.commit seconds by a flusher
 * thread, and at once by fsync (which then flushes the source) and by the unmount: one write
 * of a directory cluster or a FAT sector then carries many operations (an untar changes each
 * several times per file). The dirty flag is set while mounted read-write and cleared, with
 * the FSInfo counters written, on a clean unmount.
 *
 * Names starting with vol_ expect vol->lock held; fat_vol_* and fat_file_* take it themselves. */
#ifndef FAT_VOLUME_H
#define FAT_VOLUME_H

#include "block.h"
#include "fat_bpb.h"
#include "fat_claims.h"
#include "fat_dir.h"
#include "fat_names.h"
#include "fat_table.h"
#include "fat_u64map.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#define FAT_MAX_FILE_SIZE 0xFFFFFFFFull

struct fat_mount_options {
	unsigned uid, gid;       /* owner of every file */
	unsigned fmask, dmask;   /* permission bits taken away from files / directories */
	unsigned codepage;       /* OEM code page of short names */
	enum fat_shortname_mode shortname;
	bool utc;                /* timestamps in UTC instead of local time */
	bool showexec;           /* x bits only on .EXE, .COM and .BAT files */
	bool rodir;              /* the read-only attribute also applies to directories */
	bool readonly;
	unsigned commit;         /* seconds between write-backs; 0: only at fsync and unmount */
	bool noxattr;            /* no extended attributes at all (the kernel stops asking) */
};

struct fat_node {
	struct fat_node *parent; /* holds a reference; NULL for the root */
	uint32_t slot;           /* short entry in parent->dir */
	uint64_t ino;            /* st_ino: stable for the life of the file, see fat_volume.c */
	uint64_t nlookup;        /* references the kernel holds */
	uint32_t refs;           /* ours: children, open handles, operations under way */
	uint32_t nopen;          /* open handles: an unlinked file keeps its clusters until 0 */
	bool is_dir;
	bool deleted;            /* its entry is gone (unlinked or replaced, still open) */
	bool released;           /* deleted and its clusters freed: an open gets ESTALE */
	bool pending;            /* on vol->pending (see vol_release_deleted) */
	struct fat_node *pend_prev, *pend_next;
	bool chain_bad;          /* its cluster chain is broken: data access gives EIO */
	bool chain_shared;       /* its chain holds a cluster something else claims too
				    (fat_claims.h): it reads, but every change gives EIO */
	bool size_mismatch;      /* a file whose chain is longer or shorter than its size
				    needs: it reads (up to the size, as far as the chain
				    goes), but every change gives EIO */
	bool dirty_listed;       /* on vol->dirty_dirs */
	uint8_t de[FAT_ENTRY_SIZE]; /* its short entry; the copy in the parent follows it */
	struct fat_extents ext;  /* its clusters */
	struct fat_dir *dir;     /* a directory's entries, once read */
	pthread_rwlock_t io;
	struct fat_node *prev, *next; /* every node of the volume, to free them all at the end */
};

struct fat_volume {
	struct vo_block *dev;
	struct fat_geometry g;
	struct fat_table fat;
	struct fat_claims claims; /* read-write: the clusters to keep hands off */
	uint8_t *fat_differs;     /* read-write: FAT blocks whose copies disagreed at mount (one
				     bit per FAT_DIRTY_BLOCK), NULL when none did */
	struct fat_codepage cp;
	struct fat_mount_options opt;
	pthread_mutex_t lock;
	struct fat_node *root;
	bool readonly;
	bool was_dirty;          /* not cleanly unmounted before: leave the flag for fsck */
	bool state_set;          /* we set the dirty flag and owe clearing it */
	uint8_t *boot;           /* the boot sector as read (sector_size bytes) */
	uint32_t fsinfo_free;    /* what FSInfo said at mount (FSINFO_UNKNOWN: nothing valid) */
	uint32_t free_at_mount;  /* what the FAT said at mount */
	struct fat_u64map ino_by_loc, loc_by_ino; /* renamed files keep their inode number */
	uint64_t next_ino;       /* for numbers the location cannot give */
	pthread_t flusher;       /* writes metadata back every opt.commit seconds */
	pthread_cond_t flusher_cond;
	bool flusher_running, flusher_stop;
	struct fat_node **dirty_dirs;
	size_t ndirty, dirty_cap;
	/* Called (vol->lock held) with a name the kernel may still cache for an entry that was
	 * just removed or renamed through another spelling of it (another case, or its short
	 * name): the kernel updated the dentry it was given, not that one. NULL: nobody cares. */
	void (*stale_name)(struct fat_volume *vol, struct fat_node *parent, const char *name);
	struct fat_node *nodes;  /* list of every node (the root first) */
	struct fat_node *pending; /* deleted files nobody has open that the kernel still knows:
				     their clusters count as free and go at the forget, or at
				     once when an allocation needs them */
	uint64_t nnodes;
};

/* Open the file system on dev (taken over; closed by fat_volume_close). Checks the boot sector,
 * reads the FAT, sets the dirty flag when read-write. On failure returns NULL with a reason in
 * why ("not a FAT file system (bytes per sector is 1000)"). */
struct fat_volume *fat_volume_open(struct vo_block *dev, const struct fat_mount_options *opt,
				   char *why, size_t whylen);
/* Free the clusters of unlinked files still open, write FSInfo, clear the dirty flag (unless it
 * was set before we mounted), flush the source, free everything. Returns 0 or -errno of the
 * first write that failed. */
int fat_volume_close(struct fat_volume *vol);
/* Write everything back and flush the source to stable storage (fsync, fsyncdir). Takes
 * vol->lock for the write-back only, not for the flush. */
int fat_volume_sync(struct fat_volume *vol);

/* --- nodes (vol->lock held) --- */
void vol_node_get(struct fat_node *n);
void vol_node_put(struct fat_volume *vol, struct fat_node *n);
/* The kernel took count references / gave them back (forget). */
void vol_node_lookup_ref(struct fat_node *n);
void vol_node_forget(struct fat_volume *vol, struct fat_node *n, uint64_t count);
/* The node for the entry at slot of directory node dir (created if needed); returns it with
 * a reference taken (refs), or NULL with *err (-ENOMEM). */
struct fat_node *vol_child(struct fat_volume *vol, struct fat_node *dir, uint32_t slot, int *err);
/* Read a directory's entries if not done yet. 0, -EIO, -ENOMEM. */
int vol_load_dir(struct fat_volume *vol, struct fat_node *dir);
/* Attributes as the kernel sees them. */
void vol_stat(const struct fat_volume *vol, const struct fat_node *n, struct stat *st);
void vol_statfs(const struct fat_volume *vol, struct statvfs *sv);
/* An operation is complete: what it changed is written back soon (see Durability above).
 * Kept at the end of every operation as the place where a write-through policy would go. */
int vol_commit(struct fat_volume *vol);
/* Write every pending change of directories and the FAT now. 0 or the first -errno. */
int vol_writeback(struct fat_volume *vol);
/* A directory's entries changed (fat_dir_* calls): put it on the commit list. */
void vol_dir_changed(struct fat_volume *vol, struct fat_node *dir);
/* Copy n->de into its parent's directory and mark it for the commit. -EIO (and nothing
 * stored) when the parent directory shares clusters with something else: writing the entry
 * would change that other file's or directory's bytes. */
int vol_node_store(struct fat_volume *vol, struct fat_node *n);
/* May n's clusters and its entry be changed? 0, or -EIO when its chain is broken, shares
 * clusters or disagrees with its size, or when its entry lies in a directory that shares
 * clusters. */
int vol_node_changeable(const struct fat_node *n);
/* Stamp times on a short entry: mask of FAT_TIME_* with the current time. */
#define FAT_TIME_M 1 /* modification */
#define FAT_TIME_A 2 /* access (date only) */
#define FAT_TIME_C 4 /* change time, kept in the creation-time field as Linux vfat does */
void vol_touch(const struct fat_volume *vol, uint8_t *de, unsigned mask, const struct timespec *now);
uint32_t vol_first_cluster(const struct fat_volume *vol, const uint8_t *de);
void vol_set_first_cluster(const struct fat_volume *vol, uint8_t *de, uint32_t c);
/* A deleted node's clusters go once nothing has it open, and for a file once the kernel has
 * forgotten it too (until then it is pending: counted free, taken back when space runs out).
 * Call after each change of nopen or nlookup of a deleted node. */
void vol_release_deleted(struct fat_volume *vol, struct fat_node *n);
/* A pending node is opened again: its clusters are its own again. */
void vol_node_reopened(struct fat_volume *vol, struct fat_node *n);
/* Clusters free for new data: the FAT's free ones and those of pending nodes. */
uint32_t vol_free_clusters(const struct fat_volume *vol);
/* fat_alloc, taking pending nodes' clusters back first when the free ones do not suffice. */
int vol_alloc(struct fat_volume *vol, uint32_t last, uint32_t n, struct fat_extents *ext);
/* Zero count clusters on the source (new directory clusters). */
int vol_zero_clusters(struct fat_volume *vol, uint32_t first, uint32_t count);
/* Write bytes [lo, hi) of a directory's raw entries to its clusters. */
int vol_write_dir_range(struct fat_volume *vol, struct fat_node *dir, size_t lo, size_t hi);
/* The inode number for the entry at slot of dir (a new or an existing entry). */
uint64_t vol_ino_for(struct fat_volume *vol, struct fat_node *dir, uint32_t slot,
		     const uint8_t *de);
/* Byte offset of a directory slot on the source (its "location"). */
uint64_t vol_slot_location(const struct fat_volume *vol, const struct fat_node *dir,
			   uint32_t slot);
/* A file moved from one location to another keeps its inode number. */
void vol_ino_moved(struct fat_volume *vol, uint64_t ino, uint64_t from, uint64_t to);
/* An entry is gone: forget the inode number kept for its location. */
void vol_ino_dropped(struct fat_volume *vol, uint64_t loc);
/* The file numbered ino now lives at loc (after a rename or an exchange). */
void vol_ino_set(struct fat_volume *vol, uint64_t ino, uint64_t loc);

/* --- the namespace (fat_namespace.c); each takes vol->lock --- */
/* Look name up in dir: the child with a kernel reference taken. */
int fat_vol_lookup(struct fat_volume *vol, struct fat_node *dir, const char *name,
		   struct fat_node **out, bool *exact);
int fat_vol_create(struct fat_volume *vol, struct fat_node *dir, const char *name, bool is_dir,
		   struct fat_node **out);
int fat_vol_unlink(struct fat_volume *vol, struct fat_node *dir, const char *name);
int fat_vol_rmdir(struct fat_volume *vol, struct fat_node *dir, const char *name);
int fat_vol_rename(struct fat_volume *vol, struct fat_node *dir, const char *name,
		   struct fat_node *newdir, const char *newname, unsigned flags);

/* --- file data (fat_file.c); each takes n->io then vol->lock --- */
/* Where file bytes [off, off+size) lie on the source, for a read that moves the bytes itself
 * (splice): up to max runs of (source offset, length). Returns the bytes mapped (0 at the end
 * of the file, short when the file ends or runs are too many) or -errno. On success n->io is
 * left held for reading: call fat_file_unmap(n) once the bytes are moved. */
struct fat_run {
	uint64_t pos;
	size_t len;
};
ssize_t fat_file_map(struct fat_volume *vol, struct fat_node *n, uint64_t off, size_t size,
		     struct fat_run *runs, size_t max, size_t *nruns);
void fat_file_unmap(struct fat_node *n);
ssize_t fat_file_read(struct fat_volume *vol, struct fat_node *n, char *buf, size_t size,
		      uint64_t off);
ssize_t fat_file_write(struct fat_volume *vol, struct fat_node *n, const char *buf, size_t size,
		       uint64_t off);
int fat_file_truncate(struct fat_volume *vol, struct fat_node *n, uint64_t size);

#endif
