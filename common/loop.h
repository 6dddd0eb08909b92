/* A multi-threaded loop serving one FUSE session, whose threads are never cancelled.
 *
 * libfuse's own loop (fuse_session_loop_mt, 3.14) ends by cancelling its workers, and a worker
 * can be cancelled anywhere in its wait for a request: that wait includes libfuse's error
 * report, a perror() ("fuse: reading device: ..."), which a connection produces when it ends
 * while a request is being handed over (ECONNABORTED: an unmount, a removed partition of
 * umdev). A thread cancelled inside perror() dies holding stderr's lock (glibc takes it without
 * a cleanup handler there), and the next use of stderr in the process waits forever: in umdev,
 * the mount of the next partition (vo_mount's stderr capture) under the service lock; in any
 * daemon, the last message or fflush at exit, so that it never exits. A worker cancelled while
 * libfuse sizes its splice pipe also leaks the fd of /proc/sys/fs/pipe-max-size.
 *
 * Here every worker leaves by itself. The thread that calls vo_loop_run() serves nothing: as
 * libfuse's main thread, it waits for the end of the session, which comes when the connection
 * ends (unmount: every read then fails, and libfuse marks the session exited), when a read
 * fails otherwise, or when vo_loop_exit() is called (devmount_stop, a SIGTERM handler). It
 * then interrupts the workers still waiting for a request with VO_LOOP_WAKE_SIGNAL until every
 * one has left, and joins them. A worker takes no signal but that one: as in libfuse's loop,
 * SIGTERM and its kind go to another thread and never interrupt a request being served.
 *
 * As in libfuse's loop, a worker is added when a request finds none other waiting, up to
 * max_threads, and none leaves before the end. All workers read the session's own fd:
 * libfuse's public calls offer no other (a cloned fd per worker, clone_fd, is its loop's own). */
#ifndef VIEWOS_LOOP_H
#define VIEWOS_LOOP_H

#include <fuse_lowlevel.h>
#include <signal.h>

/* Interrupts a worker's wait for a request; its handler (vo_loop_init_signals) does nothing. */
#define VO_LOOP_WAKE_SIGNAL SIGUSR1

struct vo_loop;

/* max_threads 0: libfuse's default (10). NULL when out of memory. */
struct vo_loop *vo_loop_new(struct fuse_session *se, unsigned max_threads);

/* Install the handler of VO_LOOP_WAKE_SIGNAL: it does nothing, and without SA_RESTART, so the
 * wait it interrupts returns EINTR. Before the first vo_loop_run(). */
void vo_loop_init_signals(void);

/* Serve until the session ends; returns once every worker has ended: 0, or the -errno of the
 * read that failed (an ended connection, ENODEV or ECONNABORTED, is no failure). */
int vo_loop_run(struct vo_loop *l);

/* End the loop: mark the session exited and have vo_loop_run() wake its workers and return.
 * Async-signal-safe, for a signal handler; from any thread, at any time before
 * vo_loop_free(). */
void vo_loop_exit(struct vo_loop *l);

/* Once vo_loop_run() has returned (or was never called). NULL is fine. */
void vo_loop_free(struct vo_loop *l);

#endif
