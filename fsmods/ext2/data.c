/* File data: mapping logical blocks to the device, reading, writing, truncating, fallocate
 * and SEEK_DATA/SEEK_HOLE.
 *
 * libext2fs' file API (ext2fs_file_*) moves data one block at a time through a one-block
 * buffer. Here a request (up to 1 MiB) is mapped to runs of contiguous blocks and each run is
 * one read or write on the device; new blocks are allocated as runs (ext2fs_new_range) and
 * appended to the extent they continue, so a sequential write makes a few long extents.
 * Partial blocks at the edges of a write are merged with what the block held (zeros for holes
 * and unwritten extents), so every block written is written whole and a block never exposes
 * what a previous file left in it. */
#define _GNU_SOURCE
#include "e2fuse.h"

#include <errno.h>
#include <ext2fs/ext3_extents.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>

enum { INIT_MAX_LEN = 32768, UNINIT_MAX_LEN = 32767 };

void data_map_invalidate(struct node *n)
{
	if (n)
		n->map_valid = false;
}

static bool has_extents(const struct ext2_inode_large *in)
{
	return (in->i_flags & EXT4_EXTENTS_FL) != 0;
}

static int map_extent(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t lblk,
		      uint64_t *start, uint64_t *len, uint64_t *pblk, bool *uninit)
{
	ext2_extent_handle_t h;
	errcode_t err = ext2fs_extent_open2(e->fs, n->ino, (struct ext2_inode *)in, &h);
	if (err)
		return -e2_errno(e, err, "opening the extent tree", n->ino);
	struct ext2fs_extent ex;
	err = ext2fs_extent_goto2(h, 0, lblk);
	if (err == 0) {
		err = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
		if (err == 0) {
			*start = ex.e_lblk;
			*len = ex.e_len;
			*pblk = ex.e_pblk;
			*uninit = (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0;
		}
	} else if (err == EXT2_ET_EXTENT_NOT_FOUND) {
		/* a hole: it ends where the next extent starts */
		uint64_t next = UINT64_MAX;
		err = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
		if (err == 0 && ex.e_lblk > lblk) {
			next = ex.e_lblk;
		} else if (err == 0 || err == EXT2_ET_NO_CURRENT_NODE) {
			err = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &ex);
			if (err == 0 && ex.e_lblk > lblk)
				next = ex.e_lblk;
			else if (err == 0 || err == EXT2_ET_EXTENT_NO_NEXT ||
				 err == EXT2_ET_NO_CURRENT_NODE)
				err = 0;
		}
		*start = lblk;
		*len = next - lblk;
		*pblk = 0;
		*uninit = false;
	}
	ext2fs_extent_free(h);
	return err ? -e2_errno(e, err, "reading the extent tree", n->ino) : 0;
}

static int map_indirect(struct e2 *e, struct node *n, struct ext2_inode_large *in,
			uint64_t lblk, uint64_t max, uint64_t *len, uint64_t *pblk)
{
	if (max > 1024)
		max = 1024;
	uint64_t i;
	for (i = 0; i < max; i++) {
		blk64_t p = 0;
		if (lblk + i > UINT32_MAX)
			break;
		errcode_t err = ext2fs_bmap2(e->fs, n->ino, (struct ext2_inode *)in, NULL, 0,
					     lblk + i, NULL, &p);
		if (err) {
			if (i)
				break;
			return -e2_errno(e, err, "reading the block map", n->ino);
		}
		if (i == 0)
			*pblk = p;
		else if (*pblk == 0 ? p != 0 : p != *pblk + i)
			break;
	}
	*len = i ? i : 1;
	return 0;
}

