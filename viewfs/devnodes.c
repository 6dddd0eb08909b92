/* mknod of device nodes in a view.
 *
 * The kernel refuses mknod(S_IFCHR/S_IFBLK) to anyone without CAP_MKNOD in the initial user
 * namespace, before any file system is asked: a view's root (root of a user namespace) gets
 * EPERM, and a package's maintainer script that makes a device node fails. With vstat a device
 * node of the view is only a record in the layer (viewfs turns an empty regular file into one
 * when it is given the user.viewfs.mknod attribute), so the launcher catches these two system
 * calls with a seccomp filter that hands them to it (SECCOMP_RET_USER_NOTIF) and does them that
 * way: a helper process joins the caller's namespaces, root and credentials (so permissions,
 * umask and the owner are the caller's), creates the file and sets the attribute. Every other
 * mknod (FIFOs, sockets, regular files) goes to the kernel untouched. x86-64 only (the filter
 * knows its system call numbers); elsewhere device nodes stay refused.
 * Hand-written: no library does it, and it is a dozen system calls. */
#define _GNU_SOURCE
#include "view.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * sizeof(__u64))

int devnodes_filter(void)
{
	struct sock_filter f[] = {
		/* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 9),
		/* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		/* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mknod, 0, 2),
		/* 4 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)),
		/* 5 */ BPF_STMT(BPF_JMP | BPF_JA, 2),
		/* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mknodat, 0, 4),
		/* 7 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2)),
		/* 8 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, S_IFMT),
		/* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFCHR, 2, 0),
		/* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFBLK, 1, 0),
		/* 11 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* 12 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	};
	struct sock_fprog prog = { .len = sizeof f / sizeof *f, .filter = f };
	int fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
			      &prog);
	if (fd < 0)
		vo_error("cannot catch mknod in the view (device nodes will be refused): %s",
			 strerror(errno));
	return fd;
}
#else
int devnodes_filter(void)
{
	return -1;
}
#endif

/* The caller's path argument (NUL-terminated within PATH_MAX). */
static int read_path(pid_t pid, unsigned long addr, char *out, size_t len)
{
	size_t got = 0;
	while (got < len) {
		size_t page = 4096 - ((addr + got) & 4095);
		size_t want = page < len - got ? page : len - got;
		struct iovec local = { out + got, want }, remote = { (void *)(addr + got), want };
		ssize_t r = process_vm_readv(pid, &local, 1, &remote, 1, 0);
		if (r <= 0)
			return -EFAULT;
		if (memchr(out + got, '\0', (size_t)r))
			return 0;
		got += (size_t)r;
	}
	return -ENAMETOOLONG;
}

/* "Uid:\t0\t0\t0\t0" -> the 4th (file-system) id. */
static long status_id(const char *status, const char *key)
{
	const char *p = strstr(status, key);
	if (!p)
		return -1;
	p += strlen(key);
	unsigned long v[4];
	if (sscanf(p, "%lu %lu %lu %lu", &v[0], &v[1], &v[2], &v[3]) != 4)
		return -1;
	return (long)v[3];
}

/* In a forked helper: do the mknod as the caller would, in its view. Returns an errno. */
static int helper(pid_t pid, int dirfd_arg, const char *path, mode_t mode, dev_t dev)
{
	char p[64], status[4096];
	int userfd, mntfd, rootfd, basefd, stfd;
	snprintf(p, sizeof p, "/proc/%d/ns/user", (int)pid);
	userfd = open(p, O_RDONLY | O_CLOEXEC);
	snprintf(p, sizeof p, "/proc/%d/ns/mnt", (int)pid);
	mntfd = open(p, O_RDONLY | O_CLOEXEC);
	snprintf(p, sizeof p, "/proc/%d/root", (int)pid);
	rootfd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd_arg == AT_FDCWD)
		snprintf(p, sizeof p, "/proc/%d/cwd", (int)pid);
	else
		snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)pid, dirfd_arg);
	basefd = open(p, O_PATH | O_CLOEXEC);
	if (userfd < 0 || mntfd < 0 || rootfd < 0 || basefd < 0)
		return errno ? errno : ESRCH;
	if (setns(userfd, CLONE_NEWUSER) < 0 || setns(mntfd, CLONE_NEWNS) < 0 ||
	    fchdir(rootfd) < 0 || chroot(".") < 0)
		return errno;
	/* the caller's ids as its view numbers them (read after joining its user namespace) */
	snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
	stfd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = stfd < 0 ? -1 : read(stfd, status, sizeof status - 1);
	if (n <= 0)
		return ESRCH;
	status[n] = '\0';
	long uid = status_id(status, "Uid:"), gid = status_id(status, "Gid:");
	const char *um = strstr(status, "Umask:");
	unsigned umask_v = 022;
	if (um)
		sscanf(um + 6, "%o", &umask_v);
	gid_t groups[64];
	int ng = 0;
	const char *g = strstr(status, "Groups:");
	if (g) {
		g += 7;
		char *end;
		for (unsigned long v; ng < 64 && (v = strtoul(g, &end, 10), end != g); g = end)
			groups[ng++] = (gid_t)v;
	}
	if (uid < 0 || gid < 0)
		return ESRCH;
	setgroups((size_t)ng, groups); /* refused where the map denies it: then none change */
	if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0 ||
	    setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0)
		return errno;
	int at = path[0] == '/' ? AT_FDCWD : basefd;
	int fd = openat(at, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			mode & 07777 & ~umask_v);
	if (fd < 0)
		return errno;
	/* Only a view's own files can hold a virtual device (not a real bind such as /dev or an
	 * except= path: there the caller gets the kernel's EPERM). */
	struct statfs sf;
	if (fstatfs(fd, &sf) < 0 || sf.f_type != FUSE_SUPER_MAGIC) {
		unlinkat(at, path, 0);
		close(fd);
		return EPERM;
	}
	char value[64];
	snprintf(value, sizeof value, "%c %u %u", S_ISCHR(mode) ? 'c' : 'b', major(dev), minor(dev));
	if (fsetxattr(fd, "user.viewfs.mknod", value, strlen(value), 0) < 0) {
		int e = errno;
		unlinkat(at, path, 0);
		close(fd);
		return e == ENOTSUP ? EPERM : e;
	}
	close(fd);
	return 0;
}

