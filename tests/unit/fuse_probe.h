/* What the tests of a FUSE serving loop (test_loop.c, tests/umdev/test_devmount.c) use to look
 * inside their own process: which threads wait in which system call, the mount table, and the
 * means to make libfuse report a failed read into a stderr that blocks.
 *
 * Making the read error: the kernel fails a read of /dev/fuse with ECONNABORTED only for the
 * few instructions in which a connection ends while a request is handed over, so the tests put
 * write-only /dev/null in place of every /dev/fuse descriptor: the next read fails with EBADF,
 * which libfuse reports the same way (perror "fuse: reading device"). */
#ifndef VIEWOS_FUSE_PROBE_H
#define VIEWOS_FUSE_PROBE_H

/* the including file defines _GNU_SOURCE first (dup3) */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Fill the pipe to the last byte (fd is non-blocking until then): any write then blocks. */
static inline void fill_pipe(int fd)
{
	static const char block[4096];
	while (write(fd, block, sizeof block) > 0)
		;
	while (write(fd, block, 1) > 0)
		;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
}

/* Put write-only /dev/null in place of every /dev/fuse descriptor of this process; how many. */
static inline int break_fuse_fds(void)
{
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	DIR *d = opendir("/proc/self/fd");
	int replaced = 0;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char link[300], target[64];
		snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(link, target, sizeof target - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, "/dev/fuse") == 0 &&
		    dup3(null, atoi(e->d_name), O_CLOEXEC) >= 0)
			replaced++;
	}
	if (d)
		closedir(d);
	close(null);
	return replaced;
}

/* One line of /proc/self/task/TID/FILE. */
static inline void task_line(const char *tid, const char *file, char *line, size_t len)
{
	char path[300];
	snprintf(path, sizeof path, "/proc/self/task/%s/%s", tid, file);
	FILE *f = fopen(path, "r");
	line[0] = '\0';
	if (f && !fgets(line, (int)len, f))
		line[0] = '\0';
	if (f)
		fclose(f);
}

/* SIGUSR1 (the loop's wake-up) to every thread blocked in read(2) (its /proc syscall line is
 * "0 ARG1 ..."): a worker waiting for a request reads again, and fails. Only those: a signal
 * would end a report being written. */
static inline void wake_readers(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	char line[128];
	while (d && (e = readdir(d))) {
		task_line(e->d_name, "syscall", line, sizeof line);
		if (strncmp(line, "0 ", 2) == 0)
			syscall(SYS_tgkill, getpid(), atoi(e->d_name), SIGUSR1);
	}
	if (d)
		closedir(d);
}

/* Is some thread blocked in write(2, ...)? */
static inline bool writing_stderr(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	char line[128];
	bool found = false;
	while (d && !found && (e = readdir(d))) {
		task_line(e->d_name, "syscall", line, sizeof line);
		found = strncmp(line, "1 0x2 ", 6) == 0;
	}
	if (d)
		closedir(d);
	return found;
}

/* How many threads of this process are named name (pthread_setname_np). */
static inline int threads_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	char line[64];
	int n = 0;
	while (d && (e = readdir(d))) {
		task_line(e->d_name, "comm", line, sizeof line);
		line[strcspn(line, "\n")] = '\0';
		n += strcmp(line, name) == 0;
	}
	if (d)
		closedir(d);
	return n;
}

static inline bool mounted(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096], point[4096];
	bool found = false;
	while (f && !found && fgets(line, sizeof line, f))
		found = sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1 &&
			strcmp(point, path) == 0;
	if (f)
		fclose(f);
	return found;
}

#endif
