/* Unit tests for the block layer (common/block*.c): each backend, slices at their edges,
 * short reads at the end of a device, and NBD against a real nbdkit started by the test. */
#define _GNU_SOURCE
#include "check.h"

#include "block.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/viewos-unit-XXXXXX";
static char err[512];

static char *tmp_path(const char *name)
{
	static char buf[4][256];
	static int i;
	char *p = buf[i++ % 4];
	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

static void make_file(const char *path, off_t size)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	CHECK(fd >= 0 && ftruncate(fd, size) == 0);
	close(fd);
}

static bool all_bytes(const char *buf, size_t len, char c)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != c)
			return false;
	return true;
}

/* What every backend must do, on a device of `size` bytes (size >= 8192). */
static void exercise(struct vo_block *b, uint64_t size)
{
	char buf[8192], back[8192];
	CHECK_EQ(vo_block_size(b), size);

	/* never written: zeros */
	CHECK_EQ(vo_block_pread(b, back, 4096, 4096), 4096);
	CHECK(all_bytes(back, 4096, 0));

	memset(buf, 'a', sizeof buf);
	CHECK_EQ(vo_block_pwrite(b, buf, 4096, 0), 4096);
	CHECK_EQ(vo_block_pread(b, back, 4096, 0), 4096);
	CHECK(all_bytes(back, 4096, 'a'));

	/* the last byte, then past the end */
	CHECK_EQ(vo_block_pwrite(b, "z", 1, size - 1), 1);
	CHECK_EQ(vo_block_pread(b, back, 1, size - 1), 1);
	CHECK_EQ(back[0], 'z');
	CHECK_EQ(vo_block_pwrite(b, "y", 1, size), -ENOSPC);
	CHECK_EQ(vo_block_pwrite(b, buf, 100, size + 1000), -ENOSPC);
	/* a write that straddles the end writes what fits */
	CHECK_EQ(vo_block_pwrite(b, buf, 100, size - 10), 10);
	/* reads at or past the end are short / empty */
	CHECK_EQ(vo_block_pread(b, back, 100, size - 10), 10);
	CHECK(all_bytes(back, 10, 'a'));
	CHECK_EQ(vo_block_pread(b, back, 100, size), 0);
	CHECK_EQ(vo_block_pread(b, back, 100, size + 4096), 0);

	/* zero makes a range read back as zeros, trim is accepted */
	CHECK_EQ(vo_block_zero(b, 1024, 1024), 0);
	CHECK_EQ(vo_block_pread(b, back, 4096, 0), 4096);
	CHECK(all_bytes(back, 1024, 'a'));
	CHECK(all_bytes(back + 1024, 1024, 0));
	CHECK(all_bytes(back + 2048, 2048, 'a'));
	CHECK_EQ(vo_block_trim(b, 0, 4096), 0);
	CHECK_EQ(vo_block_zero(b, size - 10, 1000), 0); /* clipped at the end */
	CHECK_EQ(vo_block_pread(b, back, 10, size - 10), 10);
	CHECK(all_bytes(back, 10, 0));
	/* leave a marker in the last byte for the caller to find in the backing store */
	CHECK_EQ(vo_block_pwrite(b, "z", 1, size - 1), 1);
	CHECK_EQ(vo_block_flush(b), 0);
}

static void test_file_backend(void)
{
	char *path = tmp_path("disk.img");
	make_file(path, 1 << 20);
	struct vo_block *b = vo_block_open(path, 0, err, sizeof err);
	CHECK(b != NULL);
	if (!b)
		return;
	CHECK(!vo_block_readonly(b));
	CHECK(vo_block_fd(b, NULL) >= 0);
	exercise(b, 1 << 20);
	/* the bytes are really in the file */
	char c = 0;
	int fd = open(path, O_RDONLY);
	CHECK(pread(fd, &c, 1, (1 << 20) - 1) == 1 && c == 'z');
	close(fd);
	vo_block_close(b);
}

static void test_file_size_not_multiple_of_sector(void)
{
	char *path = tmp_path("odd.img");
	make_file(path, 10000);
	struct vo_block *b = vo_block_open(path, 0, err, sizeof err);
	CHECK(b != NULL);
	if (b) {
		exercise(b, 10000);
		vo_block_close(b);
	}
}

