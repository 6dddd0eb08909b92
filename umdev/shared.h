/* The page a umdev daemon shares with the nbdkit plugin it runs (a memfd passed as shm=FD).
 *
 * NBD connections hold extents just as open device files do. When the daemon re-reads the
 * partition table (after a write through a device file), it bumps `generation`; the plugin
 * compares it on every request (one atomic load) and re-reads the table itself when it
 * changed, so a connection to a partition that moved or vanished fails with EIO at once, and
 * new connections see the new export list. The other direction (NBD writes to the table) goes
 * through a pipe (notify=FD): the plugin writes a byte, the daemon re-reads and updates its
 * device files. */
#ifndef UMDEV_SHARED_H
#define UMDEV_SHARED_H

#include <stdint.h>

#define UMDEV_SHARED_MAGIC 0x7268737665646d75ull /* "umdevshr" */
#define UMDEV_SHARED_SIZE 4096

struct umdev_shared {
	uint64_t magic;
	uint64_t generation; /* atomic */
};

#endif