int data_map(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t lblk,
	     uint64_t max, uint64_t *pblk, uint64_t *len, bool *uninit)
{
	uint64_t start = lblk, run = 1, p = 0;
	bool un = false;
	if (n->map_valid && lblk >= n->map_lblk && lblk - n->map_lblk < n->map_len) {
		start = n->map_lblk, run = n->map_len, p = n->map_pblk, un = n->map_uninit;
	} else if (has_extents(in)) {
		int r = map_extent(e, n, in, lblk, &start, &run, &p, &un);
		if (r < 0)
			return r;
		n->map_valid = true;
		n->map_lblk = start, n->map_len = run, n->map_pblk = p, n->map_uninit = un;
	} else {
		int r = map_indirect(e, n, in, lblk, max, &run, &p);
		if (r < 0)
			return r;
		start = lblk;
	}
	uint64_t off = lblk - start;
	*len = run - off < max ? run - off : max;
	*pblk = p ? p + off : 0;
	*uninit = un;
	if (*pblk && e2_bad_blocks(e, *pblk, *len)) {
		n->map_valid = false;
		e2_errno(e, EXT2_ET_BAD_BLOCK_NUM, "a block of the file lies outside the file "
			 "system or on its metadata", n->ino);
		return -EIO;
	}
	return 0;
}

/* ---- checking a whole block map ---- */

enum { MAX_MAP_STEPS = 1 << 26 }; /* extents visited: far beyond any real file */

struct ind_check {
	struct e2 *e;
	uint64_t from;
	bool bad;
};

static int check_ind_block(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt,
			   blk64_t ref_blk, int ref_offset, void *priv)
{
	(void)fs, (void)ref_blk, (void)ref_offset;
	struct ind_check *c = priv;
	/* negative counts are the indirect blocks themselves */
	if ((blockcnt < 0 || (uint64_t)blockcnt >= c->from) && e2_bad_blocks(c->e, *blocknr, 1)) {
		c->bad = true;
		return BLOCK_ABORT;
	}
	return 0;
}

int data_check_map(struct e2 *e, ext2_ino_t ino, struct ext2_inode_large *in, uint64_t from)
{
	if ((in->i_flags & EXT4_INLINE_DATA_FL) ||
	    !ext2fs_inode_has_valid_blocks2(e->fs, (struct ext2_inode *)in))
		return 0;
	errcode_t err = 0;
	bool bad = false;
	if (has_extents(in)) {
		ext2_extent_handle_t h = NULL;
		err = ext2fs_extent_open2(e->fs, ino, (struct ext2_inode *)in, &h);
		struct ext2fs_extent ex;
		for (int op = EXT2_EXTENT_ROOT, steps = 0; !err && !bad;
		     op = EXT2_EXTENT_NEXT, steps++) {
			err = ext2fs_extent_get(h, op, &ex);
			if (err == EXT2_ET_EXTENT_NO_NEXT || err == EXT2_ET_EXTENT_NO_DOWN) {
				err = 0;
				break;
			}
			if (err)
				break;
			if (!(ex.e_flags & EXT2_EXTENT_FLAGS_LEAF))
				bad = e2_bad_blocks(e, ex.e_pblk, 1); /* a tree block */
			else if (ex.e_lblk + (uint64_t)ex.e_len > from)
				bad = e2_bad_blocks(e, ex.e_pblk, ex.e_len);
			bad |= steps >= MAX_MAP_STEPS;
		}
		if (h)
			ext2fs_extent_free(h);
	} else {
		struct ind_check c = { .e = e, .from = from };
		err = ext2fs_block_iterate3(e->fs, ino, BLOCK_FLAG_READ_ONLY, NULL, check_ind_block,
					    &c);
		bad = c.bad;
	}
	if (err || bad) {
		e2_errno(e, err ? err : EXT2_ET_BAD_BLOCK_NUM, "the block map is damaged (blocks "
			 "outside the file system or on its metadata): not changing it", ino);
		return -EIO;
	}
	return 0;
}

int data_check_tree(struct e2 *e, struct node *n, struct ext2_inode_large *in)
{
	if (n->map_checked)
		return 0;
	int r = data_check_map(e, n->ino, in, 0);
	n->map_checked = r == 0;
	return r;
}

