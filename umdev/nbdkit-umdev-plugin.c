/* nbdkit-umdev-plugin: the umdev devices over NBD, built from the same device library as the
 * umdev-* daemons (disk.h): the whole disk is the default export "", and each partition of
 * its table is an export named by its number ("1", "2", ...) and, with name=BASE, by the name
 * of its device file (BASE1 or BASEp1). The export list follows the table: a write through NBD
 * to the table areas is followed, at the client's flush or disconnect, by a re-read.
 *
 *   nbdkit umdev mbr IMAGE          an image file (or block device, or nbd:// URI)
 *   nbdkit umdev ramdisk size=1G    a sparse RAM disk (a memfd; bare numbers count sectors)
 *   nbdkit umdev null [size=SIZE]   zeros in, writes discarded
 *
 * When a umdev daemon runs it (-o nbd=), it passes the image or memfd as an inherited fd
 * (file=/proc/self/fd/N), its lock already held (lock=0), and a shared page and a pipe
 * (shm=, notify=; see shared.h) so both sides agree on the table at once.
 *
 * Capabilities: writes, flush, FUA (native: a flush), trim, zero (fast where a punched hole
 * reads back as zeros), multi-conn (every connection sees the same store, and flush is
 * global), extents (SEEK_DATA/SEEK_HOLE on the store). What it leaves out: a cache of its own
 * (the store's page cache is shared with the daemon's device files, which is the point). */
#define _GNU_SOURCE
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "disk.h"
#include "options.h"
#include "shared.h"

#include <ctype.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

enum kind { KIND_UNSET, KIND_MBR, KIND_RAMDISK, KIND_NULL };

static struct {
	enum kind kind;
	char *file;
	uint64_t size;
	bool size_given;
	int partscan, lock, readonly;
	char *name;
	int shm_fd, notify_fd;
} cfg = { .partscan = 1, .lock = 1, .shm_fd = -1, .notify_fd = -1 };

static struct umdev_disk *disk;
static struct umdev_shared *shared;
static uint64_t seen_generation; /* atomic */

struct handle {
	struct umdev_extent *e;
	struct handle *prev, *next;
};

/* Every open handle: nbdkit does not close the handles of connections still ending when it
 * quits, so unload frees what is left. */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handle *handles;

static void forget_handle(struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
	umdev_extent_put(h->e);
	free(h);
}

static int parse_fd(const char *key, const char *value, int *out)
{
	if (nbdkit_parse_int(key, value, out) < 0)
		return -1;
	if (*out < 0 || fcntl(*out, F_GETFD) < 0) {
		nbdkit_error("%s=%s: not an open file descriptor", key, value);
		return -1;
	}
	return 0;
}

static int bool_param(const char *key, const char *value, int *out)
{
	int r = nbdkit_parse_bool(value);
	if (r < 0)
		return -1; /* nbdkit has said what is wrong */
	(void)key;
	*out = r;
	return 0;
}

static int plugin_config(const char *key, const char *value)
{
	if (strcmp(key, "arg") == 0) { /* a bare word: the kind, then the image */
		if (cfg.kind == KIND_UNSET && !cfg.file) {
			if (strcmp(value, "mbr") == 0) {
				cfg.kind = KIND_MBR;
				return 0;
			}
			if (strcmp(value, "ramdisk") == 0) {
				cfg.kind = KIND_RAMDISK;
				return 0;
			}
			if (strcmp(value, "null") == 0) {
				cfg.kind = KIND_NULL;
				return 0;
			}
		}
		key = "file";
	}
	if (strcmp(key, "file") == 0) {
		if (cfg.file) {
			nbdkit_error("more than one image given (%s and %s)", cfg.file, value);
			return -1;
		}
		cfg.file = strdup(value);
		return cfg.file ? 0 : -1;
	}
	if (strcmp(key, "size") == 0) {
		if (vo_parse_size(value, UMDEV_SECTOR, &cfg.size) < 0) {
			nbdkit_error("size=%s: expected a size such as 512, 64K, 100M or 2G (a bare "
				     "number counts 512-byte sectors)", value);
			return -1;
		}
		cfg.size_given = true;
		return 0;
	}
	if (strcmp(key, "partscan") == 0)
		return bool_param(key, value, &cfg.partscan);
	if (strcmp(key, "lock") == 0)
		return bool_param(key, value, &cfg.lock);
	if (strcmp(key, "readonly") == 0)
		return bool_param(key, value, &cfg.readonly);
	if (strcmp(key, "name") == 0) {
		free(cfg.name);
		cfg.name = strdup(value);
		return cfg.name ? 0 : -1;
	}
	if (strcmp(key, "shm") == 0)
		return parse_fd(key, value, &cfg.shm_fd);
	if (strcmp(key, "notify") == 0)
		return parse_fd(key, value, &cfg.notify_fd);
	nbdkit_error("unknown parameter '%s' (see nbdkit umdev --help)", key);
	return -1;
}

