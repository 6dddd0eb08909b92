/* See daemon.h. */
#define _GNU_SOURCE
#include "daemon.h"

#include "log.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int ready_fd = -1;
static bool detached;

void vo_detach_begin(const struct vo_cmdline *cl)
{
	if (cl->foreground)
		return;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		vo_error("cannot create a pipe: %s", strerror(errno));
		exit(VO_EXIT_MOUNT);
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		vo_error("cannot fork: %s", strerror(errno));
		exit(VO_EXIT_MOUNT);
	}
	if (pid > 0) {
		/* The parent: wait for "ready" or for the child's death, and report that. */
		close(p[1]);
		char c;
		ssize_t r;
		while ((r = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (r == 1)
			_exit(VO_EXIT_OK);
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(status))
			_exit(WEXITSTATUS(status) ? WEXITSTATUS(status) : VO_EXIT_MOUNT);
		vo_error("the daemon died during start-up (signal %d)", WTERMSIG(status));
		_exit(VO_EXIT_MOUNT);
	}
	close(p[0]);
	ready_fd = p[1];
	detached = true;
	setsid();
}

void vo_detach_ready(void)
{
	if (ready_fd < 0)
		return;
	if (detached) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			if (null > 2)
				close(null);
		}
		vo_log_to_syslog();
		if (chdir("/") < 0) {
			/* nothing to do: the daemon only uses absolute paths and fds */
		}
	}
	char c = 1;
	while (write(ready_fd, &c, 1) < 0 && errno == EINTR)
		;
	close(ready_fd);
	ready_fd = -1;
}

static bool has_opt(const struct fuse_args *args, const char *prefix)
{
	for (int i = 0; i < args->argc; i++)
		if (strstr(args->argv[i], prefix))
			return true;
	return false;
}

/* Why a mount failed can come from three places: libfuse's log (an option it cannot parse; the
 * kernel's errno when it mounts by itself, as root), fusermount3, which libfuse runs for an
 * ordinary user and which writes its reason straight to our stderr in its own name, and our
 * own checks. Left alone that makes two or three lines in two styles, and none of them need
 * name the mount point. So while it mounts, vo_mount keeps libfuse's first error
 * (vo_log_capture) and gives fusermount3 a memfd as stderr, and then makes one line of what
 * it got: "cannot mount PATH: why". Anything else written to stderr meanwhile (another
 * thread's message, libfuse's -d output) is passed on unchanged afterwards.
 *
 * fd 2 is the whole process's, hence the lock: a daemon with several mounts (umdev) mounts
 * from more than one thread. */
static pthread_mutex_t capture_lock = PTHREAD_MUTEX_INITIALIZER;

struct mount_capture {
	char fuse_error[512];  /* libfuse's first error, "" when none */
	char fusermount[512];  /* fusermount3's first line, "" when none */
	int file;              /* memfd standing in for stderr, -1 when it could not be made */
	int saved_stderr;
};

static void capture_begin(struct mount_capture *c)
{
	pthread_mutex_lock(&capture_lock);
	c->fusermount[0] = '\0';
	vo_log_capture_begin(c->fuse_error, sizeof c->fuse_error);
	fflush(stderr);
	c->file = memfd_create("viewos-mount-stderr", MFD_CLOEXEC);
	c->saved_stderr = c->file >= 0 ? fcntl(2, F_DUPFD_CLOEXEC, 3) : -1;
	if (c->saved_stderr < 0 || dup2(c->file, 2) < 0) { /* dup2 clears close-on-exec */
		if (c->saved_stderr >= 0)
			close(c->saved_stderr);
		if (c->file >= 0)
			close(c->file);
		c->file = c->saved_stderr = -1;
	}
}

static bool is_fusermount_line(const char *line)
{
	return strncmp(line, "fusermount3: ", 13) == 0 || strncmp(line, "fusermount: ", 12) == 0;
}

/* Put stderr back; keep fusermount3's first line, pass everything else on. */
static void capture_end(struct mount_capture *c)
{
	vo_log_capture_end();
	if (c->file >= 0) {
		fflush(stderr);
		dup2(c->saved_stderr, 2);
		close(c->saved_stderr);
		FILE *f = fdopen(c->file, "r");
		if (f) {
			rewind(f);
			char *line = NULL;
			size_t cap = 0;
			ssize_t n;
			while ((n = getline(&line, &cap, f)) > 0) {
				if (is_fusermount_line(line) && !c->fusermount[0]) {
					while (n > 0 && line[n - 1] == '\n')
						line[--n] = '\0';
					snprintf(c->fusermount, sizeof c->fusermount, "%s", line);
				} else {
					fputs(line, stderr);
				}
			}
			free(line);
			fclose(f);
		} else {
			close(c->file);
		}
	}
	pthread_mutex_unlock(&capture_lock);
}

