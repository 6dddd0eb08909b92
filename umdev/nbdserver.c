/* See nbdserver.h. */
#define _GNU_SOURCE
#include "nbdserver.h"

#include "log.h"
#include "shared.h"

#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Where nbdkit finds what we give it (socket activation wants the socket at fd 3). */
enum { FD_LISTEN = 3, FD_BACKING = 4, FD_SHARED = 5, FD_NOTIFY = 6, NCHILD_FDS = 4 };

struct umdev_nbd {
	pid_t pid;
	bool exited;
	char *unix_path;            /* to remove at the end */
	int notify_fd;              /* read end of the plugin's pipe */
	pthread_t watcher;
	bool watching;
	struct umdev_shared *shared;
	void (*reread)(void *owner);
	void *owner;
};

int umdev_nbd_addr_parse(const char *spec, struct umdev_nbd_addr *a, char *err, size_t errlen)
{
	memset(a, 0, sizeof *a);
	if (strncmp(spec, "unix:", 5) == 0 && spec[5]) {
		const char *path = spec + 5;
		a->is_unix = true;
		if (path[0] == '/') {
			a->path = strdup(path);
		} else {
			char cwd[PATH_MAX];
			if (!getcwd(cwd, sizeof cwd)) {
				snprintf(err, errlen, "nbd=%s: %s", spec, strerror(errno));
				return -1;
			}
			if (asprintf(&a->path, "%s/%s", cwd, path) < 0)
				a->path = NULL;
		}
		struct sockaddr_un sun;
		if (a->path && strlen(a->path) >= sizeof sun.sun_path) {
			snprintf(err, errlen, "nbd=%s: the socket path is too long (at most %zu "
				 "bytes)", spec, sizeof sun.sun_path - 1);
			umdev_nbd_addr_free(a);
			return -1;
		}
		return a->path ? 0 : -1;
	}
	if (strncmp(spec, "tcp:", 4) == 0) {
		const char *rest = spec + 4, *colon;
		if (rest[0] == '[') {
			const char *close = strchr(rest, ']');
			if (!close || close[1] != ':')
				goto bad;
			a->host = strndup(rest + 1, (size_t)(close - rest - 1));
			colon = close + 1;
		} else {
			colon = strrchr(rest, ':');
			if (!colon)
				goto bad;
			if (colon > rest)
				a->host = strndup(rest, (size_t)(colon - rest));
		}
		const char *port = colon + 1;
		if (!*port || strspn(port, "0123456789") != strlen(port) || atol(port) > 65535)
			goto bad;
		a->port = strdup(port);
		return 0;
	}
bad:
	snprintf(err, errlen, "invalid value '%s' for option 'nbd' (expected unix:SOCKET or "
		 "tcp:[HOST]:PORT)", spec);
	umdev_nbd_addr_free(a);
	return -1;
}

void umdev_nbd_addr_free(struct umdev_nbd_addr *a)
{
	free(a->path);
	free(a->host);
	free(a->port);
	memset(a, 0, sizeof *a);
}

static int listen_on(const struct umdev_nbd_addr *a, char *err, size_t errlen)
{
	if (a->is_unix) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		strcpy(sun.sun_path, a->path);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 ||
		    listen(fd, SOMAXCONN) < 0) {
			snprintf(err, errlen, "cannot listen on %s: %s", a->path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		return fd;
	}
	struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai;
	int r = getaddrinfo(a->host, a->port, &hints, &ai);
	if (r != 0) {
		snprintf(err, errlen, "cannot listen on %s:%s: %s", a->host ? a->host : "*",
			 a->port, gai_strerror(r));
		return -1;
	}
	int fd = -1, saved = 0;
	for (struct addrinfo *p = ai; p; p = p->ai_next) {
		fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, p->ai_addr, p->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		snprintf(err, errlen, "cannot listen on %s:%s: %s", a->host ? a->host : "*",
			 a->port, strerror(saved ? saved : EADDRNOTAVAIL));
	return fd;
}

/* The plugin: next to our own binary (a build directory), else where nbdkit keeps them. */
static char *find_plugin(void)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			char *p;
			if (asprintf(&p, "%s/nbdkit-umdev-plugin.so", self) > 0) {
				if (access(p, R_OK) == 0)
					return p;
				free(p);
			}
		}
	}
	return strdup(UMDEV_NBDKIT_PLUGINDIR "/nbdkit-umdev-plugin.so");
}

