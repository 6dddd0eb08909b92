/* See loop.h. */
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define DEFAULT_MAX_THREADS 10 /* libfuse's */

struct worker {
	struct umdev_loop *loop;
	pthread_t thread;
	bool waiting;  /* atomic: inside fuse_session_receive_buf, where only a signal reaches it */
	bool ended;    /* under the lock: it has left and touches nothing shared any more */
	struct worker *next;
};

struct umdev_loop {
	struct fuse_session *se;
	unsigned max_threads;
	pthread_mutex_t lock;   /* everything below */
	pthread_cond_t ended;   /* a worker has ended */
	unsigned started;       /* workers started, the first included */
	unsigned running;       /* workers not yet ended */
	unsigned available;     /* workers not busy with a request */
	struct worker *workers; /* all of them, the first (on the caller's stack) included */
};

struct umdev_loop *umdev_loop_new(struct fuse_session *se, unsigned max_threads)
{
	struct umdev_loop *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->se = se;
	l->max_threads = max_threads ? max_threads : DEFAULT_MAX_THREADS;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->ended, NULL);
	return l;
}

void umdev_loop_free(struct umdev_loop *l)
{
	if (!l)
		return;
	pthread_cond_destroy(&l->ended);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

static void add_worker(struct umdev_loop *l, struct worker *w)
{
	w->next = l->workers;
	l->workers = w;
	l->started++;
	l->running++;
	l->available++;
}

static void *work(void *arg);

/* Under the lock. A worker that cannot be started is no error: the others serve on. */
static void start_worker(struct umdev_loop *l)
{
	struct worker *w = calloc(1, sizeof *w);
	if (!w)
		return;
	w->loop = l;
	if (pthread_create(&w->thread, NULL, work, w) != 0) {
		free(w);
		return;
	}
	add_worker(l, w); /* before it can end: it needs the lock we hold to do so */
}

static void serve_requests(struct worker *w)
{
	struct umdev_loop *l = w->loop;
	struct fuse_buf buf = { .mem = NULL }; /* libfuse allocates it, once */
	while (!fuse_session_exited(l->se)) {
		__atomic_store_n(&w->waiting, true, __ATOMIC_SEQ_CST);
		int r = fuse_session_receive_buf(l->se, &buf);
		__atomic_store_n(&w->waiting, false, __ATOMIC_SEQ_CST);
		if (r == -EINTR) /* woken: the loop condition says whether to go on */
			continue;
		if (r <= 0) {
			/* 0: the connection has ended (unmounted, or the last opener of a removed
			 * partition has gone) or the session was stopped; < 0: libfuse said why */
			fuse_session_exit(l->se);
			break;
		}
		pthread_mutex_lock(&l->lock);
		if (--l->available == 0 && l->started < l->max_threads)
			start_worker(l);
		pthread_mutex_unlock(&l->lock);
		fuse_session_process_buf(l->se, &buf);
		pthread_mutex_lock(&l->lock);
		l->available++;
		pthread_mutex_unlock(&l->lock);
	}
	free(buf.mem);
	pthread_mutex_lock(&l->lock);
	w->ended = true;
	l->running--;
	pthread_cond_broadcast(&l->ended);
	pthread_mutex_unlock(&l->lock);
}

static void *work(void *arg)
{
	serve_requests(arg);
	return NULL;
}

/* Under the lock. */
static void wake_waiting(struct umdev_loop *l)
{
	for (struct worker *w = l->workers; w; w = w->next)
		if (!w->ended && __atomic_load_n(&w->waiting, __ATOMIC_SEQ_CST))
			pthread_kill(w->thread, SIGUSR1);
}

void umdev_loop_wake(struct umdev_loop *l)
{
	pthread_mutex_lock(&l->lock);
	wake_waiting(l);
	pthread_mutex_unlock(&l->lock);
}

void umdev_loop_run(struct umdev_loop *l)
{
	struct worker first = { .loop = l, .thread = pthread_self() };
	pthread_mutex_lock(&l->lock);
	add_worker(l, &first);
	pthread_mutex_unlock(&l->lock);
	serve_requests(&first);

	/* The session has ended. When its connection has gone, every worker's read fails and
	 * they leave by themselves; when it was stopped, or one worker met an error, the others
	 * may still wait for a request that never comes: wake them until they have left. */
	pthread_mutex_lock(&l->lock);
	while (l->running > 0) {
		wake_waiting(l);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 20 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&l->ended, &l->lock, &until);
	}
	struct worker *all = l->workers;
	l->workers = NULL;
	pthread_mutex_unlock(&l->lock);
	while (all) {
		struct worker *w = all;
		all = w->next;
		if (w != &first) {
			pthread_join(w->thread, NULL);
			free(w);
		}
	}
}