/* Read nbytes starting skip bytes into block pblk. Whole blocks go straight into dst. */
static int read_span(struct e2 *e, uint64_t pblk, unsigned skip, size_t nbytes, char *dst,
		     char *tmp)
{
	unsigned bs = e->fs->blocksize;
	int r;
	if (skip || nbytes < bs) {
		if ((r = bcache_read_direct(e->cache, pblk, 1, tmp)) < 0)
			return r;
		size_t c = bs - skip < nbytes ? bs - skip : nbytes;
		memcpy(dst, tmp + skip, c);
		dst += c, nbytes -= c, pblk++;
	}
	size_t full = nbytes / bs;
	if (full) {
		if ((r = bcache_read_direct(e->cache, pblk, full, dst)) < 0)
			return r;
		dst += full * bs, nbytes -= full * bs, pblk += full;
	}
	if (nbytes) {
		if ((r = bcache_read_direct(e->cache, pblk, 1, tmp)) < 0)
			return r;
		memcpy(dst, tmp, nbytes);
	}
	return 0;
}

static ssize_t read_inline(struct e2 *e, ext2_ino_t ino, char *buf, size_t size, uint64_t off)
{
	size_t total = 0;
	errcode_t err = ext2fs_inline_data_size(e->fs, ino, &total);
	if (err)
		return -e2_errno(e, err, "reading inline data", ino);
	char *tmp = malloc(total ? total : 1);
	if (!tmp)
		return -ENOMEM;
	err = ext2fs_inline_data_get(e->fs, ino, NULL, tmp, &total);
	if (err) {
		free(tmp);
		return -e2_errno(e, err, "reading inline data", ino);
	}
	size_t n = off < total ? (total - off < size ? total - off : size) : 0;
	memcpy(buf, tmp + off, n);
	free(tmp);
	return (ssize_t)n;
}

ssize_t data_read(struct e2 *e, struct node *n, struct ext2_inode_large *in, char *buf,
		  size_t size, uint64_t off)
{
	uint64_t isize = EXT2_I_SIZE(in);
	if (off >= isize || size == 0)
		return 0;
	if (size > isize - off)
		size = (size_t)(isize - off);
	if (in->i_flags & EXT4_INLINE_DATA_FL)
		return read_inline(e, n->ino, buf, size, off);
	unsigned bs = e->fs->blocksize;
	char *tmp = malloc(bs);
	if (!tmp)
		return -ENOMEM;
	uint64_t pos = off, end = off + size;
	int r = 0;
	while (pos < end) {
		uint64_t lblk = pos / bs, pblk, len;
		bool uninit;
		r = data_map(e, n, in, lblk, (end - 1) / bs - lblk + 1, &pblk, &len, &uninit);
		if (r < 0)
			break;
		uint64_t run_end = (lblk + len) * bs < end ? (lblk + len) * bs : end;
		size_t chunk = (size_t)(run_end - pos);
		if (pblk == 0 || uninit)
			memset(buf + (pos - off), 0, chunk);
		else if ((r = read_span(e, pblk, (unsigned)(pos % bs), chunk, buf + (pos - off),
					tmp)) < 0)
			break;
		pos = run_end;
	}
	free(tmp);
	return r < 0 ? r : (ssize_t)size;
}

/* ---- allocation ---- */

/* Extend the extent the handle is on (which must end right before lblk, at pblk) by up to
 * count blocks. Returns how many it took. */
static uint64_t extend_current(ext2_extent_handle_t h, uint64_t lblk, uint64_t pblk,
			       uint64_t count, bool uninit)
{
	struct ext2fs_extent ex;
	if (ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex))
		return 0;
	bool ex_uninit = (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0;
	uint64_t max = uninit ? UNINIT_MAX_LEN : INIT_MAX_LEN;
	if (ex_uninit != uninit || ex.e_lblk + ex.e_len != lblk || ex.e_pblk + ex.e_len != pblk ||
	    ex.e_len >= max)
		return 0;
	uint64_t take = max - ex.e_len < count ? max - ex.e_len : count;
	ex.e_len += (uint32_t)take;
	if (ext2fs_extent_replace(h, 0, &ex) || ext2fs_extent_fix_parents(h))
		return 0;
	return take;
}

/* Map [lblk, lblk+count) (holes) to the physical run starting at pblk. Returns the number of
 * blocks mapped (the rest is for the caller to give back) or -errno when none. */
