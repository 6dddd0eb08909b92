/* The serving loop: leader/follower threads over one FUSE session.
 *
 * Why not libfuse's fuse_session_loop_mt: there, every request wakes the worker that has
 * slept longest, so a single process doing one call after another (tar, rm -r, cp, a package
 * manager) bounces between two threads on every request; measured on two cores that costs
 * 1.7x the time of a single thread on untar. Here one thread, the leader, reads a request and
 * handles it itself, keeping its caches warm and never sleeping between back-to-back requests.
 * It hands the reading over to another thread (a follower, woken or started) only when that
 * buys concurrency: when more requests are already queued behind one that may take time (a
 * poll of the device; never after a quick one, see quick()), or when it
 * is about to do something slow or something that waits for the kernel (viewfs_serve_yield():
 * a copy-up, fsync, direct I/O, a notification to the kernel). So serial work runs like -s and
 * concurrent work like a thread pool.
 *
 * Signals (SIGTERM, SIGINT, SIGHUP: libfuse's handlers end the session) are taken by the
 * calling thread, which waits for the workers; the workers block them, and a thread reading
 * the device is woken with SIGUSR1 when the session ends. */
#include "fs.h"

#include "log.h"
#include "viewfs.h"

#include <errno.h>
#include <linux/fuse.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAKE_SIGNAL SIGUSR1
#define MAX_WORKERS 64

struct loop {
	struct fuse_session *se;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	sem_t finished;          /* posted by each worker as it ends */
	bool reading;            /* a leader holds the device */
	pthread_t leader;
	unsigned idle;           /* followers waiting to lead */
	unsigned nworkers, max_workers;
	pthread_t workers[MAX_WORKERS];
	int error;
};

static __thread struct loop *my_loop;

/* The loop being served, for viewfs_serve_stop() (a launcher ends its view from another
 * thread when the command exits). */
static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct loop *current;
static __thread bool i_lead;

static void *worker(void *arg);

/* Give the device to another thread (lock held). */
static void pass_on_locked(struct loop *l)
{
	i_lead = false;
	l->reading = false;
	if (l->idle > 0) {
		pthread_cond_signal(&l->cv);
	} else if (l->nworkers < l->max_workers && !fuse_session_exited(l->se)) {
		sigset_t block, old;
		sigemptyset(&block);
		sigaddset(&block, SIGTERM);
		sigaddset(&block, SIGINT);
		sigaddset(&block, SIGHUP);
		sigaddset(&block, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &block, &old);
		if (pthread_create(&l->workers[l->nworkers], NULL, worker, l) == 0)
			l->nworkers++;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	/* else: all workers busy; the first to finish takes the device */
}

void viewfs_serve_yield(void)
{
	struct loop *l = my_loop;
	if (!l || !i_lead || l->max_workers < 2)
		return;
	pthread_mutex_lock(&l->lock);
	pass_on_locked(l);
	pthread_mutex_unlock(&l->lock);
}

static void end_session(struct loop *l, int error)
{
	pthread_mutex_lock(&l->lock);
	if (error && !l->error)
		l->error = error;
	fuse_session_exit(l->se);
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->lock);
}

/* One request from the kernel into buf, as libfuse's fuse_session_receive_buf() reads it when
 * splice reading is off (ops.c turns it off) -- but without its perror() of a failed read on
 * stderr: ECONNABORTED is how a view ends when its command's mount namespace goes away, and
 * that must not appear in the command's terminal. > 0: bytes read; 0: unmounted; -errno. */
static int receive(struct fuse_session *se, struct fuse_buf *buf)
{
	/* libfuse's own buffer size, by which it caps max_write at FUSE_INIT */
	const size_t size = 256 * (size_t)getpagesize() + 4096;
	if (!buf->mem && !(buf->mem = malloc(size)))
		return -ENOMEM;
	for (;;) {
		ssize_t n = read(fuse_session_fd(se), buf->mem, size);
		if (n < 0 && errno == ENOENT)
			continue; /* the request was interrupted before we read it */
		if (n < 0 && errno == ENODEV) {
			fuse_session_exit(se);
			return 0;
		}
		if (n < 0)
			return -errno;
		if ((size_t)n < sizeof(struct fuse_in_header))
			return -EIO;
		buf->size = (size_t)n;
		buf->flags = 0;
		return (int)n;
	}
}

/* Requests that never wait for a disk or a lock held long: the ones queued behind them wait
 * less than a hand-over to another thread would cost (a wake-up and a switch on each side).
 * The kernel sends RELEASE and FORGET on its own, while the process goes on with its next
 * call: handing over on those made a single tar or cp bounce between two threads per file. */
static bool quick(const struct fuse_buf *buf)
{
	switch (((const struct fuse_in_header *)buf->mem)->opcode) {
	case FUSE_RELEASE:
	case FUSE_RELEASEDIR:
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_FLUSH:
	case FUSE_INTERRUPT:
		return true;
	default:
		return false;
	}
}

