/* The rename journal: SOURCE/.-/.-/journal (docs/viewfs-layer-format.md, "Atomicity").
 *
 * A rename moves the data (SOURCE/DIR/NAME, or the original's entry in mincow) in one rename,
 * but the metadata of the two names lives elsewhere (SOURCE/.-/DIR/NAME + 0x7F, the children's
 * SOURCE/.-/DIR/NAME/, whiteouts): it can only follow in further steps. When the target is
 * an existing name, or the object is a directory, no order of those steps leaves a whole view
 * at every point (the target's record has to stay until its data is replaced; a directory's
 * children's metadata cannot move with it). So the metadata the names must end with is
 * written here first, the data moves, the metadata steps follow, and the journal goes. A
 * journal found at the next mount is finished when the data had moved (the source is gone from
 * where it was), or dropped when it had not: the view shows the state before or after the
 * rename, never one between.
 *
 * Only the daemon writes the journal and it holds the namespace write lock for the whole
 * rename, so there is never more than one. */
#include "fs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define JOURNAL_NAME "journal"

char *view_path(struct viewfs *fs, struct vnode *d, const char *name)
{
	size_t len = strlen(name) + 2;
	for (struct vnode *n = d; n && n != fs->root; n = n->parent)
		len += strlen(n->name) + 1;
	char *out = malloc(len);
	if (!out)
		return NULL;
	char *end = out + len - 1;
	*end = '\0';
	size_t l = strlen(name);
	end -= l;
	memcpy(end, name, l);
	*--end = '/';
	for (struct vnode *n = d; n && n != fs->root; n = n->parent) {
		l = strlen(n->name);
		end -= l;
		memcpy(end, n->name, l);
		*--end = '/';
	}
	return out; /* end == out: the lengths add up */
}

void journal_clear(struct journal *j)
{
	free(j->from);
	free(j->to);
	free(j->orig_from);
	free(j->record);
	memset(j, 0, sizeof *j);
}

static void add_line(char **buf, size_t *len, const char *key, const char *value)
{
	if (!*buf || !value)
		return;
	char *esc = vrecord_escape(value);
	char *line = NULL;
	int n = esc ? asprintf(&line, "%s=%s\n", key, esc) : -1;
	free(esc);
	char *b = n < 0 ? NULL : realloc(*buf, *len + (size_t)n + 1);
	if (!b) {
		free(*buf);
		*buf = NULL;
	} else {
		memcpy(b + *len, line, (size_t)n + 1);
		*buf = b;
		*len += (size_t)n;
	}
	free(line);
}

int journal_begin(struct viewfs *fs, const struct journal *j)
{
	if (fs->work_fd < 0)
		return -EROFS;
	size_t len = 0;
	char *buf = calloc(1, 1);
	add_line(&buf, &len, "rename", j->from);
	add_line(&buf, &len, "to", j->to);
	add_line(&buf, &len, "original", j->orig_from);
	add_line(&buf, &len, "record", j->record);
	if (j->whiteout)
		add_line(&buf, &len, "whiteout", "1");
	if (j->children)
		add_line(&buf, &len, "children", "1");
	int rc = buf ? meta_write_aside(fs, fs->work_fd, JOURNAL_NAME, buf, len) : -ENOMEM;
	free(buf);
	return rc;
}

void journal_end(struct viewfs *fs)
{
	if (unlinkat(fs->work_fd, JOURNAL_NAME, 0) < 0 && errno != ENOENT)
		vo_warn("cannot remove %s/%s/%s/%s: %s", fs->source, META_NAME, META_NAME,
			JOURNAL_NAME, strerror(errno));
}

/* ------------------------------------------------------------------ at mount */

static int parse(const char *buf, size_t len, struct journal *j)
{
	memset(j, 0, sizeof *j);
	for (size_t pos = 0; pos < len;) {
		const char *line = buf + pos, *nl = memchr(line, '\n', len - pos);
		if (!nl)
			return -1;
		size_t llen = (size_t)(nl - line);
		pos += llen + 1;
		const char *eq = memchr(line, '=', llen);
		if (!eq)
			return -1;
		size_t klen = (size_t)(eq - line), vlen = llen - klen - 1;
		const char *v = eq + 1;
		char **path = klen == 6 && !memcmp(line, "rename", 6) ? &j->from
			      : klen == 2 && !memcmp(line, "to", 2) ? &j->to
			      : klen == 8 && !memcmp(line, "original", 8) ? &j->orig_from : NULL;
		if (path) {
			free(*path);
			if (!(*path = vrecord_parse_path(v, vlen)))
				return -1;
		} else if (klen == 6 && !memcmp(line, "record", 6)) {
			free(j->record);
			if (!(j->record = vrecord_unescape(v, vlen)))
				return -1;
		} else if (klen == 8 && !memcmp(line, "whiteout", 8) && vlen == 1 && *v == '1') {
			j->whiteout = true;
		} else if (klen == 8 && !memcmp(line, "children", 8) && vlen == 1 && *v == '1') {
			j->children = true;
		} else {
			return -1;
		}
	}
	return j->from && j->to ? 0 : -1;
}

/* The directory of path (its parent, "." for a name at the root) beneath root, never through
 * a symlink or "..": the journal is in the user's directory and is trusted no further. With
 * make, missing directories are created (metadata directories of the target). */