static void test_file_readonly(void)
{
	char *path = tmp_path("ro.img");
	make_file(path, 65536);
	struct vo_block *b = vo_block_open(path, VO_BLOCK_RDONLY, err, sizeof err);
	CHECK(b != NULL);
	if (!b)
		return;
	char buf[16] = { 0 };
	CHECK(vo_block_readonly(b));
	CHECK_EQ(vo_block_pread(b, buf, 16, 0), 16);
	CHECK_EQ(vo_block_pwrite(b, buf, 16, 0), -EROFS);
	CHECK_EQ(vo_block_zero(b, 0, 16), -EROFS);
	CHECK_EQ(vo_block_trim(b, 0, 16), -EROFS);
	vo_block_close(b);
}

static void test_file_errors_name_the_path(void)
{
	struct vo_block *b = vo_block_open(tmp_path("missing.img"), 0, err, sizeof err);
	CHECK(b == NULL);
	CHECK(strstr(err, "missing.img") != NULL);
	CHECK(strstr(err, "No such file") != NULL);

	b = vo_block_open(tmpdir, 0, err, sizeof err);
	CHECK(b == NULL);
	CHECK(strstr(err, "directory") != NULL);
}

static void test_file_lock_refuses_a_second_writer(void)
{
	char *path = tmp_path("locked.img");
	make_file(path, 65536);
	struct vo_block *a = vo_block_open(path, VO_BLOCK_LOCK, err, sizeof err);
	CHECK(a != NULL);
	/* flock locks belong to the open file description: a second open conflicts */
	struct vo_block *b = vo_block_open(path, VO_BLOCK_LOCK, err, sizeof err);
	CHECK(b == NULL);
	CHECK(strstr(err, "in use") != NULL);
	struct vo_block *r = vo_block_open(path, VO_BLOCK_LOCK | VO_BLOCK_RDONLY, err, sizeof err);
	CHECK(r == NULL);
	vo_block_close(a);
	b = vo_block_open(path, VO_BLOCK_LOCK, err, sizeof err);
	CHECK(b != NULL);
	vo_block_close(b);
}

static void test_mem_backend(void)
{
	struct vo_block *b = vo_block_open("mem:1M", 0, err, sizeof err);
	CHECK(b != NULL);
	if (!b)
		return;
	exercise(b, 1 << 20);
	vo_block_close(b);
}

static void test_mem_is_sparse_and_trim_frees(void)
{
	struct vo_block *b = vo_block_open("mem:100G", 0, err, sizeof err);
	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ(vo_block_size(b), 100ULL << 30);
	int fd = vo_block_fd(b, NULL);
	struct stat st;
	static char buf[1 << 20];
	memset(buf, 'x', sizeof buf);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(vo_block_pwrite(b, buf, sizeof buf, (uint64_t)i << 30), (long long)sizeof buf);
	CHECK(fstat(fd, &st) == 0);
	CHECK(st.st_blocks * 512 >= 4 << 20);
	CHECK(st.st_blocks * 512 < 5 << 20); /* 4 MiB written to 100 GiB: 4 MiB used */
	for (int i = 0; i < 4; i++)
		CHECK_EQ(vo_block_trim(b, (uint64_t)i << 30, sizeof buf), 0);
	CHECK(fstat(fd, &st) == 0);
	CHECK_EQ(st.st_blocks, 0);
	vo_block_close(b);
}

static void test_mem_bad_specs(void)
{
	static const char *bad[] = { "mem:", "mem:0", "mem:abc", "mem:10Q" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		CHECK(vo_block_open(bad[i], 0, err, sizeof err) == NULL);
		CHECK(strstr(err, bad[i]) != NULL);
	}
}