static void *worker(void *arg)
{
	struct loop *l = arg;
	struct fuse_buf buf = { .mem = NULL };
	my_loop = l;
	int fd = fuse_session_fd(l->se);
	for (;;) {
		pthread_mutex_lock(&l->lock);
		while (l->reading && !fuse_session_exited(l->se)) {
			l->idle++;
			pthread_cond_wait(&l->cv, &l->lock);
			l->idle--;
		}
		if (fuse_session_exited(l->se)) {
			pthread_mutex_unlock(&l->lock);
			break;
		}
		l->reading = true;
		l->leader = pthread_self();
		i_lead = true;
		pthread_mutex_unlock(&l->lock);

		while (i_lead) {
			int res = receive(l->se, &buf);
			if (fuse_session_exited(l->se))
				goto out;
			if (res == -EINTR || res == -EAGAIN)
				continue;
			if (res <= 0) {
				/* 0 or ENODEV: unmounted */
				end_session(l, res < 0 && res != -ENODEV ? res : 0);
				goto out;
			}
			if (l->max_workers > 1 && !quick(&buf)) {
				struct pollfd p = { .fd = fd, .events = POLLIN };
				if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN))
					viewfs_serve_yield(); /* more waiting: another thread takes it */
			}
			fuse_session_process_buf(l->se, &buf);
		}
	}
out:
	pthread_mutex_lock(&l->lock);
	if (i_lead) {
		i_lead = false;
		l->reading = false;
		pthread_cond_broadcast(&l->cv);
	}
	pthread_mutex_unlock(&l->lock);
	free(buf.mem);
	sem_post(&l->finished);
	return NULL;
}

static void wake_handler(int sig)
{
	(void)sig; /* only interrupts a blocking read */
}

void viewfs_serve_stop(struct fuse_session *se)
{
	fuse_session_exit(se);
	pthread_mutex_lock(&current_lock);
	if (current && current->se == se)
		sem_post(&current->finished); /* the waiting loop wakes now, not at its next tick */
	pthread_mutex_unlock(&current_lock);
}

int viewfs_serve(struct fuse_session *se, unsigned max_threads)
{
	return viewfs_serve_ex(se, max_threads, true);
}

int viewfs_serve_ex(struct fuse_session *se, unsigned max_threads, bool own_signals)
{
	struct loop l = { .se = se, .max_workers = max_threads ? max_threads : 10 };
	if (l.max_workers > MAX_WORKERS)
		l.max_workers = MAX_WORKERS;
	pthread_mutex_init(&l.lock, NULL);
	pthread_cond_init(&l.cv, NULL);
	sem_init(&l.finished, 0, 0);
	struct sigaction sa = { .sa_handler = wake_handler }, old_sa;
	sigemptyset(&sa.sa_mask);
	sigaction(WAKE_SIGNAL, &sa, &old_sa); /* no SA_RESTART: read() returns EINTR */
	if (own_signals && fuse_set_signal_handlers(se) != 0) {
		vo_error("cannot install signal handlers");
		return -EIO;
	}
	pthread_mutex_lock(&current_lock);
	current = &l;
	pthread_mutex_unlock(&current_lock);

	pthread_mutex_lock(&l.lock);
	pass_on_locked(&l); /* the first worker */
	unsigned started = l.nworkers;
	pthread_mutex_unlock(&l.lock);
	if (!started) {
		vo_error("cannot start a thread: %s", strerror(errno));
		pthread_mutex_lock(&current_lock);
		current = NULL;
		pthread_mutex_unlock(&current_lock);
		if (own_signals)
			fuse_remove_signal_handlers(se);
		return -EIO;
	}

	/* Wait for the end: a worker finishing (unmount), or a signal ending the session (also
	 * one that came before this wait began: hence the timeout). */
	while (!fuse_session_exited(se)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (sem_timedwait(&l.finished, &ts) == 0)
			break;
	}
	end_session(&l, 0);
	/* wake a leader still blocked in read() (the session ended by a signal) */
	pthread_mutex_lock(&l.lock);
	if (l.reading)
		pthread_kill(l.leader, WAKE_SIGNAL);
	pthread_mutex_unlock(&l.lock);
	for (unsigned i = 0;; i++) {
		pthread_mutex_lock(&l.lock);
		unsigned n = l.nworkers;
		pthread_mutex_unlock(&l.lock);
		if (i >= n)
			break;
		/* a worker in the middle of a request finishes it; one in read() was woken */
		for (int tries = 0; pthread_tryjoin_np(l.workers[i], NULL) == EBUSY; tries++) {
			pthread_mutex_lock(&l.lock);
			if (l.reading)
				pthread_kill(l.leader, WAKE_SIGNAL);
			pthread_mutex_unlock(&l.lock);
			struct timespec ts = { 0, 10 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	pthread_mutex_lock(&current_lock);
	current = NULL;
	pthread_mutex_unlock(&current_lock);
	if (own_signals)
		fuse_remove_signal_handlers(se);
	sigaction(WAKE_SIGNAL, &old_sa, NULL);
	sem_destroy(&l.finished);
	pthread_cond_destroy(&l.cv);
	pthread_mutex_destroy(&l.lock);
	return l.error;
}
