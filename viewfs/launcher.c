/* A view: COMMAND runs with SOURCE patched over its root (or over MOUNTPOINT), in its own user
 * and mount namespaces, while this process serves the view as its daemon.
 *
 *   viewfs [-o OPTS] SOURCE / [-- COMMAND [ARGS...]]
 *   viewfs [-o OPTS] SOURCE MOUNTPOINT -- COMMAND [ARGS...]
 *
 * Two processes:
 *   - the launcher stays in the user's own namespaces and serves the FUSE mount. It sees the
 *     real owners of the real files (root is 0 there), so with vstat its answers are the ids
 *     the view should show: the kernel reads them through the view's id map (view 0 is the
 *     user, 1..N the user's subordinate ids), so host root shows as the view's root and other
 *     owners as themselves. It does every real operation with the user's credentials (mincow
 *     falls back to the layer when refused).
 *   - the child makes the namespaces (the launcher writes its id maps from outside), mounts
 *     the FUSE file system inside them (the fd goes back to the launcher over a socket), binds
 *     the real /proc, /sys, /dev (/run) and except= paths, pivots into the view and execs
 *     COMMAND, with the terminal and the process group of the launcher.
 * The view ends when COMMAND exits: what it left running gets SIGTERM (and SIGKILL two seconds
 * later; the launcher is their subreaper), then the launcher stops serving and exits with the
 * command's status (a signal's death is 128+N, as shells report it). SIGTERM and SIGHUP to the launcher are passed
 * on; terminal signals (Ctrl-C, Ctrl-\) reach the command's process group directly. If the
 * launcher dies the command is killed (PR_SET_PDEATHSIG), and a mount made in a private
 * namespace goes away with its last process: nothing is ever left mounted on the host.
 *
 * Left out: a PID namespace (the view sees the host's processes, as View-OS did, and
 * --enter joins by PID); network namespaces (not a view concern). */
#define _GNU_SOURCE
#include "view.h"

#include "daemon.h"
#include "log.h"
#include "viewfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sched.h>
#include <unistd.h>

/* Where the child mounts the view before pivoting into it (its own mount namespace: nobody
 * else sees it). /tmp is on every system; an except=/tmp copy is taken before it is covered. */
#define STAGING "/tmp"

bool view_requested(const struct vo_cmdline *cl)
{
	if (cl->command)
		return true;
	return cl->npositional == 2 && strcmp(cl->positional[1], "/") == 0;
}

/* The command, or the user's login shell. NULL after a message. */
static char **command_words(const struct vo_cmdline *cl, char **shell_words)
{
	if (cl->command && cl->command[0])
		return cl->command;
	if (!isatty(STDIN_FILENO)) {
		vo_error("no command given and stdin is not a terminal: give -- COMMAND [ARGS...]");
		return NULL;
	}
	struct passwd *pw = getpwuid(getuid());
	const char *sh = pw && pw->pw_shell && *pw->pw_shell ? pw->pw_shell : "/bin/sh";
	shell_words[0] = strdup(sh);
	shell_words[1] = NULL;
	return shell_words;
}

/* ---------------------------------------------------------------- fd passing */

