/* libumdev's device model, shared by the umdev-* daemons and the nbdkit plugin: a disk (a block
 * source of common/block.h, or nothing for the null device), its current partitions, and I/O
 * through an extent (the whole disk or one partition) with the rules of a block device.
 *
 * An extent is what one open file or one NBD connection holds: when a re-read of the table
 * moves or removes its partition, the extent is marked gone and every later I/O through it
 * fails with EIO, so a stale opener never reads or writes another partition's data. New opens
 * get the new extent.
 *
 * Every write (and trim/zero) through any extent that touches the table areas marks the table
 * dirty; the owner re-reads it when the writer flushes or closes (umdev_disk_rescan), as the
 * kernel re-reads after BLKRRPART. */
#ifndef UMDEV_DISK_H
#define UMDEV_DISK_H

#include "block.h"
#include "partition.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A RAM disk's size when none is given: 65536 sectors, as View-OS. */
#define UMDEV_RAMDISK_DEFAULT_SIZE (32ull << 20)

struct umdev_extent {
	int refs;               /* atomic */
	unsigned number;        /* 0: the whole disk */
	uint64_t start, length; /* bytes, within the disk */
	bool gone;              /* atomic: no longer in the table; I/O fails with EIO */
	struct umdev_partition info;
};

struct umdev_disk {
	struct vo_block *dev;   /* NULL: the null device (reads zeros, discards writes) */
	uint64_t size;
	bool partscan;
	bool trim_zeroes;             /* the backing is a file or memfd: a trim punches a hole,
					 which reads back as zeros (not so on a block device) */
	int direct_fd;                /* -1, or the store opened with O_DIRECT (see
					 umdev_disk_use_direct_io) */
	pthread_mutex_t rescan_lock;  /* one re-read at a time */
	pthread_rwlock_t table_lock;  /* table and parts, against concurrent writers' checks */
	struct umdev_table table;
	struct umdev_extent *whole;
	struct umdev_extent **parts;  /* current partitions, sorted by number */
	size_t nparts;
	bool table_dirty;             /* atomic: a write touched the table since the last scan */
	uint64_t areas_lo, areas_hi;  /* atomic: the span of the table areas that lie outside the
					 fixed head and tail, so that most writes need no lock */
	bool unflushed;               /* atomic: writes since the last flush */
};

enum umdev_change_kind { UMDEV_ADDED, UMDEV_REMOVED, UMDEV_MOVED };

struct umdev_change {
	enum umdev_change_kind kind;
	unsigned number;
	struct umdev_extent *extent; /* ADDED, MOVED: the new extent (a reference the caller
					drops with umdev_extent_put); REMOVED: NULL */
};

struct umdev_changes {
	size_t count;
	struct umdev_change *items;
};

/* Takes ownership of dev (NULL with null_size for the null device). Does not scan. */
struct umdev_disk *umdev_disk_new(struct vo_block *dev, uint64_t null_size, bool partscan);
void umdev_disk_free(struct umdev_disk *d);

/* Serve aligned reads and writes (offset, length and memory on UMDEV_DIRECT_ALIGN bytes)
 * with O_DIRECT on the store, so they bypass its page cache too: an image on a disk is then
 * read and written as directly as the device file is (umdev-mbr -o direct). Other requests,
 * and the nbdkit plugin, keep the page cache; the kernel keeps the two coherent (a direct read
 * writes back cached pages of its range first, a direct write drops them). For an image file
 * or a block device only. 0, or -errno. */
#define UMDEV_DIRECT_ALIGN 4096u
int umdev_disk_use_direct_io(struct umdev_disk *d);

/* Re-read the table (nothing when partscan is off) and bring the partitions in line; the
 * changes against the previous partitions go to *ch (may be NULL) and the scanner's
 * diagnostics stay in d->table.msgs until the next re-read. Returns 0 or -errno (I/O). */
int umdev_disk_rescan(struct umdev_disk *d, struct umdev_changes *ch);
void umdev_changes_clear(struct umdev_changes *ch);

/* The extent of partition `number` (0: the whole disk) with a reference, or NULL. */
struct umdev_extent *umdev_disk_get(struct umdev_disk *d, unsigned number);
void umdev_extent_get(struct umdev_extent *e);
void umdev_extent_put(struct umdev_extent *e);
bool umdev_extent_gone(const struct umdev_extent *e);

bool umdev_disk_table_dirty(struct umdev_disk *d);

/* I/O through an extent, as a block device does it: reads past the end return 0 bytes, a
 * write that starts at or past the end fails with -ENOSPC, one that straddles it writes what
 * fits; -EIO once the extent is gone; -EROFS on a read-only disk. */
ssize_t umdev_pread(struct umdev_disk *d, struct umdev_extent *e, void *buf, size_t len,
		    uint64_t off);
ssize_t umdev_pwrite(struct umdev_disk *d, struct umdev_extent *e, const void *buf, size_t len,
		     uint64_t off);
int umdev_trim(struct umdev_disk *d, struct umdev_extent *e, uint64_t off, uint64_t len);
int umdev_zero(struct umdev_disk *d, struct umdev_extent *e, uint64_t off, uint64_t len);
/* Make every write so far durable. always=false skips the sync when this process wrote
 * nothing since its last flush (a close after reading costs nothing); an explicit request
 * (fsync, NBD flush) passes true, since another process (the daemon, or its nbdkit) may have
 * written the same store. */
int umdev_flush(struct umdev_disk *d, bool always);

/* For zero-copy paths: the fd behind the disk and the absolute offset of byte `off` of e, with
 * *len clipped to the extent; -1 when the disk has no fd (NBD source, null device), the
 * extent is gone, or off lies past its end. A write through this fd must be followed by
 * umdev_note_write(). */
int umdev_extent_fd(struct umdev_disk *d, struct umdev_extent *e, uint64_t off, size_t *len,
		    uint64_t *abs_off);
void umdev_note_write(struct umdev_disk *d, uint64_t abs_off, uint64_t len);

/* --- names and sizes --- */

/* The file (or export) name of partition n of the disk called `disk`: disk + n, or disk + "p"
 * + n when disk ends in a digit (nvme0n1 -> nvme0n1p1), as Linux names them. Malloc'ed. */
char *umdev_partition_name(const char *disk, unsigned n);
/* Check a RAM disk size (after suffix parsing): at least one sector, whole sectors. */
int umdev_check_ramdisk_size(uint64_t size, char *err, size_t errlen);

#endif