static int open_parent(int root, const char *path, bool make)
{
	const char *slash = strrchr(path, '/');
	size_t plen = (size_t)(slash - path);
	char *rel = strndup(path + 1, plen ? plen - 1 : 0);
	if (!rel)
		return -1;
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, root, *rel ? rel : ".", &how, sizeof how);
	if (fd < 0 && errno == ENOENT && make) {
		/* one component after another */
		fd = fcntl(root, F_DUPFD_CLOEXEC, 0);
		for (char *c = rel, *save = NULL, *tok = strtok_r(c, "/", &save); fd >= 0 && tok;
		     tok = strtok_r(NULL, "/", &save)) {
			if (mkdirat(fd, tok, 0755) < 0 && errno != EEXIST) {
				close(fd);
				fd = -1;
				break;
			}
			int next = (int)syscall(SYS_openat2, fd, tok, &how, sizeof how);
			close(fd);
			fd = next;
		}
	}
	free(rel);
	return fd;
}

static const char *last_name(const char *path)
{
	return strrchr(path, '/') + 1;
}

/* Put the metadata where the finished rename has it. Every step can be done again. */
static void finish(struct viewfs *fs, int meta_root, const struct journal *j)
{
	int mf = open_parent(meta_root, j->from, false);
	int mt = open_parent(meta_root, j->to, true);
	const char *nf = last_name(j->from), *nt = last_name(j->to);
	struct stat st;
	if (mt < 0) {
		vo_warn("cannot finish the rename of %s to %s in %s: %s", j->from, j->to, fs->source,
			strerror(errno));
		if (mf >= 0)
			close(mf);
		return;
	}
	bool from_dir = mf >= 0 && fstatat(mf, nf, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			S_ISDIR(st.st_mode);
	/* the children's metadata of the source, when it has not moved yet, replaces the
	 * target's (or its whiteout); without any, the target ends with none */
	if (j->children && from_dir) {
		meta_remove_tree(mt, nt);
		if (renameat(mf, nf, mt, nt) < 0)
			vo_warn("cannot move the metadata of %s to %s: %s", j->from, j->to,
				strerror(errno));
	} else if (!j->children) {
		meta_remove_tree(mt, nt);
	}
	char file[NAME_MAX + 3];
	meta_record_file(nt, file);
	if (j->record && *j->record)
		meta_write_aside(fs, mt, file, j->record, strlen(j->record));
	else
		unlinkat(mt, file, 0);
	if (mf >= 0) {
		meta_record_file(nf, file);
		unlinkat(mf, file, 0);
	}
	if (j->whiteout) {
		if (mf < 0)
			mf = open_parent(meta_root, j->from, true);
		if (mf >= 0)
			meta_whiteout_at(fs, mf, nf);
	}
	if (mf >= 0)
		close(mf);
	close(mt);
}

/* Did the data move? The source is no longer where it was. */
static bool data_moved(struct viewfs *fs, const struct journal *j)
{
	const char *path = j->orig_from ? j->orig_from : j->from;
	int dir = open_parent(j->orig_from ? fs->lower_root : fs->upper_root, path, false);
	if (dir < 0)
		return true;
	struct stat st;
	bool moved = fstatat(dir, last_name(path), &st, AT_SYMLINK_NOFOLLOW) < 0 &&
		     errno == ENOENT;
	close(dir);
	return moved;
}

int journal_replay(struct viewfs *fs, int meta_root)
{
	int wfd = openat(meta_root, META_NAME, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	/* Only a regular file can be a journal viewfs wrote (it renames one into place). What
	 * else the user may have put at its name -- a FIFO, whose open would wait for a writer
	 * and so hang the mount; a device; a symlink, leading anywhere; a directory -- holds no
	 * rename under way: it is ignored with a warning, and removed like a corrupt journal
	 * (a directory stays: the warning of journal_end names it). Failing the mount would
	 * gain nothing: there is no half-done rename to protect. */
	int fd = wfd < 0 ? -1 : layer_open_regular(wfd, JOURNAL_NAME, O_RDONLY);
	int err = errno;
	if (wfd >= 0)
		close(wfd);
	if (fd < 0 && err == EINVAL) {
		vo_warn("rename journal %s/%s/%s/%s is not a regular file: ignored", fs->source,
			META_NAME, META_NAME, JOURNAL_NAME);
		if (fs->work_fd >= 0)
			journal_end(fs);
		return 0;
	}
	if (fd < 0) {
		/* there may be a rename under way that cannot be finished: no mount (the caller
		 * names the layer's metadata and the reason) */
		return wfd >= 0 && err != ENOENT ? -err : 0;
	}
	char *buf = malloc(VREC_MAX_SIZE + 1);
	ssize_t len = 0, r = 0;
	while (buf && len <= VREC_MAX_SIZE &&
	       (r = read(fd, buf + len, (size_t)(VREC_MAX_SIZE + 1 - len))) > 0)
		len += r;
	if (!buf || r < 0)
		len = -1;
	close(fd);
	struct journal j = { 0 };
	if (len < 0 || len > VREC_MAX_SIZE || parse(buf, (size_t)len, &j) < 0) {
		vo_error("corrupt rename journal %s/%s/%s/%s: ignored", fs->source, META_NAME,
			 META_NAME, JOURNAL_NAME);
		journal_clear(&j); /* what parse() had taken before it failed */
	} else if (fs->work_fd < 0) {
		vo_warn("%s has an unfinished rename of %s (a crash): mount it writable once to "
			"finish it", fs->source, j.from);
	} else if (data_moved(fs, &j)) {
		finish(fs, meta_root, &j);
	}
	free(buf);
	journal_clear(&j);
	if (fs->work_fd >= 0)
		journal_end(fs);
	return 0;
}