static int send_fd(int sock, int fd)
{
	char byte = 'f';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof u.buf };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	return sendmsg(sock, &msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* The fd, or -1 (the other side ended without sending). */
static int recv_fd(int sock)
{
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof u.buf };
	ssize_t r;
	while ((r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = r == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

static char recv_byte(int sock)
{
	char b;
	ssize_t r;
	while ((r = read(sock, &b, 1)) < 0 && errno == EINTR)
		;
	return r == 1 ? b : 0;
}

static void send_byte(int sock, char b)
{
	while (write(sock, &b, 1) < 0 && errno == EINTR)
		;
}

/* ---------------------------------------------------------------- the child */

struct child_plan {
	const struct viewfs_config *cfg;
	const struct view_ids *ids;
	const char *source;
	const char *mountpoint; /* canonical */
	bool pivot;             /* mountpoint is "/" */
	char **argv;
	char cwd[PATH_MAX];
	mode_t umask;
	struct rlimit nofile;
	sigset_t sigmask;
};

/* In the child: namespaces, mounts, exec. Returns an exit code only on failure. */
static int child_main(const struct child_plan *p, int sock)
{
	struct view_binds binds = { .n = 0 };
	umask(p->umask);
	setrlimit(RLIMIT_NOFILE, &p->nofile);

	if (p->ids->userns) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
			vo_error("cannot create a user namespace: %s (are user namespaces available? "
				 "see /proc/sys/user/max_user_namespaces)", strerror(errno));
			return VO_EXIT_MOUNT;
		}
		send_byte(sock, 'u');
		if (recv_byte(sock) != 'm')
			return VO_EXIT_MOUNT; /* the launcher has said why */
	} else if (unshare(CLONE_NEWNS) < 0) {
		vo_error("cannot create a mount namespace: %s", strerror(errno));
		return VO_EXIT_MOUNT;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		vo_error("cannot make the mounts of the view private: %s", strerror(errno));
		return VO_EXIT_MOUNT;
	}

	int rc = 0;
	if (p->pivot) {
		static const char *const real[] = { "/proc", "/sys", "/dev" };
		for (size_t i = 0; rc == 0 && i < sizeof real / sizeof *real; i++)
			rc = rootfs_clone(&binds, real[i], real[i], false);
		/* /run is kept real only when it is a file system of its own (a tmpfs with the
		 * sockets of running services, which a FUSE view could not pass on). */
		struct statx sx;
		if (rc == 0 && statx(AT_FDCWD, "/run", AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) == 0 &&
		    (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
		    (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
			rc = rootfs_clone(&binds, "/run", "/run", false);
	}
	for (char **e = p->cfg->except_paths; rc == 0 && e && *e; e++) {
		char host[PATH_MAX];
		snprintf(host, sizeof host, "%s%s", p->pivot ? "" : p->mountpoint, *e);
		rc = rootfs_clone(&binds, host, *e, true);
	}
	if (rc < 0) {
		rootfs_binds_free(&binds);
		return VO_EXIT_MOUNT;
	}

	const char *staging = p->pivot ? STAGING : p->mountpoint;
	int fusefd = rootfs_mount_fuse(staging, p->source, getuid(), getgid());
	if (fusefd < 0 || send_fd(sock, fusefd) < 0) {
		if (fusefd >= 0)
			vo_error("cannot pass the view to its daemon: %s", strerror(errno));
		rootfs_binds_free(&binds);
		return VO_EXIT_MOUNT;
	}
	close(fusefd);
	rc = rootfs_attach(&binds, staging);
	rootfs_binds_free(&binds);
	if (rc < 0 || (p->pivot && rootfs_pivot(staging) < 0))
		return VO_EXIT_MOUNT;
	/* The same working directory, now seen through the view (or / when it has none). */
	if (chdir(p->cwd) < 0 && chdir("/") < 0)
		return VO_EXIT_MOUNT;
	if (view_ids_become(p->ids) < 0)
		return VO_EXIT_MOUNT;
	if (p->cfg->vstat && p->ids->userns) {
		int listener = devnodes_filter();
		if (listener >= 0) {
			send_fd(sock, listener);
			close(listener);
		}
	}
	close(sock);

	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_SETMASK, &p->sigmask, NULL);
	execvp(p->argv[0], p->argv);
	int e = errno;
	vo_error("cannot run %s: %s", p->argv[0], strerror(e));
	return e == ENOENT ? 127 : 126;
}

/* ---------------------------------------------------------------- the launcher */

/* libfuse's messages, less one: when the command's last process exits, its mount namespace
 * goes and the kernel aborts the view's connection, which libfuse reports as an error while
 * the launcher is ending the view anyway. */
static void launcher_fuse_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	size_t len = strlen(msg);
	if (len && msg[len - 1] == '\n')
		msg[len - 1] = '\0';
	if (strstr(msg, "reading device") && strstr(msg, strerror(ECONNABORTED)))
		return;
	if (level <= FUSE_LOG_ERR)
		vo_error("%s", msg);
	else if (level == FUSE_LOG_WARNING)
		vo_warn("%s", msg);
	else
		vo_debug("%s", msg);
}

struct devnodes_arg {
	int listener, stop_fd;
};

static void *devnodes_thread(void *arg)
{
	struct devnodes_arg *a = arg;
	devnodes_serve(a->listener, a->stop_fd);
	return NULL;
}

static void *serve_thread(void *arg)
{
	struct fuse_session *se = arg;
	intptr_t r = viewfs_serve_ex(se, 0, false);
	return (void *)r;
}

/* Wait for the command; pass SIGTERM and SIGHUP on (and SIGINT/SIGQUIT sent with kill(): those
 * from the terminal reach the command by themselves). Returns its exit status. */
static int wait_command(pid_t child)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGQUIT);
	for (;;) {
		int st;
		pid_t w = waitpid(child, &st, WNOHANG);
		if (w == child)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);
		if (sig == SIGTERM || sig == SIGHUP || ((sig == SIGINT || sig == SIGQUIT) && si.si_code == SI_USER))
			kill(child, sig);
	}
}

