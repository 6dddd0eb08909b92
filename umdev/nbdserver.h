/* The NBD export of a umdev daemon: nbdkit, run as our child with the project's plugin
 * (nbdkit-umdev-plugin.so) over the same backing store as the device files (the image file
 * or the RAM disk's memfd, inherited as an fd), so NBD and FUSE see the same bytes at once.
 * We do not serve NBD ourselves: nbdkit does the protocol.
 *
 * The daemon binds the listening socket itself and hands it to nbdkit by socket activation
 * (LISTEN_FDS): an address in use is our one-line error, and the export is reachable the
 * moment we report ready. */
#ifndef UMDEV_NBDSERVER_H
#define UMDEV_NBDSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct umdev_nbd_addr {
	bool is_unix;
	char *path;       /* unix: absolute socket path */
	char *host;       /* tcp: NULL for every address */
	char *port;       /* tcp */
};

/* "unix:PATH" or "tcp:[HOST]:PORT" ("tcp:[::1]:10809" for IPv6). 0 or -1 with err. */
int umdev_nbd_addr_parse(const char *spec, struct umdev_nbd_addr *a, char *err, size_t errlen);
void umdev_nbd_addr_free(struct umdev_nbd_addr *a);

struct umdev_nbd_params {
	int backing_fd;          /* image or memfd, shared with nbdkit; -1: the plugin opens
				    `source` itself (an NBD URI) */
	const char *source;
	bool readonly, partscan;
	const char *export_base; /* partition exports are also named like the partition files */
	bool verbose;            /* nbdkit -v */
	bool log_to_syslog;      /* nbdkit --log=syslog (the daemon has detached) */
	void (*reread)(void *owner); /* NBD writes touched the partition table */
	void *owner;
};

struct umdev_nbd;

struct umdev_nbd *umdev_nbd_start(const struct umdev_nbd_addr *a,
				  const struct umdev_nbd_params *p, char *err, size_t errlen);
/* The daemon re-read the table: tell the plugin. */
void umdev_nbd_table_changed(struct umdev_nbd *n);
/* After SIGCHLD: false (and a logged error) when nbdkit has exited. */
bool umdev_nbd_alive(struct umdev_nbd *n);
void umdev_nbd_stop(struct umdev_nbd *n);

#endif