static void handle(int listener, struct seccomp_notif *req, struct seccomp_notif_resp *resp)
{
	memset(resp, 0, sizeof *resp);
	resp->id = req->id;
	bool at = req->data.nr == __NR_mknodat;
	int dirfd_arg = at ? (int)req->data.args[0] : AT_FDCWD;
	unsigned long addr = req->data.args[at ? 1 : 0];
	mode_t mode = (mode_t)req->data.args[at ? 2 : 1];
	dev_t dev = (dev_t)req->data.args[at ? 3 : 2];
	char path[4096];
	int err = read_path((pid_t)req->pid, addr, path, sizeof path);
	/* the pid is still the caller (not a reused number) */
	if (err == 0 && ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) < 0)
		return;
	if (err == 0) {
		pid_t h = fork();
		if (h == 0)
			_exit(helper((pid_t)req->pid, dirfd_arg, path, mode, dev));
		int st;
		if (h < 0)
			err = -EAGAIN;
		else if (waitpid(h, &st, 0) < 0 || !WIFEXITED(st))
			err = -EIO;
		else
			err = -WEXITSTATUS(st);
	}
	resp->error = err;
	resp->val = 0;
	ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
}

void devnodes_serve(int listener, int stop_fd)
{
	struct seccomp_notif_sizes sizes;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0)
		return;
	struct seccomp_notif *req = calloc(1, sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif
										  : sizeof *req);
	struct seccomp_notif_resp *resp =
		calloc(1, sizes.seccomp_notif_resp > sizeof *resp ? sizes.seccomp_notif_resp
								  : sizeof *resp);
	while (req && resp) {
		struct pollfd pf[2] = { { .fd = listener, .events = POLLIN },
					{ .fd = stop_fd, .events = POLLIN } };
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents || (pf[0].revents & (POLLHUP | POLLERR | POLLNVAL)))
			break;
		if (!(pf[0].revents & POLLIN))
			continue;
		memset(req, 0, sizes.seccomp_notif);
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0)
			continue; /* the caller went away (ENOENT), or a signal */
		handle(listener, req, resp);
	}
	free(req);
	free(resp);
}