static char *find_program(const char *name)
{
	const char *path = getenv("PATH");
	char *copy = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
	char *save = NULL, *found = NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir && !found;
	     dir = strtok_r(NULL, ":", &save)) {
		char *p;
		if (asprintf(&p, "%s/%s", dir, name) < 0)
			break;
		if (access(p, X_OK) == 0)
			found = p;
		else
			free(p);
	}
	free(copy);
	return found;
}

static void *watch(void *arg)
{
	struct umdev_nbd *n = arg;
	char buf[64];
	for (;;) {
		ssize_t r = read(n->notify_fd, buf, sizeof buf);
		if (r > 0)
			n->reread(n->owner);
		else if (r == 0 || errno != EINTR)
			return NULL; /* nbdkit is gone */
	}
}

/* Between fork and exec only async-signal-safe calls: this writes a decimal number. */
static void put_decimal(char *dst, long v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n < (int)sizeof tmp);
	while (n)
		*dst++ = tmp[--n];
	*dst = '\0';
}

struct child_args {
	const char *program;
	char **argv, **envp;
	char *listen_pid;     /* the "LISTEN_PID=" entry of envp, room for the digits */
	int fds[NCHILD_FDS];  /* to become fds 3, 4, 5, 6 (-1: none) */
	int null_fd;          /* /dev/null: nbdkit's stdin, and its stdout and stderr when the
				 daemon detaches (a caller reading our output must see EOF when
				 we detach, not when nbdkit ends) */
	bool quiet;
	int status_fd;        /* exec failure: errno is written here */
};

static void run_child(const struct child_args *c)
{
	/* stdio first: 0-2 are always open in the daemon, so none of the fds below is among them */
	dup2(c->null_fd, 0);
	if (c->quiet) {
		dup2(c->null_fd, 1);
		dup2(c->null_fd, 2);
	}
	/* out of the way of 3-6 before they are filled (the status pipe keeps close-on-exec) */
	int status_fd = fcntl(c->status_fd, F_DUPFD_CLOEXEC, 64);
	int tmp[NCHILD_FDS];
	for (int i = 0; i < NCHILD_FDS; i++)
		tmp[i] = c->fds[i] >= 0 ? fcntl(c->fds[i], F_DUPFD, 64) : -1;
	for (int i = 0; i < NCHILD_FDS; i++) {
		if (tmp[i] >= 0) {
			dup2(tmp[i], FD_LISTEN + i); /* dup2 clears close-on-exec */
			close(tmp[i]);
		}
	}
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	put_decimal(c->listen_pid + strlen("LISTEN_PID="), (long)getpid());
	execve(c->program, c->argv, c->envp);
	int e = errno;
	if (write(status_fd, &e, sizeof e) < 0) {
		/* nothing more to do in a failed child */
	}
	_exit(127);
}

static char **build_env(char *listen_pid)
{
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 5, sizeof *env);
	if (!env)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(environ[i], "LISTEN_", 7) == 0)
			continue;
#ifdef UMDEV_ASAN_RUNTIME
		if (strncmp(environ[i], "LD_PRELOAD=", 11) == 0 ||
		    strncmp(environ[i], "ASAN_OPTIONS=", 13) == 0)
			continue;
#endif
		env[k++] = environ[i];
	}
	env[k++] = listen_pid;
	env[k++] = "LISTEN_FDS=1";
#ifdef UMDEV_ASAN_RUNTIME
	/* The plugin of a sanitized build needs the ASan runtime loaded first, and nbdkit is
	 * not built with it: preload it (see nbdkit-umdev-plugin(1)). Leak checking stays off in
	 * nbdkit: by design it does not close the plugin handles of connections still ending
	 * when it is told to quit, so its exit would report them at random. The plugin's own
	 * clean-up is checked where nbdkit is stopped with no client left (tests/umdev). */
	static char asan_options[1024];
	const char *given = getenv("ASAN_OPTIONS");
	snprintf(asan_options, sizeof asan_options, "ASAN_OPTIONS=%s%sdetect_leaks=0",
		 given ? given : "", given && *given ? ":" : "");
	env[k++] = asan_options;
	env[k++] = "LD_PRELOAD=" UMDEV_ASAN_RUNTIME;
#endif
	env[k] = NULL;
	return env;
}

/* Connect once, as a client would: nbdkit is running and the plugin loaded. A refused start
 * of nbdkit (the plugin cannot open the image, say) usually shows as a reset connection; but
 * an nbdkit that fails may also hang in its exit handlers (seen with the ASan runtime
 * preloaded) and leave our connection queued on the socket forever. So the wait also watches
 * nbdkit itself, and gives up after READY_TIMEOUT_MS. */
