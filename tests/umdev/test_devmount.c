/* How a device file's session ends (umdev/devmount.c, common/loop.c), on a real FUSE mount: a
 * serving thread that is reporting a failed read of /dev/fuse when the session is stopped
 * finishes its report, and stderr is usable afterwards.
 *
 * The regression: under a long load, umdev-mbr stopped answering. libfuse's multi-threaded
 * loop ends a session by cancelling its threads; a removed partition's connection that ends
 * while a request is being handed over makes a thread's read fail (ECONNABORTED) and libfuse
 * perror()s it; cancelled inside perror(), the thread died holding stderr's lock, and the mount
 * of the next partition (which captures stderr) waited for it forever, holding the service
 * lock. The kernel opens that window for a few instructions only, so this test makes the read
 * error itself (fuse_probe.h): the next read fails with EBADF, which libfuse reports the same
 * way. stderr is a full pipe, so the report is still being written when the session is
 * stopped. tests/unit/test_loop.c checks the loop itself; this, devmount's use of it.
 *
 * It mounts: it needs root and /dev/fuse, and exits 77 (skipped) without them. The case runs
 * in a child process, so that a hang is seen (and killed) rather than suffered. */
#define _GNU_SOURCE
#include "check.h"
#include "devmount.h"
#include "disk.h"
#include "fuse_probe.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#define HANG_SECONDS 30 /* a generous watchdog: the case takes well under a second */

static int no_reread(void *owner, bool force)
{
	(void)owner, (void)force;
	return 0;
}

static const struct devfile_hooks hooks = { .reread = no_reread };

/* The child: serve a device file, break its reads while stderr is full, stop it. */
static int stop_while_reporting(const char *path)
{
	/* as umdev's service: only serving threads take SIGUSR1 */
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	devmount_init_signals();

	char err[512];
	struct vo_block *b = vo_block_open("mem:1M", 0, err, sizeof err);
	CHECK(b != NULL);
	struct umdev_disk *disk = umdev_disk_new(b, 0, false);
	struct devfile *df = devfile_new(disk, disk->whole, 0600, getuid(), getgid(), &hooks, NULL);
	struct vo_cmdline cl = { .foreground = true };
	fuse_opt_add_arg(&cl.fuse_args, "test_devmount");
	struct devmount *m = devmount_start(&cl, path, "mem:1M", df, false,
					    "default_permissions", err, sizeof err);
	if (!m) {
		fprintf(stderr, "%s\n", err);
		CHECK(m != NULL);
		return 1;
	}
	char buf[512];
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, buf, sizeof buf, 0) == (ssize_t)sizeof buf);
	close(fd);

	int p[2];
	CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
	fill_pipe(p[1]);
	int saved = dup(2);
	fflush(stderr);
	dup2(p[1], 2);

	/* no CHECK until stderr is back: a failure message would wait for the pipe */
	int broken = break_fuse_fds();
	int waited = 0;
	while (!writing_stderr() && waited++ < 1000) {
		wake_readers();
		sleep_ms(10);
	}
	bool reporting = writing_stderr(); /* "fuse: reading device: Bad file descriptor" */

	devmount_stop(m); /* hung here, or below, when the reporting thread was cancelled */

	dup2(saved, 2);
	close(saved);
	clearerr(stderr);
	/* returning at all is the point: stderr's lock is free */
	CHECK(fprintf(stderr, "test_devmount: stderr works after the stop\n") > 0);
	CHECK(broken >= 1);
	CHECK(reporting);
	close(p[0]);
	close(p[1]);
	umdev_disk_free(disk);
	fuse_opt_free_args(&cl.fuse_args);
	return check_failures ? 1 : 0;
}

static void test_stopping_a_session_while_a_thread_reports_a_read_error(void)
{
	char dir[] = "/tmp/umdev-devmount-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char path[64];
	snprintf(path, sizeof path, "%s/dev", dir);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(stop_while_reporting(path)); /* _exit: the child's leaks are not the test's */
	int status = 0, waited = 0;
	while (waitpid(pid, &status, WNOHANG) == 0 && waited++ < HANG_SECONDS * 20)
		sleep_ms(50);
	bool hung = waited > HANG_SECONDS * 20;
	if (hung) {
		fprintf(stderr, "stopping the session hung: the thread reporting the error was "
				"cancelled with stderr locked?\n");
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	CHECK(!hung);
	CHECK(!hung && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(!mounted(path));
	if (mounted(path))
		umount2(path, MNT_DETACH);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
		printf("skipped: mounting needs root and /dev/fuse\n");
		return 77;
	}
	vo_log_init("test_devmount");
	RUN(test_stopping_a_session_while_a_thread_reports_a_read_error);
	return CHECK_DONE();
}
