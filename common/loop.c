/* See loop.h. */
#define _GNU_SOURCE
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_THREADS 10 /* libfuse's */
#define WAKE_INTERVAL_NS (20 * 1000 * 1000)

struct worker {
	struct vo_loop *loop;
	pthread_t thread;
	bool waiting;  /* atomic: inside fuse_session_receive_buf, where only a signal reaches it */
	bool ended;    /* under the lock: it has left and touches nothing shared any more */
	struct worker *next;
};

struct vo_loop {
	struct fuse_session *se;
	unsigned max_threads;
	sem_t finish;           /* posted when the session may have ended: sem_post is the one
				 * wake-up a signal handler may use (vo_loop_exit) */
	pthread_mutex_t lock;   /* everything below */
	pthread_cond_t ended;   /* a worker has ended */
	unsigned started;       /* workers started */
	unsigned running;       /* workers not yet ended */
	unsigned available;     /* workers not busy with a request */
	int error;              /* the first failed read's -errno, 0 when none */
	struct worker *workers; /* all of them */
};

static void wake_handler(int sig)
{
	(void)sig; /* interrupting the wait is all we want */
}

void vo_loop_init_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = wake_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: the wait must return */
	sigaction(VO_LOOP_WAKE_SIGNAL, &sa, NULL);
}

struct vo_loop *vo_loop_new(struct fuse_session *se, unsigned max_threads)
{
	struct vo_loop *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->se = se;
	l->max_threads = max_threads ? max_threads : DEFAULT_MAX_THREADS;
	sem_init(&l->finish, 0, 0);
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->ended, NULL);
	return l;
}

void vo_loop_free(struct vo_loop *l)
{
	if (!l)
		return;
	pthread_cond_destroy(&l->ended);
	pthread_mutex_destroy(&l->lock);
	sem_destroy(&l->finish);
	free(l);
}

void vo_loop_exit(struct vo_loop *l)
{
	fuse_session_exit(l->se); /* one store */
	sem_post(&l->finish);
}

static void serve_requests(struct worker *w);

static void *work(void *arg)
{
	/* "fuse-worker" in top -H and gdb; the unit test counts workers by it */
	pthread_setname_np(pthread_self(), "fuse-worker");
	serve_requests(arg);
	return NULL;
}

/* Under the lock. A worker is created with the mask it keeps: every signal blocked but the
 * wake-up and the faults (their reports must not be lost), so that a SIGTERM never interrupts
 * a request being served. */
static int start_worker(struct vo_loop *l)
{
	struct worker *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->loop = l;
	sigset_t mask, old;
	sigfillset(&mask);
	static const int taken[] = { VO_LOOP_WAKE_SIGNAL, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
				     SIGSYS, SIGABRT };
	for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++)
		sigdelset(&mask, taken[i]);
	pthread_sigmask(SIG_SETMASK, &mask, &old);
	int r = pthread_create(&w->thread, NULL, work, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		free(w);
		return -r;
	}
	w->next = l->workers; /* before it can end: it needs the lock we hold to do so */
	l->workers = w;
	l->started++;
	l->running++;
	l->available++;
	return 0;
}

static void serve_requests(struct worker *w)
{
	struct vo_loop *l = w->loop;
	struct fuse_buf buf = { .mem = NULL }; /* libfuse allocates it, once */
	int error = 0;
	while (!fuse_session_exited(l->se)) {
		__atomic_store_n(&w->waiting, true, __ATOMIC_SEQ_CST);
		int r = fuse_session_receive_buf(l->se, &buf);
		__atomic_store_n(&w->waiting, false, __ATOMIC_SEQ_CST);
		if (r == -EINTR) /* woken: the loop condition says whether to go on */
			continue;
		if (r <= 0) {
			/* 0: the connection has ended (libfuse saw ENODEV and marked the session
			 * exited) or the loop was ended. ECONNABORTED: the connection ended while
			 * a request was being handed over, which an unmount can do; no failure. */
			if (r < 0 && r != -ECONNABORTED)
				error = r;
			fuse_session_exit(l->se);
			break;
		}
		pthread_mutex_lock(&l->lock);
		/* a worker that cannot be started is no error: the others serve on */
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
	if (error && !l->error)
		l->error = error;
	w->ended = true;
	l->running--;
	pthread_cond_broadcast(&l->ended);
	pthread_mutex_unlock(&l->lock);
	sem_post(&l->finish); /* the session is exited: vo_loop_run ends the others */
}

/* Under the lock. */
static void wake_waiting(struct vo_loop *l)
{
	for (struct worker *w = l->workers; w; w = w->next)
		if (!w->ended && __atomic_load_n(&w->waiting, __ATOMIC_SEQ_CST))
			pthread_kill(w->thread, VO_LOOP_WAKE_SIGNAL);
}

/* The session has ended. When its connection has gone, every worker's read fails and they
 * leave by themselves; when it was ended by vo_loop_exit or one worker's error, the others may
 * still wait for a request that never comes: wake them until they have left. Again and again,
 * because a worker about to read when it is woken takes the signal before the read and then
 * waits in it. */
static void end_workers(struct vo_loop *l)
{
	pthread_mutex_lock(&l->lock);
	while (l->running > 0) {
		wake_waiting(l);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += WAKE_INTERVAL_NS;
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
		pthread_join(w->thread, NULL);
		free(w);
	}
}

int vo_loop_run(struct vo_loop *l)
{
	pthread_mutex_lock(&l->lock);
	int r = start_worker(l);
	pthread_mutex_unlock(&l->lock);
	if (r < 0)
		return r;
	/* Every end posts: a worker leaving, vo_loop_exit. A signal may interrupt the wait. */
	while (!fuse_session_exited(l->se))
		sem_wait(&l->finish);
	end_workers(l);
	return l->error;
}
