/* Command-line parsing shared by every daemon: `NAME [-o a,b=c] [-f] [-d] [-s] ARGS...`.
 *
 * Each daemon describes its own -o options in a table of struct vo_opt (name, type, where the
 * value goes); the FUSE and mount(8) options everyone knows (ro, allow_other, fsname=, noatime,
 * ...) are recognised here and handed on to libfuse. Anything else is an error that names the
 * option: a mistyped option must never be silently ignored, as View-OS's viewfs did.
 *
 * fuse_opt does the argv walking and the comma splitting (with backslash escapes); a pre-pass
 * turns quoted sections ('a,b' or "a,b") into escaped commas, as View-OS's tokeniser allowed. */
#ifndef VIEWOS_OPTIONS_H
#define VIEWOS_OPTIONS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum vo_opt_type {
	VO_OPT_FLAG,   /* "name": stores .value into an int field */
	VO_OPT_BOOL,   /* "name" or "name=0|1|yes|no|on|off|true|false": int field, 0 or 1 */
	VO_OPT_UINT,   /* "name=N", decimal (or 0x hex): unsigned int field */
	VO_OPT_OCTAL,  /* "name=NNN" in octal (modes, umasks): unsigned int field */
	VO_OPT_SIZE,   /* "name=SIZE" with K/M/G/T suffixes: uint64_t field; a bare number is
	                  multiplied by .value (0 or 1: bytes, 512: sectors as View-OS did) */
	VO_OPT_STRING, /* "name=TEXT": char * field (strdup'ed; the last one wins) */
	VO_OPT_LIST,   /* "name=A[:B...]", repeatable: struct vo_strlist field, items appended */
	VO_OPT_ALIAS,  /* "name" means exactly .alias (e.g. bind -> move, rw+ -> rw) */
};

struct vo_opt {
	const char *name;
	enum vo_opt_type type;
	size_t offset;     /* of the field in the daemon's config struct */
	int value;         /* FLAG: value stored; SIZE: unit of a bare number */
	int group;         /* options sharing a nonzero group are mutually exclusive */
	const char *alias; /* ALIAS: the option this one stands for */
	const char *arg;   /* placeholder shown by --help ("SIZE", "PATH"), NULL for flags */
	const char *help;  /* one line for --help; NULL hides the option (compat aliases) */
};

#define VO_OPT_TABLE_END { .name = NULL }

struct vo_strlist {
	char **items;
	size_t count;
};

/* What the generic part of the command line said. */
#define VO_MAX_POSITIONAL 4
struct vo_cmdline {
	bool foreground;      /* -f (also implied by -d) */
	bool debug;           /* -d or -o debug */
	bool single_thread;   /* -s */
	bool readonly;        /* -o ro (the last of ro/rw wins, as mount(8)) */
	bool help, version;   /* --help/-h, --version/-V: printed, caller exits 0 */
	unsigned max_threads; /* -o max_threads=N, 0 = libfuse default */
	int npositional;
	char *positional[VO_MAX_POSITIONAL];
	char **command;       /* the words after "--" when the daemon accepts a command, else NULL */
	struct fuse_args fuse_args; /* argv[0] plus the kernel/libfuse -o options to pass on */
};

/* What a daemon is, for parsing and for --help. */
struct vo_daemon_info {
	const char *name;          /* "umfuse-ext2" */
	const char *args_usage;    /* "SOURCE MOUNTPOINT" */
	const char *summary;       /* one line: what it does */
	const struct vo_opt *options;
	int min_positional, max_positional;
	bool accepts_command;      /* "-- COMMAND [ARGS...]" ends the options */
};

/* Parse argv. Returns 0 when the daemon should go on, 1 when --help or --version was printed
 * (exit 0), -1 after printing a one-line error (exit VO_EXIT_USAGE). cfg receives the values of
 * the daemon's own options; fields not mentioned keep what the caller put there (defaults). */
int vo_cmdline_parse(const struct vo_daemon_info *info, void *cfg, int argc, char **argv,
		     struct vo_cmdline *cl);
void vo_cmdline_free(struct vo_cmdline *cl);
void vo_print_help(const struct vo_daemon_info *info);

/* "100M", "4k", "1G", "2TiB" -> bytes; a bare number is multiplied by bare_unit.
 * Returns 0, or -1 on garbage, an unknown suffix, or overflow. */
int vo_parse_size(const char *s, uint64_t bare_unit, uint64_t *out);

void vo_strlist_add(struct vo_strlist *l, const char *s);
void vo_strlist_free(struct vo_strlist *l);

#endif
