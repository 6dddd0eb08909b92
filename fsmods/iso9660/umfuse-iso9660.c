/* umfuse-iso9660: an ISO 9660 image (CD, DVD or BD image, or any block source of the common
 * layer: an image file, a umdev device file, an NBD export) shown read-only as a directory tree.
 *
 * What it reads: ISO 9660 levels 1 to 3 with multi-extent files (beyond 4 GiB); Rock Ridge
 * (names, modes, owners, link counts, symlinks, device numbers, timestamps, and directories
 * relocated below rr_moved put back in place through CL/PL/RE); Joliet when there is no Rock
 * Ridge or with -o norock; zisofs (version 1 and zisofs2 with zlib) inflated on the fly; any
 * session of a multi-session image (the last one by default). The kernel's isofs options keep
 * their names and meanings: norock, nojoliet, map=, check=, session= (counted from 0, as isofs
 * counts them), sbsector=, uid=, gid=, mode=, dmode=.
 *
 * What it leaves out, and why:
 *  - writing: ISO 9660 is a mastering format; every change answers EROFS and the mount is ro;
 *  - interleaved files and ISO 9660 logical blocks other than 2048 bytes: no writer has made
 *    them since the early 1990s (they are refused with EIO / at mount time, not misread);
 *  - the path table: it duplicates the directory tree, which is what we read (as Linux does);
 *  - ISO 9660:1999 (level 4) trees, Apple extensions and map=acorn: the primary tree of such
 *    images is read instead;
 *  - sessions of a real CD's table of contents: an image file has none, so sessions are found
 *    the way xorriso records them in files (see volume.c); sbsector= reaches any other layout.
 *
 * The image must not change while it is mounted: its metadata is parsed once and cached, and
 * the kernel caches attributes and data for as long as the mount lives. */
#include "fuse_ops.h"
#include "isofs.h"

#include "block.h"
#include "daemon.h"
#include "log.h"
#include "options.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cfg {
	int norock, nojoliet;
	char *map, *check;
	unsigned session, sbsector;
	unsigned uid, gid, mode, dmode;
};

#define NO_SBSECTOR UINT_MAX
#define NO_SESSION UINT_MAX
/* session=N counts from 0 (the oldest session), as the kernel's isofs does (it asks a CD's
 * table of contents for track N + 1), and like it takes 0 to 98. xorriso -toc numbers the same
 * sessions from 1. */
#define MAX_SESSION 98u

static const struct vo_opt options[] = {
	{ "norock", VO_OPT_FLAG, offsetof(struct cfg, norock), 1, 0, NULL, NULL,
	  "ignore Rock Ridge: show the Joliet (or plain ISO 9660) names" },
	{ "nojoliet", VO_OPT_FLAG, offsetof(struct cfg, nojoliet), 1, 0, NULL, NULL,
	  "ignore Joliet" },
	{ "map", VO_OPT_STRING, offsetof(struct cfg, map), 0, 0, NULL, "off|normal",
	  "plain ISO 9660 names: lower case without ';1' (normal), or as recorded (off)" },
	{ "check", VO_OPT_STRING, offsetof(struct cfg, check), 0, 0, NULL, "relaxed|strict",
	  "lookups ignore case (relaxed: the default for Joliet) or not (strict)" },
	{ "session", VO_OPT_UINT, offsetof(struct cfg, session), 0, 1, NULL, "N",
	  "mount session N of a multi-session image (0 = the oldest, as isofs; default: the "
	  "last)" },
	{ "sbsector", VO_OPT_UINT, offsetof(struct cfg, sbsector), 0, 1, NULL, "BLOCK",
	  "mount the session whose volume starts at this 2048-byte block" },
	{ "uid", VO_OPT_UINT, offsetof(struct cfg, uid), 0, 0, NULL, "UID",
	  "owner of files without Rock Ridge (default: the mounting user)" },
	{ "gid", VO_OPT_UINT, offsetof(struct cfg, gid), 0, 0, NULL, "GID",
	  "group of files without Rock Ridge (default: the mounting user's)" },
	{ "mode", VO_OPT_OCTAL, offsetof(struct cfg, mode), 0, 0, NULL, "MODE",
	  "permissions of files without Rock Ridge (default: 0555)" },
	{ "dmode", VO_OPT_OCTAL, offsetof(struct cfg, dmode), 0, 0, NULL, "MODE",
	  "permissions of directories without Rock Ridge (default: 0555)" },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	.name = "umfuse-iso9660",
	.args_usage = "SOURCE MOUNTPOINT",
	.summary = "Mounts an ISO 9660 image (Rock Ridge, Joliet, zisofs, multi-session) read-only.",
	.options = options,
	.min_positional = 2,
	.max_positional = 2,
};

