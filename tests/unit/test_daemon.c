/* Unit tests for the detach protocol of common/daemon.c: the launching process returns only
 * when the daemon says it is ready, and passes on the daemon's failure otherwise. Each case
 * runs in a child process that plays the launched command. */
#define _GNU_SOURCE
#include "check.h"

#include "daemon.h"
#include "log.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char marker[] = "/tmp/viewos-daemon-XXXXXX";

enum outcome { READY_LATE, FAIL_WITH_2, CRASH };

/* What the launched command does: detach, then (in the daemon) the given outcome. */
static int launch(enum outcome what)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct vo_cmdline cl = { .foreground = false };
		vo_detach_begin(&cl); /* the launcher never comes back from here */
		/* the daemon */
		struct timespec ts = { 0, 300 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		switch (what) {
		case READY_LATE:
			close(open(marker, O_CREAT | O_WRONLY, 0600));
			vo_detach_ready();
			_exit(0);
		case FAIL_WITH_2:
			_exit(2);
		case CRASH:
			signal(SIGSEGV, SIG_DFL);
			raise(SIGSEGV);
			_exit(99);
		}
	}
	int status;
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_launcher_returns_after_ready(void)
{
	unlink(marker);
	CHECK_EQ(launch(READY_LATE), VO_EXIT_OK);
	/* the daemon wrote the marker before saying ready: it must exist when we get here */
	CHECK(access(marker, F_OK) == 0);
	unlink(marker);
}

static void test_launcher_passes_on_failure(void)
{
	CHECK_EQ(launch(FAIL_WITH_2), 2);
}

static void test_launcher_reports_a_crash(void)
{
	CHECK_EQ(launch(CRASH), VO_EXIT_MOUNT);
}

static void test_foreground_does_not_fork(void)
{
	pid_t me = getpid();
	struct vo_cmdline cl = { .foreground = true };
	vo_detach_begin(&cl);
	CHECK_EQ(getpid(), me);
	vo_detach_ready(); /* harmless */
}

int main(void)
{
	vo_log_init("test_daemon");
	int fd = mkstemp(marker);
	close(fd);
	RUN(test_launcher_returns_after_ready);
	RUN(test_launcher_passes_on_failure);
	RUN(test_launcher_reports_a_crash);
	RUN(test_foreground_does_not_fork);
	unlink(marker);
	return CHECK_DONE();
}
