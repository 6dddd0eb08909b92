/* See service.h. */
#define _GNU_SOURCE
#include "service.h"

#include "daemon.h"
#include "devfile.h"
#include "devmount.h"
#include "disk.h"
#include "log.h"
#include "nbdserver.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The kernel checks the device files' mode and owner (-o mode=,uid=,gid=) for us. */
#define MOUNT_OPTS "default_permissions"

struct umdev_service {
	const struct vo_daemon_info *info;
	enum umdev_kind kind;
	struct umdev_config *cfg;
	struct vo_cmdline cl;
	char *path;                 /* the disk's device file, absolute */
	char *fsname;
	uid_t uid;
	gid_t gid;
	struct umdev_disk *disk;
	struct devmount *disk_mount;
	pthread_mutex_t lock;       /* the lists below; one re-read at a time */
	bool stopping;
	struct devmount *parts;     /* partition files, by number */
	struct devmount *retired;   /* removed partitions still open somewhere */
	struct umdev_nbd *nbd;
	char disk_dev[32];          /* "major:minor" of the disk file's mount */
};

static const char *absolute(const char *path, char **out)
{
	if (path[0] == '/') {
		*out = strdup(path);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof cwd) || asprintf(out, "%s/%s", cwd, path) < 0)
			*out = NULL;
	}
	return *out;
}

static void log_table(struct umdev_service *s)
{
	const struct umdev_table *t = &s->disk->table;
	for (size_t i = 0; i < t->nmsgs; i++) {
		if (t->msgs[i].level == UMDEV_MSG_WARNING)
			vo_warn("%s: %s", s->path, t->msgs[i].text);
		else
			vo_debug("%s: %s", s->path, t->msgs[i].text);
	}
	vo_debug("%s: %s partition table, %zu partitions", s->path, umdev_scheme_name(t->scheme),
		 t->count);
}

static int reread(void *owner, bool force);
static const struct devfile_hooks hooks = { .reread = reread };

static struct devmount *find_part(struct umdev_service *s, unsigned number, bool unlink_it)
{
	for (struct devmount **p = &s->parts; *p; p = &(*p)->next) {
		if ((*p)->df->number == number) {
			struct devmount *m = *p;
			if (unlink_it) {
				*p = m->next;
				m->next = NULL;
			}
			return m;
		}
	}
	return NULL;
}

static void add_part(struct umdev_service *s, struct umdev_extent *e)
{
	char *path = umdev_partition_name(s->path, e->number);
	char *fsname = NULL;
	if (!path || asprintf(&fsname, "%s:%u", s->fsname, e->number) < 0) {
		vo_warn("partition %u: out of memory", e->number);
		free(path);
		return;
	}
	char err[512];
	struct devfile *df = devfile_new(s->disk, e, s->cfg->mode, s->uid, s->gid, &hooks, s);
	struct devmount *m = df ? devmount_start(&s->cl, path, fsname, df, false, MOUNT_OPTS, err,
						 sizeof err)
				: NULL;
	if (!m) {
		vo_warn("partition %u is not shown: %s", e->number, df ? err : "out of memory");
	} else {
		vo_debug("partition %u at %s: %llu bytes at offset %llu", e->number, path,
			 (unsigned long long)e->length, (unsigned long long)e->start);
		struct devmount **p = &s->parts;
		while (*p && (*p)->df->number < e->number)
			p = &(*p)->next;
		m->next = *p;
		*p = m;
	}
	free(path);
	free(fsname);
}

static void apply(struct umdev_service *s, const struct umdev_change *c)
{
	struct devmount *m;
	switch (c->kind) {
	case UMDEV_REMOVED:
		m = find_part(s, c->number, true);
		if (m) {
			vo_debug("partition %u removed: %s goes", c->number, m->path);
			devfile_set_extent(m->df, NULL);
			devmount_detach(m);
			m->next = s->retired;
			s->retired = m;
		}
		break;
	case UMDEV_MOVED:
		m = find_part(s, c->number, false);
		if (m) {
			vo_debug("partition %u now has %llu bytes at offset %llu", c->number,
				 (unsigned long long)c->extent->length,
				 (unsigned long long)c->extent->start);
			devfile_set_extent(m->df, c->extent);
		} else {
			add_part(s, c->extent);
		}
		break;
	case UMDEV_ADDED:
		add_part(s, c->extent);
		break;
	}
}