/* map= and check= take the kernel's words and their one-letter abbreviations. */
static bool parse_choice(const char *opt, const char *value, const char *a, const char *b,
			 int *which)
{
	if (!value)
		return true;
	if (strcmp(value, a) == 0 || (value[0] == a[0] && value[1] == '\0')) {
		*which = 0;
		return true;
	}
	if (strcmp(value, b) == 0 || (value[0] == b[0] && value[1] == '\0')) {
		*which = 1;
		return true;
	}
	vo_error("invalid value '%s' for option '%s' (expected %s or %s)", value, opt, a, b);
	return false;
}

static int iso_start(void *cfgp, struct vo_cmdline *cl, void **statep)
{
	struct cfg *c = cfgp;
	if (c->session != NO_SESSION && c->session > MAX_SESSION) {
		vo_error("invalid value '%u' for option 'session' (0 to %u: sessions count from 0, "
			 "as the kernel's isofs counts them)", c->session, MAX_SESSION);
		return VO_EXIT_USAGE;
	}
	struct iso_options o = {
		.norock = c->norock, .nojoliet = c->nojoliet,
		.session = c->session == NO_SESSION ? 0 : c->session + 1,
		.has_sbsector = c->sbsector != NO_SBSECTOR, .sbsector = c->sbsector,
		.uid = c->uid, .gid = c->gid, .fmode = c->mode, .dmode = c->dmode,
	};
	int map = 1, check = -1;
	if (c->map && strcmp(c->map, "acorn") == 0) {
		vo_error("invalid value 'acorn' for option 'map' (Acorn extensions are not "
			 "supported; expected off or normal)");
		return VO_EXIT_USAGE;
	}
	if (!parse_choice("map", c->map, "off", "normal", &map) ||
	    !parse_choice("check", c->check, "relaxed", "strict", &check))
		return VO_EXIT_USAGE;
	o.map_off = map == 0;
	o.check = check < 0 ? 0 : check == 0 ? 'r' : 's';

	/* An ISO 9660 image is read-only whatever was asked: mount it so, and let the kernel
	   check permissions against the modes and owners the image records. */
	cl->readonly = true;
	fuse_opt_add_arg(&cl->fuse_args, "-odefault_permissions");

	const char *source = cl->positional[0];
	char err[512];
	struct vo_block *dev = vo_block_open(source, VO_BLOCK_RDONLY | VO_BLOCK_LOCK, err, sizeof err);
	if (!dev) {
		vo_error("%s", err);
		return VO_EXIT_SOURCE;
	}
	struct iso_fs *fs = calloc(1, sizeof *fs);
	if (!fs) {
		vo_block_close(dev);
		vo_error("out of memory");
		return VO_EXIT_SOURCE;
	}
	fs->fd = vo_block_fd(dev, &fs->fd_offset);
	if (iso_image_open(dev, &o, &fs->img, err, sizeof err) < 0) {
		vo_error("cannot mount %s: %s", source, err);
		free(fs);
		return VO_EXIT_SOURCE;
	}
	static const char *const ns_names[] = { "plain ISO 9660", "Joliet", "Rock Ridge" };
	vo_debug("%s: volume '%s', session %u of %u at block %u, %s names%s", source,
		 fs->img->volume_id, fs->img->session_index, fs->img->session_count,
		 fs->img->session_start, ns_names[fs->img->ns],
		 fs->img->has_eltorito ? ", El Torito boot record ignored" : "");
	*statep = fs;
	return VO_EXIT_OK;
}

static void iso_stop(void *statep)
{
	struct iso_fs *fs = statep;
	iso_image_close(fs->img);
	free(fs);
}

static const struct vo_daemon_ops ops = {
	.start = iso_start,
	.ll_ops = &iso_fuse_ops,
	.stop = iso_stop,
};

int main(int argc, char **argv)
{
	struct cfg cfg = {
		.sbsector = NO_SBSECTOR, .session = NO_SESSION,
		.uid = getuid(), .gid = getgid(),
		.mode = 0555, .dmode = 0555,
	};
	int status = vo_daemon_main(&info, &ops, &cfg, argc, argv);
	free(cfg.map);
	free(cfg.check);
	return status;
}
