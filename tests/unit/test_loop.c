/* The multi-threaded serving loop (common/loop.c) as vo_serve (common/daemon.c) runs it, on a
 * real FUSE mount of a file system made for it: its statfs waits until the test lets it go, so
 * the test knows how many requests are being served at once and can make the loop add workers.
 *
 * What a daemon relies on: every way a session ends (SIGTERM, SIGINT, SIGHUP, fusermount3 -u)
 * ends the loop with all its workers gone, whichever thread the kernel gives the signal to;
 * workers are added up to max_threads and no further; and a worker reporting a failed read
 * when the session ends finishes its report, so stderr works afterwards. That last is the
 * hazard of libfuse's own loop, which cancels its workers: one cancelled inside perror() dies
 * holding stderr's lock, and the daemon hangs at its next message or at exit (see loop.h).
 *
 * It mounts: it needs root and /dev/fuse, and exits 77 (skipped) without them. Each case runs
 * in a child process, so that a hang is seen (and killed) rather than suffered. */
#define _GNU_SOURCE
#include "check.h"
#include "daemon.h"
#include "fuse_probe.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define HANG_SECONDS 30 /* a generous watchdog: each case takes well under a second */
#define WORKER "fuse-worker" /* the loop's name for its threads */

extern char **environ;

/* --- the file system: an empty root whose statfs waits for the test --- */

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fs_cond = PTHREAD_COND_INITIALIZER;
static int inside;     /* statfs requests being served now */
static int most;       /* the most served at once */
static bool released;  /* statfs answers at once */

static void t_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct stat st = { .st_ino = ino, .st_mode = S_IFDIR | 0755, .st_nlink = 2 };
	if (ino != FUSE_ROOT_ID)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &st, 0);
}

static void t_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	fuse_reply_err(req, ENOENT);
}

static void t_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	pthread_mutex_lock(&fs_lock);
	if (++inside > most)
		most = inside;
	pthread_cond_broadcast(&fs_cond);
	while (!released)
		pthread_cond_wait(&fs_cond, &fs_lock);
	inside--;
	pthread_mutex_unlock(&fs_lock);
	struct statvfs sv = { .f_bsize = 4096, .f_namemax = 255 };
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
	.getattr = t_getattr,
	.lookup = t_lookup,
	.statfs = t_statfs,
};

/* --- one served mount, in the child process --- */

struct child {
	char dir[64];
	unsigned max_threads;
	void (*drive)(struct child *); /* runs in its own thread while vo_serve serves */
	int sig;                       /* the signal the driver sends, if any */
	bool block_in_main;            /* the main thread (vo_serve's) blocks it */
	int workers_busy;              /* what the driver saw */
	int saved_stderr, pipe[2];     /* the stderr case */
	int broken;
	bool reporting;
};

static void *statfs_client(void *arg)
{
	struct statvfs sv;
	return (void *)(long)statvfs(((struct child *)arg)->dir, &sv);
}

/* n statfs at once; let them go once `wait_for` of them are being served. The loop has then
 * added workers until max_threads or n. */
static void occupy(struct child *c, int n, int wait_for)
{
	pthread_t t[16];
	pthread_mutex_lock(&fs_lock);
	released = false;
	pthread_mutex_unlock(&fs_lock);
	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, statfs_client, c);
	pthread_mutex_lock(&fs_lock);
	while (inside < wait_for)
		pthread_cond_wait(&fs_cond, &fs_lock);
	c->workers_busy = threads_named(WORKER); /* every worker started is running by now */
	released = true;
	pthread_cond_broadcast(&fs_cond);
	pthread_mutex_unlock(&fs_lock);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
}

static void *driver(void *arg)
{
	struct child *c = arg;
	c->drive(c);
	return NULL;
}

/* Mount, serve with vo_serve while c->drive runs, unmount; vo_serve's result. */
static int serve(struct child *c)
{
	struct vo_cmdline cl = { .foreground = true, .max_threads = c->max_threads };
	fuse_opt_add_arg(&cl.fuse_args, "test_loop");
	struct fuse_session *se = vo_mount(&cl, "test_loop", c->dir, &ops, NULL, NULL);
	CHECK(se != NULL);
	if (!se)
		_exit(1);
	pthread_t t;
	pthread_create(&t, NULL, driver, c); /* before the mask below: the driver keeps its own */
	if (c->block_in_main) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, c->sig);
		pthread_sigmask(SIG_BLOCK, &set, NULL);
	}
	int r = vo_serve(se, &cl);
	pthread_join(t, NULL);
	vo_unmount(se);
	fuse_opt_free_args(&cl.fuse_args);
	return r;
}

