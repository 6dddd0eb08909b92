/* viewfs --enter PID [-- COMMAND [ARGS...]]: run a command in the view process PID is in (what
 * um_attach did for umview): join its user namespace (when it has its own) and its mount
 * namespace, take its root and working directory, and exec. The ids follow from the user
 * namespace: the user is the view's root in a vstat view, themselves otherwise. */
#define _GNU_SOURCE
#include "view.h"

#include "daemon.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int open_proc(const char *pid, const char *what, int flags)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%s/%s", pid, what);
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		vo_error("cannot enter the view of %s: %s: %s", pid, path, strerror(errno));
	return fd;
}

static bool same_ns(int fd, const char *mine)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(mine, &b) == 0 && a.st_ino == b.st_ino &&
	       a.st_dev == b.st_dev;
}

int view_enter(int argc, char **argv)
{
	if (argc < 1 || !*argv[0]) {
		vo_error("--enter needs a PID (viewfs --enter PID [-- COMMAND [ARGS...]])");
		return VO_EXIT_USAGE;
	}
	const char *pid = argv[0];
	char *end;
	long n = strtol(pid, &end, 10);
	if (*end || n <= 0) {
		vo_error("invalid PID '%s' for --enter", pid);
		return VO_EXIT_USAGE;
	}
	char **cmd = NULL;
	if (argc > 1) {
		if (strcmp(argv[1], "--") != 0) {
			vo_error("unexpected '%s' after --enter %s (use -- COMMAND)", argv[1], pid);
			return VO_EXIT_USAGE;
		}
		if (argc > 2)
			cmd = argv + 2;
	}
	char *shell[2] = { NULL, NULL };
	if (!cmd) {
		if (!isatty(STDIN_FILENO)) {
			vo_error("no command given and stdin is not a terminal: give -- COMMAND");
			return VO_EXIT_USAGE;
		}
		struct passwd *pw = getpwuid(getuid());
		shell[0] = pw && pw->pw_shell && *pw->pw_shell ? pw->pw_shell : "/bin/sh";
		cmd = shell;
	}

	int userfd = open_proc(pid, "ns/user", O_RDONLY);
	int mntfd = userfd < 0 ? -1 : open_proc(pid, "ns/mnt", O_RDONLY);
	int rootfd = mntfd < 0 ? -1 : open_proc(pid, "root", O_PATH | O_DIRECTORY);
	int cwdfd = rootfd < 0 ? -1 : open_proc(pid, "cwd", O_PATH | O_DIRECTORY);
	if (cwdfd < 0)
		return VO_EXIT_SOURCE;
	if (!same_ns(userfd, "/proc/self/ns/user") && setns(userfd, CLONE_NEWUSER) < 0) {
		vo_error("cannot enter the view of %s: joining its user namespace: %s", pid,
			 strerror(errno));
		return VO_EXIT_MOUNT;
	}
	if (!same_ns(mntfd, "/proc/self/ns/mnt") && setns(mntfd, CLONE_NEWNS) < 0) {
		vo_error("cannot enter the view of %s: joining its mount namespace: %s", pid,
			 strerror(errno));
		return VO_EXIT_MOUNT;
	}
	if (fchdir(rootfd) < 0 || chroot(".") < 0) {
		vo_error("cannot enter the view of %s: taking its root: %s", pid, strerror(errno));
		return VO_EXIT_MOUNT;
	}
	if (fchdir(cwdfd) < 0)
		(void)!chdir("/");
	close(userfd);
	close(mntfd);
	close(rootfd);
	close(cwdfd);
	/* our ids as the view numbers them: 0 in a virtual-root view */
	uid_t u = getuid();
	gid_t g = getgid();
	setgroups(0, NULL); /* fails harmlessly where the map denies it */
	if (setresgid(g, g, g) < 0 || setresuid(u, u, u) < 0) {
		vo_error("cannot enter the view of %s: %s", pid, strerror(errno));
		return VO_EXIT_MOUNT;
	}
	execvp(cmd[0], cmd);
	int e = errno;
	vo_error("cannot run %s: %s", cmd[0], strerror(e));
	return e == ENOENT ? 127 : 126;
}
