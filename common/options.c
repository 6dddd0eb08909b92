/* See options.h. */
#include "options.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Options of mount(8) and libfuse that every daemon accepts and passes on unchanged. */
static const char *const passed_flags[] = {
	"allow_other", "allow_root", "default_permissions", "auto_unmount", "blkdev",
	"nosuid", "suid", "nodev", "dev", "noexec", "exec", "async", "sync", "dirsync",
	"atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime",
	"diratime", "nodiratime", "lazytime", "nolazytime", NULL,
};
static const char *const passed_valued[] = {
	"fsname", "subtype", "max_read", "blksize", "context", "fscontext", "defcontext",
	"rootcontext", NULL,
};
/* fstab/mount(8) words that mean nothing to a daemon: accepted and dropped. */
static const char *const dropped_flags[] = {
	"defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev",
	"nofail", "loud", "silent", NULL,
};

struct parse_ctx {
	const struct vo_daemon_info *info;
	void *cfg;
	struct vo_cmdline *cl;
	const struct vo_opt *group_set[16]; /* first option seen per exclusive group */
	bool failed;
};

static bool in_list(const char *const *list, const char *name, size_t len)
{
	for (; *list; list++)
		if (strlen(*list) == len && strncmp(*list, name, len) == 0)
			return true;
	return false;
}

int vo_parse_size(const char *s, uint64_t bare_unit, uint64_t *out)
{
	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	char *end;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno)
		return -1;
	uint64_t mult;
	if (*end == '\0') {
		mult = bare_unit ? bare_unit : 1;
	} else if (toupper((unsigned char)*end) == 'B' && end[1] == '\0') {
		mult = 1; /* "512B": explicitly bytes */
	} else {
		static const char units[] = "KMGTP";
		const char *u = strchr(units, toupper((unsigned char)*end));
		const char *rest = end + 1;
		if (!u || (*rest && strcasecmp(rest, "B") != 0 && strcasecmp(rest, "iB") != 0))
			return -1;
		mult = 1ULL << (10 * (u - units + 1));
	}
	if (n > UINT64_MAX / mult)
		return -1;
	*out = (uint64_t)n * mult;
	return 0;
}

void vo_strlist_add(struct vo_strlist *l, const char *s)
{
	char **items = realloc(l->items, (l->count + 2) * sizeof *items);
	char *copy = strdup(s);
	if (!items || !copy) {
		vo_error("out of memory");
		exit(1);
	}
	items[l->count++] = copy;
	items[l->count] = NULL;
	l->items = items;
}