static int64_t map_run(struct e2 *e, struct node *n, struct ext2_inode_large *in,
		       uint64_t lblk, uint64_t pblk, uint64_t count, bool uninit)
{
	ext2_extent_handle_t h;
	errcode_t err = ext2fs_extent_open2(e->fs, n->ino, (struct ext2_inode *)in, &h);
	if (err)
		return -e2_errno(e, err, "opening the extent tree", n->ino);
	uint64_t done = 0;
	while (done < count) {
		/* most often the run continues the extent before it: lengthen that one */
		uint64_t l = lblk + done;
		uint64_t took = 0;
		if (l > 0 && ext2fs_extent_goto(h, l - 1) == 0)
			took = extend_current(h, l, pblk + done, count - done, uninit);
		if (took) {
			done += took;
			continue;
		}
		/* else one block through libext2fs, which handles every shape of the tree (and
		 * leaves its handle where it started: go back to the new extent) */
		err = ext2fs_extent_set_bmap(h, l, pblk + done,
					     uninit ? EXT2_EXTENT_SET_BMAP_UNINIT : 0);
		if (err)
			break;
		done++;
	}
	ext2fs_extent_free(h);
	if (done == 0)
		return -e2_errno(e, err, "mapping new blocks", n->ino);
	return (int64_t)done;
}

/* Allocate one run of holes [lblk, lblk+count); returns blocks mapped or -errno. */
static int64_t alloc_holes(struct e2 *e, struct node *n, struct ext2_inode_large *in,
			   uint64_t lblk, uint64_t count, bool uninit, bool zero)
{
	ext2_filsys fs = e->fs;
	uint64_t done = 0;
	if (!has_extents(in)) {
		for (; done < count; done++) {
			blk64_t p = 0;
			errcode_t err = ext2fs_bmap2(fs, n->ino, (struct ext2_inode *)in, NULL,
						     BMAP_ALLOC | (zero ? BMAP_ZERO : 0),
						     lblk + done, NULL, &p);
			if (err) {
				if (done)
					break;
				return -e2_errno(e, err, "allocating a block", n->ino);
			}
			bcache_forget(e->cache, p, 1);
		}
		return (int64_t)done;
	}
	blk64_t goal = ext2fs_find_inode_goal(fs, n->ino, (struct ext2_inode *)in, lblk);
	while (done < count) {
		blk64_t p, plen;
		errcode_t err = ext2fs_new_range(fs, 0, goal, count - done, NULL, &p, &plen);
		if (err) {
			if (done)
				break;
			return -e2_errno(e, err, "allocating blocks", n->ino);
		}
		if (plen > count - done)
			plen = count - done;
		if (plen > UINT32_MAX)
			plen = UINT32_MAX;
		ext2fs_block_alloc_stats_range(fs, p, (blk_t)plen, +1);
		bcache_forget(e->cache, p, plen);
		int64_t m = map_run(e, n, in, lblk + done, p, plen, uninit);
		uint64_t mapped = m > 0 ? (uint64_t)m : 0;
		if (mapped < plen)
			ext2fs_block_alloc_stats_range(fs, p + mapped, (blk_t)(plen - mapped), -1);
		if (mapped) {
			ext2fs_iblk_add_blocks(fs, (struct ext2_inode *)in, mapped);
			if (zero)
				bcache_zero(e->cache, p, mapped);
		}
		done += mapped;
		if (m < 0) {
			if (done)
				break;
			return m;
		}
		if (mapped < plen)
			break;
		goal = p + plen;
	}
	return (int64_t)done;
}