static void test_slice_edges(void)
{
	struct vo_block *disk = vo_block_open("mem:1M", 0, err, sizeof err);
	CHECK(disk != NULL);
	if (!disk)
		return;
	struct vo_block *part = vo_block_slice(disk, 65536, 131072, err, sizeof err);
	CHECK(part != NULL);
	if (!part)
		return;
	uint64_t off = 0;
	CHECK(vo_block_fd(part, &off) == vo_block_fd(disk, NULL));
	CHECK_EQ(off, 65536);
	exercise(part, 131072);

	/* the write at the last byte of the slice landed at the right place of the disk, and
	 * nothing spilled after it */
	char c[2];
	CHECK_EQ(vo_block_pread(disk, c, 2, 65536 + 131072 - 1), 2);
	CHECK_EQ(c[0], 'z');
	CHECK_EQ(c[1], 0);
	CHECK_EQ(vo_block_pread(disk, c, 1, 65535), 1);
	CHECK_EQ(c[0], 0);

	/* a slice of a slice, and slices that do not fit */
	struct vo_block *inner = vo_block_slice(part, 131072 - 4096, 4096, err, sizeof err);
	CHECK(inner != NULL);
	CHECK(vo_block_slice(disk, 1 << 20, 1, err, sizeof err) == NULL);
	CHECK(vo_block_slice(disk, 0, (1 << 20) + 1, err, sizeof err) == NULL);
	CHECK(vo_block_slice(disk, UINT64_MAX, 2, err, sizeof err) == NULL);
	struct vo_block *empty = vo_block_slice(disk, 1 << 20, 0, err, sizeof err);
	CHECK(empty != NULL); /* an empty window at the very end is valid, and reads nothing */
	if (empty) {
		CHECK_EQ(vo_block_size(empty), 0);
		CHECK_EQ(vo_block_pread(empty, c, 1, 0), 0);
		CHECK_EQ(vo_block_pwrite(empty, c, 1, 0), -ENOSPC);
		vo_block_close(empty);
	}

	/* the slice keeps its parent alive */
	vo_block_close(disk);
	vo_block_close(part);
	if (inner) {
		char z = 'q';
		CHECK_EQ(vo_block_pwrite(inner, &z, 1, 4095), 1);
		CHECK_EQ(vo_block_pread(inner, &z, 1, 4095), 1);
		CHECK_EQ(z, 'q');
		vo_block_close(inner);
	}
}

/* --- NBD, against a real nbdkit --- */

/* nbdkit with extra arguments; listen_fd >= 0 is handed over by socket activation (a TCP
 * socket we bound to a free port, so that concurrent runs never fight over a fixed one). */
