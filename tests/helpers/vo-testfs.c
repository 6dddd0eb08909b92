/* vo-testfs: the smallest daemon on the common skeleton, for the foundation's own tests.
 *
 * It shows a block source (image, mem:SIZE, NBD URI) as one regular file, MOUNTPOINT/data,
 * readable and writable, so the tests can check the daemon life cycle (detach, ready, errors,
 * signals, unmount) and each block backend through a real FUSE mount, before any real driver
 * exists. Not installed. It leaves out everything a real file system needs (no create, no
 * rename, no attributes to change) because the tests need none of it. */
#include "block.h"
#include "daemon.h"
#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct cfg {
	int sleep_start; /* -o sleep_start=N: pretend the source takes N seconds to open */
};

struct state {
	struct vo_block *dev;
	bool served; /* the kernel said hello (init): only then report the final flush */
};

static const fuse_ino_t DATA_INO = 2;

static void fill_attr(struct state *s, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | (vo_block_readonly(s->dev) ? 0444 : 0644);
		st->st_nlink = 1;
		st->st_size = (off_t)vo_block_size(s->dev);
	}
}

static void t_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct state *s = fuse_req_userdata(req);
	if (parent != FUSE_ROOT_ID || strcmp(name, "data") != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct fuse_entry_param e = { .ino = DATA_INO, .attr_timeout = 1, .entry_timeout = 1 };
	fill_attr(s, DATA_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void t_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct stat st;
	fill_attr(fuse_req_userdata(req), ino, &st);
	fuse_reply_attr(req, &st, 1);
}

static void t_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	(void)fi;
	char buf[512];
	size_t n = 0;
	struct stat st = { .st_ino = ino, .st_mode = S_IFDIR };
	if (off < 1)
		n += fuse_add_direntry(req, buf + n, sizeof buf - n, ".", &st, 1);
	if (off < 2)
		n += fuse_add_direntry(req, buf + n, sizeof buf - n, "..", &st, 2);
	st.st_ino = DATA_INO;
	st.st_mode = S_IFREG;
	if (off < 3)
		n += fuse_add_direntry(req, buf + n, sizeof buf - n, "data", &st, 3);
	fuse_reply_buf(req, buf, n < size ? n : size);
}

static void t_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fi->direct_io = 1; /* every read reaches the block layer */
	fuse_reply_open(req, fi);
}

static void t_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	struct state *s = fuse_req_userdata(req);
	char *buf = malloc(size ? size : 1);
	ssize_t r = buf ? vo_block_pread(s->dev, buf, size, (uint64_t)off) : -ENOMEM;
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void t_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	struct state *s = fuse_req_userdata(req);
	ssize_t r = vo_block_pwrite(s->dev, buf, size, (uint64_t)off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void t_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	struct state *s = fuse_req_userdata(req);
	fuse_reply_err(req, -vo_block_flush(s->dev));
}

static void t_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)conn;
	((struct state *)userdata)->served = true;
}

static const struct fuse_lowlevel_ops ll_ops = {
	.init = t_init,
	.lookup = t_lookup,
	.getattr = t_getattr,
	.readdir = t_readdir,
	.open = t_open,
	.read = t_read,
	.write = t_write,
	.fsync = t_fsync,
};

static int t_start(void *cfgp, struct vo_cmdline *cl, void **statep)
{
	struct cfg *cfg = cfgp;
	if (cfg->sleep_start)
		sleep((unsigned)cfg->sleep_start);
	char err[512];
	struct state *s = calloc(1, sizeof *s);
	s->dev = vo_block_open(cl->positional[0], cl->readonly ? VO_BLOCK_RDONLY : 0, err,
			       sizeof err);
	if (!s->dev) {
		vo_error("%s", err);
		free(s);
		return VO_EXIT_SOURCE;
	}
	*statep = s;
	return VO_EXIT_OK;
}

static void t_stop(void *statep)
{
	struct state *s = statep;
	/* the "flushed on exit" contract: the tests check that this line appears */
	int r = vo_block_flush(s->dev);
	if (s->served)
		vo_info("flushed %s: %s", vo_block_name(s->dev), r ? strerror(-r) : "ok");
	vo_block_close(s->dev);
	free(s);
}

static const struct vo_opt options[] = {
	{ "sleep_start", VO_OPT_UINT, offsetof(struct cfg, sleep_start), 0, 0, NULL, "SECONDS",
	  "wait this long before opening the source (tests the wait for readiness)" },
	VO_OPT_TABLE_END,
};

static const struct vo_daemon_info info = {
	.name = "vo-testfs",
	.args_usage = "SOURCE MOUNTPOINT",
	.summary = "Shows a block source as MOUNTPOINT/data (a test daemon of viewos).",
	.options = options,
	.min_positional = 2,
	.max_positional = 2,
};

static const struct vo_daemon_ops ops = { .start = t_start, .ll_ops = &ll_ops, .stop = t_stop };

int main(int argc, char **argv)
{
	struct cfg cfg = { 0 };
	return vo_daemon_main(&info, &ops, &cfg, argc, argv);
}