/* fusermount3's line names the real cause (a refused mount point, say); libfuse's then says
 * only that the mount failed. */
static const char *mount_failure(const struct mount_capture *c)
{
	if (c->fusermount[0])
		return c->fusermount;
	if (c->fuse_error[0])
		return c->fuse_error;
	return "the mount failed";
}

/* A message that came while the mount succeeded is still worth a line of its own. */
static void pass_on(const struct mount_capture *c)
{
	if (c->fusermount[0])
		vo_warn("%s", c->fusermount);
	if (c->fuse_error[0])
		vo_warn("%s", c->fuse_error);
}

struct fuse_session *vo_mount_err(struct vo_cmdline *cl, const char *fsname,
				  const char *mountpoint, const struct fuse_lowlevel_ops *ops,
				  void *userdata, const char *extra_opts, char *err, size_t errlen)
{
	struct stat st;
	if (stat(mountpoint, &st) < 0) {
		snprintf(err, errlen, "cannot mount on %s: %s", mountpoint, strerror(errno));
		return NULL;
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "cannot mount on %s: not a directory or a regular file",
			 mountpoint);
		return NULL;
	}

	/* A copy of the arguments per mount: a daemon may mount several times (umdev). */
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	for (int i = 0; i < cl->fuse_args.argc; i++)
		fuse_opt_add_arg(&args, cl->fuse_args.argv[i]);
	if (!has_opt(&cl->fuse_args, "fsname=") && fsname) {
		char *esc = NULL;
		fuse_opt_add_opt_escaped(&esc, fsname);
		char *o = NULL;
		if (asprintf(&o, "-ofsname=%s", esc) > 0)
			fuse_opt_add_arg(&args, o);
		free(o);
		free(esc);
	}
	if (!has_opt(&cl->fuse_args, "subtype=")) {
		char *o = NULL;
		if (asprintf(&o, "-osubtype=%s", vo_progname()) > 0)
			fuse_opt_add_arg(&args, o);
		free(o);
	}
	if (cl->readonly)
		fuse_opt_add_arg(&args, "-oro");
	if (cl->debug)
		fuse_opt_add_arg(&args, "-odebug");
	if (extra_opts && *extra_opts) {
		fuse_opt_add_arg(&args, "-o");
		fuse_opt_add_arg(&args, extra_opts);
	}

	struct mount_capture c;
	capture_begin(&c);
	struct fuse_session *se = fuse_session_new(&args, ops, sizeof *ops, userdata);
	fuse_opt_free_args(&args);
	if (se && fuse_session_mount(se, mountpoint) != 0) {
		fuse_session_destroy(se);
		se = NULL;
	}
	capture_end(&c);
	if (!se) {
		snprintf(err, errlen, "cannot mount %s: %s", mountpoint, mount_failure(&c));
		return NULL;
	}
	pass_on(&c);
	return se;
}

struct fuse_session *vo_mount(struct vo_cmdline *cl, const char *fsname, const char *mountpoint,
			      const struct fuse_lowlevel_ops *ops, void *userdata,
			      const char *extra_opts)
{
	char err[1200];
	struct fuse_session *se = vo_mount_err(cl, fsname, mountpoint, ops, userdata, extra_opts,
					       err, sizeof err);
	if (!se)
		vo_error("%s", err);
	return se;
}

/* The multi-threaded loop is vo_loop (loop.h), not libfuse's, which ends by cancelling its
 * threads: one cancelled inside libfuse's report of a failed read (ECONNABORTED at an
 * unmount) dies holding stderr's lock, and the daemon then hangs at its next message to
 * stderr, which can come before or during its flush.
 *
 * Its signal handlers are ours: libfuse's only mark the session exited, which nothing notices
 * until a request comes unless the signal interrupted a thread of the loop; but vo_loop's
 * workers block it, and the kernel may give it to any other thread (ext2's committer, fat's
 * notifier). Ours also posts to the loop (vo_loop_exit): whichever thread takes the signal,
 * the loop wakes every worker and ends. As libfuse does, a signal is taken only where its
 * disposition is the default (SIGHUP ignored by nohup stays ignored), SIGPIPE is ignored
 * meanwhile, and the dispositions are put back afterwards. */
