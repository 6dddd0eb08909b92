/* umfuse-fat: FAT12, FAT16 and FAT32 with VFAT long names, read-write, as a FUSE daemon.
 *
 * `umfuse-fat [-o OPTS] SOURCE MOUNTPOINT` mounts the FAT file system found on SOURCE (an image
 * file, a device or umdev device file, mem:SIZE, or an NBD URI: common/block.h) at MOUNTPOINT,
 * as View-OS's umfusefat did, but read-write by default and with the behaviour of the Linux
 * vfat driver: case-preserving, case-insensitive names up to 255 UTF-16 characters, short names
 * with ~N tails in an OEM code page, the kernel's uid=, gid=, umask=, dmask=, fmask=,
 * shortname=, codepage= options; files unlinked while open stay readable until closed; the
 * volume's dirty flag set while mounted and cleared on a clean unmount, after which
 * `fsck.fat -n` finds nothing to fix.
 *
 * The FAT code is the project's own (fat_bpb, fat_table, fat_dir, fat_names, fat_time,
 * fat_volume, fat_namespace, fat_file): Debian packages no FAT library — the kernel driver is
 * kernel code, dosfstools and mtools are programs, FatFs is not packaged and is built around a
 * single global work area that fits neither threads nor several volumes — and the format is
 * small enough to implement, layer by layer, with unit tests for each.
 *
 * What it leaves out, and why:
 *   - symbolic links, hard links, devices, FIFOs, owners and set-id bits: FAT has nowhere to
 *     keep them (EPERM, as Linux vfat);
 *   - case-only renames (`mv foo FOO`): the kernel sees one file under both names and never
 *     asks (Linux vfat behaves the same);
 *   - exFAT (a different format) and double-byte OEM code pages (932, 936, 949, 950);
 *   - access times on read (FAT keeps only their date; as with -o noatime);
 *   - discard, and a directory shrinking after its entries are deleted (as Linux and Windows).
 * The hidden, system and archive attributes are the extended attribute user.fat.attributes
 * (docs/fat.md). */
#define _GNU_SOURCE
#include "block.h"
#include "daemon.h"
#include "fat_fuse.h"
#include "fat_volume.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNSET UINT_MAX

struct cfg {
	unsigned uid, gid, umask, dmask, fmask, codepage, commit;
	char *shortname, *iocharset, *tz;
	int utf8, showexec, rodir, noxattr;
};

static const struct vo_opt options[] = {
	{ "uid", VO_OPT_UINT, offsetof(struct cfg, uid), 0, 0, NULL, "N",
	  "owner of every file (default: the user who mounts)" },
	{ "gid", VO_OPT_UINT, offsetof(struct cfg, gid), 0, 0, NULL, "N",
	  "group of every file (default: the user's group)" },
	{ "umask", VO_OPT_OCTAL, offsetof(struct cfg, umask), 0, 0, NULL, "OCTAL",
	  "permission bits to take away (default: the umask of the mounting process)" },
	{ "dmask", VO_OPT_OCTAL, offsetof(struct cfg, dmask), 0, 0, NULL, "OCTAL",
	  "as umask, for directories only" },
	{ "fmask", VO_OPT_OCTAL, offsetof(struct cfg, fmask), 0, 0, NULL, "OCTAL",
	  "as umask, for files only" },
	{ "codepage", VO_OPT_UINT, offsetof(struct cfg, codepage), 0, 0, NULL, "N",
	  "OEM code page of short names (default 437)" },
	{ "shortname", VO_OPT_STRING, offsetof(struct cfg, shortname), 0, 0, NULL, "MODE",
	  "lower, win95, winnt or mixed (default), as Linux vfat" },
	{ "iocharset", VO_OPT_STRING, offsetof(struct cfg, iocharset), 0, 0, NULL, "utf8",
	  "names are always UTF-8 (accepted for fstab compatibility)" },
	{ "utf8", VO_OPT_BOOL, offsetof(struct cfg, utf8), 0, 0, NULL, NULL,
	  "names are UTF-8 (always; accepted for compatibility)" },
	{ "tz", VO_OPT_STRING, offsetof(struct cfg, tz), 0, 0, NULL, "UTC",
	  "timestamps are UTC instead of local time" },
	{ "showexec", VO_OPT_FLAG, offsetof(struct cfg, showexec), 1, 0, NULL, NULL,
	  "execute bits only on .EXE, .COM and .BAT files" },
	{ "commit", VO_OPT_UINT, offsetof(struct cfg, commit), 0, 0, NULL, "SECONDS",
	  "write metadata back at least this often (default 1; 0: at fsync and unmount)" },
	{ "noxattr", VO_OPT_FLAG, offsetof(struct cfg, noxattr), 1, 0, NULL, NULL,
	  "no user.fat.attributes: saves the kernel a question before every write" },
	{ "rodir", VO_OPT_FLAG, offsetof(struct cfg, rodir), 1, 0, NULL, NULL,
	  "the read-only attribute also applies to directories" },
	/* View-OS command lines: fusefat wanted rw+ (or rw,force) for read-write */
	{ "rw+", VO_OPT_ALIAS, 0, 0, 0, "rw", NULL, NULL },
	{ "force", VO_OPT_ALIAS, 0, 0, 0, "rw", NULL, NULL },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	.name = "umfuse-fat",
	.args_usage = "SOURCE MOUNTPOINT",
	.summary = "Mounts a FAT12/16/32 file system (VFAT long names) read-write.",
	.options = options,
	.min_positional = 2,
	.max_positional = 2,
};

