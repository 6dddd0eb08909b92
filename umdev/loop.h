/* A multi-threaded loop serving one FUSE session, whose threads are never cancelled.
 *
 * libfuse's own loop (fuse_session_loop_mt, 3.14) ends by cancelling its workers, and a worker
 * can be cancelled anywhere in its wait for a request: that wait includes libfuse's error
 * report, a perror() ("fuse: reading device: ..."), which a removed partition's connection
 * produces when it ends while a request is being handed over (ECONNABORTED). A thread
 * cancelled inside perror() dies holding stderr's lock (glibc takes it without a cleanup
 * handler there), and the next use of stderr in the daemon waits forever: in umdev, the mount
 * of the next partition (vo_mount's stderr capture) under the service lock, and with it every
 * table re-read, the request that started it and the daemon's exit. A worker cancelled while
 * libfuse sizes its splice pipe also leaks the fd of /proc/sys/fs/pipe-max-size.
 *
 * Here every worker leaves by itself: when the connection ends (every reader then fails), or
 * when the session was marked exited and umdev_loop_wake() interrupted its wait with SIGUSR1
 * (see devmount.h). As in libfuse's loop, a worker is added when a request finds none other
 * waiting, up to max_threads, and none leaves before the end. All workers read the session's
 * own fd: libfuse's public calls offer no other (a cloned fd per worker is its loop's own). */
#ifndef UMDEV_LOOP_H
#define UMDEV_LOOP_H

#include <fuse_lowlevel.h>

struct umdev_loop;

/* max_threads 0: libfuse's default (10). NULL when out of memory. */
struct umdev_loop *umdev_loop_new(struct fuse_session *se, unsigned max_threads);

/* Serve from the calling thread and the workers it adds, until the session ends; returns once
 * every worker has ended. The calling thread must take SIGUSR1 (a handler without SA_RESTART):
 * the workers inherit its signal mask. */
void umdev_loop_run(struct umdev_loop *l);

/* After fuse_session_exit(): interrupt the workers waiting for a request. One may be about to
 * wait when this is called: call it again until umdev_loop_run() has returned. */
void umdev_loop_wake(struct umdev_loop *l);

/* Once umdev_loop_run() has returned (or was never called). */
void umdev_loop_free(struct umdev_loop *l);

#endif
