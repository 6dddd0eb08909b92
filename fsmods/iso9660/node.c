/* What a node shows to stat(): defaults for trees without Rock Ridge, Rock Ridge attributes
 * where the image has them, and the struct stat itself. */
#include "isofs.h"
#include "ondisk.h"
#include "susp.h"
#include "zisofs.h"

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void iso_node_defaults(struct iso_image *img, struct iso_node *n, const struct iso_record *r,
		       bool is_dir)
{
	/* As Linux: r-x for everyone unless mode=/dmode= say otherwise (the disc may come from
	   a system where anything can be a program), and nlink 1 for directories, which tells
	   find(1) not to count subdirectories by the link count. */
	n->mode = is_dir ? S_IFDIR | (img->opt.dmode & 07777) : S_IFREG | (img->opt.fmode & 07777);
	n->nlink = 1;
	n->uid = img->opt.uid;
	n->gid = img->opt.gid;
	n->atime = n->mtime = n->ctime = r->date;
}

void iso_node_apply_rr(struct iso_image *img, struct iso_node *n, const struct rr_info *rr,
		       bool is_dir)
{
	if (rr->have & RR_PX) {
		uint32_t type = rr->mode & S_IFMT, perm = rr->mode & 07777;
		/* The record's directory flag decides what is a directory: a PX that disagrees
		   cannot turn a file into a directory (there would be no records to list) nor
		   the other way round. */
		if (is_dir)
			type = S_IFDIR;
		else if (type != S_IFREG && type != S_IFLNK && type != S_IFCHR && type != S_IFBLK &&
			 type != S_IFIFO && type != S_IFSOCK)
			type = S_IFREG;
		n->mode = type | perm;
		n->nlink = rr->nlink ? rr->nlink : 1;
		n->uid = rr->uid;
		n->gid = rr->gid;
	}
	if (rr->times & RR_TIME_MODIFY)
		n->mtime = rr->mtime;
	if (rr->times & RR_TIME_ACCESS)
		n->atime = rr->atime;
	if (rr->times & RR_TIME_CHANGE)
		n->ctime = rr->ctime;
	if (S_ISCHR(n->mode) || S_ISBLK(n->mode)) {
		n->rdev = rr->rdev;
		n->size = 0;
	} else if (S_ISFIFO(n->mode) || S_ISSOCK(n->mode)) {
		n->size = 0;
	} else if (S_ISLNK(n->mode)) {
		if (!(rr->have & RR_SL) || rr->link_len == 0) {
			n->error = EIO; /* a symlink must say where it points */
			return;
		}
		n->symlink = iso_arena_strndup(img, rr->link, rr->link_len);
		if (!n->symlink)
			n->error = ENOMEM;
		n->size = rr->link_len;
	} else if (S_ISREG(n->mode) && (rr->have & RR_ZF)) {
		iso_zisofs_attach(img, n, rr);
	}
}

void iso_stat(const struct iso_image *img, const struct iso_node *n, struct stat *st)
{
	(void)img;
	memset(st, 0, sizeof *st);
	st->st_ino = n->ino;
	st->st_mode = n->mode;
	st->st_nlink = n->nlink;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_rdev = n->rdev;
	st->st_size = (off_t)n->size;
	st->st_blksize = ISO_SECTOR;
	uint64_t stored = 0;
	if (S_ISREG(n->mode) || S_ISDIR(n->mode))
		for (uint32_t i = 0; i < n->nextents; i++)
			stored += n->extents[i].length;
	st->st_blocks = (blkcnt_t)((stored + 511) / 512);
	st->st_atim = n->atime;
	st->st_mtim = n->mtime;
	st->st_ctim = n->ctime;
}

void iso_warn(struct iso_image *img, const char *fmt, ...)
{
	unsigned n = atomic_fetch_add(&img->warnings, 1);
	if (n > ISO_MAX_WARNINGS)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n == ISO_MAX_WARNINGS)
		vo_warn("%s: more problems in this image; not reporting them",
			vo_block_name(img->dev));
	else
		vo_warn("%s: %s", vo_block_name(img->dev), msg);
}