static struct vo_loop *exiting_loop; /* what the exit signals end: one per process */

static void exit_handler(int sig)
{
	(void)sig;
	vo_loop_exit(exiting_loop);
}

static const int serve_signals[] = { SIGHUP, SIGINT, SIGTERM, SIGPIPE, VO_LOOP_WAKE_SIGNAL };
#define NSERVE_SIGNALS (sizeof serve_signals / sizeof serve_signals[0])

static void take_signals(struct sigaction saved[NSERVE_SIGNALS])
{
	for (size_t i = 0; i < NSERVE_SIGNALS; i++)
		sigaction(serve_signals[i], NULL, &saved[i]);
	vo_loop_init_signals();
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: the loop's wait must return */
	for (size_t i = 0; i < NSERVE_SIGNALS; i++) {
		int sig = serve_signals[i];
		if (sig == VO_LOOP_WAKE_SIGNAL || saved[i].sa_handler != SIG_DFL)
			continue;
		sa.sa_handler = sig == SIGPIPE ? SIG_IGN : exit_handler;
		sigaction(sig, &sa, NULL);
	}
}

static void give_back_signals(const struct sigaction saved[NSERVE_SIGNALS])
{
	for (size_t i = 0; i < NSERVE_SIGNALS; i++)
		sigaction(serve_signals[i], &saved[i], NULL);
}

static int serve_threads(struct fuse_session *se, unsigned max_threads)
{
	struct vo_loop *l = vo_loop_new(se, max_threads);
	if (!l) {
		vo_error("out of memory");
		return -ENOMEM;
	}
	struct sigaction saved[NSERVE_SIGNALS];
	exiting_loop = l;
	take_signals(saved);
	int r = vo_loop_run(l);
	give_back_signals(saved);
	exiting_loop = NULL;
	vo_loop_free(l);
	return r;
}

int vo_serve(struct fuse_session *se, const struct vo_cmdline *cl)
{
	/* -s is one worker of the same loop, not libfuse's fuse_session_loop(): that one checks
	 * for the end of the session and then reads the device, so a SIGTERM landing between the
	 * two leaves it waiting for a request that never comes (a daemon that ignores a signal
	 * when it arrives just after a request was served). Our loop interrupts its workers
	 * again until they have left. */
	int r = serve_threads(se, cl->single_thread ? 1 : cl->max_threads);
	/* a loop ended by a signal is not an error for us */
	return r < 0 && r != -EINTR ? r : 0;
}

void vo_unmount(struct fuse_session *se)
{
	if (!se)
		return;
	fuse_session_unmount(se);
	fuse_session_destroy(se);
}

int vo_daemon_main(const struct vo_daemon_info *info, const struct vo_daemon_ops *ops, void *cfg,
		   int argc, char **argv)
{
	struct vo_cmdline cl;
	vo_log_init(info->name);
	int r = vo_cmdline_parse(info, cfg, argc, argv, &cl);
	if (r != 0) {
		vo_cmdline_free(&cl);
		return r > 0 ? VO_EXIT_OK : VO_EXIT_USAGE;
	}
	vo_log_set_debug(cl.debug);
	const char *source = cl.npositional > 1 ? cl.positional[0] : NULL;
	const char *mountpoint = cl.positional[cl.npositional - 1];

	/* The cheap check first: a missing mount point must not cost opening the source. */
	struct stat st;
	if (stat(mountpoint, &st) < 0) {
		vo_error("cannot mount on %s: %s", mountpoint, strerror(errno));
		vo_cmdline_free(&cl);
		return VO_EXIT_MOUNT;
	}
	vo_detach_begin(&cl);
	void *state = NULL;
	int status = ops->start(cfg, &cl, &state);
	if (status != VO_EXIT_OK) {
		vo_cmdline_free(&cl);
		return status;
	}
	struct fuse_session *se = vo_mount(&cl, source, mountpoint, ops->ll_ops, state, NULL);
	if (!se) {
		ops->stop(state);
		vo_cmdline_free(&cl);
		return VO_EXIT_MOUNT;
	}
	vo_detach_ready();
	r = vo_serve(se, &cl);
	vo_unmount(se);
	ops->stop(state);
	vo_cmdline_free(&cl);
	if (r < 0) {
		vo_error("serving %s failed: %s", mountpoint, strerror(-r));
		return VO_EXIT_MOUNT;
	}
	return VO_EXIT_OK;
}