/* Our children now (the command's orphans come to us: we are their subreaper). */
static int list_children(pid_t *out, int max)
{
	int n = 0;
	DIR *tasks = opendir("/proc/self/task");
	struct dirent *t;
	while (tasks && (t = readdir(tasks)) && n < max) {
		if (t->d_name[0] == '.')
			continue;
		char path[300];
		snprintf(path, sizeof path, "/proc/self/task/%s/children", t->d_name);
		FILE *f = fopen(path, "re");
		long pid;
		while (f && n < max && fscanf(f, "%ld", &pid) == 1)
			out[n++] = (pid_t)pid;
		if (f)
			fclose(f);
	}
	if (tasks)
		closedir(tasks);
	return n;
}

/* The command has exited: what it left running in the view (background jobs, daemons such as
 * a umfuse-ext2 mounted there) gets SIGTERM, two seconds to finish (the view is still served,
 * so a daemon can flush), then SIGKILL. */
static void end_leftovers(void)
{
	pid_t kids[256];
	struct timespec tick = { 0, 20 * 1000 * 1000 };
	for (int round = 0; round < 100; round++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		int n = list_children(kids, 256);
		if (n == 0)
			return;
		for (int i = 0; i < n; i++)
			kill(kids[i], round < 99 ? SIGTERM : SIGKILL);
		nanosleep(&tick, NULL);
	}
	while (waitpid(-1, NULL, 0) > 0)
		;
}