void vo_strlist_free(struct vo_strlist *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

static const struct vo_opt *find_opt(const struct vo_opt *table, const char *name, size_t len)
{
	for (const struct vo_opt *o = table; o && o->name; o++)
		if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
			return o;
	return NULL;
}

static bool parse_bool(const char *v, int *out)
{
	static const char *const yes[] = { "1", "yes", "on", "true", NULL };
	static const char *const no[] = { "0", "no", "off", "false", NULL };
	for (int i = 0; yes[i]; i++) {
		if (strcasecmp(v, yes[i]) == 0) { *out = 1; return true; }
		if (strcasecmp(v, no[i]) == 0) { *out = 0; return true; }
	}
	return false;
}

static int bad_value(struct parse_ctx *ctx, const struct vo_opt *o, const char *v, const char *want)
{
	vo_error("invalid value '%s' for option '%s' (expected %s)", v, o->name, want);
	ctx->failed = true;
	return -1;
}

/* Apply one -o option from the daemon's table; value is NULL for a bare name. */
static int apply_opt(struct parse_ctx *ctx, const struct vo_opt *o, const char *value, int depth)
{
	char *field = (char *)ctx->cfg + o->offset;

	if (o->group > 0 && o->group < 16) {
		const struct vo_opt *prev = ctx->group_set[o->group];
		if (prev && prev != o) {
			vo_error("options '%s' and '%s' cannot be combined", prev->name, o->name);
			ctx->failed = true;
			return -1;
		}
		ctx->group_set[o->group] = o;
	}

	bool takes_value = o->type != VO_OPT_FLAG && o->type != VO_OPT_ALIAS && o->type != VO_OPT_BOOL;
	if (takes_value && (!value || !*value)) {
		vo_error("option '%s' needs a value (%s=%s)", o->name, o->name, o->arg ? o->arg : "VALUE");
		ctx->failed = true;
		return -1;
	}
	if ((o->type == VO_OPT_FLAG || o->type == VO_OPT_ALIAS) && value) {
		vo_error("option '%s' takes no value", o->name);
		ctx->failed = true;
		return -1;
	}

	char *end;
	unsigned long long n;
	switch (o->type) {
	case VO_OPT_FLAG:
		*(int *)field = o->value;
		return 0;
	case VO_OPT_BOOL:
		if (!value) {
			*(int *)field = 1;
			return 0;
		}
		if (!parse_bool(value, (int *)field))
			return bad_value(ctx, o, value, "yes or no");
		return 0;
	case VO_OPT_UINT:
	case VO_OPT_OCTAL:
		errno = 0;
		n = strtoull(value, &end, o->type == VO_OPT_OCTAL ? 8 : 0);
		if (errno || *end || *value == '-' || n > 0xffffffffULL)
			return bad_value(ctx, o, value, o->type == VO_OPT_OCTAL ? "an octal number"
									: "a number");
		*(unsigned *)field = (unsigned)n;
		return 0;
	case VO_OPT_SIZE:
		if (vo_parse_size(value, (uint64_t)o->value, (uint64_t *)field) < 0)
			return bad_value(ctx, o, value, "a size such as 512, 64K, 100M or 2G");
		return 0;
	case VO_OPT_STRING:
		free(*(char **)field);
		*(char **)field = strdup(value);
		return 0;
	case VO_OPT_LIST: {
		char *copy = strdup(value), *save = NULL;
		for (char *item = strtok_r(copy, ":", &save); item; item = strtok_r(NULL, ":", &save))
			vo_strlist_add((struct vo_strlist *)field, item);
		free(copy);
		return 0;
	}
	case VO_OPT_ALIAS: {
		const struct vo_opt *target = find_opt(ctx->info->options, o->alias, strlen(o->alias));
		if (depth > 4)
			return -1;
		if (target)
			return apply_opt(ctx, target, NULL, depth + 1);
		/* an alias of a generic option (rw+ -> rw) */
		if (strcmp(o->alias, "rw") == 0)
			ctx->cl->readonly = false;
		else if (strcmp(o->alias, "ro") == 0)
			ctx->cl->readonly = true;
		return 0;
	}
	}
	return -1;
}

static int handle_suboption(struct parse_ctx *ctx, const char *arg)
{
	const char *eq = strchr(arg, '=');
	size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
	const char *value = eq ? eq + 1 : NULL;

	/* The daemon's own table first, so a daemon may give a generic name its own meaning. */
	const struct vo_opt *o = find_opt(ctx->info->options, arg, len);
	if (o)
		return apply_opt(ctx, o, value, 0) < 0 ? -1 : 0;

	if (!eq && len == 2 && strncmp(arg, "ro", 2) == 0) {
		ctx->cl->readonly = true;
		return 0; /* re-added as "ro" by the caller of fuse_session_new, see daemon.c */
	}
	if (!eq && len == 2 && strncmp(arg, "rw", 2) == 0) {
		ctx->cl->readonly = false;
		return 0;
	}
	if (!eq && strcmp(arg, "debug") == 0) {
		ctx->cl->debug = ctx->cl->foreground = true;
		return 0;
	}
	if (eq && len == 11 && strncmp(arg, "max_threads", len) == 0) {
		char *end;
		unsigned long n = strtoul(value, &end, 10);
		if (*end || n == 0 || n > 1024) {
			vo_error("invalid value '%s' for option 'max_threads' (expected 1 to 1024)", value);
			ctx->failed = true;
			return -1;
		}
		ctx->cl->max_threads = (unsigned)n;
		return 0;
	}
	if (!eq && in_list(passed_flags, arg, len))
		return 1;
	if (eq && in_list(passed_valued, arg, len))
		return 1;
	if (in_list(dropped_flags, arg, len) || strncmp(arg, "x-", 2) == 0 ||
	    strncmp(arg, "comment=", 8) == 0)
		return 0;

	vo_error("unknown option '%s' (see %s --help)", arg, ctx->info->name);
	ctx->failed = true;
	return -1;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct parse_ctx *ctx = data;
	struct vo_cmdline *cl = ctx->cl;
	(void)outargs;

	if (key == FUSE_OPT_KEY_NONOPT) {
		if (cl->npositional >= ctx->info->max_positional ||
		    cl->npositional >= VO_MAX_POSITIONAL) {
			vo_error("unexpected argument '%s' (usage: %s [options] %s)", arg,
				 ctx->info->name, ctx->info->args_usage);
			ctx->failed = true;
			return -1;
		}
		cl->positional[cl->npositional++] = strdup(arg);
		return 0;
	}
	if (arg[0] != '-')
		return handle_suboption(ctx, arg);

	if (strcmp(arg, "-f") == 0) {
		cl->foreground = true;
	} else if (strcmp(arg, "-d") == 0) {
		cl->debug = cl->foreground = true;
	} else if (strcmp(arg, "-s") == 0) {
		cl->single_thread = true;
	} else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
		cl->help = true;
	} else if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
		cl->version = true;
	} else {
		vo_error("unknown option '%s' (see %s --help)", arg, ctx->info->name);
		ctx->failed = true;
		return -1;
	}
	return 0;
}