/* Run one case in a child, with a watchdog; its exit status is its verdict. */
static void run_child(int (*body)(struct child *), struct child *c)
{
	snprintf(c->dir, sizeof c->dir, "/tmp/viewos-loop-XXXXXX");
	CHECK(mkdtemp(c->dir) != NULL);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		/* the daemons' rule: a signal the caller ignores stays ignored (nohup, `cmd &`);
		 * these cases send SIGHUP and SIGINT and so need them at their defaults whatever
		 * ran the test */
		signal(SIGHUP, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		check_failures = 0; /* the child's verdict is its own cases' */
		_exit(body(c)); /* _exit: the child's leaks are not the test's */
	}
	int status = 0, waited = 0;
	while (waitpid(pid, &status, WNOHANG) == 0 && waited++ < HANG_SECONDS * 20)
		sleep_ms(50);
	bool hung = waited > HANG_SECONDS * 20;
	if (hung) {
		fprintf(stderr, "the loop did not end\n");
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	CHECK(!hung);
	if (!hung && WIFSIGNALED(status))
		fprintf(stderr, "the case was killed by signal %d\n", WTERMSIG(status));
	CHECK(!hung && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(!mounted(c->dir));
	if (mounted(c->dir))
		umount2(c->dir, MNT_DETACH);
	rmdir(c->dir);
}

/* --- the cases --- */

static void three_busy_then_signal(struct child *c)
{
	occupy(c, 3, 3);
	kill(getpid(), c->sig); /* to the process: the kernel picks the thread */
}

static int ended_with_every_worker_gone(struct child *c)
{
	int r = serve(c);
	CHECK_EQ(r, 0);
	CHECK_EQ(c->workers_busy, 3);
	CHECK_EQ(threads_named(WORKER), 0);
	struct sigaction sa;
	sigaction(c->sig, NULL, &sa); /* the daemon's own disposition is back */
	CHECK(sa.sa_handler == SIG_DFL);
	sigaction(SIGUSR1, NULL, &sa);
	CHECK(sa.sa_handler == SIG_DFL);
	return check_failures ? 1 : 0;
}

static void test_sigterm_sigint_and_sighup_end_the_loop_with_every_worker_gone(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		struct child c = { .max_threads = 3, .drive = three_busy_then_signal,
				   .sig = sigs[i] };
		run_child(ended_with_every_worker_gone, &c);
	}
}

/* The main thread blocks SIGTERM: the kernel gives it to the driver, a thread that is neither
 * the loop's nor the one in vo_serve (as ext2's committer or fat's notifier may get it). */
static void test_sigterm_taken_by_another_thread_ends_the_loop(void)
{
	struct child c = { .max_threads = 3, .drive = three_busy_then_signal, .sig = SIGTERM,
			   .block_in_main = true };
	run_child(ended_with_every_worker_gone, &c);
}

static void three_busy_then_fusermount(struct child *c)
{
	occupy(c, 3, 3);
	char *argv[] = { "fusermount3", "-u", c->dir, NULL };
	pid_t pid;
	int status = -1;
	CHECK(posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) == 0);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int unmounted_with_every_worker_gone(struct child *c)
{
	int r = serve(c);
	CHECK_EQ(r, 0);
	CHECK_EQ(c->workers_busy, 3);
	CHECK_EQ(threads_named(WORKER), 0);
	return check_failures ? 1 : 0;
}

static void test_fusermount3_u_ends_the_loop_with_every_worker_gone(void)
{
	struct child c = { .max_threads = 3, .drive = three_busy_then_fusermount };
	run_child(unmounted_with_every_worker_gone, &c);
}

/* Five requests at once with max_threads=2: two are served at once, and no third worker is
 * started (the worker that took the second request would have started it before serving). */
static void five_requests_then_sigterm(struct child *c)
{
	occupy(c, 5, 2);
	kill(getpid(), SIGTERM);
}

static int two_workers_at_most(struct child *c)
{
	CHECK_EQ(serve(c), 0);
	CHECK_EQ(c->workers_busy, 2);
	CHECK_EQ(most, 2);
	return check_failures ? 1 : 0;
}

static void test_workers_are_added_up_to_max_threads_and_no_further(void)
{
	struct child c = { .max_threads = 2, .drive = five_requests_then_sigterm };
	run_child(two_workers_at_most, &c);
}

/* Break the reads while stderr is a full pipe: a worker's report of the failed read is being
 * written when SIGTERM ends the session. */
static void report_then_sigterm(struct child *c)
{
	struct statvfs sv;
	released = true;
	statvfs(c->dir, &sv); /* served: a worker now waits for the next request */
	if (pipe2(c->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
		perror("pipe2");
		exit(1);
	}
	fill_pipe(c->pipe[1]);
	c->saved_stderr = dup(2);
	fflush(stderr);
	dup2(c->pipe[1], 2);
	/* no CHECK until stderr is back: a failure message would wait for the pipe */
	c->broken = break_fuse_fds();
	for (int waited = 0; !writing_stderr() && waited < 1000; waited++) {
		wake_readers();
		sleep_ms(10);
	}
	c->reporting = writing_stderr(); /* "fuse: reading device: Bad file descriptor" */
	kill(getpid(), SIGTERM);
}

static int stderr_usable_after_the_end(struct child *c)
{
	int r = serve(c); /* hung here when the reporting worker was cancelled */
	dup2(c->saved_stderr, 2);
	close(c->saved_stderr);
	clearerr(stderr);
	/* returning at all is the point: stderr's lock is free */
	CHECK(fprintf(stderr, "test_loop: stderr works after the end\n") > 0);
	CHECK(c->broken >= 1);
	CHECK(c->reporting);
	CHECK_EQ(r, -EBADF); /* the failed read is what vo_serve reports */
	CHECK_EQ(threads_named(WORKER), 0);
	return check_failures ? 1 : 0;
}

static void test_ending_while_a_worker_reports_a_read_error_leaves_stderr_usable(void)
{
	struct child c = { .drive = report_then_sigterm };
	run_child(stderr_usable_after_the_end, &c);
}

int main(void)
{
	if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
		printf("skipped: mounting needs root and /dev/fuse\n");
		return 77;
	}
	vo_log_init("test_loop");
	RUN(test_sigterm_sigint_and_sighup_end_the_loop_with_every_worker_gone);
	RUN(test_sigterm_taken_by_another_thread_ends_the_loop);
	RUN(test_fusermount3_u_ends_the_loop_with_every_worker_gone);
	RUN(test_workers_are_added_up_to_max_threads_and_no_further);
	RUN(test_ending_while_a_worker_reports_a_read_error_leaves_stderr_usable);
	return CHECK_DONE();
}