static int bad_option(const char *name, const char *value, const char *why)
{
	vo_error("invalid value '%s' for option '%s' (%s)", value, name, why);
	return VO_EXIT_USAGE;
}

/* Turn the command line into mount options; VO_EXIT_OK or an exit code after an error. */
static int mount_options(const struct cfg *cfg, const struct vo_cmdline *cl,
			 struct fat_mount_options *o)
{
	memset(o, 0, sizeof *o);
	mode_t um = umask(0);
	umask(um);
	o->uid = cfg->uid != UNSET ? cfg->uid : getuid();
	o->gid = cfg->gid != UNSET ? cfg->gid : getgid();
	unsigned base = cfg->umask != UNSET ? cfg->umask : um;
	if (base > 0777 || (cfg->dmask != UNSET && cfg->dmask > 0777) ||
	    (cfg->fmask != UNSET && cfg->fmask > 0777)) {
		vo_error("invalid value for a mask option (expected an octal number up to 777)");
		return VO_EXIT_USAGE;
	}
	o->dmask = cfg->dmask != UNSET ? cfg->dmask : base;
	o->fmask = cfg->fmask != UNSET ? cfg->fmask : base;
	o->codepage = cfg->codepage != UNSET ? cfg->codepage : 437;
	o->shortname = FAT_SN_MIXED;
	if (cfg->shortname && fat_shortname_mode_parse(cfg->shortname, &o->shortname) < 0)
		return bad_option("shortname", cfg->shortname, "expected lower, win95, winnt or mixed");
	if (cfg->iocharset && strcasecmp(cfg->iocharset, "utf8") != 0 &&
	    strcasecmp(cfg->iocharset, "utf-8") != 0)
		return bad_option("iocharset", cfg->iocharset, "names are always UTF-8");
	if (cfg->utf8 == 0)
		return bad_option("utf8", "0", "names are always UTF-8");
	if (cfg->tz && strcmp(cfg->tz, "UTC") != 0)
		return bad_option("tz", cfg->tz, "only UTC is known; local time is the default");
	o->utc = cfg->tz != NULL;
	o->showexec = cfg->showexec;
	o->rodir = cfg->rodir;
	o->noxattr = cfg->noxattr;
	o->readonly = cl->readonly;
	o->commit = cfg->commit != UNSET ? cfg->commit : 1;
	char num[16];
	snprintf(num, sizeof num, "%u", o->commit);
	if (o->commit > 3600)
		return bad_option("commit", num, "at most 3600 seconds");
	struct fat_codepage cp;
	char why[128];
	snprintf(num, sizeof num, "%u", o->codepage);
	if (fat_codepage_load(&cp, o->codepage, why, sizeof why) < 0)
		return bad_option("codepage", num, why);
	return VO_EXIT_OK;
}