/* Rewrite quoted sections of an -o argument into backslash escapes that fuse_opt understands:
 * 'a,b' -> a\,b. Backslashes already present keep their meaning. */
static char *unquote_option_arg(const char *s)
{
	char *out = malloc(strlen(s) * 2 + 1), *d = out;
	char quote = 0;
	if (!out)
		return NULL;
	for (; *s; s++) {
		if (quote) {
			if (*s == quote) {
				quote = 0;
			} else {
				if (*s == ',' || *s == '\\')
					*d++ = '\\';
				*d++ = *s;
			}
		} else if (*s == '\'' || *s == '"') {
			quote = *s;
		} else {
			if (*s == '\\' && s[1])
				*d++ = *s++;
			*d++ = *s;
		}
	}
	*d = '\0';
	return out;
}

int vo_cmdline_parse(const struct vo_daemon_info *info, void *cfg, int argc, char **argv,
		     struct vo_cmdline *cl)
{
	memset(cl, 0, sizeof *cl);
	struct parse_ctx ctx = { .info = info, .cfg = cfg, .cl = cl };

	/* Split off "-- COMMAND ..." first: the command's own words are none of our business. */
	int nargs = argc;
	if (info->accepts_command) {
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--") == 0) {
				nargs = i;
				cl->command = calloc((size_t)(argc - i), sizeof(char *));
				for (int j = i + 1; j < argc; j++)
					cl->command[j - i - 1] = strdup(argv[j]);
				break;
			}
		}
	}

	struct fuse_args in = FUSE_ARGS_INIT(0, NULL);
	fuse_opt_add_arg(&in, argv[0]);
	for (int i = 1; i < nargs; i++) {
		bool is_opts = i > 1 && strcmp(argv[i - 1], "-o") == 0;
		bool attached = strncmp(argv[i], "-o", 2) == 0 && argv[i][2];
		if (is_opts || attached) {
			char *u = unquote_option_arg(argv[i]);
			fuse_opt_add_arg(&in, u);
			free(u);
		} else {
			fuse_opt_add_arg(&in, argv[i]);
		}
	}
	static const struct fuse_opt none[] = { FUSE_OPT_END };
	int r = fuse_opt_parse(&in, &ctx, none, opt_proc);
	cl->fuse_args = in;
	if (r < 0 || ctx.failed) {
		if (!ctx.failed) /* fuse_opt's own complaint (e.g. "-o" without argument) */
			vo_error("invalid command line (see %s --help)", info->name);
		return -1;
	}
	if (cl->help) {
		vo_print_help(info);
		return 1;
	}
	if (cl->version) {
		printf("%s (viewos) %s\nusing libfuse %s\n", info->name, VIEWOS_VERSION,
		       fuse_pkgversion());
		return 1;
	}
	if (cl->npositional < info->min_positional) {
		vo_error("missing arguments (usage: %s [options] %s)", info->name, info->args_usage);
		return -1;
	}
	return 0;
}

void vo_cmdline_free(struct vo_cmdline *cl)
{
	for (int i = 0; i < cl->npositional; i++)
		free(cl->positional[i]);
	if (cl->command) {
		for (char **c = cl->command; *c; c++)
			free(*c);
		free(cl->command);
	}
	fuse_opt_free_args(&cl->fuse_args);
	memset(cl, 0, sizeof *cl);
}

void vo_print_help(const struct vo_daemon_info *info)
{
	printf("usage: %s [options] %s\n\n%s\n\n", info->name, info->args_usage, info->summary);
	printf("%s options:\n", info->name);
	for (const struct vo_opt *o = info->options; o && o->name; o++) {
		if (!o->help)
			continue;
		char left[64];
		snprintf(left, sizeof left, "-o %s%s%s", o->name, o->arg ? "=" : "",
			 o->arg ? o->arg : "");
		printf("    %-26s %s\n", left, o->help);
	}
	printf("\ngeneral options:\n"
	       "    -o ro                      mount read-only\n"
	       "    -o allow_other             let other users use the mount (needs user_allow_other)\n"
	       "    -o default_permissions     let the kernel check permissions\n"
	       "    -o max_threads=N           at most N threads serving requests\n"
	       "    -o fsname=NAME, subtype=   names shown in /proc/mounts\n"
	       "    -f                         stay in the foreground\n"
	       "    -d, -o debug               debug output (implies -f)\n"
	       "    -s                         single-threaded\n"
	       "    -h, --help                 this help\n"
	       "    -V, --version              print the version\n"
	       "\nThe command returns once the mount is ready. Unmount with fusermount3 -u %s.\n",
	       info->max_positional > 1 ? "MOUNTPOINT" : "PATH");
}
