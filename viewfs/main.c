/* viewfs: View-OS's file-system patchworking as a FUSE daemon.
 *
 *   viewfs [-o move|merge|cow|mincow,except=/P,vstat,wok] SOURCE MOUNTPOINT
 *
 * The view of MOUNTPOINT becomes SOURCE patched over MOUNTPOINT's original content: SOURCE
 * replaces it (move), is merged read-only over it (merge), or receives every change made in the
 * view (cow) or only the changes the user may not make for real (mincow). MOUNTPOINT's original
 * tree is opened before the mount, so the view keeps showing what it covers. Deletions of
 * original entries are whiteouts, and what a copy in SOURCE cannot carry (setuid bits, virtual
 * owners and device nodes with vstat, the origin's inode number) goes into records, all under
 * SOURCE/.- in the format of VUOS's vufs (docs/viewfs-layer-format.md), so a layer mounts again
 * with all its changes. except= paths stay the original in every mode.
 *
 * What it leaves out, and why:
 *   - POSIX and flock locks are the kernel's own (FUSE keeps them for the processes of the
 *     view); they do not reach processes that use the original directly, which a private view
 *     does not need and which a multi-threaded daemon could only fake with one lock owner.
 *   - The daemon acts with its own credentials for every caller, as View-OS did inside
 *     umview (no per-request credential switching). Run by root with allow_other it therefore
 *     mounts with default_permissions, so the kernel checks each caller against the view's
 *     owners and modes.
 *   - The layer must not be changed behind the daemon's back while mounted (as with overlayfs):
 *     its metadata is cached. The original may change; the view sees it after the cache
 *     timeout (-o timeout, default 1 s).
 *   - Hard links between original files stay one file after one name is copied up, also
 *     after a remount (the layer's index, as overlayfs's); their link count in the view is
 *     kept in the shared record, and a crash between a name's change and its update leaves
 *     it one off.
 *
 * MOUNTPOINT `/`, or `-- COMMAND`, makes it a view for a command (launcher.c: namespaces,
 * virtual root); `--enter PID` joins such a view (enter.c). */
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "view.h"
#include "viewfs.h"

#include <malloc.h>
#include <string.h>

#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct viewfs_config cfg;
	struct vo_cmdline cl;
	/* Each serving thread would get a malloc arena of its own, and a node freed at a FORGET
	 * stays in the arena of the thread that made it: after a million lookups and forgets the
	 * RSS grew in 6 MiB steps from 9 to 47 MiB (tests/reliability/test_resources_viewfs.py;
	 * with two arenas: to 17 MiB). One arena keeps it flat at 9 MiB; a request makes few
	 * allocations, so the threads hardly contend for it. */
	mallopt(M_ARENA_MAX, 1);
	vo_log_init("viewfs");
	if (argc > 1 && strcmp(argv[1], "--enter") == 0)
		return view_enter(argc - 2, argv + 2);
	viewfs_config_init(&cfg);
	int r = vo_cmdline_parse(&viewfs_info, &cfg, argc, argv, &cl);
	if (r != 0 || viewfs_config_check(&cfg) < 0) {
		vo_cmdline_free(&cl);
		viewfs_config_free(&cfg);
		return r > 0 ? VO_EXIT_OK : VO_EXIT_USAGE;
	}
	vo_log_set_debug(cl.debug);
	const char *source = cl.positional[0], *mountpoint = cl.positional[1];
	if (view_requested(&cl)) {
		int st = view_main(&cfg, &cl);
		vo_cmdline_free(&cl);
		viewfs_config_free(&cfg);
		return st;
	}

	/* Both directories are opened now, before anything is mounted on MOUNTPOINT. */
	int layer_fd, lower_fd;
	int status = viewfs_open_dirs(&cfg, source, mountpoint, &layer_fd, &lower_fd);
	if (status == VO_EXIT_OK) {
		vo_detach_begin(&cl);
		struct viewfs *fs = viewfs_new(&cfg, lower_fd, layer_fd, cl.readonly, source,
						mountpoint, &status);
		if (fs) {
			status = viewfs_run(fs, &cl, source, mountpoint);
			viewfs_free(fs);
		} else {
			close(layer_fd);
			close(lower_fd);
		}
	}
	vo_cmdline_free(&cl);
	viewfs_config_free(&cfg);
	return status;
}