enum { READY_TIMEOUT_MS = 30 * 1000, READY_POLL_MS = 100 };

static bool child_exited(struct umdev_nbd *n, char *err, size_t errlen)
{
	int status;
	if (waitpid(n->pid, &status, WNOHANG) != n->pid)
		return false;
	n->exited = true;
	if (WIFEXITED(status))
		snprintf(err, errlen, "nbdkit exited with status %d before the NBD export was "
			 "ready", WEXITSTATUS(status));
	else
		snprintf(err, errlen, "nbdkit was killed by signal %d before the NBD export was "
			 "ready", WTERMSIG(status));
	return true;
}

static int check_ready(struct umdev_nbd *n, const struct umdev_nbd_addr *a, char *err,
		       size_t errlen)
{
	struct nbd_handle *h = nbd_create();
	if (!h) {
		snprintf(err, errlen, "libnbd: %s", nbd_get_error());
		return -1;
	}
	int r = a->is_unix ? nbd_aio_connect_unix(h, a->path)
			   : nbd_aio_connect_tcp(h, a->host ? a->host : "localhost", a->port);
	for (int waited = 0; r == 0 && nbd_aio_is_connecting(h); waited += READY_POLL_MS) {
		if (child_exited(n, err, errlen)) {
			nbd_close(h);
			return -1;
		}
		if (waited >= READY_TIMEOUT_MS) {
			snprintf(err, errlen, "the NBD export does not answer within %d s",
				 READY_TIMEOUT_MS / 1000);
			nbd_close(h);
			return -1;
		}
		if (nbd_poll(h, READY_POLL_MS) < 0)
			r = -1;
	}
	if (r == 0 && !nbd_aio_is_ready(h))
		r = -1;
	if (r < 0) {
		const char *why = nbd_get_error();
		snprintf(err, errlen, "the NBD export does not answer: %s",
			 why ? why : "the connection was closed");
	} else {
		nbd_shutdown(h, 0);
	}
	nbd_close(h);
	return r < 0 ? -1 : 0;
}

