/* See devmount.h.
 *
 * Each session is served by vo_loop (common/loop.h), not by libfuse's multi-threaded loop:
 * that one ends by cancelling its threads, and a thread cancelled while libfuse reports a read
 * error dies holding stderr's lock, which hung the daemon at its next mount. With -s, libfuse's
 * single-threaded loop serves, which cancels nothing.
 *
 * Ending a session: devmount_stop() ends the loop with vo_loop_exit(), and the serving thread
 * interrupts its workers' wait for a request with SIGUSR1 until they have left. With -s it marks
 * the session exited and sends SIGUSR1 to the serving thread, which reads /dev/fuse itself,
 * until it returns. The handler does nothing: its only job is to make the wait return EINTR.
 *
 * A detached (removed) partition is unmounted lazily: processes that still have it open keep
 * talking to our session, which answers EIO, and when the last of them closes the kernel ends
 * the connection and the loop returns by itself. */
#define _GNU_SOURCE
#include "devmount.h"

#include "daemon.h"
#include "log.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

void devmount_init_signals(void)
{
	vo_loop_init_signals(); /* SIGUSR1, for the loop's workers and for -s alike */
}

int devmount_check_path(const char *path, char *err, size_t errlen)
{
	char *copy = strdup(path);
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	const char *dir = dirname(copy);
	struct stat st, dst;
	int r = -1;
	if (stat(dir, &dst) < 0) {
		snprintf(err, errlen, "cannot mount on %s: %s", path, strerror(errno));
	} else if (stat(path, &st) == 0) {
		if (!S_ISREG(st.st_mode))
			snprintf(err, errlen, "cannot mount on %s: not a regular file (a device file "
				 "is a regular file)", path);
		else if (st.st_dev != dst.st_dev)
			snprintf(err, errlen, "cannot mount on %s: it is already a mount point",
				 path);
		else
			r = 0;
	} else if (errno != ENOENT) {
		snprintf(err, errlen, "cannot mount on %s: %s", path, strerror(errno));
	} else if (access(dir, W_OK | X_OK) < 0) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
	} else {
		r = 0;
	}
	free(copy);
	return r;
}

static void *serve(void *arg)
{
	struct devmount *m = arg;
	if (m->loop) {
		vo_loop_run(m->loop); /* its workers take SIGUSR1 by themselves */
	} else {
		sigset_t wake;
		sigemptyset(&wake);
		sigaddset(&wake, VO_LOOP_WAKE_SIGNAL);
		pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
		fuse_session_loop(m->se);
	}
	__atomic_store_n(&m->loop_done, true, __ATOMIC_RELEASE);
	if (m->is_disk) /* the daemon ends with its disk: tell the main thread */
		kill(getpid(), SIGUSR2);
	return NULL;
}

struct devmount *devmount_start(const struct vo_cmdline *cl, const char *path,
				const char *fsname, struct devfile *df, bool is_disk,
				const char *extra_opts, char *err, size_t errlen)
{
	if (devmount_check_path(path, err, errlen) < 0) {
		devfile_free(df);
		return NULL;
	}
	struct devmount *m = calloc(1, sizeof *m);
	if (!m || !(m->path = strdup(path))) {
		snprintf(err, errlen, "out of memory");
		free(m);
		devfile_free(df);
		return NULL;
	}
	m->df = df;
	m->cl = cl;
	m->is_disk = is_disk;
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd >= 0) {
		m->created = true;
		close(fd);
	} else if (errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		goto fail;
	}
	m->se = vo_mount_err((struct vo_cmdline *)cl, fsname, path, &devfile_ops, df, extra_opts,
			     err, errlen);
	if (!m->se)
		goto fail;
	if (!cl->single_thread && !(m->loop = vo_loop_new(m->se, cl->max_threads))) {
		snprintf(err, errlen, "out of memory");
		goto fail_session;
	}
	int r = pthread_create(&m->thread, NULL, serve, m);
	if (r != 0) {
		snprintf(err, errlen, "cannot start a thread for %s: %s", path, strerror(r));
		goto fail_session;
	}
	return m;
fail_session:
	vo_loop_free(m->loop);
	fuse_session_unmount(m->se);
	fuse_session_destroy(m->se);
fail:
	if (m->created)
		unlink(path);
	devfile_free(df);
	free(m->path);
	free(m);
	return NULL;
}

/* Lazy unmount: as root (or in our own mount namespace) umount2 does it; an ordinary user
 * needs fusermount3. */
static void unmount_lazily(const char *path)
{
	if (umount2(path, MNT_DETACH) == 0 || errno != EPERM)
		return;
	char *argv[] = { "fusermount3", "-u", "-q", "-z", "--", (char *)path, NULL };
	posix_spawnattr_t attr;
	posix_spawnattr_init(&attr);
	sigset_t none;
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	pid_t pid;
	int r = posix_spawnp(&pid, "fusermount3", NULL, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	if (r != 0) {
		vo_warn("cannot run fusermount3 to unmount %s: %s", path, strerror(r));
		return;
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		vo_warn("fusermount3 could not unmount %s", path);
}

void devmount_detach(struct devmount *m)
{
	if (m->detached)
		return;
	m->detached = true;
	unmount_lazily(m->path);
	if (m->created && unlink(m->path) < 0)
		vo_warn("cannot remove %s: %s", m->path, strerror(errno));
	m->created = false;
}

bool devmount_finished(const struct devmount *m)
{
	return __atomic_load_n(&m->loop_done, __ATOMIC_ACQUIRE);
}

/* -s: libfuse's loop reads /dev/fuse in our serving thread, where only a signal reaches it.
 * Again and again, because a signal that comes just before the read is taken before it. */
static void stop_single_thread(struct devmount *m)
{
	fuse_session_exit(m->se);
	for (;;) {
		pthread_kill(m->thread, VO_LOOP_WAKE_SIGNAL);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 20 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(m->thread, NULL, &until) == 0)
			return;
	}
}

void devmount_stop(struct devmount *m)
{
	if (!m)
		return;
	if (m->loop) {
		vo_loop_exit(m->loop); /* harmless when it has ended already */
		pthread_join(m->thread, NULL);
	} else if (!devmount_finished(m)) {
		stop_single_thread(m);
	} else {
		pthread_join(m->thread, NULL);
	}
	/* Closes the channel and unmounts what is still mounted (lazily). A detached session
	 * whose last opener has gone was ended by the kernel: nothing left to unmount then. */
	vo_loop_free(m->loop);
	fuse_session_unmount(m->se);
	fuse_session_destroy(m->se);
	if (m->created && unlink(m->path) < 0)
		vo_warn("cannot remove %s: %s", m->path, strerror(errno));
	devfile_free(m->df);
	free(m->path);
	free(m);
}