static pid_t start_nbdkit_on(int listen_fd, char *const extra[], const char *pidfile)
{
	char *argv[32];
	int n = 0;
	argv[n++] = "nbdkit";
	argv[n++] = "--exit-with-parent";
	argv[n++] = "-f";
	argv[n++] = "-P";
	argv[n++] = (char *)pidfile;
	for (int i = 0; extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* (the test has no other thread when it starts a server: setenv is safe here) */
		if (listen_fd >= 0) {
			char num[32];
			snprintf(num, sizeof num, "%d", (int)getpid());
			if (listen_fd == 3) /* dup2 would keep its close-on-exec */
				fcntl(3, F_SETFD, 0);
			else
				dup2(listen_fd, 3);
			setenv("LISTEN_PID", num, 1);
			setenv("LISTEN_FDS", "1", 1);
		}
		execvp("nbdkit", argv);
		_exit(127);
	}
	/* nbdkit writes its pid file once it accepts connections */
	for (int i = 0; i < 3000; i++) {
		if (access(pidfile, F_OK) == 0)
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

static pid_t start_nbdkit(char *const extra[], const char *pidfile)
{
	return start_nbdkit_on(-1, extra, pidfile);
}

/* A listening TCP socket on 127.0.0.1 at a port the kernel picked; its number in *port. */
static int listen_tcp(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

static void stop_nbdkit(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

struct thread_arg {
	struct vo_block *b;
	int id;
	int ok;
};

static void *writer_thread(void *p)
{
	struct thread_arg *a = p;
	char buf[65536], back[65536];
	memset(buf, 'A' + a->id, sizeof buf);
	a->ok = 1;
	for (int round = 0; round < 8; round++) {
		uint64_t off = ((uint64_t)a->id * 8 + (uint64_t)round) * sizeof buf;
		if (vo_block_pwrite(a->b, buf, sizeof buf, off) != (ssize_t)sizeof buf ||
		    vo_block_pread(a->b, back, sizeof back, off) != (ssize_t)sizeof back ||
		    memcmp(buf, back, sizeof buf) != 0)
			a->ok = 0;
	}
	return NULL;
}

static void parallel_writers(struct vo_block *b)
{
	pthread_t t[4];
	struct thread_arg a[4];
	for (int i = 0; i < 4; i++) {
		a[i] = (struct thread_arg){ b, i, 0 };
		pthread_create(&t[i], NULL, writer_thread, &a[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK(a[i].ok);
	}
}

/* The server takes requests of at most 64 KiB and refuses larger ones (blocksize-policy with
 * the error policy), and serves only the export named "disk2" (exportname-strict): so every
 * large read and write must be split at the limit the server advertises, and the export
 * name of the URI must reach the server. */
static void test_nbd_unix_socket_named_export_split_requests(void)
{
	char *sock = tmp_path("nbd.sock"), *pidfile = tmp_path("nbdkit.pid");
	char *extra[] = { "-U", sock, "--filter=blocksize-policy", "--filter=exportname", "memory",
			  "size=4M", "blocksize-maximum=65536", "blocksize-error-policy=error",
			  "exportname=disk2", "exportname-strict=true", NULL };
	pid_t pid = start_nbdkit(extra, pidfile);
	CHECK(pid > 0);
	if (pid <= 0)
		return;
	char uri[512];
	/* another name, or none, is not this export */
	snprintf(uri, sizeof uri, "nbd+unix:///other?socket=%s", sock);
	CHECK(vo_block_open(uri, 0, err, sizeof err) == NULL);
	CHECK(strstr(err, "cannot connect") != NULL);
	snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s", sock);
	CHECK(vo_block_open(uri, 0, err, sizeof err) == NULL);
	snprintf(uri, sizeof uri, "nbd+unix:///disk2?socket=%s", sock);
	struct vo_block *b = vo_block_open(uri, 0, err, sizeof err);
	CHECK(b != NULL);
	if (b) {
		exercise(b, 4 << 20);
		parallel_writers(b);
		/* 3 MiB each way: 48 requests of 64 KiB, or EINVAL from the server */
		size_t big = 3 << 20;
		char *buf = malloc(big), *back = malloc(big);
		for (size_t i = 0; i < big; i++)
			buf[i] = (char)(i * 7 + i / 65536);
		CHECK_EQ(vo_block_pwrite(b, buf, big, 4096), (long long)big);
		CHECK_EQ(vo_block_pread(b, back, big, 4096), (long long)big);
		CHECK(memcmp(buf, back, big) == 0);
		/* zeroing a range past the limit: no payload, so no split needed, but it must work */
		CHECK_EQ(vo_block_zero(b, 4096, big), 0);
		CHECK_EQ(vo_block_pread(b, back, big, 4096), (long long)big);
		CHECK(all_bytes(back, big, 0));
		free(buf);
		free(back);
		vo_block_close(b);
	}
	/* read-only open of a writable export */
	b = vo_block_open(uri, VO_BLOCK_RDONLY, err, sizeof err);
	CHECK(b != NULL);
	if (b) {
		CHECK_EQ(vo_block_pwrite(b, "x", 1, 0), -EROFS);
		vo_block_close(b);
	}
	stop_nbdkit(pid);
	unlink(pidfile);
}

/* A server that can neither zero nor trim (nbdkit's eval plugin on a file, with no trim
 * method, and the nozero filter): zeroing falls back to writing zeros, trim (advisory) is a
 * no-op; neither may send the server a command it did not offer. */
static void test_nbd_without_zero_and_trim(void)
{
	char *img = tmp_path("eval.img"), *sock = tmp_path("eval.sock");
	char *pidfile = tmp_path("eval.pid");
	make_file(img, 1 << 20);
	char pread_cmd[512], pwrite_cmd[512];
	snprintf(pread_cmd, sizeof pread_cmd, "pread=exec dd if=%s iflag=skip_bytes,count_bytes "
		 "skip=$4 count=$3 status=none", img);
	snprintf(pwrite_cmd, sizeof pwrite_cmd, "pwrite=exec dd of=%s oflag=seek_bytes "
		 "conv=notrunc seek=$4 status=none", img);
	char *extra[] = { "-U", sock, "--filter=nozero", "eval", "get_size=echo 1048576",
			  "can_write=exit 0", pread_cmd, pwrite_cmd, NULL };
	pid_t pid = start_nbdkit(extra, pidfile);
	CHECK(pid > 0);
	if (pid <= 0)
		return;
	char uri[512];
	snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s", sock);
	struct vo_block *b = vo_block_open(uri, 0, err, sizeof err);
	CHECK(b != NULL);
	if (b) {
		exercise(b, 1 << 20);
		/* the zeros were written into the file (by the server's pwrite) */
		char back[4096];
		int fd = open(img, O_RDONLY);
		CHECK(pread(fd, back, 4096, 0) == 4096);
		CHECK(all_bytes(back, 1024, 'a'));
		CHECK(all_bytes(back + 1024, 1024, 0));
		CHECK(pread(fd, back, 1, (1 << 20) - 1) == 1 && back[0] == 'z');
		close(fd);
		vo_block_close(b);
	}
	stop_nbdkit(pid);
	unlink(pidfile);
}

static void test_nbd_tcp_and_readonly_export(void)
{
	char *pidfile = tmp_path("nbdkit-tcp.pid");
	int port = 0, listen_fd = listen_tcp(&port);
	CHECK(listen_fd >= 0);
	if (listen_fd < 0)
		return;
	char *extra[] = { "-r", "--filter=exportname", "pattern", "size=1M", "exportname=pat",
			  "exportname-strict=true", NULL };
	pid_t pid = start_nbdkit_on(listen_fd, extra, pidfile);
	close(listen_fd);
	CHECK(pid > 0);
	if (pid <= 0)
		return;
	char uri[128];
	snprintf(uri, sizeof uri, "nbd://127.0.0.1:%d/pat", port);
	/* a writable open of a read-only export is refused with a reason */
	CHECK(vo_block_open(uri, 0, err, sizeof err) == NULL);
	CHECK(strstr(err, "read-only") != NULL);
	struct vo_block *b = vo_block_open(uri, VO_BLOCK_RDONLY, err, sizeof err);
	CHECK(b != NULL);
	if (b) {
		/* the pattern plugin stores each 8-byte offset, big-endian, at that offset */
		unsigned char buf[16];
		CHECK_EQ(vo_block_pread(b, buf, 16, 4096), 16);
		CHECK_EQ(buf[6], 0x10);
		CHECK_EQ(buf[7], 0x00);
		CHECK_EQ(buf[14], 0x10);
		CHECK_EQ(buf[15], 0x08);
		CHECK_EQ(vo_block_pread(b, buf, 16, (1 << 20) - 8), 8);
		vo_block_close(b);
	}
	/* the name is part of a TCP URI too */
	snprintf(uri, sizeof uri, "nbd://127.0.0.1:%d/other", port);
	CHECK(vo_block_open(uri, VO_BLOCK_RDONLY, err, sizeof err) == NULL);
	stop_nbdkit(pid);
	unlink(pidfile);
}

static void test_nbd_connection_refused(void)
{
	char uri[512];
	snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s", tmp_path("nobody-listens.sock"));
	CHECK(vo_block_open(uri, 0, err, sizeof err) == NULL);
	CHECK(strstr(err, "cannot connect") != NULL);
}

int main(void)
{
	vo_log_init("test_block");
	CHECK(mkdtemp(tmpdir) != NULL);
	RUN(test_file_backend);
	RUN(test_file_size_not_multiple_of_sector);
	RUN(test_file_readonly);
	RUN(test_file_errors_name_the_path);
	RUN(test_file_lock_refuses_a_second_writer);
	RUN(test_mem_backend);
	RUN(test_mem_is_sparse_and_trim_frees);
	RUN(test_mem_bad_specs);
	RUN(test_slice_edges);
	RUN(test_nbd_unix_socket_named_export_split_requests);
	RUN(test_nbd_without_zero_and_trim);
	RUN(test_nbd_tcp_and_readonly_export);
	RUN(test_nbd_connection_refused);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return CHECK_DONE();
}