struct umdev_nbd *umdev_nbd_start(const struct umdev_nbd_addr *a,
				  const struct umdev_nbd_params *p, char *err, size_t errlen)
{
	struct umdev_nbd *n = calloc(1, sizeof *n);
	char *program = find_program("nbdkit"), *plugin = find_plugin();
	int listen_fd = -1, shared_fd = -1, notify[2] = { -1, -1 }, status[2] = { -1, -1 };
	int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	char *file = NULL, *name = NULL, **env = NULL;
	char listen_pid[40] = "LISTEN_PID=";
	if (!n || !plugin) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	n->pid = -1;
	n->notify_fd = -1;
	n->reread = p->reread;
	n->owner = p->owner;
	if (!program) {
		snprintf(err, errlen, "cannot export over NBD: nbdkit is not installed (not found "
			 "in PATH)");
		goto fail;
	}
	listen_fd = listen_on(a, err, errlen);
	if (listen_fd < 0)
		goto fail;
	if (a->is_unix)
		n->unix_path = strdup(a->path);

	shared_fd = memfd_create("umdev-shared", MFD_CLOEXEC);
	if (shared_fd < 0 || ftruncate(shared_fd, UMDEV_SHARED_SIZE) < 0 ||
	    (n->shared = mmap(NULL, UMDEV_SHARED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			      shared_fd, 0)) == MAP_FAILED) {
		n->shared = NULL;
		snprintf(err, errlen, "cannot share memory with nbdkit: %s", strerror(errno));
		goto fail;
	}
	n->shared->magic = UMDEV_SHARED_MAGIC;
	if (pipe2(notify, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
		goto fail;
	}

	if (p->backing_fd >= 0) {
		if (asprintf(&file, "file=/proc/self/fd/%d", FD_BACKING) < 0)
			file = NULL;
	} else if (asprintf(&file, "file=%s", p->source) < 0) {
		file = NULL;
	}
	if (asprintf(&name, "name=%s", p->export_base) < 0)
		name = NULL;
	env = build_env(listen_pid);
	if (!file || !name || !env) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	char shm_arg[32], notify_arg[32];
	snprintf(shm_arg, sizeof shm_arg, "shm=%d", FD_SHARED);
	snprintf(notify_arg, sizeof notify_arg, "notify=%d", FD_NOTIFY);
	char *argv[24];
	int k = 0;
	argv[k++] = "nbdkit";
	argv[k++] = "--foreground";
	argv[k++] = "--exit-with-parent";
	argv[k++] = p->log_to_syslog ? "--log=syslog" : "--log=stderr";
	if (p->readonly)
		argv[k++] = "--readonly";
	if (p->verbose)
		argv[k++] = "--verbose";
	argv[k++] = plugin;
	argv[k++] = "mbr";
	argv[k++] = file;
	argv[k++] = "lock=0"; /* the daemon holds the image's lock */
	argv[k++] = p->partscan ? "partscan=1" : "partscan=0";
	argv[k++] = name;
	/* nbdkit's --readonly only refuses writes from clients: the plugin must also open the
	 * image read-only, since reopening /proc/self/fd/4 read-write needs write permission on
	 * the image, which is what a user asking for ro often lacks. */
	if (p->readonly)
		argv[k++] = "readonly=1";
	argv[k++] = shm_arg;
	argv[k++] = notify_arg;
	argv[k] = NULL;

	struct child_args c = {
		.program = program, .argv = argv, .envp = env, .listen_pid = listen_pid,
		.fds = { listen_fd, p->backing_fd, shared_fd, notify[1] }, .status_fd = status[1],
		.null_fd = null_fd, .quiet = p->log_to_syslog,
	};
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "cannot fork: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0)
		run_child(&c);
	n->pid = pid;
	close(status[1]);
	status[1] = -1;
	int exec_errno;
	ssize_t got;
	while ((got = read(status[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR)
		;
	if (got == (ssize_t)sizeof exec_errno) {
		snprintf(err, errlen, "cannot run %s: %s", program, strerror(exec_errno));
		goto fail;
	}
	/* nbdkit has our copies now; ours must go, or a dead nbdkit would look alive */
	close(listen_fd);
	listen_fd = -1;
	close(notify[1]);
	notify[1] = -1;
	close(shared_fd);
	shared_fd = -1;
	n->notify_fd = notify[0];
	notify[0] = -1;
	if (check_ready(n, a, err, errlen) < 0)
		goto fail;
	if (pthread_create(&n->watcher, NULL, watch, n) != 0) {
		snprintf(err, errlen, "cannot start a thread");
		goto fail;
	}
	n->watching = true;
	free(program);
	free(plugin);
	free(file);
	free(name);
	free(env);
	close(status[0]);
	close(null_fd);
	return n;

fail:;
	int fds[] = { listen_fd, shared_fd, notify[0], notify[1], status[0], status[1], null_fd };
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(program);
	free(plugin);
	free(file);
	free(name);
	free(env);
	if (n)
		umdev_nbd_stop(n);
	return NULL;
}

void umdev_nbd_table_changed(struct umdev_nbd *n)
{
	if (n && n->shared)
		__atomic_add_fetch(&n->shared->generation, 1, __ATOMIC_RELEASE);
}

bool umdev_nbd_alive(struct umdev_nbd *n)
{
	if (!n || n->exited || n->pid < 0)
		return false;
	int status;
	pid_t r = waitpid(n->pid, &status, WNOHANG);
	if (r == n->pid) {
		n->exited = true;
		if (WIFEXITED(status))
			vo_error("nbdkit exited with status %d: the NBD export is gone",
				 WEXITSTATUS(status));
		else
			vo_error("nbdkit was killed by signal %d: the NBD export is gone",
				 WTERMSIG(status));
		return false;
	}
	return true;
}

void umdev_nbd_stop(struct umdev_nbd *n)
{
	if (!n)
		return;
	if (n->pid > 0 && !n->exited) {
		kill(n->pid, SIGTERM);
		int status;
		for (int i = 0; i < 500; i++) { /* 5 s for nbdkit to finish its requests */
			if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
				n->exited = true;
				break;
			}
			nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
		}
		if (!n->exited) {
			kill(n->pid, SIGKILL);
			while (waitpid(n->pid, &status, 0) < 0 && errno == EINTR)
				;
		}
	}
	if (n->watching)
		pthread_join(n->watcher, NULL); /* ends with EOF once nbdkit is gone */
	if (n->notify_fd >= 0)
		close(n->notify_fd);
	if (n->shared)
		munmap(n->shared, UMDEV_SHARED_SIZE);
	if (n->unix_path) {
		unlink(n->unix_path);
		free(n->unix_path);
	}
	free(n);
}
