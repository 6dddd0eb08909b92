/* The user namespace of a view and its id maps.
 *
 * The launcher (outside) writes the maps of the namespace its child made (a process cannot map
 * ids it does not own, and newuidmap must be run from outside). Two plans:
 *   - subordinate ids (/etc/subuid and /etc/subgid list the user, and newuidmap/newgidmap are
 *     installed): view 0 is the user, view 1..N are the user's subordinate range. A setuid() or
 *     setgroups() in the view (apt dropping to _apt) then works, and the daemon's answers in
 *     host numbering (root 0, others their own ids) show the real owners.
 *   - otherwise a single map, view 0 (or the user's own id with -o user) is the user: every
 *     other id shows as nobody, and setuid()/setgroups() to other ids fail with EINVAL/EPERM; the
 *     launcher says so in one line on stderr when the view starts.
 * With -o user (or without vstat) the command keeps the user's ids: a single map of the user's
 * own uid and gid.
 * Hand-written because no library does it: a few lines of /proc writes and two helper runs. */
#define _GNU_SOURCE
#include "view.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const NEWUIDMAP = "/usr/bin/newuidmap", *const NEWGIDMAP = "/usr/bin/newgidmap";

/* The first range of file (name:start:count or uid:start:count) for the user. */
static bool subid_range(const char *file, const char *name, unsigned long id, unsigned long *start,
			unsigned long *count)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return false;
	char line[512];
	bool found = false;
	while (!found && fgets(line, sizeof line, f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c1 = '\0';
		char *end;
		unsigned long n = strtoul(line, &end, 10);
		bool me = (name && strcmp(line, name) == 0) || (*line && !*end && n == id);
		if (!me)
			continue;
		unsigned long s = strtoul(c1 + 1, NULL, 10), k = strtoul(c2 + 1, NULL, 10);
		if (k > 0) {
			*start = s;
			*count = k;
			found = true;
		}
	}
	fclose(f);
	return found;
}

void view_ids_plan(struct view_ids *ids, bool vroot)
{
	memset(ids, 0, sizeof *ids);
	ids->uid = geteuid();
	ids->gid = getegid();
	ids->userns = ids->uid != 0;
	ids->vroot = vroot;
	if (!ids->userns || !vroot)
		return;
	struct passwd *pw = getpwuid(ids->uid);
	const char *name = pw ? pw->pw_name : NULL;
	char who[64];
	if (name)
		snprintf(who, sizeof who, "%s", name);
	else
		snprintf(who, sizeof who, "uid %lu", (unsigned long)ids->uid);
	/* The reason is kept for the warning view_ids_map gives once the view really starts (not
	 * now: a bad command line must stay a one-line error). */
	if (access(NEWUIDMAP, X_OK) < 0 || access(NEWGIDMAP, X_OK) < 0)
		snprintf(ids->single_why, sizeof ids->single_why,
			 "%s or %s is not installed (Debian package uidmap)", NEWUIDMAP, NEWGIDMAP);
	else if (!subid_range("/etc/subuid", name, ids->uid, &ids->sub_uid, &ids->n_uid))
		snprintf(ids->single_why, sizeof ids->single_why,
			 "no subordinate ids for %s in /etc/subuid", who);
	else if (!subid_range("/etc/subgid", name, ids->gid, &ids->sub_gid, &ids->n_gid))
		snprintf(ids->single_why, sizeof ids->single_why,
			 "no subordinate ids for %s in /etc/subgid", who);
	else
		ids->subordinate = true;
}

static int write_file(pid_t pid, const char *what, const char *text)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		vo_error("cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Run newuidmap/newgidmap PID inner outer count inner outer count. */
static int run_helper(const char *helper, pid_t pid, unsigned long own, unsigned long sub,
		      unsigned long n)
{
	char a[6][32];
	snprintf(a[0], 32, "%d", (int)pid);
	snprintf(a[1], 32, "0");
	snprintf(a[2], 32, "%lu", own);
	snprintf(a[3], 32, "1");
	snprintf(a[4], 32, "1");
	snprintf(a[5], 32, "%lu", sub);
	char cnt[32];
	snprintf(cnt, sizeof cnt, "%lu", n);
	pid_t h = fork();
	if (h < 0) {
		vo_error("cannot run %s: %s", helper, strerror(errno));
		return -1;
	}
	if (h == 0) {
		execl(helper, helper, a[0], a[1], a[2], a[3], a[4], a[5], cnt, (char *)NULL);
		_exit(127);
	}
	int st;
	while (waitpid(h, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		vo_error("cannot map the subordinate ids of the view: %s failed (status %d)", helper,
			 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return -1;
	}
	return 0;
}

int view_ids_map(const struct view_ids *ids, pid_t child)
{
	if (!ids->userns)
		return 0;
	if (ids->subordinate)
		return run_helper(NEWUIDMAP, child, ids->uid, ids->sub_uid, ids->n_uid) < 0 ||
				       run_helper(NEWGIDMAP, child, ids->gid, ids->sub_gid, ids->n_gid) < 0
			       ? -1 : 0;
	char map[64];
	snprintf(map, sizeof map, "%lu %lu 1\n", ids->vroot ? 0UL : (unsigned long)ids->uid,
		 (unsigned long)ids->uid);
	if (write_file(child, "uid_map", map) < 0 || write_file(child, "setgroups", "deny") < 0)
		return -1;
	snprintf(map, sizeof map, "%lu %lu 1\n", ids->vroot ? 0UL : (unsigned long)ids->gid,
		 (unsigned long)ids->gid);
	if (write_file(child, "gid_map", map) < 0)
		return -1;
	/* The "fall back to a single mapping and say what does not work": a virtual root
	 * that cannot become anyone else (apt's drop to _apt fails). With -o user the single map
	 * is all that was asked for: nothing to say. */
	if (ids->vroot && *ids->single_why)
		vo_warn("%s: only the view's root is mapped: other owners show as nobody, and "
			"setuid()/setgroups() to other ids fail", ids->single_why);
	return 0;
}

int view_ids_become(const struct view_ids *ids)
{
	if (!ids->userns)
		return 0;
	uid_t u = ids->vroot ? 0 : ids->uid;
	gid_t g = ids->vroot ? 0 : ids->gid;
	/* Supplementary groups from outside show as nobody in the view; drop them where the map
	 * allows it (not after "deny"). */
	if (ids->subordinate)
		setgroups(0, NULL);
	if (setresgid(g, g, g) < 0 || setresuid(u, u, u) < 0) {
		vo_error("cannot take the ids %u:%u in the view: %s", (unsigned)u, (unsigned)g,
			 strerror(errno));
		return -1;
	}
	return 0;
}
