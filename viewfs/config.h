/* viewfs's -o options: the mode (move/bind, merge, cow, mincow), except=, vstat, wok and the
 * cache timeout, parsed through common/options (strict: an unknown option or two modes is an
 * error) and checked here. Kept apart from the daemon so the view launcher parses the same way. */
#ifndef VIEWFS_CONFIG_H
#define VIEWFS_CONFIG_H

#include "options.h" /* common/: struct vo_opt, vo_strlist */

#include <stdbool.h>

enum viewfs_mode {
	VIEWFS_MOVE = 1, /* the view is SOURCE; the original is unreachable (default, alias bind) */
	VIEWFS_MERGE,    /* union, SOURCE first and read-only; changes go to the original */
	VIEWFS_COW,      /* union; every change goes to SOURCE */
	VIEWFS_MINCOW,   /* union; a change the user may make on the original is made there */
};

struct viewfs_config {
	int mode;                 /* enum viewfs_mode */
	struct vo_strlist except; /* as given: "/tmp", "/home/me" */
	int vstat;                /* virtual owner, mode bits, device nodes */
	int wok;                  /* report write permission (mode | 0222, access(W_OK) succeeds) */
	char *timeout;            /* seconds the kernel may cache entries and attributes */
	int writeback;            /* kernel write-back cache */
	int volatile_layer;       /* no fsync of copies: faster, not crash-safe (as overlayfs's) */
	int keep_user;            /* a view with a command: keep the user's ids (no virtual root) */
	bool in_view;             /* set by the launcher, not an option: see struct viewfs */

	/* filled in by viewfs_config_check() */
	double timeout_s;
	char **except_paths;      /* normalized ("/a/b", no trailing slash), NULL-terminated */
};

/* The option table and the daemon description for vo_cmdline_parse(). */
extern const struct vo_daemon_info viewfs_info;

/* Defaults before parsing. */
void viewfs_config_init(struct viewfs_config *cfg);
/* After parsing: validate and normalize. Returns 0, or -1 after a one-line error. */
int viewfs_config_check(struct viewfs_config *cfg);
void viewfs_config_free(struct viewfs_config *cfg);

const char *viewfs_mode_name(int mode);
bool viewfs_mode_is_union(int mode); /* merge, cow, mincow: the original shows through */
bool viewfs_mode_writes_layer(int mode); /* cow, mincow: changes land in SOURCE */

#endif