/* Turn unwritten blocks [lblk, lblk+count) at pblk into written ones. */
static int convert_uninit(struct e2 *e, struct node *n, struct ext2_inode_large *in,
			  uint64_t lblk, uint64_t pblk, uint64_t count)
{
	ext2_extent_handle_t h;
	errcode_t err = ext2fs_extent_open2(e->fs, n->ino, (struct ext2_inode *)in, &h);
	if (err)
		return -e2_errno(e, err, "opening the extent tree", n->ino);
	struct ext2fs_extent ex;
	if (ext2fs_extent_goto2(h, 0, lblk) == 0 &&
	    ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex) == 0 && ex.e_lblk == lblk &&
	    ex.e_len == count && (ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT)) {
		/* the whole extent: just clear its flag */
		ex.e_flags &= ~EXT2_EXTENT_FLAGS_UNINIT;
		err = ext2fs_extent_replace(h, 0, &ex);
		if (!err)
			err = ext2fs_extent_fix_parents(h);
	} else {
		for (uint64_t i = 0; i < count && !err; i++)
			err = ext2fs_extent_set_bmap(h, lblk + i, pblk + i, 0);
	}
	ext2fs_extent_free(h);
	return err ? -e2_errno(e, err, "marking blocks written", n->ino) : 0;
}

int64_t data_alloc(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t lblk,
		   uint64_t count, bool uninit, bool zero)
{
	uint64_t done = 0;
	int r = data_check_tree(e, n, in);
	if (r < 0)
		return r;
	while (done < count) {
		uint64_t pblk, len;
		bool un;
		r = data_map(e, n, in, lblk + done, count - done, &pblk, &len, &un);
		if (r < 0)
			break;
		if (pblk == 0) {
			int64_t got = alloc_holes(e, n, in, lblk + done, len, uninit, zero);
			data_map_invalidate(n);
			if (got < 0) {
				r = (int)got;
				break;
			}
			done += (uint64_t)got;
			if ((uint64_t)got < len) {
				r = -ENOSPC;
				break;
			}
			continue;
		}
		if (un && !uninit) {
			r = convert_uninit(e, n, in, lblk + done, pblk, len);
			data_map_invalidate(n);
			if (r < 0)
				break;
		}
		done += len;
	}
	if (done)
		e2_mark_dirty(e);
	return done ? (int64_t)done : r;
}

/* Blocks of [lblk, lblk+count) that are holes (what an allocation there would take). */
static int64_t count_holes(struct e2 *e, struct node *n, struct ext2_inode_large *in,
			   uint64_t lblk, uint64_t count, uint64_t *prefix_within, uint64_t budget)
{
	uint64_t holes = 0, pos = 0;
	*prefix_within = 0;
	while (pos < count) {
		uint64_t pblk, len;
		bool un;
		int r = data_map(e, n, in, lblk + pos, count - pos, &pblk, &len, &un);
		if (r < 0)
			return r;
		if (pblk == 0) {
			if (holes + len > budget) {
				*prefix_within = pos + (budget - holes);
				return (int64_t)(holes + len);
			}
			holes += len;
		}
		pos += len;
	}
	*prefix_within = count;
	return (int64_t)holes;
}

/* How many blocks the caller may still allocate. */
static uint64_t alloc_budget(struct e2 *e, const struct fuse_ctx *ctx)
{
	return e2_alloc_budget(e, ctx);
}

/* Load block lblk of the file into dst: its content if written, else zeros. */
static int load_block(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t lblk,
		      char *dst)
{
	uint64_t pblk, len;
	bool un;
	int r = data_map(e, n, in, lblk, 1, &pblk, &len, &un);
	if (r < 0)
		return r;
	if (pblk == 0 || un) {
		memset(dst, 0, e->fs->blocksize);
		return 0;
	}
	return bcache_read_direct(e->cache, pblk, 1, dst);
}

/* Where block i of a write starting in block `first` comes from: a bounce buffer for a
 * partial block at either edge, else the caller's buffer itself. */
struct write_src {
	const char *buf;
	uint64_t off;
	size_t size;
	unsigned bs;
	uint64_t nblk;
	char *head, *tail; /* NULL when that edge is block-aligned */
};

static const char *src_block(const struct write_src *w, uint64_t i)
{
	if (i == 0 && w->head)
		return w->head;
	if (i == w->nblk - 1 && w->tail)
		return w->tail;
	return w->buf + i * w->bs - w->off % w->bs;
}

/* Write blocks [i, i+len) of the request to the device at pblk, in as few writes as the
 * sources allow (the edges may be bounce buffers). */