static int fat_start(void *cfgp, struct vo_cmdline *cl, void **statep)
{
	struct fat_mount_options o;
	int status = mount_options(cfgp, cl, &o);
	if (status != VO_EXIT_OK)
		return status;
	const char *source = cl->positional[0];
	char err[512];
	unsigned flags = VO_BLOCK_LOCK | (o.readonly ? VO_BLOCK_RDONLY : 0);
	struct vo_block *dev = vo_block_open(source, flags, err, sizeof err);
	if (!dev) {
		vo_error("%s", err);
		return VO_EXIT_SOURCE;
	}
	struct fat_volume *vol = fat_volume_open(dev, &o, err, sizeof err);
	if (!vol) {
		vo_error("cannot mount %s: %s", source, err);
		return VO_EXIT_SOURCE;
	}
	/* permissions are the modes we show, checked by the kernel as for Linux vfat */
	fuse_opt_add_arg(&cl->fuse_args, "-odefault_permissions");
	*statep = vol;
	return VO_EXIT_OK;
}

static void fat_stop(void *state)
{
	struct fat_volume *vol = state;
	char name[PATH_MAX];
	snprintf(name, sizeof name, "%s", vo_block_name(vol->dev));
	int r = fat_volume_close(vol);
	if (r < 0)
		vo_error("cannot write %s back: %s", name, strerror(-r));
}

/* The life cycle of common/daemon.h, written out with its pieces (as vo_daemon_main does)
 * because the FUSE glue needs the session once it is mounted (fat_fuse_attach). */
int main(int argc, char **argv)
{
	struct cfg cfg = {
		.uid = UNSET, .gid = UNSET, .umask = UNSET, .dmask = UNSET, .fmask = UNSET,
		.codepage = UNSET, .commit = UNSET, .utf8 = 1,
	};
	struct vo_cmdline cl;
	vo_log_init(info.name);
	int status = vo_cmdline_parse(&info, &cfg, argc, argv, &cl);
	if (status != 0) {
		status = status > 0 ? VO_EXIT_OK : VO_EXIT_USAGE;
		goto out;
	}
	vo_log_set_debug(cl.debug);
	const char *source = cl.positional[0], *mountpoint = cl.positional[1];
	struct stat st;
	if (stat(mountpoint, &st) < 0) { /* before the source costs anything */
		vo_error("cannot mount on %s: %s", mountpoint, strerror(errno));
		status = VO_EXIT_MOUNT;
		goto out;
	}
	vo_detach_begin(&cl);
	void *vol = NULL;
	status = fat_start(&cfg, &cl, &vol);
	if (status != VO_EXIT_OK)
		goto out;
	struct fuse_session *se = vo_mount(&cl, source, mountpoint, &fat_ll_ops, vol, NULL);
	if (!se) {
		fat_stop(vol);
		status = VO_EXIT_MOUNT;
		goto out;
	}
	if (fat_fuse_attach(vol, se) < 0)
		vo_warn("cannot start the notification thread: renames through another case of a "
			"name may show stale names for a minute");
	vo_detach_ready();
	/* One thread serves unless -o max_threads=N (N >= 2) asks for more: every metadata
	 * operation takes the one volume lock anyway, and with several idle threads the kernel
	 * hands each request to a different, cold one. Measured on 2 cores (docs/benchmarks.md):
	 * one thread was 1.4 to 4 times faster on untar and 2 times on reading the tree back,
	 * and no slower elsewhere. File data still moves outside the lock for the threaded mode. */
	if (cl.max_threads < 2)
		cl.single_thread = true;
	int r = vo_serve(se, &cl);
	fat_fuse_detach(vol);
	vo_unmount(se);
	fat_stop(vol);
	if (r < 0) {
		vo_error("serving %s failed: %s", mountpoint, strerror(-r));
		status = VO_EXIT_MOUNT;
	}
out:
	vo_cmdline_free(&cl);
	free(cfg.shortname);
	free(cfg.iocharset);
	free(cfg.tz);
	fat_names_fini();
	return status;
}