/* Removed partitions whose last opener has gone: the kernel ended their sessions. */
static void reap_retired(struct umdev_service *s)
{
	for (struct devmount **p = &s->retired; *p;) {
		struct devmount *m = *p;
		if (devmount_finished(m)) {
			*p = m->next;
			devmount_stop(m);
		} else {
			p = &m->next;
		}
	}
}

static int reread(void *owner, bool force)
{
	struct umdev_service *s = owner;
	int r = 0;
	pthread_mutex_lock(&s->lock);
	if (!s->stopping && (force || umdev_disk_table_dirty(s->disk))) {
		struct umdev_changes ch = { 0 };
		r = umdev_disk_rescan(s->disk, &ch);
		if (r < 0)
			vo_error("%s: cannot read the partition table: %s", s->path, strerror(-r));
		log_table(s);
		for (size_t i = 0; i < ch.count; i++)
			apply(s, &ch.items[i]);
		umdev_changes_clear(&ch);
		reap_retired(s);
		umdev_nbd_table_changed(s->nbd);
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static void reread_for_nbd(void *owner)
{
	reread(owner, true);
}

static int open_store(struct umdev_service *s, const char *source)
{
	char err[512];
	struct vo_block *dev = NULL;
	if (s->kind == UMDEV_KIND_IMAGE) {
		unsigned flags = VO_BLOCK_LOCK | (s->cl.readonly ? VO_BLOCK_RDONLY : 0);
		dev = vo_block_open(source, flags, err, sizeof err);
		if (!dev) {
			vo_error("%s", err);
			return VO_EXIT_SOURCE;
		}
		uint64_t size = vo_block_size(dev);
		if (size == 0 || size % UMDEV_SECTOR) {
			vo_error("%s: a disk image must hold whole 512-byte sectors, this one has %llu "
				 "bytes", source, (unsigned long long)size);
			vo_block_close(dev);
			return VO_EXIT_SOURCE;
		}
	} else if (s->kind == UMDEV_KIND_RAMDISK) {
		char spec[64];
		snprintf(spec, sizeof spec, "mem:%llu", (unsigned long long)s->cfg->size);
		dev = vo_block_open(spec, s->cl.readonly ? VO_BLOCK_RDONLY : 0, err, sizeof err);
		if (!dev) {
			vo_error("%s", err);
			return VO_EXIT_SOURCE;
		}
	}
	s->disk = umdev_disk_new(dev, s->cfg->size, s->cfg->partscan);
	if (!s->disk) {
		vo_error("out of memory");
		vo_block_close(dev);
		return VO_EXIT_SOURCE;
	}
	if (s->cfg->direct) {
		int r = umdev_disk_use_direct_io(s->disk);
		if (r < 0) {
			vo_error("%s: cannot use direct I/O (-o direct): %s", source,
				 r == -EOPNOTSUPP ? "not an image file or a device" : strerror(-r));
			return VO_EXIT_SOURCE;
		}
	}
	return VO_EXIT_OK;
}

static int start_nbd(struct umdev_service *s, const struct umdev_nbd_addr *addr,
		     const char *source)
{
	uint64_t base;
	int fd = s->disk->dev ? vo_block_fd(s->disk->dev, &base) : -1;
	const char *slash = strrchr(s->path, '/');
	struct umdev_nbd_params p = {
		.backing_fd = fd,
		.source = source,
		.readonly = s->cl.readonly,
		.partscan = s->disk->partscan,
		.export_base = slash ? slash + 1 : s->path,
		.verbose = s->cl.debug,
		.log_to_syslog = !s->cl.foreground,
		.reread = reread_for_nbd,
		.owner = s,
	};
	char err[512];
	s->nbd = umdev_nbd_start(addr, &p, err, sizeof err);
	if (!s->nbd) {
		vo_error("%s", err);
		return VO_EXIT_MOUNT;
	}
	return VO_EXIT_OK;
}

/* Is the disk file still mounted here? Read from /proc/self/mountinfo, not by a stat that
 * would ask our own session. The mount point is compared as the kernel escapes it. */
static bool disk_still_mounted(struct umdev_service *s, int mountinfo_fd)
{
	if (!s->disk_dev[0]) /* not known: rely on the session's end alone */
		return true;
	char escaped[PATH_MAX * 4], *e = escaped;
	for (const char *p = s->path; *p && e < escaped + sizeof escaped - 5; p++) {
		if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\\')
			e += sprintf(e, "\\%03o", (unsigned char)*p);
		else
			*e++ = *p;
	}
	*e = '\0';
	FILE *f = fdopen(dup(mountinfo_fd), "r");
	if (!f)
		return true;
	rewind(f);
	bool found = false;
	char *line = NULL;
	size_t cap = 0;
	while (!found && getline(&line, &cap, f) > 0) {
		/* ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ... */
		char dev[32], point[PATH_MAX * 4];
		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, point) == 2)
			found = strcmp(point, escaped) == 0 && strcmp(dev, s->disk_dev) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

/* Wait for the end: a signal, or the disk file unmounted. The kernel ends the disk's session
 * when its mount goes, unless another mount namespace made meanwhile still holds a copy of
 * it: so the mount table of our own namespace is watched as well (poll on mountinfo). */
static void wait_for_the_end(struct umdev_service *s, const sigset_t *set)
{
	int sfd = signalfd(-1, set, SFD_CLOEXEC);
	int mfd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	const char *why = "signal";
	for (;;) {
		struct pollfd fds[2] = { { .fd = sfd, .events = POLLIN },
					 { .fd = mfd, .events = POLLPRI } };
		if (poll(fds, mfd >= 0 ? 2 : 1, -1) < 0)
			continue;
		if (fds[1].revents & (POLLPRI | POLLERR)) {
			if (!disk_still_mounted(s, mfd)) {
				why = "the disk file was unmounted";
				break;
			}
		}
		if (!(fds[0].revents & POLLIN))
			continue;
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si)
			continue;
		if (si.ssi_signo == SIGCHLD) {
			if (s->nbd)
				umdev_nbd_alive(s->nbd);
			continue;
		}
		if (si.ssi_signo == SIGUSR2 && !devmount_finished(s->disk_mount))
			continue;
		why = si.ssi_signo == SIGUSR2 ? "the disk file was unmounted"
					      : strsignal((int)si.ssi_signo);
		break;
	}
	vo_debug("%s: stopping (%s)", s->path, why);
	close(sfd);
	if (mfd >= 0)
		close(mfd);
}

/* The device number of the disk file's mount, to recognise it in mountinfo. */
static void remember_disk_dev(struct umdev_service *s)
{
	struct stat st;
	if (stat(s->path, &st) == 0)
		snprintf(s->disk_dev, sizeof s->disk_dev, "%u:%u", major(st.st_dev),
			 minor(st.st_dev));
}

static void stop_all(struct umdev_service *s)
{
	pthread_mutex_lock(&s->lock);
	s->stopping = true; /* from now on a flush or BLKRRPART re-reads nothing */
	pthread_mutex_unlock(&s->lock);
	/* The device files first: they are what the user sees go after an unmount of the disk;
	 * nbdkit may then take its time (up to 5 s) to finish its clients' requests. */
	while (s->parts) {
		struct devmount *m = s->parts;
		s->parts = m->next;
		devmount_stop(m);
	}
	devmount_stop(s->disk_mount);
	s->disk_mount = NULL;
	while (s->retired) {
		struct devmount *m = s->retired;
		s->retired = m->next;
		devmount_stop(m);
	}
	umdev_nbd_stop(s->nbd);
	s->nbd = NULL;
}

static int check_config(struct umdev_service *s)
{
	char err[512];
	if (s->kind == UMDEV_KIND_RAMDISK && umdev_check_ramdisk_size(s->cfg->size, err,
								      sizeof err) < 0) {
		vo_error("%s", err);
		return VO_EXIT_USAGE;
	}
	/* size=0 is the null device's default (EOF at once); any other size is whole sectors,
	 * as for every other device here */
	if (s->kind == UMDEV_KIND_NULL && s->cfg->size % UMDEV_SECTOR) {
		vo_error("size=%llu bytes is not a whole number of 512-byte sectors",
			 (unsigned long long)s->cfg->size);
		return VO_EXIT_USAGE;
	}
	if (s->cfg->mode > 07777) {
		vo_error("invalid value '%o' for option 'mode' (expected permission bits, at most "
			 "7777)", s->cfg->mode);
		return VO_EXIT_USAGE;
	}
	return VO_EXIT_OK;
}

int umdev_service_main(const struct vo_daemon_info *info, enum umdev_kind kind,
		       struct umdev_config *cfg, int argc, char **argv)
{
	struct umdev_service s = { .info = info, .kind = kind, .cfg = cfg };
	struct umdev_nbd_addr addr = { 0 };
	char err[512];
	int status;
	vo_log_init(info->name);
	int r = vo_cmdline_parse(info, cfg, argc, argv, &s.cl);
	if (r != 0) {
		status = r > 0 ? VO_EXIT_OK : VO_EXIT_USAGE;
		goto out_cmdline;
	}
	vo_log_set_debug(s.cl.debug);
	status = check_config(&s);
	if (status != VO_EXIT_OK)
		goto out_cmdline;
	if (cfg->nbd && umdev_nbd_addr_parse(cfg->nbd, &addr, err, sizeof err) < 0) {
		vo_error("%s", err);
		status = VO_EXIT_USAGE;
		goto out_cmdline;
	}
	const char *source = kind == UMDEV_KIND_IMAGE ? s.cl.positional[0] : NULL;
	if (!absolute(s.cl.positional[s.cl.npositional - 1], &s.path)) {
		vo_error("out of memory");
		status = VO_EXIT_MOUNT;
		goto out_cmdline;
	}
	/* The cheap check first: a bad PATH must not cost opening the source. */
	if (devmount_check_path(s.path, err, sizeof err) < 0) {
		vo_error("%s", err);
		status = VO_EXIT_MOUNT;
		goto out_cmdline;
	}
	/* The source column of /proc/mounts. Not a bare word like "ramdisk": mkfs.vfat and
	 * e2fsprogs refuse a device whose name appears there as a mounted source, so a device
	 * file the user happened to call "ramdisk" would be taken for mounted. */
	if (source)
		s.fsname = strdup(source);
	else if (asprintf(&s.fsname, "%s:%llu", kind == UMDEV_KIND_RAMDISK ? "mem" : "null",
			  (unsigned long long)cfg->size) < 0)
		s.fsname = NULL;
	s.uid = cfg->uid == UINT_MAX ? getuid() : cfg->uid;
	s.gid = cfg->gid == UINT_MAX ? getgid() : cfg->gid;
	pthread_mutex_init(&s.lock, NULL);

	vo_detach_begin(&s.cl);
	/* Every thread we start inherits this mask; the main thread takes the signals with
	 * sigwaitinfo, serving threads unblock only SIGUSR1 (see devmount.h). */
	sigset_t set;
	sigemptyset(&set);
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD };
	for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
		sigaddset(&set, signals[i]);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigdelset(&set, SIGUSR1);
	signal(SIGPIPE, SIG_IGN);
	devmount_init_signals();

	status = open_store(&s, source);
	if (status != VO_EXIT_OK)
		goto out;
	/* NBD first: once the disk file is there, so is the export (a foreground daemon has no
	 * other way to say "ready") */
	if (cfg->nbd) {
		status = start_nbd(&s, &addr, source);
		if (status != VO_EXIT_OK)
			goto out;
	}
	struct devfile *df = devfile_new(s.disk, s.disk->whole, cfg->mode, s.uid, s.gid, &hooks,
					 &s);
	s.disk_mount = df ? devmount_start(&s.cl, s.path, s.fsname, df, true, MOUNT_OPTS, err,
					   sizeof err)
			  : NULL;
	if (!s.disk_mount) {
		vo_error("%s", df ? err : "out of memory");
		status = VO_EXIT_MOUNT;
		goto out;
	}
	remember_disk_dev(&s);
	reread(&s, true);
	vo_detach_ready();
	wait_for_the_end(&s, &set);
out:
	stop_all(&s);
	if (s.disk) {
		r = umdev_flush(s.disk, false);
		if (r < 0) {
			vo_error("cannot flush %s: %s", s.fsname, strerror(-r));
			status = VO_EXIT_SOURCE;
		}
		umdev_disk_free(s.disk);
	}
	pthread_mutex_destroy(&s.lock);
out_cmdline:
	umdev_nbd_addr_free(&addr);
	free(s.path);
	free(s.fsname);
	free(cfg->nbd);
	vo_cmdline_free(&s.cl);
	return status;
}