static int write_run(struct e2 *e, const struct write_src *w, uint64_t i, uint64_t pblk,
		     uint64_t len)
{
	while (len) {
		const char *src = src_block(w, i);
		uint64_t k = 1;
		if (src != w->head && src != w->tail)
			while (k < len && src_block(w, i + k) == src + k * w->bs)
				k++;
		int r = bcache_write_direct(e->cache, pblk, k, src);
		if (r < 0)
			return r;
		i += k, pblk += k, len -= k;
	}
	return 0;
}

ssize_t data_write(struct e2 *e, struct node *n, struct ext2_inode_large *in,
		   const struct fuse_ctx *ctx, const char *buf, size_t size, uint64_t off)
{
	if (size == 0)
		return 0;
	if (in->i_flags & EXT4_INLINE_DATA_FL)
		return -EROFS; /* inline_data file systems are mounted read-only */
	if (off >= e->max_file_size)
		return -EFBIG;
	if (size > e->max_file_size - off)
		size = (size_t)(e->max_file_size - off);
	unsigned bs = e->fs->blocksize;
	uint64_t first = off / bs, last = (off + size - 1) / bs, nblk = last - first + 1;

	/* what may be allocated decides how much of the write can be done */
	uint64_t prefix;
	int64_t holes = count_holes(e, n, in, first, nblk, &prefix, alloc_budget(e, ctx));
	if (holes < 0)
		return holes;
	if (prefix < nblk) {
		if (prefix == 0 || prefix * bs <= off % bs)
			return -ENOSPC;
		nblk = prefix;
		last = first + nblk - 1;
		size = (size_t)(nblk * bs - off % bs);
	}

	/* partial blocks at the edges: merged with what the block holds */
	struct write_src w = { .buf = buf, .off = off, .size = size, .bs = bs, .nblk = nblk };
	char *edges = NULL;
	int r = 0;
	bool head_partial = off % bs != 0 || (nblk == 1 && (off + size) % bs != 0);
	bool tail_partial = nblk > 1 && (off + size) % bs != 0;
	if (head_partial || tail_partial) {
		edges = malloc(2 * (size_t)bs);
		if (!edges)
			return -ENOMEM;
	}
	if (head_partial) {
		w.head = edges;
		if ((r = load_block(e, n, in, first, w.head)) < 0)
			goto out;
		size_t in_head = bs - off % bs < size ? bs - off % bs : size;
		memcpy(w.head + off % bs, buf, in_head);
	}
	if (tail_partial) {
		w.tail = edges + bs;
		if ((r = load_block(e, n, in, last, w.tail)) < 0)
			goto out;
		memcpy(w.tail, buf + (last * bs - off), (off + size) - last * bs);
	}

	int64_t got = data_alloc(e, n, in, first, nblk, false, false);
	if (got <= 0) {
		r = got < 0 ? (int)got : -ENOSPC;
		goto out;
	}
	if ((uint64_t)got < nblk) { /* the disk filled up under us: write what we have */
		if ((uint64_t)got * bs <= off % bs) {
			r = -ENOSPC;
			goto out;
		}
		/* the new last block is whole (it was not the tail) */
		nblk = (uint64_t)got;
		w.nblk = nblk;
		w.tail = NULL;
		size = (size_t)(nblk * bs - off % bs);
	}
	for (uint64_t done = 0; done < nblk;) {
		uint64_t pblk, len;
		bool un;
		if ((r = data_map(e, n, in, first + done, nblk - done, &pblk, &len, &un)) < 0)
			goto out;
		if (pblk == 0 || un) { /* cannot happen after data_alloc */
			r = -EIO;
			goto out;
		}
		if ((r = write_run(e, &w, done, pblk, len)) < 0)
			goto out;
		done += len;
	}
	if (off + size > EXT2_I_SIZE(in))
		ext2fs_inode_size_set(e->fs, (struct ext2_inode *)in, off + size);
	if (!e->writeback_cache)
		ino_touch(in, true, true);
	ino_kill_suid(in, ctx, false);
	r = ino_write(e, n->ino, in);
out:
	free(edges);
	return r < 0 ? r : (ssize_t)size;
}