int view_main(struct viewfs_config *cfg, struct vo_cmdline *cl)
{
	const char *source = cl->positional[0];
	char *shell_words[2] = { NULL, NULL };
	char **argv = command_words(cl, shell_words);
	if (!argv)
		return VO_EXIT_USAGE;

	struct view_ids ids;
	view_ids_plan(&ids, cfg->vstat && !cfg->keep_user);
	struct child_plan plan = { .cfg = cfg, .ids = &ids, .source = source, .argv = argv };
	char mp[PATH_MAX];
	if (!realpath(cl->positional[1], mp)) {
		vo_error("cannot mount on %s: %s", cl->positional[1], strerror(errno));
		free(shell_words[0]);
		return VO_EXIT_MOUNT;
	}
	plan.mountpoint = mp;
	plan.pivot = strcmp(mp, "/") == 0;
	if (!getcwd(plan.cwd, sizeof plan.cwd))
		strcpy(plan.cwd, "/");
	plan.umask = umask(022);
	umask(plan.umask);
	getrlimit(RLIMIT_NOFILE, &plan.nofile);

	/* Both trees are opened now, in the user's own namespaces: the daemon reaches the real
	 * files only through them. */
	cfg->in_view = true;
	fuse_set_log_func(launcher_fuse_log);
	int layer_fd, lower_fd;
	int status = viewfs_open_dirs(cfg, source, mp, &layer_fd, &lower_fd);
	if (status != VO_EXIT_OK) {
		free(shell_words[0]);
		return status;
	}
	struct viewfs *fs = viewfs_new(cfg, lower_fd, layer_fd, cl->readonly, source,
				       plan.pivot ? NULL : mp, &status);
	if (!fs) {
		close(layer_fd);
		close(lower_fd);
		free(shell_words[0]);
		return status;
	}

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		vo_error("cannot create a socket: %s", strerror(errno));
		viewfs_free(fs);
		free(shell_words[0]);
		return VO_EXIT_MOUNT;
	}
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGQUIT);
	sigprocmask(SIG_BLOCK, &block, &plan.sigmask);

	/* Orphans of the command become ours, so that the view can end them (end_leftovers). */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0) {
		vo_error("cannot start the command: %s", strerror(errno));
		status = VO_EXIT_MOUNT;
		goto out;
	}
	if (child == 0) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(VO_EXIT_MOUNT);
		int r = child_main(&plan, sv[1]);
		fflush(stderr);
		_exit(r);
	}
	close(sv[1]);
	sv[1] = -1;

	if (ids.userns) {
		if (recv_byte(sv[0]) != 'u')
			goto wait_child; /* the child said why */
		if (view_ids_map(&ids, child) < 0) {
			kill(child, SIGKILL);
			wait_command(child);
			status = VO_EXIT_MOUNT;
			goto out;
		}
		send_byte(sv[0], 'm');
	}
	int fusefd = recv_fd(sv[0]);
	if (fusefd < 0)
		goto wait_child;

	/* The kernel mount exists (in the child's namespace): serve it through this fd. */
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	fuse_opt_add_arg(&args, "viewfs");
	if (cl->debug)
		fuse_opt_add_arg(&args, "-odebug");
	struct fuse_session *se = fuse_session_new(&args, viewfs_ops(), sizeof *viewfs_ops(), fs);
	fuse_opt_free_args(&args);
	char fdpath[32];
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fusefd);
	if (!se || fuse_session_mount(se, fdpath) != 0) {
		vo_error("cannot serve the view: the FUSE session failed");
		if (se)
			fuse_session_destroy(se);
		close(fusefd);
		kill(child, SIGKILL);
		wait_command(child);
		status = VO_EXIT_MOUNT;
		goto out;
	}
	viewfs_set_session(fs, se);
	pthread_t server;
	if (pthread_create(&server, NULL, serve_thread, se) != 0) {
		vo_error("cannot start serving the view");
		fuse_session_destroy(se);
		kill(child, SIGKILL);
		wait_command(child);
		status = VO_EXIT_MOUNT;
		goto out;
	}
	/* The child's last word before exec: the mknod catcher (or nothing: end of file). */
	struct devnodes_arg dn = { .listener = recv_fd(sv[0]), .stop_fd = -1 };
	int stop[2] = { -1, -1 };
	pthread_t catcher;
	bool catching = dn.listener >= 0 && pipe2(stop, O_CLOEXEC) == 0;
	if (catching) {
		dn.stop_fd = stop[0];
		catching = pthread_create(&catcher, NULL, devnodes_thread, &dn) == 0;
	}
	status = wait_command(child);
	if (catching) {
		send_byte(stop[1], 's');
		pthread_join(catcher, NULL);
	}
	for (int i = 0; i < 2; i++)
		if (stop[i] >= 0)
			close(stop[i]);
	if (dn.listener >= 0)
		close(dn.listener);
	end_leftovers();
	viewfs_serve_stop(se);
	pthread_join(server, NULL);
	vo_unmount(se);
	viewfs_set_session(fs, NULL);
	goto out;

wait_child:
	status = wait_command(child);
	if (status == 0)
		status = VO_EXIT_MOUNT;
out:
	if (sv[1] >= 0)
		close(sv[1]);
	close(sv[0]);
	viewfs_free(fs);
	free(shell_words[0]);
	sigprocmask(SIG_SETMASK, &plan.sigmask, NULL);
	return status;
}