static int plugin_config_complete(void)
{
	if (cfg.kind == KIND_UNSET && cfg.file)
		cfg.kind = KIND_MBR;
	switch (cfg.kind) {
	case KIND_UNSET:
		nbdkit_error("say what to export: mbr IMAGE, ramdisk size=SIZE or null");
		return -1;
	case KIND_MBR:
		if (!cfg.file) {
			nbdkit_error("mbr needs an image: nbdkit umdev mbr IMAGE");
			return -1;
		}
		if (cfg.size_given) {
			nbdkit_error("size= is for ramdisk and null; an image has its own size");
			return -1;
		}
		break;
	case KIND_RAMDISK:
	case KIND_NULL:
		if (cfg.file) {
			nbdkit_error("%s takes no image (%s)", cfg.kind == KIND_NULL ? "null"
							: "ramdisk", cfg.file);
			return -1;
		}
		if (cfg.kind == KIND_RAMDISK) {
			char err[256];
			if (!cfg.size_given)
				cfg.size = UMDEV_RAMDISK_DEFAULT_SIZE;
			if (umdev_check_ramdisk_size(cfg.size, err, sizeof err) < 0) {
				nbdkit_error("%s", err);
				return -1;
			}
		}
		break;
	}
	if (cfg.shm_fd >= 0) {
		shared = mmap(NULL, UMDEV_SHARED_SIZE, PROT_READ, MAP_SHARED, cfg.shm_fd, 0);
		if (shared == MAP_FAILED || shared->magic != UMDEV_SHARED_MAGIC) {
			nbdkit_error("shm=%d: not a umdev daemon's shared page", cfg.shm_fd);
			if (shared != MAP_FAILED)
				munmap(shared, UMDEV_SHARED_SIZE);
			shared = NULL;
			return -1;
		}
		seen_generation = __atomic_load_n(&shared->generation, __ATOMIC_ACQUIRE);
	}
	return 0;
}

static void log_table(void)
{
	const struct umdev_table *t = &disk->table;
	for (size_t i = 0; i < t->nmsgs; i++)
		nbdkit_debug("umdev: %s", t->msgs[i].text);
	nbdkit_debug("umdev: %s partition table, %zu partitions", umdev_scheme_name(t->scheme),
		     t->count);
}

static void rescan(void)
{
	int r = umdev_disk_rescan(disk, NULL);
	if (r < 0)
		nbdkit_debug("umdev: cannot read the partition table: %s", strerror(-r));
	log_table();
}

/* The daemon re-read the table (a write through a device file): do the same. One atomic
 * load per request when nothing changed. */
