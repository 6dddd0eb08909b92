/* See config.h. */
#define _GNU_SOURCE
#include "config.h"

#include "log.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum { MODE_GROUP = 1 }; /* the four modes exclude each other */

static const struct vo_opt viewfs_options[] = {
	{ "move", VO_OPT_FLAG, offsetof(struct viewfs_config, mode), VIEWFS_MOVE, MODE_GROUP, NULL,
	  NULL, "the view is SOURCE alone (default)" },
	{ "bind", VO_OPT_ALIAS, 0, 0, 0, "move", NULL, "same as move" },
	{ "merge", VO_OPT_FLAG, offsetof(struct viewfs_config, mode), VIEWFS_MERGE, MODE_GROUP,
	  NULL, NULL, "union, SOURCE read-only and first; changes go to the original" },
	{ "cow", VO_OPT_FLAG, offsetof(struct viewfs_config, mode), VIEWFS_COW, MODE_GROUP, NULL,
	  NULL, "union; every change goes to SOURCE, the original is never modified" },
	{ "mincow", VO_OPT_FLAG, offsetof(struct viewfs_config, mode), VIEWFS_MINCOW, MODE_GROUP,
	  NULL, NULL, "union; changes the user may make go to the original, the rest to SOURCE" },
	{ "except", VO_OPT_LIST, offsetof(struct viewfs_config, except), 0, 0, NULL, "/PATH[:/PATH]",
	  "paths of the view that stay the original (repeatable)" },
	{ "vstat", VO_OPT_FLAG, offsetof(struct viewfs_config, vstat), 1, 0, NULL, NULL,
	  "virtual owners, mode bits and device nodes, kept in SOURCE/.-" },
	{ "wok", VO_OPT_FLAG, offsetof(struct viewfs_config, wok), 1, 0, NULL, NULL,
	  "report write permission everywhere (for tools that check first)" },
	{ "timeout", VO_OPT_STRING, offsetof(struct viewfs_config, timeout), 0, 0, NULL, "SECONDS",
	  "how long the kernel caches names and attributes (default 1)" },
	{ "volatile", VO_OPT_FLAG, offsetof(struct viewfs_config, volatile_layer), 1, 0, NULL, NULL,
	  "do not fsync copies (faster; a system crash may leave empty files)" },
	{ "user", VO_OPT_FLAG, offsetof(struct viewfs_config, keep_user), 1, 0, NULL, NULL,
	  "with -- COMMAND: run it with the user's own ids, not as the view's root" },
	{ "writeback", VO_OPT_BOOL, offsetof(struct viewfs_config, writeback), 0, 0, NULL, NULL,
	  "kernel write-back cache (default no: mtimes may lag, see viewfs(1))" },
	VO_OPT_TABLE_END,
};

const struct vo_daemon_info viewfs_info = {
	.name = "viewfs",
	.args_usage = "SOURCE MOUNTPOINT [-- COMMAND [ARGS...]]",
	.summary = "File-system patchworking: shows SOURCE patched over the original MOUNTPOINT\n"
		   "(move/bind, merge, cow or mincow), with whiteouts and virtual metadata kept in\n"
		   "SOURCE/.- (see viewfs(1) and docs/viewfs-layer-format.md).\n"
		   "With MOUNTPOINT / or -- COMMAND it runs COMMAND (default: your shell) in a view:\n"
		   "its own user and mount namespaces, the view as its root, as the view's root\n"
		   "with vstat. viewfs --enter PID [-- COMMAND] joins the view of PID.",
	.options = viewfs_options,
	.min_positional = 2,
	.max_positional = 2,
	.accepts_command = true,
};

void viewfs_config_init(struct viewfs_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->mode = VIEWFS_MOVE;
	cfg->writeback = 0;
	cfg->timeout_s = 1.0;
}

/* "/a//b/" -> "/a/b"; NULL (with a message) for a path that is relative, has "." or ".."
 * components, or is the root itself. */
static char *normalize_except(const char *p)
{
	if (p[0] != '/') {
		vo_error("invalid value '%s' for option 'except' (expected a path starting with /)", p);
		return NULL;
	}
	char *out = malloc(strlen(p) + 2), *d = out;
	if (!out)
		return NULL;
	const char *s = p;
	while (*s) {
		while (*s == '/')
			s++;
		if (!*s)
			break;
		const char *e = strchrnul(s, '/');
		size_t len = (size_t)(e - s);
		if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) {
			vo_error("invalid value '%s' for option 'except' (no . or .. components)", p);
			free(out);
			return NULL;
		}
		*d++ = '/';
		memcpy(d, s, len);
		d += len;
		s = e;
	}
	*d = '\0';
	if (d == out) {
		vo_error("invalid value '%s' for option 'except' (the whole view cannot be excepted)",
			 p);
		free(out);
		return NULL;
	}
	return out;
}

int viewfs_config_check(struct viewfs_config *cfg)
{
	if (cfg->timeout) {
		char *end;
		errno = 0;
		double t = strtod(cfg->timeout, &end);
		if (errno || *end || end == cfg->timeout || !(t >= 0 && t <= 86400 * 365)) {
			vo_error("invalid value '%s' for option 'timeout' (expected seconds, e.g. 1 or "
				 "0.5)", cfg->timeout);
			return -1;
		}
		cfg->timeout_s = t;
	}
	cfg->except_paths = calloc(cfg->except.count + 1, sizeof(char *));
	if (!cfg->except_paths)
		return -1;
	for (size_t i = 0; i < cfg->except.count; i++) {
		cfg->except_paths[i] = normalize_except(cfg->except.items[i]);
		if (!cfg->except_paths[i])
			return -1;
	}
	return 0;
}

void viewfs_config_free(struct viewfs_config *cfg)
{
	if (cfg->except_paths) {
		for (char **p = cfg->except_paths; *p; p++)
			free(*p);
		free(cfg->except_paths);
	}
	vo_strlist_free(&cfg->except);
	free(cfg->timeout);
	memset(cfg, 0, sizeof *cfg);
}

const char *viewfs_mode_name(int mode)
{
	switch (mode) {
	case VIEWFS_MOVE: return "move";
	case VIEWFS_MERGE: return "merge";
	case VIEWFS_COW: return "cow";
	case VIEWFS_MINCOW: return "mincow";
	default: return "?";
	}
}

bool viewfs_mode_is_union(int mode)
{
	return mode == VIEWFS_MERGE || mode == VIEWFS_COW || mode == VIEWFS_MINCOW;
}

bool viewfs_mode_writes_layer(int mode)
{
	return mode == VIEWFS_COW || mode == VIEWFS_MINCOW;
}