/* Zero bytes [from, to) of block lblk, if it holds written data. */
static int zero_in_block(struct e2 *e, struct node *n, struct ext2_inode_large *in,
			 uint64_t lblk, unsigned from, unsigned to)
{
	uint64_t pblk, len;
	bool un;
	int r = data_map(e, n, in, lblk, 1, &pblk, &len, &un);
	if (r < 0 || pblk == 0 || un || from >= to)
		return r;
	char *b = malloc(e->fs->blocksize);
	if (!b)
		return -ENOMEM;
	r = bcache_read_direct(e->cache, pblk, 1, b);
	if (r == 0) {
		memset(b + from, 0, to - from);
		r = bcache_write_direct(e->cache, pblk, 1, b);
	}
	free(b);
	return r;
}

static int punch_blocks(struct e2 *e, struct node *n, struct ext2_inode_large *in,
			uint64_t start, uint64_t end_incl)
{
	if (!ext2fs_inode_has_valid_blocks2(e->fs, (struct ext2_inode *)in))
		return 0;
	int r = data_check_tree(e, n, in);
	if (r < 0)
		return r;
	errcode_t err = ext2fs_punch(e->fs, n->ino, (struct ext2_inode *)in, NULL, start,
				     end_incl);
	data_map_invalidate(n);
	e2_mark_dirty(e);
	return err ? -e2_errno(e, err, "freeing blocks", n->ino) : 0;
}

int data_truncate(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t size)
{
	if (size > e->max_file_size)
		return -EFBIG;
	unsigned bs = e->fs->blocksize;
	uint64_t old = EXT2_I_SIZE(in);
	if (in->i_flags & EXT4_INLINE_DATA_FL)
		return -EROFS;
	if (size < old) {
		int r = punch_blocks(e, n, in, (size + bs - 1) / bs, ~0ULL);
		if (r < 0)
			return r;
		/* the rest of the new last block must read as zeros if the file grows again */
		if (size % bs && (r = zero_in_block(e, n, in, size / bs, size % bs, bs)) < 0)
			return r;
	}
	errcode_t err = ext2fs_inode_size_set(e->fs, (struct ext2_inode *)in, size);
	return err ? -e2_errno(e, err, "setting the size", n->ino) : 0;
}

/* Make [off, off+len) read as zeros without allocating: free whole blocks, zero the edges. */
static int punch_range(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t off,
		       uint64_t len)
{
	unsigned bs = e->fs->blocksize;
	uint64_t end = off + len;
	uint64_t first_full = (off + bs - 1) / bs, end_full = end / bs;
	int r = 0;
	if (first_full < end_full && (r = punch_blocks(e, n, in, first_full, end_full - 1)) < 0)
		return r;
	if (off / bs == (end - 1) / bs) { /* within one block */
		if (off % bs || end % bs)
			r = zero_in_block(e, n, in, off / bs, (unsigned)(off % bs),
					  end % bs ? (unsigned)(end % bs) : bs);
		return r;
	}
	if (off % bs && (r = zero_in_block(e, n, in, off / bs, (unsigned)(off % bs), bs)) < 0)
		return r;
	if (end % bs)
		r = zero_in_block(e, n, in, end / bs, 0, (unsigned)(end % bs));
	return r;
}

int data_fallocate(struct e2 *e, struct node *n, struct ext2_inode_large *in,
		   const struct fuse_ctx *ctx, int mode, uint64_t off, uint64_t len)
{
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (in->i_flags & EXT4_INLINE_DATA_FL)
		return -EROFS;
	if (len == 0)
		return -EINVAL;
	uint64_t end = off + len;
	if (end < off || end > e->max_file_size)
		return -EFBIG;
	unsigned bs = e->fs->blocksize;
	int r;
	if (mode & FALLOC_FL_PUNCH_HOLE)
		return punch_range(e, n, in, off, len);
	if (mode & FALLOC_FL_ZERO_RANGE) {
		if ((r = punch_range(e, n, in, off, len)) < 0)
			return r;
	}
	/* allocate: unwritten extents (they read as zeros), or zeroed blocks without extents */
	uint64_t first = off / bs, last = (end - 1) / bs;
	uint64_t prefix;
	int64_t holes = count_holes(e, n, in, first, last - first + 1, &prefix,
				    alloc_budget(e, ctx));
	if (holes < 0)
		return (int)holes;
	if (prefix < last - first + 1)
		return -ENOSPC;
	if (holes > 0) {
		int64_t got = data_alloc(e, n, in, first, last - first + 1, has_extents(in),
					 !has_extents(in));
		if (got < 0)
			return (int)got;
		if ((uint64_t)got < last - first + 1)
			return -ENOSPC;
	}
	if (!(mode & FALLOC_FL_KEEP_SIZE) && end > EXT2_I_SIZE(in)) {
		errcode_t err = ext2fs_inode_size_set(e->fs, (struct ext2_inode *)in, end);
		if (err)
			return -e2_errno(e, err, "setting the size", n->ino);
	}
	return 0;
}