static void follow_daemon(void)
{
	if (!shared)
		return;
	uint64_t g = __atomic_load_n(&shared->generation, __ATOMIC_ACQUIRE);
	uint64_t seen = __atomic_load_n(&seen_generation, __ATOMIC_ACQUIRE);
	if (g != seen && __atomic_compare_exchange_n(&seen_generation, &seen, g, false,
						     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		rescan();
}

/* A client wrote to the table and flushed or left: re-read, and tell the daemon. */
static void after_table_write(void)
{
	if (!umdev_disk_table_dirty(disk))
		return;
	rescan();
	if (cfg.notify_fd >= 0 && write(cfg.notify_fd, "t", 1) < 0) {
		/* a full pipe means the daemon has a re-read pending already */
	}
}

static int plugin_get_ready(void)
{
	struct vo_block *dev = NULL;
	char err[512];
	if (cfg.kind == KIND_MBR || cfg.kind == KIND_RAMDISK) {
		unsigned flags = cfg.readonly ? VO_BLOCK_RDONLY : 0;
		char spec[64];
		const char *source = cfg.file;
		if (cfg.kind == KIND_RAMDISK) {
			snprintf(spec, sizeof spec, "mem:%llu", (unsigned long long)cfg.size);
			source = spec;
		} else if (cfg.lock) {
			flags |= VO_BLOCK_LOCK;
		}
		dev = vo_block_open(source, flags, err, sizeof err);
		if (!dev) {
			nbdkit_error("%s", err);
			return -1;
		}
		uint64_t size = vo_block_size(dev);
		if (size % UMDEV_SECTOR) {
			nbdkit_error("%s: a disk image must hold whole 512-byte sectors, this one has "
				     "%llu bytes", cfg.file, (unsigned long long)size);
			vo_block_close(dev);
			return -1;
		}
	}
	disk = umdev_disk_new(dev, cfg.size, cfg.partscan && cfg.kind != KIND_NULL);
	if (!disk) {
		nbdkit_error("out of memory");
		vo_block_close(dev);
		return -1;
	}
	rescan();
	return 0;
}

static void plugin_unload(void)
{
	while (handles)
		forget_handle(handles);
	umdev_disk_free(disk);
	if (shared)
		munmap(shared, UMDEV_SHARED_SIZE);
	free(cfg.file);
	free(cfg.name);
}

/* "" is the whole disk; "N" and NAME+N (the partition file's name) are partition N. */
static int export_number(const char *name, unsigned *number)
{
	if (*name == '\0') {
		*number = 0;
		return 0;
	}
	const char *digits = name;
	if (cfg.name && strncmp(name, cfg.name, strlen(cfg.name)) == 0) {
		digits = name + strlen(cfg.name);
		size_t len = strlen(cfg.name);
		if (len && isdigit((unsigned char)cfg.name[len - 1])) {
			if (*digits != 'p')
				digits = name; /* not BASEpN: maybe a plain number after all */
			else
				digits++;
		}
	}
	if (!*digits || strspn(digits, "0123456789") != strlen(digits) || *digits == '0' ||
	    strlen(digits) > 9)
		return -1;
	*number = (unsigned)strtoul(digits, NULL, 10);
	return 0;
}

static void *plugin_open(int readonly)
{
	(void)readonly;
	follow_daemon();
	const char *name = nbdkit_export_name();
	unsigned number;
	if (!name || export_number(name, &number) < 0) {
		nbdkit_error("no export named '%s' (the whole disk is \"\", partitions are 1, 2, "
			     "...)", name ? name : "");
		errno = ENOENT;
		return NULL;
	}
	struct umdev_extent *e = umdev_disk_get(disk, number);
	if (!e) {
		nbdkit_error("export '%s': the disk has no partition %u", name, number);
		errno = ENOENT;
		return NULL;
	}
	struct handle *h = calloc(1, sizeof *h);
	if (!h) {
		umdev_extent_put(e);
		nbdkit_error("out of memory");
		return NULL;
	}
	h->e = e;
	pthread_mutex_lock(&handles_lock);
	h->next = handles;
	if (h->next)
		h->next->prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
	return h;
}

static void plugin_close(void *handle)
{
	after_table_write();
	forget_handle(handle);
}

static int plugin_list_exports(int readonly, int is_tls, struct nbdkit_exports *exports)
{
	(void)readonly, (void)is_tls;
	follow_daemon();
	if (nbdkit_add_export(exports, "", "the whole disk") < 0)
		return -1;
	pthread_rwlock_rdlock(&disk->table_lock);
	int r = 0;
	for (size_t i = 0; i < disk->nparts && r == 0; i++) {
		unsigned n = disk->parts[i]->number;
		char number[16], description[64];
		snprintf(number, sizeof number, "%u", n);
		snprintf(description, sizeof description, "partition %u", n);
		r = nbdkit_add_export(exports, number, description);
		if (r == 0 && cfg.name) {
			char *named = umdev_partition_name(cfg.name, n);
			r = named ? nbdkit_add_export(exports, named, description) : -1;
			free(named);
		}
	}
	pthread_rwlock_unlock(&disk->table_lock);
	return r;
}

static const char *plugin_default_export(int readonly, int is_tls)
{
	(void)readonly, (void)is_tls;
	return "";
}

static int64_t plugin_get_size(void *handle)
{
	return (int64_t)((struct handle *)handle)->e->length;
}

static int plugin_can_write(void *handle)
{
	(void)handle;
	return !disk->dev || !vo_block_readonly(disk->dev); /* the null device takes anything */
}

static int yes(void *handle)
{
	(void)handle;
	return 1;
}

static int no(void *handle)
{
	(void)handle;
	return 0;
}

static int plugin_can_fua(void *handle)
{
	(void)handle;
	return NBDKIT_FUA_NATIVE;
}

static int plugin_can_fast_zero(void *handle)
{
	(void)handle;
	return !disk->dev || disk->trim_zeroes;
}

static int plugin_can_extents(void *handle)
{
	(void)handle;
	uint64_t base;
	return disk->dev && vo_block_fd(disk->dev, &base) >= 0;
}

static int fail(int r)
{
	nbdkit_set_error(-r);
	return -1;
}

static int fua(uint32_t flags)
{
	int r = flags & NBDKIT_FLAG_FUA ? umdev_flush(disk, true) : 0;
	return r < 0 ? fail(r) : 0;
}

static int plugin_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
	(void)flags;
	struct handle *h = handle;
	follow_daemon();
	ssize_t r = umdev_pread(disk, h->e, buf, count, offset);
	if (r < 0)
		return fail((int)r);
	if ((size_t)r < count) /* only if the store shrank under us */
		memset((char *)buf + r, 0, count - (size_t)r);
	return 0;
}

static int plugin_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset,
			uint32_t flags)
{
	struct handle *h = handle;
	follow_daemon();
	ssize_t r = umdev_pwrite(disk, h->e, buf, count, offset);
	if (r < 0)
		return fail((int)r);
	if ((size_t)r < count)
		return fail(-ENOSPC);
	return fua(flags);
}