/* SEEK_DATA/SEEK_HOLE in a block-mapped (ext2/ext3) file: its mapped blocks in order, from
 * libext2fs' iterator, which passes over a missing indirect block's whole range at once. Asking
 * block by block, a hole of gigabytes would take minutes under the big lock. */
struct seek_ind {
	uint64_t from, expect, data_at;
	bool data_found, hole_found;
};

static int seek_ind_block(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt,
			  blk64_t ref_blk, int ref_offset, void *priv)
{
	(void)fs, (void)blocknr, (void)ref_blk, (void)ref_offset;
	struct seek_ind *c = priv;
	if (blockcnt < 0 || (uint64_t)blockcnt < c->from)
		return 0; /* an indirect block itself, or before the start */
	uint64_t l = (uint64_t)blockcnt;
	if (!c->data_found) {
		c->data_found = true;
		c->data_at = l;
	}
	if (l == c->expect)
		c->expect++;
	else
		c->hole_found = true;
	return c->hole_found ? BLOCK_ABORT : 0;
}

static int seek_indirect(struct e2 *e, struct node *n, struct ext2_inode_large *in,
			 uint64_t off, int whence, uint64_t *result)
{
	uint64_t bs = e->fs->blocksize, size = EXT2_I_SIZE(in);
	struct seek_ind c = { .from = off / bs, .expect = off / bs };
	errcode_t err = ext2fs_block_iterate3(e->fs, n->ino, BLOCK_FLAG_READ_ONLY |
					      BLOCK_FLAG_DATA_ONLY, NULL, seek_ind_block, &c);
	if (err)
		return -e2_errno(e, err, "reading the block map", n->ino);
	uint64_t at;
	if (whence == SEEK_DATA) {
		if (!c.data_found)
			return -ENXIO;
		at = c.data_at * bs;
	} else {
		at = c.expect * bs; /* the first block after the mapped run that starts at off */
	}
	if (at < off)
		at = off;
	if (at >= size)
		return whence == SEEK_DATA ? -ENXIO : (*result = size, 0);
	*result = at;
	return 0;
}

int data_seek(struct e2 *e, struct node *n, struct ext2_inode_large *in, uint64_t off,
	      int whence, uint64_t *result)
{
	uint64_t size = EXT2_I_SIZE(in);
	if (off >= size)
		return -ENXIO;
	if (in->i_flags & EXT4_INLINE_DATA_FL) {
		*result = whence == SEEK_DATA ? off : size;
		return 0;
	}
	if (!has_extents(in))
		return seek_indirect(e, n, in, off, whence, result);
	unsigned bs = e->fs->blocksize;
	uint64_t lblk = off / bs, end_blk = (size - 1) / bs;
	while (lblk <= end_blk) {
		uint64_t pblk, len;
		bool un;
		int r = data_map(e, n, in, lblk, end_blk - lblk + 1, &pblk, &len, &un);
		if (r < 0)
			return r;
		bool data = pblk != 0 && !un;
		if (data == (whence == SEEK_DATA)) {
			uint64_t at = lblk * bs;
			*result = at > off ? at : off;
			return 0;
		}
		lblk += len;
	}
	if (whence == SEEK_DATA)
		return -ENXIO;
	*result = size;
	return 0;
}