static int plugin_flush(void *handle, uint32_t flags)
{
	(void)handle, (void)flags;
	int r = umdev_flush(disk, true);
	after_table_write();
	return r < 0 ? fail(r) : 0;
}

static int plugin_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	follow_daemon();
	int r = umdev_trim(disk, h->e, offset, count);
	return r < 0 ? fail(r) : fua(flags);
}

static int plugin_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	follow_daemon();
	if ((flags & NBDKIT_FLAG_FAST_ZERO) && !plugin_can_fast_zero(h))
		return fail(-ENOTSUP);
	int r = (flags & NBDKIT_FLAG_MAY_TRIM) && disk->trim_zeroes
			? umdev_trim(disk, h->e, offset, count)
			: umdev_zero(disk, h->e, offset, count);
	return r < 0 ? fail(r) : fua(flags);
}

static int plugin_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
			    struct nbdkit_extents *extents)
{
	struct handle *h = handle;
	follow_daemon();
	size_t len = count;
	uint64_t abs;
	int fd = umdev_extent_fd(disk, h->e, offset, &len, &abs);
	if (fd < 0)
		return fail(umdev_extent_gone(h->e) ? -EIO : -EINVAL);
	uint64_t base = abs - offset, end = offset + len;
	while (offset < end) {
		off_t data = lseek(fd, (off_t)(base + offset), SEEK_DATA);
		if (data < 0 && errno != ENXIO)
			return fail(-errno);
		uint64_t data_at = data < 0 ? end : (uint64_t)data - base;
		if (data_at > end)
			data_at = end;
		if (data_at > offset) {
			if (nbdkit_add_extent(extents, offset, data_at - offset,
					      NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) < 0)
				return -1;
			offset = data_at;
		} else {
			off_t hole = lseek(fd, (off_t)(base + offset), SEEK_HOLE);
			if (hole < 0)
				return fail(-errno);
			uint64_t hole_at = (uint64_t)hole - base;
			if (hole_at > end)
				hole_at = end;
			if (hole_at <= offset)
				hole_at = end; /* the store changed under us: call the rest data */
			if (nbdkit_add_extent(extents, offset, hole_at - offset, 0) < 0)
				return -1;
			offset = hole_at;
		}
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
	}
	return 0;
}

static const char *plugin_export_description(void *handle)
{
	struct handle *h = handle;
	return h->e->number == 0 ? "the whole disk" : "a partition";
}

static struct nbdkit_plugin plugin = {
	.name = "umdev",
	.longname = "viewos umdev: disks, partitions and RAM disks",
	.version = VIEWOS_VERSION,
	.description = "Exports a disk image, its partitions, a RAM disk or a null device.",
	.magic_config_key = "arg",
	.config = plugin_config,
	.config_complete = plugin_config_complete,
	.config_help =
		"mbr IMAGE | ramdisk [size=SIZE] | null [size=SIZE]\n"
		"file=IMAGE          the image (same as the bare word after mbr)\n"
		"size=SIZE           ramdisk/null size (K/M/G/T; a bare number counts sectors)\n"
		"partscan=BOOL       export the partitions too (default true)\n"
		"name=BASE           also name partition exports BASE1, BASE2, ...\n"
		"lock=BOOL           lock the image against other writers (default true)\n"
		"readonly=BOOL       open the image read-only",
	.get_ready = plugin_get_ready,
	.unload = plugin_unload,
	.open = plugin_open,
	.close = plugin_close,
	.list_exports = plugin_list_exports,
	.default_export = plugin_default_export,
	.export_description = plugin_export_description,
	.get_size = plugin_get_size,
	.can_write = plugin_can_write,
	.can_flush = yes,
	.can_trim = plugin_can_write,
	.can_zero = plugin_can_write,
	.can_fast_zero = plugin_can_fast_zero,
	.can_fua = plugin_can_fua,
	.can_multi_conn = yes,
	.can_extents = plugin_can_extents,
	.is_rotational = no,
	.pread = plugin_pread,
	.pwrite = plugin_pwrite,
	.flush = plugin_flush,
	.trim = plugin_trim,
	.zero = plugin_zero,
	.extents = plugin_extents,
	.errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN(plugin)
